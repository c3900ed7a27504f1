//! Container probing, packet decoding and downmixing with Symphonia, plus libopus for Opus
//! (Symphonia has no native Opus decoder, and browser recordings are almost always
//! WebM/Opus or Ogg/Opus).
//!
//! Each decoded packet is averaged to mono and handed straight to the resampler, so memory
//! holds the 16 kHz result and one packet, never the full-rate signal.

use std::io::ErrorKind;
use std::sync::LazyLock;

use symphonia::core::audio::conv::FromSample;
use symphonia::core::audio::sample::Sample;
use symphonia::core::audio::{Audio as _, AudioBuffer, GenericAudioBufferRef};
use symphonia::core::codecs::audio::well_known::profiles::{
    CODEC_PROFILE_AAC_HE, CODEC_PROFILE_AAC_HE_V2, CODEC_PROFILE_AAC_LTP, CODEC_PROFILE_AAC_MAIN,
    CODEC_PROFILE_AAC_SSR, CODEC_PROFILE_AAC_USAC,
};
use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::{
    AudioCodecId, AudioCodecParameters, AudioDecoder, AudioDecoderOptions, CODEC_ID_NULL_AUDIO,
};
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, Track};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia_adapter_libopus::OpusDecoder;
use tracing::{debug, warn};

use super::resample::StreamResampler;
use super::{Audio, DecodeError, DecodeLimits, MIN_BYTES_PER_SECOND, SAMPLE_RATE};

/// Symphonia's built-in decoders plus libopus. Built once: registration is cheap but not free,
/// and the registry is immutable afterwards.
static CODECS: LazyLock<CodecRegistry> = LazyLock::new(|| {
    let mut registry = CodecRegistry::new();
    symphonia::default::register_enabled_codecs(&mut registry);
    registry.register_audio_decoder::<OpusDecoder>();
    registry
});

/// Give up on a file whose first this-many packets all fail: it will not get better, and a
/// 100 MiB file of garbage would otherwise be walked to the end.
const MAX_FAILURES_WITHOUT_AUDIO: u64 = 256;

/// Only the first few bad packets are logged individually, so one corrupt file cannot flood
/// the logs; the total is reported once at the end.
const LOGGED_PACKET_FAILURES: u64 = 10;

/// Lower bound on the bitrate of speech in any supported codec (6 kbit/s Opus is 750 B/s).
/// Used to cap how far a header's declared duration is trusted when pre-allocating; files
/// below it (mostly silence) still decode, their samples vector just grows as it goes.
const RESERVE_BYTES_PER_SECOND: f64 = 500.0;

