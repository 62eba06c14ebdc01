-- Crons: code crons replaced on registration, run-time crons, the due ones the leader
-- fires, their fires (last runs), and paused tasks and workflows.

-- name: delete_code_crons
-- A registration replaces its tasks' (or workflows') code crons: those no longer declared
-- go.
DELETE FROM cron
WHERE tenant_id = %(tenant_id)s AND source = 'code'
  AND (task_name = ANY(%(task_names)s::text[])
       OR workflow_name = ANY(%(workflow_names)s::text[]))
  AND NOT (name = ANY(%(keep_names)s::text[]));

-- name: upsert_code_crons
-- A cron registered again keeps its next_fire_at unless its schedule changed, so that a
-- worker starting never skips or repeats a tick; its enabled flag and policies (set with
-- app.crons.update) stay.
INSERT INTO cron (tenant_id, name, task_name, workflow_name, expression, timezone, input,
                  source, next_fire_at)
SELECT %(tenant_id)s, c.name, c.task_name, c.workflow_name, c.expression, c.timezone,
       c.input, 'code', c.next_fire_at
FROM unnest(%(names)s::text[], %(task_names)s::text[], %(workflow_names)s::text[],
            %(expressions)s::text[], %(timezones)s::text[], %(inputs)s::jsonb[],
            %(next_fire_at)s::timestamptz[])
    AS c(name, task_name, workflow_name, expression, timezone, input, next_fire_at)
ON CONFLICT (tenant_id, name) DO UPDATE SET
    task_name = excluded.task_name,
    workflow_name = excluded.workflow_name,
    input = excluded.input,
    next_fire_at = CASE
        WHEN cron.expression = excluded.expression AND cron.timezone = excluded.timezone
        THEN cron.next_fire_at ELSE excluded.next_fire_at END,
    expression = excluded.expression,
    timezone = excluded.timezone,
    updated_at = now()
WHERE cron.source = 'code';

-- name: due_crons
-- Locked until the firing transaction advances them: a second leader skips them. A cron
-- holding a buffered tick is read every round until its previous run ends. `paused`: its
-- task or workflow is paused (a task that is a step of a paused workflow is found by the
-- controller); `last_run_id`: the newest run it started on a tick or with trigger_now.
SELECT c.id, c.tenant_id, c.name, c.task_name, c.workflow_name, c.expression, c.timezone,
       c.input, c.additional_metadata, c.priority, c.overlap, c.catch_up_window_s,
       c.catch_up_max, c.next_fire_at, c.buffered_tick,
       EXISTS (SELECT 1 FROM paused p
               WHERE p.tenant_id = c.tenant_id
                 AND (p.kind, p.name) = (CASE WHEN c.task_name IS NOT NULL THEN 'task'
                                              ELSE 'workflow' END,
                                         coalesce(c.task_name, c.workflow_name))) AS paused,
       c.last_run_id
FROM cron c
WHERE c.enabled AND (c.next_fire_at <= now() OR c.buffered_tick IS NOT NULL)
ORDER BY c.next_fire_at
LIMIT %(limit)s
FOR UPDATE OF c SKIP LOCKED;

-- name: advance_cron
-- last_run_id: the newest run this round started (NULL: the previous one stays).
UPDATE cron SET next_fire_at = %(next_fire_at)s, buffered_tick = %(buffered_tick)s,
    last_run_id = coalesce(%(last_run_id)s::uuid, last_run_id)
WHERE id = %(id)s AND next_fire_at IS NOT DISTINCT FROM %(tick)s;

-- name: set_cron_last_run
UPDATE cron SET last_run_id = %(run_id)s WHERE id = %(id)s;

-- name: next_cron_fire
-- When the controller must look again: the earliest tick, and whether some cron holds a
-- buffered tick (then it looks every round).
SELECT (SELECT min(next_fire_at) FROM cron WHERE enabled AND next_fire_at IS NOT NULL)
           AS fire_at,
       EXISTS (SELECT 1 FROM cron WHERE buffered_tick IS NOT NULL AND enabled) AS buffered;

-- name: record_cron_fires
-- What happened to each tick. A tick handled twice keeps its first record with a run (a
-- backfill of a tick that was skipped or paused records its run).
INSERT INTO cron_fire (cron_id, tick, run_id, outcome)
SELECT * FROM unnest(%(cron_ids)s::bigint[], %(ticks)s::timestamptz[], %(run_ids)s::uuid[],
                     %(outcomes)s::text[])
ON CONFLICT (cron_id, tick) DO UPDATE
    SET run_id = excluded.run_id, outcome = excluded.outcome, created_at = now()
    WHERE cron_fire.run_id IS NULL AND excluded.run_id IS NOT NULL;

-- name: trim_cron_fires
-- Of the ticks that made no run, keeps those among each cron's newest 20 fires; the ticks
-- that made one stay for the backfill horizon (prune_cron_fires).
DELETE FROM cron_fire f
USING unnest(%(cron_ids)s::bigint[]) AS c(id)
WHERE f.cron_id = c.id AND f.run_id IS NULL
  AND f.tick < (SELECT tick FROM cron_fire WHERE cron_id = c.id
                ORDER BY tick DESC OFFSET 19 LIMIT 1);

