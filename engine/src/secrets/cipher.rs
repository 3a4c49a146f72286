//! The encryption key file and AES-256-GCM with the secret's id and scope as
//! associated data.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use rand::TryRngCore;
use zeroize::Zeroizing;

use super::{Scope, SecretsError};

/// Length of the key file in bytes: one AES-256 key.
pub const KEY_LEN: usize = 32;

/// Length of the random nonce at the start of every blob.
pub const NONCE_LEN: usize = 12;

/// Length of the GCM tag at the end of every blob.
pub const TAG_LEN: usize = 16;

/// Prefix of the associated data, so a blob made for another purpose under
/// the same key never decrypts as a secret.
const ASSOCIATED_DATA_DOMAIN: &[u8] = b"danube.secret.v1\0";

/// Number of load-then-create rounds. A round ends without a key only when
/// another process created the file first, or removed it in between.
const CREATE_ATTEMPTS: usize = 3;

/// The data directory's encryption key.
#[derive(Clone)]
pub struct Cipher {
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cipher").finish_non_exhaustive()
    }
}

impl Cipher {
    /// Loads the 32-byte key at `path`, creating it with mode 0600 from the
    /// OS random generator if it does not exist. Rejects a key file that group
    /// or others can read.
    ///
    /// A new key is written to a temporary file in the same directory, synced,
    /// and then hard-linked to `path`. Linking fails if `path` exists, so two
    /// processes that start at once end up with the same key, never with one
    /// key each.
    ///
    /// # Errors
    ///
    /// [`SecretsError::KeyFilePermissions`] when group or others have any
    /// permission on the file, [`SecretsError::KeyFileSize`] when it is not
    /// 32 bytes long, [`SecretsError::KeyFileNotAFile`] for a directory or a
    /// device, and I/O errors when reading or creating it.
    pub fn load_or_create(path: &Path) -> Result<Cipher, SecretsError> {
        for _ in 0..CREATE_ATTEMPTS {
            if let Some(cipher) = load(path)? {
                return Ok(cipher);
            }
            if let Some(cipher) = create(path)? {
                tracing::info!(path = %path.display(), "created a new encryption key");
                return Ok(cipher);
            }
        }
        Err(SecretsError::CreateKeyFile {
            path: path.to_path_buf(),
            source: io::Error::other("the key file kept disappearing while it was created"),
        })
    }

    /// Builds a cipher from raw key bytes, for tests and key rotation.
    pub fn from_key(key: Zeroizing<[u8; KEY_LEN]>) -> Cipher {
        Cipher { key }
    }

    /// Encrypts `plaintext` for the secret row `id` in `scope` (the scope's
    /// `as_db` text) and returns `nonce | ciphertext | tag`.
    ///
    /// Every call draws a fresh random nonce, so encrypting the same value
    /// twice gives different blobs.
    ///
    /// # Panics
    ///
    /// When `plaintext` is longer than AES-GCM allows (about 64 GiB), or when
    /// the OS random generator fails. [`SecretVault`](super::SecretVault)
    /// limits values to [`MAX_VALUE_BYTES`](super::MAX_VALUE_BYTES).
    pub fn encrypt(&self, id: &str, scope: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);

        // The plaintext is copied straight into the output and encrypted
        // there, so no intermediate buffer contains it.
        let mut blob = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(plaintext);
        let tag = self
            .aes()
            .encrypt_in_place_detached(&nonce, &associated_data(id, scope), &mut blob[NONCE_LEN..])
            .expect("AES-GCM rejects only plaintexts over 64 GiB, far above MAX_VALUE_BYTES");
        blob.extend_from_slice(&tag);
        blob
    }

    /// Decrypts a blob made by [`Cipher::encrypt`] for the same `id` and
    /// `scope`. `key_name` is the secret's key, used only in the error.
    ///
    /// # Errors
    ///
    /// [`SecretsError::DecryptSecret`] when the blob is truncated or altered,
    /// was encrypted under another key, or belongs to another id or scope.
    /// The error does not distinguish these cases, because AES-GCM cannot.
    pub fn decrypt(
        &self,
        id: &str,
        scope: &str,
        key_name: &str,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        let decrypt_failed = || SecretsError::DecryptSecret {
            key: key_name.to_owned(),
            scope: Scope::from_db(scope),
        };
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(decrypt_failed());
        }
        let (nonce, rest) = blob.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);

        // Decrypted in place in the buffer that is returned, so the plaintext
        // only ever exists in memory that is zeroed on drop.
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        self.aes()
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                &associated_data(id, scope),
                &mut plaintext,
                Tag::from_slice(tag),
            )
            .map_err(|_| decrypt_failed())?;
        Ok(plaintext)
    }

    fn aes(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&*self.key))
    }
}

