-- Durable logs: the branch chain of a log as one function, read by every reader of the
-- visible log (visible_durable_log, durable_log_page, durable_log_pending,
-- reset_durable_log), and an index of each log's pending entries.

-- The branch chain of a task's log (docs/durable.md, "Visibility"): from the active branch
-- up to the root, each branch with the positions it shows, lo <= position < hi (hi NULL:
-- no bound). A branch shows its own entries from its fork_position up to the lowest fork
-- of the branches below it in the chain. Every reader of the visible log joins
-- durable_entry to this.
CREATE FUNCTION durable_chain(p_task_id bigint, p_created_at timestamptz)
RETURNS TABLE (branch integer, lo integer, hi integer)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    WITH RECURSIVE chain (branch, parent_branch, lo, hi) AS (
        SELECT b.branch, b.parent_branch, b.fork_position, NULL::integer
        FROM durable_log l
        JOIN durable_branch b
          ON b.task_id = l.task_id AND b.created_at = l.created_at
         AND b.branch = l.active_branch
        WHERE l.task_id = p_task_id AND l.created_at = p_created_at
        UNION ALL
        SELECT p.branch, p.parent_branch, p.fork_position, least(c.hi, c.lo)
        FROM chain c
        JOIN durable_branch p
          ON p.task_id = p_task_id AND p.created_at = p_created_at
         AND p.branch = c.parent_branch
    )
    SELECT c.branch, c.lo, c.hi FROM chain c
$$;

-- The pending entries of one task's log (what it waits for, its due sleeps, whether it is
-- blocked): a task with a long log of settled steps finds them without reading its steps.
CREATE INDEX durable_entry_pending_idx ON durable_entry (task_id, created_at)
    WHERE status = 'pending';
