//! Bearer-key authentication and the per-key rate limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::FromRequestParts;
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
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let key = shared::db::find_api_key(&state.db, secret)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        state.limiter.check(key.id)?;
        Ok(Caller(key))
    }
}

/// Token buckets per API key, in this process (each API replica limits on its own).
#[derive(Debug)]
pub struct RateLimiter {
    per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_s: f64, burst: u32) -> Self {
        Self {
            per_s,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from the key's bucket, or says how long to wait for one.
    pub fn check(&self, key: Uuid) -> Result<(), ApiError> {
        if self.per_s <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_s;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_s;
            Err(ApiError::RateLimited {
                retry_after_s: wait.ceil().max(1.0) as u64,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limiter = RateLimiter::new(0.5, 3);
        let key = Uuid::new_v4();
        for _ in 0..3 {
            limiter.check(key).expect("within burst");
        }
        match limiter.check(key) {
            Err(ApiError::RateLimited { retry_after_s }) => assert_eq!(retry_after_s, 2),
            other => panic!("expected 429, got {other:?}"),
        }
        // Another key has its own bucket.
        limiter.check(Uuid::new_v4()).expect("other key");
    }

    #[test]
    fn zero_rate_disables_the_limit() {
        let limiter = RateLimiter::new(0.0, 1);
        let key = Uuid::new_v4();
        for _ in 0..100 {
            limiter.check(key).expect("unlimited");
        }
    }
}
