//! SHA-256 as hex: the one digest of the crate (input digests in tick
//! records, release ids, the model's evidence, a Slack request's key).

use sha2::{Digest, Sha256};

/// SHA-256 of `bytes`, lower-case hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
