-- Workflows: DAG runs, their steps' conditions, child runs and user events.
-- See docs/workflows.md and stoker/engine/controllers/dags.py for how they are used.

-- A workflow's definition (steps, parents, conditions, handlers). Versions are immutable
-- and named by the hash of their config, so a run keeps the shape it was started with
-- while a new deploy registers a new version.
CREATE TABLE workflow_version (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  bigint NOT NULL,
    name       text NOT NULL,
    hash       text NOT NULL,
    config     jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name, hash)
);

-- The version new runs of a workflow use.
CREATE TABLE workflow_def (
    tenant_id  bigint NOT NULL,
    name       text NOT NULL,
    version_id bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- One workflow run. Its steps are rows of `task` with this dag_id. The run's output is
-- not copied here: it is read from its steps (the COMPLETED ones, keyed by step name).
-- `cancelled` records that a user cancelled the run (its final status is then CANCELLED).
CREATE TABLE dag (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id           bigint NOT NULL,
    external_id         uuid NOT NULL,
    workflow_name       text NOT NULL,
    version_id          bigint NOT NULL,
    status              text NOT NULL DEFAULT 'RUNNING',
    input               jsonb NOT NULL,
    additional_metadata jsonb NOT NULL DEFAULT '{}',
    error               jsonb,
    cancelled           boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz
) WITH (fillfactor = 80);

CREATE UNIQUE INDEX dag_external_id_idx ON dag (external_id);
CREATE INDEX dag_tenant_created_idx ON dag (tenant_id, created_at DESC, id DESC);
CREATE INDEX dag_running_idx ON dag (id) WHERE status = 'RUNNING';

-- A task that is a step of a workflow run: the run, the step's name, whether the step was
-- skipped by a skip_if condition (it is then COMPLETED with no output).
ALTER TABLE task ADD COLUMN dag_id bigint;
ALTER TABLE task ADD COLUMN step text;
ALTER TABLE task ADD COLUMN skipped boolean NOT NULL DEFAULT false;
CREATE INDEX task_dag_idx ON task (dag_id) WHERE dag_id IS NOT NULL;
-- Steps waiting for their parents or conditions (what the DAG sweeper looks at).
CREATE INDEX task_pending_idx ON task (dag_id) WHERE status = 'PENDING';

-- The sleep and user-event conditions of a step waiting on them. `cond` is the
-- condition's path in the step's declaration (e.g. "wait_for.1.0"). A sleep is satisfied
-- once fire_at passes; an event when a matching event arrives after the row was created.
-- Rows go when the step leaves PENDING.
CREATE TABLE task_wait (
    task_id      bigint NOT NULL,
    cond         text NOT NULL,
    tenant_id    bigint NOT NULL,
    dag_id       bigint NOT NULL,
    kind         text NOT NULL,
    fire_at      timestamptz,
    event_key    text,
    expression   text,
    satisfied_at timestamptz,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, cond)
) WITH (fillfactor = 70);

CREATE INDEX task_wait_sleep_idx ON task_wait (fire_at)
    WHERE kind = 'sleep' AND satisfied_at IS NULL;
CREATE INDEX task_wait_event_idx ON task_wait (tenant_id, event_key)
    WHERE kind = 'event' AND satisfied_at IS NULL;

-- Child runs spawned from inside a task. The n-th spawn of a task (child_index, counted
-- per attempt) and an explicit child_key each name one child, so a retried parent gets
-- the children it already spawned instead of new ones.
CREATE TABLE child_run (
    parent_task_id bigint NOT NULL,
    child_index    integer NOT NULL,
    child_key      text,
    tenant_id      bigint NOT NULL,
    external_id    uuid NOT NULL,
    is_workflow    boolean NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (parent_task_id, child_index)
);

CREATE UNIQUE INDEX child_run_key_idx ON child_run (parent_task_id, child_key)
    WHERE child_key IS NOT NULL;
CREATE INDEX child_run_external_idx ON child_run (external_id);

-- User events pushed with app.events.push (kept for the API and for matching waits).
CREATE TABLE user_event (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id           bigint NOT NULL,
    external_id         uuid NOT NULL DEFAULT gen_random_uuid(),
    key                 text NOT NULL,
    payload             jsonb NOT NULL,
    additional_metadata jsonb NOT NULL DEFAULT '{}',
    scope               text,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX user_event_tenant_created_idx ON user_event (tenant_id, created_at DESC, id DESC);

-- Runs are filtered by their additional metadata (`@>`) in the API and bulk cancellation.
CREATE INDEX task_metadata_idx ON task USING gin (additional_metadata jsonb_path_ops);
CREATE INDEX dag_metadata_idx ON dag USING gin (additional_metadata jsonb_path_ops);
