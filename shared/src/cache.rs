//! Small key-value caches with a TTL: chat results (by hash of model, prompt version and
//! input) and transcripts (by SHA-256 of the audio and the options). Redis in the
//! service, memory in local mode. A cache is never the source of truth: any error is a
//! miss.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

/// A string cache with expiry.
pub trait Cache: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>>;
    fn set<'a>(&'a self, key: &'a str, value: String, ttl: Duration) -> BoxFuture<'a, ()>;
    /// Adds one to the named counter (`transcript:hits`), where the cache keeps counters
    /// operators can read; by default it keeps none.
    fn count<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Hex SHA-256 of the parts, separated so that ("ab","c") and ("a","bc") differ.
pub fn key_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// Hits and misses of one cache, counted in this process.
#[derive(Debug, Default)]
pub struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Counters {
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
    /// hits / (hits + misses), 0 when nothing was looked up.
    pub fn hit_rate(&self) -> f64 {
        let (h, m) = (self.hits(), self.misses());
        if h + m == 0 {
            0.0
        } else {
            h as f64 / (h + m) as f64
        }
    }
}

/// In-process cache (local mode, tests, benchmarks).
#[derive(Debug, Default)]
pub struct MemoryCache {
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

impl Cache for MemoryCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let value = entries
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone());
        Box::pin(async move { value })
    }

    fn set<'a>(&'a self, key: &'a str, value: String, ttl: Duration) -> BoxFuture<'a, ()> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), (value, Instant::now() + ttl));
        Box::pin(async {})
    }
}

/// Redis cache under `<prefix>:cache:<key>`; it also counts hits and misses in Redis
/// (`<prefix>:cache:<name>:hits|misses`) so operators see them across workers.
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: format!("{prefix}:cache"),
        }
    }
}

/// Longest a cache call may take: a Redis that is down or restarting must not hold a
/// job (the cache is never the source of truth; a slow answer is a miss).
const REDIS_CACHE_TIMEOUT: Duration = Duration::from_secs(2);

impl Cache for RedisCache {
    /// Counts in Redis, ignoring errors.
    fn count<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("INCR");
            cmd.arg(format!("{}:{name}", self.prefix));
            let incr = cmd.query_async::<i64>(&mut conn);
            let _ = tokio::time::timeout(REDIS_CACHE_TIMEOUT, incr).await;
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("GET");
            cmd.arg(format!("{}:{key}", self.prefix));
            let get = cmd.query_async::<Option<String>>(&mut conn);
            match tokio::time::timeout(REDIS_CACHE_TIMEOUT, get).await {
                Ok(Ok(value)) => value,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cache read failed; treated as a miss");
                    None
                }
                Err(_) => {
                    tracing::debug!("cache read timed out; treated as a miss");
                    None
                }
            }
        })
    }

    fn set<'a>(&'a self, key: &'a str, value: String, ttl: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("SET");
            cmd.arg(format!("{}:{key}", self.prefix))
                .arg(value)
                .arg("EX")
                .arg(ttl.as_secs().max(1));
            let set = cmd.query_async::<()>(&mut conn);
            if !matches!(
                tokio::time::timeout(REDIS_CACHE_TIMEOUT, set).await,
                Ok(Ok(()))
            ) {
                tracing::debug!("cache write failed or timed out");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_cache_expires_and_counts() {
        let cache = MemoryCache::default();
        assert_eq!(cache.get("k").await, None);
        cache.set("k", "v".into(), Duration::from_secs(60)).await;
        assert_eq!(cache.get("k").await.as_deref(), Some("v"));
        cache.set("gone", "v".into(), Duration::ZERO).await;
        assert_eq!(cache.get("gone").await, None);
        let c = Counters::default();
        c.hit();
        c.miss();
        c.miss();
        c.hit();
        assert_eq!((c.hits(), c.misses(), c.hit_rate()), (2, 2, 0.5));
        assert_ne!(key_hash(&[b"ab", b"c"]), key_hash(&[b"a", b"bc"]));
    }
}
