//! The engine's per-job options through the service: `word_timestamps` (words in the
//! stored result, word-level WebVTT cues), `vad_filter` (a note padded with 8 s and 12 s
//! of near-silence keeps its words, timed on the original audio) and the validation of
//! the language detection options. Real API, worker, model, PostgreSQL, Redis and S3.

use std::time::Duration;

use serde_json::Value;
use voxq_tests::{root, serial, Stack, StackConfig};

/// The words of a stored result, in order: (word, start, end, probability).
fn words(job: &Value) -> Vec<(String, f64, f64, f64)> {
    job["result"]["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .flat_map(|s| s["words"].as_array().expect("segment words").iter())
        .map(|w| {
            (
                w["word"].as_str().unwrap().to_string(),
                w["start"].as_f64().unwrap(),
                w["end"].as_f64().unwrap(),
                w["probability"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Lower-case letters and digits of each word, for comparing two runs' words.
fn plain(words: &[(String, f64, f64, f64)]) -> Vec<String> {
    words
        .iter()
        .map(|(w, ..)| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn word_timestamps_and_vad_filter_are_job_options() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env()).await;
    stack.start_worker();
    let key = stack.key.clone();
    let wait = Duration::from_secs(120);

    // Word timestamps on a plain note.
    let note = root().join("fixtures/voice/02-call-me-back.wav");
    let id = stack
        .upload_as(&key, &note, &[("word_timestamps", "true")])
        .await;
    let job = stack.wait_done(id, wait).await;
    assert_eq!(job["status"], "completed", "{job}");
    let plain_words = words(&job);
    assert!(plain_words.len() >= 5, "{job}");
    let duration = job["result"]["duration_s"].as_f64().unwrap();
    let mut last = 0.0;
    for (w, start, end, p) in &plain_words {
        assert!(!w.is_empty() && w.trim() == w, "{w:?}");
        assert!(*start >= last - 1e-9 && end >= start, "{w} {start} {end}");
        assert!(*end <= duration + 0.01, "{w} ends after the audio");
        assert!((0.0..=1.0).contains(p), "{w} {p}");
        last = *start;
    }
    let text = job["result"]["text"].as_str().unwrap();
    let joined: Vec<&str> = plain_words.iter().map(|(w, ..)| w.as_str()).collect();
    assert_eq!(joined.join(" "), text.trim());

    // One WebVTT cue per word.
    let vtt = stack
        .http
        .get(format!(
            "{}/v1/jobs/{id}/transcript?format=vtt&granularity=word",
            stack.base
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(vtt.status(), 200);
    let vtt = vtt.text().await.unwrap();
    assert_eq!(vtt.matches(" --> ").count(), plain_words.len(), "{vtt}");
    assert!(vtt.contains(&format!("\n{}\n", plain_words[0].0)), "{vtt}");
    let bad = stack
        .http
        .get(format!(
            "{}/v1/jobs/{id}/transcript?format=vtt&granularity=letter",
            stack.base
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // The same note between 8 s and 12 s of near-silence, with VAD: the same words,
    // shifted by the 8 s of padding, in the original timeline.
    let padded = root().join("fixtures/edge/silence-padded.ogg");
    let id = stack
        .upload_as(
            &key,
            &padded,
            &[("word_timestamps", "true"), ("vad_filter", "true")],
        )
        .await;
    let job = stack.wait_done(id, wait).await;
    assert_eq!(job["status"], "completed", "{job}");
    let vad_words = words(&job);
    assert_eq!(plain(&vad_words), plain(&plain_words), "{job}");
    let first = vad_words[0].1 - plain_words[0].1;
    assert!((first - 8.0).abs() < 0.5, "first word shifted by {first} s");
    let shifts: Vec<f64> = vad_words
        .iter()
        .zip(&plain_words)
        .map(|(a, b)| a.1 - b.1)
        .collect();
    assert!(
        shifts.iter().all(|s| (s - 8.0).abs() < 0.5),
        "every word moves by the padding: {shifts:?}"
    );
    let duration = job["result"]["duration_s"].as_f64().unwrap();
    assert!(duration > 20.0, "the original duration is kept: {duration}");
    let segments = job["result"]["segments"].as_array().unwrap();
    assert!(segments[0]["start"].as_f64().unwrap() > 7.0, "{job}");

    // The detection options are checked.
    for (field, value) in [
        ("language_detection_segments", "0"),
        ("language_detection_segments", "11"),
        ("language_detection_threshold", "1.5"),
        ("language_detection_threshold", "high"),
        ("word_timestamps", "yes"),
        ("vad_filter", "maybe"),
    ] {
        let r = stack.post_file(&key, &note, &[(field, value)]).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{field}={value}: {body}");
        assert_eq!(body["error"]["code"], "bad-request", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{body}"
        );
    }
    let r = stack
        .post_json(
            &key,
            serde_json::json!({"audio_url": "s3://x/y.ogg", "language_detection_segments": 0}),
        )
        .await;
    assert_eq!(r.status(), 400);
}
