//! `voxq-worker run`: the queue worker. One apalis worker per lane pulls job ids from
//! Redis, and [`handler`] runs each job through the stages; [`sweeper`] pushes jobs that
//! PostgreSQL holds as queued but Redis does not; [`dispatcher`] hands the bulk backlog
//! to Redis fairly across tenants and lists batch prefixes; [`webhooks`] delivers the
//! webhook outbox. The sweeper's leader also completes finished batches and runs the
//! retention purge (`shared::purge`).

pub mod dispatcher;
pub mod handler;
pub mod metrics;
pub mod source;
pub mod sweeper;
pub mod webhooks;

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use apalis::prelude::*;
use audio::DecodeLimits;
use providers::{ChatChain, ChatTiers, Transcriber, TranscriberChain};
use shared::cache::{Cache, RedisCache};
use shared::config::{Config, DEFAULT_MODEL};
use shared::domain::{Lane, LOCAL_PROVIDER};
use shared::objects::ObjectStore;
use shared::queue::{JobMessage, JobQueue, LaneStorage};

use crate::pipeline::Pipeline;
use crate::stage::decode::DecodeStage;
use crate::stage::fetch::FetchStage;
use crate::stage::rubric::RubricStage;
use crate::stage::score::{ScoreConfig, ScoreStage};
use crate::stage::summarize::SummarizeStage;
use crate::stage::transcribe::{LocalWhisper, TranscribeStage};
use crate::whisper::{ComputeType, DecodeOptions, EngineConfig};
use handler::Handler;

