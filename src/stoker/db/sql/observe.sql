-- Task logs, live streams and run events (docs/observability.md). Every read is scoped to
-- one tenant; only external ids (UUIDs) leave these statements.

-- name: insert_logs
-- Stores a batch of log lines, in the order given. %(lines)s is a JSON array of
-- [tenant_id, task_id, attempt, level, logger, message, at_ms]; each distinct task is
-- looked up once for its run, task-run id and name (in the live tables or in history). A
-- line of a task that no longer exists is dropped.
WITH x AS (
    SELECT (e.j->>0)::bigint AS tenant_id, (e.j->>1)::bigint AS task_id,
           (e.j->>2)::int AS attempt, (e.j->>3)::smallint AS level, e.j->>4 AS logger,
           e.j->>5 AS message, (e.j->>6)::bigint AS at_ms, e.n
    FROM json_array_elements(%(lines)s::json) WITH ORDINALITY AS e(j, n)
),
runs AS (
    SELECT i.tenant_id, i.task_id, r.run_id, r.task_run_id, r.task_name
    FROM (SELECT DISTINCT tenant_id, task_id FROM x) i
    CROSS JOIN LATERAL (
        SELECT coalesce((SELECT d.external_id FROM all_dags d WHERE d.id = t.dag_id LIMIT 1),
                        t.external_id) AS run_id,
               t.external_id AS task_run_id, t.task_name
        FROM all_tasks t
        WHERE t.id = i.task_id AND t.tenant_id = i.tenant_id
        LIMIT 1
    ) r
)
INSERT INTO task_log (tenant_id, task_id, run_id, task_run_id, task_name, attempt, level,
                      logger, message, logged_at)
SELECT x.tenant_id, x.task_id, r.run_id, r.task_run_id, r.task_name, x.attempt, x.level,
       x.logger, x.message, to_timestamp(x.at_ms / 1000.0)
FROM x
JOIN runs r ON r.task_id = x.task_id AND r.tenant_id = x.tenant_id
ORDER BY x.n;

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
-- A page of a run's log lines (a workflow run: all its steps'), oldest first, after the
-- line %(after_id)s (0: from the start).
SELECT id, created_at, run_id, task_run_id, task_name, attempt, level, logger, message,
       logged_at
FROM task_log
WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND id > %(after_id)s
ORDER BY id
LIMIT %(limit)s;

-- name: search_logs
-- A page of the tenant's log lines, newest first, keyset-paginated on (created_at, id):
-- at or above %(min_level)s, whose message matches %(pattern)s (ILIKE; NULL: any), created
-- in [since, until) (NULL: unbounded), before the cursor (NULL: from the newest).
SELECT id, created_at, run_id, task_run_id, task_name, attempt, level, logger, message,
       logged_at
FROM task_log
WHERE tenant_id = %(tenant_id)s
  AND level >= %(min_level)s
  AND (%(pattern)s::text IS NULL OR message ILIKE %(pattern)s::text)
  AND created_at >= coalesce(%(since)s::timestamptz, '-infinity')
  AND created_at < coalesce(%(until)s::timestamptz, 'infinity')
  AND (created_at, id) < (coalesce(%(cursor_at)s::timestamptz, 'infinity'),
                          coalesce(%(cursor_id)s::bigint, 9223372036854775807))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: search_logs_of_task
-- Like search_logs, for the lines of one task name (its own index).
SELECT id, created_at, run_id, task_run_id, task_name, attempt, level, logger, message,
       logged_at
FROM task_log
WHERE tenant_id = %(tenant_id)s AND task_name = %(task_name)s
  AND level >= %(min_level)s
  AND (%(pattern)s::text IS NULL OR message ILIKE %(pattern)s::text)
  AND created_at >= coalesce(%(since)s::timestamptz, '-infinity')
  AND created_at < coalesce(%(until)s::timestamptz, 'infinity')
  AND (created_at, id) < (coalesce(%(cursor_at)s::timestamptz, 'infinity'),
                          coalesce(%(cursor_id)s::bigint, 9223372036854775807))
ORDER BY created_at DESC, id DESC
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
