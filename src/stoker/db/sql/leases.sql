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
