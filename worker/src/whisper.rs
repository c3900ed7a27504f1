//! Local Whisper transcription on CTranslate2 (through `ct2rs`'s low-level
//! `sys::Whisper`), reproducing faster-whisper's `transcribe()`: the same features,
//! prompts, 30-second windows with timestamp seeking, temperature fallback and
//! no-speech rules, so transcripts match the reference implementation.
//!
//! What is ours rather than faster-whisper's: recordings with no speech energy skip
//! the model ([`gate`]), and the first windows of several recordings are encoded and
//! decoded in one batch ([`WhisperEngine::transcribe_batch`]).
//!
//! Optional, as in faster-whisper: word timestamps (`words`, from the model's alignment
//! heads) and Silero voice activity detection (`vad`), which cuts silences out before
//! decoding and maps every time back to the original audio.

mod decoding;
mod gate;
mod mel;
mod options;
mod tokenizer;
mod vad;
mod words;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ct2rs::sys::{Config, Device, Whisper};

pub(crate) use self::decoding::compression_ratio;
use self::mel::MelFrontEnd;
pub use self::options::{ComputeType, DecodeOptions, EngineConfig};
use self::tokenizer::Tokenizer;
pub use self::vad::{
    collect_chunks, restore_timestamps, timestamps_from_probs, SileroVad, SpeechTimestampsMap,
    VadError, VadOptions,
};

/// Errors of the local engine. Each has a stable code for users.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read '{path}'")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model directory is not usable: {detail}")]
    Model { detail: String },
    #[error("inference failed: {detail}")]
    Inference { detail: String },
    #[error("language '{code}' is not supported by this model")]
    UnsupportedLanguage { code: String },
    #[error("language '{code}' was asked of an English-only model; use a multilingual model such as base")]
    EnglishOnlyModel { code: String },
    #[error("voice activity detection is not available: {detail}")]
    VadUnavailable { detail: String },
}

impl EngineError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io-error",
            Self::Model { .. } => "model-error",
            Self::Inference { .. } => "inference-failed",
            Self::UnsupportedLanguage { .. } => "unsupported-language",
            Self::EnglishOnlyModel { .. } => "english-only-model",
            Self::VadUnavailable { .. } => "vad-unavailable",
        }
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The same error again, for another recording of a batch that failed as a whole
    /// (an I/O cause is kept as text, since `io::Error` cannot be cloned).
    fn replicate(&self) -> Self {
        match self {
            Self::Io { path, source } => Self::Inference {
                detail: format!("cannot read '{}': {source}", path.display()),
            },
            Self::Model { detail } => Self::Model {
                detail: detail.clone(),
            },
            Self::Inference { detail } => Self::Inference {
                detail: detail.clone(),
            },
            Self::UnsupportedLanguage { code } => Self::UnsupportedLanguage { code: code.clone() },
            Self::EnglishOnlyModel { code } => Self::EnglishOnlyModel { code: code.clone() },
            Self::VadUnavailable { detail } => Self::VadUnavailable {
                detail: detail.clone(),
            },
        }
    }

    fn inference(e: impl std::fmt::Display) -> Self {
        Self::Inference {
            detail: e.to_string(),
        }
    }
}

/// Whisper log-mel features of 16 kHz samples, mel-major (`[n_mels][n_frames]`), as the
/// engine computes them; for diagnostics and parity checks against other front ends.
/// (The engine itself computes one 30-second window at a time.)
pub fn log_mel_features(samples: &[f32], n_mels: usize) -> (Vec<f32>, usize) {
    let front = MelFrontEnd::new(n_mels);
    let mel = front.prepare(samples);
    (mel.to_vec(), mel.n_frames)
}

/// CTranslate2's name for a compute type.
fn ct2_compute_type(compute_type: ComputeType) -> ct2rs::sys::ComputeType {
    use ct2rs::sys::ComputeType as Ct2;
    match compute_type {
        ComputeType::Int8 => Ct2::INT8,
        ComputeType::Int8Float32 => Ct2::INT8_FLOAT32,
        ComputeType::Float32 => Ct2::FLOAT32,
        ComputeType::Int16 => Ct2::INT16,
        ComputeType::Default => Ct2::DEFAULT,
        ComputeType::Auto => Ct2::AUTO,
    }
}

/// A loaded Whisper model with everything needed to turn 16 kHz samples into text.
pub struct WhisperEngine {
    model: Whisper,
    tokenizer: Tokenizer,
    frontend: MelFrontEnd,
    suppress_tokens: Vec<i32>,
    multilingual: bool,
    batch_size: usize,
    /// The Silero VAD model file, loaded the first time a request asks for `vad_filter`
    /// (a failure is kept: the file does not appear while the worker runs).
    vad_model: PathBuf,
    vad: OnceLock<Result<Arc<SileroVad>, String>>,
}

