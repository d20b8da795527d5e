//! The homeserver's ed25519 signing key: it signs unbind requests to identity servers
//! (`X-Matrix`) and is published at `/_matrix/key/v2/server` (`get_server_keys.rs`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ruma::CanonicalJsonObject;
use ruma::signatures::Ed25519KeyPair;
use vouch_core::SecretSource;
use vouch_core::secrets::{random_bytes, random_string};
use vouch_storage::{Db, StorageError};

/// The homeserver's signing key.
pub struct SigningKey {
    /// `ed25519:<version>`.
    pub key_id: String,
    pair: Ed25519KeyPair,
}

/// PKCS#8 v1 wrapping of a raw ed25519 seed (RFC 8410).
pub(crate) fn pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

impl SigningKey {
    /// Loads the key from the database, making one (from the injected randomness) on first
    /// start.
    pub async fn load(db: &Db, secrets: &dyn SecretSource, now: i64) -> Result<Self, String> {
        let (key_id, seed) = db
            .signing_key(
                || {
                    let seed: [u8; 32] = random_bytes(secrets);
                    let version = random_string(
                        secrets,
                        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
                        6,
                    );
                    (format!("ed25519:a_{version}"), STANDARD_NO_PAD.encode(seed))
                },
                now,
            )
            .await
            .map_err(|e: StorageError| e.to_string())?;
        let bytes = STANDARD_NO_PAD
            .decode(&seed)
            .map_err(|e| format!("stored signing key: {e}"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "stored signing key has the wrong length".to_owned())?;
        let version = key_id
            .strip_prefix("ed25519:")
            .unwrap_or(&key_id)
            .to_owned();
        let pair = Ed25519KeyPair::from_der(&pkcs8(&seed), version)
            .map_err(|e| format!("signing key: {e}"))?;
        Ok(Self { key_id, pair })
    }

    /// The public key, unpadded base64.
    pub fn public_key(&self) -> String {
        STANDARD_NO_PAD.encode(self.pair.public_key())
    }

    /// Signs `object` as `server_name`, adding its `signatures`.
    pub fn sign(&self, server_name: &str, object: &mut CanonicalJsonObject) -> Result<(), String> {
        ruma::signatures::sign_json(server_name, &self.pair, object).map_err(|e| e.to_string())
    }

    /// `object` in canonical JSON, signed by `server_name` with this key.
    pub fn signed(
        &self,
        server_name: &str,
        object: serde_json::Value,
    ) -> Result<CanonicalJsonObject, crate::error::ApiError> {
        let mut canonical: CanonicalJsonObject = serde_json::from_value(object)
            .map_err(|e| crate::error::ApiError::internal(format!("canonical JSON: {e}")))?;
        self.sign(server_name, &mut canonical)
            .map_err(crate::error::ApiError::internal)?;
        Ok(canonical)
    }
}
