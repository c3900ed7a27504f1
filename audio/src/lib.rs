//! Audio ingestion: turns an uploaded file of any supported container/codec into 16 kHz mono
//! `f32` samples, the only input format the speech models accept.
//!
//! Everything that touches untrusted bytes runs under [`std::panic::catch_unwind`], so a codec
//! bug on a hostile file becomes a [`DecodeError::Panicked`] for that one job instead of taking
//! the worker down. Size and duration limits are enforced before and during decoding so a small
//! file cannot expand into an unbounded amount of memory: the file size, the declared and the
//! decoded duration against the limit, and both durations against the file size
//! ([`MIN_BYTES_PER_SECOND`]). One copy of the samples is made, and the input is freed as soon
//! as it is demuxed.

mod decode;
pub mod energy;
mod resample;

use std::fmt;
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

pub use resample::resample_mono;

/// Fewest bytes a second of audio takes in any file we accept, as declared by the
/// container before decoding and as decoded while decoding.
///
/// A quarter of the least that standard encoders write for a second of digital silence,
/// measured with ffmpeg 6.1 (10 min of silence, mono): AAC-LC at 8 kHz 64 B/s, Vorbis q-1
/// 93 B/s, FLAC 135–190 B/s, Opus 6 kbit/s 377 B/s, MP3 8 kbit/s 1000 B/s. Speech takes far
/// more. So no recording a real device or encoder made is refused, while a crafted header
/// or stream (FLAC with 65 535-sample frames of silence, a 1 kB file declaring an hour)
/// is: at this bound, the 4-hour limit needs at least 230 kB of file.
pub const MIN_BYTES_PER_SECOND: f64 = 16.0;

/// Sample rate of every [`Audio`] produced by this module, in Hz.
pub const SAMPLE_RATE: u32 = 16_000;

/// Decoded, downmixed and resampled audio, ready for inference.
#[derive(Clone, PartialEq)]
pub struct Audio {
    /// Mono samples at [`SAMPLE_RATE`], nominally in `-1.0..=1.0`.
    pub samples: Vec<f32>,
    /// Sample rate of the original stream, in Hz.
    pub source_rate: u32,
    /// Channel count of the original stream.
    pub source_channels: u16,
    /// Short codec name as reported by the decoder (e.g. `opus`, `pcm_s16le`).
    pub codec: String,
    /// Short container name as reported by the demuxer (e.g. `matroska`, `wave`).
    pub container: String,
}

impl Audio {
    /// Duration of [`Audio::samples`] in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / f64::from(SAMPLE_RATE)
    }
}

// Hand-written so that logging an `Audio` prints its shape, not millions of samples.
impl fmt::Debug for Audio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audio")
            .field("samples", &format_args!("[{} x f32]", self.samples.len()))
            .field("duration_s", &self.duration_s())
            .field("source_rate", &self.source_rate)
            .field("source_channels", &self.source_channels)
            .field("codec", &self.codec)
            .field("container", &self.container)
            .finish()
    }
}

/// Resource limits applied while decoding one file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeLimits {
    /// Largest accepted input, in bytes.
    pub max_bytes: u64,
    /// Longest accepted audio, in seconds.
    pub max_duration_s: f64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            max_duration_s: 4.0 * 3600.0,
        }
    }
}

/// Why a file could not be turned into [`Audio`].
///
/// Messages are lower-case and have no final period so they can be shown to users or embedded
/// in other messages; [`DecodeError::code`] is the stable machine-readable form.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty file")]
    Empty,
    #[error("not a recognised audio file")]
    Unrecognized {
        /// What the format probe said, for logs.
        detail: String,
    },
    #[error("no audio track")]
    NoAudioTrack,
    #[error("unsupported codec '{codec}'")]
    UnsupportedCodec { codec: String },
    #[error("truncated file")]
    Truncated,
    #[error("corrupt audio: {detail}")]
    Corrupt { detail: String },
    #[error("file too large: {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge { bytes: u64, max: u64 },
    #[error("audio too long: {seconds:.1} s exceeds the limit of {max:.1} s")]
    TooLong { seconds: f64, max: f64 },
    /// More audio than any real encoder fits in this many bytes: a crafted header, or a
    /// decompression bomb. See [`MIN_BYTES_PER_SECOND`].
    #[error("implausible audio: {seconds:.1} s in a file of {bytes} bytes")]
    Implausible { seconds: f64, bytes: u64 },
    #[error("cannot read the audio")]
    Io {
        #[source]
        source: std::io::Error,
    },
    #[error("decoder crashed: {detail}")]
    Panicked { detail: String },
    #[error("resampling failed: {detail}")]
    Resample { detail: String },
}

