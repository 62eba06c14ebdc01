-- Rate limits as an operator sees and manages them (engine/ratelimits).

-- name: admin_list_rate_limits
-- The tenant's limits (or the one named by key), with their recent starts and the clock
-- they are read at, so the units used in the current window can be told.
SELECT key, limit_value, window_ms, dynamic, updated_at, recent::text AS recent, clock,
       clock_timestamp() AS now
FROM rate_limit
WHERE tenant_id = %(tenant_id)s AND (%(key)s::text IS NULL OR key = %(key)s::text)
ORDER BY key;

-- name: admin_delete_rate_limit
-- Deletes a limit; returns how many queued runs still name it (they wait until a limit of
-- that key exists again).
WITH gone AS (
    DELETE FROM rate_limit WHERE tenant_id = %(tenant_id)s AND key = %(key)s
    RETURNING key
)
SELECT g.key,
       (SELECT count(*) FROM queue_item q
        WHERE q.tenant_id = %(tenant_id)s
          AND q.rate_limits @> jsonb_build_array(jsonb_build_object('key', %(key)s::text)))
       AS waiting_runs
FROM gone g;

-- name: admin_reset_rate_limit
-- Empties a limit's window (the starts it counts), keeping its clock (which never goes
-- back); the queued runs it deferred are made ready now.
WITH reset AS (
    UPDATE rate_limit SET recent = '[]', updated_at = now()
    WHERE tenant_id = %(tenant_id)s AND key = %(key)s
    RETURNING key
),
ready AS (
    UPDATE queue_item q
    SET available_at = now()
    FROM reset
    WHERE q.tenant_id = %(tenant_id)s AND q.available_at > now()
      AND q.rate_limits @> jsonb_build_array(jsonb_build_object('key', reset.key))
    RETURNING q.id
)
SELECT r.key, (SELECT count(*) FROM ready) AS ready_runs FROM reset r;
