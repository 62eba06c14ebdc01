-- Task logs and live streams (docs/observability.md).
--
-- task_log holds the lines tasks log (ctx.log and the standard logging module) in
-- batches: one row holds lines of one attempt as they arrived together (parallel arrays,
-- one entry a line), so that a task logging 100 lines costs a row or two, not 100.
-- Range-partitioned by day on created_at like task_history: the retention drops its day
-- partitions with the others. A batch names its task run and, for a workflow step, the
-- workflow run (run_id), so a run's logs are one index range whichever table the run is in.
CREATE TABLE task_log (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id   bigint NOT NULL,
    task_id     bigint NOT NULL,
    run_id      uuid NOT NULL,
    task_run_id uuid NOT NULL,
    task_name   text NOT NULL,
    attempt     integer NOT NULL,
    max_level   smallint NOT NULL,
    levels      smallint[] NOT NULL,
    loggers     text[] NOT NULL,
    messages    text[] NOT NULL,
    logged_at   bigint[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (created_at);

CREATE TABLE task_log_default PARTITION OF task_log DEFAULT;

-- A run's batches in order, and the tenant's batches newest first (search, also by task
-- name or level, which filter that range).
CREATE INDEX task_log_run_idx ON task_log (tenant_id, run_id, id);
CREATE INDEX task_log_tenant_created_idx ON task_log (tenant_id, created_at DESC, id DESC);

-- task_stream holds the chunks running attempts publish (ctx.put_stream), for a bounded
-- time (the engine deletes chunks older than its stream retention) so that a subscriber
-- that joins late reads the stream from its start. The row with is_end closes an attempt's
-- stream.
CREATE TABLE task_stream (
    task_id    bigint NOT NULL,
    attempt    integer NOT NULL,
    seq        integer NOT NULL,
    tenant_id  bigint NOT NULL,
    data       bytea NOT NULL,
    is_text    boolean NOT NULL,
    is_end     boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, attempt, seq)
);

CREATE INDEX task_stream_created_idx ON task_stream (created_at);
