-- Transactional enqueue: the inbox, the role-to-tenant map and enqueue_runs().

-- Transactional enqueue (docs/transactional.md): an application enqueues runs inside its
-- own transaction by calling enqueue_runs(), which inserts them into run_inbox and
-- NOTIFYs stoker_inbox; both take effect only when that transaction commits. Any engine
-- replica drains the inbox (SKIP LOCKED) into real runs through ingest's writers.

-- Which tenant a database role enqueues for: the tenant of an inbox row is the one an
-- administrator mapped the caller's login role (session_user) to, never a value the
-- caller sends. One role, one tenant.
CREATE TABLE enqueue_role (
    role_name  text PRIMARY KEY,
    tenant_id  bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX enqueue_role_tenant_idx ON enqueue_role (tenant_id);

-- Runs enqueued by committed application transactions, not yet made into runs. Each row
-- is deleted by the transaction that writes its run, so the table stays small.
CREATE TABLE run_inbox (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id           bigint NOT NULL,
    -- The id the SDK gave the run (its run reference).
    external_id         uuid NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('task', 'workflow')),
    name                text NOT NULL,
    input               jsonb NOT NULL,
    additional_metadata jsonb NOT NULL DEFAULT '{}',
    priority            smallint NOT NULL DEFAULT 0,
    desired_worker_id   text NOT NULL DEFAULT '',
    idempotency_key     text NOT NULL DEFAULT '',
    idempotency_ttl_ms  bigint NOT NULL DEFAULT 0,
    -- The task's definition as the application declared it: registered for the tenant
    -- when the engine does not know the task yet (never replacing a known one).
    definition          jsonb,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_inbox_tenant_external_idx ON run_inbox (tenant_id, external_id);

-- What became of inbox rows that did not become a run of their own id: deduplicated by an
-- idempotency key (run_id: the live run it named) or refused when drained (error). Read
-- by AwaitRuns for such ids; pruned by retention.
CREATE TABLE run_inbox_receipt (
    tenant_id   bigint NOT NULL,
    external_id uuid NOT NULL,
    run_id      uuid,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, external_id),
    CHECK ((run_id IS NULL) <> (error IS NULL))
);
CREATE INDEX run_inbox_receipt_created_idx ON run_inbox_receipt (created_at);

-- The one entry point for applications. SECURITY DEFINER: the caller needs EXECUTE on
-- it (and USAGE on the schema), no privilege on any table. The tenant comes from
-- enqueue_role by session_user (SET ROLE does not change it). runs: a JSON array of
-- {"id", "kind", "name", "input", "metadata", "priority", "worker", "key", "ttl_ms",
-- "definition"}.
-- Returns how many rows were inserted.
CREATE FUNCTION enqueue_runs(runs text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    caller_tenant bigint;
    inserted integer;
BEGIN
    SELECT r.tenant_id INTO caller_tenant FROM enqueue_role r WHERE r.role_name = session_user;
    IF caller_tenant IS NULL THEN
        RAISE EXCEPTION 'database role % may not enqueue runs: no tenant is mapped to it',
            session_user
            USING ERRCODE = '42501',
                  HINT = 'an administrator maps it with: stoker enqueue-role grant ROLE --tenant NAME';
    END IF;
    INSERT INTO run_inbox (tenant_id, external_id, kind, name, input, additional_metadata,
                           priority, desired_worker_id, idempotency_key, idempotency_ttl_ms,
                           definition)
    SELECT caller_tenant, r.id, r.kind, r.name, coalesce(r.input, 'null'::jsonb),
           coalesce(r.metadata, '{}'::jsonb), coalesce(r.priority, 0),
           coalesce(r.worker, ''), coalesce(r.key, ''), coalesce(r.ttl_ms, 0), r.definition
    FROM jsonb_to_recordset(runs::jsonb) AS r(id uuid, kind text, name text, input jsonb,
                                             metadata jsonb, priority smallint, worker text,
                                             key text, ttl_ms bigint, definition jsonb);
    GET DIAGNOSTICS inserted = ROW_COUNT;
    PERFORM pg_notify('stoker_inbox', caller_tenant::text || ':app');
    RETURN inserted;
END $$;
-- A SECURITY DEFINER function must not resolve names through a schema its caller can
-- write (pg_temp is searched first unless named): pin this schema, then pg_temp.
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION enqueue_runs(text) SET search_path = %I, pg_temp',
                   current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION enqueue_runs(text) FROM PUBLIC;

-- Administration (run by the engine's role, e.g. through `stoker enqueue-role grant`):
-- lets a database role enqueue for a tenant, granting what it needs and nothing more.
CREATE FUNCTION grant_enqueue_role(role_name text, tenant_name text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    found_tenant bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = role_name) THEN
        RAISE EXCEPTION 'no database role %', role_name
            USING ERRCODE = '42704', HINT = 'create it first: CREATE ROLE ... LOGIN PASSWORD ...';
    END IF;
    SELECT t.id INTO found_tenant FROM tenant t WHERE t.name = tenant_name;
    IF found_tenant IS NULL THEN
        RAISE EXCEPTION 'no tenant %', tenant_name USING ERRCODE = 'P0002';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.enqueue_runs(text) TO %I',
                   current_schema(), role_name);
    INSERT INTO enqueue_role AS e (role_name, tenant_id)
    VALUES (grant_enqueue_role.role_name, found_tenant)
    ON CONFLICT ON CONSTRAINT enqueue_role_pkey
    DO UPDATE SET tenant_id = excluded.tenant_id, created_at = now();
    RETURN found_tenant;
END $$;

-- Takes the permission back: no tenant, no EXECUTE (USAGE on the schema is left: it may
-- have been granted for another reason, and gives nothing alone). False: was not mapped.
CREATE FUNCTION revoke_enqueue_role(role_name text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    removed boolean;
BEGIN
    DELETE FROM enqueue_role e WHERE e.role_name = revoke_enqueue_role.role_name;
    removed := FOUND;
    IF EXISTS (SELECT FROM pg_roles r WHERE r.rolname = role_name) THEN
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %I.enqueue_runs(text) FROM %I',
                       current_schema(), role_name);
    END IF;
    RETURN removed;
END $$;
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION grant_enqueue_role(text, text) SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION revoke_enqueue_role(text) SET search_path = %I, pg_temp',
                   current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION grant_enqueue_role(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION revoke_enqueue_role(text) FROM PUBLIC;
