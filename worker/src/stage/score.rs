//! Score stage: signal and transcript measurements of one recording, a 0–100 `quality`
//! and flags a bot can act on ("please record that again"). Local, no model call, and
//! deterministic: the same audio and transcript always give the same [`Scores`].
//!
//! What is measured, on the 16 kHz mono samples:
//! - RMS level and peak (dBFS, where a full-scale sine is -3.01 dBFS RMS), and
//!   integrated loudness per ITU-R BS.1770-4 (LUFS), measured by the `ebur128` crate
//!   (libebur128's algorithm, as ffmpeg's `ebur128` filter): K-weighting, 400 ms blocks
//!   with 75 % overlap, absolute gate -70 LUFS, relative gate -10 LU.
//! - The clipping ratio: samples at full scale, or sitting on a flat top (see
//!   [`ScoreConfig::clip_plateau_run`]).
//! - An energy VAD over 30 ms frames ([`audio::energy`]) with an adaptive noise floor,
//!   giving the speech ratio and an SNR estimate.
//!
//! and on the transcript: speaking rate, ASR confidence from the segments' average
//! log-probabilities, the highest no-speech probability, and Whisper's compression ratio.
//!
//! Levels that would be -inf (digital silence) are clamped to [`MIN_DB`] so every field
//! serialises as a JSON number.

use audio::energy::{self, power_db, FrameEnergies};
use audio::{Audio, SAMPLE_RATE};
use ebur128::{EbuR128, Mode};
use shared::domain::{Flag, Scores, Transcript};

use crate::whisper::compression_ratio;

/// The floor of every level in [`Scores`], dB: digital silence, or no gated block.
pub const MIN_DB: f64 = energy::FLOOR_DB;

/// How much a flag takes off `quality` (which starts at 100 and is clamped to 0–100).
///
/// `no_speech` makes a recording unusable whatever else is true. A transcript that may be
/// invented is the next worst thing for a bot that acts on it, then one the model itself
/// doubts. Signal problems cost less: Whisper often copes with them, but the listener and
/// the next stages suffer. A short note may be a perfectly good "yes".
fn penalty(flag: Flag) -> u8 {
    match flag {
        Flag::NoSpeech => 100,
        Flag::TooQuiet => 25,
        Flag::Clipped => 25,
        Flag::Noisy => 25,
        Flag::LowConfidence => 30,
        Flag::PossibleHallucination => 40,
        Flag::TooShort => 15,
    }
}

/// 30 ms VAD frames at 16 kHz.
const VAD_FRAME: usize = 480;
/// One BS.1770 gating block, 400 ms at 16 kHz.
const LOUDNESS_BLOCK: usize = 6_400;
/// Whisper judges the compression ratio per 30 s window, not over a whole transcript.
const WHISPER_WINDOW_S: f64 = 30.0;

