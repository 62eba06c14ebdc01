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
-- branch that shows it. The chain walks from the active branch to the root; each branch
-- shows its own entries from its fork_position up to (not including) the lowest fork of
-- the branches below it in the chain.
WITH RECURSIVE chain (branch, parent_branch, lo, hi) AS (
    SELECT b.branch, b.parent_branch, b.fork_position, NULL::integer
    FROM durable_log l
    JOIN durable_branch b
      ON b.task_id = l.task_id AND b.created_at = l.created_at AND b.branch = l.active_branch
    WHERE l.task_id = %(task_id)s AND l.created_at = %(created_at)s
    UNION ALL
    SELECT p.branch, p.parent_branch, p.fork_position, least(c.hi, c.lo)
    FROM chain c
    JOIN durable_branch p
      ON p.task_id = %(task_id)s AND p.created_at = %(created_at)s AND p.branch = c.parent_branch
)
SELECT e.branch, e.position, e.kind, e.name, e.fingerprint, e.request, e.wake_at,
       e.child_external_id, e.status, e.result, e.error, e.fired, e.event_id,
       e.satisfied_seq, e.invocation, e.recorded_at, e.satisfied_at
FROM chain c
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
-- Settles pending entries (a timer, an event, a child's end): status 'ok' or 'error',
-- the result or error, which condition fired and the event. Each takes satisfied_seq =
-- ++satisfied_counter of its task, in the order given. An entry no longer pending is left
-- alone and not returned, so a second settlement is a no-op. Run under the logs' locks
-- (claim_due_durable_timers, lock_durable_logs).
WITH x AS (
    SELECT *
    FROM unnest(%(task_ids)s::bigint[], %(created_ats)s::timestamptz[],
                %(branches)s::integer[], %(positions)s::integer[], %(statuses)s::text[],
                %(results)s::jsonb[], %(errors)s::jsonb[], %(fired)s::text[],
                %(event_ids)s::bigint[])
         WITH ORDINALITY
         AS x(task_id, created_at, branch, position, status, result, error, fired, event_id,
              ord)
),
pending AS (
    SELECT x.*, row_number() OVER (PARTITION BY x.task_id ORDER BY x.ord) AS n
    FROM x
    JOIN durable_entry e
      ON e.task_id = x.task_id AND e.created_at = x.created_at AND e.branch = x.branch
     AND e.position = x.position
    WHERE e.status = 'pending'
),
logs AS (
    UPDATE durable_log l SET satisfied_counter = l.satisfied_counter + c.n
    FROM (SELECT task_id, created_at, count(*) AS n FROM pending GROUP BY 1, 2) c
    WHERE l.task_id = c.task_id AND l.created_at = c.created_at
    RETURNING l.task_id, l.satisfied_counter - c.n AS base, l.tenant_id, l.invocation,
              l.evicted_at
)
UPDATE durable_entry e
SET status = p.status, result = p.result, error = p.error, fired = p.fired,
    event_id = p.event_id, satisfied_seq = logs.base + p.n, satisfied_at = now()
FROM pending p
JOIN logs ON logs.task_id = p.task_id
WHERE e.task_id = p.task_id AND e.created_at = p.created_at AND e.branch = p.branch
  AND e.position = p.position AND e.status = 'pending'
RETURNING e.task_id, e.created_at, e.branch, e.position, e.status, e.satisfied_seq,
          logs.tenant_id, logs.invocation, logs.evicted_at;

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

-- name: mark_durable_evicted
-- Accepts a worker's eviction request: only for the current invocation, when nothing was
-- settled since the worker last looked (satisfied_counter <= last_seen_seq: otherwise a
-- resolution is on its way, and evicting would lose the wake-up), and when the task waits
-- for something. Returns the log when accepted, nothing when refused.
UPDATE durable_log l SET evicted_at = now()
WHERE l.task_id = %(task_id)s AND l.created_at = %(created_at)s
  AND l.invocation = %(invocation)s AND l.satisfied_counter <= %(last_seen_seq)s
  AND l.evicted_at IS NULL
  AND EXISTS (
      SELECT 1 FROM durable_entry e
      WHERE e.task_id = l.task_id AND e.created_at = l.created_at AND e.status = 'pending'
  )
RETURNING l.task_id, l.tenant_id, l.invocation, l.evicted_at;

-- name: clear_durable_evicted
-- The task was restored: it runs on a worker again.
UPDATE durable_log SET evicted_at = NULL
WHERE task_id = %(task_id)s AND created_at = %(created_at)s AND evicted_at IS NOT NULL;

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
WITH RECURSIVE chain (branch, parent_branch, lo, hi) AS (
    SELECT b.branch, b.parent_branch, b.fork_position, NULL::integer
    FROM durable_log l
    JOIN durable_branch b
      ON b.task_id = l.task_id AND b.created_at = l.created_at AND b.branch = l.active_branch
    WHERE l.task_id = %(task_id)s AND l.created_at = %(created_at)s
    UNION ALL
    SELECT p.branch, p.parent_branch, p.fork_position, least(c.hi, c.lo)
    FROM chain c
    JOIN durable_branch p
      ON p.task_id = %(task_id)s AND p.created_at = %(created_at)s AND p.branch = c.parent_branch
),
last AS (
    SELECT coalesce(max(e.position), 0) AS top
    FROM chain c
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
-- that tenant (nothing otherwise: the request is refused), and the database clock, which
-- deadlines are measured on.
SELECT t.id AS task_id, t.created_at, t.tenant_id, now() AS db_now
FROM task_runtime r
JOIN task t ON t.id = r.task_id
WHERE r.task_id = %(task_id)s AND r.attempt = %(attempt)s AND r.worker_id = %(worker_id)s
  AND r.tenant_id = %(tenant_id)s;

-- name: durable_task_workers
-- The attempt and worker each of these tasks runs on now (a task with no running attempt
-- is left out), for telling the worker that its log changed.
SELECT task_id, attempt, worker_id
FROM task_runtime
WHERE task_id = ANY(%(task_ids)s::bigint[]);

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
