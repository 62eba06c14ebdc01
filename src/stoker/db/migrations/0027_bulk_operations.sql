-- Acting on runs and workers from the API: bulk operations whose progress any replica can
-- read (and a replica can resume when the one driving it died), and pausing a worker.

-- A paused worker keeps its stream and what it runs but is assigned nothing new.
ALTER TABLE worker ADD COLUMN paused_at timestamptz;

-- A bulk cancel or replay: the runs it applies to, resolved when it was asked for (ids as
-- given, or every run the filter matched then), processed in chunks from `position`. The
-- replica driving it (`owner`) touches `heartbeat_at` after each chunk; a RUNNING operation
-- whose heartbeat is stale is claimed and resumed by another replica (engine/runs/bulk.py).
CREATE TABLE bulk_operation (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    bigint NOT NULL,
    external_id  uuid NOT NULL UNIQUE,
    action       text NOT NULL CHECK (action IN ('cancel', 'replay')),
    state        text NOT NULL DEFAULT 'RUNNING'
                 CHECK (state IN ('RUNNING', 'COMPLETED', 'FAILED')),
    reason       text NOT NULL DEFAULT '',
    filter       jsonb,
    run_ids      text[] NOT NULL,
    total        integer NOT NULL,
    position     integer NOT NULL DEFAULT 0,
    done         integer NOT NULL DEFAULT 0,
    failed       integer NOT NULL DEFAULT 0,
    error        text,
    errors       integer NOT NULL DEFAULT 0,
    owner        text NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

CREATE INDEX bulk_operation_tenant_idx ON bulk_operation (tenant_id, created_at DESC);
CREATE INDEX bulk_operation_running_idx ON bulk_operation (heartbeat_at)
    WHERE state = 'RUNNING';
