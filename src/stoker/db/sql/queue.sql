-- The queue: attempts waiting for a worker, and their assignment.

-- name: claim_queue_items
-- Locks up to `limit` ready items of each queue, highest priority first, FIFO within a
-- priority. Locked rows stay invisible to other schedulers (SKIP LOCKED) until this
-- transaction ends; those not assigned are simply released.
SELECT qi.id, qi.task_id, qi.attempt, qi.queue, qi.priority, qi.rate_limits::text,
       qi.desired_worker_id, qi.available_at
FROM unnest(%(queues)s::text[], %(limits)s::int[]) AS q(queue, lim)
CROSS JOIN LATERAL (
    SELECT id, task_id, attempt, queue, priority, rate_limits, desired_worker_id, available_at
    FROM queue_item
    WHERE tenant_id = %(tenant_id)s AND queue = q.queue AND available_at <= now()
    ORDER BY priority DESC, id
    LIMIT q.lim
    FOR UPDATE SKIP LOCKED
) qi;

-- name: assign_queue_items
-- Turns claimed items into running attempts on the chosen workers and returns what the
-- workers need to run them. assigned_at is the instant rate limits counted the starts at,
-- when the round consumed any (else now()).
WITH a AS (
    SELECT *
    FROM unnest(%(item_ids)s::bigint[], %(task_ids)s::bigint[], %(attempts)s::int[],
                %(worker_ids)s::bigint[])
         AS a(item_id, task_id, attempt, worker_id)
),
del AS (
    DELETE FROM queue_item q USING a WHERE q.id = a.item_id
),
upd AS (
    UPDATE task t
    SET status = 'ASSIGNED', worker_id = a.worker_id,
        assigned_at = coalesce(%(assigned_at)s::timestamptz, now())
    FROM a
    WHERE t.id = a.task_id
    RETURNING t.id, t.tenant_id, t.external_id, t.task_name, t.input, t.additional_metadata,
              t.retry_count, t.execution_timeout_ms, a.attempt, a.worker_id, t.max_retries,
              t.dag_id
),
rt AS (
    INSERT INTO task_runtime (task_id, tenant_id, attempt, worker_id, timeout_at)
    SELECT id, tenant_id, attempt, worker_id,
           CASE WHEN execution_timeout_ms > 0
                THEN now() + (execution_timeout_ms + %(timeout_grace_ms)s)
                             * interval '1 millisecond'
           END
    FROM upd
)
-- The run's lineage for ctx: its workflow run (a step's dag) and, when it is a child (or
-- a step of a child workflow), its parent run, index and key.
SELECT u.id AS task_id, u.external_id, u.task_name, u.input::text AS input,
       u.additional_metadata::text AS additional_metadata, u.retry_count,
       u.execution_timeout_ms, u.attempt, u.worker_id, u.max_retries,
       d.external_id AS workflow_run_id, p.external_id AS parent_run_id,
       c.child_index, c.child_key, fp.payload::text AS filter_payload
FROM upd u
LEFT JOIN dag d ON d.id = u.dag_id
LEFT JOIN child_run c ON c.external_id = coalesce(d.external_id, u.external_id)
LEFT JOIN task p ON p.id = c.parent_task_id
-- The payload of the filter that let the run (or its workflow run) through an event.
LEFT JOIN run_filter_payload fp ON fp.run_id = coalesce(d.external_id, u.external_id);

-- name: enqueue_tasks
-- Queues the next attempt of existing QUEUED tasks (used when concurrency admits them:
-- make_tasks_ready, admitted). Waiting for admission is not waiting for a worker: the
-- schedule timeout counts from here.
SELECT make_tasks_ready(
    array_agg(ROW(t.id, t.tenant_id, t.attempt, t.task_name, t.priority, now(),
                  t.schedule_timeout_ms, t.rate_limits, t.desired_worker_id,
                  t.concurrency_keys)::ready_task),
    true)
FROM task t
WHERE t.id = ANY(%(task_ids)s::bigint[]) AND t.status = 'QUEUED';

-- name: defer_queue_items
-- Moves items that could not be placed or are over a rate limit out of the way until
-- their given time; they keep their priority and their order among themselves.
UPDATE queue_item q
SET available_at = d.until
FROM unnest(%(item_ids)s::bigint[], %(until)s::timestamptz[]) AS d(item_id, until)
WHERE q.id = d.item_id;

-- name: analyze_queue
-- Refreshes the planner's statistics of queue_item after a bulk enqueue. Until autovacuum
-- gets to it (up to a minute), stale statistics make the claim look at a few rows and
-- plan a bitmap scan plus a sort of the whole queue: 55 ms per claim at 100,000 queued
-- instead of 0.2 ms through the index (docs/performance.md).
ANALYZE (SKIP_LOCKED) queue_item;

-- name: vacuum_queue
-- Clears the dead rows that assignment leaves at the head of the queue, so claims stop
-- stepping over them (autovacuum comes too late during a long drain). Skips a table that
-- another vacuum holds.
VACUUM (SKIP_LOCKED) queue_item, task_runtime;
