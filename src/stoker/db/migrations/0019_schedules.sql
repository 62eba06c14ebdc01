-- Scheduled runs and user-facing idempotency keys.

-- Scheduled runs (issue 13): one run of a task or a workflow, to start at run_at. It is no
-- queue item until then: the leader's schedules controller locks the due rows (SKIP
-- LOCKED), creates each run through ingest with the request key 'schedule:<external_id>'
-- and marks the row FIRED with the run's id, so it fires once across replicas and restarts.
-- Rows are kept after firing (status and run id for app.schedules.get).
CREATE TABLE scheduled_run (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id           bigint NOT NULL,
    external_id         uuid NOT NULL,
    task_name           text,
    workflow_name       text,
    run_at              timestamptz NOT NULL,
    input               jsonb NOT NULL,
    additional_metadata jsonb NOT NULL DEFAULT '{}',
    priority            smallint NOT NULL DEFAULT 0,
    -- SCHEDULED until due; FIRED (run_id set) or FAILED (error: the run was refused).
    status              text NOT NULL DEFAULT 'SCHEDULED'
                        CHECK (status IN ('SCHEDULED', 'FIRED', 'FAILED')),
    run_id              uuid,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    fired_at            timestamptz,
    CHECK ((task_name IS NULL) <> (workflow_name IS NULL))
);
CREATE UNIQUE INDEX scheduled_run_external_id_idx ON scheduled_run (external_id);
-- The controller's "what is due" and "when is the next one".
CREATE INDEX scheduled_run_due_idx ON scheduled_run (run_at) WHERE status = 'SCHEDULED';
-- Listing and bulk deletes by time range.
CREATE INDEX scheduled_run_tenant_idx ON scheduled_run (tenant_id, run_at, id);

-- Idempotency keys (issue 13): the run a user-facing key names. A trigger whose key is
-- live gets this run back instead of a new one. Live: until expires_at (TTL mode), or,
-- when expires_at is NULL, until the run is finished. Written in the flush that writes the
-- run, under a transaction-level advisory lock per key (docs/idempotency.md).
CREATE TABLE idempotency_key (
    tenant_id  bigint NOT NULL,
    key        text NOT NULL,
    run_id     uuid NOT NULL,
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_key_expires_idx ON idempotency_key (expires_at)
    WHERE expires_at IS NOT NULL;
