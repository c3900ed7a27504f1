//! Transcribe stage: a decoded recording to a [`Transcript`] through the one fallback
//! chain of `transcribe_order`, with a transcript cache in front.
//!
//! The local Whisper engine is a [`Transcriber`] like any remote provider
//! ([`LocalWhisper`]), so every transcription follows the chain's one rule
//! (`providers::Chain`): providers are tried in order, skipping those whose breaker is
//! open, and the search stops at the first success or at a request error every provider
//! would refuse (a 400 or 422); anything else moves on to the next provider.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use providers::{
    ChainError, Described, ProviderError, Transcriber, TranscriberChain, TranscriptionRequest,
};
use serde::{Deserialize, Serialize};
use shared::cache::{key_hash, Cache};
use shared::domain::{StageUsage, Transcript, LOCAL_PROVIDER};
use uuid::Uuid;

use crate::cpu::{self, ForeignThreads};
use crate::pipeline::Fetched;
use crate::whisper::{DecodeOptions, EngineConfig, EngineError, WhisperEngine};

/// The chain and the transcript cache.
pub struct TranscribeStage {
    chain: TranscriberChain,
    cache: Option<(Arc<dyn Cache>, Duration)>,
}

impl TranscribeStage {
    /// `cache`: where transcripts are kept and for how long; `None` disables it.
    pub fn new(chain: TranscriberChain, cache: Option<(Arc<dyn Cache>, Duration)>) -> Self {
        Self {
            chain,
            cache: cache.filter(|(_, ttl)| !ttl.is_zero()),
        }
    }

    /// Whether a provider of the chain reads the original file.
    pub fn needs_file(&self) -> bool {
        self.chain.needs_file()
    }

    /// The cache key of a recording: tenant, content, providers and language.
    pub async fn cache_key(
        &self,
        tenant: Option<Uuid>,
        fetched: &Fetched,
        language: Option<&str>,
    ) -> Option<String> {
        self.cache.as_ref()?;
        let content = match fetched {
            Fetched::Bytes { bytes, .. } => bytes.clone(),
            Fetched::File(path) => bytes::Bytes::copy_from_slice(&file_digest(path).await?),
        };
        let tenant = tenant.map(|t| t.into_bytes()).unwrap_or_default();
        Some(format!(
            "transcript:{}",
            key_hash(&[
                &tenant,
                &content,
                self.chain.models().join(",").as_bytes(),
                language.unwrap_or("").as_bytes(),
            ])
        ))
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

    /// Transcribes through the chain; the usage names the provider that served it.
    pub async fn run(
        &self,
        request: &TranscriptionRequest,
    ) -> Result<(Transcript, StageUsage), ChainError> {
        let served = self.chain.transcribe(request).await?;
        let usage = served.usage();
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

/// The local Whisper engine as a provider of the chain (`local` in `transcribe_order`).
pub struct LocalWhisper {
    engine: Arc<WhisperEngine>,
    /// Beam size, silence skipping; the language comes with each request.
    options: DecodeOptions,
    /// The model directory's name (`whisper-tiny.en`), recorded with each result.
    model: String,
    /// CTranslate2's replica threads, whose CPU time each call is charged.
    threads: Arc<ForeignThreads>,
}

impl LocalWhisper {
    pub fn load(
        model_dir: &Path,
        config: &EngineConfig,
        options: DecodeOptions,
    ) -> Result<Self, EngineError> {
        let _span = tracing::info_span!("load_model", dir = %model_dir.display()).entered();
        let (engine, threads) =
            ForeignThreads::started_by(|| WhisperEngine::load(model_dir, config));
        let model = model_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "whisper".into());
        Ok(Self {
            engine: Arc::new(engine?),
            options,
            model,
            threads: Arc::new(threads),
        })
    }
}

impl Described for LocalWhisper {
    fn name(&self) -> &str {
        LOCAL_PROVIDER
    }

    fn model(&self) -> &str {
        &self.model
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
            let options = DecodeOptions {
                language: request.language.clone(),
                ..self.options.clone()
            };
            let (engine, threads) = (self.engine.clone(), self.threads.clone());
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
                about_input: matches!(e, EngineError::UnsupportedLanguage { .. }),
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
