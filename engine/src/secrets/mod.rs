//! Secrets encrypted with AES-256-GCM under the data directory's key.
//!
//! A stored value is `nonce(12) | ciphertext | tag(16)`, with the secret's id
//! and scope bound as associated data so a blob copied to another row does
//! not decrypt.
//!
//! Plaintext values are only ever held in [`Zeroizing`] buffers, and no error
//! message or log line contains one. Key names are not secret and appear in
//! both.

mod cipher;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

pub use self::cipher::{Cipher, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::model::now_millis;
use crate::store::{SecretRecord, Store, StoreError};

/// Maximum size of one secret value. Certificates and kubeconfigs fit with
/// room to spare; anything larger belongs in an artifact or a mounted file.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Maximum length of a secret key name, in characters.
pub const MAX_KEY_LEN: usize = 128;

/// Audit action recorded for every secret value that a job reads.
pub const AUDIT_SECRET_READ: &str = "secret.read";

/// Audit action recorded for every secret value that the engine decrypts into
/// a job's cache ([`SecretVault::load_for_pipeline`]).
pub const AUDIT_SECRET_LOAD: &str = "secret.load";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "invalid secret key `{shown}`: {reason}; use 1 to {MAX_KEY_LEN} letters, digits and \
         underscores, not starting with a digit",
        shown = shown_key(.key)
    )]
    InvalidKey { key: String, reason: &'static str },

    /// The pipeline of a secret's scope is invalid; the message comes from
    /// [`danube_ui::checks::secret_pipeline`].
    #[error("{0}")]
    InvalidPipelineName(String),

    #[error(
        "secret `{key}` is {size} bytes, over the limit of {MAX_VALUE_BYTES} bytes; store large \
         files as artifacts or mount them instead"
    )]
    ValueTooLarge { key: String, size: usize },

    #[error("failed to read key file `{path}`", path = .path.display())]
    ReadKeyFile {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "key file `{path}` is not a regular file; move it aside so a new key can be created, or \
         restore the original key file",
        path = .path.display()
    )]
    KeyFileNotAFile { path: PathBuf },

    #[error(
        "key file `{path}` can be accessed by group or others (mode {mode:04o}); run `chmod 600 {path}`",
        path = .path.display()
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },

    #[error(
        "key file `{path}` is {size} bytes long, expected {KEY_LEN}; restore the original key \
         file (secrets encrypted under it cannot be read without it)",
        path = .path.display()
    )]
    KeyFileSize { path: PathBuf, size: u64 },

    #[error("failed to generate an encryption key from the OS random generator")]
    GenerateKey { source: rand::rand_core::OsError },

    #[error("failed to create key file `{path}`; check that its directory exists and is writable", path = .path.display())]
    CreateKeyFile {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "failed to decrypt secret `{key}`{in_scope}: the stored value is corrupted or was \
         encrypted under another key; store it again with `{set}`",
        in_scope = in_scope(.scope.as_ref()),
        set = set_command(.key, .scope.as_ref())
    )]
    DecryptSecret {
        key: String,
        /// `None` when the stored scope text is not a valid scope.
        scope: Option<Scope>,
    },

    #[error("{}", not_found_message(.key, .pipeline))]
    SecretNotFound {
        key: String,
        /// The pipeline of the job that asked; empty when it had none yet.
        pipeline: String,
    },

    #[error("failed to store secret `{key}`")]
    SaveSecret { key: String, source: StoreError },

    #[error("failed to load secret `{key}`")]
    LoadSecret { key: String, source: StoreError },

    #[error("failed to list secrets")]
    ListSecrets { source: StoreError },

    #[error(
        "the encryption key `{}` is missing but {stored} secret(s) are stored under it: restore \
         the key file from a backup, or remove those secrets with `danube secret rm KEY` (see \
         `danube secret list`), since they cannot be decrypted without it",
        path.display()
    )]
    KeyMissing { path: PathBuf, stored: usize },

    #[error("failed to remove secret `{key}`")]
    RemoveSecret { key: String, source: StoreError },

    #[error(
        "failed to record the read of secret `{key}` in the audit log; the value was not handed out"
    )]
    RecordRead { key: String, source: StoreError },
}