/// A name unique to this process and start: apalis finds orphaned jobs by worker name,
/// so two processes sharing a name would hide each other's dead jobs.
fn process_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Runs until SIGTERM/SIGINT, then drains: no new jobs start, jobs in flight finish
/// (up to `shutdown_grace_s`).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let _otlp = shared::otlp::start("voxq-worker", &config.otlp_endpoint, &config.otlp_headers)?;
    if config.bench_noop_transcribe {
        tracing::warn!(
            "bench_noop_transcribe is set: jobs get empty transcripts (benchmarks only)"
        );
    }
    let chain = transcriber_chain(&config).await?;
    let db = shared::db::connect(&config)
        .await
        .context("connecting to PostgreSQL")?;
    let conn = shared::queue::connect_lazy(&config)?;
    let queue = JobQueue::new(&config, conn.clone());
    let objects = ObjectStore::connect(&config).await;
    let chat = chat_tiers(&config)?;
    let cache: Arc<dyn Cache> = Arc::new(RedisCache::new(conn.clone(), &config.queue_prefix));
    let pipeline = Pipeline {
        source: Arc::new(source::Remote {
            fetch: FetchStage::new(objects.clone(), &config),
            db: db.clone(),
            config: config.clone(),
        }),
        decode: DecodeStage::new(DecodeLimits {
            max_bytes: config.max_fetch_bytes,
            max_duration_s: config.max_audio_s,
        }),
        transcribe: TranscribeStage::new(
            chain,
            &config.model_dirs(),
            Some((
                cache.clone(),
                Duration::from_secs(config.transcript_cache_ttl_s),
            )),
        ),
        score: Arc::new(ScoreStage::new(ScoreConfig::default())),
        summarize: SummarizeStage::new(
            config.summary.clone(),
            chat.clone(),
            cache,
            Duration::from_secs(config.chat_cache_ttl_s.max(1)),
        ),
        rubric: RubricStage::new(chat.clone()),
        noop: config.bench_noop_transcribe,
    };
    let metrics = Arc::new(metrics::WorkerMetrics::new());
    metrics.watch_providers(pipeline.transcribe.chain(), chat);
    if let Some(addr) =
        shared::metrics::listen_addr(&config.metrics_addr).map_err(anyhow::Error::msg)?
    {
        tokio::spawn(metrics::serve(addr, metrics.clone()));
    }
    let pipeline = Arc::new(Handler {
        pipeline,
        db: db.clone(),
        queue: queue.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
    });

    let name = process_name();
    tracing::info!(worker = %name, "voxq-worker starting");
    let backoff = std::sync::Mutex::new(RestartBackoff::default());
    let mut monitor = Monitor::new()
        .shutdown_timeout(Duration::from_secs(config.shutdown_grace_s))
        .should_restart(move |ctx, error| {
            // Redis errors end an apalis worker; start it again under a new name, after a
            // pause that grows while the failures keep coming (Redis down), so the worker
            // neither spins nor floods the log. apalis asks synchronously, from the
            // monitor's task: `block_in_place` lets the runtime move other tasks away.
            let delay = backoff
                .lock()
                .map(|mut b| b.next(lane_of(ctx.name()), std::time::Instant::now()))
                .unwrap_or(RestartBackoff::MAX);
            tracing::warn!(
                worker = ctx.name(),
                %error,
                delay_ms = delay.as_millis() as u64,
                "lane worker stopped; restarting"
            );
            tokio::task::block_in_place(|| std::thread::sleep(delay));
            true
        });
    for lane in Lane::ALL {
        let concurrency = match lane {
            Lane::Interactive => config.interactive_concurrency,
            Lane::Bulk => config.bulk_concurrency,
        };
        if concurrency == 0 {
            continue;
        }
        let fetch_batch = match config.queue_fetch_batch {
            0 => concurrency,
            n => n,
        };
        let lane_config = shared::queue::lane_config(&config, lane, fetch_batch);
        let (pipeline, name, conn, poll) = (
            pipeline.clone(),
            name.clone(),
            conn.clone(),
            config.poll_interval(),
        );
        monitor = monitor.register(move |restarts| {
            let storage = LaneStorage::new(conn.clone()).with_config(lane_config.clone());
            let pipeline = pipeline.clone();
            WorkerBuilder::new(format!("{name}-{}-{restarts}", lane.as_str()))
                .backend(storage.poll_with_strategy(ArmedInterval(IntervalStrategy::new(poll))))
                .concurrency(concurrency)
                // A panic in a job fails that task instead of the lane worker; the job
                // stays `processing`, and the sweeper retries it until max_attempts.
                .catch_panic()
                .build(move |msg: JobMessage, wrk: WorkerContext| {
                    let pipeline = pipeline.clone();
                    async move { pipeline.handle(msg, lane, wrk.name()).await }
                })
        });
    }

    let purger =
        shared::purge::Purger::new(db.clone(), objects.clone(), conn.clone(), config.clone());
    let dispatcher = tokio::spawn(dispatcher::run(
        db.clone(),
        queue.clone(),
        objects,
        config.clone(),
        name.clone(),
    ));
    let webhooks = tokio::spawn(webhooks::run(db.clone(), config.clone(), metrics));
    let sweeper = tokio::spawn(sweeper::run(
        db,
        queue,
        conn,
        purger,
        config.clone(),
        name.clone(),
    ));
    let result = monitor
        .run_with_signal(shared::shutdown::shutdown_signal())
        .await;
    sweeper.abort();
    dispatcher.abort();
    webhooks.abort();
    tracing::info!("voxq-worker stopped");
    result.map_err(|e| anyhow::anyhow!("worker monitor: {e}"))
}

/// apalis-core 1.0's `IntervalStrategy`, with its next tick always armed. On a tick it
/// installs a fresh timer without polling it, so nothing registers a wake-up for the
/// next tick; when the same poll of the lane's stream also gets an empty fetch, the
/// lane sleeps until its next heartbeat (10 s): a job pushed then waited that long.
/// Polling the new timer once registers the waker (it answers `Pending`).
struct ArmedInterval(IntervalStrategy);

impl PollStrategy for ArmedInterval {
    fn poll_drive(&mut self, cx: &mut TaskContext<'_>, s: &PollSnapshot) -> Poll<Option<()>> {
        let tick = self.0.poll_drive(cx, s);
        if tick.is_ready() {
            while self.0.poll_drive(cx, s).is_ready() {}
        }
        tick
    }
}

/// The lane worker's name without its restart counter (`<process>-<lane>-<n>`).
fn lane_of(worker: &str) -> &str {
    worker.rsplit_once('-').map_or(worker, |(lane, _)| lane)
}