/// Thresholds of the scoring stage. The defaults are argued field by field; the fixtures
/// (`scripts/make-fixtures.sh`) sit far from each of them, so the fixture tests check
/// the measurements, not a lucky threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreConfig {
    /// Shorter recordings are `too_short`. Default 1 s: less than two or three words,
    /// usually an accidental tap on the record button.
    pub min_duration_s: f64,
    /// Below this share of speech frames the recording is `no_speech`. Default 0.05:
    /// a single one-syllable word (~0.2 s) in a 4 s note is still 5 %, while stationary
    /// noise and silence measure 0 (the noise floor adapts to them).
    pub min_speech_ratio: f64,
    /// Percentile of 30 ms frame levels taken as the noise floor. Default 0.10: voice
    /// notes pause between phrases (and start and end with a pause) for well over 10 % of
    /// their frames, so this frame is background, not speech.
    pub vad_noise_percentile: f64,
    /// A speech frame is this far above the noise floor, dB. Default 6 dB (4× the power):
    /// stationary noise varies by about ±0.5 dB between 30 ms frames, room noise by a few
    /// dB; weak consonants fall below it, so the speech ratio under-counts, the more so in
    /// noise (the `noisy` fixture: 0.33 against 0.87 clean), which inflates words per
    /// minute. A steady signal less than about 5 dB over the noise is not found at all.
    pub vad_margin_db: f64,
    /// A speech frame is also above this level, dBFS. Default -70, BS.1770's absolute
    /// gate: what the loudness standard treats as silence is never speech here either.
    /// Speech recorded 40 dB too low (the `quiet` fixture, about -60 dBFS) still counts.
    pub vad_floor_dbfs: f64,
    /// Integrated loudness below this is `too_quiet`, LUFS. Default -35: 12 LU under the
    /// EBU R128 broadcast target (-23), where the clean fixtures sit (-20 to -24 LUFS);
    /// a listener would have to turn the volume far up. The `quiet` fixture is -60.
    pub min_lufs: f64,
    /// Mean level of speech frames below this is also `too_quiet`, dBFS. Default -40:
    /// speech-active RMS sits within a few dB of the integrated loudness, so this only
    /// catches quiet speech that something louder (a click, music) lifted above `min_lufs`.
    pub min_speech_dbfs: f64,
    /// A sample this close to full scale is clipped. Default 0.999 (-0.009 dBFS): 16-bit
    /// full scale decodes to 32767/32768 = 0.99997 and -1.0; a clean recording normalised
    /// to 0 dBFS peak only touches it on its single loudest sample.
    pub clip_level: f64,
    /// This many identical consecutive samples at or above `clip_plateau_level` are a
    /// flat top, counted as clipped even below `clip_level` (audio clipped and then turned
    /// down). Default 3: even a 100 Hz tone changes by several 16-bit steps per sample
    /// near its peak, so unclipped audio repeats a sample at most once.
    pub clip_plateau_run: usize,
    /// Lowest magnitude at which a flat top counts as clipping. Default 0.5 (-6 dBFS):
    /// clipped-then-normalised audio peaks near full scale; low-level flat runs are
    /// quantisation, not clipping.
    pub clip_plateau_level: f64,
    /// A clipping ratio above this is `clipped`. Default 0.001 (0.1 %, 16 clipped samples
    /// a second): a few clipped peaks per second, audible as distortion; a single over
    /// on one plosive stays far below it.
    pub max_clipping_ratio: f64,
    /// An SNR estimate below this is `noisy`, dB. Default 10 dB: Whisper's word error rate
    /// rises steeply below about 10 dB SNR in white noise (Radford et al. 2022, fig. 5).
    /// The estimate is (speech + noise) / noise over frames, so it reads a little high at
    /// low SNR (a true 0 dB reads about 3 dB).
    pub min_snr_db: f64,
    /// `asr_confidence` below this is `low_confidence`. Default 0.5, a mean token
    /// log-probability of -0.69: the model gives its own tokens even odds. Clean speech
    /// decodes around -0.1 to -0.4 (confidence 0.67–0.9).
    pub min_asr_confidence: f64,
    /// Whisper's `compression_ratio_threshold` (2.4): text that compresses better than
    /// this is repetitive, the commonest hallucination.
    pub max_compression_ratio: f64,
    /// Whisper's `no_speech_threshold` (0.6) and `logprob_threshold` (-1.0): a segment
    /// whose window the model thinks silent, decoded with low confidence, would have been
    /// dropped as silence; text there is suspect.
    pub no_speech_threshold: f64,
    pub logprob_threshold: f64,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            min_duration_s: 1.0,
            min_speech_ratio: 0.05,
            vad_noise_percentile: 0.10,
            vad_margin_db: 6.0,
            vad_floor_dbfs: -70.0,
            min_lufs: -35.0,
            min_speech_dbfs: -40.0,
            clip_level: 0.999,
            clip_plateau_run: 3,
            clip_plateau_level: 0.5,
            max_clipping_ratio: 0.001,
            min_snr_db: 10.0,
            min_asr_confidence: 0.5,
            max_compression_ratio: 2.4,
            no_speech_threshold: 0.6,
            logprob_threshold: -1.0,
        }
    }
}

/// Scores a recording and its transcript. Cannot fail: every input, including empty
/// audio and an empty transcript, gives finite scores.
#[derive(Debug, Clone, Default)]
pub struct ScoreStage {
    config: ScoreConfig,
}

impl ScoreStage {
    pub fn new(config: ScoreConfig) -> Self {
        Self { config }
    }

