//! Per-job tokens for the coordinator's calls.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::orchestrator::JobRuntime;

/// SHA-256 of a token; the registry keeps only these.
pub type TokenHash = [u8; 32];

/// The tokens of running jobs.
#[derive(Default)]
pub struct TokenRegistry {
    jobs: RwLock<HashMap<TokenHash, Arc<JobRuntime>>>,
}

impl TokenRegistry {
    /// Issues a fresh random token for `job`. Returns the token (to hand to
    /// the coordinator once) and its hash (to revoke it later).
    pub fn issue(&self, job: Arc<JobRuntime>) -> (String, TokenHash) {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        let hash = hash(&token);
        self.jobs
            .write()
            .expect("token registry lock is never poisoned")
            .insert(hash, job);
        (token, hash)
    }

    pub fn revoke(&self, hash: &TokenHash) {
        self.jobs
            .write()
            .expect("token registry lock is never poisoned")
            .remove(hash);
    }

    /// Returns the job a token belongs to, if the token is live.
    pub fn lookup(&self, token: &str) -> Option<Arc<JobRuntime>> {
        // Comparing hashes in a map does not leak how much of a token
        // matched, which a byte-by-byte comparison of the tokens would.
        self.jobs
            .read()
            .expect("token registry lock is never poisoned")
            .get(&hash(token))
            .cloned()
    }
}

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}
