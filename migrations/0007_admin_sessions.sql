-- Sessions of the admin dashboard (/admin): a browser that logged in with an admin key
-- holds a random token in a cookie; only its SHA-256 is stored, never the key. A session
-- lives until `expires_at` or logout, and dies with its key (revoked keys are refused on
-- every request by the join with `api_keys`).
CREATE TABLE admin_sessions (
    token_hash bytea PRIMARY KEY,
    key_id     uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);
