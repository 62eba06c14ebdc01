-- Scheduled runs: created through the API, fired by the leader when due, managed by id
-- or filter.

-- name: insert_scheduled_runs
INSERT INTO scheduled_run (tenant_id, external_id, task_name, workflow_name, run_at, input,
                           additional_metadata, priority)
SELECT %(tenant_id)s, s.external_id, nullif(s.task_name, ''), nullif(s.workflow_name, ''),
       s.run_at, s.input, s.metadata, s.priority
FROM unnest(%(external_ids)s::uuid[], %(task_names)s::text[], %(workflow_names)s::text[],
            %(run_ats)s::timestamptz[], %(inputs)s::jsonb[], %(metadata)s::jsonb[],
            %(priorities)s::smallint[])
    AS s(external_id, task_name, workflow_name, run_at, input, metadata, priority)
RETURNING external_id, task_name, workflow_name, run_at, input, additional_metadata,
          priority, status, run_id, error, created_at, fired_at;

-- name: fire_due_scheduled_runs
-- Claims the due runs and marks them FIRED with the ids their runs will have, in one
-- statement; the caller writes those runs in the same transaction (a refused one is then
-- marked FAILED). Rows locked by another leader's round are skipped. Input and metadata
-- come back as JSON text, the metadata with the schedule's id as stoker_schedule: the runs
-- are written from them as they are, without parsing them here.
UPDATE scheduled_run s
SET status = 'FIRED', run_id = gen_random_uuid(), fired_at = now(), updated_at = now()
FROM (SELECT id FROM scheduled_run
      WHERE status = 'SCHEDULED' AND run_at <= now()
      ORDER BY run_at
      LIMIT %(limit)s
      FOR UPDATE SKIP LOCKED) due
WHERE s.id = due.id
RETURNING s.id, s.tenant_id, s.external_id, s.task_name, s.workflow_name, s.run_at,
          s.input::text AS input,
          (s.additional_metadata
           || jsonb_build_object('stoker_schedule', s.external_id::text))::text AS metadata,
          s.priority, s.run_id;

