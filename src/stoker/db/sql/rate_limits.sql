-- Rate limits (fixed windows aligned to the epoch; see docs/scheduler.md).

-- name: put_rate_limit
-- Creates or updates a static limit; runs deferred until its window's end are made ready
-- now, so a raised limit takes effect at once.
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
-- Locks the named limits (in key order) and rolls each to its current window.
WITH locked AS (
    SELECT key FROM rate_limit
    WHERE tenant_id = %(tenant_id)s AND key = ANY(%(keys)s::text[])
    ORDER BY key
    FOR UPDATE
)
UPDATE rate_limit r
SET window_start = to_timestamp(
        floor(extract(epoch FROM now()) * 1000 / r.window_ms) * r.window_ms / 1000.0),
    used = CASE WHEN r.window_start + r.window_ms * interval '1 millisecond' <= now()
                THEN 0 ELSE r.used END
FROM locked
WHERE r.tenant_id = %(tenant_id)s AND r.key = locked.key
RETURNING r.key, r.limit_value, r.used, r.window_ms,
          r.window_start + r.window_ms * interval '1 millisecond' AS window_end;

-- name: consume_rate_limits
UPDATE rate_limit r
SET used = r.used + c.units
FROM unnest(%(keys)s::text[], %(units)s::int[]) AS c(key, units)
WHERE r.tenant_id = %(tenant_id)s AND r.key = c.key;
