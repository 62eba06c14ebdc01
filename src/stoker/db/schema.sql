-- The canonical schema: what the migrations in migrations/ add up to, written as one
-- piece to read. A test (tests/test_migrations.py) builds one database from this file and
-- one from the migrations and requires their pg_dump to match, column order included:
-- change both together, and `scripts/dump_schema.py --diff` shows what differs.

CREATE TABLE tenant (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_token (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    external_id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    name        text NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    -- 'admin' tokens may also manage the tenant's tokens over the REST API.
    role        text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    expires_at  timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_token_tenant_idx ON api_token (tenant_id, created_at);

CREATE TABLE task_def (
    tenant_id  bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    name       text NOT NULL,
    config     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- One row per task run: its input, options, current attempt and final outcome.
CREATE TABLE task (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id            bigint NOT NULL,
    external_id          uuid NOT NULL,
    task_name            text NOT NULL,
    status               text NOT NULL,
    attempt              integer NOT NULL DEFAULT 0,
    retry_count          integer NOT NULL DEFAULT 0,
    priority             smallint NOT NULL DEFAULT 1,
    input                jsonb NOT NULL,
    additional_metadata  jsonb NOT NULL DEFAULT '{}',
    output               jsonb,
    error                jsonb,
    max_retries          integer NOT NULL DEFAULT 0,
    backoff_factor       double precision,
    backoff_max_ms       bigint NOT NULL DEFAULT 3600000,
    execution_timeout_ms bigint NOT NULL DEFAULT 0,
    schedule_timeout_ms  bigint NOT NULL DEFAULT 0,
    worker_id            bigint,
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    desired_worker_id    bigint,
    rate_limits          jsonb,
    assigned_at          timestamptz,
    dag_id               bigint,
    step                 text,
    skipped              boolean NOT NULL DEFAULT false,
    -- [{"strategy_id", "idx", "key"}] per concurrency strategy, evaluated at creation; a
    -- run with keys waits for admission (concurrency_slot rows) each time it is queued.
    concurrency_keys     jsonb
) WITH (fillfactor = 80);

CREATE UNIQUE INDEX task_external_id_idx ON task (external_id);
CREATE INDEX task_tenant_created_idx ON task (tenant_id, created_at DESC, id DESC);
CREATE INDEX task_tenant_status_idx ON task (tenant_id, status, created_at DESC);
CREATE INDEX task_tenant_name_status_idx
    ON task (tenant_id, task_name, status, created_at DESC, id DESC);

-- What happened to attempts that did not simply complete: failures, timeouts, lost
-- workers, cancellations. Completed attempts are described by the task row itself.
-- Partitioned by day (see "Run history" below); rows go when their day's partition does.
CREATE TABLE task_event (
    id         bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id  bigint NOT NULL,
    task_id    bigint NOT NULL,
    attempt    integer NOT NULL,
    kind       text NOT NULL,
    worker_id  bigint,
    data       jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE task_event_default PARTITION OF task_event DEFAULT;
CREATE INDEX task_event_task_idx ON task_event (task_id, id);

-- Attempts waiting for a worker. A row is deleted when its attempt is assigned.
CREATE TABLE queue_item (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         bigint NOT NULL,
    task_id           bigint NOT NULL,
    attempt           integer NOT NULL,
    queue             text NOT NULL,
    priority          smallint NOT NULL,
    available_at      timestamptz NOT NULL DEFAULT now(),
    schedule_deadline timestamptz,
    rate_limits       jsonb,
    desired_worker_id bigint
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

CREATE INDEX queue_item_claim_idx ON queue_item (tenant_id, queue, priority DESC, id);
CREATE INDEX queue_item_deadline_idx ON queue_item (schedule_deadline)
    WHERE schedule_deadline IS NOT NULL;

-- Attempts assigned to a worker and not yet ended. The (task_id, attempt) row is the
-- token that lets exactly one outcome of an attempt be recorded.
CREATE TABLE task_runtime (
    task_id     bigint PRIMARY KEY,
    tenant_id   bigint NOT NULL,
    attempt     integer NOT NULL,
    worker_id   bigint NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    timeout_at  timestamptz
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

CREATE INDEX task_runtime_worker_idx ON task_runtime (worker_id);
CREATE INDEX task_runtime_timeout_idx ON task_runtime (timeout_at) WHERE timeout_at IS NOT NULL;

CREATE TABLE worker (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         bigint NOT NULL,
    external_id       uuid NOT NULL UNIQUE,
    name              text NOT NULL,
    slots             integer NOT NULL,
    task_names        text[] NOT NULL DEFAULT '{}',
    status            text NOT NULL DEFAULT 'ACTIVE',
    connected_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    labels            jsonb NOT NULL DEFAULT '{}',
    durable_slots     integer NOT NULL DEFAULT 0,
    -- A paused worker keeps its stream and what it runs but is assigned nothing new.
    paused_at         timestamptz,
    -- A drained worker is paused and told (heartbeat answer) to stop once idle.
    drain_requested_at timestamptz
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.05);

CREATE INDEX worker_tenant_idx ON worker (tenant_id, status);

-- Named leases held by one engine replica at a time (leadership, queue partitions).
CREATE TABLE lease (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- A concurrency strategy of a task (one per ConcurrencyExpression, in declaration order).
CREATE TABLE concurrency_strategy (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      bigint NOT NULL,
    scope          text NOT NULL,
    idx            smallint NOT NULL,
    expression     text NOT NULL,
    max_runs       integer NOT NULL,
    limit_strategy text NOT NULL,
    UNIQUE (tenant_id, scope, idx)
);

-- A run's place with one strategy: waiting (admitted = false) or holding a slot. A run is
-- queued once every strategy of it admitted it; its rows go when it reaches a final state.
CREATE TABLE concurrency_slot (
    task_id     bigint NOT NULL,
    strategy_id bigint NOT NULL,
    tenant_id   bigint NOT NULL,
    idx         smallint NOT NULL,
    key         text NOT NULL,
    priority    smallint NOT NULL,
    admitted    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, strategy_id)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

CREATE INDEX concurrency_slot_key_idx ON concurrency_slot (strategy_id, key, admitted);
CREATE INDEX concurrency_slot_waiting_idx ON concurrency_slot (tenant_id, strategy_id)
    WHERE NOT admitted;

-- Releasing concurrency slots is tied to the task's final state by a trigger, so every
-- path that ends a run (completion, failure, cancellation, timeouts, and any added later)
-- frees its slots in the same transaction.
CREATE FUNCTION release_concurrency_slots() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM concurrency_slot c
    USING ended e
    WHERE c.task_id = e.id AND e.status IN ('COMPLETED', 'FAILED', 'CANCELLED');
    RETURN NULL;
END;
$$;

CREATE TRIGGER task_release_concurrency_slots
    AFTER UPDATE ON task
    REFERENCING NEW TABLE AS ended
    FOR EACH STATEMENT EXECUTE FUNCTION release_concurrency_slots();

-- The ready rule, defined once. A task that becomes ready to run — created QUEUED, a
-- workflow step whose parents and conditions are satisfied, a replayed run, a retried
-- attempt, a run that concurrency admission let through — either waits for admission (it
-- has concurrency keys and was not admitted yet: one concurrency_slot row per strategy) or
-- gets the queue item of its attempt, due at `available_at`, whose schedule deadline counts
-- from then. Every statement that readies tasks calls make_tasks_ready with the tasks'
-- values; it returns the tenants whose tasks now wait for admission (the scheduler must
-- run admission for them), NULL when none do.
CREATE TYPE ready_task AS (
    task_id             bigint,
    tenant_id           bigint,
    attempt             integer,
    queue               text,
    priority            smallint,
    available_at        timestamptz,
    schedule_timeout_ms bigint,
    rate_limits         jsonb,
    desired_worker_id   bigint,
    concurrency_keys    jsonb
);

CREATE FUNCTION make_tasks_ready(tasks ready_task[], already_admitted boolean)
RETURNS bigint[] LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    gated_tenants bigint[];
BEGIN
    WITH r AS (
        SELECT * FROM unnest(tasks)
    ),
    gated AS (
        INSERT INTO concurrency_slot (task_id, strategy_id, tenant_id, idx, key, priority)
        SELECT r.task_id, (k->>'strategy_id')::bigint, r.tenant_id, (k->>'idx')::smallint,
               k->>'key', r.priority
        FROM r CROSS JOIN LATERAL jsonb_array_elements(r.concurrency_keys) k
        WHERE NOT already_admitted AND r.concurrency_keys IS NOT NULL
        ON CONFLICT (task_id, strategy_id) DO NOTHING
        RETURNING concurrency_slot.tenant_id
    ),
    queued AS (
        INSERT INTO queue_item (tenant_id, task_id, attempt, queue, priority, available_at,
                                schedule_deadline, rate_limits, desired_worker_id)
        SELECT r.tenant_id, r.task_id, r.attempt, r.queue, r.priority, r.available_at,
               CASE WHEN r.schedule_timeout_ms > 0
                    THEN r.available_at + r.schedule_timeout_ms * interval '1 millisecond'
               END,
               r.rate_limits, r.desired_worker_id
        FROM r
        WHERE already_admitted OR r.concurrency_keys IS NULL
    )
    SELECT array_agg(DISTINCT g.tenant_id ORDER BY g.tenant_id) INTO gated_tenants FROM gated g;
    RETURN gated_tenants;
END;
$$;

-- Rate limits, held in every interval of `window_ms`: `recent` is the log of recent starts
-- ([[at_us, units], ...], oldest first; a group counts until at + window), `clock` the
-- latest instant the limit was consumed at. See docs/scheduler.md.
CREATE TABLE rate_limit (
    tenant_id   bigint NOT NULL,
    key         text NOT NULL,
    limit_value integer NOT NULL,
    window_ms   bigint NOT NULL,
    dynamic     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    recent      jsonb NOT NULL DEFAULT '[]',
    clock       timestamptz NOT NULL DEFAULT 'epoch',
    PRIMARY KEY (tenant_id, key)
) WITH (fillfactor = 50);

-- Workflows: DAG runs, their steps' conditions, child runs and user events.
-- See docs/workflows.md and stoker/engine/controllers/dags.py for how they are used.

-- A workflow's definition (steps, parents, conditions, handlers). Versions are immutable
-- and named by the hash of their config, so a run keeps the shape it was started with
-- while a new deploy registers a new version.
CREATE TABLE workflow_version (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  bigint NOT NULL,
    name       text NOT NULL,
    hash       text NOT NULL,
    config     jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name, hash)
);

-- The version new runs of a workflow use.
CREATE TABLE workflow_def (
    tenant_id  bigint NOT NULL,
    name       text NOT NULL,
    version_id bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- One workflow run. Its steps are rows of `task` with this dag_id. The run's output is
-- not copied here: it is read from its steps (the COMPLETED ones, keyed by step name).
-- `cancelled` records that a user cancelled the run (its final status is then CANCELLED).
CREATE TABLE dag (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id           bigint NOT NULL,
    external_id         uuid NOT NULL,
    workflow_name       text NOT NULL,
    version_id          bigint NOT NULL,
    status              text NOT NULL DEFAULT 'RUNNING',
    input               jsonb NOT NULL,
    additional_metadata jsonb NOT NULL DEFAULT '{}',
    error               jsonb,
    cancelled           boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz
) WITH (fillfactor = 80);

CREATE UNIQUE INDEX dag_external_id_idx ON dag (external_id);
CREATE INDEX dag_tenant_created_idx ON dag (tenant_id, created_at DESC, id DESC);
CREATE INDEX dag_running_idx ON dag (id) WHERE status = 'RUNNING';

CREATE INDEX task_dag_idx ON task (dag_id) WHERE dag_id IS NOT NULL;
-- Steps waiting for their parents or conditions (what the DAG sweeper looks at).
CREATE INDEX task_pending_idx ON task (dag_id) WHERE status = 'PENDING';

-- The sleep and user-event conditions of a step waiting on them. `cond` is the
-- condition's path in the step's declaration (e.g. "wait_for.1.0"). A sleep is satisfied
-- once fire_at passes; an event when a matching event arrives after the row was created.
-- Rows go when the step leaves PENDING.
-- The conditions of durable tasks' waits (wait_for_event, wait_for) are rows here too,
-- without a dag_id: they name their log entry (run_created_at, branch, position), and cond
-- is "d<branch>.<position>:<path>". `scope` limits an event condition to events pushed with
-- it, `since` starts its lookback window, `event_id` is the event that satisfied it. A
-- durable wait's rows go with its task (to history), so the events a task used are known.
CREATE TABLE task_wait (
    task_id      bigint NOT NULL,
    cond         text NOT NULL,
    tenant_id    bigint NOT NULL,
    dag_id       bigint,
    kind         text NOT NULL,
    fire_at      timestamptz,
    event_key    text,
    expression   text,
    satisfied_at timestamptz,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    run_created_at timestamptz,
    branch       integer,
    position     integer,
    scope        text,
    since        timestamptz,
    event_id     bigint,
    PRIMARY KEY (task_id, cond)
) WITH (fillfactor = 70);

CREATE INDEX task_wait_sleep_idx ON task_wait (fire_at)
    WHERE kind = 'sleep' AND satisfied_at IS NULL;
CREATE INDEX task_wait_event_idx ON task_wait (tenant_id, event_key)
    WHERE kind = 'event' AND satisfied_at IS NULL;
-- One event satisfies at most one condition of a task (durable waits).
CREATE UNIQUE INDEX task_wait_event_used_idx ON task_wait (task_id, event_id)
    WHERE event_id IS NOT NULL;

-- Child runs spawned from inside a task. The n-th spawn of a task (child_index, counted
-- per attempt) and an explicit child_key each name one child, so a retried parent gets
-- the children it already spawned instead of new ones.
CREATE TABLE child_run (
    parent_task_id bigint NOT NULL,
    child_index    integer NOT NULL,
    child_key      text,
    tenant_id      bigint NOT NULL,
    external_id    uuid NOT NULL,
    is_workflow    boolean NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (parent_task_id, child_index)
);

CREATE UNIQUE INDEX child_run_key_idx ON child_run (parent_task_id, child_key)
    WHERE child_key IS NOT NULL;
CREATE INDEX child_run_external_idx ON child_run (external_id);

-- The request key of every keyed trigger call, written in the same transaction as what
-- the call created, with the ids it answered; a retried call gets them back
-- (docs/idempotency.md). Pruned after request_key_ttl_s by the leader's retention loop.
CREATE TABLE trigger_request (
    tenant_id   bigint NOT NULL,
    request_key text NOT NULL,
    -- Which call made it ('trigger', 'workflows', 'spawn', 'events'), and a digest of its
    -- content, so that a reused key with other content is refused.
    kind        text NOT NULL,
    fingerprint bytea NOT NULL,
    -- The ids the call answered, 16 bytes each, in order (cheaper to pass and store
    -- than uuid[] for a bulk call of 1,000; stored uncompressed, as random ids do not
    -- compress).
    run_ids     bytea NOT NULL,
    -- PushEvents: how many waiting conditions the events satisfied.
    satisfied   integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- A key kept past the TTL (a webhook delivery's, for the webhook's dedup window):
    -- pruned once this passes instead.
    keep_until  timestamptz,
    PRIMARY KEY (tenant_id, request_key)
);
ALTER TABLE trigger_request ALTER COLUMN run_ids SET STORAGE EXTERNAL;
CREATE INDEX trigger_request_created_idx ON trigger_request (created_at)
    WHERE keep_until IS NULL;
CREATE INDEX trigger_request_keep_idx ON trigger_request (keep_until)
    WHERE keep_until IS NOT NULL;

-- User events pushed with app.events.push (kept for the API and for matching waits),
-- partitioned by day like task_event.
CREATE TABLE user_event (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id           bigint NOT NULL,
    external_id         uuid NOT NULL DEFAULT gen_random_uuid(),
    key                 text NOT NULL,
    payload             jsonb NOT NULL,
    additional_metadata jsonb NOT NULL DEFAULT '{}',
    scope               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- The priority the event's runs get (0: each task's default).
    priority            smallint NOT NULL DEFAULT 0,
    -- An event that came through a webhook: which one (no foreign key, events outlive a
    -- deleted webhook), and the request body exactly as received.
    webhook_id          bigint,
    body                bytea,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE user_event_default PARTITION OF user_event DEFAULT;
CREATE INDEX user_event_tenant_created_idx ON user_event (tenant_id, created_at DESC, id DESC);
-- The lookback search of a durable wait.
CREATE INDEX user_event_key_idx ON user_event (tenant_id, key, created_at);
-- Events read by id (the REST get and replay).
CREATE INDEX user_event_external_id_idx ON user_event (external_id);

-- Runs are filtered by their additional metadata (`@>`) in the API and bulk cancellation.
CREATE INDEX task_metadata_idx ON task USING gin (additional_metadata jsonb_path_ops);
CREATE INDEX dag_metadata_idx ON dag USING gin (additional_metadata jsonb_path_ops);

-- Run history: finished runs move out of task and dag into these tables, range-partitioned
-- by day on created_at like task_event and user_event (docs/storage.md). The engine creates
-- each day's partition ahead of time and drops whole partitions past the retention; the
-- DEFAULT partitions catch rows no day partition covers.

-- Finished single-task runs and finished workflow runs' steps. Same columns as task, in the
-- same order, plus when the row moved. A column added to task is added here too.
CREATE TABLE task_history (
    id                   bigint NOT NULL,
    tenant_id            bigint NOT NULL,
    external_id          uuid NOT NULL,
    task_name            text NOT NULL,
    status               text NOT NULL,
    attempt              integer NOT NULL,
    retry_count          integer NOT NULL,
    priority             smallint NOT NULL,
    input                jsonb NOT NULL,
    additional_metadata  jsonb NOT NULL,
    output               jsonb,
    error                jsonb,
    max_retries          integer NOT NULL,
    backoff_factor       double precision,
    backoff_max_ms       bigint NOT NULL,
    execution_timeout_ms bigint NOT NULL,
    schedule_timeout_ms  bigint NOT NULL,
    worker_id            bigint,
    created_at           timestamptz NOT NULL,
    started_at           timestamptz,
    finished_at          timestamptz,
    desired_worker_id    bigint,
    rate_limits          jsonb,
    assigned_at          timestamptz,
    dag_id               bigint,
    step                 text,
    skipped              boolean NOT NULL,
    concurrency_keys     jsonb,
    archived_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE task_history_default PARTITION OF task_history DEFAULT;

-- The reads the API, results and replay make of history (see docs/storage.md).
CREATE INDEX task_history_external_id_idx ON task_history (external_id);
CREATE INDEX task_history_tenant_created_idx ON task_history (tenant_id, created_at DESC, id DESC);
CREATE INDEX task_history_tenant_status_idx ON task_history (tenant_id, status, created_at DESC);
CREATE INDEX task_history_tenant_name_status_idx
    ON task_history (tenant_id, task_name, status, created_at DESC, id DESC);
CREATE INDEX task_history_dag_idx ON task_history (dag_id) WHERE dag_id IS NOT NULL;
CREATE INDEX task_history_metadata_idx ON task_history USING gin (additional_metadata jsonb_path_ops);

-- Finished workflow runs. Same columns as dag, plus when the row moved.
CREATE TABLE dag_history (
    id                  bigint NOT NULL,
    tenant_id           bigint NOT NULL,
    external_id         uuid NOT NULL,
    workflow_name       text NOT NULL,
    version_id          bigint NOT NULL,
    status              text NOT NULL,
    input               jsonb NOT NULL,
    additional_metadata jsonb NOT NULL,
    error               jsonb,
    cancelled           boolean NOT NULL,
    created_at          timestamptz NOT NULL,
    finished_at         timestamptz,
    archived_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE dag_history_default PARTITION OF dag_history DEFAULT;

CREATE INDEX dag_history_external_id_idx ON dag_history (external_id);
CREATE INDEX dag_history_tenant_created_idx ON dag_history (tenant_id, created_at DESC, id DESC);
CREATE INDEX dag_history_metadata_idx ON dag_history USING gin (additional_metadata jsonb_path_ops);

-- Live and finished runs as one relation, for the reads that do not care where a run is
-- (the API, bulk filters). Hot paths read the live tables directly.
CREATE VIEW all_tasks AS
SELECT id, tenant_id, external_id, task_name, status, attempt, retry_count, priority, input,
       additional_metadata, output, error, max_retries, backoff_factor, backoff_max_ms,
       execution_timeout_ms, schedule_timeout_ms, worker_id, created_at, started_at,
       finished_at, desired_worker_id, rate_limits, assigned_at, dag_id, step, skipped,
       concurrency_keys
FROM task
UNION ALL
SELECT id, tenant_id, external_id, task_name, status, attempt, retry_count, priority, input,
       additional_metadata, output, error, max_retries, backoff_factor, backoff_max_ms,
       execution_timeout_ms, schedule_timeout_ms, worker_id, created_at, started_at,
       finished_at, desired_worker_id, rate_limits, assigned_at, dag_id, step, skipped,
       concurrency_keys
FROM task_history;

CREATE VIEW all_dags AS
SELECT id, tenant_id, external_id, workflow_name, version_id, status, input,
       additional_metadata, error, cancelled, created_at, finished_at
FROM dag
UNION ALL
SELECT id, tenant_id, external_id, workflow_name, version_id, status, input,
       additional_metadata, error, cancelled, created_at, finished_at
FROM dag_history;

-- What the archiver looks for: finished runs, oldest finish first.
CREATE INDEX task_finished_idx ON task (finished_at)
    WHERE dag_id IS NULL AND status IN ('COMPLETED', 'FAILED', 'CANCELLED');
CREATE INDEX dag_finished_idx ON dag (finished_at) WHERE status <> 'RUNNING';

-- Creates the day partition of a partitioned table (``<parent>_pYYYYMMDD``, UTC days) if
-- it is missing. Rows of that day already in the DEFAULT partition move into it first, so
-- attaching it never fails. Returns whether it created one.
CREATE FUNCTION ensure_partition(parent text, day date) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT SET lock_timeout = '2s' AS $$
DECLARE
    part text := parent || '_p' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    -- One caller at a time (two replicas starting together both create today's
    -- partitions): while another is at it, there is nothing to do here.
    IF NOT pg_try_advisory_xact_lock(hashtext(current_schema() || '.partitions')) THEN
        RETURN false;
    END IF;
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, parent);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE created_at >= %L AND created_at < %L '
                       'RETURNING *) INSERT INTO %I SELECT * FROM moved',
                       parent || '_default', lo, hi, part);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       parent, part, lo, hi);
    EXCEPTION WHEN lock_not_available THEN
        -- The DEFAULT partition is busy for longer than lock_timeout: the rows stay in it
        -- and the next round (hourly) tries again, rather than holding up its writers.
        RETURN false;
    END;
    RETURN true;
END;
$$;

-- Drops the day partitions of ``parent`` that end on or before ``before`` (and deletes the
-- DEFAULT partition's rows older than it). Returns the partitions dropped. A partition whose
-- parent stays busy past lock_timeout is left for the next round.
CREATE FUNCTION drop_partitions_before(parent text, before date) RETURNS SETOF text
LANGUAGE plpgsql SET search_path FROM CURRENT SET lock_timeout = '2s' AS $$
DECLARE
    part text;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext(current_schema() || '.partitions')) THEN
        RETURN;
    END IF;
    FOR part IN
        SELECT c.relname::text
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(parent)
          AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
          AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= before
        ORDER BY c.relname
    LOOP
        BEGIN
            EXECUTE format('DROP TABLE %I', part);
            RETURN NEXT part;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- the parent stays busy: this partition waits for the next round
        END;
    END LOOP;
    EXECUTE format('DELETE FROM %I WHERE created_at < %L',
                   parent || '_default', before::timestamp AT TIME ZONE 'UTC');
END;
$$;

-- Refreshes the planner statistics of one day's partitions (the day runs are being moved
-- into), so that reads of fresh history keep their index plans whatever autovacuum does.
CREATE FUNCTION analyze_day(day date) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    part text;
BEGIN
    FOREACH part IN ARRAY ARRAY['task_history', 'dag_history', 'task_event', 'user_event'] LOOP
        part := part || '_p' || to_char(day, 'YYYYMMDD');
        IF to_regclass(part) IS NOT NULL THEN
            EXECUTE format('ANALYZE %I', part);
        END IF;
    END LOOP;
END;
$$;

-- Durable tasks (docs/durable.md): the ordered log of a durable task's calls — its steps,
-- waits and children — which a new invocation replays from the top.
--
-- The three tables are range-partitioned by UTC day on created_at like task_history, and
-- created_at here is the *run's* creation time (the task row's created_at), not the row's:
-- a run's whole log sits in one partition, next to its task_history rows, and goes when
-- that day is dropped. Because the partition key is constant per task, the primary keys
-- (which must contain it) still make (task, branch, position) unique. Every statement
-- passes the run's created_at with the task id, so it reads one partition.

-- One row per durable task, and the lock point: every writer of a task's log (appends,
-- a timer firing, an event, a child finishing, an eviction, a reset) locks this row first,
-- then touches entries. `invocation` fences stale workers off (bumped by each assignment
-- and reset); `satisfied_counter` numbers settlements (durable_entry.satisfied_seq).
CREATE TABLE durable_log (
    task_id           bigint NOT NULL,
    created_at        timestamptz NOT NULL,
    tenant_id         bigint NOT NULL,
    invocation        integer NOT NULL DEFAULT 0,
    active_branch     integer NOT NULL DEFAULT 1,
    satisfied_counter bigint NOT NULL DEFAULT 0,
    evicted_at        timestamptz,
    opened_at         timestamptz NOT NULL DEFAULT now(),
    -- The run's whole-life deadline (created_at + the task's `timeout`), set when the log
    -- is first opened; the leader's timeouts loop fails runs past it, evicted or not.
    deadline_at       timestamptz,
    PRIMARY KEY (task_id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE durable_log_default PARTITION OF durable_log DEFAULT;

CREATE INDEX durable_log_deadline_idx ON durable_log (deadline_at)
    WHERE deadline_at IS NOT NULL;

-- Ids of the queue items of restored durable tasks: counted up from -2^62, below every
-- ordinary item's id, so the claim's `ORDER BY priority DESC, id` takes a restored task
-- ahead of ordinary work of its priority (and restored tasks among themselves in order).
CREATE SEQUENCE queue_item_ahead_seq;

-- The branches of a task's log: branch 1 is the root (fork_position 1); runs.reset makes
-- the others. At position p a branch shows its own entry if p >= fork_position, otherwise
-- its parent's, recursively.
CREATE TABLE durable_branch (
    task_id       bigint NOT NULL,
    created_at    timestamptz NOT NULL,
    branch        integer NOT NULL,
    parent_branch integer,
    fork_position integer NOT NULL,
    reason        text NOT NULL,
    forked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, created_at, branch)
) PARTITION BY RANGE (created_at);

CREATE TABLE durable_branch_default PARTITION OF durable_branch DEFAULT;

-- One recorded call. `kind` is 'step', 'wait' or 'child'; `status` is 'pending', 'ok',
-- 'error' or 'dropped' (a pending entry a reset made invisible). `wake_at` is written once,
-- from the database clock. `satisfied_seq` orders settlements for the replay's release gate.
-- The primary key also serves reading a branch chain by position.
CREATE TABLE durable_entry (
    task_id           bigint NOT NULL,
    created_at        timestamptz NOT NULL,
    branch            integer NOT NULL,
    position          integer NOT NULL,
    kind              text NOT NULL,
    name              text NOT NULL,
    fingerprint       text NOT NULL,
    request           jsonb,
    wake_at           timestamptz,
    child_external_id uuid,
    status            text NOT NULL,
    result            jsonb,
    error             jsonb,
    fired             text,
    event_id          bigint,
    satisfied_seq     bigint,
    invocation        integer NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    satisfied_at      timestamptz,
    PRIMARY KEY (task_id, created_at, branch, position)
) PARTITION BY RANGE (created_at);

CREATE TABLE durable_entry_default PARTITION OF durable_entry DEFAULT;

-- What the timer sweeper claims (and sleeps until): pending entries with a deadline.
CREATE INDEX durable_entry_due_idx ON durable_entry (wake_at)
    WHERE status = 'pending' AND wake_at IS NOT NULL;
-- The entry a child's end settles.
CREATE INDEX durable_entry_child_idx ON durable_entry (child_external_id)
    WHERE status = 'pending' AND child_external_id IS NOT NULL;
-- The pending entries of one task's log (what it waits for, its due sleeps, whether it is
-- blocked): a task with a long log of settled steps finds them without reading its steps.
CREATE INDEX durable_entry_pending_idx ON durable_entry (task_id, created_at)
    WHERE status = 'pending';

-- The branch chain of a task's log (docs/durable.md, "Visibility"): from the active branch
-- up to the root, each branch with the positions it shows, lo <= position < hi (hi NULL:
-- no bound). A branch shows its own entries from its fork_position up to the lowest fork
-- of the branches below it in the chain. Every reader of the visible log joins
-- durable_entry to this.
CREATE FUNCTION durable_chain(p_task_id bigint, p_created_at timestamptz)
RETURNS TABLE (branch integer, lo integer, hi integer)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    WITH RECURSIVE chain (branch, parent_branch, lo, hi) AS (
        SELECT b.branch, b.parent_branch, b.fork_position, NULL::integer
        FROM durable_log l
        JOIN durable_branch b
          ON b.task_id = l.task_id AND b.created_at = l.created_at
         AND b.branch = l.active_branch
        WHERE l.task_id = p_task_id AND l.created_at = p_created_at
        UNION ALL
        SELECT p.branch, p.parent_branch, p.fork_position, least(c.hi, c.lo)
        FROM chain c
        JOIN durable_branch p
          ON p.task_id = p_task_id AND p.created_at = p_created_at
         AND p.branch = c.parent_branch
    )
    SELECT c.branch, c.lo, c.hi FROM chain c
$$;

-- Whether a wait holds once the conditions at the paths p_done are satisfied: every item
-- of its request's `conditions` holds, an or group when any of its conditions does.
CREATE FUNCTION durable_wait_holds(p_request jsonb, p_done text[])
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(p_request -> 'conditions') IS DISTINCT FROM 'array' THEN false
        WHEN jsonb_array_length(p_request -> 'conditions') = 0 THEN false
        ELSE NOT EXISTS (
            SELECT 1
            FROM jsonb_array_elements(p_request -> 'conditions') WITH ORDINALITY AS c(item, n)
            WHERE CASE
                WHEN jsonb_typeof(c.item) = 'object' AND c.item ->> 'kind' = 'or' THEN
                    NOT EXISTS (
                        SELECT 1
                        FROM generate_series(
                            0,
                            CASE WHEN jsonb_typeof(c.item -> 'items') = 'array'
                                 THEN jsonb_array_length(c.item -> 'items') ELSE 0 END - 1
                        ) AS j
                        WHERE ((c.n - 1) || '.' || j) = ANY(coalesce(p_done, '{}'))
                    )
                ELSE NOT ((c.n - 1)::text = ANY(coalesce(p_done, '{}')))
            END
        )
    END
$$;

-- Settles pending entries (a timer, an event, a child's end): status 'ok' or 'error',
-- the result or error, which condition fired and the event. Each takes satisfied_seq =
-- ++satisfied_counter of its task, in the order given. An entry no longer pending is left
-- alone and not returned, so a second settlement is a no-op. Run under the logs' locks
-- (claim_due_durable_timers, lock_durable_logs).
--
-- Restore, in the same statement: a task that was evicted (evicted_at set, status
-- EVICTED) is queued again as its next attempt — not a retry: retry_count stays — with a
-- queue item whose id is below every ordinary one (queue_item_ahead_seq), so it goes ahead
-- of ordinary work of its priority. It was admitted before, so it needs no concurrency
-- admission (the ready rule with already_admitted, see make_tasks_ready). evicted_at is
-- cleared under the lock, so a second settlement (or a second restore) queues nothing.
-- `restored` says which rows' tasks were queued (the caller signals their tenants).
--
-- And what follows a settlement, so that it costs no further statement: the conditions of
-- a settled wait that never held are dropped (the satisfied ones stay, as the record of
-- the events the task used); each row says which attempt of which worker runs its task
-- now (`worker_id`, `attempt`: NULL when none does), whom to deliver it to, and whether
-- the task has an execution timeout (`timed`: only then does its deadline need re-arming).
--
-- PL/pgSQL, so that its statement is planned for the arrays it is given (the engine's
-- connections use plan_cache_mode=force_custom_plan).
CREATE FUNCTION settle_durable_entries(
    p_task_ids bigint[], p_created_ats timestamptz[], p_branches integer[],
    p_positions integer[], p_statuses text[], p_results jsonb[], p_errors jsonb[],
    p_fired text[], p_event_ids bigint[])
RETURNS TABLE (task_id bigint, created_at timestamptz, branch integer, "position" integer,
               status text, satisfied_seq bigint, tenant_id bigint, invocation integer,
               evicted_at timestamptz, restored boolean, worker_id bigint, attempt integer,
               timed boolean)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH x AS (
        SELECT *
        FROM unnest(p_task_ids, p_created_ats, p_branches, p_positions, p_statuses, p_results,
                    p_errors, p_fired, p_event_ids)
             WITH ORDINALITY
             AS x(task_id, created_at, branch, position, status, result, error, fired,
                  event_id, ord)
    ),
    pending AS (
        SELECT x.*, row_number() OVER (PARTITION BY x.task_id ORDER BY x.ord) AS n
        FROM x
        JOIN durable_entry e
          ON e.task_id = x.task_id AND e.created_at = x.created_at AND e.branch = x.branch
         AND e.position = x.position
        WHERE e.status = 'pending'
    ),
    logs AS (
        UPDATE durable_log l
        SET satisfied_counter = l.satisfied_counter + c.n, evicted_at = NULL
        FROM (SELECT p.task_id, p.created_at, count(*) AS n, o.evicted_at
              FROM pending p
              JOIN durable_log o ON o.task_id = p.task_id AND o.created_at = p.created_at
              GROUP BY 1, 2, 4) c
        WHERE l.task_id = c.task_id AND l.created_at = c.created_at
        RETURNING l.task_id, l.satisfied_counter - c.n AS base, l.tenant_id, l.invocation,
                  c.evicted_at
    ),
    evicted AS (
        SELECT t.id, t.tenant_id, t.attempt, t.task_name, t.priority, t.schedule_timeout_ms,
               t.rate_limits, t.desired_worker_id
        FROM logs
        JOIN task t ON t.id = logs.task_id
        WHERE logs.evicted_at IS NOT NULL AND t.status = 'EVICTED'
    ),
    requeued AS (
        INSERT INTO queue_item (id, tenant_id, task_id, attempt, queue, priority,
                                available_at, schedule_deadline, rate_limits,
                                desired_worker_id)
        OVERRIDING SYSTEM VALUE
        SELECT nextval('queue_item_ahead_seq') - 4611686018427387904, v.tenant_id, v.id,
               v.attempt + 1, v.task_name, v.priority, now(),
               CASE WHEN v.schedule_timeout_ms > 0
                    THEN now() + v.schedule_timeout_ms * interval '1 millisecond'
               END,
               v.rate_limits, v.desired_worker_id
        FROM evicted v
        RETURNING queue_item.task_id
    ),
    restored AS (
        UPDATE task t
        SET status = 'QUEUED', attempt = t.attempt + 1, started_at = NULL, worker_id = NULL
        FROM requeued q
        WHERE t.id = q.task_id
        RETURNING t.id
    ),
    cleared AS (
        DELETE FROM task_wait w
        USING pending p
        WHERE w.task_id = p.task_id AND w.dag_id IS NULL AND w.branch = p.branch
          AND w.position = p.position AND w.satisfied_at IS NULL
    )
    UPDATE durable_entry e
    SET status = p.status, result = p.result, error = p.error, fired = p.fired,
        event_id = p.event_id, satisfied_seq = logs.base + p.n, satisfied_at = now()
    FROM pending p
    JOIN logs ON logs.task_id = p.task_id
    LEFT JOIN task_runtime r ON r.task_id = p.task_id
    WHERE e.task_id = p.task_id AND e.created_at = p.created_at AND e.branch = p.branch
      AND e.position = p.position AND e.status = 'pending'
    RETURNING e.task_id, e.created_at, e.branch, e.position, e.status, e.satisfied_seq,
              logs.tenant_id, logs.invocation, logs.evicted_at,
              EXISTS (SELECT 1 FROM restored WHERE restored.id = e.task_id),
              r.worker_id, r.attempt,
              EXISTS (SELECT 1 FROM task t
                      WHERE t.id = e.task_id AND t.execution_timeout_ms > 0);
END
$$;

-- Crons (issue 13): a task's time trigger. Code crons (source 'code') are declared with
-- @app.task(on_crons=...) and replaced each time the task is registered; the leader's
-- crons controller fires each one when next_fire_at is due and advances it.
CREATE TABLE cron (
    id           bigserial PRIMARY KEY,
    tenant_id    bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    name         text NOT NULL,
    task_name    text,
    workflow_name text,
    expression   text NOT NULL,
    timezone     text NOT NULL DEFAULT 'UTC',
    input        jsonb NOT NULL DEFAULT '{}',
    enabled      boolean NOT NULL DEFAULT true,
    source       text NOT NULL DEFAULT 'code' CHECK (source IN ('code', 'api')),
    next_fire_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- What the runs carry besides their input, and the policies (migration 0018): overlap
    -- (a tick while the previous run still runs) and catch-up (missed ticks at most
    -- catch_up_window_s old fire, at most catch_up_max). buffered_tick: the tick a
    -- buffer_one cron holds until its previous run ends.
    additional_metadata jsonb NOT NULL DEFAULT '{}',
    priority     smallint NOT NULL DEFAULT 0,
    overlap      text NOT NULL DEFAULT 'allow'
        CHECK (overlap IN ('allow', 'skip', 'cancel_previous', 'buffer_one')),
    catch_up_window_s integer NOT NULL DEFAULT 0 CHECK (catch_up_window_s >= 0),
    catch_up_max integer NOT NULL DEFAULT 0 CHECK (catch_up_max >= 0),
    buffered_tick timestamptz,
    -- The newest run the cron started on a tick or with trigger_now (migration 0023): the
    -- overlap policies look at its status.
    last_run_id  uuid,
    UNIQUE (tenant_id, name),
    CHECK ((task_name IS NULL) <> (workflow_name IS NULL))
);
-- The controller's "what is due" and "when is the next one".
CREATE INDEX cron_due_idx ON cron (next_fire_at) WHERE enabled AND next_fire_at IS NOT NULL;
CREATE INDEX cron_buffered_idx ON cron (id) WHERE buffered_tick IS NOT NULL;

-- The ticks a cron handled: the run it started (run_id, a task or workflow run's external
-- id; outcome 'started' on a tick, 'manual' by trigger_now, 'backfill') or why it started
-- none ('skipped': the overlap policy; 'paused'). "Last runs" reads them, and backfill finds
-- the ticks that have a run: those are kept until the tick is older than the retention (the
-- backfill horizon, pruned by the retention loop through cron_fire_tick_idx), the others
-- are trimmed to each cron's newest 20 (migration 0023).
CREATE TABLE cron_fire (
    cron_id    bigint NOT NULL REFERENCES cron (id) ON DELETE CASCADE,
    tick       timestamptz NOT NULL,
    run_id     uuid,
    outcome    text NOT NULL CHECK (outcome IN ('started', 'manual', 'backfill', 'skipped', 'paused')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cron_id, tick)
);
CREATE INDEX cron_fire_tick_idx ON cron_fire (tick);

-- A paused task or workflow (kind 'task' | 'workflow'): the scheduler assigns none of its
-- runs (they stay queued) and its crons do not fire; with drop_runs its queued runs are
-- cancelled instead.
CREATE TABLE paused (
    tenant_id bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    kind      text NOT NULL CHECK (kind IN ('task', 'workflow')),
    name      text NOT NULL,
    drop_runs boolean NOT NULL DEFAULT false,
    paused_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, name)
);

-- Scheduled runs (issue 13): one run of a task or a workflow, to start at run_at. It is no
-- queue item until then: the leader's schedules controller locks the due rows (SKIP
-- LOCKED), creates each run through ingest with the request key 'schedule:<external_id>'
-- and marks the row FIRED with the run's id, so it fires once across replicas and restarts.
-- Rows are kept after firing (status and run id for app.schedules.get).
CREATE TABLE scheduled_run (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id           bigint NOT NULL,
    external_id         uuid NOT NULL,
    task_name           text,
    workflow_name       text,
    run_at              timestamptz NOT NULL,
    input               jsonb NOT NULL,
    additional_metadata jsonb NOT NULL DEFAULT '{}',
    priority            smallint NOT NULL DEFAULT 0,
    -- SCHEDULED until due; FIRED (run_id set) or FAILED (error: the run was refused).
    status              text NOT NULL DEFAULT 'SCHEDULED'
                        CHECK (status IN ('SCHEDULED', 'FIRED', 'FAILED')),
    run_id              uuid,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    fired_at            timestamptz,
    CHECK ((task_name IS NULL) <> (workflow_name IS NULL))
);
CREATE UNIQUE INDEX scheduled_run_external_id_idx ON scheduled_run (external_id);
-- The controller's "what is due" and "when is the next one".
CREATE INDEX scheduled_run_due_idx ON scheduled_run (run_at) WHERE status = 'SCHEDULED';
-- Listing and bulk deletes by time range.
CREATE INDEX scheduled_run_tenant_idx ON scheduled_run (tenant_id, run_at, id);

-- Idempotency keys (issue 13): the run a user-facing key names. A trigger whose key is
-- live gets this run back instead of a new one. Live: until expires_at (TTL mode), or,
-- when expires_at is NULL, until the run is finished. Written in the flush that writes the
-- run, under a transaction-level advisory lock per key (docs/idempotency.md).
CREATE TABLE idempotency_key (
    tenant_id  bigint NOT NULL,
    key        text NOT NULL,
    run_id     uuid NOT NULL,
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_key_expires_idx ON idempotency_key (expires_at)
    WHERE expires_at IS NOT NULL;

-- Event-triggered runs (README "Events").

-- A filter on a subscriber (a task or a workflow): a CEL expression over the event
-- (input, additional_metadata, scope, key), optionally for one scope only, and a payload
-- the runs it lets through get (ctx.filter_payload). Filters declared in code
-- (default_filters, source 'code') are replaced at each registration of their task or
-- workflow; the others (source 'api') are managed with app.filters.
CREATE TABLE event_filter (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    external_id   uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    task_name     text,
    workflow_name text,
    scope         text,
    expression    text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    source        text NOT NULL DEFAULT 'api' CHECK (source IN ('code', 'api')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((task_name IS NULL) <> (workflow_name IS NULL))
);
CREATE INDEX event_filter_task_idx ON event_filter (tenant_id, task_name) WHERE task_name IS NOT NULL;
CREATE INDEX event_filter_workflow_idx ON event_filter (tenant_id, workflow_name)
    WHERE workflow_name IS NOT NULL;

-- The runs an event started: one row per run, written in the transaction that stored the
-- event (replay 0) or replayed it (replay n). `filter_id` is the external id of the filter
-- that let the run through (NULL: its subscriber had no filter for the event's scope).
-- Partitioned by day on the event's created_at, like user_event, and dropped with it.
CREATE TABLE event_run (
    tenant_id     bigint NOT NULL,
    event_id      bigint NOT NULL,
    created_at    timestamptz NOT NULL,
    run_id        uuid NOT NULL,
    task_name     text,
    workflow_name text,
    filter_id     uuid,
    replay        integer NOT NULL DEFAULT 0,
    triggered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, created_at, run_id)
) PARTITION BY RANGE (created_at);

CREATE TABLE event_run_default PARTITION OF event_run DEFAULT;

-- The payload of the filter that let an event's run through (ctx.filter_payload), kept
-- beside the run, not in its metadata: written in the event push's transaction for each
-- run a filter let through (run_id: the task run's or the workflow run's external id), read
-- by every assignment of its attempts (and of its steps), pruned with the retention like
-- child_run.
CREATE TABLE run_filter_payload (
    run_id     uuid PRIMARY KEY,
    tenant_id  bigint NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX run_filter_payload_created_idx ON run_filter_payload (created_at);

-- Incoming webhooks: authenticated POSTs to /webhooks/<tenant>/<name> become user events.
-- The credential (an HMAC secret, a Basic password or an API key) is stored only encrypted
-- (AES-GCM under the engine's webhook secret key, bound to the webhook's external id);
-- auth_options holds what is not secret (header, algorithm, encoding, prefix, user name,
-- replay tolerance).
CREATE TABLE webhook (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id            bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    external_id          uuid NOT NULL UNIQUE,
    name                 text NOT NULL,
    auth_kind            text NOT NULL
                         CHECK (auth_kind IN ('HMAC', 'STRIPE', 'GITHUB', 'SLACK', 'BASIC',
                                               'API_KEY')),
    auth_options         jsonb NOT NULL DEFAULT '{}',
    secret               bytea NOT NULL,
    event_key_expression text NOT NULL,
    scope_expression     text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- CEL naming a request's delivery (NULL: no deduplication), see trigger_request.
    dedup_expression     text,
    UNIQUE (tenant_id, name)
);

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

-- A bulk cancel or replay: the runs it applies to, resolved when it was asked for (ids as
-- given, or every run the filter matched then), processed in chunks from `position`. The
-- replica driving it (`owner`) touches `heartbeat_at` after each chunk; a RUNNING operation
-- whose heartbeat is stale is claimed and resumed by another replica (engine/runs/bulk.py).
CREATE TABLE bulk_operation (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    bigint NOT NULL,
    external_id  uuid NOT NULL UNIQUE,
    action       text NOT NULL CHECK (action IN ('cancel', 'replay')),
    state        text NOT NULL DEFAULT 'RUNNING'
                 CHECK (state IN ('RUNNING', 'COMPLETED', 'FAILED')),
    reason       text NOT NULL DEFAULT '',
    filter       jsonb,
    run_ids      text[] NOT NULL,
    total        integer NOT NULL,
    position     integer NOT NULL DEFAULT 0,
    done         integer NOT NULL DEFAULT 0,
    failed       integer NOT NULL DEFAULT 0,
    error        text,
    errors       integer NOT NULL DEFAULT 0,
    owner        text NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

CREATE INDEX bulk_operation_tenant_idx ON bulk_operation (tenant_id, created_at DESC);
CREATE INDEX bulk_operation_running_idx ON bulk_operation (heartbeat_at)
    WHERE state = 'RUNNING';

-- Dashboard (docs/dashboard.md): people who sign in to the web UI, each in one tenant with a
-- role (viewer: reads; operator: also cancels and replays; admin: also manages users).
-- password_hash is argon2id; NULL for a user who signs in only through one-time links.
CREATE TABLE dashboard_user (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    email         text NOT NULL UNIQUE,
    role          text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dashboard_user_tenant_idx ON dashboard_user (tenant_id, email);

-- A signed-in browser. Only the SHA-256 of the session cookie is stored; csrf_token is sent
-- back with every action of the session.
CREATE TABLE dashboard_session (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    user_id     bigint NOT NULL REFERENCES dashboard_user (id) ON DELETE CASCADE,
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX dashboard_session_user_idx ON dashboard_session (user_id);
CREATE INDEX dashboard_session_expires_idx ON dashboard_session (expires_at);

-- One-time sign-in links (`stoker lite` prints one): the SHA-256 of the link's token, used
-- once, before expires_at.
CREATE TABLE dashboard_login_link (
    token_hash bytea PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES dashboard_user (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX dashboard_login_link_user_idx ON dashboard_login_link (user_id);

-- Task logs and live streams (docs/observability.md).
--
-- task_log holds the lines tasks log (ctx.log and the standard logging module) in
-- batches: one row holds lines of one attempt as they arrived together (parallel arrays,
-- one entry a line), so that a task logging 100 lines costs a row or two, not 100.
-- Range-partitioned by day on created_at like task_history: the retention drops its day
-- partitions with the others. A batch names its task run and, for a workflow step, the
-- workflow run (run_id), so a run's logs are one index range whichever table the run is in.
CREATE TABLE task_log (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id   bigint NOT NULL,
    task_id     bigint NOT NULL,
    run_id      uuid NOT NULL,
    task_run_id uuid NOT NULL,
    task_name   text NOT NULL,
    attempt     integer NOT NULL,
    max_level   smallint NOT NULL,
    levels      smallint[] NOT NULL,
    loggers     text[] NOT NULL,
    messages    text[] NOT NULL,
    logged_at   bigint[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (created_at);

CREATE TABLE task_log_default PARTITION OF task_log DEFAULT;

-- A run's batches in order, and the tenant's batches newest first (search, also by task
-- name or level, which filter that range).
CREATE INDEX task_log_run_idx ON task_log (tenant_id, run_id, id);
CREATE INDEX task_log_tenant_created_idx ON task_log (tenant_id, created_at DESC, id DESC);

-- task_stream holds the chunks running attempts publish (ctx.put_stream), for a bounded
-- time (the engine deletes chunks older than its stream retention) so that a subscriber
-- that joins late reads the stream from its start. The row with is_end closes an attempt's
-- stream.
CREATE TABLE task_stream (
    task_id    bigint NOT NULL,
    attempt    integer NOT NULL,
    seq        integer NOT NULL,
    tenant_id  bigint NOT NULL,
    data       bytea NOT NULL,
    is_text    boolean NOT NULL,
    is_end     boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, attempt, seq)
);

CREATE INDEX task_stream_created_idx ON task_stream (created_at);

-- HTTP push workers (docs/http-workers.md): endpoints the engine POSTs attempts to. Each
-- is a worker to the scheduler (a worker row with the same external id, registered by the
-- leader's push delivery); its secret signs the deliveries and is AES-GCM ciphertext
-- under the engine's webhook key, bound to external_id.
CREATE TABLE push_endpoint (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    external_id uuid NOT NULL UNIQUE,
    name        text NOT NULL,
    url         text NOT NULL,
    slots       integer NOT NULL CHECK (slots > 0),
    task_names  text[] NOT NULL,
    secret      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
