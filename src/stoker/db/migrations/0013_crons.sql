-- Crons declared in code: the cron table the leader's crons controller fires.

-- Crons (issue 13): a task's time trigger. Code crons (source 'code') are declared with
-- @app.task(on_crons=...) and replaced each time the task is registered; the leader's
-- crons controller fires each one when next_fire_at is due and advances it.
CREATE TABLE cron (
    id           bigserial PRIMARY KEY,
    tenant_id    bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    name         text NOT NULL,
    task_name    text,
    workflow_name text,
    expression   text NOT NULL,
    timezone     text NOT NULL DEFAULT 'UTC',
    input        jsonb NOT NULL DEFAULT '{}',
    enabled      boolean NOT NULL DEFAULT true,
    source       text NOT NULL DEFAULT 'code' CHECK (source IN ('code', 'api')),
    next_fire_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    CHECK ((task_name IS NULL) <> (workflow_name IS NULL))
);
-- The controller's "what is due" and "when is the next one".
CREATE INDEX cron_due_idx ON cron (next_fire_at) WHERE enabled AND next_fire_at IS NOT NULL;
