-- Request keys of trigger calls (idempotent triggers, docs/idempotency.md).

-- name: claim_request_keys
-- Records the keys of calls whose runs this transaction writes, with the ids each call
-- answers (its slice lo..hi of run_ids); returns the keys recorded. A key recorded already
-- is not returned: that call is a retry. run_ids holds every call's ids, 16 bytes each. When another transaction (this replica's
-- previous flush, or another replica) holds the same key uncommitted, the insert waits for
-- it and then skips the key if it committed. Keys go in sorted order so that two
-- transactions claiming overlapping keys cannot deadlock.
-- keep_s: a key kept that many seconds (0: the TTL applies).
INSERT INTO trigger_request (tenant_id, request_key, kind, fingerprint, run_ids, satisfied,
                             keep_until)
SELECT %(tenant_id)s, x.request_key, x.kind, x.fingerprint,
       substring(%(run_ids)s::bytea FROM x.start FOR x.length), x.satisfied,
       CASE WHEN x.keep_s > 0 THEN now() + make_interval(secs => x.keep_s) END
FROM unnest(%(keys)s::text[], %(kinds)s::text[], %(fingerprints)s::bytea[],
            %(starts)s::int[], %(lengths)s::int[], %(satisfied)s::int[], %(keep_s)s::int[])
     AS x(request_key, kind, fingerprint, start, length, satisfied, keep_s)
ORDER BY x.request_key
ON CONFLICT DO NOTHING
RETURNING request_key;

-- name: find_request_keys
SELECT request_key, kind, fingerprint, run_ids, satisfied
FROM trigger_request
WHERE tenant_id = %(tenant_id)s AND request_key = ANY(%(keys)s::text[]);

-- name: prune_request_keys
-- Forgets request keys older than the TTL and kept keys past their keep_until, a batch of
-- each at a time (oldest first).
DELETE FROM trigger_request
WHERE ctid = ANY(ARRAY(
    (SELECT ctid FROM trigger_request
     WHERE keep_until IS NULL AND created_at < now() - make_interval(secs => %(ttl_s)s)
     ORDER BY created_at
     LIMIT %(limit)s)
    UNION ALL
    (SELECT ctid FROM trigger_request
     WHERE keep_until < now()
     ORDER BY keep_until
     LIMIT %(limit)s)));

-- name: set_request_satisfied
-- The satisfied count of a call whose key was claimed earlier in the same transaction
-- (an event push claims its key first and learns the count later).
UPDATE trigger_request SET satisfied = %(satisfied)s
WHERE tenant_id = %(tenant_id)s AND request_key = %(request_key)s;

-- name: set_request_satisfied_counting
-- set_request_satisfied for a push whose durable matches are counted by Postgres: the
-- satisfied count known to the caller plus the durable conditions the push's events
-- satisfied (their event ids are this push's own, so every such row is one it satisfied
-- earlier in this transaction). Sent before COMMIT without waiting for those counts.
UPDATE trigger_request
SET satisfied = %(satisfied)s + (SELECT count(*) FROM task_wait w
                                 WHERE w.task_id = ANY(%(task_ids)s::bigint[])
                                   AND w.dag_id IS NULL
                                   AND w.event_id = ANY(%(event_ids)s::bigint[]))
WHERE tenant_id = %(tenant_id)s AND request_key = %(request_key)s;
