//! The window loop: faster-whisper's `generate_segments` and `generate_with_fallback`,
//! with the first windows of a batch of recordings decoded in one call; language
//! detection (`detect_language`) and, when asked, word timestamps ([`super::words`]).

use std::io::Write;

use ct2rs::sys::{Device, StorageView, WhisperAlignmentResult, WhisperOptions};
use flate2::write::ZlibEncoder;
use flate2::Compression;
use shared::domain::{Segment, Transcript};

use super::mel::{LogMel, HOP, SAMPLE_RATE, WINDOW_FRAMES};
use super::words::{self, WordTiming};
use super::{gate, DecodeOptions, EngineError, WhisperEngine};

/// Seconds per timestamp token.
const TIME_PRECISION: f64 = 0.02;
/// Mel frames per timestamp token (the encoder halves the frame rate).
const INPUT_STRIDE: usize = 2;
/// Seconds per mel frame.
const TIME_PER_FRAME: f64 = HOP as f64 / SAMPLE_RATE as f64;
const MAX_LENGTH: usize = 448;
/// Mel frames per second (a window's `seek` is in frames).
const FRAMES_PER_SECOND: f64 = SAMPLE_RATE as f64 / HOP as f64;

/// One decoding attempt of one window, with the figures the fallback rules need.
#[derive(Clone)]
struct Candidate {
    tokens: Vec<usize>,
    avg_logprob: f64,
    compression_ratio: f64,
    no_speech_prob: f64,
    temperature: f32,
    needs_fallback: bool,
    below_cr_threshold: bool,
}

/// One sub-segment of a window: the tokens between two timestamps, its times (seconds
/// from the start of the recording) and, with word timestamps, its words.
#[derive(Debug, Clone)]
pub(super) struct Piece {
    pub(super) start: f64,
    pub(super) end: f64,
    pub(super) tokens: Vec<usize>,
    pub(super) words: Vec<WordTiming>,
}

/// A decoded window cut into sub-segments, with where the next window starts.
struct Split {
    pieces: Vec<Piece>,
    seek: usize,
    /// The window ended on a single timestamp: no speech after it.
    single_timestamp_ending: bool,
}

impl Split {
    /// The window's text tokens, timestamps removed: what is aligned for word times.
    fn text_tokens(&self, eot: usize) -> Vec<usize> {
        self.pieces
            .iter()
            .flat_map(|p| p.tokens.iter().copied())
            .filter(|&t| t < eot)
            .collect()
    }
}

/// Where one recording stands in the window loop.
struct FileState<'a> {
    mel: LogMel<'a>,
    duration_s: f64,
    seek: usize,
    all_tokens: Vec<usize>,
    prompt_reset_since: usize,
    segments: Vec<Segment>,
    text: String,
    /// `[sot]` or `[sot, language, transcribe]`.
    sot_sequence: Vec<usize>,
    language: String,
    /// Probability of `language`: the model's when detected, 1 when given or when the
    /// model knows only English.
    language_probability: Option<f64>,
    /// Where speech last ended (seconds): word timestamps shorten the first words
    /// after a long pause.
    last_speech_ts: f64,
    /// Set when this recording failed on its own inside a batch.
    failed: Option<EngineError>,
}

impl FileState<'_> {
    fn done(&self) -> bool {
        self.seek >= self.mel.content_frames()
    }

    fn segment_size(&self) -> usize {
        WINDOW_FRAMES.min(self.mel.content_frames() - self.seek)
    }

    fn finish(self) -> Transcript {
        Transcript {
            text: self.text.trim().to_string(),
            language: self.language,
            language_probability: self.language_probability,
            duration_s: self.duration_s,
            segments: self.segments,
        }
    }
}

