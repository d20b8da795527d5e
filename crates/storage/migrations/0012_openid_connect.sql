-- OpenID Connect's signing keys (Ed25519 seeds, base64): the newest signs ID tokens, the
-- ones still able to have signed a valid token are published.
CREATE TABLE oidc_keys (
    kid TEXT PRIMARY KEY,
    private_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The access tokens of OpenID Connect sign-ins that opened no Matrix session (they only
-- work at userinfo), stored hashed.
CREATE TABLE oidc_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oidc_tokens_user ON oidc_tokens (user_id);
CREATE INDEX oidc_tokens_expiry ON oidc_tokens (expires_at);