    pub fn run(&self, audio: &Audio, transcript: &Transcript) -> Scores {
        let _span = tracing::info_span!("score", duration_s = audio.duration_s()).entered();
        let cfg = &self.config;
        let samples = &audio.samples;

        let mean_square = energy::mean_square(samples);
        let peak = samples
            .iter()
            .fold(0.0f64, |m, &s| m.max(f64::from(s).abs()));
        let lufs = integrated_loudness(samples);
        let vad = Vad::measure(samples, cfg);
        let text = transcript.text.trim();

        let mut scores = Scores {
            quality: 0,
            flags: Vec::new(),
            duration_s: audio.duration_s(),
            loudness_dbfs: power_db(mean_square),
            loudness_lufs: lufs.unwrap_or(MIN_DB),
            peak_dbfs: amplitude_db(peak),
            clipping_ratio: clipping_ratio(samples, cfg),
            speech_ratio: vad.speech_ratio(),
            snr_db: vad.snr_db(),
            words_per_minute: words_per_minute(text, vad.speech_s()),
            asr_confidence: asr_confidence(transcript),
            no_speech_prob: transcript
                .segments
                .iter()
                .map(|s| s.no_speech_prob)
                .fold(0.0, f64::max),
            compression_ratio: windowed_compression_ratio(transcript),
        };

        let no_speech =
            text.is_empty() || scores.speech_ratio < cfg.min_speech_ratio || lufs.is_none();
        let hallucination = scores.compression_ratio > cfg.max_compression_ratio
            || transcript.segments.iter().any(|s| {
                !s.text.trim().is_empty()
                    && s.no_speech_prob > cfg.no_speech_threshold
                    && s.avg_logprob < cfg.logprob_threshold
            });
        // Level, noise and confidence describe the speech; without speech they would only
        // repeat `no_speech` (a silent file is "quiet" and has an SNR of 0).
        let raised = [
            (Flag::NoSpeech, no_speech),
            (
                Flag::TooQuiet,
                !no_speech
                    && (scores.loudness_lufs < cfg.min_lufs
                        || vad.speech_dbfs() < cfg.min_speech_dbfs),
            ),
            (
                Flag::Clipped,
                scores.clipping_ratio > cfg.max_clipping_ratio,
            ),
            (Flag::Noisy, !no_speech && scores.snr_db < cfg.min_snr_db),
            (
                Flag::LowConfidence,
                !no_speech && scores.asr_confidence < cfg.min_asr_confidence,
            ),
            (Flag::PossibleHallucination, hallucination),
            (Flag::TooShort, scores.duration_s < cfg.min_duration_s),
        ];
        let mut quality: u8 = 100;
        for (flag, on) in raised {
            if on {
                scores.flags.push(flag);
                quality = quality.saturating_sub(penalty(flag));
            }
        }
        scores.quality = quality;
        scores
    }
}

fn amplitude_db(amplitude: f64) -> f64 {
    power_db(amplitude * amplitude)
}

/// Share of samples at full scale or on a flat top. A sample is counted once even when
/// both rules match.
///
/// The flat-top rule catches clipping that happened before a gain change (peaks then sit
/// below `clip_level`). Clipping before resampling to 16 kHz turns flat tops into ripple
/// that overshoots full scale, which the level rule catches instead.
fn clipping_ratio(samples: &[f32], cfg: &ScoreConfig) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut clipped = 0usize;
    let mut i = 0;
    while i < samples.len() {
        let s = samples[i];
        let mut run = 1;
        while i + run < samples.len() && samples[i + run] == s {
            run += 1;
        }
        let magnitude = f64::from(s.abs());
        if magnitude >= cfg.clip_level
            || (run >= cfg.clip_plateau_run && magnitude >= cfg.clip_plateau_level)
        {
            clipped += run;
        }
        i += run;
    }
    clipped as f64 / samples.len() as f64
}

/// Integrated loudness (ITU-R BS.1770-4, mono: channel weight 1), LUFS; `None` when
/// nothing passes the -70 LUFS absolute gate (silence, or no samples at all).
///
/// A recording shorter than one 400 ms block has no gating block, so no integrated
/// loudness; dropping it would call any short word silent. It is measured as a single
/// block of its own length instead, gated like one: the meter's momentary loudness is the
/// K-weighted energy of the last 400 ms, which is then the whole recording and zeros
/// before it, so 10·log10(400 ms / length) more is the recording's own mean.
fn integrated_loudness(samples: &[f32]) -> Option<f64> {
    const ABSOLUTE_GATE: f64 = -70.0;
    if samples.is_empty() {
        return None;
    }
    // The errors are for a meter of no channel, a zero rate or a mode without `I`.
    let mut meter = EbuR128::new(1, SAMPLE_RATE, Mode::I).expect("a mono 16 kHz meter");
    meter.add_frames_f32(samples).expect("one channel");
    let lufs = if samples.len() >= LOUDNESS_BLOCK {
        meter.loudness_global().expect("mode I")
    } else {
        meter.loudness_momentary().expect("mode I includes M")
            + 10.0 * (LOUDNESS_BLOCK as f64 / samples.len() as f64).log10()
    };
    // -inf without a gated block or without energy; NaN (from non-finite samples, which
    // the decoder never gives) would not serialise as a number either.
    (lufs.is_finite() && lufs > ABSOLUTE_GATE).then_some(lufs)
}

/// The energy VAD's verdict over 30 ms frames.
#[derive(Debug, Default)]
struct Vad {
    frames: usize,
    speech_frames: usize,
    /// Mean power of speech and of non-speech frames.
    speech_power: f64,
    noise_power: f64,
}

