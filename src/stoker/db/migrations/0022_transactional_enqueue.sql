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
-- {"id", "kind", "name", "input", "metadata", "priority", "worker", "key", "ttl_ms"}.
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
                           priority, desired_worker_id, idempotency_key, idempotency_ttl_ms)
    SELECT caller_tenant, r.id, r.kind, r.name, coalesce(r.input, 'null'::jsonb),
           coalesce(r.metadata, '{}'::jsonb), coalesce(r.priority, 0),
           coalesce(r.worker, ''), coalesce(r.key, ''), coalesce(r.ttl_ms, 0)
    FROM jsonb_to_recordset(runs::jsonb) AS r(id uuid, kind text, name text, input jsonb,
                                             metadata jsonb, priority smallint, worker text,
                                             key text, ttl_ms bigint);
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
