-- Task logs, live streams and run events (docs/observability.md). Every read is scoped to
-- one tenant; only external ids (UUIDs) leave these statements.

-- name: insert_logs
-- Stores batches of log lines, one row per batch, in the order given. The lines of every
-- batch are concatenated in %(levels)s, %(loggers)s, %(messages)s and %(ats)s (epoch ms),
-- JSON arrays; batch n holds positions los[n]..his[n] (from 1) and was logged by attempt
-- attempts[n] of task tasks[n] of tenant tenants[n]. Each distinct task is looked up once
-- for its run, task-run id and name (in the live tables or in history); lines of a task
-- that no longer exists are dropped.
WITH g AS (
    SELECT *
    FROM unnest(%(tenants)s::bigint[], %(tasks)s::bigint[], %(attempts)s::int[],
                %(los)s::int[], %(his)s::int[], %(max_levels)s::smallint[])
         WITH ORDINALITY AS g(tenant_id, task_id, attempt, lo, hi, max_level, n)
),
a AS (
    SELECT ARRAY(SELECT x::smallint FROM json_array_elements_text(%(levels)s::json)
                 WITH ORDINALITY AS e(x, i) ORDER BY i) AS levels,
           ARRAY(SELECT x FROM json_array_elements_text(%(loggers)s::json)
                 WITH ORDINALITY AS e(x, i) ORDER BY i) AS loggers,
           ARRAY(SELECT x FROM json_array_elements_text(%(messages)s::json)
                 WITH ORDINALITY AS e(x, i) ORDER BY i) AS messages,
           ARRAY(SELECT x::bigint FROM json_array_elements_text(%(ats)s::json)
                 WITH ORDINALITY AS e(x, i) ORDER BY i) AS ats
),
runs AS (
    SELECT i.tenant_id, i.task_id, r.run_id, r.task_run_id, r.task_name
    FROM (SELECT DISTINCT tenant_id, task_id FROM g) i
    CROSS JOIN LATERAL (
        SELECT coalesce((SELECT d.external_id FROM all_dags d WHERE d.id = t.dag_id LIMIT 1),
                        t.external_id) AS run_id,
               t.external_id AS task_run_id, t.task_name
        FROM all_tasks t
        WHERE t.id = i.task_id AND t.tenant_id = i.tenant_id
        LIMIT 1
    ) r
)
INSERT INTO task_log (tenant_id, task_id, run_id, task_run_id, task_name, attempt,
                      max_level, levels, loggers, messages, logged_at)
SELECT g.tenant_id, g.task_id, r.run_id, r.task_run_id, r.task_name, g.attempt, g.max_level,
       a.levels[g.lo:g.hi], a.loggers[g.lo:g.hi], a.messages[g.lo:g.hi], a.ats[g.lo:g.hi]
FROM g
JOIN runs r ON r.task_id = g.task_id AND r.tenant_id = g.tenant_id
CROSS JOIN a
ORDER BY g.n;

-- name: relaxed_commit
-- Lets the current transaction commit without waiting for its WAL flush (logs and stream
-- chunks: losing the last moment of them in a Postgres crash is acceptable, waiting for
-- every flush is not).
SET LOCAL synchronous_commit = off;

-- name: find_run
-- A run of the tenant by external id: a workflow run (is_workflow) or a task run, with its
-- status and, for a task run, its id and current attempt.
SELECT false AS is_workflow, t.id AS task_id, t.attempt, t.status
FROM all_tasks t
WHERE t.tenant_id = %(tenant_id)s AND t.external_id = %(run_id)s
UNION ALL
SELECT true, NULL, NULL, d.status
FROM all_dags d
WHERE d.tenant_id = %(tenant_id)s AND d.external_id = %(run_id)s
LIMIT 1;

-- name: logs_of_run
-- A page of a run's log lines (a workflow run: all its steps'), oldest first, after line
-- %(after_i)s of batch %(after_id)s (0, 0: from the start).
SELECT b.id, l.i, b.created_at, b.run_id, b.task_run_id, b.task_name, b.attempt, l.level,
       l.logger, l.message, l.at_ms
FROM task_log b
CROSS JOIN LATERAL unnest(b.levels, b.loggers, b.messages, b.logged_at)
    WITH ORDINALITY AS l(level, logger, message, at_ms, i)
WHERE b.tenant_id = %(tenant_id)s AND b.run_id = %(run_id)s AND b.id >= %(after_id)s
  AND (b.id, l.i) > (%(after_id)s, %(after_i)s)
ORDER BY b.id, l.i
LIMIT %(limit)s;

-- name: search_logs
-- A page of the tenant's log lines, newest first, keyset-paginated on (created_at, batch
-- id, line): at or above %(min_level)s, whose message matches %(pattern)s (ILIKE; NULL:
-- any), stored in [since, until) (NULL: unbounded), before the cursor (NULL: from the
-- newest). A batch with no line at the level is skipped whole (max_level).
SELECT b.id, l.i, b.created_at, b.run_id, b.task_run_id, b.task_name, b.attempt, l.level,
       l.logger, l.message, l.at_ms
FROM task_log b
CROSS JOIN LATERAL unnest(b.levels, b.loggers, b.messages, b.logged_at)
    WITH ORDINALITY AS l(level, logger, message, at_ms, i)