impl DecodeError {
    /// Stable kebab-case identifier, suitable for APIs and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty-file",
            Self::Unrecognized { .. } => "unrecognized-format",
            Self::NoAudioTrack => "no-audio-track",
            Self::UnsupportedCodec { .. } => "unsupported-codec",
            Self::Truncated => "truncated-file",
            Self::Corrupt { .. } => "corrupt-audio",
            Self::TooLarge { .. } => "file-too-large",
            Self::TooLong { .. } => "audio-too-long",
            Self::Implausible { .. } => "implausible-duration",
            Self::Io { .. } => "io-error",
            Self::Panicked { .. } => "decoder-panic",
            Self::Resample { .. } => "resample-failed",
        }
    }

    /// Whether trying again later could succeed. Every other variant is a property of the
    /// file itself and will fail the same way on every attempt.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. })
    }

    pub(crate) fn io(source: std::io::Error) -> Self {
        Self::Io { source }
    }
}

/// How many leading bytes [`decode::looks_like_audio`] needs to recognise a container magic.
const HEAD_LEN: usize = 16;

/// Decodes the file at `path` to 16 kHz mono.
///
/// The file extension is passed to the format probe as a hint. The file is streamed, not read
/// into memory up front.
pub fn decode_file(path: &Path, limits: &DecodeLimits) -> Result<Audio, DecodeError> {
    let mut file = File::open(path).map_err(DecodeError::io)?;
    let byte_len = file.metadata().map_err(DecodeError::io)?.len();
    check_size(byte_len, limits)?;

    let mut head = [0u8; HEAD_LEN];
    let head_len = read_head(&mut file, &mut head).map_err(DecodeError::io)?;
    file.seek(SeekFrom::Start(0)).map_err(DecodeError::io)?;

    let hint_ext = path.extension().and_then(|ext| ext.to_str());
    guarded(|| {
        decode::decode(
            Box::new(file),
            &head[..head_len],
            hint_ext,
            byte_len,
            limits,
        )
    })
}

/// Decodes an in-memory file to 16 kHz mono.
///
/// `hint_ext` is the original file extension (with or without the leading dot), if known.
///
/// The bytes are taken by value and freed as soon as the demuxer is done with them, before
/// this returns: a caller that has no further use for them (no remote provider to send them
/// to) should move them in rather than clone them. `bytes::Bytes` works too, so a caller
/// that still needs them shares one buffer instead of copying it.
pub fn decode_bytes<B>(
    bytes: B,
    hint_ext: Option<&str>,
    limits: &DecodeLimits,
) -> Result<Audio, DecodeError>
where
    B: AsRef<[u8]> + Send + Sync + 'static,
{
    let data = bytes.as_ref();
    let byte_len = data.len() as u64;
    check_size(byte_len, limits)?;

    let mut head = [0u8; HEAD_LEN];
    let head_len = data.len().min(HEAD_LEN);
    head[..head_len].copy_from_slice(&data[..head_len]);

    guarded(|| {
        decode::decode(
            Box::new(Cursor::new(bytes)),
            &head[..head_len],
            hint_ext,
            byte_len,
            limits,
        )
    })
}

fn check_size(byte_len: u64, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if byte_len == 0 {
        return Err(DecodeError::Empty);
    }
    if byte_len > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            bytes: byte_len,
            max: limits.max_bytes,
        });
    }
    Ok(())
}

