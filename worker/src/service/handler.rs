//! One job, start to finish: claim → fetch → decode → transcribe → store.
//!
//! Delivery is at least once, so every step is idempotent: a finished job is not claimed
//! again, and a result version is stored once (see `shared::db::complete_job`).
//! Permanent errors (bad audio, 404, too long, forbidden address) fail the job at once
//! with a stable code. Transient ones (network, S3 5xx) put it back in the queue after
//! an exponential, jittered delay, until `max_attempts`. If PostgreSQL itself is
//! unreachable the error goes back to apalis, which re-delivers the task later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::BoxDynError;
use rand::Rng;
use serde_json::json;
use shared::audio::Audio;
use shared::cache::{key_hash, Cache, RedisCache};
use shared::config::Config;
use shared::db::ClaimedJob;
use shared::domain::{
    AudioSource, JobOptions, JobResult, Lane, StageUsage, Task, Transcript, Usage, LOCAL_PROVIDER,
};
use shared::providers::{TranscriberChain, TranscriptionRequest};
use shared::queue::{JobMessage, JobQueue};
use sqlx::PgPool;
use tracing::Instrument;

use crate::stage::decode::DecodeStage;
use crate::stage::fetch::FetchStage;
use crate::stage::rubric::RubricStage;
use crate::stage::score::ScoreStage;
use crate::stage::summarize::SummarizeStage;
use crate::stage::transcribe::TranscribeStage;
use crate::whisper::DecodeOptions;

pub struct Pipeline {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub queue: JobQueue,
    pub fetch: FetchStage,
    pub decode: DecodeStage,
    /// The local engine; `None` when `transcribe_order` does not name `local`.
    pub transcribe: Option<Arc<TranscribeStage>>,
    /// Remote transcription providers by name, each behind its own circuit breaker.
    pub remote: HashMap<String, TranscriberChain>,
    /// Benchmarks only: no decoding or transcription.
    pub noop: bool,
    pub score: Arc<ScoreStage>,
    pub summarize: Arc<SummarizeStage>,
    pub rubric: Arc<RubricStage>,
    /// Transcripts by audio SHA-256 and options (Redis); `None` disables the cache.
    pub transcript_cache: Option<RedisCache>,
    /// Model name recorded with each result.
    pub model: String,
}

/// Why a run did not produce a transcript.
#[derive(Debug)]
struct RunError {
    code: &'static str,
    message: String,
    transient: bool,
}

/// Milliseconds per stage of one run.
#[derive(Debug, Default)]
struct Timings(serde_json::Map<String, serde_json::Value>);

impl Timings {
    fn record(&mut self, stage: &str, since: Instant) {
        self.0
            .insert(stage.into(), json!(since.elapsed().as_secs_f64() * 1e3));
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.0.clone())
    }
}

impl Pipeline {
    pub async fn handle(
        &self,
        msg: JobMessage,
        lane: Lane,
        worker: &str,
    ) -> Result<(), BoxDynError> {
        let span = tracing::info_span!("job", id = %msg.job_id, lane = lane.as_str());
        self.handle_inner(msg, lane, worker).instrument(span).await
    }

