-- User-facing idempotency keys (run(..., idempotency_key=...), Idempotency on a task).

-- name: lock_idempotency_keys
-- Serializes the triggers of one key until their flush commits (transaction-level
-- advisory locks, taken in the order given: the caller sorts them).
SELECT count(pg_advisory_xact_lock(k.lock)) AS locked
FROM unnest(%(locks)s::bigint[]) WITH ORDINALITY AS k(lock, n);

-- name: find_idempotency_keys
-- The recorded keys and whether each is live: before expires_at (TTL mode), or while its
-- run is not finished (a task run not in a final status, a workflow run RUNNING).
SELECT k.key, k.run_id,
       CASE WHEN k.expires_at IS NOT NULL THEN k.expires_at > now()
            ELSE EXISTS (SELECT 1 FROM task t WHERE t.external_id = k.run_id
                           AND t.status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED'))
              OR EXISTS (SELECT 1 FROM dag d WHERE d.external_id = k.run_id
                           AND d.status = 'RUNNING')
       END AS live
FROM idempotency_key k
WHERE k.tenant_id = %(tenant_id)s AND k.key = ANY(%(keys)s::text[]);

-- name: put_idempotency_keys
-- Records (or takes over, when the old one was no longer live) the keys of new runs.
INSERT INTO idempotency_key (tenant_id, key, run_id, expires_at)
SELECT %(tenant_id)s, k.key, k.run_id,
       CASE WHEN k.ttl_ms > 0 THEN now() + make_interval(secs => k.ttl_ms / 1000.0) END
FROM unnest(%(keys)s::text[], %(run_ids)s::uuid[], %(ttls_ms)s::bigint[])
    AS k(key, run_id, ttl_ms)
ON CONFLICT (tenant_id, key) DO UPDATE
SET run_id = excluded.run_id, expires_at = excluded.expires_at, created_at = now();

-- name: prune_idempotency_keys
-- Forgets TTL keys that expired, a batch at a time.
DELETE FROM idempotency_key
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM idempotency_key
    WHERE expires_at < now()
    LIMIT %(limit)s));

-- name: rewrite_request_ids
-- A keyed call some of whose runs were deduplicated answers with the existing runs' ids:
-- its request key must answer a retry with the same (16 bytes per id, in order).
UPDATE trigger_request SET run_ids = %(run_ids)s
WHERE tenant_id = %(tenant_id)s AND request_key = %(request_key)s;
