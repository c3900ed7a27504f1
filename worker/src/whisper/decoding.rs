//! The window loop: faster-whisper's `generate_segments` and `generate_with_fallback`,
//! with the first windows of a batch of recordings decoded in one call.

use std::io::Write;

use ct2rs::sys::{Device, StorageView, WhisperOptions};
use flate2::write::ZlibEncoder;
use flate2::Compression;
use shared::domain::{Segment, Transcript};

use super::mel::{LogMel, HOP, SAMPLE_RATE, WINDOW_FRAMES};
use super::{gate, DecodeOptions, EngineError, WhisperEngine};

/// Seconds per timestamp token.
const TIME_PRECISION: f64 = 0.02;
/// Mel frames per timestamp token (the encoder halves the frame rate).
const INPUT_STRIDE: usize = 2;
/// Seconds per mel frame.
const TIME_PER_FRAME: f64 = HOP as f64 / SAMPLE_RATE as f64;
const MAX_LENGTH: usize = 448;

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
            Some(code) => vec![code.to_string(); states.len()],
            None => detect_languages(engine, &encoded)?,
        };
        for ((_, s), code) in states.iter_mut().zip(detected) {
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
        }
    }

    let prompts: Vec<Vec<usize>> = states.iter().map(|(_, s)| prompt(engine, s)).collect();
    let first_temperature = options.temperatures.first().copied().unwrap_or(0.0);
    let candidates = generate(engine, &encoded, &prompts, first_temperature, options)?;
    let batch = states.len();
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
        match chosen {
            Ok(c) => apply(engine, state, c, options),
            Err(e) => state.failed = Some(e),
        }
    }
    Ok(())
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
        apply(engine, state, chosen, options);
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

fn detect_languages(
    engine: &WhisperEngine,
    encoded: &StorageView,
) -> Result<Vec<String>, EngineError> {
    let results = engine
        .model
        .detect_language(encoded)
        .map_err(|e| EngineError::inference(format!("{e:#}")))?;
    results
        .iter()
        .map(|ranked| {
            // ct2rs keeps DetectionResult's fields private; its Debug form is the only
            // way to read the token, e.g. `DetectionResult { language: "<|de|>", .. }`.
            let top = ranked.first().map(|r| format!("{r:?}")).unwrap_or_default();
            top.split("<|")
                .nth(1)
                .and_then(|rest| rest.split("|>").next())
                .map(str::to_string)
                .ok_or_else(|| EngineError::inference("language detection returned nothing"))
        })
        .collect()
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

/// Applies a window's result: the no-speech skip, segment splitting at timestamp
/// tokens, seeking, and the prompt reset.
fn apply(engine: &WhisperEngine, state: &mut FileState<'_>, c: Candidate, options: &DecodeOptions) {
    let segment_size = state.segment_size();
    if let Some(ns) = options.no_speech_threshold {
        let mut skip = c.no_speech_prob > ns;
        if let Some(lp) = options.log_prob_threshold {
            if c.avg_logprob > lp {
                skip = false; // confident text despite the no-speech probability
            }
        }
        if skip {
            state.seek += segment_size;
            return;
        }
    }

    let tb = engine.tokenizer.timestamp_begin;
    let tokens = &c.tokens;
    let time_offset = state.seek as f64 * TIME_PER_FRAME;
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && tokens[n - 2] < tb && tb <= tokens[n - 1];
    let consecutive: Vec<usize> = (1..n)
        .filter(|&i| tokens[i] >= tb && tokens[i - 1] >= tb)
        .collect();

    let mut pieces: Vec<(f64, f64, &[usize])> = Vec::new();
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
            pieces.push((start, end, sliced));
            last = current;
        }
        if single_timestamp_ending {
            state.seek += segment_size;
        } else {
            let last_position = tokens[last - 1].saturating_sub(tb);
            state.seek += last_position * INPUT_STRIDE;
        }
    } else {
        let mut duration = segment_size as f64 * TIME_PER_FRAME;
        if let Some(&last_ts) = tokens.iter().rev().find(|&&t| t >= tb) {
            if last_ts != tb {
                duration = (last_ts - tb) as f64 * TIME_PRECISION;
            }
        }
        pieces.push((time_offset, time_offset + duration, tokens));
        state.seek += segment_size;
    }

    for (start, end, piece) in pieces {
        let text = engine.tokenizer.decode(piece);
        if start == end || text.trim().is_empty() {
            continue;
        }
        state.all_tokens.extend_from_slice(piece);
        state.text.push_str(&text);
        state.segments.push(Segment {
            start: round_ms(start),
            end: round_ms(end),
            text: text.trim().to_string(),
            avg_logprob: c.avg_logprob,
            no_speech_prob: c.no_speech_prob,
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
}
