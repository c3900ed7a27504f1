//! Silero VAD v6 against faster-whisper 1.2.1 and its onnxruntime on every decodable
//! fixture of `fixtures/voice`, `fixtures/edge` and `fixtures/multilingual`.
//!
//! `bench/reference/silero-v6-probs.jsonl` has one line per file: `samples` (the length
//! of faster-whisper's decoded signal), `probs` (its window probabilities, rounded to 6
//! decimals), `speech` (`get_speech_timestamps` with the default options) and
//! `speech_alt` (with `alt_options`, which split and drop chunks). It was made with
//! faster-whisper's own code (onnxruntime 1.32.0, numpy 2.4, PyAV 18.1):
//!
//! ```text
//! python3 -m venv /tmp/fwvenv && /tmp/fwvenv/bin/pip install faster-whisper==1.2.1
//! /tmp/fwvenv/bin/python - <<'PY' > bench/reference/silero-v6-probs.jsonl
//! import hashlib, json, pathlib
//! import numpy as np
//! from faster_whisper import decode_audio
//! from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model
//! alt = dict(min_speech_duration_ms=250, max_speech_duration_s=2.0,
//!            min_silence_duration_ms=300, speech_pad_ms=100)
//! model = get_vad_model()
//! for folder in ["fixtures/voice", "fixtures/edge", "fixtures/multilingual"]:
//!     for path in sorted(pathlib.Path(folder).iterdir()):
//!         if path.suffix in (".tsv", ".md"):
//!             continue
//!         audio = decode_audio(str(path), sampling_rate=16000)
//!         probs = model(np.pad(audio, (0, 512 - len(audio) % 512)))
//!         chunks = lambda o: [[s["start"], s["end"]] for s in get_speech_timestamps(audio, o)]
//!         sha256 = hashlib.sha256(audio.astype("<f4").tobytes()).hexdigest()
//!         print(json.dumps({"file": f"{folder}/{path.name}", "samples": len(audio),
//!             "sha256": sha256,
//!             "probs": [round(float(p), 6) for p in probs],
//!             "speech": chunks(VadOptions()), "alt_options": alt,
//!             "speech_alt": chunks(VadOptions(**alt))}, separators=(",", ":")))
//! PY
//! ```
//!
//! The model comes from `$VOXQ_VAD_MODEL`, else `models/silero_vad_v6.onnx`
//! (`scripts/fetch-vad.sh`, run by `make model`).

use std::path::{Path, PathBuf};