/// Decodes `source` to 16 kHz mono.
///
/// `head` is the first bytes of the file; when decoding fails without producing audio it
/// decides whether the file was ever audio (→ truncated/corrupt) or not (→ unrecognised),
/// since the probe will happily latch onto a stray MP3 sync word inside random data.
pub(crate) fn decode(
    source: Box<dyn MediaSource>,
    head: &[u8],
    hint_ext: Option<&str>,
    byte_len: u64,
    limits: &DecodeLimits,
) -> Result<Audio, DecodeError> {
    let magic = looks_like_audio(head);

    let mut hint = Hint::new();
    if let Some(ext) = hint_ext
        .map(|ext| ext.trim_start_matches('.'))
        .filter(|ext| !ext.is_empty())
    {
        hint.with_extension(ext);
    }
    let mss = MediaSourceStream::new(source, Default::default());
    let mut reader = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| probe_error(e, magic))?;
    let container = reader.format_info().short_name.to_owned();

    let (mut track, declared_s) = open_track(&*reader)?;
    let codec = track.codec.clone();
    // Both bounds are checked before the first packet: a header is all it takes to ask
    // for hours of samples.
    let plausible_s = byte_len as f64 / MIN_BYTES_PER_SECOND;
    if let Some(seconds) = declared_s {
        if seconds > limits.max_duration_s {
            return Err(DecodeError::TooLong {
                seconds,
                max: limits.max_duration_s,
            });
        }
        if seconds > plausible_s {
            return Err(DecodeError::Implausible {
                seconds,
                bytes: byte_len,
            });
        }
    }

    let mut sink = MonoSink::new(reserve_frames(declared_s, byte_len, limits));
    let mut packets: u64 = 0;
    let mut failed: u64 = 0;

    loop {
        let packet = match reader.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(SymphoniaError::ResetRequired) => {
                // A new chained (Ogg) stream began; its tracks replace the old ones.
                match open_track(&*reader) {
                    Ok((next, _)) => track = next,
                    Err(e) if sink.has_audio() => {
                        warn!(error = %e, "cannot continue into chained stream; keeping audio so far");
                        break;
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            // Streams written by browsers (WebM/Opus via MediaRecorder) and files cut off
            // mid-upload end without a clean end marker; what was decoded is still good.
            Err(SymphoniaError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                if sink.has_audio() {
                    debug!("stream ended without an end marker");
                    break;
                }
                return Err(if magic {
                    DecodeError::Truncated
                } else {
                    DecodeError::Unrecognized {
                        detail: "ended before any audio".to_owned(),
                    }
                });
            }
            Err(SymphoniaError::IoError(e)) => return Err(DecodeError::io(e)),
            // Demuxers cannot resync after a malformed container structure. If the damage is
            // past the start, a partial transcript beats none.
            Err(e) => {
                if sink.has_audio() {
                    warn!(error = %e, seconds = sink.seconds(), "demuxing failed mid-stream; keeping audio so far");
                    break;
                }
                return Err(failure(magic, e.to_string()));
            }
        };
        if packet.track_id != track.id {
            continue;
        }
        packets += 1;

        match track.decoder.decode(&packet) {
            Ok(buf) => sink.push(&buf)?,
            // Per the AudioDecoder contract these only invalidate this packet.
            Err(SymphoniaError::DecodeError(msg)) => {
                failed += 1;
                log_packet_failure(failed, packet.pts.get(), msg);
            }
            Err(SymphoniaError::IoError(e)) => {
                failed += 1;
                log_packet_failure(failed, packet.pts.get(), &e.to_string());
            }
            Err(SymphoniaError::ResetRequired) => {
                // The stream's parameters changed; MonoSink already copes with a new rate or
                // channel count, the decoder only needs its state cleared.
                debug!("decoder requested a reset");
                track.decoder.reset();
            }
            Err(SymphoniaError::Unsupported(msg)) => {
                warn!(codec = %track.codec, detail = msg, "stream uses an unsupported codec feature");
                return Err(DecodeError::UnsupportedCodec {
                    codec: track.codec.clone(),
                });
            }
            Err(e) => {
                return Err(DecodeError::Corrupt {
                    detail: e.to_string(),
                })
            }
        }

        if !sink.has_audio() && failed >= MAX_FAILURES_WITHOUT_AUDIO {
            return Err(failure(
                magic,
                format!("the first {failed} packets failed to decode"),
            ));
        }
        if sink.seconds() > limits.max_duration_s {
            return Err(DecodeError::TooLong {
                seconds: sink.seconds(),
                max: limits.max_duration_s,
            });
        }
        // The same bound for streams that declare no duration, or declare less than
        // they hold.
        if sink.seconds() > plausible_s {
            return Err(DecodeError::Implausible {
                seconds: sink.seconds(),
                bytes: byte_len,
            });
        }
    }
    // The input (for `decode_bytes`, the whole file) is not needed any more: free it
    // before the resampler's last output is appended.
    drop(track);
    drop(reader);

    if failed > LOGGED_PACKET_FAILURES {
        warn!(failed, packets, "skipped corrupt packets");
    }
    if !sink.has_audio() {
        return Err(if !magic {
            DecodeError::Unrecognized {
                detail: format!("{container} reader found no decodable audio"),
            }
        } else if failed > 0 {
            DecodeError::Corrupt {
                detail: format!("none of {packets} packets decoded"),
            }
        } else {
            DecodeError::NoAudioTrack
        });
    }
    if failed * 2 > packets {
        return Err(failure(
            magic,
            format!("{failed} of {packets} packets failed to decode"),
        ));
    }

    let (source_rate, source_channels) = sink.source_format();
    let samples = sink.finish()?;
    Ok(Audio {
        samples,
        source_rate,
        source_channels,
        codec,
        container,
    })
}

/// True when `head` starts like a container or stream this module can read. Only consulted
/// after a failure, to tell a damaged audio file from something that never was one.
pub(crate) fn looks_like_audio(head: &[u8]) -> bool {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let mpeg_sync = matches!(head, [0xff, b, ..] if b & 0xe0 == 0xe0);
    (at(0, b"RIFF") && at(8, b"WAVE"))
        || at(0, b"OggS")
        || at(0, b"fLaC")
        || at(0, &[0x1a, 0x45, 0xdf, 0xa3]) // EBML: Matroska / WebM
        || at(4, b"ftyp") // ISO BMFF: MP4 / M4A
        || at(0, b"ID3")
        || mpeg_sync // MP3 / ADTS AAC without tags
}

fn probe_error(err: SymphoniaError, magic: bool) -> DecodeError {
    match err {
        SymphoniaError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
            if magic {
                DecodeError::Truncated
            } else {
                DecodeError::Unrecognized {
                    detail: e.to_string(),
                }
            }
        }
        SymphoniaError::IoError(e) => DecodeError::io(e),
        // A format reader that recognised its container but not the codec inside, e.g. a WAV
        // with a GSM or MP3 payload. The probe's own "nothing matched" is also `Unsupported`.
        SymphoniaError::Unsupported(msg) if magic && !msg.starts_with("core (probe)") => {
            DecodeError::UnsupportedCodec {
                codec: format!("unknown ({msg})"),
            }
        }
        other => failure(magic, other.to_string()),
    }
}

