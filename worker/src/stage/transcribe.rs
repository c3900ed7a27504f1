//! Transcribe stage: 16 kHz samples to a [`Transcript`] with the local Whisper engine.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use shared::audio::Audio;
use shared::domain::Transcript;

use crate::whisper::{DecodeOptions, EngineConfig, EngineError, WhisperEngine};

pub struct TranscribeStage {
    engine: WhisperEngine,
    options: DecodeOptions,
}

impl TranscribeStage {
    pub fn load(
        model_dir: &Path,
        config: &EngineConfig,
        options: DecodeOptions,
    ) -> Result<Self, EngineError> {
        let _span = tracing::info_span!("load_model", dir = %model_dir.display()).entered();
        Ok(Self {
            engine: WhisperEngine::load(model_dir, config)?,
            options,
        })
    }

    /// Recordings per model call.
    pub fn batch_size(&self) -> usize {
        self.engine.batch_size()
    }

    /// Model replicas, so callers know how many threads to give it.
    pub fn replicas(&self) -> usize {
        self.engine.replicas()
    }

    /// Transcribes one recording with per-job options (language).
    pub fn run_one(
        &self,
        audio: &Audio,
        options: &DecodeOptions,
    ) -> Result<Transcript, EngineError> {
        let _span = tracing::info_span!("transcribe", duration_s = audio.duration_s()).entered();
        catch_unwind(AssertUnwindSafe(|| {
            self.engine.transcribe(&audio.samples, options)
        }))
        .unwrap_or_else(|panic| {
            Err(EngineError::Inference {
                detail: panic_detail(&*panic),
            })
        })
    }

    /// Transcribes a batch of decoded recordings; one result per input, in order.
    /// A panic inside the engine fails this batch's recordings, never the process.
    pub fn run_batch(&self, audios: &[&Audio]) -> Vec<Result<Transcript, EngineError>> {
        let _span = tracing::info_span!("transcribe", recordings = audios.len()).entered();
        let inputs: Vec<&[f32]> = audios.iter().map(|a| a.samples.as_slice()).collect();
        catch_unwind(AssertUnwindSafe(|| {
            self.engine.transcribe_batch(&inputs, &self.options)
        }))
        .unwrap_or_else(|panic| {
            let detail = panic_detail(&*panic);
            audios
                .iter()
                .map(|_| {
                    Err(EngineError::Inference {
                        detail: detail.clone(),
                    })
                })
                .collect()
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
