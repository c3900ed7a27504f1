//! Language detection with the real multilingual `base` model on espeak-ng voice notes in
//! other languages (`fixtures/multilingual/`, made by `scripts/make-fixtures.sh`): each is
//! detected as the language it is in and transcribed in it, through the local CLI; and
//! asking an English-only model for another language is an error with a code.
//!
//! Needs `VOXQ_BASE_MODEL_DIR` (set by `make test` after `make model`) and the tiny.en
//! model (`VOXQ_MODEL_DIR`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_dir(var: &str) -> PathBuf {
    let dir = PathBuf::from(std::env::var_os(var).unwrap_or_else(|| {
        panic!("{var} is not set: `make model` fetches the models and `make test` sets it")
    }));
    assert!(dir.join("model.bin").is_file(), "{var}: no model.bin");
    dir
}

/// Lower-cased words: runs of Unicode letters and digits (Cyrillic and diacritics are
/// letters), apostrophes dropped.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['\'', '’'], "")
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

/// The share of the spoken words found in the transcript.
fn recall(spoken: &str, heard: &str) -> f64 {
    let heard = words(heard);
    let spoken = words(spoken);
    let found = spoken.iter().filter(|w| heard.contains(w)).count();
    found as f64 / spoken.len() as f64
}

fn spoken_texts() -> HashMap<String, String> {
    std::fs::read_to_string(root().join("fixtures/multilingual/transcripts.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once('\t'))
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect()
}

#[test]
fn base_detects_the_language_of_each_note_and_transcribes_in_it() {
    // The notes faster-whisper's base also detects with probability > 0.5 (ru-1 at
    // 0.17, but right); ru-2 it takes for Latin, and so does voxq: not asserted.
    let files = [
        "cs-1.ogg", "cs-2.ogg", "de-1.ogg", "es-1.ogg", "fr-1.ogg", "it-2.ogg", "pl-1.ogg",
        "ru-1.ogg",
    ];
    let dir = root().join("fixtures/multilingual");
    let out = Command::new(env!("CARGO_BIN_EXE_voxq-worker"))
        .arg("transcribe")
        .arg("--model-dir")
        .arg(model_dir("VOXQ_BASE_MODEL_DIR"))
        .args(["--format", "jsonl"])
        .args(files.iter().map(|f| dir.join(f)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spoken = spoken_texts();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len(), "{lines:?}");
    for line in &lines {
        let file = Path::new(line["file"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let expected = &file[..2];
        assert_eq!(line["language"], expected, "{file}: {line}");
        let text = line["text"].as_str().unwrap();
        let r = recall(&spoken[&file], text);
        // espeak-ng's voices are hard for base; these floors sit well below what it
        // reaches (cs-2 0.24, cs-1 0.6, it-2 1.0) and far above a wrong-language transcript (~0).
        let floor = match expected {
            "pl" | "ru" => 0.1,
            _ => 0.15,
        };
        assert!(r >= floor, "{file}: recall {r:.2} < {floor}: '{text}'");
    }
}

#[test]
fn an_english_only_model_refuses_another_language_with_a_code() {
    let out = Command::new(env!("CARGO_BIN_EXE_voxq-worker"))
        .arg("transcribe")
        .arg("--model-dir")
        .arg(model_dir("VOXQ_MODEL_DIR"))
        .args(["--format", "jsonl", "--language", "de"])
        .arg(root().join("fixtures/voice/01-running-late.ogg"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("english-only-model") || stderr.contains("english-only-model"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
}
