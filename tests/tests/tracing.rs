//! Trace context and JSON logs: a `traceparent` sent with `POST /v1/jobs` is continued
//! by the API (answered in its `traceparent` header), stored with the job, and the
//! worker's log lines for that job carry the same `trace_id` (`VOXQ_LOG_FORMAT=json`);
//! with `otlp_endpoint` set, the spans reach an OTLP collector in that shape, checked by
//! OpenTelemetry's own protobuf definitions.

use std::time::Duration;

use serde_json::Value;
use voxq_tests::{root, serial, Stack, StackConfig};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The JSON log lines of a process (other lines, such as a panic, are skipped).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// Submits a voice note with `traceparent`; the `traceparent` the API answered, and
/// the job's id.
async fn traced_upload(stack: &Stack, traceparent: &str) -> (String, uuid::Uuid) {
    let bytes = std::fs::read(root().join("fixtures/voice/01-running-late.ogg")).unwrap();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name("note.ogg"),
    );
    let r = stack
        .http
        .post(format!("{}/v1/jobs", stack.base))
        .bearer_auth(&stack.key)
        .header("traceparent", traceparent)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let answered = r.headers()["traceparent"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    (answered, body["id"].as_str().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requests_trace_reaches_the_workers_job_logs() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env().set("VOXQ_LOG_FORMAT", "json")).await;
    stack.start_worker();
    let (answered, id) = traced_upload(&stack, &format!("00-{TRACE}-00f067aa0ba902b7-01")).await;
    assert!(
        answered.starts_with(&format!("00-{TRACE}-")) && !answered.contains("00f067aa0ba902b7"),
        "the API continues the trace with a span of its own: {answered}"
    );
    let job = stack.wait_done(id, Duration::from_secs(120)).await;
    let id = id.to_string();
    assert_eq!(job["status"], "completed");

    // The worker's lines about this job carry the trace and the API's span as parent.
    let api_span = answered.split('-').nth(2).unwrap().to_string();
    let lines = json_lines(&stack.workers[0].log_text());
    assert!(!lines.is_empty(), "the worker logs JSON lines");
    let of_job: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["id"] == id.as_str() || l["spans"][0]["id"] == id.as_str())
        .collect();
    assert!(!of_job.is_empty(), "no JSON line names the job {id}");
    let completed = of_job
        .iter()
        .find(|l| l["fields"]["message"] == "job completed")
        .expect("a 'job completed' line");
    let job_span = completed["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "job")
        .expect("the job span");
    assert_eq!(job_span["trace_id"], TRACE, "{completed}");
    assert_eq!(job_span["parent_id"], api_span.as_str(), "{completed}");

    // The API's own lines are JSON too, in a request span of the same trace.
    let api_lines = json_lines(&stack.api.log_text());
    assert!(
        api_lines
            .iter()
            .any(|l| l["fields"]["message"] == "job accepted" && l["span"]["trace_id"] == TRACE),
        "{}",
        stack.api.log_text()
    );
}

/// Collects the bodies POSTed to `/v1/traces`, as an OpenTelemetry collector would.
/// Each body comes with its `content-type` and `x-collector-key` headers, checked by the
/// test itself (a panic in the handler would only drop the request).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

async fn otlp_collector() -> (u16, Received) {
    use axum::routing::post;
    let bodies = Received::default();
    let sink = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                sink.lock().unwrap().push((
                    header("content-type"),
                    header("x-collector-key"),
                    body,
                ));
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, bodies)
}

/// One exported span, as `tests/scripts/otlp_check.py` printed it.
#[derive(Debug, Clone)]
struct Exported {
    trace: String,
    span: String,
    parent: String,
    kind: u32,
    name: String,
    service: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_export_over_otlp_with_the_worker_under_the_request() {
    const TRACE2: &str = "0af7651916cd43dd8448eb211c80319c";
    const CALLER: &str = "b7ad6b7169203331";
    let _serial = serial().await;
    let (port, bodies) = otlp_collector().await;
    let mut stack = Stack::start(
        StackConfig::from_env()
            .set("VOXQ_OTLP_ENDPOINT", format!("http://127.0.0.1:{port}"))
            .set("VOXQ_OTLP_HEADERS", "x-collector-key=k1"),
    )
    .await;
    stack.start_worker();
    let (answered, id) = traced_upload(&stack, &format!("00-{TRACE2}-{CALLER}-01")).await;
    let api_span = answered.split('-').nth(2).unwrap().to_string();
    let job = stack.wait_done(id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "completed");

    // Spans are sent each second: wait for the worker's transcribe span of this trace.
    let file = std::env::temp_dir().join(format!("voxq-otlp-{port}.jsonl"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let received = bodies.lock().unwrap().clone();
        for (content_type, key, _) in &received {
            assert_eq!(content_type, "application/json");
            assert_eq!(key, "k1", "otlp_headers are sent");
        }
        let lines: Vec<&str> = received.iter().map(|(_, _, b)| b.as_str()).collect();
        std::fs::write(&file, lines.join("\n")).unwrap();
        let out = std::process::Command::new("python3")
            .arg(root().join("tests/scripts/otlp_check.py"))
            .arg(&file)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "the export does not parse as OTLP: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let spans: Vec<Exported> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                Exported {
                    trace: f[0].into(),
                    span: f[1].into(),
                    parent: f[2].into(),
                    kind: f[3].parse().unwrap(),
                    name: f[4].into(),
                    service: f[5].into(),
                }
            })
            .filter(|s| s.trace == TRACE2)
            .collect();
        if spans.iter().any(|s| s.name == "transcribe") || std::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no '{name}' span of the trace in {spans:#?}"))
            .clone()
    };
    let request = find("request");
    assert_eq!(
        (
            request.service.as_str(),
            request.span.as_str(),
            request.parent.as_str()
        ),
        ("voxq-api", api_span.as_str(), CALLER),
        "the API's span is the one it answered, under the caller's"
    );
    assert_eq!(request.kind, 2, "SERVER");
    let job_span = find("job");
    assert_eq!(job_span.service, "voxq-worker");
    assert_eq!(
        job_span.parent, request.span,
        "the job joins the request's span"
    );
    assert_eq!(job_span.kind, 5, "CONSUMER");
    for stage in ["fetch", "transcribe"] {
        let s = find(stage);
        assert_eq!(s.parent, job_span.span, "{stage} runs under the job");
        assert_eq!(s.service, "voxq-worker");
    }
    let _ = std::fs::remove_file(&file);
}
