-- 3PID validation sessions and the outgoing-mail queue.

-- One row per (medium, address, client_secret, purpose): the requestToken session.
-- token_hash is SHA-256 hex of the current link token; decoys (inhibit_3pid_errors) have
-- burned_at set from the start and never validate.
CREATE TABLE validation_sessions (
    sid TEXT PRIMARY KEY,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    purpose TEXT NOT NULL,
    token_hash TEXT,
    token_expires_at BIGINT NOT NULL,
    send_attempt BIGINT NOT NULL,
    next_link TEXT,
    validated_at BIGINT,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    burned_at BIGINT,
    claimed_by TEXT,
    consumed_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX validation_sessions_key ON validation_sessions (medium, address, client_secret, purpose);
CREATE INDEX validation_sessions_updated ON validation_sessions (updated_at);

-- The outbox: a mail accepted for sending is a row here, written in the same transaction as
-- the session it belongs to. next_attempt_at NULL means held (released later, e.g. after the
-- registration's token stage); sent_at / failed_at end a row's life.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    sid TEXT,
    envelope_from TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    locked_until BIGINT,
    last_error TEXT,
    sent_at BIGINT,
    failed_at BIGINT
);
CREATE INDEX outbox_due ON outbox (sent_at, failed_at, next_attempt_at);
CREATE INDEX outbox_recipient ON outbox (recipient, created_at);
CREATE INDEX outbox_sid ON outbox (sid, created_at);