/// Encodes `(id, scope)` as associated data. Each part is prefixed with its
/// length, so `("a", "bc")` and `("ab", "c")` give different bytes.
fn associated_data(id: &str, scope: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(ASSOCIATED_DATA_DOMAIN.len() + 16 + id.len() + scope.len());
    data.extend_from_slice(ASSOCIATED_DATA_DOMAIN);
    for part in [id, scope] {
        let len = u64::try_from(part.len()).expect("a string length fits in u64");
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(part.as_bytes());
    }
    data
}

/// Reads the key at `path`; `None` when there is no file.
fn load(path: &Path) -> Result<Option<Cipher>, SecretsError> {
    let read_failed = |source| SecretsError::ReadKeyFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(read_failed(error)),
    };

    // Checked on the open file, so the checks and the read see the same file
    // even if the path is replaced in between.
    let metadata = file.metadata().map_err(read_failed)?;
    if !metadata.is_file() {
        return Err(SecretsError::KeyFileNotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretsError::KeyFilePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if metadata.len() != KEY_LEN as u64 {
        return Err(SecretsError::KeyFileSize {
            path: path.to_path_buf(),
            size: metadata.len(),
        });
    }

    let mut key = Zeroizing::new([0_u8; KEY_LEN]);
    file.read_exact(&mut *key).map_err(read_failed)?;
    Ok(Some(Cipher { key }))
}

/// Creates a key file at `path`; `None` when another process created one
/// first, which the caller then loads.
fn create(path: &Path) -> Result<Option<Cipher>, SecretsError> {
    let create_failed = |source| SecretsError::CreateKeyFile {
        path: path.to_path_buf(),
        source,
    };
    let mut key = Zeroizing::new([0_u8; KEY_LEN]);
    rand::rngs::OsRng
        .try_fill_bytes(&mut *key)
        .map_err(|source| SecretsError::GenerateKey { source })?;

    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let temporary = temporary_path(dir, path);
    write_new_file(&temporary, &*key).map_err(create_failed)?;

    let linked = std::fs::hard_link(&temporary, path);
    remove_temporary(&temporary);
    match linked {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
        Err(error) => return Err(create_failed(error)),
    }

    // The directory entry must reach the disk too, or a crash could lose the
    // key after secrets were encrypted with it.
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(create_failed)?;
    Ok(Some(Cipher { key }))
}

fn temporary_path(dir: &Path, path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "key".into(), |name| name.to_string_lossy());
    dir.join(format!(
        ".{name}.tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ))
}

fn write_new_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if written.is_err() {
        remove_temporary(path);
    }
    written
}

/// Removes a temporary key file. A failure is logged, not returned, because
/// the key itself is already in place or the caller reports the first error.
fn remove_temporary(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        tracing::warn!(
            path = %path.display(),
            error = %error,
            "failed to remove a temporary copy of the encryption key; delete it by hand"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn test_cipher(byte: u8) -> Cipher {
        Cipher::from_key(Zeroizing::new([byte; KEY_LEN]))
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn encrypt_then_decrypt_round_trips() {
        let cipher = test_cipher(1);

        let blob = cipher.encrypt("id-1", "global", b"hunter2");
        let plaintext = cipher.decrypt("id-1", "global", "TOKEN", &blob).unwrap();

        assert_eq!(plaintext.as_slice(), b"hunter2");
        assert_eq!(blob.len(), NONCE_LEN + b"hunter2".len() + TAG_LEN);
    }

    #[test]
    fn encrypt_empty_value_round_trips() {
        let cipher = test_cipher(1);

        let blob = cipher.encrypt("id-1", "global", b"");

        assert!(
            cipher
                .decrypt("id-1", "global", "EMPTY", &blob)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn encrypt_uses_a_fresh_nonce_each_time() {
        let cipher = test_cipher(1);

        let first = cipher.encrypt("id-1", "global", b"same value");
        let second = cipher.encrypt("id-1", "global", b"same value");

        assert_ne!(first[..NONCE_LEN], second[..NONCE_LEN]);
        assert_ne!(first, second);
    }

    #[test]
    fn blob_does_not_contain_plaintext() {
        let cipher = test_cipher(1);
        let value = b"a fairly long plaintext value that must not appear";

        let blob = cipher.encrypt("id-1", "global", value);

        assert!(
            !blob
                .windows(8)
                .any(|window| value.windows(8).any(|part| part == window))
        );
    }

    #[test]
    fn decrypt_with_another_key_fails() {
        let blob = test_cipher(1).encrypt("id-1", "global", b"hunter2");

        let error = test_cipher(2)
            .decrypt("id-1", "global", "TOKEN", &blob)
            .unwrap_err();

        assert!(
            matches!(error, SecretsError::DecryptSecret { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("`TOKEN`"), "{message}");
        assert!(message.contains("another key"), "{message}");
        assert!(message.contains("`danube secret set TOKEN`"), "{message}");
    }

    #[test]
    fn decrypt_error_for_pipeline_names_its_flag() {
        let blob = test_cipher(1).encrypt("id-1", "pipeline:web", b"hunter2");

        let error = test_cipher(2)
            .decrypt("id-1", "pipeline:web", "TOKEN", &blob)
            .unwrap_err();

        let message = error.to_string();
        assert!(
            message.contains("`danube secret set TOKEN --pipeline web`"),
            "{message}"
        );
    }

    #[test]
    fn blob_moved_to_another_row_fails() {
        let cipher = test_cipher(1);
        let blob = cipher.encrypt("id-1", "pipeline:web", b"hunter2");

        for (id, scope) in [
            ("id-2", "pipeline:web"),
            ("id-1", "pipeline:api"),
            ("id-1", "global"),
        ] {
            let result = cipher.decrypt(id, scope, "TOKEN", &blob);
            assert!(result.is_err(), "decrypted under ({id}, {scope})");
        }
    }

    #[test]
    fn associated_data_is_length_prefixed() {
        assert_ne!(associated_data("a", "bc"), associated_data("ab", "c"));

        let cipher = test_cipher(1);
        let blob = cipher.encrypt("a", "bc", b"hunter2");
        assert!(cipher.decrypt("ab", "c", "TOKEN", &blob).is_err());
    }

    #[test]
    fn altered_blob_fails() {
        let cipher = test_cipher(1);
        let blob = cipher.encrypt("id-1", "global", b"hunter2");

        for index in 0..blob.len() {
            let mut flipped = blob.clone();
            flipped[index] ^= 0x01;
            assert!(
                cipher.decrypt("id-1", "global", "TOKEN", &flipped).is_err(),
                "bit flip at byte {index} went unnoticed"
            );
        }
        for len in 0..blob.len() {
            assert!(
                cipher
                    .decrypt("id-1", "global", "TOKEN", &blob[..len])
                    .is_err(),
                "blob truncated to {len} bytes decrypted"
            );
        }
    }

    #[test]
    fn key_file_created_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption.key");

        let cipher = Cipher::load_or_create(&path).unwrap();

        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_LEN);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left"
        );
        let blob = cipher.encrypt("id-1", "global", b"hunter2");
        let reloaded = Cipher::load_or_create(&path).unwrap();
        assert_eq!(
            reloaded
                .decrypt("id-1", "global", "TOKEN", &blob)
                .unwrap()
                .as_slice(),
            b"hunter2"
        );
    }

    #[test]
    fn new_key_files_differ() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.key");
        let second = dir.path().join("second.key");

        Cipher::load_or_create(&first).unwrap();
        Cipher::load_or_create(&second).unwrap();

        assert_ne!(
            std::fs::read(first).unwrap(),
            std::fs::read(second).unwrap()
        );
    }

    #[test]
    fn concurrent_creation_yields_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption.key");

        let ciphers: Vec<Cipher> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| Cipher::load_or_create(&path).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .collect()
        });

        for cipher in &ciphers {
            assert_eq!(*cipher.key, *ciphers[0].key);
        }
        assert_eq!(std::fs::read(&path).unwrap(), *ciphers[0].key);
    }

    #[test]
    fn key_file_readable_by_others_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption.key");
        Cipher::load_or_create(&path).unwrap();

        for mode in [0o644, 0o640, 0o604, 0o620, 0o601] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();

            let error = Cipher::load_or_create(&path).unwrap_err();

            assert!(
                matches!(error, SecretsError::KeyFilePermissions { mode: found, .. } if found == mode),
                "{mode:o}: {error:?}"
            );
        }
        let message = Cipher::load_or_create(&path).unwrap_err().to_string();
        assert!(
            message.contains(&format!("`{}`", path.display())),
            "{message}"
        );
        assert!(message.contains("(mode 0601)"), "{message}");
        assert!(
            message.contains(&format!("run `chmod 600 {}`", path.display())),
            "{message}"
        );
    }

    #[test]
    fn key_file_of_wrong_size_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption.key");

        for size in [0, 16, 31, 33, 64] {
            std::fs::write(&path, vec![7_u8; size]).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

            let error = Cipher::load_or_create(&path).unwrap_err();

            assert!(
                matches!(error, SecretsError::KeyFileSize { size: found, .. } if found == size as u64),
                "{size}: {error:?}"
            );
        }
        assert_eq!(std::fs::read(&path).unwrap().len(), 64, "left untouched");
    }

    #[test]
    fn key_path_that_is_a_directory_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption.key");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();

        let error = Cipher::load_or_create(&path).unwrap_err();

        assert!(
            matches!(error, SecretsError::KeyFileNotAFile { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn key_in_missing_directory_fails_to_create() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/encryption.key");

        let error = Cipher::load_or_create(&path).unwrap_err();

        assert!(
            matches!(error, SecretsError::CreateKeyFile { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains(&format!("`{}`", path.display())),
            "{error}"
        );
    }

    #[test]
    fn debug_output_hides_the_key() {
        let debug = format!("{:?}", test_cipher(0xAB));

        assert!(!debug.contains("171"), "{debug}");
        assert!(!debug.to_lowercase().contains("ab, ab"), "{debug}");
    }
}
