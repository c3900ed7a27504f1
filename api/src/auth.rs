//! Bearer-key authentication, the per-key rate limit, and the guard against floods of
//! wrong keys.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use shared::db::ApiKeyRecord;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;

/// The caller of a `/v1` route: a live API key, within its rate limit.
#[derive(Debug, Clone)]
pub struct Caller(pub ApiKeyRecord);

impl Caller {
    pub fn require(&self, scope: &'static str) -> Result<(), ApiError> {
        if self.0.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope))
        }
    }

    pub fn tenant_id(&self) -> Uuid {
        self.0.tenant_id
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = client_addr(parts);
        let guard = &state.auth;
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        // A string that is not shaped like a key is refused without any database work.
        if !is_key_shaped(secret) {
            guard.failed(client)?;
            return Err(ApiError::Unauthorized);
        }
        let hash = shared::db::hash_key(secret);
        let key = match guard.cached(&hash) {
            Some(key) => key,
            None => {
                // An address that keeps failing gets no more lookups until it slows down;
                // keys that succeeded recently are answered from the cache above, so a
                // valid caller behind the same address keeps working.
                guard.allowed(client)?;
                let _permit = guard.lookup_permit().await?;
                match shared::db::find_api_key_by_hash(&state.db, &hash).await? {
                    Some(key) => {
                        guard.remember(hash, &key);
                        key
                    }
                    None => {
                        guard.failed(client)?;
                        return Err(ApiError::Unauthorized);
                    }
                }
            }
        };
        state
            .limiter
            .check(key.id)
            .map_err(|retry_after_s| ApiError::RateLimited { retry_after_s })?;
        Ok(Caller(key))
    }
}

/// The client's address, which failed authentications are counted against.
pub(crate) fn client_addr(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// `vxq_` and 64 lowercase hex digits, as `voxq-api keys create` makes them.
pub fn is_key_shaped(secret: &str) -> bool {
    secret.len() == 68
        && secret.starts_with("vxq_")
        && secret[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Guards authentication against floods of wrong keys: a failure budget per client
/// address, a short-lived cache of keys that succeeded, and a bound on concurrent key
/// lookups so they never take the whole database pool.
#[derive(Debug)]
pub struct AuthGuard {
    failures: RateLimiter<IpAddr>,
    known: Mutex<HashMap<Vec<u8>, (ApiKeyRecord, Instant)>>,
    lookups: tokio::sync::Semaphore,
}

impl AuthGuard {
    /// How long a key that succeeded is trusted without a lookup (a revoked key works
    /// this long at most).
    const KNOWN_FOR: Duration = Duration::from_secs(30);
    const KNOWN_MAX: usize = 10_000;

    pub fn new(failures_per_s: f64, failures_burst: u32, max_lookups: usize) -> Self {
        Self {
            failures: RateLimiter::new(failures_per_s, failures_burst),
            known: Mutex::new(HashMap::new()),
            lookups: tokio::sync::Semaphore::new(max_lookups.max(1)),
        }
    }

    fn cached(&self, hash: &[u8]) -> Option<ApiKeyRecord> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .get(hash)
            .filter(|(_, at)| at.elapsed() < Self::KNOWN_FOR)
            .map(|(key, _)| key.clone())
    }

    fn remember(&self, hash: Vec<u8>, key: &ApiKeyRecord) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= Self::KNOWN_MAX {
            known.retain(|_, (_, at)| at.elapsed() < Self::KNOWN_FOR);
            if known.len() >= Self::KNOWN_MAX {
                known.clear();
            }
        }
        known.insert(hash, (key.clone(), Instant::now()));
    }

    /// One of the bounded concurrent credential lookups.
    pub(crate) async fn lookup_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        self.lookups
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable("authentication"))
    }

    /// Refuses an address whose failure budget is spent.
    pub(crate) fn allowed(&self, client: IpAddr) -> Result<(), ApiError> {
        self.failures
            .peek(client)
            .map_err(|retry_after_s| ApiError::AuthRateLimited { retry_after_s })
    }

    /// Counts a failed authentication against the address.
    pub(crate) fn failed(&self, client: IpAddr) -> Result<(), ApiError> {
        self.failures
            .check(client)
            .map_err(|retry_after_s| ApiError::AuthRateLimited { retry_after_s })
    }
}

/// Token buckets per key (an API key, a client address), in this process (each API
/// replica limits on its own).
#[derive(Debug)]
pub struct RateLimiter<K = Uuid> {
    per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: std::hash::Hash + Eq + Copy> RateLimiter<K> {
    pub fn new(per_s: f64, burst: u32) -> Self {
        Self {
            per_s,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from the key's bucket, or says how many seconds until one is
    /// there.
    pub fn check(&self, key: K) -> Result<(), u64> {
        self.with_bucket(key, |bucket| bucket.tokens -= 1.0)
    }

    /// Like [`check`](Self::check), without taking the token.
    pub fn peek(&self, key: K) -> Result<(), u64> {
        self.with_bucket(key, |_| {})
    }

    fn with_bucket(&self, key: K, take: impl FnOnce(&mut Bucket)) -> Result<(), u64> {
        if self.per_s <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            // Full buckets carry no information: forget them rather than grow forever.
            let (per_s, burst) = (self.per_s, self.burst);
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_s < burst);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_s;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            take(bucket);
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_s;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limiter = RateLimiter::<Uuid>::new(0.5, 3);
        let key = Uuid::new_v4();
        for _ in 0..3 {
            limiter.check(key).expect("within burst");
        }
        assert_eq!(limiter.check(key), Err(2));
        // Another key has its own bucket.
        limiter.check(Uuid::new_v4()).expect("other key");
    }

    #[test]
    fn peeking_takes_no_token() {
        let limiter = RateLimiter::new(0.5, 1);
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..5 {
            assert_eq!(limiter.peek(ip), Ok(()));
        }
        assert_eq!(limiter.check(ip), Ok(()));
        assert_eq!(limiter.peek(ip), Err(2));
    }

    #[test]
    fn only_key_shaped_strings_reach_the_database() {
        let good = format!("vxq_{}", "0123456789abcdef".repeat(4));
        assert!(is_key_shaped(&good));
        for bad in [
            "",
            "vxq_not-a-key",
            &good[..67],
            &format!("{good}0"),
            &good.to_uppercase(),
            &good.replace("vxq_", "sk-_"),
        ] {
            assert!(!is_key_shaped(bad), "{bad}");
        }
    }

    #[test]
    fn zero_rate_disables_the_limit() {
        let limiter = RateLimiter::<Uuid>::new(0.0, 1);
        let key = Uuid::new_v4();
        for _ in 0..100 {
            limiter.check(key).expect("unlimited");
        }
    }
}
