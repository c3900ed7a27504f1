//! The OpenAI-compatible endpoint, driven by OpenAI's official Python client
//! (`tests/scripts/openai_client.py`, PyPI `openai`) pointed at voxq with `base_url`:
//! every `response_format`, a language hint, segment and word granularity, and its
//! errors (an unsupported format, an unknown model, granularity without `verbose_json`,
//! a bad key). Each request is also an ordinary job: stored, listed, with its id in
//! `x-voxq-job-id`.

use std::process::Command;

use serde_json::Value;
use uuid::Uuid;
use voxq_tests::{root, serial, Stack, StackConfig};

const NOTE: &str = "fixtures/voice/01-running-late.ogg";

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_client_works_against_voxq() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env()).await;
    stack.start_worker();
    let (base, key) = (stack.base.clone(), stack.key.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(root().join("tests/scripts/openai_client.py"))
            .args([&base, &key])
            .arg(root().join(NOTE))
            .output()
            .expect("python3 tests/scripts/openai_client.py")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");

    // The same note, the same text, in every format.
    let text = r["json"]["text"]
        .as_str()
        .expect("json: {text}")
        .to_string();
    assert!(text.to_lowercase().contains("running"), "{text}");
    assert_eq!(r["text"].as_str().unwrap().trim(), text);
    assert_eq!(r["language_hint"], text.as_str());
    let srt = r["srt"].as_str().unwrap();
    assert!(srt.starts_with("1\n00:00:0"), "{srt}");
    assert!(srt.contains(" --> "), "{srt}");
    let vtt = r["vtt"].as_str().unwrap();
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    for v in [&r["verbose_json"], &r["segment_granularity"]] {
        assert_eq!(v["language"], "english", "{v}");
        assert_eq!(v["text"], text.as_str());
        assert!(v["duration"].as_f64().unwrap() > 4.0, "{v}");
        let segments = v["segments"].as_array().unwrap();
        assert!(!segments.is_empty());
        let joined: Vec<&str> = segments
            .iter()
            .map(|s| s["text"].as_str().unwrap().trim())
            .collect();
        assert_eq!(joined.join(" "), text);
        assert!(segments
            .iter()
            .all(|s| s["end"].as_f64() >= s["start"].as_f64()));
    }

    // Word granularity: the client parses `words`; only `word` asked leaves segments out,
    // as OpenAI does; both give both.
    let w = &r["word_granularity"];
    assert_eq!(
        r["word_types"],
        serde_json::json!(["TranscriptionWord"]),
        "{r}"
    );
    assert!(w["segments"].is_null(), "{w}");
    let words = w["words"].as_array().expect("words");
    let spoken: Vec<String> = words
        .iter()
        .map(|x| x["word"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        spoken.join(" "),
        text,
        "the words, joined, are the transcript"
    );
    let mut last_start = 0.0;
    for x in words {
        let (start, end) = (x["start"].as_f64().unwrap(), x["end"].as_f64().unwrap());
        assert!(start >= last_start && end >= start, "{x}");
        assert!(end <= w["duration"].as_f64().unwrap() + 0.01, "{x}");
        last_start = start;
    }
    let both = &r["both_granularities"];
    assert_eq!(both["words"], w["words"]);
    assert!(!both["segments"].as_array().unwrap().is_empty(), "{both}");

    // Errors arrive as the client's own exception types, in OpenAI's shape.
    let e = &r["errors"];
    assert_eq!(e["bad_format"]["raised"], "BadRequestError", "{e}");
    assert_eq!(e["bad_format"]["code"], "unsupported-response-format");
    assert_eq!(e["bad_format"]["type"], "invalid_request_error");
    assert_eq!(e["bad_model"]["raised"], "BadRequestError", "{e}");
    assert_eq!(e["bad_model"]["code"], "model_not_found");
    assert_eq!(e["granularity_without_verbose"]["status"], 400, "{e}");
    assert_eq!(
        e["granularity_without_verbose"]["code"],
        "unsupported-timestamp-granularities"
    );
    assert_eq!(e["bad_key"]["raised"], "AuthenticationError", "{e}");
    assert_eq!(e["bad_key"]["status"], 401);
    let models: Vec<&str> = r["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        models.contains(&"whisper-1") && models.contains(&"default"),
        "{models:?}"
    );

    // Each transcription is a stored job like any other.
    let id = Uuid::parse_str(r["job_id"].as_str().expect("x-voxq-job-id")).unwrap();
    let job = stack.job(id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["lane"], "interactive");
    assert_eq!(job["result"]["text"].as_str().unwrap().trim(), text);
    // Refused requests created nothing: 10 transcriptions succeeded, 10 jobs exist.
    let listed: Value = stack
        .http
        .get(format!("{}/v1/jobs?limit=100", stack.base))
        .bearer_auth(&stack.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 10, "{listed}");
}
