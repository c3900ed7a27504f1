//! Prometheus metrics of the API and of a worker, on their `metrics_addr`: they pass
//! `promtool check metrics` (Prometheus's own linter, Debian package `prometheus`), and
//! count what happened: a completed and a failed job, their stages, the requests.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use voxq_tests::{root, serial, Stack, StackConfig};

const DONE: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn scrape(http: &reqwest::Client, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            assert_eq!(r.status(), 200);
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
            return r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "no metrics on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `promtool check metrics` on the exposition; panics with its findings.
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; make test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `name{labels}` as written (labels in the exposition's order).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn api_and_worker_metrics_pass_promtool_and_count_what_happened() {
    let _serial = serial().await;
    let (api_port, worker_port) = (free_port(), free_port());
    let mut stack = Stack::start(
        StackConfig::from_env().set("VOXQ_METRICS_ADDR", format!("127.0.0.1:{api_port}")),
    )
    .await;
    // A chat provider nobody listens for, behind a breaker that opens at the first
    // failure: the abstractive summary falls back to the local one, and the metrics
    // show the fault and the open breaker.
    let dead_port = free_port();
    let toml = std::env::temp_dir().join(format!("voxq-metrics-{dead_port}.toml"));
    std::fs::write(
        &toml,
        format!(
            "[breaker]\nfailure_threshold = 1\ncool_down_ms = 600000\n\n\
             [[chat_cheap]]\nname = \"dead\"\nbase_url = \"http://127.0.0.1:{dead_port}/v1\"\n\
             api_key_env = \"STUB_CHAT_KEY\"\nmodel = \"gpt-4o-mini\"\n"
        ),
    )
    .unwrap();
    stack.start_worker_with(&[
        ("VOXQ_METRICS_ADDR", &format!("127.0.0.1:{worker_port}")),
        ("VOXQ_CONFIG", &toml.display().to_string()),
        ("STUB_CHAT_KEY", "sk-none"),
    ]);
    let key = stack.key.clone();
    let ok = stack
        .upload_as(
            &key,
            &root().join("fixtures/voice/01-running-late.ogg"),
            &[("summary", "abstractive")],
        )
        .await;
    let bad = stack.upload(&root().join("fixtures/bad/text.wav")).await;
    assert_eq!(stack.wait_done(ok, DONE).await["status"], "completed");
    let failed = stack.wait_done(bad, DONE).await;
    assert_eq!(failed["status"], "failed");
    let code = failed["error"]["code"].as_str().unwrap().to_string();

    let worker = scrape(&stack.http, worker_port).await;
    promtool(&worker);
    let api = scrape(&stack.http, api_port).await;
    promtool(&api);

    let w = |series: &str| sample(&worker, series);
    assert_eq!(
        w(r#"voxq_jobs_finished_total{code="",lane="interactive",outcome="completed"}"#),
        Some(1.0),
        "{worker}"
    );
    assert_eq!(
        w(&format!(
            r#"voxq_jobs_finished_total{{code="{code}",lane="interactive",outcome="failed"}}"#
        )),
        Some(1.0),
        "{worker}"
    );
    for stage in ["fetch", "decode", "transcribe", "store", "total"] {
        assert_eq!(
            w(&format!(
                r#"voxq_stage_duration_seconds_count{{stage="{stage}"}}"#
            )),
            Some(1.0),
            "{stage}: {worker}"
        );
    }
    let audio = w(r#"voxq_audio_processed_seconds_total{lane="interactive"}"#).unwrap();
    assert!((4.0..8.0).contains(&audio), "{audio}");
    assert!(worker.contains("voxq_transcribe_realtime_factor_count{model="));
    assert!(worker.contains(r#"voxq_stage_calls_total{cached="false",model="#));

    // Providers: the local engine served the transcript; the dead chat provider
    // failed once, which opened its breaker.
    assert!(
        worker.lines().any(|l| l
            .starts_with(r#"voxq_provider_calls_total{chain="transcribe",model="#)
            && l.ends_with(r#"outcome="ok",provider="local"} 1"#)),
        "{worker}"
    );
    let chat = r#"chain="chat_cheap""#;
    assert_eq!(
        w(&format!(
            r#"voxq_provider_calls_total{{{chat},model="gpt-4o-mini",outcome="fault",provider="dead"}}"#
        )),
        Some(1.0),
        "{worker}"
    );
    assert_eq!(
        w(&format!(
            r#"voxq_provider_failures_total{{{chat},code="provider-unreachable",provider="dead"}}"#
        )),
        Some(1.0),
        "{worker}"
    );
    assert_eq!(
        w(&format!(
            r#"voxq_provider_breaker_opened_total{{{chat},provider="dead"}}"#
        )),
        Some(1.0)
    );
    for (state, value) in [("open", 1.0), ("closed", 0.0), ("half_open", 0.0)] {
        assert_eq!(
            w(&format!(
                r#"voxq_provider_breaker_state{{{chat},provider="dead",state="{state}"}}"#
            )),
            Some(value),
            "{state}: {worker}"
        );
    }
    let job = stack.job(ok).await;
    assert_eq!(
        job["result"]["usage"]["summarize"]["provider"], "local",
        "{job}"
    );
    // Counters read from the chains grow only with calls: a second scrape adds nothing.
    let again = scrape(&stack.http, worker_port).await;
    for series in [
        format!(
            r#"voxq_provider_calls_total{{{chat},model="gpt-4o-mini",outcome="fault",provider="dead"}}"#
        ),
        format!(r#"voxq_provider_breaker_opened_total{{{chat},provider="dead"}}"#),
    ] {
        assert_eq!(sample(&again, &series), Some(1.0), "{series}: {again}");
    }

    let a = |series: &str| sample(&api, series);
    assert_eq!(
        a(r#"voxq_http_requests_total{method="POST",route="/v1/jobs",status="202"}"#),
        Some(2.0),
        "{api}"
    );
    assert!(
        a(r#"voxq_http_requests_total{method="GET",route="/v1/jobs/{id}",status="200"}"#)
            .is_some_and(|n| n >= 2.0),
        "{api}"
    );
    assert_eq!(
        a(r#"voxq_queue_waiting_tasks{lane="interactive"}"#),
        Some(0.0)
    );
    // The database is shared by the test binaries: the level exists, whatever it is.
    assert!(a("voxq_webhook_deliveries_pending").is_some(), "{api}");
}
