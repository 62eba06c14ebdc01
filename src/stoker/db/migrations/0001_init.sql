-- Stoker's first schema.
--
-- Two groups of tables live in the schema (its name is chosen by configuration and set as
-- search_path, so no statement names it):
--   * the queue tables: small, hot, updated and deleted all the time (queue_item,
--     task_runtime, worker, lease). Aggressive autovacuum keeps them small.
--   * the run-history tables: large and append-mostly (task, task_event), indexed for the
--     API and dashboard.
-- Hot tables carry no foreign keys: the engine is their only writer and checks are paid per
-- row on the hot path.

CREATE TABLE tenant (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_token (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    external_id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    name        text NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE task_def (
    tenant_id  bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    name       text NOT NULL,
    config     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- One row per task run: its input, options, current attempt and final outcome.
CREATE TABLE task (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id            bigint NOT NULL,
    external_id          uuid NOT NULL,
    task_name            text NOT NULL,
    status               text NOT NULL,
    attempt              integer NOT NULL DEFAULT 0,
    retry_count          integer NOT NULL DEFAULT 0,
    priority             smallint NOT NULL DEFAULT 1,
    input                jsonb NOT NULL,
    additional_metadata  jsonb NOT NULL DEFAULT '{}',
    output               jsonb,
    error                jsonb,
    max_retries          integer NOT NULL DEFAULT 0,
    backoff_factor       double precision,
    backoff_max_ms       bigint NOT NULL DEFAULT 3600000,
    execution_timeout_ms bigint NOT NULL DEFAULT 0,
    schedule_timeout_ms  bigint NOT NULL DEFAULT 0,
    worker_id            bigint,
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz
) WITH (fillfactor = 80);

CREATE UNIQUE INDEX task_external_id_idx ON task (external_id);
CREATE INDEX task_tenant_created_idx ON task (tenant_id, created_at DESC, id DESC);
CREATE INDEX task_tenant_status_idx ON task (tenant_id, status, created_at DESC);

-- What happened to attempts that did not simply complete: failures, timeouts, lost
-- workers, cancellations. Completed attempts are described by the task row itself.
CREATE TABLE task_event (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  bigint NOT NULL,
    task_id    bigint NOT NULL,
    attempt    integer NOT NULL,
    kind       text NOT NULL,
    worker_id  bigint,
    data       jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX task_event_task_idx ON task_event (task_id, id);

-- Attempts waiting for a worker. A row is deleted when its attempt is assigned.
CREATE TABLE queue_item (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         bigint NOT NULL,
    task_id           bigint NOT NULL,
    attempt           integer NOT NULL,
    queue             text NOT NULL,
    priority          smallint NOT NULL,
    available_at      timestamptz NOT NULL DEFAULT now(),
    schedule_deadline timestamptz
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

CREATE INDEX queue_item_claim_idx ON queue_item (tenant_id, queue, priority DESC, id);
CREATE INDEX queue_item_deadline_idx ON queue_item (schedule_deadline)
    WHERE schedule_deadline IS NOT NULL;

-- Attempts assigned to a worker and not yet ended. The (task_id, attempt) row is the
-- token that lets exactly one outcome of an attempt be recorded.
CREATE TABLE task_runtime (
    task_id     bigint PRIMARY KEY,
    tenant_id   bigint NOT NULL,
    attempt     integer NOT NULL,
    worker_id   bigint NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    timeout_at  timestamptz
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

CREATE INDEX task_runtime_worker_idx ON task_runtime (worker_id);
CREATE INDEX task_runtime_timeout_idx ON task_runtime (timeout_at) WHERE timeout_at IS NOT NULL;

CREATE TABLE worker (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         bigint NOT NULL,
    external_id       uuid NOT NULL UNIQUE,
    name              text NOT NULL,
    slots             integer NOT NULL,
    task_names        text[] NOT NULL DEFAULT '{}',
    status            text NOT NULL DEFAULT 'ACTIVE',
    connected_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.05);

CREATE INDEX worker_tenant_idx ON worker (tenant_id, status);

-- Named leases held by one engine replica at a time (leadership, queue partitions).
CREATE TABLE lease (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);