impl Vad {
    /// Frame levels are compared with `max(noise floor + margin, absolute floor)`, the
    /// noise floor being a low percentile of the frame levels, so the detector adapts to
    /// each recording's background. A trailing partial frame is ignored.
    fn measure(samples: &[f32], cfg: &ScoreConfig) -> Self {
        let frames = FrameEnergies::measure(samples, VAD_FRAME);
        let Some(noise_floor) = frames.percentile_db(cfg.vad_noise_percentile) else {
            return Self::default();
        };
        let threshold = (noise_floor + cfg.vad_margin_db).max(cfg.vad_floor_dbfs);

        let (mut speech, mut noise) = ((0usize, 0.0f64), (0usize, 0.0f64));
        for &p in frames.powers() {
            let bucket = if power_db(p) > threshold {
                &mut speech
            } else {
                &mut noise
            };
            bucket.0 += 1;
            bucket.1 += p;
        }
        Self {
            frames: frames.len(),
            speech_frames: speech.0,
            speech_power: speech.1 / speech.0.max(1) as f64,
            noise_power: noise.1 / noise.0.max(1) as f64,
        }
    }

    fn speech_ratio(&self) -> f64 {
        if self.frames == 0 {
            0.0
        } else {
            self.speech_frames as f64 / self.frames as f64
        }
    }

    fn speech_s(&self) -> f64 {
        (self.speech_frames * VAD_FRAME) as f64 / f64::from(SAMPLE_RATE)
    }

    /// Mean speech-frame level, dBFS ([`MIN_DB`] without speech).
    fn speech_dbfs(&self) -> f64 {
        power_db(self.speech_power)
    }

    /// Mean speech-frame power over mean noise-frame power, dB, clamped to 0–60.
    ///
    /// 0 when there is no speech frame (no signal above the noise). Speech frames are
    /// above every noise frame, so the ratio is never negative. The noise floor is a
    /// frame level, so some frame is always noise; when the pauses are digital silence
    /// the noise power is [`MIN_DB`] and the ratio meaningless beyond 60 dB, where it
    /// stops.
    fn snr_db(&self) -> f64 {
        if self.speech_frames == 0 {
            return 0.0;
        }
        (power_db(self.speech_power) - power_db(self.noise_power)).clamp(0.0, 60.0)
    }
}

/// Words (white-space separated) per minute of VAD speech; 0 without speech.
fn words_per_minute(text: &str, speech_s: f64) -> f64 {
    if speech_s <= 0.0 {
        return 0.0;
    }
    text.split_whitespace().count() as f64 / (speech_s / 60.0)
}

/// exp of the duration-weighted mean segment `avg_logprob`, in 0–1; 0 without segments.
/// When no segment has a positive duration the mean is unweighted.
fn asr_confidence(transcript: &Transcript) -> f64 {
    let segments = &transcript.segments;
    if segments.is_empty() {
        return 0.0;
    }
    let total: f64 = segments.iter().map(|s| (s.end - s.start).max(0.0)).sum();
    let mean = if total > 0.0 {
        segments
            .iter()
            .map(|s| s.avg_logprob * (s.end - s.start).max(0.0))
            .sum::<f64>()
            / total
    } else {
        segments.iter().map(|s| s.avg_logprob).sum::<f64>() / segments.len() as f64
    };
    let confidence = mean.exp();
    if confidence.is_nan() {
        0.0
    } else {
        confidence.clamp(0.0, 1.0)
    }
}

/// Whisper's zlib compression ratio, judged as Whisper judges it: per 30 s window.
///
/// For a transcript that fits one window (most voice notes) this is the ratio of the
/// whole trimmed text. Longer ones are split into windows of segments starting within
/// 30 s of the window's first segment, and the highest window's ratio is reported:
/// natural prose compresses better the longer it gets (about 2.1 at 8 KB), so the whole
/// text of a long monologue would cross Whisper's 2.4 without any repetition.
/// Empty text gives 0 (no bytes to compress; never a hallucination).
fn windowed_compression_ratio(transcript: &Transcript) -> f64 {
    let segments = &transcript.segments;
    let fits_one_window = segments
        .last()
        .zip(segments.first())
        .is_none_or(|(last, first)| last.start - first.start < WHISPER_WINDOW_S);
    if fits_one_window {
        return compression_ratio(transcript.text.trim());
    }
    let mut worst = 0.0f64;
    let mut window: Vec<&str> = Vec::new();
    let mut window_start = segments[0].start;
    for segment in segments {
        if segment.start - window_start >= WHISPER_WINDOW_S {
            worst = worst.max(compression_ratio(&window.join(" ")));
            window.clear();
            window_start = segment.start;
        }
        let text = segment.text.trim();
        if !text.is_empty() {
            window.push(text);
        }
    }
    worst.max(compression_ratio(&window.join(" ")))
}