fn failure(magic: bool, detail: String) -> DecodeError {
    if magic {
        DecodeError::Corrupt { detail }
    } else {
        DecodeError::Unrecognized { detail }
    }
}

fn log_packet_failure(failed: u64, pts: i64, detail: &str) {
    if failed <= LOGGED_PACKET_FAILURES {
        warn!(pts, detail, "skipping undecodable packet");
    } else {
        debug!(pts, detail, "skipping undecodable packet");
    }
}

struct ActiveTrack {
    id: u32,
    decoder: Box<dyn AudioDecoder>,
    codec: String,
}

/// Opens a decoder for the first audio track with a known codec, and returns the track's
/// declared duration in seconds if the container states one.
fn open_track(reader: &dyn FormatReader) -> Result<(ActiveTrack, Option<f64>), DecodeError> {
    let audio_tracks = || {
        reader
            .tracks()
            .iter()
            .filter_map(|t| match &t.codec_params {
                Some(CodecParameters::Audio(params)) => Some((t, params)),
                _ => None,
            })
    };
    let Some((track, params)) = audio_tracks().find(|(_, p)| p.codec != CODEC_ID_NULL_AUDIO) else {
        // Audio tracks whose codec the demuxer could not even name (e.g. RealAudio in MKV).
        if audio_tracks().next().is_some() {
            return Err(DecodeError::UnsupportedCodec {
                codec: "unknown".to_owned(),
            });
        }
        return Err(DecodeError::NoAudioTrack);
    };

    let decoder = CODECS
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymphoniaError::Unsupported(msg) => {
                let codec = codec_name(params);
                warn!(%codec, detail = msg, "no decoder for codec");
                DecodeError::UnsupportedCodec { codec }
            }
            other => DecodeError::Corrupt {
                detail: other.to_string(),
            },
        })?;
    let codec = decoder.codec_info().short_name.to_owned();
    Ok((
        ActiveTrack {
            id: track.id,
            decoder,
            codec,
        },
        declared_seconds(track, params),
    ))
}

fn declared_seconds(track: &Track, params: &AudioCodecParameters) -> Option<f64> {
    if let (Some(frames), Some(rate)) = (track.num_frames, params.sample_rate) {
        if rate > 0 {
            return Some(frames as f64 / f64::from(rate));
        }
    }
    let time = track.time_base?.calc_duration(track.duration?)?;
    Some(time.as_secs_f64())
}

