-- User events (app.events.push); their matching against waits is in conditions.sql.

-- name: insert_user_events
INSERT INTO user_event (tenant_id, key, payload, additional_metadata, scope)
SELECT %(tenant_id)s, x.key, x.payload, x.metadata, nullif(x.scope, '')
FROM unnest(%(keys)s::text[], %(payloads)s::jsonb[], %(metadata)s::jsonb[], %(scopes)s::text[])
     AS x(key, payload, metadata, scope)
RETURNING external_id, created_at;
