-- Run history and events in time-partitioned tables (see docs/storage.md).
--
-- Finished runs move out of the live tables (task, dag) into task_history and dag_history,
-- which, like task_event and user_event, are range-partitioned by day on created_at. The
-- engine creates each day's partition ahead of time (ensure_partition) and drops whole
-- partitions past the retention (drop_partitions_before); a DEFAULT partition catches rows
-- no day partition covers, so a write never fails for want of a partition.

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

-- task_event and user_event become partitioned by day; their rows so far go to DEFAULT.
-- (Copied aside and re-created, so that every name is the one a fresh schema has.)
CREATE TABLE task_event_old AS SELECT * FROM task_event;
DROP TABLE task_event;

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

INSERT INTO task_event (id, tenant_id, task_id, attempt, kind, worker_id, data, created_at)
OVERRIDING SYSTEM VALUE
SELECT id, tenant_id, task_id, attempt, kind, worker_id, data, created_at FROM task_event_old;
SELECT setval(pg_get_serial_sequence('task_event', 'id'), coalesce(max(id), 0) + 1, false)
FROM task_event;
DROP TABLE task_event_old;

CREATE TABLE user_event_old AS SELECT * FROM user_event;
DROP TABLE user_event;

CREATE TABLE user_event (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id           bigint NOT NULL,
    external_id         uuid NOT NULL DEFAULT gen_random_uuid(),
    key                 text NOT NULL,
    payload             jsonb NOT NULL,
    additional_metadata jsonb NOT NULL DEFAULT '{}',
    scope               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE user_event_default PARTITION OF user_event DEFAULT;
CREATE INDEX user_event_tenant_created_idx ON user_event (tenant_id, created_at DESC, id DESC);

INSERT INTO user_event (id, tenant_id, external_id, key, payload, additional_metadata, scope,
                        created_at)
OVERRIDING SYSTEM VALUE
SELECT id, tenant_id, external_id, key, payload, additional_metadata, scope, created_at
FROM user_event_old;
SELECT setval(pg_get_serial_sequence('user_event', 'id'), coalesce(max(id), 0) + 1, false)
FROM user_event;
DROP TABLE user_event_old;

-- Creates the day partition of a partitioned table (``<parent>_pYYYYMMDD``, UTC days) if
-- it is missing. Rows of that day already in the DEFAULT partition move into it first, so
-- attaching it never fails. Returns whether it created one.
CREATE FUNCTION ensure_partition(parent text, day date) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    part text := parent || '_p' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, parent);
    EXECUTE format('WITH moved AS (DELETE FROM %I WHERE created_at >= %L AND created_at < %L '
                   'RETURNING *) INSERT INTO %I SELECT * FROM moved',
                   parent || '_default', lo, hi, part);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   parent, part, lo, hi);
    RETURN true;
END;
$$;

-- Drops the day partitions of ``parent`` that end on or before ``before`` (and deletes the
-- DEFAULT partition's rows older than it). Returns the partitions dropped.
CREATE FUNCTION drop_partitions_before(parent text, before date) RETURNS SETOF text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    part text;
BEGIN
    FOR part IN
        SELECT c.relname::text
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(parent)
          AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
          AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= before
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
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
