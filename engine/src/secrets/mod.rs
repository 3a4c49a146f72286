//! Secrets encrypted with AES-256-GCM under the data directory's key.
//!
//! A stored value is `nonce(12) | ciphertext | tag(16)`, with the secret's id
//! and scope bound as associated data so a blob copied to another row does
//! not decrypt.

use std::path::Path;

use zeroize::Zeroizing;

use crate::store::{SecretRecord, Store};

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    // Implementer: one variant per failed operation. Messages name the key
    // and the fix, never the value. Required cases: invalid key name, key file
    // readable by others, key file of the wrong size, secret not found (with
    // "add it with `danube secret set KEY`"), blob that fails to decrypt
    // (corrupted or encrypted under another key), store errors.
}

/// Where a secret is visible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Global,
    Pipeline(String),
}

impl Scope {
    /// The text stored in the `scope` column: `global` or `pipeline:<name>`.
    pub fn as_db(&self) -> String {
        match self {
            Scope::Global => "global".to_owned(),
            Scope::Pipeline(name) => format!("pipeline:{name}"),
        }
    }
}

/// The data directory's encryption key.
pub struct Cipher {
    key: Zeroizing<[u8; 32]>,
}

impl Cipher {
    /// Loads the 32-byte key at `path`, creating it with mode 0600 from the
    /// OS random generator if it does not exist. Rejects a key file that group
    /// or others can read.
    pub fn load_or_create(path: &Path) -> Result<Cipher, SecretsError> {
        todo!("{path:?}")
    }

    pub fn encrypt(&self, id: &str, scope: &str, plaintext: &[u8]) -> Vec<u8> {
        todo!("{id} {scope} {} {}", plaintext.len(), self.key.len())
    }

    pub fn decrypt(
        &self,
        id: &str,
        scope: &str,
        key_name: &str,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        todo!("{id} {scope} {key_name} {}", blob.len())
    }
}

/// Checks a secret key name: 1 to 128 characters of `A-Z a-z 0-9 _`, not
/// starting with a digit.
pub fn validate_key(key: &str) -> Result<(), SecretsError> {
    todo!("{key}")
}

/// Secret management over the store, as the CLI uses it.
pub struct SecretVault {
    store: Store,
    cipher: Cipher,
}

/// A secret as listed: never the value.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SecretInfo {
    pub key: String,
    pub scope: String,
    pub updated_at: crate::model::UnixMillis,
}

impl SecretVault {
    pub fn new(store: Store, cipher: Cipher) -> SecretVault {
        SecretVault { store, cipher }
    }

    pub async fn set(&self, scope: &Scope, key: &str, value: &[u8]) -> Result<(), SecretsError> {
        todo!("{scope:?} {key} {} {:?}", value.len(), self.store)
    }

    pub async fn list(&self) -> Result<Vec<SecretInfo>, SecretsError> {
        todo!()
    }

    /// Returns whether the secret existed.
    pub async fn remove(&self, scope: &Scope, key: &str) -> Result<bool, SecretsError> {
        todo!("{scope:?} {key}")
    }

    /// Reads `key` for a job of `pipeline`: the pipeline's own secret if
    /// there is one, else the global one. Records a `secret.read` audit event
    /// with `actor`.
    pub async fn read_for_pipeline(
        &self,
        pipeline: &str,
        key: &str,
        actor: &str,
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        todo!("{pipeline} {key} {actor} {}", self.cipher.key.len())
    }

    fn _uses(&self, _record: &SecretRecord) {}
}
