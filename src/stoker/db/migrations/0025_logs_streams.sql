-- Task logs and live streams (docs/observability.md).
--
-- task_log holds the lines tasks log (ctx.log and the standard logging module), one row a
-- line, range-partitioned by day on created_at like task_history: the retention drops its
-- day partitions with the others. A line names its task run and, for a workflow step, the
-- workflow run (run_id), so a run's logs are one index range whichever table the run is in.
CREATE TABLE task_log (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id   bigint NOT NULL,
    task_id     bigint NOT NULL,
    run_id      uuid NOT NULL,
    task_run_id uuid NOT NULL,
    task_name   text NOT NULL,
    attempt     integer NOT NULL,
    level       smallint NOT NULL,
    logger      text NOT NULL,
    message     text NOT NULL,
    logged_at   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE task_log_default PARTITION OF task_log DEFAULT;

-- A run's lines in order; the tenant's lines newest first (search), and by task name.
CREATE INDEX task_log_run_idx ON task_log (tenant_id, run_id, id);
CREATE INDEX task_log_tenant_created_idx ON task_log (tenant_id, created_at DESC, id DESC);
CREATE INDEX task_log_tenant_task_idx
    ON task_log (tenant_id, task_name, created_at DESC, id DESC);

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