WHERE b.tenant_id = %(tenant_id)s
  AND b.max_level >= %(min_level)s AND l.level >= %(min_level)s
  AND (%(pattern)s::text IS NULL OR l.message ILIKE %(pattern)s::text)
  AND b.created_at >= coalesce(%(since)s::timestamptz, '-infinity')
  AND b.created_at < coalesce(%(until)s::timestamptz, 'infinity')
  AND (b.created_at, b.id) <= (coalesce(%(cursor_at)s::timestamptz, 'infinity'),
                               coalesce(%(cursor_id)s::bigint, 9223372036854775807))
  AND (b.created_at, b.id, l.i) < (coalesce(%(cursor_at)s::timestamptz, 'infinity'),
                                   coalesce(%(cursor_id)s::bigint, 9223372036854775807),
                                   coalesce(%(cursor_i)s::bigint, 9223372036854775807))
ORDER BY b.created_at DESC, b.id DESC, l.i DESC
LIMIT %(limit)s;

-- name: search_logs_of_task
-- Like search_logs, for the lines of one task name.
SELECT b.id, l.i, b.created_at, b.run_id, b.task_run_id, b.task_name, b.attempt, l.level,
       l.logger, l.message, l.at_ms
FROM task_log b
CROSS JOIN LATERAL unnest(b.levels, b.loggers, b.messages, b.logged_at)
    WITH ORDINALITY AS l(level, logger, message, at_ms, i)
WHERE b.tenant_id = %(tenant_id)s AND b.task_name = %(task_name)s
  AND b.max_level >= %(min_level)s AND l.level >= %(min_level)s
  AND (%(pattern)s::text IS NULL OR l.message ILIKE %(pattern)s::text)
  AND b.created_at >= coalesce(%(since)s::timestamptz, '-infinity')
  AND b.created_at < coalesce(%(until)s::timestamptz, 'infinity')
  AND (b.created_at, b.id) <= (coalesce(%(cursor_at)s::timestamptz, 'infinity'),
                               coalesce(%(cursor_id)s::bigint, 9223372036854775807))
  AND (b.created_at, b.id, l.i) < (coalesce(%(cursor_at)s::timestamptz, 'infinity'),
                                   coalesce(%(cursor_id)s::bigint, 9223372036854775807),
                                   coalesce(%(cursor_i)s::bigint, 9223372036854775807))
ORDER BY b.created_at DESC, b.id DESC, l.i DESC
LIMIT %(limit)s;

-- name: insert_stream_chunks
-- Stores stream chunks (parallel arrays); a chunk sent again (after a reconnect) is kept
-- once. Returns the tasks written to, for the subscribers to read.
INSERT INTO task_stream (task_id, attempt, seq, tenant_id, data, is_text, is_end)
SELECT * FROM unnest(%(task_ids)s::bigint[], %(attempts)s::int[], %(seqs)s::int[],
                     %(tenant_ids)s::bigint[], %(datas)s::bytea[], %(texts)s::bool[],
                     %(ends)s::bool[])
ON CONFLICT DO NOTHING;

-- name: read_stream
-- The chunks of an attempt's stream after %(after_seq)s, in order.
SELECT seq, data, is_text, is_end
FROM task_stream
WHERE task_id = %(task_id)s AND attempt = %(attempt)s AND seq > %(after_seq)s
  AND tenant_id = %(tenant_id)s
ORDER BY seq
LIMIT %(limit)s;

-- name: attempt_state
-- Where a task run stands now: its current attempt and status.
SELECT attempt, status FROM all_tasks WHERE id = %(task_id)s LIMIT 1;

-- name: prune_streams
-- Deletes up to %(limit)s stream chunks older than %(older_than_s)s seconds.
DELETE FROM task_stream
WHERE ctid IN (SELECT ctid FROM task_stream
               WHERE created_at < now() - %(older_than_s)s * interval '1 second'
               LIMIT %(limit)s);

-- name: watch_tasks
-- The task runs of the given runs (a task run, or a workflow run's steps) as they stand,
-- with the worker of their current attempt.
SELECT t.id, t.external_id, coalesce(d.external_id, t.external_id) AS run_id, t.task_name,
       t.status, t.attempt, t.created_at, t.assigned_at, t.started_at, t.finished_at,
       t.error, w.external_id AS worker_external_id, w.name AS worker_name
FROM all_tasks t
LEFT JOIN all_dags d ON d.id = t.dag_id
LEFT JOIN worker w ON w.id = t.worker_id
WHERE t.tenant_id = %(tenant_id)s
  AND (t.external_id = ANY(%(run_ids)s::uuid[]) OR d.external_id = ANY(%(run_ids)s::uuid[]));

-- name: watch_new_tasks
-- The tenant's task runs created at or after %(since)s (in the live table), of the task
-- name (NULL: any) whose metadata contains %(metadata)s: the runs a filtered watch takes up.
SELECT t.external_id, coalesce(d.external_id, t.external_id) AS run_id, t.created_at
FROM task t
LEFT JOIN dag d ON d.id = t.dag_id
WHERE t.tenant_id = %(tenant_id)s
  AND t.created_at >= %(since)s
  AND (%(task_name)s::text IS NULL OR t.task_name = %(task_name)s::text)
  AND t.additional_metadata @> %(metadata)s::jsonb
ORDER BY t.created_at, t.id
LIMIT %(limit)s;

-- name: watch_attempt_ends
-- How the earlier attempts of these task runs ended (retries, failures), oldest first.
SELECT e.task_id, e.attempt, e.kind, e.data, e.created_at,
       w.external_id AS worker_external_id, w.name AS worker_name
FROM task_event e
LEFT JOIN worker w ON w.id = e.worker_id
WHERE e.task_id = ANY(%(task_ids)s::bigint[]) AND e.tenant_id = %(tenant_id)s
ORDER BY e.task_id, e.attempt, e.id;
