-- A run's evaluated concurrency keys, kept on the run so that it can wait for admission
-- whenever it is queued: at creation, when a workflow step is readied later, on replay.
ALTER TABLE task ADD COLUMN concurrency_keys jsonb;

-- The slot-release trigger resolves its tables in Stoker's schema whatever the session's
-- search_path (an UPDATE of task from a plain psql session must not fail on it).
ALTER FUNCTION release_concurrency_slots() SET search_path FROM CURRENT;
