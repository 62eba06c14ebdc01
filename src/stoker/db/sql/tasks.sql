-- Task runs: creation, state transitions and outcomes. Every statement works on a batch
-- passed as parallel arrays and unnested, so a flush is one round trip whatever its size.

-- name: upsert_task_defs
INSERT INTO task_def (tenant_id, name, config, updated_at)
SELECT %(tenant_id)s, d.name, d.config, now()
FROM unnest(%(names)s::text[], %(configs)s::jsonb[]) AS d(name, config)
ON CONFLICT (tenant_id, name) DO UPDATE SET config = excluded.config, updated_at = now();

-- name: get_task_defs
SELECT name, config FROM task_def WHERE tenant_id = %(tenant_id)s ORDER BY name;

-- name: insert_tasks
-- Creates task runs in one statement. A QUEUED run is made ready (make_tasks_ready in
-- schema.sql: its first queue item, or, when it has concurrency keys, its
-- concurrency_slot rows). A run created PENDING (a workflow step waiting for its parents)
-- or FAILED (its policy expression failed on its input) is not ready yet.
WITH new AS (
    SELECT *
    FROM unnest(
        %(external_ids)s::uuid[], %(task_names)s::text[], %(priorities)s::smallint[],
        %(inputs)s::jsonb[], %(metadata)s::jsonb[], %(max_retries)s::int[],
        %(backoff_factors)s::float8[], %(backoff_max_ms)s::bigint[],
        %(execution_timeouts_ms)s::bigint[], %(schedule_timeouts_ms)s::bigint[],
        %(run_at)s::timestamptz[], %(statuses)s::text[], %(errors)s::jsonb[],
        %(rate_limits)s::jsonb[], %(desired_worker_ids)s::bigint[],
        %(concurrency_keys)s::jsonb[]
    ) AS n(external_id, task_name, priority, input, metadata, max_retries, backoff_factor,
           backoff_max_ms, execution_timeout_ms, schedule_timeout_ms, run_at, status, error,
           rate_limits, desired_worker_id, concurrency_keys)
),
ins AS (
    INSERT INTO task (tenant_id, external_id, task_name, status, priority, input,
                      additional_metadata, max_retries, backoff_factor, backoff_max_ms,
                      execution_timeout_ms, schedule_timeout_ms, error, finished_at,
                      desired_worker_id, rate_limits, concurrency_keys)
    SELECT %(tenant_id)s, external_id, task_name, status, priority, input, metadata,
           max_retries, backoff_factor, backoff_max_ms, execution_timeout_ms,
           schedule_timeout_ms, error, CASE WHEN status <> 'QUEUED' THEN now() END,
           desired_worker_id, rate_limits, concurrency_keys
    FROM new
    RETURNING id, external_id
)
SELECT make_tasks_ready(
    array_agg(ROW(ins.id, %(tenant_id)s::bigint, 0, new.task_name, new.priority,
                  coalesce(new.run_at, now()), new.schedule_timeout_ms, new.rate_limits,
                  new.desired_worker_id, new.concurrency_keys)::ready_task),
    false)
FROM ins JOIN new ON new.external_id = ins.external_id
WHERE new.status = 'QUEUED';

-- name: mark_started
-- Records that attempts began running; a start for an attempt that already ended, or that
-- is not held by the worker reporting it (task_runtime.worker_id), is ignored.
UPDATE task t
SET status = 'RUNNING', started_at = to_timestamp(s.started_ms / 1000.0)
FROM unnest(%(task_ids)s::bigint[], %(attempts)s::int[], %(started_ms)s::bigint[],
            %(worker_ids)s::bigint[])
     AS s(task_id, attempt, started_ms, worker_id)
JOIN task_runtime r
  ON r.task_id = s.task_id AND r.attempt = s.attempt AND r.worker_id = s.worker_id
WHERE t.id = s.task_id AND t.attempt = s.attempt AND t.status = 'ASSIGNED';

-- name: complete_attempts
-- Ends attempts successfully. Only an attempt that still holds its task_runtime row, on
-- the worker reporting it, is recorded, so a late, duplicate or forged completion never
-- overwrites an accepted outcome.
-- The outputs come as one JSON array (cheaper to send than an array of jsonb), zipped
-- with the other columns by position. started_ms: when the attempt's start arrived in the
-- same flush, its time (the start is then written here, not by mark_started: one row
-- update fewer per task); 0 otherwise.
WITH c AS (
    SELECT i.task_id, i.attempt, i.worker_id, o.output,
           to_timestamp(i.finished_ms / 1000.0) AS finished_at,
           CASE WHEN i.started_ms > 0 THEN to_timestamp(i.started_ms / 1000.0) END
               AS started_at
    FROM unnest(%(task_ids)s::bigint[], %(attempts)s::int[], %(finished_ms)s::bigint[],
                %(worker_ids)s::bigint[], %(started_ms)s::bigint[])
         WITH ORDINALITY AS i(task_id, attempt, finished_ms, worker_id, started_ms, n)
    JOIN jsonb_array_elements(%(outputs)s::jsonb) WITH ORDINALITY AS o(output, n) USING (n)
),
-- The DELETE returns what the UPDATE needs, so each step is one pass over the batch (a join
-- back to c is planned as a nested loop over two CTEs, quadratic in the batch size).
ended AS (
    DELETE FROM task_runtime r USING c
    WHERE r.task_id = c.task_id AND r.attempt = c.attempt AND r.worker_id = c.worker_id
    RETURNING r.task_id, c.output, c.finished_at, c.started_at
)
UPDATE task t
SET status = 'COMPLETED', output = e.output, error = NULL, finished_at = e.finished_at,
    started_at = coalesce(t.started_at, e.started_at, e.finished_at)
