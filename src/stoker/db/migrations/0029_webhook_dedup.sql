-- Webhook deliveries deduplicated (README "Webhooks"): a webhook's dedup_expression names
-- a request's delivery (Stripe's event id, GitHub's X-GitHub-Delivery); a delivery seen
-- again within the window answers with the first one's event and stores nothing. The
-- delivery is recorded as a request key kept until keep_until (longer than the request
-- key TTL); the retention loop prunes the two kinds of keys by their own index.

ALTER TABLE webhook ADD COLUMN dedup_expression text;

ALTER TABLE trigger_request ADD COLUMN keep_until timestamptz;
DROP INDEX trigger_request_created_idx;
CREATE INDEX trigger_request_created_idx ON trigger_request (created_at)
    WHERE keep_until IS NULL;
CREATE INDEX trigger_request_keep_idx ON trigger_request (keep_until)
    WHERE keep_until IS NOT NULL;

-- Existing Stripe and GitHub webhooks get the presets a new one gets (their deliveries
-- carry the id on every retry).
UPDATE webhook SET dedup_expression = 'has(input.id) ? input.id : null'
WHERE auth_kind = 'STRIPE';
UPDATE webhook
SET dedup_expression = '''x-github-delivery'' in headers ? headers[''x-github-delivery''] : null'
WHERE auth_kind = 'GITHUB';
