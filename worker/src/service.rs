//! `voxq-worker run`: the queue worker. One apalis worker per lane pulls job ids from
//! Redis, and [`handler`] runs each job through the stages; [`sweeper`] pushes jobs that
//! PostgreSQL holds as queued but Redis does not.

pub mod handler;
pub mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apalis::prelude::*;
use shared::audio::DecodeLimits;
use shared::cache::RedisCache;
use shared::config::Config;
use shared::domain::{Lane, LOCAL_PROVIDER};
use shared::objects::ObjectStore;
use shared::providers::{ChatChain, ChatTiers, TranscriberChain};
use shared::queue::{JobMessage, JobQueue, LaneStorage};

use crate::stage::decode::DecodeStage;
use crate::stage::fetch::FetchStage;
use crate::stage::rubric::RubricStage;
use crate::stage::score::{ScoreConfig, ScoreStage};
use crate::stage::summarize::SummarizeStage;
use crate::stage::transcribe::TranscribeStage;
use crate::whisper::{DecodeOptions, EngineConfig};
use handler::Pipeline;

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
    let wants_local = config.transcribe_order.iter().any(|n| n == LOCAL_PROVIDER);
    let transcribe = if config.bench_noop_transcribe || !wants_local {
        tracing::warn!(
            "bench_noop_transcribe is set: jobs get empty transcripts (benchmarks only)"
        );
        None
    } else {
        let replicas = config.interactive_concurrency + config.bulk_concurrency;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = match config.inference_threads {
            0 => (cores / replicas.max(1)).max(1),
            n => n,
        };
        let engine = EngineConfig {
            compute_type: "int8".into(),
            threads,
            replicas: replicas.max(1),
            batch_size: 1,
        };
        let dir = config.model_dir.clone();
        let stage = tokio::task::spawn_blocking(move || {
            TranscribeStage::load(&dir, &engine, DecodeOptions::default())
        })
        .await?
        .with_context(|| format!("loading the model from '{}'", config.model_dir.display()))?;
        Some(Arc::new(stage))
    };
    let db = shared::db::connect(&config)
        .await
        .context("connecting to PostgreSQL")?;
    let conn = shared::queue::connect_lazy(&config)?;
    let queue = JobQueue::new(&config, conn.clone());
    let objects = ObjectStore::connect(&config).await;
    let model = config
        .model_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "whisper".into());
    let chat = chat_tiers(&config)?;
    let cache = RedisCache::new(conn.clone(), &config.queue_prefix);
    let pipeline = Arc::new(Pipeline {
        fetch: FetchStage::new(objects, &config)?,
        decode: DecodeStage::new(DecodeLimits {
            max_bytes: config.max_fetch_bytes,
            max_duration_s: config.max_audio_s,
        }),
        transcribe,
        remote: config
            .transcribe_providers
            .iter()
            .map(|p| {
                let provider = shared::providers::transcriber(p)?;
                Ok((
                    p.name.clone(),
                    TranscriberChain::new(vec![provider], config.breaker),
                ))
            })
            .collect::<anyhow::Result<_>>()?,
        noop: config.bench_noop_transcribe,
        score: Arc::new(ScoreStage::new(ScoreConfig::default())),
        summarize: Arc::new(SummarizeStage::new(
            config.summary.clone(),
            chat.clone(),
            Arc::new(cache.clone()),
            Duration::from_secs(config.chat_cache_ttl_s.max(1)),
        )),
        rubric: Arc::new(RubricStage::new(chat)),
        transcript_cache: Some(cache),
        model: if config.bench_noop_transcribe {
            "noop".into()
        } else {
            model
        },
        db: db.clone(),
        queue: queue.clone(),
        config: config.clone(),
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
                .backend(storage.poll_with_interval(poll))
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

    let sweeper = tokio::spawn(sweeper::run(db, queue, conn, config.clone(), name.clone()));
    let result = monitor.run_with_signal(shutdown_signal()).await;
    sweeper.abort();
    tracing::info!("voxq-worker stopped");
    result.map_err(|e| anyhow::anyhow!("worker monitor: {e}"))
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
        Self::FIRST
            .saturating_mul(1u32 << streak.min(16))
            .min(Self::MAX)
    }
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested: finishing jobs in flight, starting no new ones");
    Ok(())
}

/// The configured chat chains, built once for every stage that calls a chat model.
fn chat_tiers(config: &Config) -> anyhow::Result<ChatTiers> {
    let chain = |providers: &[shared::providers::ProviderConfig]| -> anyhow::Result<_> {
        let models = providers
            .iter()
            .map(shared::providers::chat_model)
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