FROM ended e
WHERE t.id = e.task_id
RETURNING t.id, t.external_id, t.tenant_id, t.dag_id, t.task_name,
          extract(epoch FROM t.finished_at - t.started_at)::float8 AS run_s,
          CASE WHEN %(with_metadata)s THEN t.additional_metadata END AS metadata;

-- name: fail_attempts
-- Ends attempts as failed and decides, per attempt, between a retry and a final failure.
-- An attempt that already ended (no task_runtime row) is ignored, and so is one reported by
-- a worker (reporter, NULL for the engine's own decisions) that does not hold it.
--   counts: the failure uses up one of the task's retries (an error raised by the task, a
--     timeout). A lost worker or a lost assignment does not: it is requeued as a new attempt
--     while the task has had fewer than max_requeues extra attempts.
--   retryable: false for NonRetryableError and errors that cannot succeed on a retry.
--   delay_ms: a RetryAfter delay; -1 to use the task's exponential backoff.
WITH f AS (
    SELECT *
    FROM unnest(%(task_ids)s::bigint[], %(attempts)s::int[], %(errors)s::jsonb[],
                %(retryable)s::bool[], %(counts)s::bool[], %(delays_ms)s::bigint[],
                %(kinds)s::text[], %(reporters)s::bigint[])
         AS f(task_id, attempt, error, retryable, counts, delay_ms, kind, reporter)
),
ended AS (
    DELETE FROM task_runtime r USING f
    WHERE r.task_id = f.task_id AND r.attempt = f.attempt
      AND (f.reporter IS NULL OR r.worker_id = f.reporter)
    RETURNING r.task_id, r.worker_id, f.attempt, f.error, f.retryable, f.counts, f.delay_ms,
              f.kind
),
decided AS (
    SELECT t.id, t.tenant_id, t.task_name, t.priority, t.started_at, t.schedule_timeout_ms,
           t.desired_worker_id, t.rate_limits,
           e.attempt, e.error, e.counts, e.kind, e.worker_id,
           e.retryable AND CASE WHEN e.counts THEN t.retry_count < t.max_retries
                                ELSE t.attempt - t.retry_count < %(max_requeues)s END
               AS retry,
           CASE WHEN e.delay_ms >= 0 THEN e.delay_ms
                WHEN NOT e.counts OR t.backoff_factor IS NULL THEN 0
                ELSE least(t.backoff_max_ms,
                           (1000 * power(t.backoff_factor, t.retry_count))::bigint)
           END AS delay_ms
    FROM ended e
    JOIN task t ON t.id = e.task_id
),
-- A retry keeps the concurrency slots its run holds: its next attempt is queued at once
-- (after its delay), never sent back to admission.
requeued AS MATERIALIZED (
    SELECT make_tasks_ready(
        array_agg(ROW(id, tenant_id, attempt + 1, task_name, priority,
                      now() + delay_ms * interval '1 millisecond', schedule_timeout_ms,
                      rate_limits, desired_worker_id, NULL)::ready_task)
            FILTER (WHERE retry),
        true)
    FROM decided
),
logged AS (
    INSERT INTO task_event (tenant_id, task_id, attempt, kind, worker_id, data)
    SELECT tenant_id, id, attempt, kind, worker_id,
           jsonb_build_object('error', error, 'started_at', started_at, 'retry', retry,
                              'delay_ms', CASE WHEN retry THEN delay_ms END)
    FROM decided
)
UPDATE task t
SET status = CASE WHEN d.retry THEN 'QUEUED' ELSE 'FAILED' END,
    attempt = CASE WHEN d.retry THEN d.attempt + 1 ELSE t.attempt END,
    retry_count = t.retry_count + CASE WHEN d.retry AND d.counts THEN 1 ELSE 0 END,
    error = d.error,
    started_at = CASE WHEN d.retry THEN NULL ELSE t.started_at END,
    finished_at = CASE WHEN d.retry THEN NULL ELSE now() END,
    worker_id = CASE WHEN d.retry THEN NULL ELSE t.worker_id END
FROM decided d, requeued
WHERE t.id = d.id
RETURNING t.id, t.external_id, t.tenant_id, t.status, d.worker_id, d.attempt, t.dag_id,
          t.task_name, d.kind, extract(epoch FROM now() - d.started_at)::float8 AS run_s,
          CASE WHEN %(with_metadata)s THEN t.additional_metadata END AS metadata;