/// How many 16 kHz samples to pre-allocate: the declared duration, but never more than the
/// limit or than the file size could plausibly encode, so a lying header cannot make us
/// reserve gigabytes for a kilobyte file.
fn reserve_frames(declared_s: Option<f64>, byte_len: u64, limits: &DecodeLimits) -> usize {
    let Some(declared) = declared_s else {
        return 0;
    };
    let plausible = byte_len as f64 / RESERVE_BYTES_PER_SECOND;
    let seconds = declared.min(limits.max_duration_s).min(plausible).max(0.0);
    (seconds * f64::from(SAMPLE_RATE)).ceil() as usize
}

/// Name for a codec no registered decoder accepted. AAC is split by profile because
/// "unsupported codec 'aac'" would be baffling when plain AAC works and HE-AAC does not.
fn codec_name(params: &AudioCodecParameters) -> String {
    if params.codec == CODEC_ID_AAC {
        let profile = match params.profile {
            Some(CODEC_PROFILE_AAC_HE) => Some("he-aac"),
            Some(CODEC_PROFILE_AAC_HE_V2) => Some("he-aac-v2"),
            Some(CODEC_PROFILE_AAC_USAC) => Some("xhe-aac"),
            Some(CODEC_PROFILE_AAC_MAIN) => Some("aac-main"),
            Some(CODEC_PROFILE_AAC_SSR) => Some("aac-ssr"),
            Some(CODEC_PROFILE_AAC_LTP) => Some("aac-ltp"),
            _ => None,
        };
        if let Some(profile) = profile {
            return profile.to_owned();
        }
    }
    if let Some(registered) = CODECS.get_audio_decoder(params.codec) {
        return registered.codec.info.short_name.to_owned();
    }
    match well_known_name(params.codec) {
        Some(name) => name.to_owned(),
        None => format!("unknown ({})", params.codec),
    }
}

/// Names for codecs Symphonia can identify but this build cannot decode.
fn well_known_name(id: AudioCodecId) -> Option<&'static str> {
    Some(match id {
        CODEC_ID_ADPCM_G722 => "adpcm_g722",
        CODEC_ID_ADPCM_G726 => "adpcm_g726",
        CODEC_ID_ADPCM_G726LE => "adpcm_g726le",
        CODEC_ID_OPUS => "opus",
        CODEC_ID_SPEEX => "speex",
        CODEC_ID_MUSEPACK => "musepack",
        CODEC_ID_MP1 => "mp1",
        CODEC_ID_MP2 => "mp2",
        CODEC_ID_MP3 => "mp3",
        CODEC_ID_AAC => "aac",
        CODEC_ID_AC3 => "ac3",
        CODEC_ID_EAC3 => "eac3",
        CODEC_ID_AC4 => "ac4",
        CODEC_ID_DCA => "dts",
        CODEC_ID_ATRAC1 => "atrac1",
        CODEC_ID_ATRAC3 => "atrac3",
        CODEC_ID_ATRAC3PLUS => "atrac3plus",
        CODEC_ID_ATRAC9 => "atrac9",
        CODEC_ID_WMA => "wma",
        CODEC_ID_RA10 => "ra_144",
        CODEC_ID_RA20 => "ra_288",
        CODEC_ID_SIPR => "sipr",
        CODEC_ID_COOK => "cook",
        CODEC_ID_SBC => "sbc",
        CODEC_ID_APTX => "aptx",
        CODEC_ID_APTX_HD => "aptx_hd",
        CODEC_ID_LDAC => "ldac",
        CODEC_ID_BINK_AUDIO => "bink_audio",
        CODEC_ID_SMACKER_AUDIO => "smacker_audio",
        CODEC_ID_FLAC => "flac",
        CODEC_ID_WAVPACK => "wavpack",
        CODEC_ID_MONKEYS_AUDIO => "ape",
        CODEC_ID_ALAC => "alac",
        CODEC_ID_TTA => "tta",
        CODEC_ID_RALF => "ralf",
        CODEC_ID_TRUEHD => "truehd",
        CODEC_ID_VORBIS => "vorbis",
        _ => return None,
    })
}