use audio::DecodeLimits;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use voxq_worker::whisper::{timestamps_from_probs, SileroVad, VadOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[derive(Debug, Deserialize)]
struct Reference {
    file: String,
    samples: usize,
    /// SHA-256 of faster-whisper's decoded samples as f32 little-endian.
    sha256: String,
    probs: Vec<f32>,
    speech: Vec<[usize; 2]>,
    alt_options: VadOptions,
    speech_alt: Vec<[usize; 2]>,
}

fn references() -> Vec<Reference> {
    let path = root().join("bench/reference/silero-v6-probs.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let refs: Vec<Reference> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(refs.len() >= 30, "{} references", refs.len());
    refs
}

fn model() -> SileroVad {
    let path = std::env::var_os("VOXQ_VAD_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/silero_vad_v6.onnx"));
    SileroVad::load(&path).unwrap_or_else(|e| {
        let e = shared::error_chain(&e);
        panic!("{e}; `make model` runs it too, or set VOXQ_VAD_MODEL to the file")
    })
}

fn pairs(chunks: &[std::ops::Range<usize>]) -> Vec<[usize; 2]> {
    chunks.iter().map(|r| [r.start, r.end]).collect()
}

/// The state machine alone, on faster-whisper's own probabilities: exactly its chunks.
#[test]
fn speech_timestamps_of_faster_whispers_probabilities_are_its_own() {
    let mut chunks = 0;
    for r in references() {
        let default = timestamps_from_probs(&r.probs, r.samples, &VadOptions::default());
        assert_eq!(pairs(&default), r.speech, "{} (default options)", r.file);
        let alt = timestamps_from_probs(&r.probs, r.samples, &r.alt_options);
        assert_eq!(
            pairs(&alt),
            r.speech_alt,
            "{} ({:?})",
            r.file,
            r.alt_options
        );
        chunks += r.speech.len() + r.speech_alt.len();
    }
    // The references exercise more than "all speech": splits, drops, silence.
    assert!(chunks > 150, "{chunks} chunks");
}

/// The chunks as `[start, end]`, with an end at the recording's end written as
/// `usize::MAX`: decoders differ in length by a few samples (a few hundred for AAC).
fn to_end(chunks: &[[usize; 2]], len: usize) -> Vec<[usize; 2]> {
    let end = |e: usize| if e == len { usize::MAX } else { e };
    chunks.iter().map(|&[s, e]| [s, end(e)]).collect()
}

/// The whole path with voxq's own decoder. Where it decodes a file to exactly the
/// samples faster-whisper's PyAV gives (the lossless 16 kHz files), the probabilities
/// are onnxruntime's within 1e-4 and the chunks are identical. Elsewhere the decoders
/// differ (resampling, AAC priming), onnxruntime itself moves by up to 0.98 between
/// the two signals, and only the default chunking is compared: it must agree.
#[test]
fn probabilities_and_speech_match_faster_whisper_on_every_fixture() {
    let vad = model();
    let (mut same_input, mut worst) = (0, (0.0f32, String::new()));
    let mut alt_differing = Vec::new();
    for r in references() {
        let audio = audio::decode_file(&root().join(&r.file), &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", r.file));
        let samples = &audio.samples;
        let probs = vad.speech_probs(samples);
        let bytes: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
        let identical = format!("{:x}", Sha256::digest(&bytes)) == r.sha256;
        let diff = probs
            .iter()
            .zip(&r.probs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let default = pairs(&timestamps_from_probs(
            &probs,
            samples.len(),
            &VadOptions::default(),
        ));
        let alt = pairs(&timestamps_from_probs(
            &probs,
            samples.len(),
            &r.alt_options,
        ));
        println!(
            "{:42} {:+4} samples, {}, max |Δp| {diff:.1e}",
            r.file,
            samples.len() as i64 - r.samples as i64,
            if identical {
                "same signal"
            } else {
                "other signal"
            },
        );
        assert_eq!(
            to_end(&default, samples.len()),
            to_end(&r.speech, r.samples),
            "{}: default chunks",
            r.file
        );
        if identical {
            same_input += 1;
            assert_eq!(probs.len(), r.probs.len(), "{}", r.file);
            assert!(diff <= 1e-4, "{}: |Δp| {diff}", r.file);
            assert_eq!(
                alt, r.speech_alt,
                "{}: chunks with {:?}",
                r.file, r.alt_options
            );
            if diff > worst.0 {
                worst = (diff, r.file.clone());
            }
        } else if to_end(&alt, samples.len()) != to_end(&r.speech_alt, r.samples) {
            println!(
                "  other chunks with alt_options: {alt:?}, faster-whisper {:?}",
                r.speech_alt
            );
            alt_differing.push(r.file);
        }
    }
    println!(
        "same signal: {same_input} files, largest |Δp| {:.1e} ({}); other signal: chunks with \
         alt_options differ in {} files",
        worst.0,
        worst.1,
        alt_differing.len()
    );
    // The lossless 16 kHz fixtures (2 FLAC, 4 WAV) must decode alike, or this test
    // checks too little of the model.
    assert!(
        same_input >= 6,
        "only {same_input} files decode as in faster-whisper"
    );
}

/// Windows past the end, and recordings whose length is a multiple of 512, are as
/// faster-whisper pads them: one extra window, and its last 64 samples ignored.
#[test]
fn window_count_and_tail_follow_faster_whisper() {
    let vad = model();
    assert_eq!(vad.speech_probs(&[]).len(), 1);
    assert_eq!(vad.speech_probs(&[0.1; 1024]).len(), 3);
    assert_eq!(vad.speech_probs(&[0.1; 1023]).len(), 2);
    // faster-whisper zeroes the last 64 samples of the padded signal: a recording of
    // 1000 samples is the same as one whose samples 960.. are zero.
    let noise: Vec<f32> = (0..1000u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 16) as f32 / 65536.0 - 0.5) * 0.8)
        .collect();
    let mut cut = noise.clone();
    cut[960..].fill(0.0);
    assert_eq!(vad.speech_probs(&noise), vad.speech_probs(&cut));
    let mut changed = noise.clone();
    changed[900] = 0.9;
    assert_ne!(vad.speech_probs(&noise), vad.speech_probs(&changed));
}
