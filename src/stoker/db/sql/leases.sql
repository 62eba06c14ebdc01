-- Named leases: one engine replica holds each at a time, renewing it before it expires.

-- name: acquire_lease
-- Takes the lease if it is free, expired or already ours; returns a row when we hold it.
INSERT INTO lease (name, holder, expires_at)
VALUES (%(name)s, %(holder)s, now() + %(ttl_ms)s * interval '1 millisecond')
ON CONFLICT (name) DO UPDATE
SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE lease.holder = excluded.holder OR lease.expires_at < now()
RETURNING holder;

-- name: release_lease
DELETE FROM lease WHERE name = %(name)s AND holder = %(holder)s;

-- name: upkeep_due
-- What the leader's upkeep has to do now, in one cheap read (each probe uses an index).
SELECT
    EXISTS (SELECT 1 FROM queue_item
            WHERE schedule_deadline IS NOT NULL AND schedule_deadline < now()) AS schedule_timeouts,
    EXISTS (SELECT 1 FROM task_runtime
            WHERE timeout_at IS NOT NULL AND timeout_at < now()) AS execution_timeouts,
    EXISTS (SELECT 1 FROM worker
            WHERE status = 'ACTIVE'
              AND last_heartbeat_at < now() - %(dead_after_ms)s * interval '1 millisecond')
        AS dead_workers;
