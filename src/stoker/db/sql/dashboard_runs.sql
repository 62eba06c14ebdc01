-- The dashboard's reads of runs: the overview, the runs list, its counts and histogram.
-- Every statement is scoped to one tenant and reads through the tenant-leading indexes.

-- name: dash_overview_series
-- The overview's charts over one window cut into buckets (bucket i starts at since + i*step):
-- runs finished (completed, failed) per bucket, p50/p95 queue wait of attempts started in
-- the bucket and p50/p95 duration of runs finished in it, and at each bucket's end how many
-- runs were queued and how many running (slot use). Reads the runs created in the window
-- (at most 200,000, the newest) through (tenant_id, created_at DESC, id DESC).
WITH w AS (
    SELECT t.status, t.created_at, t.started_at, t.finished_at
    FROM all_tasks t
    WHERE t.tenant_id = %(tenant_id)s AND t.created_at >= %(since)s AND t.created_at < %(until)s
    ORDER BY t.created_at DESC, t.id DESC
    LIMIT 200000
),
b AS (
    SELECT i, %(since)s::timestamptz + i * %(step)s::interval AS lo,
           %(since)s::timestamptz + (i + 1) * %(step)s::interval AS hi
    FROM generate_series(0, %(buckets)s - 1) AS i
)
SELECT b.i, b.lo,
       count(w.*) FILTER (WHERE w.finished_at >= b.lo AND w.finished_at < b.hi
                            AND w.status = 'COMPLETED') AS completed,
       count(w.*) FILTER (WHERE w.finished_at >= b.lo AND w.finished_at < b.hi
                            AND w.status = 'FAILED') AS failed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM w.started_at - w.created_at))
           FILTER (WHERE w.started_at >= b.lo AND w.started_at < b.hi) AS wait_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM w.started_at - w.created_at))
           FILTER (WHERE w.started_at >= b.lo AND w.started_at < b.hi) AS wait_p95,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM w.finished_at - w.started_at))
           FILTER (WHERE w.finished_at >= b.lo AND w.finished_at < b.hi) AS duration_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM w.finished_at - w.started_at))
           FILTER (WHERE w.finished_at >= b.lo AND w.finished_at < b.hi) AS duration_p95,
       count(w.*) FILTER (WHERE w.created_at < b.hi
                            AND (w.started_at IS NULL OR w.started_at >= b.hi)
                            AND (w.finished_at IS NULL OR w.finished_at >= b.hi)) AS queued,
       count(w.*) FILTER (WHERE w.started_at < b.hi
                            AND (w.finished_at IS NULL OR w.finished_at >= b.hi)) AS running
FROM b LEFT JOIN w ON w.created_at < b.hi
GROUP BY b.i, b.lo
ORDER BY b.i;

-- name: dash_top_failing
-- The tasks with the most failed runs created in the window, with their totals.
SELECT t.task_name, count(*) FILTER (WHERE t.status = 'FAILED') AS failed, count(*) AS total
FROM all_tasks t
WHERE t.tenant_id = %(tenant_id)s AND t.created_at >= %(since)s AND t.created_at < %(until)s
GROUP BY t.task_name
HAVING count(*) FILTER (WHERE t.status = 'FAILED') > 0
ORDER BY failed DESC, t.task_name
LIMIT 5;

-- name: dash_slot_capacity
-- Slots of the tenant's live workers (what the running series is measured against).
SELECT coalesce(sum(w.slots), 0)::bigint AS slots, count(*) AS workers
FROM worker w
WHERE w.tenant_id = %(tenant_id)s AND w.status = 'ACTIVE';

-- name: dash_stuck_on_workers
-- Runs holding a worker that is no longer live (its heartbeats stopped), until the
-- engine's liveness check requeues them.
SELECT t.external_id, t.task_name, t.status, t.created_at, t.started_at,
       w.name AS worker_name, w.status AS worker_status, w.last_heartbeat_at
FROM task t
JOIN worker w ON w.id = t.worker_id
WHERE t.tenant_id = %(tenant_id)s AND t.status IN ('ASSIGNED', 'RUNNING')
  AND w.status <> 'ACTIVE'
ORDER BY t.created_at
LIMIT 20;

-- name: dash_queued_by_task
-- Queued runs per task: how many, and since when the oldest waits.
SELECT t.task_name, count(*) AS queued, min(t.created_at) AS oldest
FROM task t
WHERE t.tenant_id = %(tenant_id)s AND t.status = 'QUEUED'
GROUP BY t.task_name
ORDER BY oldest
LIMIT 200;
