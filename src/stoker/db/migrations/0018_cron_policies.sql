-- Crons managed at run time, their policies and their fires; tasks and workflows paused.

-- What a cron's runs carry besides their input, and its policies: overlap (what a tick
-- does while the cron's previous run is still running) and catch-up (which ticks missed
-- by a downtime still fire: those at most catch_up_window_s old, at most catch_up_max).
-- buffered_tick: the one tick a buffer_one cron holds until its previous run ends.
ALTER TABLE cron
    ADD COLUMN additional_metadata jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN priority smallint NOT NULL DEFAULT 0,
    ADD COLUMN overlap text NOT NULL DEFAULT 'allow'
        CHECK (overlap IN ('allow', 'skip', 'cancel_previous', 'buffer_one')),
    ADD COLUMN catch_up_window_s integer NOT NULL DEFAULT 0 CHECK (catch_up_window_s >= 0),
    ADD COLUMN catch_up_max integer NOT NULL DEFAULT 0 CHECK (catch_up_max >= 0),
    ADD COLUMN buffered_tick timestamptz;
CREATE INDEX cron_buffered_idx ON cron (id) WHERE buffered_tick IS NOT NULL;

-- The ticks a cron handled, newest kept (the controller trims each cron to its last 20):
-- the run it started (run_id, a task or workflow run's external id; outcome 'started' on
-- a tick, 'manual' by trigger_now, 'backfill') or why it started none ('skipped': the
-- previous run still ran; 'paused'). "Last runs" and the overlap policies read them.
CREATE TABLE cron_fire (
    cron_id    bigint NOT NULL REFERENCES cron (id) ON DELETE CASCADE,
    tick       timestamptz NOT NULL,
    run_id     uuid,
    outcome    text NOT NULL CHECK (outcome IN ('started', 'manual', 'backfill', 'skipped', 'paused')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cron_id, tick)
);

-- A paused task or workflow (kind 'task' | 'workflow'): the scheduler assigns none of its
-- runs (they stay queued) and its crons do not fire; with drop_runs its queued runs are
-- cancelled instead.
CREATE TABLE paused (
    tenant_id bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    kind      text NOT NULL CHECK (kind IN ('task', 'workflow')),
    name      text NOT NULL,
    drop_runs boolean NOT NULL DEFAULT false,
    paused_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, name)
);
