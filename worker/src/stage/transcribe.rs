//! Transcribe stage: a decoded recording to a [`Transcript`] through the one fallback
//! chain of `transcribe_order`, with a transcript cache in front.
//!
//! The local Whisper engine is a [`Transcriber`] like any remote provider
//! ([`LocalWhisper`]), so every transcription follows the chain's one rule
//! (`providers::Chain`): providers are tried in order, skipping those whose breaker is
//! open, and the search stops at the first success or at a request error every provider
//! would refuse (a 400 or 422); anything else moves on to the next provider.
//!
//! A job may name a local model (`JobOptions::model`: `base`; none is `default`, the
//! `model_dir`). [`LocalWhisper`] holds every configured model and loads a named one the
//! first time a request names it, so a worker that never sees a `base` job never loads
//! it. The stage refuses a name that is not configured (`unknown-model`), records the
//! model that served the job (its directory's name, `whisper-base`) and keys the
//! transcript cache by it.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use providers::{Described, ProviderError, Transcriber, TranscriberChain, TranscriptionRequest};
use serde::{Deserialize, Serialize};
use shared::cache::{key_hash, Cache};
use shared::config::DEFAULT_MODEL;
use shared::domain::{EngineOptions, StageUsage, Transcript, LOCAL_PROVIDER};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::cpu::{self, ForeignThreads};
use crate::pipeline::{Fetched, StageError};
use crate::whisper::{DecodeOptions, EngineConfig, EngineError, WhisperEngine};

/// The chain, the local models jobs may name, and the transcript cache.
pub struct TranscribeStage {
    chain: Arc<TranscriberChain>,
    /// Each local model's name and the label results record (its directory's name).
    models: BTreeMap<String, String>,
    cache: Option<(Arc<dyn Cache>, Duration)>,
}

impl TranscribeStage {
    /// `models`: the local model directories by name (`Config::model_dirs`, which names
    /// `default`). `cache`: where transcripts are kept and for how long; `None` disables it.
    pub fn new(
        chain: impl Into<Arc<TranscriberChain>>,
        models: &BTreeMap<String, PathBuf>,
        cache: Option<(Arc<dyn Cache>, Duration)>,
    ) -> Self {
        Self {
            chain: chain.into(),
            models: models
                .iter()
                .map(|(name, dir)| (name.clone(), model_label(dir)))
                .collect(),
            cache: cache.filter(|(_, ttl)| !ttl.is_zero()),
        }
    }

    /// The name and label of the local model a job names (`None`: `default`).
    fn model<'a>(&'a self, name: Option<&'a str>) -> Result<(&'a str, &'a str), StageError> {
        let name = name.unwrap_or(DEFAULT_MODEL);
        self.models
            .get_key_value(name)
            .map(|(name, label)| (name.as_str(), label.as_str()))
            .ok_or_else(|| {
                let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
                let quoted: String = name.chars().take(64).collect();
                StageError::input(
                    "unknown-model",
                    format!(
                        "model '{quoted}' is not configured (known: {})",
                        known.join(", ")
                    ),
                )
            })
    }

    /// The chain, shared (metrics read its breakers and call counts).
    pub fn chain(&self) -> Arc<TranscriberChain> {
        self.chain.clone()
    }

    /// Whether a provider of the chain reads the original file.
    pub fn needs_file(&self) -> bool {
        self.chain.needs_file()
    }

    /// The cache key of a recording: tenant, content, providers (the local one with the
    /// model the job names), language and engine options (only when not the defaults,
    /// so keys made before those options existed still hit). `None` without a cache, or
    /// for a model that is not configured (the job fails).
    pub async fn cache_key(
        &self,
        tenant: Option<Uuid>,
        fetched: &Fetched,
        language: Option<&str>,
        model: Option<&str>,
        engine: &EngineOptions,
    ) -> Option<String> {
        self.cache.as_ref()?;
        let providers = self.providers(model).ok()?;
        let content = match fetched {
            Fetched::Bytes { bytes, .. } => bytes.clone(),
            Fetched::File(path) => bytes::Bytes::copy_from_slice(&file_digest(path).await?),
        };
        let tenant = tenant.map(|t| t.into_bytes()).unwrap_or_default();
        let engine = match engine.is_default() {
            true => None,
            false => Some(serde_json::to_string(engine).ok()?),
        };
        let providers = providers.join(",");
        let mut parts: Vec<&[u8]> = vec![
            &tenant,
            &content,
            providers.as_bytes(),
            language.unwrap_or("").as_bytes(),
        ];
        parts.extend(engine.as_ref().map(String::as_bytes));
        Some(format!("transcript:{}", key_hash(&parts)))
    }

    /// `provider/model` of each link of the chain, the local engine's naming the model
    /// the job asks for: `local/whisper-tiny.en` for the default model (the key it always
    /// had), `local/base:whisper-base` for a named one.
    fn providers(&self, model: Option<&str>) -> Result<Vec<String>, StageError> {
        let (name, label) = self.model(model)?;
        let local = format!("{LOCAL_PROVIDER}/");
        Ok(self
            .chain
            .models()
            .into_iter()
            .map(|m| {
                if m.starts_with(&local) && name != DEFAULT_MODEL {
                    format!("{local}{name}:{label}")
                } else {
                    m
                }
            })
            .collect())
    }

    /// The cached transcript of `key`, with the usage of a cache hit.
    pub async fn cached(&self, key: &str) -> Option<(Transcript, StageUsage)> {
        let (cache, _) = self.cache.as_ref()?;
        let hit: Option<Cached> = cache
            .get(key)
            .await
            .and_then(|v| serde_json::from_str(&v).ok());
        cache
            .count(if hit.is_some() {
                "transcript:hits"
            } else {
                "transcript:misses"
            })
            .await;
        let hit = hit?;
        let usage = StageUsage {
            provider: "cache".into(),
            model: hit.model,
            cached: true,
            ..StageUsage::default()
        };
        Some((hit.transcript, usage))
    }

    /// Keeps a transcript with the model that made it.
    pub async fn store(&self, key: &str, transcript: &Transcript, usage: &StageUsage) {
        let Some((cache, ttl)) = &self.cache else {
            return;
        };
        let entry = CachedRef {
            transcript,
            model: &usage.model,
        };
        if let Ok(v) = serde_json::to_string(&entry) {
            cache.set(key, v, *ttl).await;
        }
    }

    /// Transcribes through the chain; the usage names the provider and model that
    /// served it. A model name that is not configured fails with `unknown-model` before
    /// any provider is asked.
    pub async fn run(
        &self,
        request: &TranscriptionRequest,
    ) -> Result<(Transcript, StageUsage), StageError> {
        let (_, label) = self.model(request.model.as_deref())?;
        let served = self.chain.transcribe(request).await?;
        let mut usage = served.usage();
        if served.provider == LOCAL_PROVIDER {
            // The chain knows the local engine by its default model.
            usage.model = label.to_string();
        }
        Ok((served.value, usage))
    }
}

