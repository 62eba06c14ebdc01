-- A run's evaluated concurrency keys, kept on the run so that it can wait for admission
-- whenever it is queued: at creation, when a workflow step is readied later, on replay.
ALTER TABLE task ADD COLUMN concurrency_keys jsonb;
