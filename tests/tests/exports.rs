//! Transcript exports through the real API: `GET /v1/jobs/{id}/transcript` in every
//! format, with its content type and file name, byte for byte what
//! `voxq-worker transcribe` prints for the same file; and its refusals.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;
use voxq_tests::{bin, model_dir, root, serial, Stack, StackConfig};

const DONE: Duration = Duration::from_secs(120);
const NOTE: &str = "fixtures/voice/08-flight-delayed.mp3";
const SEVERAL: &str = "fixtures/voice/06-project-update.ogg";

async fn export(stack: &Stack, key: &str, id: Uuid, query: &str) -> reqwest::Response {
    stack
        .http
        .get(format!("{}/v1/jobs/{id}/transcript{query}", stack.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("GET /v1/jobs/{id}/transcript")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_str()
        .expect("ASCII header")
        .to_string()
}

/// What `voxq-worker transcribe --format FORMAT FILE` prints (local mode, one file).
fn local(format: &str, file: &Path) -> String {
    let out = Command::new(bin("voxq-worker"))
        .args([
            "transcribe",
            "--format",
            format,
            "--threads",
            "1",
            "--model-dir",
        ])
        .arg(model_dir())
        .arg(file)
        .output()
        .expect("voxq-worker transcribe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

struct Cue {
    start_ms: u64,
    end_ms: u64,
    text: String,
}

/// `HH:MM:SS<sep>mmm` in milliseconds.
fn millis(t: &str, sep: char) -> u64 {
    let (hms, ms) = t
        .split_once(sep)
        .unwrap_or_else(|| panic!("'{t}' lacks '{sep}'"));
    assert_eq!(ms.len(), 3, "milliseconds of '{t}'");
    let parts: Vec<u64> = hms
        .split(':')
        .map(|p| {
            assert_eq!(p.len(), 2, "field of '{t}'");
            p.parse().expect("a number")
        })
        .collect();
    assert_eq!(parts.len(), 3, "'{t}' is HH:MM:SS{sep}mmm");
    assert!(parts[1] < 60 && parts[2] < 60, "'{t}'");
    ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000 + ms.parse::<u64>().expect("ms")
}

/// The cues of an SRT (`numbered`) or WebVTT body (after its header): blocks separated
/// by one blank line, each `[number] / start --> end / one text line`.
fn cues(body: &str, sep: char, numbered: bool) -> Vec<Cue> {
    assert!(body.ends_with("\n\n"), "ends with a blank line: {body:?}");
    body.split_terminator("\n\n")
        .enumerate()
        .map(|(i, block)| {
            let mut lines = block.lines();
            if numbered {
                assert_eq!(lines.next(), Some((i + 1).to_string().as_str()), "{block}");
            }
            let timing = lines.next().expect("a timing line");
            let (start, end) = timing
                .split_once(" --> ")
                .unwrap_or_else(|| panic!("timing line '{timing}'"));
            let text: Vec<&str> = lines.collect();
            assert_eq!(text.len(), 1, "one text line per cue: {block}");
            Cue {
                start_ms: millis(start, sep),
                end_ms: millis(end, sep),
                text: text[0].to_string(),
            }
        })
        .collect()
}

/// The cues match the job's segments (text, times to the millisecond) and run forward.
fn check_cues(cues: &[Cue], segments: &[Value], format: &str) {
    assert_eq!(cues.len(), segments.len(), "{format}: one cue per segment");
    let mut last_start = 0;
    for (cue, seg) in cues.iter().zip(segments) {
        assert_eq!(cue.text, seg["text"].as_str().expect("text"), "{format}");
        let ms = |k: &str| (seg[k].as_f64().expect("time") * 1000.0).round() as u64;
        assert_eq!(cue.start_ms, ms("start"), "{format}: start of {seg}");
        assert_eq!(cue.end_ms, ms("end"), "{format}: end of {seg}");
        assert!(cue.start_ms <= cue.end_ms, "{format}: {seg}");
        assert!(cue.start_ms >= last_start, "{format}: cues out of order");
        last_start = cue.start_ms;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_export_format_matches_the_local_cli() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env()).await;
    stack.start_worker();
    // The flight note is one segment; the project update several (cue numbers, order).
    let files = [root().join(NOTE), root().join(SEVERAL)];
    let mut ids = Vec::new();
    for file in &files {
        ids.push(stack.upload(file).await);
    }
    let mut cue_counts = Vec::new();
    for (file, id) in files.iter().zip(ids) {
        let job = stack.wait_done(id, DONE).await;
        assert_eq!(job["status"], "completed", "{job}");
        cue_counts.push(check_exports(&stack, &job, file).await);
    }
    assert!(
        cue_counts.iter().any(|&n| n >= 2),
        "no file with several cues: {cue_counts:?}"
    );
}

/// Fetches every format of a completed job's transcript and checks it against the job
/// and against local mode on the same file; returns the number of cues.
async fn check_exports(stack: &Stack, job: &Value, file: &Path) -> usize {
    let id = Uuid::parse_str(job["id"].as_str().expect("id")).expect("uuid");
    let version = job["version"].as_i64().expect("a result version");
    let result = &job["result"];
    let text = result["text"].as_str().expect("text");
    assert!(!text.is_empty(), "{job}");
    let segments = result["segments"].as_array().expect("segments");
    assert!(!segments.is_empty(), "{job}");

    let mut bodies = std::collections::HashMap::new();
    for (query, ext, content_type) in [
        ("", "txt", "text/plain; charset=utf-8"),
        ("?format=txt", "txt", "text/plain; charset=utf-8"),
        ("?format=srt", "srt", "application/x-subrip; charset=utf-8"),
        ("?format=vtt", "vtt", "text/vtt; charset=utf-8"),
        ("?format=json", "json", "application/json"),
    ] {
        let r = export(stack, &stack.key, id, query).await;
        assert_eq!(r.status(), 200, "{query}");
        assert_eq!(header(&r, "content-type"), content_type, "{query}");
        assert_eq!(
            header(&r, "content-disposition"),
            format!("attachment; filename=\"{id}.v{version}.{ext}\""),
            "{query}"
        );
        let body = r.text().await.expect("body");
        if query.is_empty() {
            bodies.insert("default", body);
        } else {
            bodies.insert(ext, body);
        }
    }
    assert_eq!(bodies["default"], bodies["txt"], "txt is the default");

    // txt: the job's text as a file (a final newline), as local mode prints it.
    assert_eq!(bodies["txt"], format!("{text}\n"));
    assert_eq!(
        bodies["txt"],
        local("text", file),
        "txt differs from local mode"
    );

    let srt = &bodies["srt"];
    check_cues(&cues(srt, ',', true), segments, "srt");
    assert_eq!(*srt, local("srt", file), "srt differs from local mode");

    let vtt = &bodies["vtt"];
    let vtt_cues = vtt.strip_prefix("WEBVTT\n\n").expect("WEBVTT header");
    check_cues(&cues(vtt_cues, '.', false), segments, "vtt");
    assert_eq!(*vtt, local("vtt", file), "vtt differs from local mode");

    let exported: Value = serde_json::from_str(&bodies["json"]).expect("JSON");
    assert_eq!(
        exported,
        json!({
            "text": result["text"],
            "language": result["language"],
            "language_probability": result["language_probability"],
            "duration_s": result["duration_s"],
            "segments": result["segments"],
        })
    );

    // A named version: the same file under the same name; a version never stored: 404.
    let r = export(
        stack,
        &stack.key,
        id,
        &format!("?format=srt&version={version}"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-disposition"),
        format!("attachment; filename=\"{id}.v{version}.srt\"")
    );
    assert_eq!(r.text().await.unwrap(), *srt);
    let r = export(stack, &stack.key, id, &format!("?version={}", version + 1)).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "version-not-found", "{body}");
    segments.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_refuse_jobs_without_results_other_tenants_and_unknown_formats() {
    let _serial = serial().await;
    // No worker: the job stays queued.
    let stack = Stack::start(StackConfig::from_env()).await;
    let id = stack.upload(&root().join(NOTE)).await;

    let r = export(&stack, &stack.key, id, "?format=srt").await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "no-result", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("status: queued"), "{body}");

    let r = export(&stack, &stack.key, id, "?format=doc").await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "bad-request", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    for name in ["'doc'", "txt", "srt", "vtt", "json"] {
        assert!(message.contains(name), "{name} not in {body}");
    }

    // Another tenant's job does not exist for this key, whatever the format.
    let other = stack.create_key(
        &format!("other-{}", Uuid::new_v4().simple()),
        "jobs:write,jobs:read",
    );
    for query in ["", "?format=vtt"] {
        let r = export(&stack, &other, id, query).await;
        assert_eq!(r.status(), 404, "{query}");
        let body: Value = r.json().await.expect("JSON error");
        assert_eq!(body["error"]["code"], "not-found", "{body}");
    }
    let r = export(&stack, &stack.key, Uuid::new_v4(), "").await;
    assert_eq!(r.status(), 404);

    // Reading needs `jobs:read`.
    let writer = stack.create_key(&stack.tenant, "jobs:write");
    let r = export(&stack, &writer, id, "").await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "missing-scope", "{body}");
}
