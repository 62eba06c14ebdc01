-- Event-triggered runs (README "Events"): a pushed event starts a run of every task and
-- workflow subscribed to its key (on_events), subject to their filters; the event records
-- the runs it started.

-- The priority the event's runs get (0: each task's default).
ALTER TABLE user_event ADD COLUMN priority smallint NOT NULL DEFAULT 0;
-- Events read by id (the REST get and replay).
CREATE INDEX user_event_external_id_idx ON user_event (external_id);

-- A filter on a subscriber (a task or a workflow): a CEL expression over the event
-- (input, additional_metadata, scope, key), optionally for one scope only, and a payload
-- the runs it lets through get (ctx.filter_payload). Filters declared in code
-- (default_filters, source 'code') are replaced at each registration of their task or
-- workflow; the others (source 'api') are managed with app.filters.
CREATE TABLE event_filter (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    external_id   uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    task_name     text,
    workflow_name text,
    scope         text,
    expression    text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    source        text NOT NULL DEFAULT 'api' CHECK (source IN ('code', 'api')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((task_name IS NULL) <> (workflow_name IS NULL))
);
CREATE INDEX event_filter_task_idx ON event_filter (tenant_id, task_name) WHERE task_name IS NOT NULL;
CREATE INDEX event_filter_workflow_idx ON event_filter (tenant_id, workflow_name)
    WHERE workflow_name IS NOT NULL;

-- The runs an event started: one row per run, written in the transaction that stored the
-- event (replay 0) or replayed it (replay n). `filter_id` is the external id of the filter
-- that let the run through (NULL: its subscriber had no filter for the event's scope).
-- Partitioned by day on the event's created_at, like user_event, and dropped with it.
CREATE TABLE event_run (
    tenant_id     bigint NOT NULL,
    event_id      bigint NOT NULL,
    created_at    timestamptz NOT NULL,
    run_id        uuid NOT NULL,
    task_name     text,
    workflow_name text,
    filter_id     uuid,
    replay        integer NOT NULL DEFAULT 0,
    triggered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, created_at, run_id)
) PARTITION BY RANGE (created_at);

CREATE TABLE event_run_default PARTITION OF event_run DEFAULT;