    async fn handle_inner(
        &self,
        msg: JobMessage,
        lane: Lane,
        worker: &str,
    ) -> Result<(), BoxDynError> {
        let job = match shared::db::claim_job(&self.db, msg.job_id, worker).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                tracing::info!("job already finished or unknown: duplicate delivery dropped");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim the job; the queue will re-deliver it");
                return Err(Box::new(e));
            }
        };
        tracing::info!(attempt = job.attempts, "job started");
        // Keep the job visibly alive for the sweeper while it runs.
        let keepalive = {
            let (db, id) = (self.db.clone(), job.id);
            let every = Duration::from_secs(self.config.heartbeat_interval_s.max(1));
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let _ = shared::db::touch_job(&db, id).await;
                }
            }))
        };
        let started = Instant::now();
        let mut timings = Timings::default();
        let outcome = self.process(&job, &mut timings).await;
        timings.record("total", started);

        drop(keepalive);
        let stored = match outcome {
            Ok(result) => {
                let t = Instant::now();
                let r = shared::db::complete_job(
                    &self.db,
                    &job,
                    &result,
                    &self.model,
                    worker,
                    &timings.to_json(),
                )
                .await;
                timings.record("store", t);
                r.map(|stored| tracing::info!(stored, "job completed"))
            }
            Err(e) if e.transient && job.attempts < self.config.max_attempts => {
                let delay = self.backoff(job.attempts);
                tracing::warn!(code = e.code, error = %e.message, retry_in_ms = delay.as_millis() as u64, "transient error; retrying");
                match shared::db::requeue_job(&self.db, job.id, e.code, &e.message).await {
                    Ok(()) => {
                        // The new run's task id is <job>:<attempts>, distinct from this run's.
                        if let Err(qe) = self
                            .queue
                            .push(job.id, lane, job.attempts, Some(delay))
                            .await
                        {
                            tracing::warn!(error = %qe, "retry not enqueued; the sweeper will push it");
                        }
                        Ok(())
                    }
                    Err(db) => Err(db),
                }
            }
            Err(e) => {
                let (code, message) = if e.transient {
                    (
                        "retries-exhausted",
                        format!("gave up after {} attempts: {}", job.attempts, e.message),
                    )
                } else {
                    (e.code, e.message)
                };
                tracing::warn!(code, error = %message, "job failed");
                shared::db::fail_job(&self.db, job.id, code, &message, &timings.to_json()).await
            }
        };
        stored.map_err(|e| {
            tracing::warn!(error = %e, "cannot record the outcome; the queue will re-deliver the job");
            Box::new(e) as BoxDynError
        })
    }

    async fn process(
        &self,
        job: &ClaimedJob,
        timings: &mut Timings,
    ) -> Result<JobResult, RunError> {
        let source =
            AudioSource::parse(&job.source, self.config.fetch_allow_http).map_err(|m| {
                RunError {
                    code: "invalid-source",
                    message: m,
                    transient: false,
                }
            })?;

        let t = Instant::now();
        let bytes = self
            .fetch
            .run(&source)
            .instrument(tracing::info_span!("fetch"))
            .await
            .map_err(|e| RunError {
                code: e.code(),
                message: e.to_string(),
                transient: e.is_transient(),
            })?;
        timings.record("fetch", t);

        let options = job.options.clone();
        let mut usage = Usage::new();
        if self.noop {
            let language = options.language.clone().unwrap_or_else(|| "en".into());
            return Ok(JobResult {
                transcript: Transcript::empty(language, 0.0),
                scores: None,
                summary: None,
                rubric: None,
                usage,
            });
        }

        // Content-hash cache: the same audio with the same options and providers is
        // transcribed once.
        let cache_key = format!(
            "transcript:{}",
            key_hash(&[
                &bytes,
                self.model.as_bytes(),
                self.config.transcribe_order.join(",").as_bytes(),
                options.language.as_deref().unwrap_or("").as_bytes()
            ])
        );
        let cached: Option<Transcript> =
            match (&self.transcript_cache, self.config.transcript_cache_ttl_s) {
                (Some(cache), ttl) if ttl > 0 => {
                    let hit = cache
                        .get(&cache_key)
                        .await
                        .and_then(|v| serde_json::from_str(&v).ok());
                    cache
                        .count(if hit.is_some() {
                            "transcript:hits"
                        } else {
                            "transcript:misses"
                        })
                        .await;
                    hit
                }
                _ => None,
            };
        let was_cached = cached.is_some();

        // Decoding, inference and scoring are CPU-bound: they run off the async threads
        // so the worker's heartbeats keep flowing. Scoring needs the decoded audio even
        // when a remote provider transcribes, so decoding always happens here.
        let ext = source.extension();
        let t = Instant::now();
        let audio = {
            let (decode, bytes, ext) = (self.decode.clone(), bytes.clone(), ext.clone());
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                decode.run_bytes(bytes, ext.as_deref())
            })
            .await
            .map_err(internal)?
            .map_err(|e| RunError {
                code: e.code(),
                message: shared::error_chain(&e),
                transient: e.is_retryable(),
            })?
        };
        let audio = Arc::new(audio);
        timings.record("decode", t);

        let t = Instant::now();
        let (transcript, mut transcribe_usage) = match cached {
            Some(transcript) => (
                transcript,
                StageUsage {
                    provider: "cache".into(),
                    model: self.model.clone(),
                    cached: true,
                    ..StageUsage::default()
                },
            ),
            None => self.transcribe(&audio, bytes, ext, &options).await?,
        };
        transcribe_usage.cpu_ms = ms(t);
        timings.record("transcribe", t);
        usage.insert("transcribe".into(), transcribe_usage);

        let scores = if options.wants(Task::Score) {
            let t = Instant::now();
            let (score, audio, text) = (self.score.clone(), audio.clone(), transcript.clone());
            let scores = tokio::task::spawn_blocking(move || score.run(&audio, &text))
                .await
                .map_err(internal)?;
            timings.record("score", t);
            usage.insert("score".into(), StageUsage::local("signal", ms(t)));
            Some(scores)
        } else {
            None
        };
        if let (false, Some(cache), 1..) = (
            was_cached,
            &self.transcript_cache,
            self.config.transcript_cache_ttl_s,
        ) {
            if let Ok(v) = serde_json::to_string(&transcript) {
                cache
                    .set(
                        &cache_key,
                        v,
                        Duration::from_secs(self.config.transcript_cache_ttl_s),
                    )
                    .await;
            }
        }
        let mut summary = None;
        if options.wants(Task::Summarize) {
            let t = Instant::now();
            let outcome = self
                .summarize
                .run(&transcript.text, options.summary, options.summary_model)
                .instrument(tracing::info_span!("summarize"))
                .await;
            timings.record("summarize", t);
            summary = outcome.summary;
            usage.insert("summarize".into(), outcome.usage);
        }
        let mut rubric = None;
        if let Some(name) = &options.rubric {
            let t = Instant::now();
            let (answer, rubric_usage) = self
                .rubric
                .run(name, &transcript.text, options.summary_model)
                .instrument(tracing::info_span!("rubric", name = %name))
                .await;
            timings.record("rubric", t);
            rubric = Some(answer);
            usage.insert("rubric".into(), rubric_usage);
        }
        Ok(JobResult {
            transcript,
            scores,
            summary,
            rubric,
            usage,
        })
    }

    /// Transcribes with the providers of `transcribe_order`, moving to the next one when a
    /// provider fails in a way another might not.
    async fn transcribe(
        &self,
        audio: &Arc<Audio>,
        bytes: Vec<u8>,
        ext: Option<String>,
        options: &JobOptions,
    ) -> Result<(Transcript, StageUsage), RunError> {
        let bytes = bytes::Bytes::from(bytes);
        let mut last: Option<RunError> = None;
        for name in &self.config.transcribe_order {
            if name == LOCAL_PROVIDER {
                let Some(engine) = self.transcribe.clone() else {
                    continue;
                };
                let audio = audio.clone();
                let decode_options = DecodeOptions {
                    language: options.language.clone(),
                    ..DecodeOptions::default()
                };
                let span = tracing::Span::current();
                let result = tokio::task::spawn_blocking(move || {
                    let _entered = span.enter();
                    engine.run_one(&audio, &decode_options)
                })
                .await
                .map_err(internal)?;
                match result {
                    Ok(t) => return Ok((t, StageUsage::local(self.model.clone(), 0.0))),
                    Err(e) => {
                        tracing::warn!(error = %e, "local transcription failed");
                        last = Some(RunError {
                            code: e.code(),
                            message: e.to_string(),
                            transient: false,
                        });
                    }
                }
            } else if let Some(chain) = self.remote.get(name) {
                let request = TranscriptionRequest {
                    audio: bytes.clone(),
                    file_name: format!("audio.{}", ext.as_deref().unwrap_or("wav")),
                    language: options.language.clone(),
                };
                match chain
                    .transcribe(&request)
                    .instrument(tracing::info_span!("remote", provider = %name))
                    .await
                {
                    Ok(served) => {
                        let usage = served.usage();
                        return Ok((served.value, usage));
                    }
                    Err(e) => {
                        tracing::warn!(provider = %name, error = %e, "remote transcription failed");
                        let transient = e.is_transient();
                        last = Some(RunError {
                            code: e.code(),
                            message: e.to_string(),
                            transient,
                        });
                    }
                }
            }
        }
        Err(last.unwrap_or(RunError {
            code: "no-provider",
            message: "no transcription provider is available".into(),
            transient: false,
        }))
    }

    /// `retry_base_ms * 2^(attempt-1)`, capped at `retry_max_ms`, then ±50% jitter.
    fn backoff(&self, attempt: i32) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let base = self
            .config
            .retry_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.config.retry_max_ms);
        let jitter = rand::rng().random_range(0.5..1.5);
        Duration::from_millis((base as f64 * jitter) as u64)
    }
}

/// Aborts a task when dropped, including when the job's future is cancelled.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn internal(e: tokio::task::JoinError) -> RunError {
    RunError {
        code: "internal-error",
        message: format!("a processing task failed: {e}"),
        transient: false,
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
