-- Scheduling policy: concurrency keys, rate limits, worker labels, sticky/desired workers.
-- See docs/scheduler.md for how the scheduler uses these tables.

-- A concurrency strategy of a task (one per ConcurrencyExpression, in declaration order).
CREATE TABLE concurrency_strategy (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      bigint NOT NULL,
    scope          text NOT NULL,
    idx            smallint NOT NULL,
    expression     text NOT NULL,
    max_runs       integer NOT NULL,
    limit_strategy text NOT NULL,
    UNIQUE (tenant_id, scope, idx)
);

-- A run's place with one strategy: waiting (admitted = false) or holding a slot. A run is
-- queued once every strategy of it admitted it; its rows go when it reaches a final state.
CREATE TABLE concurrency_slot (
    task_id     bigint NOT NULL,
    strategy_id bigint NOT NULL,
    tenant_id   bigint NOT NULL,
    idx         smallint NOT NULL,
    key         text NOT NULL,
    priority    smallint NOT NULL,
    admitted    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, strategy_id)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

CREATE INDEX concurrency_slot_key_idx ON concurrency_slot (strategy_id, key, admitted);
CREATE INDEX concurrency_slot_waiting_idx ON concurrency_slot (tenant_id, strategy_id)
    WHERE NOT admitted;

-- Releasing concurrency slots is tied to the task's final state by a trigger, so every
-- path that ends a run (completion, failure, cancellation, timeouts, and any added later)
-- frees its slots in the same transaction.
CREATE FUNCTION release_concurrency_slots() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM concurrency_slot c
    USING ended e
    WHERE c.task_id = e.id AND e.status IN ('COMPLETED', 'FAILED', 'CANCELLED');
    RETURN NULL;
END;
$$;

CREATE TRIGGER task_release_concurrency_slots
    AFTER UPDATE ON task
    REFERENCING NEW TABLE AS ended
    FOR EACH STATEMENT EXECUTE FUNCTION release_concurrency_slots();

-- Rate limits: `used` units in the fixed window that starts at window_start.
CREATE TABLE rate_limit (
    tenant_id    bigint NOT NULL,
    key          text NOT NULL,
    limit_value  integer NOT NULL,
    window_ms    bigint NOT NULL,
    window_start timestamptz NOT NULL DEFAULT 'epoch',
    used         integer NOT NULL DEFAULT 0,
    dynamic      boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
) WITH (fillfactor = 50);

-- Per run: the rate-limit units it consumes ([{"key", "units", "limit", "window_ms"}]) and
-- the worker it prefers (a run's desired_worker_id, or its sticky worker).
ALTER TABLE queue_item ADD COLUMN rate_limits jsonb;
ALTER TABLE queue_item ADD COLUMN desired_worker_id bigint;
ALTER TABLE task ADD COLUMN desired_worker_id bigint;
ALTER TABLE task ADD COLUMN rate_limits jsonb;
-- When the current attempt was assigned (the moment rate limits and concurrency count it).
ALTER TABLE task ADD COLUMN assigned_at timestamptz;

ALTER TABLE worker ADD COLUMN labels jsonb NOT NULL DEFAULT '{}';
ALTER TABLE worker ADD COLUMN durable_slots integer NOT NULL DEFAULT 0;
