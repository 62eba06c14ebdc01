-- Durable tasks: the log of a durable task's calls (docs/durable.md). Every statement
-- names a task by (task_id, created_at), the run's id and creation time, so it reads only
-- that run's partition. durable_log is the lock point: a writer locks the task's log row
-- (lock_durable_log, or claim_due_durable_timers) before it touches entries, and the
-- statements below that read-then-write a log rely on that.

-- name: create_durable_logs
-- Opens the log of each task (and its root branch: 1, forking at position 1). A task
-- that has one already keeps it; returns the ids of the logs created.
WITH logs AS (
    INSERT INTO durable_log (task_id, created_at, tenant_id)
    SELECT * FROM unnest(%(task_ids)s::bigint[], %(created_ats)s::timestamptz[],
                         %(tenant_ids)s::bigint[])
    ON CONFLICT (task_id, created_at) DO NOTHING
    RETURNING task_id, created_at
),
roots AS (
    INSERT INTO durable_branch (task_id, created_at, branch, parent_branch, fork_position,
                                reason)
    SELECT task_id, created_at, 1, NULL, 1, 'root' FROM logs
)
SELECT task_id FROM logs;

-- name: lock_durable_log
-- Locks a task's log row (the one lock every writer of the log takes first) and reads it.
SELECT task_id, created_at, tenant_id, invocation, active_branch, satisfied_counter,
       evicted_at
FROM durable_log
WHERE task_id = %(task_id)s AND created_at = %(created_at)s
FOR UPDATE;

-- name: read_durable_log
-- Reads a task's log row without locking it (a re-read of the log: a read-only
-- transaction, which costs no WAL flush at commit).
SELECT task_id, created_at, tenant_id, invocation, active_branch, satisfied_counter,
       evicted_at
FROM durable_log
WHERE task_id = %(task_id)s AND created_at = %(created_at)s;

-- name: lock_durable_logs
-- Locks several tasks' log rows in task id order, so that two writers locking batches
-- (events reaching many tasks, children ending) never wait for each other in a cycle.
SELECT l.task_id, l.created_at, l.tenant_id, l.invocation, l.active_branch,
       l.satisfied_counter, l.evicted_at
FROM durable_log l
JOIN unnest(%(task_ids)s::bigint[], %(created_ats)s::timestamptz[]) AS x(task_id, created_at)
  ON l.task_id = x.task_id AND l.created_at = x.created_at
ORDER BY l.task_id
FOR UPDATE OF l;

-- name: visible_durable_log
-- The log a new invocation replays, in position order: at each position the entry of the
-- branch that shows it (durable_chain).
SELECT e.branch, e.position, e.kind, e.name, e.fingerprint, e.request, e.wake_at,
       e.child_external_id, e.status, e.result, e.error, e.fired, e.event_id,
       e.satisfied_seq, e.invocation, e.recorded_at, e.satisfied_at
FROM durable_chain(%(task_id)s, %(created_at)s) c
JOIN durable_entry e
  ON e.task_id = %(task_id)s AND e.created_at = %(created_at)s AND e.branch = c.branch
 AND e.position >= c.lo AND (c.hi IS NULL OR e.position < c.hi)
ORDER BY e.position;