-- name: prune_cron_fires
-- Forgets the ticks older than the cutoff (the backfill horizon), a batch at a time.
DELETE FROM cron_fire
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM cron_fire WHERE tick < %(cutoff)s LIMIT %(limit)s));

-- name: set_code_cron_policies
-- The policies a registration declares with Cron(...) (a plain string declares none: the
-- cron keeps those set with app.crons.update).
UPDATE cron SET overlap = p.overlap, catch_up_window_s = p.window_s,
    catch_up_max = p.max_runs,
    buffered_tick = CASE WHEN p.overlap = 'buffer_one' THEN cron.buffered_tick END,
    updated_at = now()
FROM unnest(%(names)s::text[], %(overlaps)s::text[], %(windows)s::int[], %(maxes)s::int[])
    AS p(name, overlap, window_s, max_runs)
WHERE cron.tenant_id = %(tenant_id)s AND cron.name = p.name AND cron.source = 'code'
  AND (cron.overlap, cron.catch_up_window_s, cron.catch_up_max)
      IS DISTINCT FROM (p.overlap, p.window_s, p.max_runs);

-- name: recent_cron_fires
-- The newest fires of some crons, with their runs' status (NULL: no run, or the run is
-- gone from history).
SELECT f.cron_id, f.tick, f.run_id, f.outcome, f.created_at,
       coalesce((SELECT t.status FROM all_tasks t
                 WHERE t.tenant_id = %(tenant_id)s AND t.external_id = f.run_id
                   AND t.dag_id IS NULL),
                (SELECT d.status FROM all_dags d
                 WHERE d.tenant_id = %(tenant_id)s AND d.external_id = f.run_id))
           AS status
FROM unnest(%(cron_ids)s::bigint[]) AS c(id)
CROSS JOIN LATERAL (
    SELECT * FROM cron_fire WHERE cron_id = c.id ORDER BY tick DESC LIMIT %(per_cron)s
) f
ORDER BY f.cron_id, f.tick DESC;

-- name: list_crons
-- The tenant's crons (all, or the one named).
SELECT id, name, task_name, workflow_name, expression, timezone, input,
       additional_metadata, priority, overlap, catch_up_window_s, catch_up_max, enabled,
       source, next_fire_at, buffered_tick, created_at, updated_at, last_run_id
FROM cron
WHERE tenant_id = %(tenant_id)s AND (%(name)s::text IS NULL OR name = %(name)s)
ORDER BY name;

-- name: lock_cron
SELECT id, name, task_name, workflow_name, expression, timezone, input,
       additional_metadata, priority, overlap, catch_up_window_s, catch_up_max, enabled,
       source, next_fire_at, buffered_tick, created_at, updated_at, last_run_id
FROM cron
WHERE tenant_id = %(tenant_id)s AND name = %(name)s
FOR UPDATE;

-- name: create_cron
-- Nothing returned: a cron of that name exists.
INSERT INTO cron (tenant_id, name, task_name, workflow_name, expression, timezone, input,
                  additional_metadata, priority, overlap, catch_up_window_s, catch_up_max,
                  enabled, source, next_fire_at)
VALUES (%(tenant_id)s, %(name)s, %(task_name)s, %(workflow_name)s, %(expression)s,
        %(timezone)s, %(input)s::jsonb, %(additional_metadata)s::jsonb, %(priority)s,
        %(overlap)s, %(catch_up_window_s)s, %(catch_up_max)s, %(enabled)s, 'api',
        %(next_fire_at)s)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING id;

-- name: update_cron
UPDATE cron SET expression = %(expression)s, timezone = %(timezone)s,
    input = %(input)s::jsonb, additional_metadata = %(additional_metadata)s::jsonb,
    priority = %(priority)s, overlap = %(overlap)s,
    catch_up_window_s = %(catch_up_window_s)s, catch_up_max = %(catch_up_max)s,
    enabled = %(enabled)s, next_fire_at = %(next_fire_at)s,
    buffered_tick = CASE WHEN %(enabled)s THEN buffered_tick END, updated_at = now()
WHERE id = %(id)s;

-- name: delete_cron
DELETE FROM cron WHERE id = %(id)s;

-- name: pause
-- Pausing again updates drop_runs.
INSERT INTO paused (tenant_id, kind, name, drop_runs)
VALUES (%(tenant_id)s, %(kind)s, %(name)s, %(drop_runs)s)
ON CONFLICT (tenant_id, kind, name) DO UPDATE SET drop_runs = excluded.drop_runs;

-- name: resume
DELETE FROM paused
WHERE tenant_id = %(tenant_id)s AND kind = %(kind)s AND name = %(name)s;

-- name: list_paused
SELECT kind, name, drop_runs, paused_at FROM paused
WHERE tenant_id = %(tenant_id)s ORDER BY kind, name;

-- name: cron_fires_between
SELECT tick, run_id, outcome FROM cron_fire
WHERE cron_id = %(cron_id)s AND tick BETWEEN %(start)s AND %(end)s;

-- name: dropping_pauses
-- Every tenant's tasks and workflows paused with drop (their queued runs are cancelled).
SELECT tenant_id, name FROM paused WHERE drop_runs;