/// Downmixes decoded buffers and feeds them to a resampler for the current source rate.
struct MonoSink {
    /// Per-packet mono scratch, reused so steady-state decoding does not allocate.
    mix: Vec<f32>,
    segment: Option<StreamResampler>,
    /// 16 kHz output of earlier segments. Only used when the source rate changes mid-file
    /// (chained Ogg streams), since a resampler is fixed to one ratio.
    finished: Vec<f32>,
    reserve: usize,
    /// Rate and channel count of the first decoded audio.
    format: Option<(u32, u16)>,
    seconds: f64,
}

impl MonoSink {
    fn new(reserve: usize) -> Self {
        Self {
            mix: Vec::new(),
            segment: None,
            finished: Vec::new(),
            reserve,
            format: None,
            seconds: 0.0,
        }
    }

    fn has_audio(&self) -> bool {
        self.seconds > 0.0
    }

    /// Seconds of source audio decoded so far.
    fn seconds(&self) -> f64 {
        self.seconds
    }

    fn source_format(&self) -> (u32, u16) {
        self.format.unwrap_or((0, 0))
    }

    fn push(&mut self, buf: &GenericAudioBufferRef<'_>) -> Result<(), DecodeError> {
        let frames = buf.frames();
        if frames == 0 {
            return Ok(());
        }
        let rate = buf.spec().rate();
        let planes = buf.num_planes();
        if rate == 0 || planes == 0 {
            return Err(DecodeError::Corrupt {
                detail: "decoder produced audio without channels or sample rate".to_owned(),
            });
        }

        if self.segment.as_ref().map(StreamResampler::source_rate) != Some(rate) {
            self.start_segment(rate)?;
        }
        self.format
            .get_or_insert((rate, u16::try_from(planes).unwrap_or(u16::MAX)));

        downmix(buf, &mut self.mix);
        if let Some(segment) = self.segment.as_mut() {
            segment.push(&self.mix)?;
        }
        self.seconds += frames as f64 / f64::from(rate);
        Ok(())
    }

