-- Durable eviction, restore and the whole-run timeout (docs/durable.md, "Slots, eviction
-- and restore" and "Invocations, retries and timeouts").

-- The run's whole-life deadline (created_at + the task's `timeout`), set when its log is
-- first opened; the leader's timeouts loop fails runs past it, evicted ones included.
ALTER TABLE durable_log ADD COLUMN deadline_at timestamptz;

CREATE INDEX durable_log_deadline_idx ON durable_log (deadline_at)
    WHERE deadline_at IS NOT NULL;

-- Ids of the queue items of restored durable tasks: counted up from -2^62, below every
-- ordinary item's id, so the claim's `ORDER BY priority DESC, id` takes a restored task
-- ahead of ordinary work of its priority (and restored tasks among themselves in order).
CREATE SEQUENCE queue_item_ahead_seq;
