//! End-to-end tests of `voxq-worker transcribe` with the real tiny.en model (fetched by
//! `make test` into models/, or wherever `VOXQ_MODEL_DIR` points) on the committed
//! fixtures: every format decodes, transcripts match faster-whisper's, bad input fails
//! per file with a readable reason and never crashes the process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_dir() -> PathBuf {
    std::env::var_os("VOXQ_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/whisper-tiny.en"))
}

fn transcribe<P: AsRef<std::ffi::OsStr>>(args: &[&str], paths: &[P]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_voxq-worker"))
        .arg("transcribe")
        .arg("--model-dir")
        .arg(model_dir())
        .args(args)
        .args(paths)
        .output()
        .expect("voxq-worker runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "a panic escaped: {stderr}");
    out
}

fn jsonl(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// Runs `transcribe`, requires it to succeed, and returns its JSONL lines.
fn transcribe_ok<P: AsRef<std::ffi::OsStr>>(args: &[&str], paths: &[P]) -> Vec<Value> {
    let out = transcribe(args, paths);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    jsonl(&out)
}

fn name(v: &Value) -> String {
    Path::new(v["file"].as_str().unwrap_or_default())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn reference() -> HashMap<String, String> {
    let text = std::fs::read_to_string(root().join("bench/reference/faster-whisper-tiny.en.jsonl"))
        .expect("reference transcripts are committed");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("reference line is JSON"))
        .map(|v| (name(&v), v["text"].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// The spoken text of each voice note (`fixtures/voice/transcripts.tsv`).
fn spoken() -> HashMap<String, String> {
    let text = std::fs::read_to_string(root().join("fixtures/voice/transcripts.tsv"))
        .expect("transcripts.tsv is committed");
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_once('\t'))
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect()
}

/// bench/compare.py's normaliser: lower case, numbers as words, no punctuation.
fn normalise(text: &str) -> Vec<String> {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    fn words(n: u64) -> String {
        match n {
            0..=19 => ONES[n as usize].to_string(),
            20..=99 if n.is_multiple_of(10) => TENS[(n / 10) as usize].to_string(),
            20..=99 => format!("{} {}", TENS[(n / 10) as usize], ONES[(n % 10) as usize]),
            100..=999 if n.is_multiple_of(100) => format!("{} hundred", ONES[(n / 100) as usize]),
            100..=999 => format!("{} hundred {}", ONES[(n / 100) as usize], words(n % 100)),
            _ => n.to_string(),
        }
    }
    let lower: String = text
        .to_lowercase()
        .replace("o'clock", "o clock")
        .replace('%', " percent")
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' || c == ':' || c == '.' {
                c
            } else {
                ' '
            }
        })
        .collect();
    let mut out = Vec::new();
    // Times and decimals ("3:30", "9.45") read as two numbers; ":00" is silent.
    for token in lower.split(|c: char| c.is_whitespace() || c == ':' || c == '.') {
        let digits: String = token.chars().filter(char::is_ascii_digit).collect();
        if !digits.is_empty()
            && digits.len()
                == token
                    .trim_matches(|c: char| !c.is_ascii_alphanumeric())
                    .len()
        {
            let n: u64 = digits.parse().unwrap_or(0);
            if !(token.len() == 2 && n == 0) {
                out.extend(words(n).split(' ').map(String::from));
            }
            continue;
        }
        let word: String = token.chars().filter(|c| c.is_ascii_alphabetic()).collect();
        let digits_inside: String = token.chars().filter(char::is_ascii_digit).collect();
        if !digits_inside.is_empty() {
            // "12th": keep the letters only, as compare.py's regex split does.
            out.extend(
                words(digits_inside.parse().unwrap_or(0))
                    .split(' ')
                    .map(String::from),
            );
        }
        if !word.is_empty() {
            out.push(word);
        }
    }
    out
}

fn edit_distance(a: &[String], b: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j + 1] + 1)
                .min(cur[j] + 1)
                .min(prev[j] + usize::from(x != y));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn corpus_wer(hyps: &HashMap<String, String>, truth: &HashMap<String, String>) -> f64 {
    let (mut errors, mut words) = (0, 0);
    for (file, spoken) in truth {
        let reference = normalise(spoken);
        let hyp = normalise(hyps.get(file).map(String::as_str).unwrap_or(""));
        errors += edit_distance(&reference, &hyp);
        words += reference.len();
    }
    errors as f64 / words as f64
}

