-- NOTIFY between engine replicas (see stoker/engine/notify.py).

-- name: notify
-- Tells the other engine replicas something changed (a hint: polling covers a lost one).
SELECT pg_notify(%(channel)s, %(payload)s);

-- name: notify_many
SELECT pg_notify(n.channel, n.payload)
FROM unnest(%(channels)s::text[], %(payloads)s::text[]) AS n(channel, payload);
