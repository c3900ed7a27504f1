//! The one pipeline: fetch → decode → transcribe → score → summarize → rubric.
//!
//! `voxq-worker run` (the queue worker, [`crate::service::handler`]) and `voxq-worker
//! transcribe` (local mode, [`crate::local`]) both call [`Pipeline::run`] for each
//! recording. They differ only in their [`Source`] (S3 and HTTPS behind the tenant's
//! grants, or files on disk), their caches (Redis or memory) and what they do with the
//! result (store it, or print it). Each stage lives in its own file under `stage/`.

pub mod error;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audio::Audio;
use bytes::Bytes;
use futures::future::BoxFuture;
use shared::domain::{JobOptions, JobResult, Stage, StageUsage, Task, Transcript, Usage};
use tracing::Instrument;
use uuid::Uuid;

use crate::cpu;
use crate::stage::decode::DecodeStage;
use crate::stage::rubric::RubricStage;
use crate::stage::score::ScoreStage;
use crate::stage::summarize::SummarizeStage;
use crate::stage::transcribe::TranscribeStage;
pub use error::StageError;

/// One recording to process.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// `s3://…` or `https://…` (service), or a file path (local mode).
    pub source: &'a str,
    /// The tenant it belongs to: its grants decide what it may read, and cached
    /// transcripts are kept per tenant. `None` in local mode.
    pub tenant: Option<Uuid>,
    pub options: &'a JobOptions,
    /// 1 for the first run of the job.
    pub attempt: i32,
}

/// The fetched recording.
#[derive(Debug)]
pub enum Fetched {
    /// Downloaded into memory, with the extension of its name as a decoding hint.
    Bytes { bytes: Bytes, ext: Option<String> },
    /// A file on disk, decoded straight from it.
    File(PathBuf),
}

impl Fetched {
    /// The extension of the recording's name (`ogg`), lower case.
    pub fn ext(&self) -> Option<String> {
        match self {
            Fetched::Bytes { ext, .. } => ext.clone(),
            Fetched::File(path) => path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase),
        }
    }
}

/// The fetch stage: where recordings come from.
pub trait Source: Send + Sync {
    fn fetch<'a>(&'a self, job: &'a Job<'a>) -> BoxFuture<'a, Result<Fetched, StageError>>;
}

/// What a run leaves besides its result: milliseconds per stage, as stored with the
/// job, and the cache entries it read or wrote (deleted with the job).
#[derive(Debug, Default)]
pub struct Timings {
    stages: serde_json::Map<String, serde_json::Value>,
    pub cache_keys: Vec<String>,
}

impl Timings {
    pub fn record(&mut self, stage: &str, since: Instant) {
        self.stages
            .insert(stage.into(), serde_json::json!(ms(since.elapsed())));
    }
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.stages.clone())
    }
}

pub struct Pipeline {
    pub source: Arc<dyn Source>,
    pub decode: DecodeStage,
    pub transcribe: TranscribeStage,
    pub score: Arc<ScoreStage>,
    pub summarize: SummarizeStage,
    pub rubric: RubricStage,
    /// Benchmarks only: jobs are fetched, then get an empty transcript.
    pub noop: bool,
}

