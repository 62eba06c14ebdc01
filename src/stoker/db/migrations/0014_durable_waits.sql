-- Durable waits (docs/durable.md): the conditions of a durable task's wait_for_event and
-- wait_for calls are rows of the same registry as the conditions of waiting workflow steps.

-- A durable wait's rows have no dag_id: they name the log entry they belong to (the run's
-- created_at, branch and position) instead, and cond is "d<branch>.<position>:<path>".
-- `scope` limits an event condition to events pushed with that scope, `since` is the
-- lookback window's start (events created since then count), and `event_id` is the event
-- that satisfied an event condition: one event satisfies at most one condition of a task.
ALTER TABLE task_wait ALTER COLUMN dag_id DROP NOT NULL;
ALTER TABLE task_wait
    ADD COLUMN run_created_at timestamptz,
    ADD COLUMN branch         integer,
    ADD COLUMN position       integer,
    ADD COLUMN scope          text,
    ADD COLUMN since          timestamptz,
    ADD COLUMN event_id       bigint;

CREATE UNIQUE INDEX task_wait_event_used_idx ON task_wait (task_id, event_id)
    WHERE event_id IS NOT NULL;

-- The lookback search of a durable wait: a tenant's events of one key since a time.
CREATE INDEX user_event_key_idx ON user_event (tenant_id, key, created_at);