/// Transcribes one batch (at most `batch_size` recordings).
pub(super) fn run(
    engine: &WhisperEngine,
    inputs: &[&[f32]],
    options: &DecodeOptions,
) -> Vec<Result<Transcript, EngineError>> {
    let language = match resolve_language(engine, options) {
        Ok(l) => l,
        Err(e) => return inputs.iter().map(|_| Err(e.replicate())).collect(),
    };
    let mut results: Vec<Option<Result<Transcript, EngineError>>> =
        inputs.iter().map(|_| None).collect();
    let mut states: Vec<(usize, FileState<'_>)> = Vec::new();
    for (i, samples) in inputs.iter().enumerate() {
        let duration_s = samples.len() as f64 / SAMPLE_RATE as f64;
        let fallback_language = language.clone().unwrap_or_else(|| "en".to_string());
        if options.skip_silence && gate::nothing_to_transcribe(samples) {
            tracing::debug!(duration_s, "no speech energy; model skipped");
            results[i] = Some(Ok(Transcript::empty(fallback_language, duration_s)));
            continue;
        }
        let mel = engine.frontend.prepare(samples);
        if mel.content_frames() == 0 {
            results[i] = Some(Ok(Transcript::empty(fallback_language, duration_s)));
            continue;
        }
        states.push((
            i,
            FileState {
                mel,
                duration_s,
                seek: 0,
                all_tokens: Vec::new(),
                prompt_reset_since: 0,
                segments: Vec::new(),
                text: String::new(),
                sot_sequence: vec![engine.tokenizer.sot],
                language: fallback_language,
                // Detected below otherwise.
                language_probability: (language.is_some() || !engine.multilingual).then_some(1.0),
                last_speech_ts: 0.0,
                failed: None,
            },
        ));
    }

    if !states.is_empty() {
        if let Err(e) = first_windows(engine, &mut states, language.as_deref(), options) {
            for (i, _) in states.drain(..) {
                results[i] = Some(Err(e.replicate()));
            }
        }
    }
    for (i, mut state) in states {
        let outcome = match state.failed.take() {
            Some(e) => Err(e),
            None => later_windows(engine, &mut state, options).map(|()| state.finish()),
        };
        results[i] = Some(outcome);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(EngineError::inference("recording was not processed"))))
        .collect()
}

/// The language to force, if any: `None` means detect (multilingual models only).
fn resolve_language(
    engine: &WhisperEngine,
    options: &DecodeOptions,
) -> Result<Option<String>, EngineError> {
    match options.language.as_deref() {
        // An English-only model transcribes English; asked for another language it
        // would still answer in English, so the job says what went wrong instead.
        None | Some("") | Some("auto") | Some("en") if !engine.multilingual => {
            Ok(Some("en".to_string()))
        }
        Some(code) if !engine.multilingual => Err(EngineError::EnglishOnlyModel {
            code: code.to_string(),
        }),
        None | Some("") | Some("auto") => Ok(None),
        Some(code) => match engine.tokenizer.language_token(code) {
            Some(_) => Ok(Some(code.to_string())),
            None => Err(EngineError::UnsupportedLanguage {
                code: code.to_string(),
            }),
        },
    }
}