-- name: fire_due_plain_task_runs
-- The fast path of a round, in one statement: claims the due runs of tasks without a
-- concurrency or rate-limit policy (nothing to evaluate per run), marks them FIRED and
-- writes their runs from the rows as they are — input, metadata and the task's options
-- never leave Postgres — as insert_tasks would (QUEUED, made ready by make_tasks_ready).
-- The other due rows (other tasks, workflows) stay locked by this transaction, and the
-- statement that follows (fire_due_scheduled_runs) claims them. Answers how many runs
-- each tenant got, and a row without tenant: how many due rows it locked (more than it
-- fired: others are due, for the statement that follows).
WITH due AS (
    SELECT id FROM scheduled_run
    WHERE status = 'SCHEDULED' AND run_at <= now()
    ORDER BY run_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
fired AS (
    UPDATE scheduled_run s
    SET status = 'FIRED', run_id = gen_random_uuid(), fired_at = now(), updated_at = now()
    FROM due, task_def d
    WHERE s.id = due.id AND d.tenant_id = s.tenant_id AND d.name = s.task_name
      AND d.config->'concurrency' = '[]'::jsonb AND d.config->'rate_limits' = '[]'::jsonb
    RETURNING s.tenant_id, s.run_id, s.task_name, s.input,
              s.additional_metadata
                  || jsonb_build_object('stoker_schedule', s.external_id::text) AS metadata,
              CASE WHEN s.priority <> 0 THEN s.priority
                   ELSE (d.config->>'priority')::smallint END AS priority,
              d.config
),
ins AS (
    INSERT INTO task (tenant_id, external_id, task_name, status, priority, input,
                      additional_metadata, max_retries, backoff_factor, backoff_max_ms,
                      execution_timeout_ms, schedule_timeout_ms)
    SELECT f.tenant_id, f.run_id, f.task_name, 'QUEUED', f.priority, f.input, f.metadata,
           (f.config->>'retries')::int, (f.config->>'backoff_factor')::float8,
           trunc((f.config->>'backoff_max_seconds')::float8 * 1000)::bigint,
           (f.config->>'execution_timeout_ms')::bigint,
           (f.config->>'schedule_timeout_ms')::bigint
    FROM fired f
    RETURNING id, tenant_id, task_name, priority, schedule_timeout_ms
),
ready AS (
    SELECT make_tasks_ready(
        array_agg(ROW(i.id, i.tenant_id, 0, i.task_name, i.priority, now(),
                      i.schedule_timeout_ms, NULL::jsonb, NULL::bigint,
                      NULL::jsonb)::ready_task),
        false) AS gated
    FROM ins i
)
SELECT i.tenant_id, count(*)::int AS runs
FROM ins i CROSS JOIN ready
GROUP BY i.tenant_id
UNION ALL
SELECT NULL, count(*)::int FROM due;

-- name: fail_scheduled_runs
-- Runs the engine refused when they fell due: no run, and why.
UPDATE scheduled_run s
SET status = 'FAILED', run_id = NULL, error = f.error, updated_at = now()
FROM unnest(%(ids)s::bigint[], %(errors)s::text[]) AS f(id, error)
WHERE s.id = f.id;

-- name: next_scheduled_run
SELECT min(run_at) AS run_at FROM scheduled_run WHERE status = 'SCHEDULED';

-- name: list_scheduled_runs
-- Filters (empty arrays / NULLs: no filter); at most limit rows, by time then id.
SELECT external_id, task_name, workflow_name, run_at, input, additional_metadata, priority,
       status, run_id, error, created_at, fired_at
FROM scheduled_run
WHERE tenant_id = %(tenant_id)s
  AND (cardinality(%(ids)s::uuid[]) = 0 OR external_id = ANY(%(ids)s::uuid[]))
  AND (cardinality(%(names)s::text[]) = 0
       OR coalesce(task_name, workflow_name) = ANY(%(names)s::text[]))
  AND (cardinality(%(statuses)s::text[]) = 0 OR status = ANY(%(statuses)s::text[]))
  AND (%(since)s::timestamptz IS NULL OR run_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR run_at < %(until)s::timestamptz)
  AND (%(metadata)s::jsonb IS NULL OR additional_metadata @> %(metadata)s::jsonb)
ORDER BY run_at, id
LIMIT %(limit)s;

-- name: update_scheduled_run
-- Reschedules or changes the input/metadata of a run not fired yet (NULL: unchanged).
-- No row: unknown id, or fired already (the caller reads which).
UPDATE scheduled_run
SET run_at = coalesce(%(run_at)s::timestamptz, run_at),
    input = coalesce(%(input)s::jsonb, input),
    additional_metadata = coalesce(%(metadata)s::jsonb, additional_metadata),
    updated_at = now()
WHERE tenant_id = %(tenant_id)s AND external_id = %(external_id)s AND status = 'SCHEDULED'
RETURNING external_id, task_name, workflow_name, run_at, input, additional_metadata,
          priority, status, run_id, error, created_at, fired_at;

-- name: delete_scheduled_runs
-- Deletes runs not fired yet, by id or by filter (as list_scheduled_runs; ids win).
DELETE FROM scheduled_run
WHERE tenant_id = %(tenant_id)s AND status = 'SCHEDULED'
  AND (cardinality(%(ids)s::uuid[]) = 0 OR external_id = ANY(%(ids)s::uuid[]))
  AND (cardinality(%(names)s::text[]) = 0
       OR coalesce(task_name, workflow_name) = ANY(%(names)s::text[]))
  AND (%(since)s::timestamptz IS NULL OR run_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR run_at < %(until)s::timestamptz)
  AND (%(metadata)s::jsonb IS NULL OR additional_metadata @> %(metadata)s::jsonb)
RETURNING external_id;

-- name: prune_fired_scheduled_runs
-- Forgets scheduled runs that fired (or failed) before the cutoff, a batch at a time; their
-- runs are kept by the run history's own retention.
DELETE FROM scheduled_run
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM scheduled_run
    WHERE status <> 'SCHEDULED' AND fired_at < %(cutoff)s
    LIMIT %(limit)s));