    fn start_segment(&mut self, rate: u32) -> Result<(), DecodeError> {
        if let Some(previous) = self.segment.take() {
            debug!(
                from = previous.source_rate(),
                to = rate,
                "source sample rate changed"
            );
            let out = previous.finish()?;
            if self.finished.is_empty() {
                self.finished = out;
            } else {
                self.finished.extend_from_slice(&out);
            }
        }
        let mut segment = StreamResampler::new(rate)?;
        segment.reserve(self.reserve.saturating_sub(self.finished.len()));
        self.segment = Some(segment);
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<f32>, DecodeError> {
        let Some(segment) = self.segment else {
            return Ok(self.finished);
        };
        let out = segment.finish()?;
        if self.finished.is_empty() {
            return Ok(out);
        }
        self.finished.extend_from_slice(&out);
        Ok(self.finished)
    }
}

/// Largest sample magnitude kept from a float format (full scale is 1.0).
const MAX_SAMPLE: f32 = 8.0;

/// Averages all channels of `buf` into `out` as `f32`, whatever the decoded sample format.
fn downmix(buf: &GenericAudioBufferRef<'_>, out: &mut Vec<f32>) {
    out.clear();
    out.resize(buf.frames(), 0.0);
    match buf {
        GenericAudioBufferRef::U8(b) => sum_planes(b, out),
        GenericAudioBufferRef::U16(b) => sum_planes(b, out),
        GenericAudioBufferRef::U24(b) => sum_planes(b, out),
        GenericAudioBufferRef::U32(b) => sum_planes(b, out),
        GenericAudioBufferRef::S8(b) => sum_planes(b, out),
        GenericAudioBufferRef::S16(b) => sum_planes(b, out),
        GenericAudioBufferRef::S24(b) => sum_planes(b, out),
        GenericAudioBufferRef::S32(b) => sum_planes(b, out),
        GenericAudioBufferRef::F32(b) => sum_planes(b, out),
        GenericAudioBufferRef::F64(b) => sum_planes(b, out),
    }
    let planes = buf.num_planes();
    if planes > 1 {
        let scale = 1.0 / planes as f32;
        out.iter_mut().for_each(|s| *s *= scale);
    }
    // Float formats can carry NaN, infinities or absurd magnitudes (found by
    // fuzz/pipeline.sh): none of it is sound, and it made the resampler's FFT overflow
    // and panic, and would poison every sum after it. NaN becomes silence; the rest is
    // clipped far above full scale, where scoring still flags it as clipped.
    for s in out.iter_mut() {
        *s = if s.is_nan() {
            0.0
        } else {
            s.clamp(-MAX_SAMPLE, MAX_SAMPLE)
        };
    }
}

fn sum_planes<S>(buf: &AudioBuffer<S>, out: &mut [f32])
where
    S: Sample,
    f32: FromSample<S>,
{
    for plane in buf.iter_planes() {
        for (acc, &sample) in out.iter_mut().zip(plane) {
            *acc += f32::from_sample(sample);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_container_magic() {
        assert!(looks_like_audio(b"RIFF\x24\x00\x00\x00WAVEfmt "));
        assert!(looks_like_audio(b"OggS\x00\x02"));
        assert!(looks_like_audio(b"fLaC\x00\x00\x00\x22"));
        assert!(looks_like_audio(&[0x1a, 0x45, 0xdf, 0xa3, 0x9f]));
        assert!(looks_like_audio(b"\x00\x00\x00\x20ftypM4A "));
        assert!(looks_like_audio(b"ID3\x04\x00"));
        assert!(looks_like_audio(&[0xff, 0xfb, 0x90, 0x00]));
        assert!(!looks_like_audio(b"RIFF\x24\x00\x00\x00AVI LIST"));
        assert!(!looks_like_audio(b"hello world"));
        assert!(!looks_like_audio(b""));
        assert!(!looks_like_audio(&[0xff]));
    }

    #[test]
    fn names_unsupported_aac_profiles() {
        let mut params = AudioCodecParameters::new();
        params
            .for_codec(CODEC_ID_AAC)
            .with_profile(CODEC_PROFILE_AAC_HE);
        assert_eq!(codec_name(&params), "he-aac");
        params.with_profile(CODEC_PROFILE_AAC_HE_V2);
        assert_eq!(codec_name(&params), "he-aac-v2");

        let mut params = AudioCodecParameters::new();
        params.for_codec(CODEC_ID_AC3);
        assert_eq!(codec_name(&params), "ac3");
        params.for_codec(CODEC_ID_OPUS);
        assert_eq!(codec_name(&params), "opus");
        params.for_codec(CODEC_ID_PCM_S16LE);
        assert_eq!(codec_name(&params), "pcm_s16le");
    }

    #[test]
    fn opus_decoder_is_registered() {
        assert!(CODECS.get_audio_decoder(CODEC_ID_OPUS).is_some());
        assert!(CODECS.get_audio_decoder(CODEC_ID_VORBIS).is_some());
        assert!(CODECS.get_audio_decoder(CODEC_ID_AAC).is_some());
    }

    #[test]
    fn reserve_is_capped_by_file_size_and_limit() {
        let limits = DecodeLimits::default();
        assert_eq!(reserve_frames(None, 1 << 20, &limits), 0);
        // 10 s declared in a 1 MB file: trusted.
        assert_eq!(reserve_frames(Some(10.0), 1_000_000, &limits), 160_000);
        // 3 hours declared in a 1 kB file: capped at 2 s.
        assert_eq!(reserve_frames(Some(10_800.0), 1_000, &limits), 32_000);
        // Over the limit: capped at the limit.
        let tight = DecodeLimits {
            max_duration_s: 1.0,
            ..limits
        };
        assert_eq!(reserve_frames(Some(10.0), 1_000_000, &tight), 16_000);
    }
}
