//! `Idempotency-Key` (Stripe's semantics): a retried create with the same key and the
//! same request gets the original object back (header `Idempotent-Replayed: true`), the
//! same key with a different request gets 422 `idempotency-key-reused`. Keys are kept
//! with the job or batch they created, per tenant, for as long as it exists.

use axum::http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

pub const HEADER: &str = "idempotency-key";
pub static REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Longest key accepted.
const MAX_KEY: usize = 255;

/// The request's key, if it sent one: 1 to 255 visible ASCII characters.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters"
        ))
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    if s.is_empty() || s.len() > MAX_KEY || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(s.to_string()))
}

/// SHA-256 over the parts that make a request what it is, each length-prefixed so
/// that moving bytes between parts changes the hash.
pub fn hash_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().to_vec()
}