-- name: expire_schedule_timeouts
-- Cancels queued attempts that waited for a worker longer than their schedule timeout.
WITH expired AS (
    DELETE FROM queue_item q
    WHERE q.id IN (
        SELECT id FROM queue_item
        WHERE schedule_deadline IS NOT NULL AND schedule_deadline < now()
        ORDER BY schedule_deadline
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING q.task_id, q.attempt, q.tenant_id
),
logged AS (
    INSERT INTO task_event (tenant_id, task_id, attempt, kind, data)
    SELECT tenant_id, task_id, attempt, 'SCHEDULE_TIMEOUT', jsonb_build_object('error', %(error)s::jsonb)
    FROM expired
)
UPDATE task t
SET status = 'CANCELLED', error = %(error)s::jsonb, finished_at = now()
FROM expired x
WHERE t.id = x.task_id
RETURNING t.id, t.external_id, t.tenant_id, t.task_name;

-- name: expired_runtimes
-- Attempts running past their execution timeout.
SELECT task_id, attempt, worker_id
FROM task_runtime
WHERE timeout_at IS NOT NULL AND timeout_at < now()
ORDER BY timeout_at
LIMIT %(limit)s;

-- name: refresh_timeouts
-- Only the worker holding an attempt can push its execution timeout out.
UPDATE task_runtime r
SET timeout_at = now() + x.timeout_ms * interval '1 millisecond'
FROM unnest(%(task_ids)s::bigint[], %(attempts)s::int[], %(timeouts_ms)s::bigint[],
            %(worker_ids)s::bigint[])
     AS x(task_id, attempt, timeout_ms, worker_id)
WHERE r.task_id = x.task_id AND r.attempt = x.attempt AND r.worker_id = x.worker_id;

-- name: ended_attempts
-- Which of the attempts a replica believes in flight no longer hold their task_runtime row
-- (they ended through another replica: cancelled, timed out, requeued).
SELECT x.task_id, x.attempt
FROM unnest(%(task_ids)s::bigint[], %(attempts)s::int[]) AS x(task_id, attempt)
WHERE NOT EXISTS (SELECT 1 FROM task_runtime r
                  WHERE r.task_id = x.task_id AND r.attempt = x.attempt);

-- name: runtimes_of_workers
-- Attempts held by the given workers (to requeue when the workers are lost).
SELECT task_id, attempt, worker_id
FROM task_runtime
WHERE worker_id = ANY(%(worker_ids)s::bigint[]);

-- name: orphaned_runtimes
-- Attempts still held by workers that are gone: stopped by a clean close, or declared
-- dead, and silent for dead_after_ms (so results they sent just before leaving have been
-- stored). Nothing else ends them (liveness watches only ACTIVE workers): an assignment
-- committed while its worker closed, whose hand-back could not be written, would wait
-- forever. The leader requeues them (Liveness).
SELECT r.task_id, r.attempt, r.worker_id
FROM task_runtime r
JOIN worker w ON w.id = r.worker_id
WHERE w.status <> 'ACTIVE'
  AND w.last_heartbeat_at < now() - %(dead_after_ms)s * interval '1 millisecond'
ORDER BY r.task_id
LIMIT %(limit)s;

-- name: runtimes_of_registering_worker
-- The attempts a (re)registering worker holds, to check the ones it says it still runs
-- against; ``stale``: assigned before this registration (one it does not report was lost).
SELECT task_id, attempt, assigned_at < %(before)s AS stale
FROM task_runtime
WHERE worker_id = %(worker_id)s AND tenant_id = %(tenant_id)s;

-- name: cancel_tasks
-- Cancels unfinished tasks: removes their queue items and running attempts, records why.
-- Returns the cancelled tasks, with the worker and attempt of those that were running.
WITH c AS (
    SELECT t.id, t.tenant_id, t.attempt, x.error
    FROM task t
    JOIN unnest(%(task_ids)s::bigint[], %(errors)s::jsonb[]) AS x(task_id, error)
      ON x.task_id = t.id
    WHERE t.status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')
    FOR UPDATE OF t
),
dq AS (
    DELETE FROM queue_item q USING c WHERE q.task_id = c.id
),
dr AS (
    DELETE FROM task_runtime r USING c WHERE r.task_id = c.id
    RETURNING r.task_id, r.attempt, r.worker_id
),
logged AS (
    INSERT INTO task_event (tenant_id, task_id, attempt, kind, worker_id, data)
    SELECT c.tenant_id, c.id, c.attempt, 'CANCELLED', dr.worker_id,
           jsonb_build_object('error', c.error)
    FROM c LEFT JOIN dr ON dr.task_id = c.id
)
UPDATE task t
SET status = 'CANCELLED', error = c.error, finished_at = now()
FROM c LEFT JOIN dr ON dr.task_id = c.id
WHERE t.id = c.id
RETURNING t.id, t.external_id, t.tenant_id, dr.worker_id, dr.attempt, t.task_name;