fn texts(lines: &[Value]) -> HashMap<String, String> {
    lines
        .iter()
        .map(|v| (name(v), v["text"].as_str().unwrap_or_default().to_string()))
        .collect()
}

#[test]
fn voice_notes_in_every_format_transcribe_as_well_as_faster_whisper() {
    let lines = transcribe_ok(&[], &[root().join("fixtures/voice")]);
    assert_eq!(lines.len(), 14, "one line per voice note");
    for line in &lines {
        assert!(line["error"].is_null(), "{line}");
        assert_eq!(line["language"], "en");
        assert!(!line["text"].as_str().expect("text").is_empty(), "{line}");
        let segments = line["segments"].as_array().expect("segments");
        assert!(!segments.is_empty());
        for s in segments {
            let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
            assert!(
                start < end && end <= line["duration_s"].as_f64().unwrap() + 1.0,
                "{s}"
            );
            assert!(s["avg_logprob"].as_f64().unwrap() <= 0.0);
            let nsp = s["no_speech_prob"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&nsp));
        }
    }
    let ours = texts(&lines);
    let reference = reference();
    let truth = spoken();

    // Accuracy: corpus WER against the spoken text no worse than faster-whisper's + 1 point.
    let (wer_ours, wer_ref) = (corpus_wer(&ours, &truth), corpus_wer(&reference, &truth));
    eprintln!("corpus WER: voxq {wer_ours:.4}, faster-whisper {wer_ref:.4}");
    assert!(
        wer_ours <= wer_ref + 0.01,
        "WER {wer_ours:.4} vs faster-whisper {wer_ref:.4}"
    );

    // Agreement with faster-whisper word for word. On these espeak-ng notes faster-whisper
    // agrees with itself on only 9 of 14 when nothing but its CPU kernels change (AVX vs
    // AVX2, measured with bench/fw_transcribe.py and CT2_FORCE_CPU_ISA=AVX), so rounding
    // alone flips that many; this guards against falling below that band.
    let equal = ours
        .iter()
        .filter(|(f, t)| reference[*f].split_whitespace().eq(t.split_whitespace()))
        .count();
    for (f, t) in &ours {
        if !reference[f].split_whitespace().eq(t.split_whitespace()) {
            eprintln!(
                "differs from faster-whisper: {f}\n  want: {}\n  got:  {t}",
                reference[f]
            );
        }
    }
    eprintln!("word-for-word equal to faster-whisper: {equal}/14");
    assert!(
        equal >= 9,
        "only {equal}/14 transcripts equal faster-whisper's"
    );
}

#[test]
fn parallel_replicas_do_not_change_transcripts_or_their_order() {
    let dir = root().join("fixtures/voice");
    let one = transcribe_ok(&["--workers", "1", "--threads", "1"], &[&dir]);
    let two = transcribe_ok(&["--workers", "2", "--threads", "1"], &[dir]);
    assert_eq!(one.len(), 14);
    assert_eq!(texts(&one), texts(&two));
    let order = |lines: &[Value]| lines.iter().map(name).collect::<Vec<_>>();
    assert_eq!(order(&one), order(&two), "output follows input order");
}

#[test]
fn normaliser_reads_numbers_and_times_as_words() {
    assert_eq!(
        normalise("At 3:30, the 12th! It's 10 o'clock, well-known."),
        [
            "at", "three", "thirty", "the", "twelve", "th", "its", "ten", "o", "clock", "well",
            "known"
        ]
        .map(String::from)
    );
}

#[test]
fn long_recordings_are_split_into_timed_segments() {
    let lines = transcribe_ok(&[], &[root().join("fixtures/voice/06-project-update.ogg")]);
    let line = &lines[0];
    let segments = line["segments"].as_array().unwrap();
    assert!(segments.len() >= 3, "{line}");
    let last_end = segments.last().unwrap()["end"].as_f64().unwrap();
    assert!(last_end > 30.0, "the second window was transcribed: {line}");
    let starts: Vec<f64> = segments
        .iter()
        .map(|s| s["start"].as_f64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "segments in order");
}