/// A cache entry: the transcript and the model that made it.
#[derive(Deserialize)]
struct Cached {
    transcript: Transcript,
    model: String,
}

#[derive(Serialize)]
struct CachedRef<'a> {
    transcript: &'a Transcript,
    model: &'a str,
}

/// SHA-256 of a file, read in pieces (a long recording is never held whole for this).
async fn file_digest(path: &Path) -> Option<[u8; 32]> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let path = path.to_path_buf();
    cpu::blocking(move || {
        let mut file = std::fs::File::open(path).ok()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match file.read(&mut buf).ok()? {
                0 => return Some(hasher.finalize().into()),
                n => hasher.update(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// The local Whisper engine as a provider of the chain (`local` in `transcribe_order`):
/// the configured models by name, `default` loaded at start-up and the others the first
/// time a request names them.
pub struct LocalWhisper {
    models: BTreeMap<String, LocalModel>,
    /// How models are loaded (named ones as the default one).
    config: EngineConfig,
    /// Beam size, silence skipping; the language comes with each request.
    options: DecodeOptions,
    /// The default model directory's name (`whisper-tiny.en`), which the chain records
    /// with each result; the stage names the model that served a named-model job.
    default_label: String,
    /// Requests that leave `vad_filter` unset get VAD above this duration (0: never).
    vad_min_duration_s: f64,
}

/// A model directory and, once loaded, its engine.
struct LocalModel {
    dir: PathBuf,
    loaded: OnceCell<Loaded>,
}

struct Loaded {
    engine: Arc<WhisperEngine>,
    /// CTranslate2's replica threads, whose CPU time each call is charged.
    threads: Arc<ForeignThreads>,
}

impl LocalWhisper {
    /// Loads the model in `model_dir` as `default`. Blocking: call it off the async
    /// threads.
    pub fn load(
        model_dir: &Path,
        config: &EngineConfig,
        options: DecodeOptions,
    ) -> Result<Self, EngineError> {
        let loaded = load_model(model_dir, config)?;
        let default = LocalModel {
            dir: model_dir.to_path_buf(),
            loaded: OnceCell::new_with(Some(loaded)),
        };
        Ok(Self {
            models: BTreeMap::from([(DEFAULT_MODEL.to_string(), default)]),
            config: config.clone(),
            options,
            default_label: model_label(model_dir),
            vad_min_duration_s: 0.0,
        })
    }

    /// Requests that leave `vad_filter` unset get VAD when their audio is longer than
    /// `seconds` (0: only when they ask).
    pub fn with_vad_min_duration(mut self, seconds: f64) -> Self {
        self.vad_min_duration_s = seconds;
        self
    }

    /// Adds the named models of `dirs` (`Config::model_dirs`), each loaded the first time
    /// a request names it; its `default` is the model loaded already.
    pub fn with_models(mut self, dirs: &BTreeMap<String, PathBuf>) -> Self {
        for (name, dir) in dirs.iter().filter(|(name, _)| *name != DEFAULT_MODEL) {
            let model = LocalModel {
                dir: dir.clone(),
                loaded: OnceCell::new(),
            };
            self.models.insert(name.clone(), model);
        }
        self
    }

    /// The decoding options of one request: the worker's, with the request's language
    /// and engine options over them.
    fn decode_options(&self, request: &TranscriptionRequest, samples: usize) -> DecodeOptions {
        let engine = &request.engine;
        let long = self.vad_min_duration_s > 0.0
            && samples as f64 / f64::from(audio::SAMPLE_RATE) > self.vad_min_duration_s;
        let mut options = DecodeOptions {
            language: request.language.clone(),
            word_timestamps: engine.word_timestamps,
            vad_filter: engine.vad_filter.unwrap_or(long),
            ..self.options.clone()
        };
        if let Some(n) = engine.language_detection_segments {
            options.language_detection_segments = n as usize;
        }
        if let Some(t) = engine.language_detection_threshold {
            options.language_detection_threshold = t;
        }
        options
    }

    /// Whether the model named `name` has been loaded.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.models
            .get(name)
            .is_some_and(|m| m.loaded.initialized())
    }

    /// The model named `name`, loaded on first use (on a blocking thread, a panic of
    /// the loader caught). A model that fails to load (`model-unavailable`) is tried
    /// again by the next request that names it.
    async fn model(&self, name: &str) -> Result<&Loaded, ProviderError> {
        let model = self.models.get(name).ok_or_else(|| ProviderError::Local {
            code: "unknown-model",
            message: format!("model '{name}' is not configured"),
            about_input: true,
        })?;
        let unavailable = |detail: String| ProviderError::Local {
            code: "model-unavailable",
            message: format!("model '{name}' could not be loaded: {detail}"),
            about_input: false,
        };
        model
            .loaded
            .get_or_try_init(|| async {
                let (dir, config) = (model.dir.clone(), self.config.clone());
                let loaded = tokio::task::spawn_blocking(move || {
                    catch_unwind(AssertUnwindSafe(|| load_model(&dir, &config))).unwrap_or_else(
                        |panic| {
                            Err(EngineError::Model {
                                detail: panic_detail(&*panic),
                            })
                        },
                    )
                })
                .await
                .map_err(|e| unavailable(e.to_string()))?
                .map_err(|e| unavailable(shared::error_chain(&e)))?;
                tracing::info!(model = name, dir = %model.dir.display(), "model loaded");
                Ok(loaded)
            })
            .await
    }
}

/// Loads one model directory, noting the threads CTranslate2 starts for it. (Threads
/// other work starts meanwhile are noted too; a named model loads while jobs run, so its
/// per-job CPU time may include some of theirs.)
fn load_model(dir: &Path, config: &EngineConfig) -> Result<Loaded, EngineError> {
    let _span = tracing::info_span!("load_model", dir = %dir.display()).entered();
    let (engine, threads) = ForeignThreads::started_by(|| WhisperEngine::load(dir, config));
    Ok(Loaded {
        engine: Arc::new(engine?),
        threads: Arc::new(threads),
    })
}

/// What results record as the model of a directory: its name (`whisper-tiny.en`).
fn model_label(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "whisper".into())
}

impl Described for LocalWhisper {
    fn name(&self) -> &str {
        LOCAL_PROVIDER
    }

    fn model(&self) -> &str {
        &self.default_label
    }
}

impl Transcriber for LocalWhisper {
    fn needs_file(&self) -> bool {
        false
    }

    fn transcribe<'a>(
        &'a self,
        request: &'a TranscriptionRequest,
    ) -> BoxFuture<'a, Result<Transcript, ProviderError>> {
        Box::pin(async move {
            let audio = request
                .decoded
                .clone()
                .ok_or_else(|| ProviderError::Local {
                    code: "inference-failed",
                    message: "the local engine needs the decoded recording".into(),
                    about_input: false,
                })?;
            let model = self
                .model(request.model.as_deref().unwrap_or(DEFAULT_MODEL))
                .await?;
            let options = self.decode_options(request, audio.samples.len());
            let (engine, threads) = (model.engine.clone(), model.threads.clone());
            let (result, engine_cpu) = cpu::blocking(move || {
                threads.measure(|| {
                    // A panic inside the engine fails this recording, never the process.
                    catch_unwind(AssertUnwindSafe(|| {
                        engine.transcribe(&audio.samples, &options)
                    }))
                    .unwrap_or_else(|panic| {
                        Err(EngineError::Inference {
                            detail: panic_detail(&*panic),
                        })
                    })
                })
            })
            .await
            .map_err(|e| ProviderError::Local {
                code: "internal-error",
                message: format!("the transcription task failed: {e}"),
                about_input: false,
            })?;
            cpu::charge(engine_cpu);
            result.map_err(|e| ProviderError::Local {
                code: e.code(),
                message: shared::error_chain(&e),
                about_input: matches!(
                    e,
                    EngineError::UnsupportedLanguage { .. } | EngineError::EnglishOnlyModel { .. }
                ),
            })
        })
    }
}

fn panic_detail(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "engine panicked".into())
}
