-- Foreign keys where tables reference each other: a device belongs to a user, a token to a
-- device (and goes with it), an address to a user, a completed UIA stage to its session
-- (and goes with it). Each table is rebuilt (SQLite cannot add a constraint in place; the
-- same text serves PostgreSQL). Rows that referenced nothing are left behind: a token
-- without its device, say, could only ever have been a leftover.

CREATE TABLE devices_fk (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ip TEXT,
    last_seen_ts BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
INSERT INTO devices_fk (user_id, device_id, display_name, last_seen_ip, last_seen_ts, created_at)
    SELECT d.user_id, d.device_id, d.display_name, d.last_seen_ip, d.last_seen_ts, d.created_at
    FROM devices d WHERE EXISTS (SELECT 1 FROM users u WHERE u.user_id = d.user_id);
DROP TABLE devices;
ALTER TABLE devices_fk RENAME TO devices;

CREATE TABLE access_tokens_fk (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    refresh_token_hash TEXT,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
INSERT INTO access_tokens_fk (token_hash, user_id, device_id, created_at, expires_at, refresh_token_hash)
    SELECT t.token_hash, t.user_id, t.device_id, t.created_at, t.expires_at, t.refresh_token_hash
    FROM access_tokens t
    WHERE EXISTS (SELECT 1 FROM devices d WHERE d.user_id = t.user_id AND d.device_id = t.device_id);
DROP TABLE access_tokens;
ALTER TABLE access_tokens_fk RENAME TO access_tokens;
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE refresh_tokens_fk (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at BIGINT,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
INSERT INTO refresh_tokens_fk (token_hash, user_id, device_id, created_at, used_at)
    SELECT t.token_hash, t.user_id, t.device_id, t.created_at, t.used_at
    FROM refresh_tokens t
    WHERE EXISTS (SELECT 1 FROM devices d WHERE d.user_id = t.user_id AND d.device_id = t.device_id);
DROP TABLE refresh_tokens;
ALTER TABLE refresh_tokens_fk RENAME TO refresh_tokens;
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

CREATE TABLE user_threepids_fk (
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (user_id),
    validated_at BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
INSERT INTO user_threepids_fk (medium, address, user_id, validated_at, added_at)
    SELECT t.medium, t.address, t.user_id, t.validated_at, t.added_at
    FROM user_threepids t WHERE EXISTS (SELECT 1 FROM users u WHERE u.user_id = t.user_id);
DROP TABLE user_threepids;
ALTER TABLE user_threepids_fk RENAME TO user_threepids;
CREATE INDEX user_threepids_user ON user_threepids (user_id);

CREATE TABLE uia_stages_fk (
    session_id TEXT NOT NULL REFERENCES uia_sessions (session_id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    result TEXT NOT NULL,
    completed_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, stage)
);
INSERT INTO uia_stages_fk (session_id, stage, result, completed_at)
    SELECT s.session_id, s.stage, s.result, s.completed_at
    FROM uia_stages s WHERE EXISTS (SELECT 1 FROM uia_sessions u WHERE u.session_id = s.session_id);
DROP TABLE uia_stages;
ALTER TABLE uia_stages_fk RENAME TO uia_stages;
