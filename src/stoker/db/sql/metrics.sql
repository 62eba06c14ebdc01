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

-- name: metric_exposition
-- The state metrics already written in the Prometheus text format, one text per metric
-- (lines without a trailing newline; NULL when a metric has none), so that a scrape with
-- 10,000 task names moves one row, not 10,000, and Python formats nothing (formatting
-- here is a few C string operations a line). Every task the tenant defined (task_def) or
-- that has attempts queued is reported with its depth and oldest age (0 when empty, so a
-- drained queue reads 0): past max_series (tenant, task) pairs in name order, the rest of
-- each tenant is summed under task="_other". Running attempts and runs waiting for a
-- concurrency key are reported for the tasks that have some. Label values are escaped as
-- the format asks (backslash, double quote, newline).
WITH q AS (
    SELECT tenant_id, queue AS task_name,
           count(*) FILTER (WHERE available_at <= now()) AS ready,
           count(*) FILTER (WHERE available_at > now()) AS delayed,
           min(available_at) FILTER (WHERE available_at <= now()) AS oldest
    FROM queue_item
    WHERE %(tenant_id)s::bigint IS NULL OR tenant_id = %(tenant_id)s::bigint
    GROUP BY 1, 2
),
j AS (
    SELECT coalesce(q.tenant_id, d.tenant_id) AS tenant_id,
           coalesce(q.task_name, d.name) AS task_name,
           coalesce(q.ready, 0) AS ready, coalesce(q.delayed, 0) AS delayed,
           coalesce(round(extract(epoch FROM now() - q.oldest), 3), 0) AS oldest_s
    FROM q
    FULL JOIN (SELECT tenant_id, name FROM task_def
               WHERE %(tenant_id)s::bigint IS NULL OR tenant_id = %(tenant_id)s::bigint) d
      ON d.tenant_id = q.tenant_id AND d.name = q.task_name
),
ranked AS (
    SELECT *, row_number() OVER (ORDER BY tenant_id, task_name COLLATE "C") AS n FROM j
),
labelled AS MATERIALIZED (
    SELECT ready, delayed, oldest_s,
           '{tenant="' || tenant_id || '",task="'
           || replace(replace(replace(task_name, '\', '\\'), '"', '\"'), E'\n', '\n')
           || '"} ' AS lab
    FROM ranked WHERE n <= %(max_series)s
    UNION ALL
    SELECT sum(ready), sum(delayed), max(oldest_s),
           '{tenant="' || tenant_id || '",task="_other"} '
    FROM ranked WHERE n > %(max_series)s
    GROUP BY tenant_id
),
busy AS (
    SELECT t.tenant_id, t.task_name, count(*) FILTER (WHERE x.kind = 'r') AS running,
           count(DISTINCT x.task_id) FILTER (WHERE x.kind = 'g') AS gated
    FROM (SELECT 'r' AS kind, task_id FROM task_runtime
          WHERE %(tenant_id)s::bigint IS NULL OR tenant_id = %(tenant_id)s::bigint
          UNION ALL
          SELECT 'g', task_id FROM concurrency_slot
          WHERE NOT admitted
            AND (%(tenant_id)s::bigint IS NULL OR tenant_id = %(tenant_id)s::bigint)) x
    JOIN task t ON t.id = x.task_id
    GROUP BY 1, 2
),
busy_labelled AS MATERIALIZED (
    SELECT running, gated,
           '{tenant="' || tenant_id || '",task="'
           || replace(replace(replace(task_name, '\', '\\'), '"', '\"'), E'\n', '\n')
           || '"} ' AS lab
    FROM busy
),
w AS (
    SELECT w.tenant_id, count(*) AS workers, sum(w.slots) AS slots,
           coalesce(sum(u.n), 0) AS used
    FROM worker w
    LEFT JOIN (SELECT worker_id, count(*) AS n FROM task_runtime GROUP BY 1) u
      ON u.worker_id = w.id
    WHERE w.status = 'ACTIVE'
      AND (%(tenant_id)s::bigint IS NULL OR w.tenant_id = %(tenant_id)s::bigint)
    GROUP BY 1
)
SELECT
    (SELECT string_agg('stoker_queue_depth' || lab || ready, E'\n')
     FROM labelled) AS stoker_queue_depth,
    (SELECT string_agg('stoker_queue_delayed' || lab || delayed, E'\n')
     FROM labelled WHERE delayed > 0) AS stoker_queue_delayed,
    (SELECT string_agg('stoker_queue_oldest_age_seconds' || lab || oldest_s, E'\n')
     FROM labelled) AS stoker_queue_oldest_age_seconds,
    (SELECT string_agg('stoker_attempts_running' || lab || running, E'\n')
     FROM busy_labelled WHERE running > 0) AS stoker_attempts_running,
    (SELECT string_agg('stoker_concurrency_waiting' || lab || gated, E'\n')
     FROM busy_labelled WHERE gated > 0) AS stoker_concurrency_waiting,
    (SELECT string_agg('stoker_workers_connected{tenant="' || tenant_id || '"} ' || workers,
                       E'\n')
     FROM w) AS stoker_workers_connected,
    (SELECT string_agg('stoker_worker_slots{tenant="' || tenant_id || '"} ' || slots, E'\n')
     FROM w) AS stoker_worker_slots,
    (SELECT string_agg('stoker_worker_slots_used{tenant="' || tenant_id || '"} ' || used,
                       E'\n')
     FROM w) AS stoker_worker_slots_used,
    (SELECT string_agg('stoker_worker_slots_free{tenant="' || tenant_id || '"} '
                       || greatest(slots - used, 0), E'\n')
     FROM w) AS stoker_worker_slots_free;