#[test]
fn bad_input_fails_per_file_and_the_run_goes_on() {
    let bad = root().join("fixtures/bad");
    let good = root().join("fixtures/voice/02-call-me-back.wav");
    let files = [
        bad.join("random.mp3"),
        bad.join("text.wav"),
        bad.join("empty.wav"),
        bad.join("truncated.ogg"),
        bad.join("truncated.m4a"),
        bad.join("header-only.wav"),
        bad.join("does-not-exist.ogg"),
        good,
    ];
    let out = transcribe(&[], &files);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed file makes the exit code 1"
    );
    let lines = jsonl(&out);
    assert_eq!(lines.len(), files.len(), "every input reported, in order");
    let by_name: HashMap<String, &Value> = lines.iter().map(|v| (name(v), v)).collect();
    for failing in ["random.mp3", "text.wav", "empty.wav", "does-not-exist.ogg"] {
        let v = by_name[failing];
        let error = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{failing}: {v}"));
        assert!(!error.is_empty() && v["text"].is_null(), "{v}");
        assert!(v["error_code"].as_str().is_some_and(|c| !c.is_empty()));
    }
    assert_eq!(by_name["empty.wav"]["error_code"], "empty-file");
    assert_eq!(by_name["random.mp3"]["error_code"], "unrecognized-format");
    assert_eq!(by_name["does-not-exist.ogg"]["error_code"], "io-error");
    // The message carries the cause, not just the kind of failure.
    let missing = by_name["does-not-exist.ogg"]["error"].as_str().unwrap();
    assert!(missing.contains("No such file"), "{missing}");
    // Cut-short files keep what could be decoded (or fail readably); never garbage.
    for partial in ["truncated.ogg", "truncated.m4a", "header-only.wav"] {
        let v = by_name[partial];
        assert!(
            v["error"].is_string() || v["text"].is_string(),
            "{partial}: {v}"
        );
    }
    let truncated = by_name["truncated.ogg"];
    if truncated["error"].is_null() {
        let text = truncated["text"].as_str().unwrap();
        // Case and punctuation may vary: a cut-off window can go through the
        // temperature fallback, which samples.
        assert!(
            text.to_lowercase().contains("quick update on the website"),
            "the decoded part is transcribed: {text}"
        );
    }
    let good = by_name["02-call-me-back.wav"];
    assert!(good["error"].is_null(), "{good}");
    assert!(
        good["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Call me back")),
        "{good}"
    );
}

#[test]
fn silence_and_tiny_clips_give_sensible_empty_results() {
    let edge = root().join("fixtures/edge");
    let lines = transcribe_ok(
        &[],
        &[edge.join("silence-3s.wav"), edge.join("short-0.5s.ogg")],
    );
    assert_eq!(lines[0]["text"], "", "silence has no words: {}", lines[0]);
    assert!(lines[0]["segments"].as_array().unwrap().is_empty());
    assert!((lines[0]["duration_s"].as_f64().unwrap() - 3.0).abs() < 0.05);
    assert!(lines[1]["error"].is_null(), "{}", lines[1]);
    assert!((lines[1]["duration_s"].as_f64().unwrap() - 0.5).abs() < 0.1);
}

#[test]
fn subtitle_and_text_formats() {
    let f = root().join("fixtures/voice/06-project-update.ogg");
    let srt = String::from_utf8(transcribe(&["--format", "srt"], &[&f]).stdout).unwrap();
    assert!(srt.starts_with("1\n00:00:00,000 --> 00:00:"), "{srt}");
    assert!(srt.contains("\n2\n"));
    let vtt = String::from_utf8(transcribe(&["--format", "vtt"], &[&f]).stdout).unwrap();
    assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> "), "{vtt}");
    let text = String::from_utf8(transcribe(&["--format", "text"], &[f]).stdout).unwrap();
    assert!(text.starts_with("Hey team"), "{text}");
    assert_eq!(text.lines().count(), 1);
}

#[test]
fn a_missing_model_is_a_clear_start_up_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_voxq-worker"))
        .args(["transcribe", "--model-dir", "/nonexistent/model", "x.ogg"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fetch-model.sh"), "{stderr}");
}

#[test]
fn directory_link_loops_do_not_repeat_files() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("link-loop");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("inner")).unwrap();
    std::fs::copy(
        root().join("fixtures/voice/12-yes-that-works.flac"),
        dir.join("inner/note.flac"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&dir, dir.join("inner/back-to-top")).unwrap();
    let lines = transcribe_ok(&[], &[&dir]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["text"], "Yes, that works for me.");
}
