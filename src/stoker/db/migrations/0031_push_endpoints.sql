-- HTTP push workers (README "HTTP push workers", docs/http-workers.md): endpoints the
-- engine POSTs attempts to. Each is a worker to the scheduler (a worker row with the same
-- external id, registered by the leader's push delivery); its secret signs the deliveries
-- and is AES-GCM ciphertext under the engine's webhook key, bound to external_id.
CREATE TABLE push_endpoint (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    external_id uuid NOT NULL UNIQUE,
    name        text NOT NULL,
    url         text NOT NULL,
    slots       integer NOT NULL CHECK (slots > 0),
    task_names  text[] NOT NULL,
    secret      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