-- name: append_durable_entries
-- Records calls of the current invocation on the active branch (nothing, for a stale
-- invocation). A position already recorded is left as it is and returned with inserted =
-- false: a re-send with the same fingerprint is idempotent, another fingerprint is
-- non-determinism, for the caller to decide. `wake_at` is the absolute deadline given,
-- or now() + delay_ms from the database clock, written once. A call recorded settled (a
-- completed step) takes its satisfied_seq here, in position order. Run under the lock.
WITH log AS (
    SELECT active_branch, satisfied_counter
    FROM durable_log
    WHERE task_id = %(task_id)s AND created_at = %(created_at)s
      AND invocation = %(invocation)s
),
req AS (
    SELECT r.*, log.active_branch AS branch,
           CASE WHEN r.status <> 'pending' THEN
               log.satisfied_counter
               + count(*) FILTER (WHERE r.status <> 'pending') OVER (ORDER BY r.position)
           END AS seq
    FROM log,
         unnest(%(positions)s::integer[], %(kinds)s::text[], %(names)s::text[],
                %(fingerprints)s::text[], %(requests)s::jsonb[], %(delays_ms)s::bigint[],
                %(wake_ats)s::timestamptz[], %(child_external_ids)s::uuid[],
                %(statuses)s::text[], %(results)s::jsonb[], %(errors)s::jsonb[])
         AS r(position, kind, name, fingerprint, request, delay_ms, wake_at,
              child_external_id, status, result, error)
),
ins AS (
    INSERT INTO durable_entry (task_id, created_at, branch, position, kind, name, fingerprint,
                               request, wake_at, child_external_id, status, result, error,
                               satisfied_seq, invocation, satisfied_at)
    SELECT %(task_id)s, %(created_at)s, branch, position, kind, name, fingerprint, request,
           coalesce(wake_at, now() + delay_ms * interval '1 millisecond'), child_external_id,
           status, result, error, seq, %(invocation)s,
           CASE WHEN status <> 'pending' THEN now() END
    FROM req
    ON CONFLICT (task_id, created_at, branch, position) DO NOTHING
    RETURNING branch, position, kind, name, fingerprint, request, wake_at, child_external_id,
              status, result, error, fired, event_id, satisfied_seq, invocation, recorded_at,
              satisfied_at
),
bump AS (
    UPDATE durable_log l SET satisfied_counter = s.top
    FROM (SELECT max(satisfied_seq) AS top FROM ins) s
    WHERE l.task_id = %(task_id)s AND l.created_at = %(created_at)s AND s.top IS NOT NULL
)
SELECT true AS inserted, ins.* FROM ins
UNION ALL
SELECT false, e.branch, e.position, e.kind, e.name, e.fingerprint, e.request, e.wake_at,
       e.child_external_id, e.status, e.result, e.error, e.fired, e.event_id,
       e.satisfied_seq, e.invocation, e.recorded_at, e.satisfied_at
FROM req
JOIN durable_entry e
  ON e.task_id = %(task_id)s AND e.created_at = %(created_at)s AND e.branch = req.branch
 AND e.position = req.position
WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.position = req.position)
ORDER BY position;

