//! Decode stage: any supported container/codec to 16 kHz mono f32, within limits.

use std::path::Path;

use audio::{Audio, DecodeError, DecodeLimits};

/// Decodes audio files; the heavy lifting (and panic isolation) is in `audio`.
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
    ///
    /// The bytes are freed once demuxed, before this returns. Move them in when nothing
    /// else needs them; pass a `bytes::Bytes` (cloning it shares, not copies, the buffer)
    /// when a remote provider may still need them.
    pub fn run_bytes<B>(&self, bytes: B, hint_ext: Option<&str>) -> Result<Audio, DecodeError>
    where
        B: AsRef<[u8]> + Send + Sync + 'static,
    {
        let _span = tracing::info_span!("decode", bytes = bytes.as_ref().len()).entered();
        audio::decode_bytes(bytes, hint_ext, &self.limits)
    }
}