impl WhisperEngine {
    /// Loads any faster-whisper model directory (tiny to large-v3, `.en` or multilingual).
    pub fn load(model_dir: &Path, config: &EngineConfig) -> Result<Self, EngineError> {
        for file in ["model.bin", "config.json", "tokenizer.json"] {
            if !model_dir.join(file).is_file() {
                return Err(EngineError::Model {
                    detail: format!(
                        "'{}' has no {file} (run scripts/fetch-model.sh)",
                        model_dir.display()
                    ),
                });
            }
        }
        let ct2_config = Config {
            device: Device::CPU,
            compute_type: ct2_compute_type(config.compute_type),
            num_threads_per_replica: config.threads,
            // One entry per replica: CTranslate2 places a replica per listed device.
            device_indices: vec![0; config.replicas.max(1)],
            ..Config::default()
        };
        let model = Whisper::new(model_dir, ct2_config).map_err(|e| EngineError::Model {
            detail: format!("{e:#}"),
        })?;
        let tokenizer = Tokenizer::load(model_dir)?;
        let frontend = MelFrontEnd::new(model.n_mels());
        let suppress_tokens = tokenizer.default_suppress_tokens();
        let multilingual = model.is_multilingual();
        Ok(Self {
            model,
            tokenizer,
            frontend,
            suppress_tokens,
            multilingual,
            batch_size: config.batch_size.max(1),
            vad_model: config.vad_model.clone(),
            vad: OnceLock::new(),
        })
    }

    /// The VAD model, loaded on first use.
    fn vad(&self) -> Result<Arc<SileroVad>, EngineError> {
        self.vad
            .get_or_init(|| {
                SileroVad::load(&self.vad_model)
                    .map(Arc::new)
                    .map_err(|e| shared::error_chain(&e))
            })
            .clone()
            .map_err(|detail| EngineError::VadUnavailable { detail })
    }

    /// Transcribes one recording of 16 kHz mono samples.
    pub fn transcribe(
        &self,
        samples: &[f32],
        options: &DecodeOptions,
    ) -> Result<shared::domain::Transcript, EngineError> {
        self.transcribe_batch(&[samples], options)
            .pop()
            .unwrap_or_else(|| Err(EngineError::inference("no result for the recording")))
    }

    /// Transcribes several recordings, one result per input in the same order. The
    /// first 30-second window of up to `batch_size` recordings is encoded and decoded
    /// in one CTranslate2 call; later windows of long recordings follow one by one,
    /// because their prompts (previous text) differ in length.
    ///
    /// With `vad_filter`, each recording's speech is found first and only that is
    /// decoded (the batch holds the speech of each); times are then mapped back.
    pub fn transcribe_batch(
        &self,
        inputs: &[&[f32]],
        options: &DecodeOptions,
    ) -> Vec<Result<shared::domain::Transcript, EngineError>> {
        if options.vad_filter {
            return self.transcribe_speech(inputs, options);
        }
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(self.batch_size) {
            out.extend(decoding::run(self, chunk, options));
        }
        out
    }

    /// `transcribe_batch` with voice activity detection, as faster-whisper's
    /// `vad_filter`: speech chunks concatenated, decoded, and every segment and word
    /// time mapped back to the original recording. A recording without speech gets an
    /// empty transcript without running the model.
    fn transcribe_speech(
        &self,
        inputs: &[&[f32]],
        options: &DecodeOptions,
    ) -> Vec<Result<shared::domain::Transcript, EngineError>> {
        let vad = match self.vad() {
            Ok(vad) => vad,
            Err(e) => return inputs.iter().map(|_| Err(e.replicate())).collect(),
        };
        let inner = DecodeOptions {
            vad_filter: false,
            ..options.clone()
        };
        let language = options.language.clone().unwrap_or_else(|| "en".into());
        let mut out = Vec::with_capacity(inputs.len());
        for batch in inputs.chunks(self.batch_size) {
            let found: Vec<Vec<Range<usize>>> = batch
                .iter()
                .map(|samples| {
                    let _span = tracing::debug_span!("vad").entered();
                    vad.speech_timestamps(samples, &options.vad)
                })
                .collect();
            let speech: Vec<Vec<f32>> = batch
                .iter()
                .zip(&found)
                .filter(|(_, chunks)| !chunks.is_empty())
                .map(|(samples, chunks)| vad::collect_chunks(samples, chunks))
                .collect();
            let refs: Vec<&[f32]> = speech.iter().map(Vec::as_slice).collect();
            let mut decoded = decoding::run(self, &refs, &inner).into_iter();
            for (samples, chunks) in batch.iter().zip(&found) {
                let duration_s = samples.len() as f64 / mel::SAMPLE_RATE as f64;
                if chunks.is_empty() {
                    out.push(Ok(shared::domain::Transcript::empty(
                        language.clone(),
                        duration_s,
                    )));
                    continue;
                }
                let result = decoded
                    .next()
                    .unwrap_or_else(|| Err(EngineError::inference("no result for the recording")))
                    .map(|mut t| {
                        let map = SpeechTimestampsMap::new(chunks, mel::SAMPLE_RATE);
                        vad::restore_timestamps(&mut t.segments, &map);
                        t.duration_s = duration_s;
                        t
                    });
                out.push(result);
            }
        }
        out
    }
}