/// Fills as much of `buf` as the file allows; a short file is not an error here.
fn read_head(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Runs `f`, converting a panic into [`DecodeError::Panicked`].
///
/// `AssertUnwindSafe` is sound here because nothing touched by `f` outlives it: the decoder,
/// demuxer and buffers are all created inside the closure and dropped during unwinding.
fn guarded<F>(f: F) -> Result<Audio, DecodeError>
where
    F: FnOnce() -> Result<Audio, DecodeError>,
{
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let detail = if let Some(msg) = payload.downcast_ref::<&str>() {
                (*msg).to_owned()
            } else if let Some(msg) = payload.downcast_ref::<String>() {
                msg.clone()
            } else {
                "unknown panic".to_owned()
            };
            tracing::error!(%detail, "audio decoder panicked");
            Err(DecodeError::Panicked { detail })
        }
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Synthetic WAV files, so tests need no fixtures on disk.

    /// Builds a 16-bit PCM WAV from interleaved samples.
    pub(crate) fn wav_i16(rate: u32, channels: u16, interleaved: &[i16]) -> Vec<u8> {
        let data_len = u32::try_from(interleaved.len() * 2).expect("test data fits a wav");
        let mut out = wav_header(rate, channels, data_len);
        for s in interleaved {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    /// A canonical 44-byte header for 16-bit PCM whose data chunk claims `data_len` bytes.
    pub(crate) fn wav_header(rate: u32, channels: u16, data_len: u32) -> Vec<u8> {
        let block_align = channels * 2;
        let mut out = Vec::with_capacity(44);
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
        out.extend_from_slice(b"WAVE");
        out.extend_from_slice(b"fmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes()); // WAVE_FORMAT_PCM
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        // Wrapping: hostile-header tests use rates whose byte rate overflows u32.
        out.extend_from_slice(&rate.wrapping_mul(u32::from(block_align)).to_le_bytes());
        out.extend_from_slice(&block_align.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        out
    }

    /// `seconds` of a sine at `freq` Hz and amplitude `amp` (0..1), as i16 samples.
    pub(crate) fn sine_i16(rate: u32, freq: f64, amp: f64, seconds: f64) -> Vec<i16> {
        let n = (f64::from(rate) * seconds).round() as usize;
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (amp * 32767.0 * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
            })
            .collect()
    }

    /// Estimated frequency from upward zero crossings, ignoring `skip` samples at each edge
    /// where resampler ramp-up could add spurious crossings.
    pub(crate) fn zero_crossing_freq(samples: &[f32], rate: u32, skip: usize) -> f64 {
        let body = &samples[skip..samples.len() - skip];
        let ups = body
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        ups as f64 / (body.len() as f64 / f64::from(rate))
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    fn limits() -> DecodeLimits {
        DecodeLimits::default()
    }

    #[test]
    fn non_finite_and_absurd_float_samples_are_tamed_not_fatal() {
        // A 32-bit float WAV at 8 kHz (so it is resampled) with NaN, infinities and
        // magnitudes near f32::MAX in it.
        let rate = 8_000u32;
        let mut samples: Vec<f32> = (0..rate).map(|i| (i as f32 * 0.3).sin() * 0.5).collect();
        samples[100] = f32::NAN;
        samples[200] = f32::INFINITY;
        samples[300] = f32::NEG_INFINITY;
        samples[400] = 3.0e38;
        samples[500] = -1.0e30;
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF");
        wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&3u16.to_le_bytes()); // IEEE float
        wav.extend_from_slice(&1u16.to_le_bytes());
        wav.extend_from_slice(&rate.to_le_bytes());
        wav.extend_from_slice(&(rate * 4).to_le_bytes());
        wav.extend_from_slice(&4u16.to_le_bytes());
        wav.extend_from_slice(&32u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
        wav.extend_from_slice(&data);
        let audio = decode_bytes(wav, Some("wav"), &limits()).expect("decodes");
        assert!((audio.duration_s() - 1.0).abs() < 1e-3);
        assert!(audio
            .samples
            .iter()
            .all(|s| s.is_finite() && s.abs() <= 16.0));
        assert!(
            audio.samples.iter().any(|s| s.abs() > 0.1),
            "the sound is kept"
        );
    }

    fn assert_440(audio: &Audio) {
        let f = zero_crossing_freq(&audio.samples, SAMPLE_RATE, 800);
        assert!((f - 440.0).abs() < 2.0, "expected ~440 Hz, got {f:.2} Hz");
    }

    #[test]
    fn decodes_8k_mono_and_upsamples() {
        let wav = wav_i16(8_000, 1, &sine_i16(8_000, 440.0, 0.5, 1.0));
        let audio = decode_bytes(wav, Some("wav"), &limits()).expect("decodes");
        assert_eq!(audio.samples.len(), 16_000);
        assert_eq!(audio.source_rate, 8_000);
        assert_eq!(audio.source_channels, 1);
        assert_eq!(audio.codec, "pcm_s16le");
        assert_eq!(audio.container, "wave");
        assert!((audio.duration_s() - 1.0).abs() < 1e-9);
        assert_440(&audio);
    }

    #[test]
    fn decodes_44k1_stereo_and_downsamples() {
        let mono = sine_i16(44_100, 440.0, 0.5, 2.0);
        let stereo: Vec<i16> = mono.iter().flat_map(|&s| [s, s]).collect();
        let wav = wav_i16(44_100, 2, &stereo);
        let audio = decode_bytes(wav, Some(".wav"), &limits()).expect("decodes");
        assert_eq!(audio.samples.len(), 32_000);
        assert_eq!(audio.source_rate, 44_100);
        assert_eq!(audio.source_channels, 2);
        assert_440(&audio);
        // Amplitude survives downmix + resampling (both channels carry the same signal). The
        // edges are skipped: the abrupt end of the clip rings a little, as any band-limit does.
        let body = &audio.samples[800..audio.samples.len() - 800];
        let peak = body.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!((peak - 0.5).abs() < 0.03, "peak {peak}");
    }

    #[test]
    fn decodes_48k_mono() {
        let wav = wav_i16(48_000, 1, &sine_i16(48_000, 440.0, 0.5, 1.5));
        let audio = decode_bytes(wav, None, &limits()).expect("decodes");
        assert_eq!(audio.samples.len(), 24_000);
        assert_440(&audio);
    }

    #[test]
    fn odd_length_output_is_rounded_up() {
        // 1001 frames at 44.1 kHz is 363.17 frames at 16 kHz.
        let wav = wav_i16(44_100, 1, &vec![0; 1001]);
        let audio = decode_bytes(wav, None, &limits()).expect("decodes");
        assert_eq!(audio.samples.len(), 364);
    }

    #[test]
    fn stereo_downmix_averages_channels() {
        // At 16 kHz nothing is resampled, so the average must come through exactly.
        let frames = 4_000;
        let stereo: Vec<i16> = (0..frames).flat_map(|_| [16_384i16, -8_192]).collect();
        let audio = decode_bytes(wav_i16(16_000, 2, &stereo), None, &limits()).expect("decodes");
        assert_eq!(audio.samples.len(), frames);
        for s in &audio.samples {
            assert!((s - 0.125).abs() < 1e-6, "sample {s}");
        }
    }

    #[test]
    fn empty_input_is_empty() {
        let err = decode_bytes(Vec::new(), Some("wav"), &limits()).unwrap_err();
        assert!(matches!(err, DecodeError::Empty), "{err:?}");
        assert_eq!(err.code(), "empty-file");
    }

    #[test]
    fn random_bytes_are_unrecognized() {
        for seed in [0x9e37_79b9_7f4a_7c15u64, 1, 0xdead_beef, 42] {
            let mut state = seed;
            let bytes: Vec<u8> = (0..8192)
                .map(|_| {
                    // xorshift64: deterministic noise without a rand dependency.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            let err = decode_bytes(bytes, Some("wav"), &limits()).unwrap_err();
            assert!(
                matches!(err, DecodeError::Unrecognized { .. }),
                "seed {seed:#x}: {err:?}"
            );
        }
    }

    #[test]
    fn text_file_is_unrecognized() {
        let bytes = b"hello, this is definitely not audio\n".repeat(100);
        let err = decode_bytes(bytes, Some("mp3"), &limits()).unwrap_err();
        assert_eq!(err.code(), "unrecognized-format", "{err:?}");
    }

    #[test]
    fn a_hostile_sample_rate_fails_its_file_instead_of_exhausting_memory() {
        // A prime rate near u32::MAX would make the resampler ask for ~34 GB buffers.
        let bytes = wav_i16(4_294_967_291, 1, &[0, 1000, -1000, 0].repeat(200));
        let err = decode_bytes(bytes, Some("wav"), &DecodeLimits::default()).expect_err("refused");
        assert!(
            matches!(
                err.code(),
                "resample-failed" | "corrupt-audio" | "unrecognized-format"
            ),
            "{err}"
        );
    }

    #[test]
    fn header_without_data_is_truncated() {
        // Claims one second of audio but the file ends right after the header.
        let wav = wav_header(16_000, 1, 32_000);
        let err = decode_bytes(wav, Some("wav"), &limits()).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated), "{err:?}");
    }

    #[test]
    fn truncated_data_keeps_what_was_decoded() {
        let full = wav_i16(16_000, 1, &sine_i16(16_000, 440.0, 0.5, 1.0));
        for cut in [44 + 1, 44 + 101, 44 + 5_000, 44 + 20_001, full.len() - 1] {
            let result = decode_bytes(full[..cut].to_vec(), Some("wav"), &limits());
            match result {
                Ok(audio) => {
                    assert!(!audio.samples.is_empty());
                    assert!(audio.samples.len() <= (cut - 44) / 2, "cut {cut}");
                }
                Err(DecodeError::Truncated) => {}
                Err(other) => panic!("cut {cut}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_header_never_panics() {
        let full = wav_i16(16_000, 2, &[1, 2, 3, 4]);
        for cut in 1..full.len() {
            // Any error is fine; the point is that a prefix of a header cannot crash us.
            if let Err(err) = decode_bytes(full[..cut].to_vec(), Some("wav"), &limits()) {
                assert!(
                    !matches!(err, DecodeError::Panicked { .. }),
                    "cut {cut}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn declared_duration_over_limit_fails_early() {
        let wav = wav_i16(16_000, 1, &sine_i16(16_000, 440.0, 0.5, 2.0));
        let tight = DecodeLimits {
            max_duration_s: 1.0,
            ..limits()
        };
        let err = decode_bytes(wav, None, &tight).unwrap_err();
        match err {
            DecodeError::TooLong { seconds, max } => {
                assert!((seconds - 2.0).abs() < 1e-9);
                assert!((max - 1.0).abs() < 1e-9);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_declared_duration_the_file_cannot_hold_fails_before_decoding() {
        // 1000 s of 8 kHz 16-bit mono declared in a 1044-byte file: 1 byte per second.
        let mut wav = wav_header(8_000, 1, 16_000_000);
        wav.extend(std::iter::repeat_n(0u8, 1_000));
        let err = decode_bytes(wav, Some("wav"), &limits()).unwrap_err();
        match &err {
            DecodeError::Implausible { seconds, bytes } => {
                assert!((seconds - 1_000.0).abs() < 1e-9, "{seconds}");
                assert_eq!(*bytes, 1_044);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.code(), "implausible-duration");
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            "implausible audio: 1000.0 s in a file of 1044 bytes"
        );

        // At the bound it is only truncated: the same header in a file of 16 bytes per
        // declared second decodes what is there.
        let mut wav = wav_header(8_000, 1, 16_000_000);
        wav.extend(std::iter::repeat_n(0u8, 16_000 - 44));
        let audio = decode_bytes(wav, Some("wav"), &limits()).expect("plausible");
        assert!(!audio.samples.is_empty());
        assert!(audio.samples.len() <= (16_000 - 44) / 2 * 2);
    }

    #[test]
    fn undeclared_duration_over_limit_stops_while_decoding() {
        // A data length of u32::MAX is how streaming writers say "unknown length".
        let mut wav = wav_header(16_000, 1, u32::MAX);
        for s in sine_i16(16_000, 440.0, 0.5, 3.0) {
            wav.extend_from_slice(&s.to_le_bytes());
        }
        let tight = DecodeLimits {
            max_duration_s: 1.0,
            ..limits()
        };
        let err = decode_bytes(wav.clone(), None, &tight).unwrap_err();
        assert_eq!(err.code(), "audio-too-long", "{err:?}");

        // Same file within the limit decodes, proving the length really was undeclared.
        let audio = decode_bytes(wav, None, &limits()).expect("decodes");
        assert_eq!(audio.samples.len(), 48_000);
    }

    #[test]
    fn too_large_is_rejected_before_decoding() {
        let wav = wav_i16(16_000, 1, &[0; 1000]);
        let tiny = DecodeLimits {
            max_bytes: 100,
            ..limits()
        };
        let err = decode_bytes(wav, None, &tiny).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TooLarge {
                    bytes: 2044,
                    max: 100
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.code(), "file-too-large");
    }

    #[test]
    fn decode_file_reads_from_disk_and_checks_size() {
        let path = std::env::temp_dir().join(format!(
            "voxq-audio-test-{}-{:?}.wav",
            std::process::id(),
            std::thread::current().id()
        ));
        let wav = wav_i16(8_000, 1, &sine_i16(8_000, 440.0, 0.5, 1.0));
        let wav_len = wav.len() as u64;
        std::fs::write(&path, wav).expect("write temp wav");

        let audio = decode_file(&path, &limits());
        let too_large = decode_file(
            &path,
            &DecodeLimits {
                max_bytes: wav_len - 1,
                ..limits()
            },
        );
        let _ = std::fs::remove_file(&path);

        let audio = audio.expect("decodes");
        assert_eq!(audio.samples.len(), 16_000);
        assert_440(&audio);
        assert_eq!(too_large.unwrap_err().code(), "file-too-large");
    }

    #[test]
    fn missing_file_is_retryable_io() {
        let err = decode_file(Path::new("/nonexistent/voxq/nothing.wav"), &limits()).unwrap_err();
        assert_eq!(err.code(), "io-error");
        assert!(err.is_retryable());
    }

    #[test]
    fn panics_become_errors() {
        let err = guarded(|| panic!("codec exploded")).unwrap_err();
        match err {
            DecodeError::Panicked { detail } => assert_eq!(detail, "codec exploded"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn codes_are_unique_and_only_io_retries() {
        let all = [
            DecodeError::Empty,
            DecodeError::Unrecognized {
                detail: String::new(),
            },
            DecodeError::NoAudioTrack,
            DecodeError::UnsupportedCodec {
                codec: "he-aac".into(),
            },
            DecodeError::Truncated,
            DecodeError::Corrupt { detail: "x".into() },
            DecodeError::TooLarge { bytes: 2, max: 1 },
            DecodeError::TooLong {
                seconds: 2.0,
                max: 1.0,
            },
            DecodeError::Implausible {
                seconds: 2.0,
                bytes: 1,
            },
            DecodeError::io(std::io::Error::other("disk on fire")),
            DecodeError::Panicked { detail: "x".into() },
            DecodeError::Resample { detail: "x".into() },
        ];
        let mut codes: Vec<_> = all.iter().map(DecodeError::code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        for err in &all {
            assert_eq!(err.is_retryable(), matches!(err, DecodeError::Io { .. }));
            let msg = err.to_string();
            assert!(!msg.ends_with('.'), "{msg}");
            assert!(msg.starts_with(|c: char| c.is_lowercase()), "{msg}");
        }
        assert_eq!(
            DecodeError::UnsupportedCodec {
                codec: "he-aac".into()
            }
            .to_string(),
            "unsupported codec 'he-aac'"
        );
    }
}