/// Shows at most 64 characters of a rejected key, escaped, so a long or
/// binary argument does not flood the terminal.
fn shown_key(key: &str) -> String {
    const SHOWN: usize = 64;
    let escaped: String = key
        .chars()
        .take(SHOWN)
        .flat_map(char::escape_debug)
        .collect();
    if key.chars().count() > SHOWN {
        format!("{escaped}…")
    } else {
        escaped
    }
}

fn not_found_message(key: &str, pipeline: &str) -> String {
    if pipeline.is_empty() {
        format!("secret `{key}` not found; add it with `danube secret set {key}`")
    } else {
        format!(
            "secret `{key}` not found for pipeline `{pipeline}` or globally; add it with \
             `danube secret set {key}` or `danube secret set {key} --pipeline {pipeline}`"
        )
    }
}

fn in_scope(scope: Option<&Scope>) -> String {
    match scope {
        Some(Scope::Pipeline(name)) => format!(" of pipeline `{name}`"),
        Some(Scope::Global) | None => String::new(),
    }
}

/// Builds the command that stores `key` again in `scope`.
fn set_command(key: &str, scope: Option<&Scope>) -> String {
    match scope {
        Some(Scope::Pipeline(name)) => format!("danube secret set {key} --pipeline {name}"),
        Some(Scope::Global) | None => format!("danube secret set {key}"),
    }
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

    /// Parses the text of the `scope` column; `None` for anything
    /// [`Scope::as_db`] does not produce.
    pub fn from_db(text: &str) -> Option<Scope> {
        match text {
            "global" => Some(Scope::Global),
            _ => match text.strip_prefix("pipeline:") {
                Some(name) if !name.is_empty() => Some(Scope::Pipeline(name.to_owned())),
                _ => None,
            },
        }
    }

    /// Checks the pipeline of a pipeline's scope with the check the web UI
    /// applies too: a valid pipeline name, since no other name can ever
    /// read the secret, and not a scope word such as `global`.
    ///
    /// # Errors
    ///
    /// [`SecretsError::InvalidPipelineName`] with the reason.
    pub fn validate(&self) -> Result<(), SecretsError> {
        match self {
            Scope::Pipeline(name) => {
                danube_ui::checks::secret_pipeline(name).map_err(SecretsError::InvalidPipelineName)
            }
            Scope::Global => Ok(()),
        }
    }
}

