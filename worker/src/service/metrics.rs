//! The worker's Prometheus metrics, served on `metrics_addr` (`GET /metrics`): jobs by
//! outcome and error code, per-stage durations, audio processed and the realtime
//! factor, model and provider calls (cache hits included), cost by tenant and stage,
//! webhook attempts, and each provider's calls, failures and circuit-breaker state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use providers::{BreakerState, ChatTiers, LinkStats, TranscriberChain};
use shared::domain::{JobResult, Lane};
use shared::metrics::prometheus::{
    CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use shared::metrics::SECONDS_BUCKETS;
use uuid::Uuid;

pub struct WorkerMetrics {
    registry: Registry,
    jobs: IntCounterVec,
    stage_seconds: HistogramVec,
    audio_seconds: CounterVec,
    realtime_factor: HistogramVec,
    calls: IntCounterVec,
    cost: CounterVec,
    webhooks: IntCounterVec,
    providers: ProviderMetrics,
}

/// Provider calls and breakers, read from the chains at each scrape: the chains count,
/// and each scrape adds what they counted since the last one.
struct ProviderMetrics {
    calls: IntCounterVec,
    failures: IntCounterVec,
    opened: IntCounterVec,
    breaker: IntGaugeVec,
    watch: Mutex<ProviderWatch>,
}

#[derive(Default)]
struct ProviderWatch {
    transcribe: Option<Arc<TranscriberChain>>,
    chat: ChatTiers,
    /// The totals already added, by series.
    seen: HashMap<(&'static str, Vec<String>), u64>,
}

impl ProviderMetrics {
    fn update(&self) {
        let mut watch = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        let mut links: Vec<(&'static str, LinkStats)> = watch
            .transcribe
            .iter()
            .flat_map(|c| c.stats())
            .map(|s| ("transcribe", s))
            .collect();
        links.extend(watch.chat.stats());
        // Providers may share a name within a chain (two models of one vendor): sum
        // each series over them first, so every scrape adds each series' growth once.
        let mut totals: HashMap<(&'static str, Vec<String>), u64> = HashMap::new();
        let mut states: HashMap<Vec<String>, i64> = HashMap::new();
        for (chain, s) in &links {
            let (p, m) = (s.provider.as_str(), s.model.as_str());
            let mut total = |metric: &'static str, labels: &[&str], n: u64| {
                let key = (metric, labels.iter().map(|l| l.to_string()).collect());
                *totals.entry(key).or_default() += n;
            };
            for (outcome, n) in [
                ("ok", s.ok),
                ("fault", s.fault),
                ("refused", s.refused),
                ("short_circuited", s.short_circuited),
            ] {
                total("calls", &[chain, p, m, outcome], n);
            }
            for (code, n) in &s.failures {
                total("failures", &[chain, p, code], *n);
            }
            total("opened", &[chain, p], s.opened);
            for state in BreakerState::ALL {
                let labels = vec![chain.to_string(), p.to_string(), state.as_str().to_string()];
                *states.entry(labels).or_default() += i64::from(s.breaker == state);
            }
        }
        for ((metric, labels), total) in totals {
            let counter = match metric {
                "calls" => &self.calls,
                "failures" => &self.failures,
                _ => &self.opened,
            };
            let values: Vec<&str> = labels.iter().map(String::as_str).collect();
            let before = watch
                .seen
                .insert((metric, labels.clone()), total)
                .unwrap_or(0);
            counter
                .with_label_values(&values)
                .inc_by(total.saturating_sub(before));
        }
        // With several providers of one name, the gauge counts those in each state.
        for (labels, n) in states {
            let values: Vec<&str> = labels.iter().map(String::as_str).collect();
            self.breaker.with_label_values(&values).set(n);
        }
    }
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let jobs = counter(
            "voxq_jobs_finished_total",
            "Runs of jobs by lane and outcome (completed, failed, retried), with the error code.",
            &["lane", "outcome", "code"],
        );
        let calls = counter(
            "voxq_stage_calls_total",
            "Stages run by stage, provider and model; cached=true when a cache answered.",
            &["stage", "provider", "model", "cached"],
        );
        let webhooks = counter(
            "voxq_webhook_attempts_total",
            "Webhook delivery attempts by outcome (delivered, retry, failed, gone).",
            &["outcome"],
        );
        let breaker = IntGaugeVec::new(
            Opts::new(
                "voxq_provider_breaker_state",
                "1 for the state each provider's circuit breaker is in (closed, open, half_open), per chain.",
            ),
            &["chain", "provider", "state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(breaker.clone()))
            .expect("registered once");
        let providers = ProviderMetrics {
            calls: counter(
                "voxq_provider_calls_total",
                "Provider calls per chain (transcribe, chat_cheap, chat_strong) by outcome: ok, fault (counts against the provider), refused (our request or a local engine declined), short_circuited (breaker open).",
                &["chain", "provider", "model", "outcome"],
            ),
            failures: counter(
                "voxq_provider_failures_total",
                "Failed provider calls by error code.",
                &["chain", "provider", "code"],
            ),
            opened: counter(
                "voxq_provider_breaker_opened_total",
                "Times a provider's circuit breaker opened.",
                &["chain", "provider"],
            ),
            breaker,
            watch: Mutex::default(),
        };
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new(
                "voxq_stage_duration_seconds",
                "Time per pipeline stage (fetch, decode, transcribe, score, summarize, rubric, store, total).",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("valid metric");
        let realtime_factor = HistogramVec::new(
            HistogramOpts::new(
                "voxq_transcribe_realtime_factor",
                "Transcription time divided by the audio's duration (below 1: faster than real time).",
            )
            .buckets(vec![0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]),
            &["model"],
        )
        .expect("valid metric");
        let audio_seconds = CounterVec::new(
            Opts::new(
                "voxq_audio_processed_seconds_total",
                "Seconds of audio in completed jobs.",
            ),
            &["lane"],
        )
        .expect("valid metric");
        let cost = CounterVec::new(
            Opts::new(
                "voxq_cost_usd_total",
                "Cost of completed jobs in USD, by tenant and stage.",
            ),
            &["tenant", "stage"],
        )
        .expect("valid metric");
        for m in [
            Box::new(stage_seconds.clone())
                as Box<dyn shared::metrics::prometheus::core::Collector>,
            Box::new(realtime_factor.clone()),
            Box::new(audio_seconds.clone()),
            Box::new(cost.clone()),
        ] {
            registry.register(m).expect("registered once");
        }
        Self {
            registry,
            jobs,
            stage_seconds,
            audio_seconds,
            realtime_factor,
            calls,
            cost,
            webhooks,
            providers,
        }
    }

    /// Reports these chains' provider calls and breakers from now on.
    pub fn watch_providers(&self, transcribe: Arc<TranscriberChain>, chat: ChatTiers) {
        let mut watch = self
            .providers
            .watch
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        watch.transcribe = Some(transcribe);
        watch.chat = chat;
    }

    /// A completed job: its stages, calls, audio and cost.
    pub fn completed(
        &self,
        lane: Lane,
        tenant: Uuid,
        result: &JobResult,
        timings: &serde_json::Value,
    ) {
        self.jobs
            .with_label_values(&[lane.as_str(), "completed", ""])
            .inc();
        if let Some(stages) = timings.as_object() {
            for (stage, ms) in stages {
                if let Some(ms) = ms.as_f64() {
                    self.stage_seconds
                        .with_label_values(&[stage.as_str()])
                        .observe(ms / 1000.0);
                }
            }
        }
        let duration = result.transcript.duration_s;
        self.audio_seconds
            .with_label_values(&[lane.as_str()])
            .inc_by(duration.max(0.0));
        let tenant = tenant.to_string();
        for (stage, usage) in &result.usage {
            let cached = if usage.cached { "true" } else { "false" };
            self.calls
                .with_label_values(&[stage.as_str(), &usage.provider, &usage.model, cached])
                .inc();
            if usage.cost_usd > 0.0 {
                self.cost
                    .with_label_values(&[tenant.as_str(), stage.as_str()])
                    .inc_by(usage.cost_usd);
            }
            if *stage == shared::domain::Stage::Transcribe && !usage.cached && duration > 0.0 {
                self.realtime_factor
                    .with_label_values(&[&usage.model])
                    .observe(usage.wall_ms / 1000.0 / duration);
            }
        }
    }

    /// A run that failed the job for good (`failed`) or will be retried (`retried`).
    pub fn ended(&self, lane: Lane, outcome: &str, code: &str) {
        self.jobs
            .with_label_values(&[lane.as_str(), outcome, code])
            .inc();
    }

    pub fn webhook(&self, outcome: &str) {
        self.webhooks.with_label_values(&[outcome]).inc();
    }

    pub fn render(&self) -> String {
        self.providers.update();
        shared::metrics::render(&self.registry)
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `GET /metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<WorkerMetrics>) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                    metrics.render(),
                )
            }
        }),
    );
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            if let Ok(a) = listener.local_addr() {
                tracing::info!(addr = %a, "metrics listening");
            }
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "metrics listener stopped");
            }
        }
        Err(e) => tracing::warn!(%addr, error = %e, "cannot bind the metrics listener"),
    }
}
