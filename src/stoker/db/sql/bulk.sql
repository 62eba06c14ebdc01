-- Bulk cancel and replay operations (engine/runs/bulk.py): created with their runs
-- resolved, advanced a chunk at a time by the replica that owns them, resumed by another
-- replica when the owner's heartbeat goes stale.

-- name: create_bulk_operation
INSERT INTO bulk_operation (tenant_id, external_id, action, reason, filter, run_ids, total,
                            owner)
VALUES (%(tenant_id)s, %(external_id)s, %(action)s, %(reason)s, %(filter)s::jsonb,
        %(run_ids)s::text[], cardinality(%(run_ids)s::text[]), %(owner)s)
RETURNING id;

-- name: get_bulk_operation
-- One operation of the tenant, as its progress is reported.
SELECT external_id, action, state, reason, filter, total, done, failed, error, created_at,
       finished_at
FROM bulk_operation
WHERE tenant_id = %(tenant_id)s AND external_id = %(external_id)s;

-- name: list_bulk_operations
-- The tenant's operations, newest first.
SELECT external_id, action, state, reason, filter, total, done, failed, error, created_at,
       finished_at
FROM bulk_operation
WHERE tenant_id = %(tenant_id)s
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: next_bulk_chunk
-- The next runs an owned, running operation has to process (empty: none left).
SELECT position, run_ids[position + 1 : position + %(size)s] AS run_ids
FROM bulk_operation
WHERE id = %(id)s AND owner = %(owner)s AND state = 'RUNNING';

-- name: advance_bulk_operation
-- Records a processed chunk (only once: the position must still be where it started) and
-- completes the operation after its last one.
UPDATE bulk_operation
SET position = %(to_position)s, done = done + %(done)s, failed = failed + %(failed)s,
    heartbeat_at = now(),
    state = CASE WHEN %(to_position)s >= total THEN 'COMPLETED' ELSE state END,
    finished_at = CASE WHEN %(to_position)s >= total THEN now() END
WHERE id = %(id)s AND owner = %(owner)s AND state = 'RUNNING'
  AND position = %(from_position)s
RETURNING state;

-- name: note_bulk_error
-- A chunk failed: the error is recorded and, after `max_errors`, the operation fails.
-- Otherwise it stays RUNNING and is resumed when its heartbeat goes stale.
UPDATE bulk_operation
SET error = %(error)s, errors = errors + 1,
    state = CASE WHEN errors + 1 >= %(max_errors)s THEN 'FAILED' ELSE state END,
    finished_at = CASE WHEN errors + 1 >= %(max_errors)s THEN now() END
WHERE id = %(id)s AND owner = %(owner)s AND state = 'RUNNING'
RETURNING state;

-- name: claim_stale_bulk_operations
-- Takes over running operations whose owner stopped touching them (it died, or gave up
-- after an error): this replica owns them now and carries on from their position.
UPDATE bulk_operation b
SET owner = %(owner)s, heartbeat_at = now()
FROM (
    SELECT id FROM bulk_operation
    WHERE state = 'RUNNING'
      AND heartbeat_at < now() - %(stale_ms)s * interval '1 millisecond'
    ORDER BY heartbeat_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) s
WHERE b.id = s.id
RETURNING b.id, b.tenant_id, b.external_id, b.action, b.reason;
