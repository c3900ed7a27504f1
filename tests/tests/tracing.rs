//! Trace context and JSON logs: a `traceparent` sent with `POST /v1/jobs` is continued
//! by the API (answered in its `traceparent` header), stored with the job, and the
//! worker's log lines for that job carry the same `trace_id` (`VOXQ_LOG_FORMAT=json`).

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

#[tokio::test(flavor = "multi_thread")]
async fn a_requests_trace_reaches_the_workers_job_logs() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env().set("VOXQ_LOG_FORMAT", "json")).await;
    stack.start_worker();
    let bytes = std::fs::read(root().join("fixtures/voice/01-running-late.ogg")).unwrap();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name("note.ogg"),
    );
    let r = stack
        .http
        .post(format!("{}/v1/jobs", stack.base))
        .bearer_auth(&stack.key)
        .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let answered = r.headers()["traceparent"].to_str().unwrap().to_string();
    assert!(
        answered.starts_with(&format!("00-{TRACE}-")) && !answered.contains("00f067aa0ba902b7"),
        "the API continues the trace with a span of its own: {answered}"
    );
    let body: Value = r.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    let job = stack
        .wait_done(id.parse().unwrap(), Duration::from_secs(120))
        .await;
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
