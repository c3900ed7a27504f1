//! A circuit breaker per provider: after `failure_threshold` consecutive fallback-worthy
//! failures it opens and calls fail fast for `cool_down`; then one trial call is let
//! through (half-open), whose success closes it and whose failure opens it again.
//!
//! Time comes from a [`Clock`] so tests can move it by hand ([`ManualClock`]).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::ProviderError;
use shared::config::provider::BreakerConfig;

/// Source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Instant;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }
}

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    /// The cool-down is over; the next call (or the one in flight) is the trial.
    HalfOpen,
}

impl BreakerState {
    pub const ALL: [Self; 3] = [Self::Closed, Self::Open, Self::HalfOpen];

    /// Lower-case name (`closed`, `open`, `half_open`), as metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

pub struct CircuitBreaker {
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    opened: AtomicU64,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("config", &self.config)
            .field("state", &*self.lock())
            .finish()
    }
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            clock,
            state: Mutex::new(State::Closed { failures: 0 }),
            opened: AtomicU64::new(0),
        }
    }

    /// How many times the breaker has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> BreakerState {
        match &*self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if self.clock.now() < *until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Runs `call` unless the breaker is open, and records its outcome. Fallback-worthy
    /// errors count as failures; other errors (our own bad request) show the provider
    /// answering and count as successes.
    pub async fn call<T, F>(&self, provider: &str, call: F) -> Result<T, ProviderError>
    where
        F: Future<Output = Result<T, ProviderError>>,
    {
        let Some(permit) = self.acquire() else {
            return Err(ProviderError::CircuitOpen {
                provider: provider.to_string(),
            });
        };
        let result = call.await;
        let healthy = match &result {
            Ok(_) => true,
            Err(e) => !e.is_provider_fault(),
        };
        if permit.record(healthy) {
            tracing::warn!(
                provider,
                cool_down_ms = self.config.cool_down_ms,
                "circuit breaker opened"
            );
        }
        result
    }

    /// A permit to call the provider, or `None` while the breaker is open. A permit
    /// dropped without [`Permit::record`] (the call was cancelled) records nothing.
    pub fn acquire(&self) -> Option<Permit<'_>> {
        let mut state = self.lock();
        let trial = match &mut *state {
            State::Closed { .. } => false,
            State::Open { until } => {
                if self.clock.now() < *until {
                    return None;
                }
                *state = State::HalfOpen {
                    trial_in_flight: true,
                };
                true
            }
            State::HalfOpen { trial_in_flight } => {
                if *trial_in_flight {
                    return None;
                }
                *trial_in_flight = true;
                true
            }
        };
        Some(Permit {
            breaker: self,
            trial,
            recorded: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns whether this outcome opened the breaker.
    fn record(&self, trial: bool, healthy: bool) -> bool {
        let mut state = self.lock();
        if healthy {
            *state = State::Closed { failures: 0 };
            return false;
        }
        let open = State::Open {
            until: self.clock.now() + self.config.cool_down(),
        };
        match &mut *state {
            State::Closed { failures } => {
                *failures += 1;
                if *failures < self.config.failure_threshold.max(1) {
                    return false;
                }
            }
            State::HalfOpen { .. } if trial => {}
            // A call begun before the breaker opened: it is open already.
            State::HalfOpen { .. } | State::Open { .. } => return false,
        }
        *state = open;
        self.opened.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// The right to make one call; see [`CircuitBreaker::acquire`].
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    trial: bool,
    recorded: bool,
}

impl Permit<'_> {
    /// Records the call's outcome: `healthy` unless it failed in a fallback-worthy way.
    /// Returns whether this opened the breaker.
    pub fn record(mut self, healthy: bool) -> bool {
        self.recorded = true;
        self.breaker.record(self.trial, healthy)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.trial && !self.recorded {
            // Let the next call be the trial instead of staying half-open forever.
            let mut state = self.breaker.lock();
            if let State::HalfOpen { trial_in_flight } = &mut *state {
                *trial_in_flight = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> (CircuitBreaker, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let config = BreakerConfig {
            failure_threshold: threshold,
            cool_down_ms: 30_000,
        };
        (CircuitBreaker::with_clock(config, clock.clone()), clock)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let (b, _) = breaker(3);
        b.acquire().unwrap().record(false);
        b.acquire().unwrap().record(false);
        b.acquire().unwrap().record(true);
        b.acquire().unwrap().record(false);
        assert!(!b.acquire().unwrap().record(false));
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(
            b.acquire().unwrap().record(false),
            "the third failure opens it"
        );
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.acquire().is_none());
    }

    #[test]
    fn half_open_lets_one_trial_through() {
        let (b, clock) = breaker(1);
        b.acquire().unwrap().record(false);
        clock.advance(Duration::from_millis(29_999));
        assert!(b.acquire().is_none());
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let trial = b.acquire().unwrap();
        assert!(b.acquire().is_none(), "a second call during the trial");
        trial.record(false);
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(30));
        b.acquire().unwrap().record(true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.acquire().is_some());
    }

    #[test]
    fn cancelled_trial_frees_the_slot() {
        let (b, clock) = breaker(1);
        b.acquire().unwrap().record(false);
        clock.advance(Duration::from_secs(30));
        drop(b.acquire().unwrap());
        assert!(b.acquire().is_some());
    }

    #[test]
    fn late_failure_of_a_pre_open_call_does_not_extend_the_cool_down() {
        let (b, clock) = breaker(1);
        let early = b.acquire().unwrap();
        b.acquire().unwrap().record(false);
        clock.advance(Duration::from_secs(30));
        let trial = b.acquire().unwrap();
        early.record(false);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        trial.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn call_counts_only_fallback_worthy_errors() {
        let (b, _) = breaker(1);
        let bad_request = ProviderError::Client {
            status: 400,
            message: "bad".into(),
        };
        assert!(b
            .call("p", async { Err::<(), _>(bad_request) })
            .await
            .is_err());
        assert_eq!(b.state(), BreakerState::Closed);
        let server = ProviderError::Server {
            status: 503,
            message: "busy".into(),
        };
        assert!(b.call("p", async { Err::<(), _>(server) }).await.is_err());
        let err = b.call("p", async { Ok(()) }).await.unwrap_err();
        assert_eq!(
            err,
            ProviderError::CircuitOpen {
                provider: "p".into()
            }
        );
    }
}
