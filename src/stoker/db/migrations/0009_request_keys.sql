-- Idempotent triggers: the request key of every keyed trigger call (task runs, workflow
-- runs, child spawns, event pushes), written in the same transaction as what the call
-- created, with the ids it answered. A retried call finds its key here and gets the same
-- ids back (docs/idempotency.md). Rows older than request_key_ttl_s are deleted by the
-- leader's retention loop.

CREATE TABLE trigger_request (
    tenant_id   bigint NOT NULL,
    request_key text NOT NULL,
    -- Which call made it ('trigger', 'workflows', 'spawn', 'events'), and a digest of its
    -- content, so that a reused key with other content is refused.
    kind        text NOT NULL,
    fingerprint bytea NOT NULL,
    -- The ids the call answered, 16 bytes each, in order (cheaper to pass and store
    -- than uuid[] for a bulk call of 1,000; stored uncompressed, as random ids do not
    -- compress).
    run_ids     bytea NOT NULL,
    -- PushEvents: how many waiting conditions the events satisfied.
    satisfied   integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, request_key)
);
ALTER TABLE trigger_request ALTER COLUMN run_ids SET STORAGE EXTERNAL;

CREATE INDEX trigger_request_created_idx ON trigger_request (created_at);
