-- Incoming webhooks: authenticated POSTs to /webhooks/<tenant>/<name> become user events.

-- A webhook of a tenant. The credential it checks (an HMAC secret, a Basic password or an
-- API key) is stored only encrypted (AES-GCM under the engine's webhook secret key,
-- bound to the webhook's external id); auth_options holds what is not secret (header,
-- algorithm, encoding, prefix, user name, replay tolerance).
CREATE TABLE webhook (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id            bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    external_id          uuid NOT NULL UNIQUE,
    name                 text NOT NULL,
    auth_kind            text NOT NULL
                         CHECK (auth_kind IN ('HMAC', 'STRIPE', 'GITHUB', 'SLACK', 'BASIC',
                                               'API_KEY')),
    auth_options         jsonb NOT NULL DEFAULT '{}',
    secret               bytea NOT NULL,
    event_key_expression text NOT NULL,
    scope_expression     text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- An event that came through a webhook keeps the request body as received, and which
-- webhook it came through (no foreign key: events outlive a deleted webhook).
ALTER TABLE user_event ADD COLUMN webhook_id bigint, ADD COLUMN body bytea;