#[cfg(test)]
mod tests {
    use std::f64::consts::PI;
    use std::path::{Path, PathBuf};

    use audio::{decode_file, DecodeLimits};
    use shared::domain::Segment;

    use super::*;

    fn audio(samples: Vec<f32>) -> Audio {
        Audio {
            samples,
            source_rate: SAMPLE_RATE,
            source_channels: 1,
            codec: "pcm_f32le".into(),
            container: "wave".into(),
        }
    }

    fn sine(freq: f64, amp: f64, seconds: f64) -> Vec<f32> {
        let n = (f64::from(SAMPLE_RATE) * seconds).round() as usize;
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(SAMPLE_RATE)).sin()) as f32)
            .collect()
    }

    /// Uniform white noise with the given RMS (xorshift: deterministic, no rand).
    fn noise(n: usize, rms: f64, seed: u64) -> Vec<f32> {
        let mut x = seed;
        let amp = rms * 3f64.sqrt();
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (amp * ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)) as f32
            })
            .collect()
    }

    /// One segment over the whole recording, as a confident decode would give.
    fn transcript(text: &str, duration_s: f64) -> Transcript {
        Transcript {
            text: text.into(),
            language: "en".into(),
            language_probability: None,
            duration_s,
            segments: vec![segment(0.0, duration_s, text, -0.3, 0.05)],
        }
    }

    fn segment(start: f64, end: f64, text: &str, avg_logprob: f64, nsp: f64) -> Segment {
        Segment {
            start,
            end,
            text: text.into(),
            avg_logprob,
            no_speech_prob: nsp,
            words: None,
        }
    }

    /// A "voice note": `seconds` of a 200 Hz tone at -17 dBFS between two 0.5 s pauses of
    /// digital silence.
    fn tone_note(seconds: f64) -> Vec<f32> {
        [
            vec![0.0; 8_000],
            sine(200.0, 0.2, seconds),
            vec![0.0; 8_000],
        ]
        .concat()
    }

    fn score(samples: Vec<f32>, text: &str) -> Scores {
        let audio = audio(samples);
        let transcript = transcript(text, audio.duration_s());
        ScoreStage::default().run(&audio, &transcript)
    }

    fn has(scores: &Scores, flag: Flag) -> bool {
        scores.flags.contains(&flag)
    }

    #[test]
    fn full_scale_sine_is_minus_3_dbfs_and_minus_3_lufs() {
        let s = score(sine(1_000.0, 1.0, 5.0), "a tone");
        assert!(
            (s.loudness_dbfs + 3.0103).abs() < 0.01,
            "{}",
            s.loudness_dbfs
        );
        assert!(s.peak_dbfs.abs() < 0.01, "{}", s.peak_dbfs);
        // -3.01 at 48 kHz; the bilinear transform's warping lifts 1 kHz by 0.05 dB at
        // 16 kHz (-2.964, the same filters in double precision elsewhere).
        assert!(
            (s.loudness_lufs + 2.964).abs() < 0.005,
            "{}",
            s.loudness_lufs
        );
        // Loudness scales with level, dB for dB.
        let quiet = score(sine(1_000.0, 0.1, 5.0), "a tone");
        assert!((quiet.loudness_dbfs + 23.0103).abs() < 0.01);
        assert!((quiet.loudness_lufs - (s.loudness_lufs - 20.0)).abs() < 1e-6);
        assert!(!has(&quiet, Flag::Clipped), "{:?}", quiet.flags);
    }

    #[test]
    fn the_rlb_filter_discounts_low_frequencies() {
        // The RLB high-pass: 20 Hz counts much less than 1 kHz at the same level.
        let low = score(sine(20.0, 0.5, 5.0), "x").loudness_lufs;
        let mid = score(sine(1_000.0, 0.5, 5.0), "x").loudness_lufs;
        assert!(mid - low > 5.0, "20 Hz {low}, 1 kHz {mid}");
    }

    #[test]
    fn shorter_than_a_block_is_measured_as_one_block() {
        // One sample either side of the 400 ms block: the momentary reading scaled to the
        // recording's own length, against the meter's single gated block.
        let tone = sine(1_000.0, 0.5, 1.0);
        let short = integrated_loudness(&tone[..LOUDNESS_BLOCK - 1]).unwrap();
        let block = integrated_loudness(&tone[..LOUDNESS_BLOCK]).unwrap();
        assert!((short - block).abs() < 0.001, "{short} against {block}");
        // A fifth of a block reads as the steady tone does.
        let steady = integrated_loudness(&tone).unwrap();
        let fifth = integrated_loudness(&tone[..LOUDNESS_BLOCK / 5]).unwrap();
        assert!((fifth - steady).abs() < 0.05, "{fifth} against {steady}");
        // The absolute gate applies: about -75 LUFS is silence, -63 is not.
        assert_eq!(integrated_loudness(&sine(1_000.0, 2.5e-4, 0.3)), None);
        assert!(integrated_loudness(&sine(1_000.0, 1e-3, 0.3)).is_some());
        assert_eq!(integrated_loudness(&[]), None);
    }

    #[test]
    fn flag_names_are_their_serde_names_in_listing_order() {
        for flag in Flag::ALL {
            let name = flag.as_str();
            assert_eq!(serde_json::to_value(flag).unwrap(), name);
            assert_eq!(serde_json::from_value::<Flag>(name.into()).unwrap(), flag);
            assert_eq!(flag.to_string(), name);
        }
        // Half a second of hard-clipped noise under a repetitive, doubted transcript
        // raises four flags at once, listed in `Flag::ALL`'s order.
        let mut t = transcript("the the the the the the the the the the the the the", 0.5);
        t.segments[0].avg_logprob = -2.0;
        let loud: Vec<f32> = noise(8_000, 2.0, 5)
            .into_iter()
            .map(|s| s.clamp(-1.0, 1.0))
            .collect();
        let s = ScoreStage::default().run(&audio(loud), &t);
        assert_eq!(
            s.flags,
            [
                Flag::NoSpeech,
                Flag::Clipped,
                Flag::PossibleHallucination,
                Flag::TooShort
            ]
        );
        let mut listed = s.flags.clone();
        listed.sort_by_key(|f| Flag::ALL.iter().position(|a| a == f));
        assert_eq!(s.flags, listed);
    }

    #[test]
    fn hard_clipped_sine_is_clipped() {
        let square: Vec<f32> = sine(220.0, 4.0, 3.0)
            .into_iter()
            .map(|s| s.clamp(-1.0, 1.0))
            .collect();
        let s = score(square.clone(), "a loud tone");
        assert!(s.clipping_ratio > 0.5, "{}", s.clipping_ratio);
        assert!(has(&s, Flag::Clipped), "{:?}", s.flags);
        // Clipped, then turned down 3 dB: the flat tops give it away.
        let turned_down: Vec<f32> = square.iter().map(|s| s * 0.7).collect();
        let s = score(turned_down, "a loud tone");
        assert!(s.clipping_ratio > 0.5, "{}", s.clipping_ratio);
        assert!(has(&s, Flag::Clipped));
    }

    #[test]
    fn silence_and_empty_audio_are_no_speech_with_finite_scores() {
        for samples in [vec![0.0; 48_000], Vec::new(), vec![0.0; 100]] {
            let empty = Transcript::empty("en", 0.0);
            let s = ScoreStage::default().run(&audio(samples.clone()), &empty);
            assert!(has(&s, Flag::NoSpeech), "{:?}", s.flags);
            assert_eq!(s.quality, 0);
            assert_eq!(s.loudness_dbfs, MIN_DB);
            assert_eq!(s.loudness_lufs, MIN_DB);
            assert_eq!(s.peak_dbfs, MIN_DB);
            assert_eq!(
                (s.speech_ratio, s.snr_db, s.words_per_minute),
                (0.0, 0.0, 0.0)
            );
            assert_eq!((s.asr_confidence, s.compression_ratio), (0.0, 0.0));
            // No -inf or NaN: serde_json would write them as null.
            let json = serde_json::to_string(&s).unwrap();
            assert!(!json.contains("null"), "{json}");
            // Text over digital silence is still no speech (signal alone decides).
            let s = score(samples, "hello there");
            assert!(has(&s, Flag::NoSpeech), "{:?}", s.flags);
        }
    }

    /// 10 s of white noise at -40 dBFS RMS (seeded), with a 500 Hz tone of RMS `tone_rms`
    /// added in every other half second.
    fn tone_bursts_in_noise(tone_rms: f64, seed: u64) -> Vec<f32> {
        let n = 10 * SAMPLE_RATE as usize;
        let tone = sine(500.0, tone_rms * 2f64.sqrt(), 10.0);
        noise(n, 0.01, seed)
            .into_iter()
            .zip(tone)
            .enumerate()
            .map(|(i, (n, t))| if (i / 8_000) % 2 == 0 { n + t } else { n })
            .collect()
    }

    #[test]
    fn snr_of_tone_bursts_in_white_noise() {
        // Noise at -40 dBFS all along; a tone at -20 dBFS RMS every other half second.
        let s = score(tone_bursts_in_noise(0.1, 7), "beep beep beep beep beep");
        // (S + N) / N for S/N = 20 dB is 20.04 dB.
        assert!((s.snr_db - 20.0).abs() < 1.0, "{}", s.snr_db);
        // Frames straddling a burst's edges count as speech too.
        assert!((s.speech_ratio - 0.5).abs() < 0.05, "{}", s.speech_ratio);
        assert!(
            !has(&s, Flag::Noisy) && !has(&s, Flag::NoSpeech),
            "{:?}",
            s.flags
        );
        // Five words in 5 s of "speech".
        assert!(
            (s.words_per_minute - 60.0).abs() < 5.0,
            "{}",
            s.words_per_minute
        );

        // The same bursts 7 dB over the noise are noisy. (Much closer to the noise, a
        // steady tone no longer clears the VAD's 6 dB margin; speech is peakier.)
        let s = score(
            tone_bursts_in_noise(0.01 * 10f64.powf(7.0 / 20.0), 8),
            "beep beep beep beep beep",
        );
        assert!((s.snr_db - 7.8).abs() < 1.0, "{}", s.snr_db);
        assert!(has(&s, Flag::Noisy), "{:?}", s.flags);
    }

    #[test]
    fn stationary_noise_is_not_speech() {
        let s = score(noise(48_000, 0.1, 3), "hello");
        assert!(s.speech_ratio < 0.01, "{}", s.speech_ratio);
        assert!(has(&s, Flag::NoSpeech));
    }

    #[test]
    fn transcript_measures() {
        let t = Transcript {
            text: "one two three four".into(),
            language: "en".into(),
            language_probability: None,
            duration_s: 4.0,
            segments: vec![
                segment(0.0, 3.0, "one two three", -0.1, 0.01),
                segment(3.0, 4.0, "four", -0.5, 0.3),
            ],
        };
        let s = ScoreStage::default().run(&audio(tone_note(3.0)), &t);
        let want = ((3.0 * -0.1 + 1.0 * -0.5) / 4.0f64).exp();
        assert!((s.asr_confidence - want).abs() < 1e-12);
        assert_eq!(s.no_speech_prob, 0.3);
        assert_eq!(s.compression_ratio, compression_ratio("one two three four"));

        // Zero-length segments: plain mean.
        let mut t0 = t.clone();
        for seg in &mut t0.segments {
            seg.end = seg.start;
        }
        let s = ScoreStage::default().run(&audio(Vec::new()), &t0);
        assert!((s.asr_confidence - (-0.3f64).exp()).abs() < 1e-12);
    }

    #[test]
    fn hallucination_rules_are_whispers() {
        let stage = ScoreStage::default();
        let a = audio(tone_note(3.0));
        let repeated = "the the the the the the the the the the the the the the the";
        let s = stage.run(&a, &transcript(repeated, 4.0));
        assert!(s.compression_ratio > 2.4);
        assert!(has(&s, Flag::PossibleHallucination));

        let mut t = transcript("Thanks for watching!", 4.0);
        t.segments[0].no_speech_prob = 0.9;
        t.segments[0].avg_logprob = -1.2;
        let s = stage.run(&a, &t);
        assert!(has(&s, Flag::PossibleHallucination), "{:?}", s.flags);
        assert!(has(&s, Flag::LowConfidence), "{:?}", s.flags);
        // Either condition alone is not enough (Whisper needs both to call it silence).
        t.segments[0].avg_logprob = -0.5;
        assert!(!has(&stage.run(&a, &t), Flag::PossibleHallucination));
    }

    #[test]
    fn compression_ratio_is_judged_per_30s_window() {
        // A long message that says the same sentence once a minute: the whole text
        // compresses very well, each window holds one plain sentence.
        let sentence = "Please call the office back on the main number before five o'clock today.";
        let segments: Vec<Segment> = (0..6)
            .map(|i| {
                segment(
                    60.0 * f64::from(i),
                    60.0 * f64::from(i) + 5.0,
                    sentence,
                    -0.2,
                    0.01,
                )
            })
            .collect();
        let text = [sentence; 6].join(" ");
        assert!(compression_ratio(&text) > 2.4);
        let t = Transcript {
            text,
            language: "en".into(),
            language_probability: None,
            duration_s: 330.0,
            segments,
        };
        let r = windowed_compression_ratio(&t);
        assert!((r - compression_ratio(sentence)).abs() < 1e-12, "{r}");
    }

    #[test]
    fn quality_subtracts_one_penalty_per_flag() {
        let clean = score(tone_note(2.0), "one two three four five");
        assert!(clean.flags.is_empty(), "{:?}", clean.flags);
        assert_eq!(clean.quality, 100);
        let short = score(
            [vec![0.0; 2_000], sine(200.0, 0.2, 0.5), vec![0.0; 2_000]].concat(),
            "yes",
        );
        assert_eq!(short.flags, [Flag::TooShort]);
        assert_eq!(short.quality, 100 - penalty(Flag::TooShort));
    }

    // ------------------------------------------------------------------ fixtures

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures")
            .join(rel)
    }

    fn spoken_text(file: &str) -> String {
        let tsv = std::fs::read_to_string(fixture("voice/transcripts.tsv")).unwrap();
        tsv.lines()
            .find_map(|l| l.strip_prefix(file)?.strip_prefix('\t'))
            .unwrap_or_else(|| panic!("{file} not in transcripts.tsv"))
            .to_string()
    }

    /// Scores a fixture twice (must be equal) with the text espeak-ng spoke; the edge
    /// files are all made from `09-parking`.
    fn score_fixture(rel: &str, text_of: &str) -> Scores {
        let audio = decode_file(&fixture(rel), &DecodeLimits::default()).unwrap();
        let t = transcript(&spoken_text(text_of), audio.duration_s());
        let stage = ScoreStage::default();
        let s = stage.run(&audio, &t);
        assert_eq!(s, stage.run(&audio, &t), "{rel}: not deterministic");
        eprintln!(
            "{rel:28} q={:3} dbfs={:7.2} lufs={:7.2} peak={:6.2} clip={:.5} speech={:.3} \
             snr={:5.2} wpm={:6.1} conf={:.3} cr={:.3} flags={:?}",
            s.quality,
            s.loudness_dbfs,
            s.loudness_lufs,
            s.peak_dbfs,
            s.clipping_ratio,
            s.speech_ratio,
            s.snr_db,
            s.words_per_minute,
            s.asr_confidence,
            s.compression_ratio,
            s.flags
        );
        s
    }

    const PARKING: &str = "09-parking.flac";

    #[test]
    fn fixture_clipped_is_clipped() {
        let s = score_fixture("edge/clipped.wav", PARKING);
        assert!(has(&s, Flag::Clipped), "{:?}", s.flags);
        assert!(s.clipping_ratio > 0.01, "{}", s.clipping_ratio);
    }

    #[test]
    fn fixture_silence_is_no_speech() {
        let s = score_fixture("edge/silence-3s.wav", PARKING);
        assert!(has(&s, Flag::NoSpeech), "{:?}", s.flags);
        assert_eq!(s.quality, 0);
    }

    #[test]
    fn fixture_noisy_is_noisy() {
        let s = score_fixture("edge/noisy.wav", PARKING);
        assert!(has(&s, Flag::Noisy), "{:?}", s.flags);
        assert!(!has(&s, Flag::NoSpeech), "{:?}", s.flags);
    }

    #[test]
    fn fixture_quiet_is_too_quiet() {
        let s = score_fixture("edge/quiet.wav", PARKING);
        assert!(has(&s, Flag::TooQuiet), "{:?}", s.flags);
        assert!(!has(&s, Flag::NoSpeech), "{:?}", s.flags);
    }

    #[test]
    fn fixture_loudness_agrees_with_ffmpeg_ebur128() {
        // `ffmpeg -i FILE -af aresample=16000,ebur128 -f null -` (ffmpeg 6.1), the stereo
        // file averaged to mono first as the decoder does (`pan=mono|c0=0.5*c0+0.5*c1`;
        // ffmpeg's own downmix is 3 dB louder). It prints one decimal: agreement within
        // 0.1 LU, plus its rounding.
        for (rel, ffmpeg_lufs) in [
            ("voice/09-parking.flac", -20.0),
            ("voice/02-call-me-back.wav", -23.6),
            ("voice/06-project-update.ogg", -21.1),
            ("edge/quiet.wav", -60.0),
            ("edge/noisy.wav", -18.1),
            ("edge/clipped.wav", -4.6),
        ] {
            let audio = decode_file(&fixture(rel), &DecodeLimits::default()).unwrap();
            let lufs = integrated_loudness(&audio.samples).unwrap();
            assert!(
                (lufs - ffmpeg_lufs).abs() <= 0.15,
                "{rel}: {lufs:.3} LUFS, ffmpeg says {ffmpeg_lufs}"
            );
        }
    }

    #[test]
    fn fixture_clean_voice_notes_have_no_signal_flags() {
        for (rel, text) in [
            ("voice/02-call-me-back.wav", "02-call-me-back.wav"),
            ("voice/09-parking.flac", PARKING),
        ] {
            let s = score_fixture(rel, text);
            for bad in [Flag::Clipped, Flag::Noisy, Flag::TooQuiet, Flag::NoSpeech] {
                assert!(!has(&s, bad), "{rel}: {:?}", s.flags);
            }
        }
    }
}