-- name: settle_durable_entries
-- Settles pending entries (a timer, an event, a child's end) and restores evicted tasks:
-- the function of the same name (migration 0030, which says what each row means). Run
-- under the logs' locks (claim_due_durable_timers, lock_durable_logs).
SELECT *
FROM settle_durable_entries(%(task_ids)s::bigint[], %(created_ats)s::timestamptz[],
                            %(branches)s::integer[], %(positions)s::integer[],
                            %(statuses)s::text[], %(results)s::jsonb[], %(errors)s::jsonb[],
                            %(fired)s::text[], %(event_ids)s::bigint[]);

-- name: set_plan_cache_mode
-- Sets plan_cache_mode for the rest of the transaction (set_config's is_local): the
-- engine's connections plan every execution for its arrays (force_custom_plan); a
-- settlement of a few waits by an event push plans once per connection instead
-- (force_generic_plan, then back), which halves its cost on tables with day partitions.
SELECT set_config('plan_cache_mode', %(mode)s, true) AS mode;

-- name: settle_reached_durable_waits
-- The waits an event push reached (the entries named), settled if their conditions now
-- hold, in the push's transaction under their logs' locks (lock_durable_logs, then
-- satisfy_durable_waits, sent before it): durable_wait_holds over the satisfied
-- conditions of each pending wait, the condition that completed it (the latest of this
-- push's events, else the earliest satisfied), the result {"fired": path, "payload": the
-- event's payload}, then settle_durable_entries, in (task, branch, position) order. Returns
-- the settled rows with their results, whose wake-up the caller delivers after the commit.
WITH x AS (
    SELECT DISTINCT x.task_id, x.created_at, x.branch, x.position
    FROM unnest(%(task_ids)s::bigint[], %(created_ats)s::timestamptz[],
                %(branches)s::integer[], %(positions)s::integer[])
         AS x(task_id, created_at, branch, position)
),
c AS (
    SELECT x.task_id, x.created_at, x.branch, x.position,
           substr(w.cond, strpos(w.cond, ':') + 1) AS path, w.satisfied_at, w.event_id,
           e.request, u.payload
    FROM x
    JOIN durable_entry e
      ON e.task_id = x.task_id AND e.created_at = x.created_at AND e.branch = x.branch
     AND e.position = x.position AND e.status = 'pending'
    JOIN task_wait w
      ON w.task_id = x.task_id AND w.dag_id IS NULL AND w.branch = x.branch
     AND w.position = x.position AND w.satisfied_at IS NOT NULL
    LEFT JOIN user_event u ON u.id = w.event_id
),
holding AS (
    SELECT c.task_id, c.branch, c.position
    FROM c
    GROUP BY c.task_id, c.branch, c.position
    HAVING durable_wait_holds((array_agg(c.request))[1], array_agg(c.path))
),
chosen AS (
    SELECT DISTINCT ON (c.task_id, c.branch, c.position) c.*,
           jsonb_build_object('fired', c.path, 'payload', c.payload) AS result
    FROM c
    JOIN holding h ON h.task_id = c.task_id AND h.branch = c.branch AND h.position = c.position
    ORDER BY c.task_id, c.branch, c.position,
             CASE WHEN c.event_id = ANY(%(event_ids)s::bigint[]) THEN c.event_id END
                 DESC NULLS LAST,
             c.satisfied_at, c.path
),
args AS (
    SELECT array_agg(task_id ORDER BY task_id, branch, position) AS task_ids,
           array_agg(created_at ORDER BY task_id, branch, position) AS created_ats,
           array_agg(branch ORDER BY task_id, branch, position) AS branches,
           array_agg(position ORDER BY task_id, branch, position) AS positions,
           array_agg('ok'::text ORDER BY task_id, branch, position) AS statuses,
           array_agg(result ORDER BY task_id, branch, position) AS results,
           array_agg(NULL::jsonb ORDER BY task_id, branch, position) AS errors,
           array_agg(path ORDER BY task_id, branch, position) AS fired,
           array_agg(event_id ORDER BY task_id, branch, position) AS event_ids
    FROM chosen
)
SELECT s.task_id, s.created_at, s.branch, s.position, s.status, s.satisfied_seq,
       s.tenant_id, s.invocation, s.evicted_at, s.restored, s.worker_id, s.attempt, s.timed,
       ch.result
FROM args,
     LATERAL settle_durable_entries(args.task_ids, args.created_ats, args.branches,
                                    args.positions, args.statuses, args.results, args.errors,
                                    args.fired, args.event_ids) s
JOIN chosen ch ON ch.task_id = s.task_id AND ch.branch = s.branch AND ch.position = s.position;

-- name: claim_due_durable_timers
-- The pending entries whose wake_at has passed, earliest first, with their tasks' logs
-- locked; logs another transaction holds are skipped, so two sweepers share the work.
-- `conditions`: the entry is a wait with conditions (wait_for, wait_for_event), whose
-- wake_at is its earliest unfired sleep condition, not a deadline that settles it.
SELECT e.task_id, e.created_at, e.branch, e.position, e.wake_at, l.tenant_id, l.invocation,
       l.evicted_at, coalesce(e.request ? 'conditions', false) AS conditions
FROM durable_entry e
JOIN durable_log l ON l.task_id = e.task_id AND l.created_at = e.created_at
WHERE e.status = 'pending' AND e.wake_at <= now()
ORDER BY e.wake_at
LIMIT %(limit)s
FOR UPDATE OF l SKIP LOCKED;

-- name: next_durable_wake_at
-- The earliest pending deadline, for the sweeper's sleep.
SELECT min(wake_at) AS wake_at
FROM durable_entry
WHERE status = 'pending' AND wake_at IS NOT NULL;

-- name: pending_child_entries
-- The pending entries that wait for these child runs, for the transaction that ends them.
SELECT task_id, created_at, branch, position, child_external_id
FROM durable_entry
WHERE status = 'pending' AND child_external_id = ANY(%(child_external_ids)s::uuid[])
ORDER BY task_id, position;

-- name: evict_durable_task
-- Accepts a worker's eviction request (docs/durable.md, "Slots, eviction and restore"):
-- only for the current invocation, when nothing was settled since the worker last looked
-- (satisfied_counter <= last_seen_seq: otherwise a resolution is on its way, and evicting
-- would lose the wake-up), when the task waits for something, and when the attempt is
-- still the reporting worker's (so an evicted one cannot be evicted twice: its attempt
-- is over). Then, in this statement: the log is marked evicted, the
-- attempt ends without counting as a retry (its task_runtime row goes: the slot is free)
-- and the task is EVICTED until a settlement restores it (settle_durable_entries).
-- Returns the log when accepted, nothing when refused. Run under the lock.
WITH log AS (
    UPDATE durable_log l SET evicted_at = now()
    WHERE l.task_id = %(task_id)s AND l.created_at = %(created_at)s
      AND l.invocation = %(invocation)s AND l.satisfied_counter <= %(last_seen_seq)s
      AND EXISTS (
          SELECT 1 FROM durable_entry e
          WHERE e.task_id = l.task_id AND e.created_at = l.created_at
            AND e.status = 'pending'
      )
      AND EXISTS (
          SELECT 1 FROM task_runtime r
          WHERE r.task_id = l.task_id AND r.attempt = %(attempt)s
            AND r.worker_id = %(worker_id)s
      )
    RETURNING l.task_id, l.tenant_id, l.invocation, l.evicted_at
),
ended AS (
    DELETE FROM task_runtime r USING log
    WHERE r.task_id = log.task_id AND r.attempt = %(attempt)s
    RETURNING r.task_id, r.worker_id
),
logged AS (
    INSERT INTO task_event (tenant_id, task_id, attempt, kind, worker_id, data)
    SELECT log.tenant_id, log.task_id, %(attempt)s, 'EVICTED', ended.worker_id, '{}'::jsonb
    FROM log JOIN ended ON ended.task_id = log.task_id
),
task AS (
    UPDATE task t SET status = 'EVICTED', worker_id = NULL
    FROM ended
    WHERE t.id = ended.task_id
)
SELECT log.* FROM log JOIN ended ON ended.task_id = log.task_id;

-- name: durable_timeouts
-- The execution timeout of durable attempts counts only time spent running between
-- durable calls: an attempt whose log has a pending entry is blocked, and its deadline is
-- cleared; one that is not blocked (any more) gets its deadline again, counted from now
-- (grace_ms on top, as at assignment). Only rows that change are written (a re-read
-- stays a read), and attempts without an execution timeout are left alone.
WITH x AS (
    SELECT t.id, t.execution_timeout_ms,
           EXISTS (SELECT 1 FROM durable_entry e
                   WHERE e.task_id = t.id AND e.created_at = t.created_at
                     AND e.status = 'pending') AS blocked
    FROM task t
    WHERE t.id = ANY(%(task_ids)s::bigint[]) AND t.execution_timeout_ms > 0
)
UPDATE task_runtime r
SET timeout_at = CASE WHEN x.blocked THEN NULL
                      ELSE now() + (x.execution_timeout_ms + %(grace_ms)s)
                                   * interval '1 millisecond'
                 END
FROM x
WHERE r.task_id = x.id
  AND CASE WHEN x.blocked THEN r.timeout_at IS NOT NULL ELSE r.timeout_at IS NULL END;

-- name: set_durable_deadline
-- The run's whole-life deadline: its creation time plus the task's `timeout`, set once
-- (the first opening of the log decides; a later one keeps it).
UPDATE durable_log l
SET deadline_at = l.created_at + %(timeout_ms)s * interval '1 millisecond'
WHERE l.task_id = %(task_id)s AND l.created_at = %(created_at)s AND l.deadline_at IS NULL;

-- name: expire_durable_runs
-- Durable runs past their whole-run deadline (`timeout`), evicted, queued or running:
-- each is FAILED with `error`, not retried; its queue item and running attempt go (the
-- running ones are returned with their worker, to be told to stop). Logs another
-- transaction holds are skipped (the next round takes them). A finished run's deadline is
-- just cleared.
WITH due AS (
    SELECT l.task_id, l.created_at, l.tenant_id
    FROM durable_log l
    WHERE l.deadline_at IS NOT NULL AND l.deadline_at < now()
    ORDER BY l.deadline_at
    LIMIT %(limit)s
    FOR UPDATE OF l SKIP LOCKED
),
cleared AS (
    UPDATE durable_log l SET deadline_at = NULL, evicted_at = NULL
    FROM due
    WHERE l.task_id = due.task_id AND l.created_at = due.created_at
),
live AS (
    SELECT t.id, t.tenant_id, t.attempt
    FROM task t JOIN due ON due.task_id = t.id
    WHERE t.status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')
    FOR UPDATE OF t
),
dequeued AS (
    DELETE FROM queue_item q USING live WHERE q.task_id = live.id
),
ended AS (
    DELETE FROM task_runtime r USING live
    WHERE r.task_id = live.id
    RETURNING r.task_id, r.attempt, r.worker_id
),
logged AS (
    INSERT INTO task_event (tenant_id, task_id, attempt, kind, worker_id, data)
    SELECT live.tenant_id, live.id, live.attempt, 'TIMED_OUT', ended.worker_id,
           jsonb_build_object('error', %(error)s::jsonb, 'retry', false)
    FROM live LEFT JOIN ended ON ended.task_id = live.id
)
UPDATE task t
SET status = 'FAILED', error = %(error)s::jsonb, finished_at = now()
FROM live LEFT JOIN ended ON ended.task_id = live.id
WHERE t.id = live.id
RETURNING t.id, t.external_id, t.tenant_id, t.dag_id, ended.worker_id, ended.attempt;

-- name: bump_durable_invocations
-- Starts a new invocation of each task (an assignment): what an older invocation sends
-- after this is refused. A batch that may meet other writers locks the logs first
-- (lock_durable_logs).
UPDATE durable_log l SET invocation = l.invocation + 1
FROM unnest(%(task_ids)s::bigint[], %(created_ats)s::timestamptz[]) AS x(task_id, created_at)
WHERE l.task_id = x.task_id AND l.created_at = x.created_at
RETURNING l.task_id, l.invocation, l.active_branch, l.satisfied_counter;

-- name: reset_durable_log
-- runs.reset: a new branch forking from the active one at %(position)s becomes active,
-- the pending entries at or after it are dropped (they were all on the active chain, and
-- none is visible any more), and the live invocation is fenced off. Refused (no row) when
-- the position is not in 1 .. last visible position + 1. Run under the lock.
WITH last AS (
    SELECT coalesce(max(e.position), 0) AS top
    FROM durable_chain(%(task_id)s, %(created_at)s) c
    JOIN durable_entry e
      ON e.task_id = %(task_id)s AND e.created_at = %(created_at)s AND e.branch = c.branch
     AND e.position >= c.lo AND (c.hi IS NULL OR e.position < c.hi)
),
old AS (
    SELECT l.active_branch,
           (SELECT max(b.branch) FROM durable_branch b
            WHERE b.task_id = l.task_id AND b.created_at = l.created_at) + 1 AS branch
    FROM durable_log l, last
    WHERE l.task_id = %(task_id)s AND l.created_at = %(created_at)s
      AND %(position)s::integer BETWEEN 1 AND last.top + 1
),
log AS (
    UPDATE durable_log l SET active_branch = old.branch, invocation = l.invocation + 1
    FROM old
    WHERE l.task_id = %(task_id)s AND l.created_at = %(created_at)s
    RETURNING l.active_branch, l.invocation, l.tenant_id, old.active_branch AS parent_branch
),
fork AS (
    INSERT INTO durable_branch (task_id, created_at, branch, parent_branch, fork_position,
                                reason)
    SELECT %(task_id)s, %(created_at)s, active_branch, parent_branch, %(position)s, %(reason)s
    FROM log
),
dropped AS (
    UPDATE durable_entry e SET status = 'dropped'
    WHERE e.task_id = %(task_id)s AND e.created_at = %(created_at)s AND e.status = 'pending'
      AND e.position >= %(position)s AND EXISTS (SELECT 1 FROM log)
    RETURNING e.position
)
SELECT log.active_branch AS branch, log.parent_branch, log.invocation, log.tenant_id,
       (SELECT count(*) FROM dropped) AS dropped
FROM log;

-- name: durable_attempt
-- The run behind a durable request, when (task_id, attempt) is running on that worker of
-- that tenant (nothing otherwise: the request is refused), the database clock, which
-- deadlines are measured on, and whether the task has an execution timeout (`timed`).
SELECT t.id AS task_id, t.created_at, t.tenant_id, now() AS db_now,
       t.execution_timeout_ms > 0 AS timed
FROM task_runtime r
JOIN task t ON t.id = r.task_id
WHERE r.task_id = %(task_id)s AND r.attempt = %(attempt)s AND r.worker_id = %(worker_id)s
  AND r.tenant_id = %(tenant_id)s;

-- name: durable_child_outcomes
-- The outcome of the finished runs among these child runs (task runs and workflow runs,
-- live or moved to history): what settles the log entries that wait for them. A workflow
-- run's output is its completed steps' outputs by step name, as its callers see it.
SELECT t.external_id, t.status, t.output, t.error
FROM all_tasks t
WHERE t.external_id = ANY(%(external_ids)s::uuid[]) AND t.dag_id IS NULL
  AND t.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
UNION ALL
SELECT d.external_id, d.status,
       CASE WHEN d.status = 'COMPLETED' THEN
           (SELECT coalesce(jsonb_object_agg(s.step, s.output), '{}') FROM all_tasks s
            WHERE s.dag_id = d.id AND s.status = 'COMPLETED' AND NOT s.skipped)
       END,
       d.error
FROM all_dags d
WHERE d.external_id = ANY(%(external_ids)s::uuid[])
  AND d.status IN ('COMPLETED', 'FAILED', 'CANCELLED');

-- name: set_durable_wake_ats
-- The next time the durable timers look at these waits with conditions: their earliest
-- unfired sleep condition (NULL: none left). Run under the logs' locks.
UPDATE durable_entry e
SET wake_at = (SELECT min(w.fire_at) FROM task_wait w
               WHERE w.task_id = e.task_id AND w.dag_id IS NULL AND w.branch = e.branch
                 AND w.position = e.position AND w.kind = 'sleep'
                 AND w.satisfied_at IS NULL)
FROM unnest(%(task_ids)s::bigint[], %(created_ats)s::timestamptz[], %(branches)s::integer[],
            %(positions)s::integer[]) AS x(task_id, created_at, branch, position)
WHERE e.task_id = x.task_id AND e.created_at = x.created_at AND e.branch = x.branch
  AND e.position = x.position AND e.status = 'pending'
RETURNING e.task_id, e.position, e.wake_at;

-- name: durable_run_input
-- What a durable wait's expression sees of its run: the task's input and metadata.
SELECT input, additional_metadata
FROM task
WHERE id = %(task_id)s AND created_at = %(created_at)s;

-- name: durable_step_dag
-- runs.reset of a workflow step (the step's run id): its workflow run, live or in history;
-- nothing for a single-task run or an unknown id.
SELECT d.id AS dag_id, d.external_id, d.status
FROM all_tasks t
JOIN all_dags d ON d.id = t.dag_id
WHERE t.tenant_id = %(tenant_id)s AND t.external_id = %(run_id)s;

-- name: lock_durable_run
-- runs.reset: the task of a run of a tenant (a single-task run, or a step of a workflow
-- run by the step's run id), locked (after the caller held it live), with what the reset
-- needs to know of it; nothing for an unknown id.
SELECT t.id AS task_id, t.created_at, t.tenant_id, t.status, t.attempt, t.dag_id, t.task_name
FROM task t
WHERE t.tenant_id = %(tenant_id)s AND t.external_id = %(run_id)s
FOR UPDATE;

-- name: end_reset_attempt
-- runs.reset of a running task: its attempt ends (queue item and task_runtime row removed,
-- so whatever that attempt reports later is ignored) and is logged as RESET. Returns the
-- worker to tell, when one held it.
WITH dq AS (
    DELETE FROM queue_item q WHERE q.task_id = %(task_id)s
),
dr AS (
    DELETE FROM task_runtime r WHERE r.task_id = %(task_id)s
    RETURNING r.task_id, r.attempt, r.worker_id
),
logged AS (
    INSERT INTO task_event (tenant_id, task_id, attempt, kind, worker_id, data)
    SELECT t.tenant_id, t.id, t.attempt, 'RESET', dr.worker_id,
           jsonb_build_object('error', %(error)s::jsonb, 'started_at', t.started_at)
    FROM task t LEFT JOIN dr ON dr.task_id = t.id
    WHERE t.id = %(task_id)s
)
SELECT task_id, attempt, worker_id FROM dr;

-- name: requeue_reset_task
-- runs.reset: the task is queued again as a new attempt with fresh retries (make_tasks_ready).
-- `admitted`: it still holds its concurrency slots (it was running); a finished run
-- reopens and waits for admission again, like a new run.
WITH upd AS (
    UPDATE task t
    SET status = 'QUEUED', attempt = t.attempt + 1, retry_count = 0, error = NULL,
        output = NULL, started_at = NULL, finished_at = NULL, worker_id = NULL
    WHERE t.id = %(task_id)s
    RETURNING t.id, t.tenant_id, t.attempt, t.task_name, t.priority, t.schedule_timeout_ms,
              t.rate_limits, t.desired_worker_id, t.concurrency_keys
),
ready AS (
    SELECT make_tasks_ready(
        array_agg(ROW(id, tenant_id, attempt, task_name, priority, now(), schedule_timeout_ms,
                      rate_limits, desired_worker_id, concurrency_keys)::ready_task),
        %(admitted)s)
    FROM upd
)
SELECT upd.id AS task_id, upd.attempt,
       NOT %(admitted)s AND upd.concurrency_keys IS NOT NULL AS gated
FROM upd, ready;

-- name: durable_run_log
-- The REST log of a run: the run's task and its log row, by the tenant's run id (live or
-- in history); nothing for an unknown run. `invocation` is NULL for a run that never
-- opened a log (not durable, or not started).
SELECT t.id AS task_id, t.created_at, t.status, t.task_name, t.dag_id, l.invocation,
       l.active_branch, l.satisfied_counter, l.evicted_at, l.opened_at
FROM all_tasks t
LEFT JOIN durable_log l ON l.task_id = t.id AND l.created_at = t.created_at
WHERE t.tenant_id = %(tenant_id)s AND t.external_id = %(run_id)s;

-- name: durable_log_page
-- A page of a run's visible log, in position order after `after` (as visible_durable_log):
-- the REST API's pages and the pages a new invocation reads its log in.
SELECT e.branch, e.position, e.kind, e.name, e.fingerprint, e.request, e.wake_at,
       e.child_external_id, e.status, e.result, e.error, e.fired, e.event_id,
       e.satisfied_seq, e.invocation, e.recorded_at, e.satisfied_at
FROM durable_chain(%(task_id)s, %(created_at)s) c
JOIN durable_entry e
  ON e.task_id = %(task_id)s AND e.created_at = %(created_at)s AND e.branch = c.branch
 AND e.position >= c.lo AND (c.hi IS NULL OR e.position < c.hi)
WHERE e.position > %(after)s
ORDER BY e.position
LIMIT %(limit)s;

-- name: durable_log_pending
-- What a run's task waits for now: the pending entries of its visible log.
SELECT e.branch, e.position, e.kind, e.name, e.fingerprint, e.request, e.wake_at,
       e.child_external_id, e.status, e.result, e.error, e.fired, e.event_id,
       e.satisfied_seq, e.invocation, e.recorded_at, e.satisfied_at
FROM durable_chain(%(task_id)s, %(created_at)s) c
JOIN durable_entry e
  ON e.task_id = %(task_id)s AND e.created_at = %(created_at)s AND e.branch = c.branch
 AND e.position >= c.lo AND (c.hi IS NULL OR e.position < c.hi)
WHERE e.status = 'pending'
ORDER BY e.position;

-- name: settle_due_durable_timers_of
-- Settles a task's pending timers that are due by now(), in deadline order, before an
-- append of that task is numbered: the worker treats a sleep past its deadline as done
-- without waiting for the sweeper, so the calls it makes next must be numbered after it,
-- or a replay's release gate would wait for them before releasing the sleep. (The
-- worker's idea of the database clock is never ahead of now() here.) Only plain sleeps:
-- a wait with conditions is decided by the timers with its other conditions. Run under
-- the lock.
WITH due AS (
    SELECT branch, position, row_number() OVER (ORDER BY wake_at, position) AS n
    FROM durable_entry
    WHERE task_id = %(task_id)s AND created_at = %(created_at)s AND status = 'pending'
      AND wake_at <= now() AND NOT coalesce(request ? 'conditions', false)
),
log AS (
    UPDATE durable_log l SET satisfied_counter = l.satisfied_counter + c.n
    FROM (SELECT count(*) AS n FROM due) c
    WHERE l.task_id = %(task_id)s AND l.created_at = %(created_at)s AND c.n > 0
    RETURNING l.satisfied_counter - c.n AS base
)
UPDATE durable_entry e
SET status = 'ok', fired = 'timer', satisfied_seq = log.base + due.n, satisfied_at = now()
FROM due, log
WHERE e.task_id = %(task_id)s AND e.created_at = %(created_at)s AND e.branch = due.branch
  AND e.position = due.position AND e.status = 'pending'
RETURNING e.position;
