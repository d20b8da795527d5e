-- The homeserver's signing keys (ed25519), generated on first start; the seed is the private
-- key, so the database is as sensitive as a key file would be.
CREATE TABLE server_signing_keys (
    key_id TEXT PRIMARY KEY,
    seed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Addresses bound (published) on identity servers through /account/3pid/bind, so they can
-- be unbound when removed or when the account is deactivated.
CREATE TABLE threepid_bindings (
    user_id TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    id_server TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (medium, address, id_server)
);
CREATE INDEX threepid_bindings_user ON threepid_bindings (user_id);

-- A validation session run by an identity server (delegated): the base URL it lives on.
ALTER TABLE validation_sessions ADD COLUMN delegated_to TEXT;
