-- Run history and retention: moving finished runs out of the live tables, partitions
-- (docs/storage.md).

-- name: archive_runs
-- Moves up to %(limit)s finished workflow runs (dag row and every step) and up to
-- %(limit)s finished single-task runs that finished before the cutoff into history, in one
-- statement. SKIP LOCKED: a run some transaction holds (a replay, a late cancel) waits for
-- the next round; ids, external ids and every column move as they are.
WITH dags AS (
    DELETE FROM dag d
    WHERE d.id IN (SELECT id FROM dag
                   WHERE status <> 'RUNNING'
                     AND finished_at < now() - %(after_ms)s * interval '1 millisecond'
                   ORDER BY finished_at
                   LIMIT %(limit)s
                   FOR UPDATE SKIP LOCKED)
    RETURNING d.id, d.tenant_id, d.external_id, d.workflow_name, d.version_id, d.status,
              d.input, d.additional_metadata, d.error, d.cancelled, d.created_at,
              d.finished_at
),
dags_moved AS (
    INSERT INTO dag_history (id, tenant_id, external_id, workflow_name, version_id, status,
                             input, additional_metadata, error, cancelled, created_at,
                             finished_at)
    SELECT * FROM dags
),
singles AS (
    SELECT id FROM task
    WHERE dag_id IS NULL AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')
      AND finished_at < now() - %(after_ms)s * interval '1 millisecond'
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
tasks AS (
    DELETE FROM task t
    WHERE t.id IN (SELECT id FROM singles) OR t.dag_id IN (SELECT id FROM dags)
    RETURNING t.id, t.tenant_id, t.external_id, t.task_name, t.status, t.attempt,
              t.retry_count, t.priority, t.input, t.additional_metadata, t.output, t.error,
              t.max_retries, t.backoff_factor, t.backoff_max_ms, t.execution_timeout_ms,
              t.schedule_timeout_ms, t.worker_id, t.created_at, t.started_at, t.finished_at,
              t.desired_worker_id, t.rate_limits, t.assigned_at, t.dag_id, t.step,
              t.skipped, t.concurrency_keys
),
waits_dropped AS (
    -- A durable task's satisfied conditions stay while it lives (the events it used).
    DELETE FROM task_wait w USING tasks WHERE w.task_id = tasks.id
),
tasks_moved AS (
    INSERT INTO task_history (id, tenant_id, external_id, task_name, status, attempt,
                              retry_count, priority, input, additional_metadata, output,
                              error, max_retries, backoff_factor, backoff_max_ms,
                              execution_timeout_ms, schedule_timeout_ms, worker_id,
                              created_at, started_at, finished_at, desired_worker_id,
                              rate_limits, assigned_at, dag_id, step, skipped,
                              concurrency_keys)
    SELECT * FROM tasks
)
SELECT (SELECT count(*) FROM dags) AS dags, (SELECT count(*) FROM tasks) AS tasks;

-- name: ensure_partitions
-- Creates the missing day partitions of the partitioned tables from %(first)s for
-- %(days)s days; returns how many it created.
SELECT count(*) FILTER (WHERE created) AS created
FROM unnest(ARRAY['task_history', 'dag_history', 'task_event', 'user_event', 'event_run', 'durable_log',
                    'durable_branch', 'durable_entry', 'task_log']) AS p(parent),
     generate_series(0, %(days)s - 1) AS d(n),
     LATERAL ensure_partition(p.parent, %(first)s::date + d.n) AS created;

-- name: drop_expired_partitions
-- Drops the day partitions that ended before %(before)s (the retention's cutoff).
SELECT p.parent, dropped
FROM unnest(ARRAY['task_history', 'dag_history', 'task_event', 'user_event', 'event_run', 'durable_log',
                    'durable_branch', 'durable_entry', 'task_log']) AS p(parent),
     LATERAL drop_partitions_before(p.parent, %(before)s::date) AS dropped;

-- name: prune_run_filter_payloads
-- Forgets the filter payloads of runs older than the retention (their runs are gone).
DELETE FROM run_filter_payload
WHERE run_id IN (SELECT run_id FROM run_filter_payload WHERE created_at < %(before)s::date
                 LIMIT %(limit)s);

-- name: prune_child_runs
-- Forgets child links older than the retention (their runs are gone), in batches.
DELETE FROM child_run
WHERE ctid IN (SELECT ctid FROM child_run WHERE created_at < %(before)s::date LIMIT %(limit)s);

-- name: vacuum_live_runs
-- Clears the dead rows that updates and moves to history leave in the live run tables and
-- refreshes their statistics (the engine does not rely on autovacuum for its hot tables).
VACUUM (SKIP_LOCKED, ANALYZE) task, dag;

-- name: analyze_day
SELECT analyze_day(%(day)s::date);

-- name: analyze_durable_day
-- Refreshes the planner statistics of today's (UTC) day partitions of the durable log. A
-- live durable run's log is written, and its entries updated as they settle, in the
-- partition of the run's creation day, so the reads of live logs (replay, the REST log,
-- the timer sweeper) keep their index plans whatever autovacuum does. (A block, not a
-- function: the partitions' names are made here, from the database's clock.)
DO $$
DECLARE
    part text;
BEGIN
    FOREACH part IN ARRAY ARRAY['durable_log', 'durable_branch', 'durable_entry'] LOOP
        part := part || '_p' || to_char((now() AT TIME ZONE 'UTC')::date, 'YYYYMMDD');
        IF to_regclass(part) IS NOT NULL THEN
            EXECUTE 'ANALYZE ' || quote_ident(part);
        END IF;
    END LOOP;
END;
$$;
