-- Rate limits (sliding windows: the limit holds in every interval of its duration; see
-- docs/scheduler.md and stoker/engine/scheduler/rate_limits.py).

-- name: put_rate_limit
-- Creates or updates a static limit, keeping its recent starts (they count against the new
-- limit too); runs deferred by it are made ready now, so a raised limit takes effect at once.
WITH put AS (
    INSERT INTO rate_limit (tenant_id, key, limit_value, window_ms, dynamic)
    VALUES (%(tenant_id)s, %(key)s, %(limit_value)s, %(window_ms)s, false)
    ON CONFLICT (tenant_id, key) DO UPDATE
    SET limit_value = excluded.limit_value, window_ms = excluded.window_ms, dynamic = false,
        updated_at = now()
)
UPDATE queue_item
SET available_at = now()
WHERE tenant_id = %(tenant_id)s AND available_at > now()
  AND rate_limits @> jsonb_build_array(jsonb_build_object('key', %(key)s::text));

-- name: static_rate_limit_keys
SELECT key FROM rate_limit WHERE tenant_id = %(tenant_id)s AND NOT dynamic;

-- name: ensure_dynamic_rate_limits
-- Creates the dynamic limits a batch of runs names (existing ones keep their state).
INSERT INTO rate_limit (tenant_id, key, limit_value, window_ms, dynamic)
SELECT %(tenant_id)s, d.key, d.limit_value, d.window_ms, true
FROM unnest(%(keys)s::text[], %(limits)s::int[], %(windows_ms)s::bigint[])
     AS d(key, limit_value, window_ms)
ON CONFLICT (tenant_id, key) DO UPDATE
SET limit_value = excluded.limit_value, window_ms = excluded.window_ms
WHERE rate_limit.dynamic;

-- name: lock_rate_limits
-- Locks the named limits (in key order, so replicas queue up instead of deadlocking) and
-- returns their recent starts. `now` is read once the locks are held; the round starts its
-- runs at the latest of it and every locked limit's clock, so a limit's clock never goes
-- back even when this transaction began before the one that last consumed the limit.
WITH locked AS MATERIALIZED (
    SELECT key, limit_value, window_ms, recent, clock
    FROM rate_limit
    WHERE tenant_id = %(tenant_id)s AND key = ANY(%(keys)s::text[])
    ORDER BY key
    FOR UPDATE
)
SELECT key, limit_value, window_ms, recent::text AS recent, clock, clock_timestamp() AS now
FROM locked;

-- name: consume_rate_limits
-- Stores the limits' logs after a round started runs on them, with the round's instant.
UPDATE rate_limit r
SET recent = c.recent::jsonb, clock = %(clock)s
FROM unnest(%(keys)s::text[], %(recents)s::text[]) AS c(key, recent)
WHERE r.tenant_id = %(tenant_id)s AND r.key = c.key;
