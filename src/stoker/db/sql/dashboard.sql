-- The dashboard's users, sessions and sign-in links (docs/dashboard.md). Emails are stored
-- lower-cased by the caller.

-- name: dash_create_user
-- A new user; no row when the email is taken.
INSERT INTO dashboard_user (tenant_id, email, role, password_hash)
VALUES (%(tenant_id)s, %(email)s, %(role)s, %(password_hash)s)
ON CONFLICT (email) DO NOTHING
RETURNING id;

-- name: dash_ensure_user
-- The user of that email, created with the role when missing (the local user of lite).
INSERT INTO dashboard_user (tenant_id, email, role)
VALUES (%(tenant_id)s, %(email)s, %(role)s)
ON CONFLICT (email) DO UPDATE SET email = excluded.email
RETURNING id;

-- name: dash_list_users
-- Users of one tenant (every tenant when tenant_id is NULL), by tenant and email.
SELECT u.email, u.role, t.name AS tenant_name, u.created_at,
       u.password_hash IS NOT NULL AS has_password
FROM dashboard_user u JOIN tenant t ON t.id = u.tenant_id
WHERE (%(tenant_id)s::bigint IS NULL OR u.tenant_id = %(tenant_id)s)
ORDER BY t.name, u.email;

-- name: dash_delete_user
-- Deletes a user with its sessions and links; no row when there was none.
DELETE FROM dashboard_user WHERE email = %(email)s RETURNING id;

-- name: dash_set_password
UPDATE dashboard_user SET password_hash = %(password_hash)s
WHERE email = %(email)s
RETURNING id;

-- name: dash_find_user
-- The user signing in with this email, with the hash to verify the password against.
SELECT u.id, u.password_hash
FROM dashboard_user u
WHERE u.email = %(email)s;

-- name: dash_create_session
-- Opens a session, and drops the user's sessions that have expired.
WITH gone AS (
    DELETE FROM dashboard_session
    WHERE user_id = %(user_id)s AND expires_at <= now()
)
INSERT INTO dashboard_session (token_hash, user_id, csrf_token, expires_at)
VALUES (%(token_hash)s, %(user_id)s, %(csrf_token)s, now() + make_interval(secs => %(ttl_s)s))
RETURNING id;

-- name: dash_find_session
-- The signed-in user of an unexpired session, with their tenant and the session's CSRF token.
SELECT u.id AS user_id, u.email, u.role, u.tenant_id, t.name AS tenant_name, s.csrf_token
FROM dashboard_session s
JOIN dashboard_user u ON u.id = s.user_id
JOIN tenant t ON t.id = u.tenant_id
WHERE s.token_hash = %(token_hash)s AND s.expires_at > now();

-- name: dash_delete_session
DELETE FROM dashboard_session WHERE token_hash = %(token_hash)s;

-- name: dash_create_login_link
INSERT INTO dashboard_login_link (token_hash, user_id, expires_at)
VALUES (%(token_hash)s, %(user_id)s, now() + make_interval(secs => %(ttl_s)s));

-- name: dash_use_login_link
-- Spends a one-time link: its user, once, before it expires.
UPDATE dashboard_login_link SET used_at = now()
WHERE token_hash = %(token_hash)s AND used_at IS NULL AND expires_at > now()
RETURNING user_id;

-- name: dash_set_role
-- Changes the role of one of the tenant's users; no row when the tenant has no such user.
UPDATE dashboard_user SET role = %(role)s
WHERE tenant_id = %(tenant_id)s AND email = %(email)s
RETURNING id;

-- name: dash_user_password_hash
-- The password hash of a signed-in user (to check their current password).
SELECT password_hash FROM dashboard_user WHERE id = %(user_id)s;

-- name: dash_tenant_by_name
-- The tenant that users signing in through OpenID Connect for the first time join.
SELECT id FROM tenant WHERE name = %(name)s;
