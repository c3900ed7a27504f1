//! Decode stage: any supported container/codec to 16 kHz mono f32, within limits.

use std::path::Path;

use shared::audio::{self, Audio, DecodeError, DecodeLimits};

/// Decodes audio files; the heavy lifting (and panic isolation) is in `shared::audio`.
#[derive(Debug, Clone, Default)]
pub struct DecodeStage {
    pub limits: DecodeLimits,
}

impl DecodeStage {
    pub fn new(limits: DecodeLimits) -> Self {
        Self { limits }
    }

    pub fn run(&self, path: &Path) -> Result<Audio, DecodeError> {
        let _span = tracing::info_span!("decode", path = %path.display()).entered();
        let audio = audio::decode_file(path, &self.limits)?;
        tracing::debug!(
            codec = %audio.codec,
            duration_s = audio.duration_s(),
            "decoded"
        );
        Ok(audio)
    }
}

impl DecodeStage {
    /// Decodes an in-memory file; `hint_ext` is its extension, if known.
    pub fn run_bytes(&self, bytes: Vec<u8>, hint_ext: Option<&str>) -> Result<Audio, DecodeError> {
        let _span = tracing::info_span!("decode", bytes = bytes.len()).entered();
        audio::decode_bytes(bytes, hint_ext, &self.limits)
    }
}
