-- Durable tasks (docs/durable.md): the ordered log of a durable task's calls — its steps,
-- waits and children — which a new invocation replays from the top.
--
-- The three tables are range-partitioned by UTC day on created_at like task_history, and
-- created_at here is the *run's* creation time (the task row's created_at), not the row's:
-- a run's whole log sits in one partition, next to its task_history rows, and goes when
-- that day is dropped. Because the partition key is constant per task, the primary keys
-- (which must contain it) still make (task, branch, position) unique. Every statement
-- passes the run's created_at with the task id, so it reads one partition.

-- One row per durable task, and the lock point: every writer of a task's log (appends,
-- a timer firing, an event, a child finishing, an eviction, a reset) locks this row first,
-- then touches entries. `invocation` fences stale workers off (bumped by each assignment
-- and reset); `satisfied_counter` numbers settlements (durable_entry.satisfied_seq).
CREATE TABLE durable_log (
    task_id           bigint NOT NULL,
    created_at        timestamptz NOT NULL,
    tenant_id         bigint NOT NULL,
    invocation        integer NOT NULL DEFAULT 0,
    active_branch     integer NOT NULL DEFAULT 1,
    satisfied_counter bigint NOT NULL DEFAULT 0,
    evicted_at        timestamptz,
    opened_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE durable_log_default PARTITION OF durable_log DEFAULT;

-- The branches of a task's log: branch 1 is the root (fork_position 1); runs.reset makes
-- the others. At position p a branch shows its own entry if p >= fork_position, otherwise
-- its parent's, recursively.
CREATE TABLE durable_branch (
    task_id       bigint NOT NULL,
    created_at    timestamptz NOT NULL,
    branch        integer NOT NULL,
    parent_branch integer,
    fork_position integer NOT NULL,
    reason        text NOT NULL,
    forked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, created_at, branch)
) PARTITION BY RANGE (created_at);

CREATE TABLE durable_branch_default PARTITION OF durable_branch DEFAULT;

-- One recorded call. `kind` is 'step', 'wait' or 'child'; `status` is 'pending', 'ok',
-- 'error' or 'dropped' (a pending entry a reset made invisible). `wake_at` is written once,
-- from the database clock. `satisfied_seq` orders settlements for the replay's release gate.
-- The primary key also serves reading a branch chain by position.
CREATE TABLE durable_entry (
    task_id           bigint NOT NULL,
    created_at        timestamptz NOT NULL,
    branch            integer NOT NULL,
    position          integer NOT NULL,
    kind              text NOT NULL,
    name              text NOT NULL,
    fingerprint       text NOT NULL,
    request           jsonb,
    wake_at           timestamptz,
    child_external_id uuid,
    status            text NOT NULL,
    result            jsonb,
    error             jsonb,
    fired             text,
    event_id          bigint,
    satisfied_seq     bigint,
    invocation        integer NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    satisfied_at      timestamptz,
    PRIMARY KEY (task_id, created_at, branch, position)
) PARTITION BY RANGE (created_at);

CREATE TABLE durable_entry_default PARTITION OF durable_entry DEFAULT;

-- What the timer sweeper claims (and sleeps until): pending entries with a deadline.
CREATE INDEX durable_entry_due_idx ON durable_entry (wake_at)
    WHERE status = 'pending' AND wake_at IS NOT NULL;
-- The entry a child's end settles.
CREATE INDEX durable_entry_child_idx ON durable_entry (child_external_id)
    WHERE status = 'pending' AND child_external_id IS NOT NULL;