/// Checks a secret key name: 1 to 128 characters of `A-Z a-z 0-9 _`, not
/// starting with a digit.
pub fn validate_key(key: &str) -> Result<(), SecretsError> {
    let invalid = |reason| {
        Err(SecretsError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    let Some(first) = key.chars().next() else {
        return invalid("it is empty");
    };
    if key.chars().count() > MAX_KEY_LEN {
        return invalid("it is too long");
    }
    if first.is_ascii_digit() {
        return invalid("it starts with a digit");
    }
    if !key
        .chars()
        .all(|character| character.is_ascii_alphanumeric() || character == '_')
    {
        return invalid("it contains a character other than A-Z, a-z, 0-9 and _");
    }
    Ok(())
}

/// Secret management over the store, as the CLI uses it.
#[derive(Clone, Debug)]
pub struct SecretVault {
    store: Store,
    /// The key, or why there is none: a missing key file while secrets are
    /// stored. Listing and removing secrets work either way.
    cipher: Result<Cipher, MissingKey>,
}

#[derive(Clone, Debug)]
struct MissingKey {
    path: PathBuf,
    stored: usize,
}

/// A secret as listed: never the value.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SecretInfo {
    pub key: String,
    pub scope: String,
    pub updated_at: crate::model::UnixMillis,
}

impl SecretVault {
    /// Loads the key at `key_path` and returns a vault over `store`. Creates
    /// the key only while no secret is stored: a new key beside secrets
    /// encrypted under a lost one would silently make them unreadable. With
    /// the key missing and secrets stored, the vault still lists and removes
    /// secrets, and every read or write fails with
    /// [`SecretsError::KeyMissing`].
    pub async fn open(store: Store, key_path: &Path) -> Result<SecretVault, SecretsError> {
        if !key_path.exists() {
            let stored = store
                .list_secrets()
                .await
                .map_err(|source| SecretsError::ListSecrets { source })?
                .len();
            if stored > 0 {
                tracing::warn!(path = %key_path.display(), stored, "the encryption key is missing");
                let missing = MissingKey {
                    path: key_path.to_owned(),
                    stored,
                };
                return Ok(SecretVault {
                    store,
                    cipher: Err(missing),
                });
            }
        }
        let cipher = Cipher::load_or_create(key_path)?;
        Ok(SecretVault::new(store, cipher))
    }

    pub fn new(store: Store, cipher: Cipher) -> SecretVault {
        SecretVault {
            store,
            cipher: Ok(cipher),
        }
    }

    fn cipher(&self) -> Result<&Cipher, SecretsError> {
        self.cipher
            .as_ref()
            .map_err(|missing| SecretsError::KeyMissing {
                path: missing.path.clone(),
                stored: missing.stored,
            })
    }

    /// Stores `value` as `key` in `scope`, replacing any value there.
    ///
    /// A new secret gets a new random id. A replaced one keeps its id and
    /// `created_at`, and its new value is encrypted under that id.
    ///
    /// # Errors
    ///
    /// [`SecretsError::InvalidKey`], [`SecretsError::InvalidPipelineName`] and
    /// [`SecretsError::ValueTooLarge`] before anything is stored.
    pub async fn set(&self, scope: &Scope, key: &str, value: &[u8]) -> Result<(), SecretsError> {
        validate_key(key)?;
        scope.validate()?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(SecretsError::ValueTooLarge {
                key: key.to_owned(),
                size: value.len(),
            });
        }

        let scope_text = scope.as_db();
        let existing = self
            .store
            .get_secret(&scope_text, key)
            .await
            .map_err(|source| SecretsError::LoadSecret {
                key: key.to_owned(),
                source,
            })?;
        let now = now_millis();
        let (id, created_at) = match existing {
            Some(record) => (record.id, record.created_at),
            None => (hex::encode(rand::random::<[u8; 16]>()), now),
        };

        let blob = self.cipher()?.encrypt(&id, &scope_text, value);
        let record = SecretRecord {
            id,
            scope: scope_text,
            key: key.to_owned(),
            blob,
            created_at,
            updated_at: now,
        };
        self.store
            .put_secret(&record)
            .await
            .map_err(|source| SecretsError::SaveSecret {
                key: key.to_owned(),
                source,
            })?;
        tracing::info!(key, scope = %record.scope, "secret stored");
        Ok(())
    }

    /// Lists every secret, ordered by scope then key, without values.
    pub async fn list(&self) -> Result<Vec<SecretInfo>, SecretsError> {
        let records = self
            .store
            .list_secrets()
            .await
            .map_err(|source| SecretsError::ListSecrets { source })?;
        Ok(records
            .into_iter()
            .map(|record| SecretInfo {
                key: record.key,
                scope: record.scope,
                updated_at: record.updated_at,
            })
            .collect())
    }

    /// Deletes `key` from `scope`. Returns whether the secret existed. The
    /// scope is not checked, so that a secret stored before a check was
    /// added can still be removed.
    pub async fn remove(&self, scope: &Scope, key: &str) -> Result<bool, SecretsError> {
        validate_key(key)?;

        let scope_text = scope.as_db();
        let existed = self
            .store
            .delete_secret(&scope_text, key)
            .await
            .map_err(|source| SecretsError::RemoveSecret {
                key: key.to_owned(),
                source,
            })?;
        if existed {
            tracing::info!(key, scope = %scope_text, "secret removed");
        }
        Ok(existed)
    }

    /// Reads `key` for a job of `pipeline`: the pipeline's own secret if
    /// there is one, else the global one. Records a `secret.read` audit event
    /// with `actor`.
    ///
    /// An empty `pipeline` (a job whose pipeline is not declared yet) reads
    /// global secrets only. The audit event names the key as its subject and
    /// is recorded before the value is returned. Failed reads record nothing.
    ///
    /// # Errors
    ///
    /// [`SecretsError::SecretNotFound`] when neither scope has the key,
    /// [`SecretsError::DecryptSecret`] when the stored blob does not decrypt,
    /// and [`SecretsError::RecordRead`] when the audit event cannot be
    /// written, in which case the value is not returned.
    pub async fn read_for_pipeline(
        &self,
        pipeline: &str,
        key: &str,
        actor: &str,
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        validate_key(key)?;

        let mut scopes = Vec::with_capacity(2);
        if !pipeline.is_empty() {
            scopes.push(Scope::Pipeline(pipeline.to_owned()).as_db());
        }
        scopes.push(Scope::Global.as_db());

        for scope in &scopes {
            let record = self.store.get_secret(scope, key).await.map_err(|source| {
                SecretsError::LoadSecret {
                    key: key.to_owned(),
                    source,
                }
            })?;
            let Some(record) = record else {
                continue;
            };

            let value = self
                .cipher()?
                .decrypt(&record.id, &record.scope, key, &record.blob)?;
            self.store
                .record_audit_event(actor, AUDIT_SECRET_READ, key)
                .await
                .map_err(|source| SecretsError::RecordRead {
                    key: key.to_owned(),
                    source,
                })?;
            tracing::debug!(key, scope = %record.scope, actor, "secret read");
            return Ok(value);
        }

        Err(SecretsError::SecretNotFound {
            key: key.to_owned(),
            pipeline: pipeline.to_owned(),
        })
    }

    /// Decrypts every secret visible to `pipeline`, for a job's cache and the
    /// scrubbing of its logs. A pipeline secret hides a global one with the
    /// same key. Records a `secret.load` audit event per value with `actor`.
    ///
    /// Returns `(key, value)` pairs ordered by key. An empty `pipeline`
    /// loads global secrets only.
    ///
    /// # Errors
    ///
    /// As [`SecretVault::read_for_pipeline`]. One blob that does not decrypt
    /// fails the whole load, and nothing is returned.
    pub async fn load_for_pipeline(
        &self,
        pipeline: &str,
        actor: &str,
    ) -> Result<Vec<(String, Zeroizing<Vec<u8>>)>, SecretsError> {
        let records = self
            .store
            .list_secrets()
            .await
            .map_err(|source| SecretsError::ListSecrets { source })?;

        let global = Scope::Global.as_db();
        let own = (!pipeline.is_empty()).then(|| Scope::Pipeline(pipeline.to_owned()).as_db());
        let mut visible: std::collections::BTreeMap<String, SecretRecord> =
            std::collections::BTreeMap::new();
        for record in records {
            if own.as_deref() == Some(record.scope.as_str()) {
                visible.insert(record.key.clone(), record);
            } else if record.scope == global {
                visible.entry(record.key.clone()).or_insert(record);
            }
        }

        let mut values = Vec::with_capacity(visible.len());
        for (key, record) in visible {
            let value = self
                .cipher()?
                .decrypt(&record.id, &record.scope, &key, &record.blob)?;
            self.store
                .record_audit_event(actor, AUDIT_SECRET_LOAD, &key)
                .await
                .map_err(|source| SecretsError::RecordRead {
                    key: key.clone(),
                    source,
                })?;
            values.push((key, value));
        }
        tracing::debug!(pipeline, actor, count = values.len(), "secrets loaded");
        Ok(values)
    }
}
