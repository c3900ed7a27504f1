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
use shared::db::{Claim, ClaimedJob, Fenced};
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
use crate::whisper::{DecodeOptions, EngineError};

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
    /// What the client reads: a safe sentence, never an address, upstream body or
    /// internal name (those are in `detail`, which only the log sees).
    message: String,
    detail: String,
    transient: bool,
}

impl RunError {
    /// An error about the client's own input (its file, its URL, its options): the
    /// message names what was wrong with it.
    fn input(code: &'static str, message: String) -> Self {
        Self {
            code,
            detail: message.clone(),
            message,
            transient: false,
        }
    }

    /// An error of the service or an upstream: the client reads the code's fixed
    /// sentence, the log gets `detail`.
    fn upstream(code: &'static str, detail: String, transient: bool) -> Self {
        Self {
            code,
            message: public_message(code).to_string(),
            detail,
            transient,
        }
    }
}

/// The sentence a client reads for an error that is not about its input.
fn public_message(code: &str) -> &'static str {
    match code {
        "forbidden-address" => "the audio URL leads to an address that is not public",
        "unknown-host" => "the audio URL's host name does not resolve",
        "source-not-found" => "the audio was not found",
        "source-denied" => "access to the audio was denied",
        "source-http-error" => "the audio server answered with an unexpected HTTP status",
        "fetch-unavailable" => "the audio could not be fetched",
        "source-error" => "the audio could not be read from object storage",
        "fetch-timeout" => "the audio server did not deliver the file in time",
        "fetch-too-slow" => "the audio server sent the file too slowly",
        "forbidden-port" => "the audio URL names a port that is not allowed",
        "file-too-large" => "the audio is larger than the size limit",
        "too-many-redirects" => "the audio URL redirects too many times",
        "invalid-source" => "the audio URL cannot be fetched",
        "no-provider" => "no transcription provider is available",
        "internal-error" => "an internal error stopped this job",
        c if c.starts_with("provider") || c.starts_with("upstream") => {
            "the transcription provider failed"
        }
        _ => "the job could not be processed",
    }
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
        let claim = shared::db::claim_job(
            &self.db,
            msg.job_id,
            worker,
            self.config.max_attempts,
            self.config.run_lost_after(),
        )
        .await;
        let job = match claim {
            Ok(Claim::Run(job)) => job,
            Ok(Claim::Skip) => {
                tracing::info!("job finished, unknown or running elsewhere: delivery dropped");
                return Ok(());
            }
            Ok(Claim::Exhausted { code }) => {
                tracing::warn!(
                    code,
                    "job used up its attempts; failed instead of run again"
                );
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim the job; the queue will re-deliver it");
                return Err(Box::new(e));
            }
        };
        tracing::info!(attempt = job.attempts, run = %job.run, "job started");
        // Keep the job visibly alive for the sweeper while it runs; a touch that finds
        // the run replaced (this worker was paused past its heartbeats) ends the run.
        let superseded = Arc::new(tokio::sync::Notify::new());
        let keepalive = {
            let (db, id, run, lost) = (self.db.clone(), job.id, job.run, superseded.clone());
            let every = Duration::from_secs(self.config.heartbeat_interval_s.max(1));
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Ok(false) = shared::db::touch_job(&db, id, run).await {
                        lost.notify_one();
                        return;
                    }
                }
            }))
        };
        let started = Instant::now();
        let mut timings = Timings::default();
        let outcome = tokio::select! {
            outcome = self.process(&job, &mut timings) => outcome,
            () = superseded.notified() => {
                tracing::warn!("another run owns this job now; this run stops and writes nothing");
                return Ok(());
            }
        };
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
                r.map(|fenced| log_fenced(fenced, "job completed"))
            }
            Err(e) if e.transient && job.attempts < self.config.max_attempts => {
                let delay = self.backoff(job.attempts);
                tracing::warn!(code = e.code, error = %e.detail, retry_in_ms = delay.as_millis() as u64, "transient error; retrying");
                match shared::db::requeue_job(&self.db, &job, e.code, &e.message).await {
                    Ok(Fenced::Done) => {
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
                    Ok(Fenced::Superseded) => {
                        log_fenced(Fenced::Superseded, "");
                        Ok(())
                    }
                    Err(db) => Err(db),
                }
            }
            Err(e) => {
                let (code, message) = if e.transient {
                    (
                        shared::db::RETRIES_EXHAUSTED,
                        format!("gave up after {} attempts: {}", job.attempts, e.message),
                    )
                } else {
                    (e.code, e.message)
                };
                tracing::warn!(code, error = %e.detail, "job failed");
                shared::db::fail_job(&self.db, &job, code, &message, &timings.to_json())
                    .await
                    .map(|fenced| log_fenced(fenced, "job failed"))
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
        let source = AudioSource::parse(&job.source, self.config.fetch_allow_http)
            .map_err(|m| RunError::input("invalid-source", m))?;
        // The API checked the source at submission; a grant may have been revoked since.
        if let AudioSource::S3 { bucket, key } = &source {
            let allowed = shared::db::may_read_source(
                &self.db,
                job.tenant_id,
                &self.config.s3_bucket,
                bucket,
                key,
            )
            .await
            .map_err(|e| RunError::upstream("internal-error", e.to_string(), true))?;
            if !allowed {
                return Err(RunError::input(
                    "forbidden-source",
                    FORBIDDEN_SOURCE.to_string(),
                ));
            }
        }

        let t = Instant::now();
        let bytes = self
            .fetch
            .run(&source)
            .instrument(tracing::info_span!("fetch"))
            .await
            .map_err(|e| {
                RunError::upstream(e.code(), e.detail(), e.worth_retrying(job.attempts))
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
        // transcribed once per tenant. The tenant is part of the key, so one tenant's hit
        // never tells it what another submitted.
        let cache_key = format!(
            "transcript:{}",
            key_hash(&[
                job.tenant_id.as_bytes(),
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
        // when a remote provider transcribes, so decoding always happens here. The fetched
        // bytes are kept past decoding only when a remote provider may need to be sent
        // them; otherwise decoding consumes them and the PCM is the one copy left.
        let ext = source.extension();
        let keep_bytes = !was_cached && !self.remote.is_empty();
        // One buffer either way: a remote provider shares it with the decoder (no copy).
        let bytes = bytes::Bytes::from(bytes);
        let kept = if keep_bytes {
            bytes.clone()
        } else {
            bytes::Bytes::new()
        };
        let to_decode = bytes;
        let t = Instant::now();
        let audio = {
            let (decode, ext) = (self.decode.clone(), ext.clone());
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                decode.run_bytes(to_decode, ext.as_deref())
            })
            .await
            .map_err(internal)?
            .map_err(|e| RunError {
                code: e.code(),
                message: shared::error_chain(&e),
                detail: shared::error_chain(&e),
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
            None => self.transcribe(&audio, kept, ext, &options).await?,
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

    /// Transcribes with the providers of `transcribe_order`, moving to the next one after
    /// any failure except a request error every provider would refuse (the rule of
    /// `shared::providers::Chain`: `ProviderError::is_fallback_worthy`). A local engine
    /// failure always moves on: a remote model may do what the local one cannot.
    async fn transcribe(
        &self,
        audio: &Arc<Audio>,
        bytes: bytes::Bytes,
        ext: Option<String>,
        options: &JobOptions,
    ) -> Result<(Transcript, StageUsage), RunError> {
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
                        last = Some(match e {
                            EngineError::UnsupportedLanguage { .. } => {
                                RunError::input(e.code(), e.to_string())
                            }
                            _ => RunError::upstream(e.code(), e.to_string(), false),
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
                        // The chain's one rule: a request error every provider would also
                        // refuse (400, 422) ends the search; anything else moves on.
                        if e.last().is_some_and(|last| !last.is_fallback_worthy()) {
                            return Err(RunError::upstream(e.code(), e.to_string(), false));
                        }
                        last = Some(RunError::upstream(
                            e.code(),
                            e.to_string(),
                            e.is_transient(),
                        ));
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            RunError::upstream(
                "no-provider",
                "no provider in transcribe_order".into(),
                false,
            )
        }))
    }

    fn backoff(&self, attempt: i32) -> Duration {
        retry_delay(
            attempt,
            self.config.retry_base_ms,
            self.config.retry_max_ms,
            rand::rng().random_range(0.5..1.5),
        )
    }
}

/// `base_ms * 2^(attempt-1)` times `jitter` (0.5–1.5), never above `max_ms`: the cap
/// holds after the jitter, so `retry_max_ms` is a true maximum.
fn retry_delay(attempt: i32, base_ms: u64, max_ms: u64, jitter: f64) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    let base = base_ms.saturating_mul(1u64 << exp);
    Duration::from_millis(((base as f64 * jitter) as u64).min(max_ms))
}

/// Aborts a task when dropped, including when the job's future is cancelled.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn internal(e: tokio::task::JoinError) -> RunError {
    RunError::upstream(
        "internal-error",
        format!("a processing task failed: {e}"),
        false,
    )
}

/// What a client reads when its job names an S3 object it may not read.
const FORBIDDEN_SOURCE: &str =
    "this tenant may read only its own uploads and the S3 prefixes granted to it";

/// Logs the outcome of a fenced write; a superseded run wrote nothing.
fn log_fenced(fenced: Fenced, done: &str) {
    match fenced {
        Fenced::Done => tracing::info!("{done}"),
        Fenced::Superseded => {
            tracing::warn!("another run owns this job now; this run's outcome was discarded")
        }
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_jitter_and_never_exceed_the_maximum() {
        let ms = |attempt, jitter| retry_delay(attempt, 1_000, 60_000, jitter).as_millis();
        assert_eq!(ms(1, 1.0), 1_000);
        assert_eq!(ms(2, 1.0), 2_000);
        assert_eq!(ms(3, 0.5), 2_000);
        assert_eq!(ms(6, 1.0), 32_000);
        // 64 s × 1.5 would be 96 s: the maximum holds after the jitter.
        assert_eq!(ms(7, 1.5), 60_000);
        assert_eq!(ms(40, 1.49), 60_000);
        assert_eq!(ms(7, 0.5), 32_000);
    }

    #[test]
    fn client_messages_carry_no_upstream_detail() {
        let e = RunError::upstream(
            "forbidden-address",
            "refusing 10.0.0.7 for internal.example".into(),
            false,
        );
        assert!(!e.message.contains("10.0.0.7"), "{}", e.message);
        assert!(e.detail.contains("10.0.0.7"));
        let e = RunError::upstream(
            "fetch-unavailable",
            "S3 is unavailable: minio:9000".into(),
            true,
        );
        assert!(!e.message.contains("minio"), "{}", e.message);
    }
}
