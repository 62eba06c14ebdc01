-- Engine metrics read from Postgres, so that every replica reports the same truth about
-- the shared queue (docs/metrics.md). Each is one pass per scrape over the small, hot
-- queue tables (queue_item, task_runtime, concurrency_slot, worker), never over history.
-- tenant_id NULL: every tenant (the engine's /metrics); else one tenant's.

-- name: metric_task_gauges
-- Per tenant and task: attempts queued and ready to run, queued but not due yet (a retry
-- backoff, a future run_at, a rate-limit deferral), the age of the oldest ready one,
-- attempts running on workers, and runs waiting for a concurrency key's admission.
SELECT tenant_id, task_name, sum(ready)::bigint AS ready, sum(delayed)::bigint AS delayed,
       max(oldest_s)::float8 AS oldest_s, sum(running)::bigint AS running,
       sum(gated)::bigint AS gated
FROM (
    SELECT tenant_id, queue AS task_name,
           count(*) FILTER (WHERE available_at <= now()) AS ready,
           count(*) FILTER (WHERE available_at > now()) AS delayed,
           coalesce(extract(epoch FROM now() - min(available_at)
                                       FILTER (WHERE available_at <= now())), 0) AS oldest_s,
           0 AS running, 0 AS gated
    FROM queue_item
    WHERE %(tenant_id)s::bigint IS NULL OR tenant_id = %(tenant_id)s::bigint
    GROUP BY 1, 2
    UNION ALL
    SELECT t.tenant_id, t.task_name, 0, 0, 0, count(*), 0
    FROM task_runtime r
    JOIN task t ON t.id = r.task_id
    WHERE %(tenant_id)s::bigint IS NULL OR r.tenant_id = %(tenant_id)s::bigint
    GROUP BY 1, 2
    UNION ALL
    SELECT t.tenant_id, t.task_name, 0, 0, 0, 0, count(DISTINCT s.task_id)
    FROM concurrency_slot s
    JOIN task t ON t.id = s.task_id
    WHERE NOT s.admitted
      AND (%(tenant_id)s::bigint IS NULL OR s.tenant_id = %(tenant_id)s::bigint)
    GROUP BY 1, 2
) g
GROUP BY 1, 2;

-- name: metric_worker_gauges
-- Per tenant: connected (ACTIVE) workers, their slots, and the attempts they hold.
SELECT w.tenant_id, count(*)::bigint AS workers, sum(w.slots)::bigint AS slots,
       sum(w.durable_slots)::bigint AS durable_slots, coalesce(sum(r.n), 0)::bigint AS used
FROM worker w
LEFT JOIN (SELECT worker_id, count(*) AS n FROM task_runtime GROUP BY 1) r
  ON r.worker_id = w.id
WHERE w.status = 'ACTIVE'
  AND (%(tenant_id)s::bigint IS NULL OR w.tenant_id = %(tenant_id)s::bigint)
GROUP BY 1;
