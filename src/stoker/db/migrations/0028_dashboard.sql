-- Dashboard users, their sessions and one-time sign-in links (docs/dashboard.md).

-- Dashboard (docs/dashboard.md): people who sign in to the web UI, each in one tenant with a
-- role (viewer: reads; operator: also cancels and replays; admin: also manages users).
-- password_hash is argon2id; NULL for a user who signs in only through one-time links.
CREATE TABLE dashboard_user (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    email         text NOT NULL UNIQUE,
    role          text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dashboard_user_tenant_idx ON dashboard_user (tenant_id, email);

-- A signed-in browser. Only the SHA-256 of the session cookie is stored; csrf_token is sent
-- back with every action of the session.
CREATE TABLE dashboard_session (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    user_id     bigint NOT NULL REFERENCES dashboard_user (id) ON DELETE CASCADE,
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX dashboard_session_user_idx ON dashboard_session (user_id);
CREATE INDEX dashboard_session_expires_idx ON dashboard_session (expires_at);

-- One-time sign-in links (`stoker lite` prints one): the SHA-256 of the link's token, used
-- once, before expires_at.
CREATE TABLE dashboard_login_link (
    token_hash bytea PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES dashboard_user (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX dashboard_login_link_user_idx ON dashboard_login_link (user_id);
