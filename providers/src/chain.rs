//! Ordered fallback over several providers of one task, each behind its own circuit
//! breaker. The first success wins and says which provider and model served it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::breaker::{BreakerState, CircuitBreaker, Clock, SystemClock};
use super::{
    BreakerConfig, ChatModel, ChatRequest, ChatResponse, Described, Price, ProviderError,
    Transcriber, TranscriptionRequest,
};
use shared::domain::{ModelTier, StageUsage, Transcript};

/// One failed try of one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    pub error: ProviderError,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' ({}): {}", self.provider, self.model, self.error)
    }
}

/// A result and who produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<T> {
    pub value: T,
    /// Name of the provider that answered.
    pub provider: String,
    /// The model asked of it (as configured).
    pub model: String,
    pub price: Price,
    /// Providers tried before it, in order.
    pub failed: Vec<Attempt>,
}

impl Served<ChatResponse> {
    /// Usage of a chat stage (times left for the pipeline to measure).
    pub fn usage(&self) -> StageUsage {
        StageUsage {
            provider: self.provider.clone(),
            model: self.model.clone(),
            tokens_in: self.value.tokens_in,
            tokens_out: self.value.tokens_out,
            cost_usd: self
                .price
                .chat_cost_usd(self.value.tokens_in, self.value.tokens_out),
            ..StageUsage::default()
        }
    }
}

impl Served<Transcript> {
    /// Usage of a transcription stage, priced by audio duration (times left for the
    /// pipeline to measure).
    pub fn usage(&self) -> StageUsage {
        StageUsage {
            provider: self.provider.clone(),
            model: self.model.clone(),
            cost_usd: self.price.audio_cost_usd(self.value.duration_s),
            ..StageUsage::default()
        }
    }
}

/// Every provider of a chain failed, or one failed in a way the others would too.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainError {
    /// What each provider tried answered, in order; the last one decided the outcome.
    /// Empty when the chain has no providers.
    pub attempts: Vec<Attempt>,
}

impl ChainError {
    pub fn last(&self) -> Option<&ProviderError> {
        self.attempts.last().map(|a| &a.error)
    }

    /// Whether the same request may succeed later: the chain ran out of providers and at
    /// least one of them failed transiently.
    pub fn is_transient(&self) -> bool {
        self.last().is_some_and(ProviderError::is_fallback_worthy)
            && self.attempts.iter().any(|a| a.error.is_transient())
    }

    /// Stable kebab-case code: the last error's, or `no-provider`.
    pub fn code(&self) -> &'static str {
        self.last().map_or("no-provider", ProviderError::code)
    }
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.attempts.as_slice() {
            [] => write!(f, "no provider is configured"),
            [only] => write!(f, "provider {only}"),
            all => {
                write!(f, "all {} providers failed: ", all.len())?;
                for (i, attempt) in all.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{attempt}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ChainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.last().map(|e| e as _)
    }
}

struct Link<P: ?Sized> {
    provider: Arc<P>,
    breaker: Arc<CircuitBreaker>,
    counts: CallCounts,
}

/// What became of one provider's calls, counted for metrics.
#[derive(Default)]
struct CallCounts {
    ok: AtomicU64,
    fault: AtomicU64,
    refused: AtomicU64,
    short_circuited: AtomicU64,
    /// Failed calls (faults and refusals) by error code.
    codes: Mutex<BTreeMap<&'static str, u64>>,
}