/// Encodes and decodes the first window of every recording in one call each.
fn first_windows(
    engine: &WhisperEngine,
    states: &mut [(usize, FileState<'_>)],
    language: Option<&str>,
    options: &DecodeOptions,
) -> Result<(), EngineError> {
    let n_mels = engine.frontend.n_mels();
    let mut features = Vec::with_capacity(states.len() * n_mels * WINDOW_FRAMES);
    for (_, s) in states.iter() {
        s.mel.window_into(0, s.segment_size(), &mut features);
    }
    let encoded = encode(engine, &mut features, states.len())?;

    if engine.multilingual {
        let detected = match language {
            Some(code) => vec![(code.to_string(), 1.0); states.len()],
            None => {
                let first = detect_languages(engine, &encoded)?;
                let mut detected = Vec::with_capacity(first.len());
                for ((_, s), top) in states.iter().zip(first) {
                    detected.push(detect_over_windows(engine, &s.mel, top, options)?);
                }
                detected
            }
        };
        for ((_, s), (code, probability)) in states.iter_mut().zip(detected) {
            let lang = engine
                .tokenizer
                .language_token(&code)
                .ok_or_else(|| EngineError::UnsupportedLanguage { code: code.clone() })?;
            s.sot_sequence = [
                Some(engine.tokenizer.sot),
                Some(lang),
                engine.tokenizer.transcribe,
            ]
            .into_iter()
            .flatten()
            .collect();
            s.language = code;
            s.language_probability = Some(probability);
        }
    }

    let prompts: Vec<Vec<usize>> = states.iter().map(|(_, s)| prompt(engine, s)).collect();
    let first_temperature = options.temperatures.first().copied().unwrap_or(0.0);
    let candidates = generate(engine, &encoded, &prompts, first_temperature, options)?;
    let batch = states.len();
    let tb = engine.tokenizer.timestamp_begin;
    // Content frames of each first window, before any seek moves.
    let sizes: Vec<usize> = states.iter().map(|(_, s)| s.segment_size()).collect();
    let mut windows: Vec<Option<(Candidate, Split)>> = Vec::with_capacity(batch);
    for (((_, state), candidate), prompt) in states.iter_mut().zip(candidates).zip(prompts) {
        let chosen = if !candidate.needs_fallback {
            Ok(candidate)
        } else if batch == 1 {
            with_fallback(engine, &encoded, &prompt, options, Some(candidate))
        } else {
            // Rare: re-encode this window alone and climb the temperature ladder.
            let mut single = Vec::with_capacity(n_mels * WINDOW_FRAMES);
            state.mel.window_into(0, state.segment_size(), &mut single);
            encode(engine, &mut single, 1).and_then(|encoded| {
                with_fallback(engine, &encoded, &prompt, options, Some(candidate))
            })
        };
        windows.push(match chosen {
            Ok(c) if no_speech(&c, options) => {
                state.seek += state.segment_size();
                None
            }
            Ok(c) => {
                let split = split_pieces(&c.tokens, tb, state.seek, state.segment_size());
                Some((c, split))
            }
            Err(e) => {
                state.failed = Some(e);
                None
            }
        });
    }
    let alignments = if options.word_timestamps {
        align_first_windows(engine, states, &windows, &sizes, &encoded)?
    } else {
        windows.iter().map(|_| None).collect()
    };
    for (((_, state), window), alignment) in states.iter_mut().zip(windows).zip(alignments) {
        if state.failed.is_some() {
            continue;
        }
        if let Some((c, split)) = window {
            apply(engine, state, &c, split, alignment.as_ref(), options);
        }
    }
    Ok(())
}

/// The alignments of the first windows of a batch (`None` where there is no text).
/// One call for the batch when every recording has the same start sequence (always on
/// English-only models or with a given language), since CTranslate2 takes one for all;
/// otherwise each window is encoded again and aligned alone.
fn align_first_windows(
    engine: &WhisperEngine,
    states: &mut [(usize, FileState<'_>)],
    windows: &[Option<(Candidate, Split)>],
    sizes: &[usize],
    encoded: &StorageView,
) -> Result<Vec<Option<WhisperAlignmentResult>>, EngineError> {
    let eot = engine.tokenizer.eot;
    let texts: Vec<Vec<usize>> = windows
        .iter()
        .map(|w| {
            w.as_ref()
                .map(|(_, s)| s.text_tokens(eot))
                .unwrap_or_default()
        })
        .collect();
    let Some(text_frames) = texts
        .iter()
        .zip(sizes)
        .find(|(text, _)| !text.is_empty())
        .map(|(_, &size)| size)
    else {
        return Ok(texts.iter().map(|_| None).collect());
    };
    let Some(((_, first), rest)) = states.split_first() else {
        return Ok(Vec::new());
    };
    if rest
        .iter()
        .all(|(_, s)| s.sot_sequence == first.sot_sequence)
    {
        // The encoder output holds every window of the batch, so every window is
        // aligned; those without text with none and, so as not to mask the others
        // differently, the frame count of one that has text (their result is unused).
        let frames: Vec<usize> = texts
            .iter()
            .zip(sizes)
            .map(|(text, &size)| if text.is_empty() { text_frames } else { size })
            .collect();
        let results = align(engine, encoded, &first.sot_sequence, &texts, &frames)?;
        if results.len() != texts.len() {
            return Err(EngineError::inference(
                "alignment returned a wrong batch size",
            ));
        }
        return Ok(results
            .into_iter()
            .zip(&texts)
            .map(|(r, text)| (!text.is_empty()).then_some(r))
            .collect());
    }
    let n_mels = engine.frontend.n_mels();
    let mut out = Vec::with_capacity(texts.len());
    for (((_, state), text), &size) in states.iter_mut().zip(texts).zip(sizes) {
        if text.is_empty() {
            out.push(None);
            continue;
        }
        let mut single = Vec::with_capacity(n_mels * WINDOW_FRAMES);
        state.mel.window_into(0, size, &mut single);
        let aligned = encode(engine, &mut single, 1)
            .and_then(|enc| align(engine, &enc, &state.sot_sequence, &[text], &[size]))
            .and_then(|mut r| {
                r.pop()
                    .ok_or_else(|| EngineError::inference("alignment returned nothing"))
            });
        match aligned {
            Ok(r) => out.push(Some(r)),
            Err(e) => {
                state.failed = Some(e);
                out.push(None);
            }
        }
    }
    Ok(out)
}

/// CTranslate2's token-to-frame alignment of a batch of windows' texts.
fn align(
    engine: &WhisperEngine,
    encoded: &StorageView,
    sot_sequence: &[usize],
    texts: &[Vec<usize>],
    num_frames: &[usize],
) -> Result<Vec<WhisperAlignmentResult>, EngineError> {
    engine
        .model
        .align(
            encoded,
            sot_sequence,
            texts,
            num_frames,
            words::MEDIAN_FILTER_WIDTH,
        )
        .map_err(|e| EngineError::inference(format!("{e:#}")))
}

/// Decodes the remaining windows of one recording, as faster-whisper does.
fn later_windows(
    engine: &WhisperEngine,
    state: &mut FileState<'_>,
    options: &DecodeOptions,
) -> Result<(), EngineError> {
    let n_mels = engine.frontend.n_mels();
    let mut features = Vec::with_capacity(n_mels * WINDOW_FRAMES);
    while !state.done() {
        features.clear();
        state
            .mel
            .window_into(state.seek, state.segment_size(), &mut features);
        let encoded = encode(engine, &mut features, 1)?;
        let prompt = prompt(engine, state);
        let chosen = with_fallback(engine, &encoded, &prompt, options, None)?;
        if no_speech(&chosen, options) {
            state.seek += state.segment_size();
            continue;
        }
        let tb = engine.tokenizer.timestamp_begin;
        let split = split_pieces(&chosen.tokens, tb, state.seek, state.segment_size());
        let text = split.text_tokens(engine.tokenizer.eot);
        let alignment = if options.word_timestamps && !text.is_empty() {
            let size = state.segment_size();
            align(engine, &encoded, &state.sot_sequence, &[text], &[size])?.pop()
        } else {
            None
        };
        apply(engine, state, &chosen, split, alignment.as_ref(), options);
    }
    Ok(())
}

fn encode(
    engine: &WhisperEngine,
    features: &mut [f32],
    batch: usize,
) -> Result<StorageView<'static>, EngineError> {
    let n_mels = engine.frontend.n_mels();
    let view = StorageView::new(&[batch, n_mels, WINDOW_FRAMES], features, Device::CPU)
        .map_err(EngineError::inference)?;
    engine
        .model
        .encode(&view, false)
        .map_err(|e| EngineError::inference(format!("{e:#}")))
}

/// The most likely language of each window of a batch, with its probability.
fn detect_languages(
    engine: &WhisperEngine,
    encoded: &StorageView,
) -> Result<Vec<(String, f64)>, EngineError> {
    let results = engine
        .model
        .detect_language(encoded)
        .map_err(|e| EngineError::inference(format!("{e:#}")))?;
    results
        .iter()
        .map(|ranked| {
            ranked
                .first()
                .and_then(|top| parse_detection(&format!("{top:?}")))
                .ok_or_else(|| EngineError::inference("language detection returned nothing"))
        })
        .collect()
}

/// Reads a `DetectionResult`'s language code and probability from its `Debug` form,
/// `DetectionResult { language: "<|de|>", probability: 0.9 }`: ct2rs keeps the fields
/// private. The probability is CTranslate2's `f32`, widened as Python widens it.
fn parse_detection(debug: &str) -> Option<(String, f64)> {
    let code = debug.split_once("<|")?.1.split_once("|>")?.0;
    let probability = debug
        .split_once("probability: ")?
        .1
        .split([',', ' ', '}'])
        .next()?
        .parse::<f32>()
        .ok()?;
    Some((code.to_string(), f64::from(probability)))
}

/// faster-whisper's `detect_language` over `language_detection_segments` windows of a
/// recording, given the top language of its first window (detected on the first
/// transcription window's encoding). Later windows are encoded only while no window's
/// top language is more likely than the threshold.
fn detect_over_windows(
    engine: &WhisperEngine,
    mel: &LogMel<'_>,
    first: (String, f64),
    options: &DecodeOptions,
) -> Result<(String, f64), EngineError> {
    // faster-whisper looks at the first `segments × 3000` frames (the final, extra
    // frame included) in pieces of 3000.
    let limit = mel
        .n_frames
        .min(options.language_detection_segments.max(1) * WINDOW_FRAMES);
    let n_mels = engine.frontend.n_mels();
    let later = (WINDOW_FRAMES..limit).step_by(WINDOW_FRAMES).map(|start| {
        let mut features = Vec::with_capacity(n_mels * WINDOW_FRAMES);
        mel.window_into(start, limit - start, &mut features);
        let encoded = encode(engine, &mut features, 1)?;
        detect_languages(engine, &encoded)?
            .pop()
            .ok_or_else(|| EngineError::inference("language detection returned nothing"))
    });
    vote_language(
        std::iter::once(Ok(first)).chain(later),
        options.language_detection_threshold,
    )
}

/// The first window whose top language is more likely than `threshold` decides;
/// failing that, the language most often on top (the first to get there on a tie)
/// with its highest probability. `windows` is consumed lazily.
fn vote_language(
    windows: impl IntoIterator<Item = Result<(String, f64), EngineError>>,
    threshold: f64,
) -> Result<(String, f64), EngineError> {
    let mut tops: Vec<(String, Vec<f64>)> = Vec::new();
    for window in windows {
        let (code, probability) = window?;
        if probability > threshold {
            return Ok((code, probability));
        }
        match tops.iter_mut().find(|(c, _)| *c == code) {
            Some((_, probabilities)) => probabilities.push(probability),
            None => tops.push((code, vec![probability])),
        }
    }
    let mut best: Option<&(String, Vec<f64>)> = None;
    for top in &tops {
        if best.is_none_or(|b| top.1.len() > b.1.len()) {
            best = Some(top);
        }
    }
    best.map(|(code, probabilities)| {
        let highest = probabilities
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (code.clone(), highest)
    })
    .ok_or_else(|| EngineError::inference("no window to detect the language on"))
}

/// faster-whisper's `get_prompt`: previous text (if any) behind `<|startofprev|>`,
/// then the start-of-transcript sequence; timestamps stay enabled.
fn prompt(engine: &WhisperEngine, state: &FileState<'_>) -> Vec<usize> {
    let previous = &state.all_tokens[state.prompt_reset_since..];
    let mut prompt = Vec::new();
    if !previous.is_empty() {
        prompt.push(engine.tokenizer.sot_prev);
        let keep = MAX_LENGTH / 2 - 1;
        prompt.extend_from_slice(&previous[previous.len().saturating_sub(keep)..]);
    }
    prompt.extend_from_slice(&state.sot_sequence);
    prompt
}

/// faster-whisper's `generate_with_fallback`. `first` is a result already computed
/// at the first temperature (in a batch).
fn with_fallback(
    engine: &WhisperEngine,
    encoded: &StorageView,
    prompt: &[usize],
    options: &DecodeOptions,
    first: Option<Candidate>,
) -> Result<Candidate, EngineError> {
    let mut tried: Vec<Candidate> = Vec::new();
    let mut remaining = options.temperatures.as_slice();
    if let Some(c) = first {
        // Only called with a first result that needs the fallback.
        tried.push(c);
        remaining = remaining.get(1..).unwrap_or(&[]);
    }
    for &t in remaining {
        if !tried.is_empty() {
            tracing::debug!(temperature = t, "decoding again at a higher temperature");
        }
        let c = generate(
            engine,
            encoded,
            std::slice::from_ref(&prompt.to_vec()),
            t,
            options,
        )?
        .pop()
        .ok_or_else(|| EngineError::inference("model returned no hypothesis"))?;
        if !c.needs_fallback {
            return Ok(c);
        }
        tried.push(c);
    }
    // Every temperature failed: keep the most likely result, preferring those that
    // were not too repetitive, and report the last temperature tried.
    let last_temperature = options.temperatures.last().copied().unwrap_or(0.0);
    let pool: Vec<&Candidate> = if tried.iter().any(|c| c.below_cr_threshold) {
        tried.iter().filter(|c| c.below_cr_threshold).collect()
    } else {
        tried.iter().collect()
    };
    let mut best = pool
        .into_iter()
        .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
        .cloned()
        .ok_or_else(|| EngineError::inference("no temperature to decode with"))?;
    best.temperature = last_temperature;
    Ok(best)
}

/// One `generate` call at one temperature for a batch of windows.
fn generate(
    engine: &WhisperEngine,
    encoded: &StorageView,
    prompts: &[Vec<usize>],
    temperature: f32,
    options: &DecodeOptions,
) -> Result<Vec<Candidate>, EngineError> {
    let sampling = temperature > 0.0;
    let ct2_options = WhisperOptions {
        beam_size: if sampling { 1 } else { options.beam_size },
        patience: options.patience,
        length_penalty: options.length_penalty,
        repetition_penalty: options.repetition_penalty,
        no_repeat_ngram_size: options.no_repeat_ngram_size,
        max_length: MAX_LENGTH,
        sampling_topk: if sampling { 0 } else { 1 },
        sampling_temperature: if sampling { temperature } else { 1.0 },
        num_hypotheses: if sampling { options.best_of } else { 1 },
        return_scores: true,
        return_logits_vocab: false,
        return_no_speech_prob: true,
        max_initial_timestamp_index: (options.max_initial_timestamp / TIME_PRECISION).round()
            as usize,
        suppress_blank: options.suppress_blank,
        suppress_tokens: engine.suppress_tokens.clone(),
    };
    let prompt_tokens: Vec<Vec<&str>> = prompts
        .iter()
        .map(|p| p.iter().map(|&id| engine.tokenizer.token(id)).collect())
        .collect();
    let results = engine
        .model
        .generate(encoded, &prompt_tokens, &ct2_options)
        .map_err(|e| EngineError::inference(format!("{e:#}")))?;
    results
        .into_iter()
        .map(|r| {
            let tokens = r
                .sequences_ids
                .first()
                .cloned()
                .ok_or_else(|| EngineError::inference("model returned no hypothesis"))?;
            let score = f64::from(r.scores.first().copied().unwrap_or(f32::NEG_INFINITY));
            // Recover the average log-probability from the length-normalised score.
            let seq_len = tokens.len() as f64;
            let cum_logprob = score * seq_len.powf(f64::from(options.length_penalty));
            let avg_logprob = cum_logprob / (seq_len + 1.0);
            let text = engine.tokenizer.decode(&tokens);
            let compression_ratio = compression_ratio(text.trim());
            Ok(judge(
                Candidate {
                    tokens,
                    avg_logprob,
                    compression_ratio,
                    no_speech_prob: f64::from(r.no_speech_prob),
                    temperature,
                    needs_fallback: false,
                    below_cr_threshold: false,
                },
                options,
            ))
        })
        .collect()
}

/// Sets the fallback verdict exactly as faster-whisper decides it.
fn judge(mut c: Candidate, options: &DecodeOptions) -> Candidate {
    let mut needs_fallback = false;
    if let Some(threshold) = options.compression_ratio_threshold {
        if c.compression_ratio > threshold {
            needs_fallback = true; // too repetitive
        } else {
            c.below_cr_threshold = true;
        }
    }
    if let Some(lp) = options.log_prob_threshold {
        if c.avg_logprob < lp {
            needs_fallback = true; // too unlikely
        }
        if let Some(ns) = options.no_speech_threshold {
            if c.no_speech_prob > ns && c.avg_logprob < lp {
                needs_fallback = false; // silence: a better decode will not help
            }
        }
    }
    c.needs_fallback = needs_fallback;
    c
}

/// zlib's compression ratio of the text, Whisper's repetition (hallucination) check.
pub(crate) fn compression_ratio(text: &str) -> f64 {
    let bytes = text.as_bytes();
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    let compressed = encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map(|v| v.len())
        .unwrap_or(1);
    bytes.len() as f64 / compressed.max(1) as f64
}

/// faster-whisper's no-speech rule: the window is skipped when the model thinks it is
/// silence, unless its text is confident anyway.
fn no_speech(c: &Candidate, options: &DecodeOptions) -> bool {
    let Some(ns) = options.no_speech_threshold else {
        return false;
    };
    let confident = options
        .log_prob_threshold
        .is_some_and(|lp| c.avg_logprob > lp);
    c.no_speech_prob > ns && !confident
}

/// faster-whisper's `_split_segments_by_timestamps`: the window's tokens cut at each
/// pair of consecutive timestamps, and the next window's start (mel frames).
fn split_pieces(tokens: &[usize], tb: usize, seek: usize, segment_size: usize) -> Split {
    let time_offset = seek as f64 * TIME_PER_FRAME;
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && tokens[n - 2] < tb && tb <= tokens[n - 1];
    let consecutive: Vec<usize> = (1..n)
        .filter(|&i| tokens[i] >= tb && tokens[i - 1] >= tb)
        .collect();
    let piece = |start: f64, end: f64, tokens: &[usize]| Piece {
        start,
        end,
        tokens: tokens.to_vec(),
        words: Vec::new(),
    };

    let mut pieces = Vec::new();
    let next_seek;
    if !consecutive.is_empty() {
        let mut slices = consecutive;
        if single_timestamp_ending {
            slices.push(n);
        }
        let mut last = 0;
        for &current in &slices {
            let sliced = &tokens[last..current];
            let start = time_offset + (sliced[0].saturating_sub(tb)) as f64 * TIME_PRECISION;
            let end =
                time_offset + (sliced[sliced.len() - 1].saturating_sub(tb)) as f64 * TIME_PRECISION;
            pieces.push(piece(start, end, sliced));
            last = current;
        }
        next_seek = if single_timestamp_ending {
            seek + segment_size
        } else {
            seek + tokens[last - 1].saturating_sub(tb) * INPUT_STRIDE
        };
    } else {
        let mut duration = segment_size as f64 * TIME_PER_FRAME;
        if let Some(&last_ts) = tokens.iter().rev().find(|&&t| t >= tb) {
            if last_ts != tb {
                duration = (last_ts - tb) as f64 * TIME_PRECISION;
            }
        }
        pieces.push(piece(time_offset, time_offset + duration, tokens));
        next_seek = seek + segment_size;
    }
    Split {
        pieces,
        seek: next_seek,
        single_timestamp_ending,
    }
}

/// Applies a window's result (not skipped as silence): word timestamps if asked (which
/// may move the next window's start to the last word's end, as in faster-whisper),
/// then the segments that have text, and the prompt reset.
fn apply(
    engine: &WhisperEngine,
    state: &mut FileState<'_>,
    c: &Candidate,
    mut split: Split,
    alignment: Option<&WhisperAlignmentResult>,
    options: &DecodeOptions,
) {
    let mut next_seek = split.seek;
    if options.word_timestamps {
        let eot = engine.tokenizer.eot;
        let timings = alignment
            .map(|r| {
                let text = split.text_tokens(eot);
                words::find_alignment(&engine.tokenizer, &state.language, &text, r)
            })
            .unwrap_or_default();
        words::add_word_timestamps(
            &mut split.pieces,
            timings,
            state.seek,
            eot,
            state.last_speech_ts,
            &options.prepend_punctuations,
            &options.append_punctuations,
        );
        if let Some(end) = words::last_end(&split.pieces) {
            let time_offset = state.seek as f64 * TIME_PER_FRAME;
            if !split.single_timestamp_ending && end > time_offset {
                // Python's round(); a seek that would not move forward is not taken.
                let to_last_word = (end * FRAMES_PER_SECOND).round_ties_even() as usize;
                if to_last_word > state.seek {
                    next_seek = to_last_word;
                }
            }
            state.last_speech_ts = end;
        }
    }
    state.seek = next_seek;

    for piece in split.pieces {
        let text = engine.tokenizer.decode(&piece.tokens);
        if piece.start == piece.end || text.trim().is_empty() {
            continue;
        }
        state.all_tokens.extend_from_slice(&piece.tokens);
        state.text.push_str(&text);
        state.segments.push(Segment {
            start: round_ms(piece.start),
            end: round_ms(piece.end),
            text: text.trim().to_string(),
            avg_logprob: c.avg_logprob,
            no_speech_prob: c.no_speech_prob,
            words: options
                .word_timestamps
                .then(|| piece.words.iter().map(WordTiming::to_word).collect()),
        });
    }

    if !options.condition_on_previous_text || c.temperature > options.prompt_reset_on_temperature {
        state.prompt_reset_since = state.all_tokens.len();
    }
}

fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_ratio_matches_python_zlib() {
        // len(t) / len(zlib.compress(t)) in CPython 3.11 for these strings.
        // flate2 runs the system zlib, so the figures are the same to the last digit.
        let cases = [
            ("", 0.0),
            (
                "the the the the the the the the the the the the the the the",
                3.933_333_333_333_333,
            ),
            ("Hi Sarah, I am running late.", 0.777_777_777_777_777_8),
            (
                "Please call me back when you get this message, I will be at the office until six.",
                1.051_948_051_948_052,
            ),
        ];
        for (text, want) in cases {
            let got = compression_ratio(text);
            assert!((got - want).abs() < 1e-12, "{text:?}: {got} != {want}");
        }
    }

    #[test]
    fn detection_is_read_from_its_debug_form() {
        // `#[derive(Debug)]` on ct2rs's `DetectionResult { language: String,
        // probability: f32 }` (src/sys/whisper.rs) prints exactly this.
        assert_eq!(
            parse_detection(r#"DetectionResult { language: "<|de|>", probability: 0.9 }"#),
            Some(("de".to_string(), f64::from(0.9f32)))
        );
        assert_eq!(
            parse_detection(r#"DetectionResult { language: "<|yue|>", probability: 0.74105763 }"#),
            Some(("yue".to_string(), f64::from(0.741_057_63_f32)))
        );
        // Rust prints small floats in exponent form.
        assert_eq!(
            parse_detection(r#"DetectionResult { language: "<|la|>", probability: 1e-7 }"#),
            Some(("la".to_string(), f64::from(1e-7f32)))
        );
        assert_eq!(parse_detection("DetectionResult { }"), None);
        assert_eq!(
            parse_detection(r#"DetectionResult { language: "<|de|>", probability: x }"#),
            None
        );
    }

    fn window(code: &str, p: f64) -> Result<(String, f64), EngineError> {
        Ok((code.to_string(), p))
    }

    #[test]
    fn the_first_confident_window_decides_the_language() {
        let got = vote_language(
            vec![window("ru", 0.3), window("la", 0.6), window("ru", 0.9)],
            0.5,
        );
        assert_eq!(got.unwrap(), ("la".to_string(), 0.6));
        // A probability equal to the threshold is not above it.
        let got = vote_language(vec![window("cs", 0.5)], 0.5);
        assert_eq!(got.unwrap(), ("cs".to_string(), 0.5));
    }

    #[test]
    fn without_a_confident_window_the_most_frequent_top_language_wins() {
        let got = vote_language(
            vec![
                window("ru", 0.3),
                window("la", 0.45),
                window("ru", 0.2),
                window("uk", 0.4),
            ],
            0.5,
        );
        // Its highest probability, not its last.
        assert_eq!(got.unwrap(), ("ru".to_string(), 0.3));
        // On a tie the language seen first wins (Python's max over a dict).
        let got = vote_language(
            vec![
                window("la", 0.2),
                window("ru", 0.4),
                window("ru", 0.1),
                window("la", 0.3),
            ],
            0.5,
        );
        assert_eq!(got.unwrap(), ("la".to_string(), 0.3));
    }

    #[test]
    fn later_windows_are_not_computed_once_one_decides() {
        let mut computed = 0;
        let windows = (0..5).map(|i| {
            computed += 1;
            window(
                if i == 1 { "de" } else { "nl" },
                if i == 1 { 0.8 } else { 0.4 },
            )
        });
        assert_eq!(
            vote_language(windows, 0.5).unwrap(),
            ("de".to_string(), 0.8)
        );
        assert_eq!(computed, 2);
        // An error in a window that is needed is the result.
        let failing = vec![
            window("nl", 0.4),
            Err(EngineError::inference("encoder failed")),
        ];
        assert!(vote_language(failing, 0.5).is_err());
    }

    #[test]
    fn timestamps_cut_a_window_into_pieces_and_set_the_next_seek() {
        // tb = 1000; text tokens below it. Two closed segments then an unfinished one:
        // the next window starts at the last closing timestamp (token 1150 → 3.0 s).
        let tb = 1000;
        let tokens = [1000, 1, 2, 1100, 1100, 3, 1150, 1150, 4];
        let split = split_pieces(&tokens, tb, 500, 3000);
        let t0 = 500.0 * TIME_PER_FRAME;
        let spans: Vec<(f64, f64, Vec<usize>)> = split
            .pieces
            .iter()
            .map(|p| (p.start, p.end, p.tokens.clone()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (t0, t0 + 100.0 * TIME_PRECISION, vec![1000, 1, 2, 1100]),
                (
                    t0 + 100.0 * TIME_PRECISION,
                    t0 + 150.0 * TIME_PRECISION,
                    vec![1100, 3, 1150]
                ),
            ]
        );
        assert_eq!(split.seek, 500 + 150 * INPUT_STRIDE);
        assert!(!split.single_timestamp_ending);
        assert_eq!(split.text_tokens(999), vec![1, 2, 3]);

        // A single timestamp at the end: the whole window is consumed.
        let split = split_pieces(&[1000, 1, 1040, 1040, 2, 1090], tb, 0, 2500);
        assert!(split.single_timestamp_ending);
        assert_eq!(split.pieces.len(), 2);
        assert_eq!(split.seek, 2500);

        // No pair of timestamps: one piece up to the last timestamp.
        let split = split_pieces(&[1000, 1, 2, 1060], tb, 0, 3000);
        assert_eq!(split.pieces.len(), 1);
        assert_eq!(split.pieces[0].end, 60.0 * TIME_PRECISION);
        assert_eq!(split.seek, 3000);
    }
}
