-- OAuth 2.0: registered clients, authorization requests and their codes, browser sessions
-- of the sign-in pages, and which client a device's session belongs to.

-- A client as registered (its metadata as JSON). Identical metadata shares one client.
CREATE TABLE oauth_clients (
    client_id TEXT PRIMARY KEY,
    metadata TEXT NOT NULL,
    metadata_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- An authorization request while the user signs in (or signs up: `signup` holds the
-- account waiting for its addresses to be verified) and consents; then its code (stored
-- hashed), who approved it and when it was exchanged. A device authorization request
-- (RFC 8628) has a device code (hashed) the client polls with and a user code instead.
CREATE TABLE oauth_grants (
    grant_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    request TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    user_id TEXT REFERENCES users (user_id) ON DELETE CASCADE,
    password_hash TEXT,
    code_hash TEXT UNIQUE,
    code_expires_at BIGINT,
    exchanged_at BIGINT,
    denied_at BIGINT,
    signup TEXT,
    device_code_hash TEXT UNIQUE,
    user_code TEXT UNIQUE,
    polled_at BIGINT
);
CREATE INDEX oauth_grants_expiry ON oauth_grants (expires_at);

-- A browser signed in to the account pages (the cookie's hash). It lasts while the
-- password it was opened with is the account's.
CREATE TABLE browser_sessions (
    session_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX browser_sessions_user ON browser_sessions (user_id);

-- A password reset under way on the pages: the browser's cookie (hashed) names the
-- validation session its code goes to (none: no account has the address, which the page
-- does not tell).
CREATE TABLE password_resets (
    token_hash TEXT PRIMARY KEY,
    sid TEXT,
    client_secret TEXT NOT NULL,
    address TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Login tokens of the legacy SSO redirect (`m.login.token`), which the sign-in pages
-- hand to clients that prefer them (MSC3824): stored hashed, single-use, short-lived.
CREATE TABLE login_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

-- The OAuth client a device's session was granted to, and the scope granted (NULL: /login
-- or /register, whose sessions get the whole API, and the admin API for admins).
ALTER TABLE devices ADD COLUMN oauth_client_id TEXT;
ALTER TABLE devices ADD COLUMN oauth_scope TEXT;

-- A refresh token's successor: presented again before the successor was used, the old one
-- may replace it (an answer lost on the way); after, it was copied.
ALTER TABLE refresh_tokens ADD COLUMN successor_hash TEXT;