impl CallCounts {
    fn record<T>(&self, result: &Result<T, ProviderError>) {
        let counter = match result {
            Ok(_) => &self.ok,
            Err(ProviderError::CircuitOpen { .. }) => &self.short_circuited,
            Err(e) => {
                *self
                    .codes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(e.code())
                    .or_default() += 1;
                if e.is_provider_fault() {
                    &self.fault
                } else {
                    &self.refused
                }
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One provider of a chain as metrics see it: its breaker and what became of its calls
/// since the process started.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStats {
    pub provider: String,
    pub model: String,
    pub breaker: BreakerState,
    /// Times the breaker opened.
    pub opened: u64,
    /// Calls that succeeded.
    pub ok: u64,
    /// Failures that count against the provider (timeouts, 5xx, network, 429, …).
    pub fault: u64,
    /// Failures that do not (our request refused, a local engine declining a recording).
    pub refused: u64,
    /// Calls not made because the breaker was open.
    pub short_circuited: u64,
    /// Failed calls by error code.
    pub failures: BTreeMap<&'static str, u64>,
}

async fn run<'a, P, T, F>(
    task: &str,
    links: &'a [Link<P>],
    call: F,
) -> Result<Served<T>, ChainError>
where
    P: ?Sized + Described,
    F: Fn(&'a P) -> BoxFuture<'a, Result<T, ProviderError>>,
{
    let mut failed = Vec::new();
    for link in links {
        let provider = &*link.provider;
        let result = link.breaker.call(provider.name(), call(provider)).await;
        link.counts.record(&result);
        match result {
            Ok(value) => {
                return Ok(Served {
                    value,
                    provider: provider.name().to_string(),
                    model: provider.model().to_string(),
                    price: provider.price(),
                    failed,
                })
            }
            Err(error) => {
                let worthy = error.is_fallback_worthy();
                if !matches!(error, ProviderError::CircuitOpen { .. }) {
                    tracing::warn!(
                        task,
                        provider = provider.name(),
                        model = provider.model(),
                        error = %error,
                        fallback = worthy,
                        "provider call failed"
                    );
                }
                failed.push(Attempt {
                    provider: provider.name().to_string(),
                    model: provider.model().to_string(),
                    error,
                });
                if !worthy {
                    break;
                }
            }
        }
    }
    Err(ChainError { attempts: failed })
}

/// Providers of one task tried in order, each behind its own circuit breaker.
pub struct Chain<P: ?Sized> {
    links: Vec<Link<P>>,
}

/// Chat models tried in order.
pub type ChatChain = Chain<dyn ChatModel>;
/// Transcribers tried in order.
pub type TranscriberChain = Chain<dyn Transcriber>;

impl<P: ?Sized + Described> Chain<P> {
    /// One breaker per provider, with `breaker`'s settings.
    pub fn new(providers: Vec<Arc<P>>, breaker: BreakerConfig) -> Self {
        Self::with_clock(providers, breaker, Arc::new(SystemClock))
    }

    pub fn with_clock(
        providers: Vec<Arc<P>>,
        breaker: BreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let links = providers
            .into_iter()
            .map(|provider| Link {
                provider,
                breaker: Arc::new(CircuitBreaker::with_clock(breaker, clock.clone())),
                counts: CallCounts::default(),
            })
            .collect();
        Self { links }
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// `provider/model` of each link, in order (e.g. for cache keys).
    pub fn models(&self) -> Vec<String> {
        self.links
            .iter()
            .map(|l| format!("{}/{}", l.provider.name(), l.provider.model()))
            .collect()
    }

    /// Each provider's breaker and call counts, in order.
    pub fn stats(&self) -> Vec<LinkStats> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.links
            .iter()
            .map(|l| LinkStats {
                provider: l.provider.name().to_string(),
                model: l.provider.model().to_string(),
                breaker: l.breaker.state(),
                opened: l.breaker.times_opened(),
                ok: load(&l.counts.ok),
                fault: load(&l.counts.fault),
                refused: load(&l.counts.refused),
                short_circuited: load(&l.counts.short_circuited),
                failures: l
                    .counts
                    .codes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            })
            .collect()
    }

    /// The breaker of the provider named `name`.
    pub fn breaker(&self, name: &str) -> Option<&Arc<CircuitBreaker>> {
        self.links
            .iter()
            .find(|l| l.provider.name() == name)
            .map(|l| &l.breaker)
    }
}

impl ChatChain {
    pub async fn complete(
        &self,
        request: &ChatRequest,
    ) -> Result<Served<ChatResponse>, ChainError> {
        run("chat", &self.links, |p| p.complete(request)).await
    }
}

/// The cheap and the strong chat chain, built once and shared by every stage that calls a
/// chat model, so each provider has one circuit breaker whichever stage calls it.
#[derive(Clone, Default)]
pub struct ChatTiers {
    cheap: Option<Arc<ChatChain>>,
    strong: Option<Arc<ChatChain>>,
}

impl ChatTiers {
    /// Empty chains count as not configured.
    pub fn new(cheap: Option<ChatChain>, strong: Option<ChatChain>) -> Self {
        let keep = |c: Option<ChatChain>| c.filter(|c| !c.is_empty()).map(Arc::new);
        Self {
            cheap: keep(cheap),
            strong: keep(strong),
        }
    }

    /// The chain for `tier`; the strong tier falls back to the cheap chain.
    pub fn chain(&self, tier: ModelTier) -> Option<&ChatChain> {
        match tier {
            ModelTier::Strong => self.strong.as_deref().or(self.cheap.as_deref()),
            ModelTier::Cheap => self.cheap.as_deref(),
        }
    }

    /// Each configured chain's providers, named by the chain (`chat_cheap`, `chat_strong`).
    pub fn stats(&self) -> Vec<(&'static str, LinkStats)> {
        [("chat_cheap", &self.cheap), ("chat_strong", &self.strong)]
            .into_iter()
            .filter_map(|(name, chain)| Some((name, chain.as_ref()?)))
            .flat_map(|(name, chain)| chain.stats().into_iter().map(move |s| (name, s)))
            .collect()
    }
}

impl TranscriberChain {
    /// Whether a provider of the chain reads the original file, not only the samples.
    pub fn needs_file(&self) -> bool {
        self.links.iter().any(|l| l.provider.needs_file())
    }

    pub async fn transcribe(
        &self,
        request: &TranscriptionRequest,
    ) -> Result<Served<Transcript>, ChainError> {
        run("transcribe", &self.links, |p| p.transcribe(request)).await
    }
}