impl Pipeline {
    /// Runs every stage the job asks for. `timings` keeps what was measured even when a
    /// stage fails.
    pub async fn run(&self, job: &Job<'_>, timings: &mut Timings) -> Result<JobResult, StageError> {
        let t = Instant::now();
        let fetched = self
            .source
            .fetch(job)
            .instrument(tracing::info_span!("fetch"))
            .await?;
        timings.record("fetch", t);
        let options = job.options;
        let engine = options.engine();
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

        // The same audio with the same options and providers is transcribed once per
        // tenant; the tenant is part of the key, so one tenant's hit never tells it what
        // another submitted.
        let cache_key = self
            .transcribe
            .cache_key(
                job.tenant,
                &fetched,
                options.language.as_deref(),
                options.model.as_deref(),
                &engine,
            )
            .await;
        timings.cache_keys.extend(cache_key.iter().cloned());
        let cached = match &cache_key {
            Some(key) => self.transcribe.cached(key).await,
            None => None,
        };

        // Scoring needs the decoded audio even when a remote provider transcribes, so
        // decoding always happens. The fetched bytes are kept past decoding only when a
        // provider may need the original file; otherwise decoding consumes them and the
        // samples are the one copy left.
        let wants_file = cached.is_none() && self.transcribe.needs_file();
        let ext = fetched.ext();
        let t = Instant::now();
        let (decoded, file) = self.decode_fetched(fetched, wants_file).await?;
        let audio = Arc::new(decoded);
        timings.record("decode", t);

        let t = Instant::now();
        let (transcribed, cpu) = cpu::metered(async {
            match cached {
                Some(hit) => Ok(hit),
                None => {
                    let request = providers::TranscriptionRequest {
                        audio: file,
                        file_name: format!("audio.{}", ext.as_deref().unwrap_or("wav")),
                        language: options.language.clone(),
                        model: options.model.clone(),
                        engine,
                        decoded: Some(audio.clone()),
                    };
                    self.transcribe.run(&request).await
                }
            }
        })
        .instrument(tracing::info_span!("transcribe"))
        .await;
        let (transcript, transcribe_usage) = transcribed?;
        usage.insert(Stage::Transcribe, measured(transcribe_usage, t, cpu));
        timings.record("transcribe", t);

        let scores = if options.wants(Task::Score) {
            let t = Instant::now();
            let (score, audio, text) = (self.score.clone(), audio.clone(), transcript.clone());
            let (scores, cpu) = cpu::metered(cpu::blocking(move || score.run(&audio, &text)))
                .instrument(tracing::info_span!("score"))
                .await;
            let scores = scores.map_err(StageError::internal)?;
            usage.insert(Stage::Score, measured(StageUsage::local("signal"), t, cpu));
            timings.record("score", t);
            Some(scores)
        } else {
            None
        };
        drop(audio);
        if let (Some(key), Some(used)) = (&cache_key, usage.get(&Stage::Transcribe)) {
            if !used.cached {
                self.transcribe.store(key, &transcript, used).await;
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
            summary = outcome.summary;
            usage.insert(Stage::Summarize, measured(outcome.usage, t, Duration::ZERO));
            timings.record("summarize", t);
        }
        let mut rubric = None;
        if let Some(name) = options.rubric {
            let t = Instant::now();
            let (answer, rubric_usage) = self
                .rubric
                .run(name, &transcript.text, options.summary_model)
                .instrument(tracing::info_span!("rubric", name = name.as_str()))
                .await;
            rubric = Some(answer);
            usage.insert(Stage::Rubric, measured(rubric_usage, t, Duration::ZERO));
            timings.record("rubric", t);
        }
        Ok(JobResult {
            transcript,
            scores,
            summary,
            rubric,
            usage,
        })
    }

    /// Decodes off the async threads (so heartbeats keep flowing), returning the
    /// original file too when `keep_file`.
    async fn decode_fetched(
        &self,
        fetched: Fetched,
        keep_file: bool,
    ) -> Result<(Audio, Bytes), StageError> {
        let decode = self.decode.clone();
        let (decoded, file) = match fetched {
            Fetched::Bytes { bytes, ext } => {
                // One buffer either way: the provider shares it with the decoder.
                let kept = if keep_file {
                    bytes.clone()
                } else {
                    Bytes::new()
                };
                let decoded = cpu::blocking(move || decode.run_bytes(bytes, ext.as_deref()));
                (decoded.await, kept)
            }
            Fetched::File(path) => {
                let kept = if keep_file {
                    let read = tokio::fs::read(&path).await;
                    read.map(Bytes::from).unwrap_or_default()
                } else {
                    Bytes::new()
                };
                (cpu::blocking(move || decode.run(&path)).await, kept)
            }
        };
        Ok((decoded.map_err(StageError::internal)??, file))
    }
}

/// A stage's usage with its wall time since `started` and the CPU time measured (none
/// for the chat stages, whose work is waiting on a remote model).
fn measured(mut usage: StageUsage, started: Instant, cpu: Duration) -> StageUsage {
    usage.wall_ms = ms(started.elapsed());
    usage.cpu_ms = ms(cpu);
    usage
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
