-- Vouch's foundation schema. One portable SQL text for SQLite and PostgreSQL:
-- TEXT identifiers, BIGINT millisecond timestamps, BIGINT 0/1 flags (sqlx's Any driver
-- cannot decode SQLite booleans), no engine-specific types.

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    localpart TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    displayname TEXT,
    avatar_url TEXT,
    is_guest BIGINT NOT NULL DEFAULT 0,
    is_admin BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    deactivated_at BIGINT
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ip TEXT,
    last_seen_ts BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored only as SHA-256 hex of the token.
CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    refresh_token_hash TEXT
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    user_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX uia_sessions_expires ON uia_sessions (expires_at);

-- One row per completed stage; the primary key makes completing a stage idempotent and
-- race-free. `result` is JSON (e.g. which registration token was used).
CREATE TABLE uia_stages (
    session_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    result TEXT NOT NULL,
    completed_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, stage)
);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    pending BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0,
    expiry_time BIGINT,
    created_at BIGINT NOT NULL
);

-- Addresses are canonical (see vouch-core) and unique per medium.
CREATE TABLE user_threepids (
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    user_id TEXT NOT NULL,
    validated_at BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_user ON user_threepids (user_id);
