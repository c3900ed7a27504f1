//! `--vad-filter` through the local CLI with the real tiny.en model and Silero VAD v6:
//! a note padded with 8 s and 12 s of near-silence (`fixtures/edge/silence-padded.ogg`,
//! made by `scripts/make-silence-padded.sh` from `02-call-me-back.wav`) keeps its words,
//! timed on the original audio; audio without speech yields no text without the model
//! running; a missing VAD model is an error with its code.
//!
//! Needs `VOXQ_MODEL_DIR` and the VAD model (`scripts/fetch-vad.sh`, `make model`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vad_model() -> PathBuf {
    let path = std::env::var_os("VOXQ_VAD_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/silero_vad_v6.onnx"));
    assert!(
        path.is_file(),
        "{}: no VAD model (run scripts/fetch-vad.sh)",
        path.display()
    );
    path
}

/// One JSONL result per file.
fn transcribe(vad: &Path, args: &[&str], files: &[&str]) -> Vec<Value> {
    let model = std::env::var_os("VOXQ_MODEL_DIR").expect("VOXQ_MODEL_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_voxq-worker"))
        .env("VOXQ_VAD_MODEL", vad)
        .arg("transcribe")
        .arg("--model-dir")
        .arg(model)
        .args(["--format", "jsonl", "--workers", "1"])
        .args(args)
        .args(files.iter().map(|f| root().join(f)))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (lower-cased letters, start, end) of every word.
fn words(result: &Value) -> Vec<(String, f64, f64)> {
    result["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["words"].as_array().expect("words").iter())
        .map(|w| {
            let text: String = w["word"]
                .as_str()
                .unwrap()
                .chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect();
            (
                text,
                w["start"].as_f64().unwrap(),
                w["end"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn vad_keeps_the_words_of_a_padded_note_on_the_original_timeline() {
    let vad = vad_model();
    let plain = transcribe(
        &vad,
        &["--word-timestamps"],
        &["fixtures/voice/02-call-me-back.wav"],
    );
    let padded = transcribe(
        &vad,
        &["--word-timestamps", "--vad-filter"],
        &["fixtures/edge/silence-padded.ogg"],
    );
    let (plain, padded) = (&plain[0], &padded[0]);
    assert!(
        plain["error"].is_null() && padded["error"].is_null(),
        "{plain}\n{padded}"
    );
    let (a, b) = (words(plain), words(padded));
    assert!(a.len() >= 5, "{plain}");
    let names = |w: &[(String, f64, f64)]| w.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "the same words with VAD");
    for ((word, s0, e0), (_, s1, e1)) in a.iter().zip(&b) {
        // The padding is 8 s; VAD keeps 0.4 s of it before the speech.
        assert!((s1 - s0 - 8.0).abs() < 0.5, "{word}: {s0} -> {s1}");
        assert!((e1 - e0 - 8.0).abs() < 0.5, "{word}: {e0} -> {e1}");
    }
    for seg in padded["segments"].as_array().unwrap() {
        let (start, end) = (seg["start"].as_f64().unwrap(), seg["end"].as_f64().unwrap());
        assert!(start >= 7.0 && end <= 8.0 + plain["duration_s"].as_f64().unwrap() + 0.5);
    }
    // The duration is the original recording's, padding included.
    assert!(padded["duration_s"].as_f64().unwrap() > 8.0 + 12.0);
}

#[test]
fn vad_finds_no_speech_in_silence_and_needs_its_model() {
    let vad = vad_model();
    // --no-skip-silence: the energy gate would skip the model anyway; here VAD alone
    // decides that there is nothing to decode.
    let out = transcribe(
        &vad,
        &["--vad-filter", "--no-skip-silence"],
        &["fixtures/edge/silence-3s.wav"],
    );
    assert!(out[0]["error"].is_null(), "{}", out[0]);
    assert_eq!(out[0]["text"], "", "{}", out[0]);
    assert_eq!(out[0]["segments"], serde_json::json!([]));

    let missing = root().join("models/no-such-vad.onnx");
    let out = transcribe(
        &missing,
        &["--vad-filter"],
        &["fixtures/voice/02-call-me-back.wav"],
    );
    assert_eq!(out[0]["error_code"], "vad-unavailable", "{}", out[0]);
    // Without --vad-filter the model is never needed.
    let out = transcribe(&missing, &[], &["fixtures/voice/02-call-me-back.wav"]);
    assert!(out[0]["error"].is_null(), "{}", out[0]);
}