/// Pause before restarting a lane worker: 100 ms after the first failure, doubling while
/// failures follow each other within a minute, at most 5 s; a failure after a quiet
/// minute starts again at 100 ms.
#[derive(Default)]
struct RestartBackoff {
    /// Per lane worker: when it last failed and how many failures in a row.
    streaks: std::collections::HashMap<String, (std::time::Instant, u32)>,
}

impl RestartBackoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
    const QUIET: Duration = Duration::from_secs(60);

    fn next(&mut self, lane: &str, now: std::time::Instant) -> Duration {
        let streak = match self.streaks.get(lane) {
            Some(&(last, n)) if now.duration_since(last) < Self::QUIET => n + 1,
            _ => 0,
        };
        self.streaks.insert(lane.to_string(), (now, streak));
        exponential_delay(Self::FIRST, Self::MAX, streak, 1.0)
    }
}

/// The providers of `transcribe_order`, in that order, as one chain: `local` is the
/// engine loaded here (one replica per job slot, every model of `model_dirs`), any other
/// name a configured remote provider.
async fn transcriber_chain(config: &Arc<Config>) -> anyhow::Result<TranscriberChain> {
    let mut providers: Vec<Arc<dyn Transcriber>> = Vec::new();
    for name in &config.transcribe_order {
        if name == LOCAL_PROVIDER {
            if config.bench_noop_transcribe {
                continue;
            }
            let replicas = (config.interactive_concurrency + config.bulk_concurrency).max(1);
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let engine = EngineConfig {
                compute_type: ComputeType::Int8,
                threads: match config.inference_threads {
                    0 => (cores / replicas).max(1),
                    n => n,
                },
                replicas,
                batch_size: 1,
                vad_model: config.vad_model.clone(),
            };
            // The default model loads now (a worker without it does not start); the
            // named ones the first time a job asks for them.
            let dirs = config.model_dirs();
            let dir = dirs[DEFAULT_MODEL].clone();
            let context = format!("loading the model from '{}'", dir.display());
            let local = tokio::task::spawn_blocking(move || {
                LocalWhisper::load(&dir, &engine, DecodeOptions::default())
            })
            .await?
            .context(context)?
            .with_vad_min_duration(config.vad_min_duration_s);
            providers.push(Arc::new(local.with_models(&dirs)));
        } else if let Some(remote) = config.transcribe_providers.iter().find(|p| &p.name == name) {
            providers.push(providers::transcriber(remote)?);
        }
    }
    Ok(TranscriberChain::new(providers, config.breaker))
}

/// `first * 2^step` times `jitter`, never above `max` (the cap holds after the jitter).
/// Job retries and lane-worker restarts both wait this way.
pub fn exponential_delay(first: Duration, max: Duration, step: u32, jitter: f64) -> Duration {
    let grown = first.saturating_mul(1u32 << step.min(20)).as_secs_f64() * jitter;
    Duration::try_from_secs_f64(grown).map_or(max, |d| d.min(max))
}

/// The configured chat chains, built once for every stage that calls a chat model.
fn chat_tiers(config: &Config) -> anyhow::Result<ChatTiers> {
    let chain = |providers: &[providers::ProviderConfig]| -> anyhow::Result<_> {
        let models = providers
            .iter()
            .map(providers::chat_model)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(ChatChain::new(models, config.breaker)))
    };
    Ok(ChatTiers::new(
        chain(&config.chat_cheap)?,
        chain(&config.chat_strong)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn restart_pause_doubles_while_failures_continue_and_resets_after_a_quiet_minute() {
        let mut b = RestartBackoff::default();
        let t0 = Instant::now();
        let ms = |d: Duration| d.as_millis();
        let pauses: Vec<u128> = (0..8)
            .map(|i| ms(b.next("w-bulk", t0 + Duration::from_secs(i))))
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // Another lane has its own streak.
        assert_eq!(
            ms(b.next("w-interactive", t0 + Duration::from_secs(8))),
            100
        );
        // A failure after a quiet minute starts over.
        assert_eq!(ms(b.next("w-bulk", t0 + Duration::from_secs(7 + 61))), 100);
    }

    #[test]
    fn lane_name_drops_the_restart_counter() {
        assert_eq!(lane_of("host-12-ab-bulk-3"), "host-12-ab-bulk");
        assert_eq!(lane_of("plain"), "plain");
    }
}
