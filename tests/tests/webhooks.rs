//! Webhooks through the real stack: deliveries signed per Standard Webhooks and
//! verified by the reference `standardwebhooks` crate (not our code), retries that keep
//! the `webhook-id`, redelivery, `batch.completed`, 410 disabling an endpoint, a
//! delivery surviving a dispatcher killed -9 while its receiver was down, and private
//! targets refused at submission and at delivery.

use std::time::Duration;

use serde_json::{json, Value};
use voxq_tests::receiver::{Got, Receiver};
use voxq_tests::{root, serial, Stack, StackConfig};

const DONE: Duration = Duration::from_secs(120);
const NOTE: &str = "fixtures/voice/01-running-late.ogg";

/// A stack that may deliver to this machine's receivers, with a 1 s retry schedule.
fn config(receiver: &Receiver) -> StackConfig {
    StackConfig::from_env()
        .set("VOXQ_WEBHOOK_ALLOW", "127.0.0.1/32")
        .set("VOXQ_WEBHOOK_ALLOW_HTTP", "true")
        .set("VOXQ_WEBHOOK_ALLOW_PORTS", format!("[{}]", receiver.port))
        .set("VOXQ_WEBHOOK_RETRY_SCHEDULE_S", "[1, 1, 1]")
}

async fn call(stack: &Stack, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", stack.base);
    let request = match method {
        "GET" => stack.http.get(url),
        "DELETE" => stack.http.delete(url),
        _ => stack.http.post(url),
    };
    let request = match body {
        Some(b) => request.json(&b),
        None => request,
    };
    let r = request
        .bearer_auth(&stack.key)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Verifies a delivery with the reference implementation.
fn verify(secret: &str, got: &Got) {
    let wh = standardwebhooks::Webhook::new(secret).expect("a valid whsec_ secret");
    wh.verify(&got.body, &got.headers)
        .unwrap_or_else(|e| panic!("signature does not verify: {e:?}: {:?}", got.headers));
}

async fn create_endpoint(stack: &Stack, body: Value) -> (String, String) {
    let (status, e) = call(stack, "POST", "/v1/webhooks", Some(body)).await;
    assert_eq!(status, 201, "{e}");
    let secret = e["secret"].as_str().expect("secret shown once").to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (e["id"].as_str().unwrap().to_string(), secret)
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_are_signed_retried_with_one_id_and_redeliverable() {
    let _serial = serial().await;
    let receiver = Receiver::start(0).await;
    let mut stack = Stack::start(config(&receiver)).await;
    stack.start_worker();

    // A registered endpoint with the result in its payload, failing twice first.
    let (endpoint, secret) = create_endpoint(
        &stack,
        json!({"url": receiver.url("/endpoint"), "events": ["job.completed"], "include_result": true}),
    )
    .await;
    let (status, listed) = call(&stack, "GET", "/v1/webhooks", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["id"], endpoint.as_str());
    assert!(
        listed["data"][0].get("secret").is_none(),
        "secrets are shown once: {listed}"
    );
    receiver.script("/endpoint", &[(500, None), (503, Some("1"))]);

    // A per-job URL needs the tenant's secret first.
    let per_job = json!({"webhook_url": receiver.url("/job")});
    let hook = receiver.url("/job");
    let r = stack
        .post_file(&stack.key, &root().join(NOTE), &[("webhook_url", &hook)])
        .await;
    let status = r.status().as_u16();
    let refused: Value = r.json().await.unwrap();
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "webhook-secret-missing");
    let (status, tenant_secret) =
        call(&stack, "POST", "/v1/webhooks/secret", Some(json!({}))).await;
    assert_eq!(status, 200, "{tenant_secret}");
    let tenant_secret = tenant_secret["secret"].as_str().unwrap().to_string();

    let fields = [("webhook_url", per_job["webhook_url"].as_str().unwrap())];
    let id = stack
        .upload_as(&stack.key.clone(), &root().join(NOTE), &fields)
        .await;
    let job = stack.wait_done(id, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");

    // The endpoint: two failures, then delivered; one webhook-id across all three.
    let got = receiver
        .wait("/endpoint", Duration::from_secs(30), |g| g.len() >= 3)
        .await;
    assert_eq!(got.len(), 3, "delivered once after two failures");
    let webhook_id = got[0].header("webhook-id");
    assert!(webhook_id.starts_with("msg_"), "{webhook_id}");
    for g in &got {
        assert_eq!(
            g.header("webhook-id"),
            webhook_id,
            "the same id on every attempt"
        );
        assert_eq!(g.body, got[0].body, "the same body on every attempt");
        verify(&secret, g);
    }
    let payload = got[2].json();
    assert_eq!(payload["type"], "job.completed");
    assert_eq!(payload["data"]["id"], id.to_string());
    assert_eq!(payload["data"]["status"], "completed");
    assert_eq!(payload["data"]["links"]["self"], format!("/v1/jobs/{id}"));
    let text = payload["data"]["result"]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        !text.trim().is_empty(),
        "include_result carries the transcript: {payload}"
    );
    assert_eq!(text, job["result"]["text"].as_str().unwrap());

    // The per-job URL: thin payload, signed with the tenant's secret, not the endpoint's.
    let got_job = receiver
        .wait("/job", Duration::from_secs(30), |g| !g.is_empty())
        .await;
    verify(&tenant_secret, &got_job[0]);
    assert!(
        standardwebhooks::Webhook::new(&secret)
            .unwrap()
            .verify(&got_job[0].body, &got_job[0].headers)
            .is_err(),
        "another secret's signature must not verify"
    );
    let thin = got_job[0].json();
    assert_eq!(thin["data"]["id"], id.to_string());
    assert!(
        thin["data"].get("result").is_none(),
        "thin by default: {thin}"
    );

    // The deliveries API shows the attempts; a redelivery sends the same id again.
    let (status, deliveries) = call(
        &stack,
        "GET",
        &format!("/v1/webhooks/{endpoint}/deliveries"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{deliveries}");
    let d = &deliveries["data"][0];
    assert_eq!(d["status"], "delivered", "{d}");
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["webhook_id"], webhook_id.as_str());
    let codes: Vec<i64> = d["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 503, 200]);
    let (status, again) = call(
        &stack,
        "POST",
        &format!(
            "/v1/webhooks/deliveries/{}/redeliver",
            d["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, 202, "{again}");
    let got = receiver
        .wait("/endpoint", Duration::from_secs(30), |g| g.len() >= 4)
        .await;
    assert_eq!(got[3].header("webhook-id"), webhook_id);
    verify(&secret, &got[3]);
    let (_, job_deliveries) = call(
        &stack,
        "GET",
        &format!("/v1/webhooks/deliveries?job_id={id}"),
        None,
    )
    .await;
    assert_eq!(
        job_deliveries["data"].as_array().unwrap().len(),
        2,
        "{job_deliveries}"
    );

    // Rotation: both secrets sign during the grace period.
    let (status, rotated) = call(
        &stack,
        "POST",
        &format!("/v1/webhooks/{endpoint}/rotate"),
        Some(json!({"grace_s": 600})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    let id2 = stack.upload(&root().join(NOTE)).await;
    stack.wait_done(id2, DONE).await;
    let got = receiver
        .wait("/endpoint", Duration::from_secs(30), |g| g.len() >= 5)
        .await;
    assert_eq!(got[4].json()["data"]["id"], id2.to_string());
    assert_eq!(got[4].header("webhook-signature").split(' ').count(), 2);
    verify(&new_secret, &got[4]);
    verify(&secret, &got[4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_completed_is_sent_and_410_disables_an_endpoint() {
    let _serial = serial().await;
    let receiver = Receiver::start(0).await;
    let mut stack = Stack::start(config(&receiver).set("VOXQ_BENCH_NOOP_TRANSCRIBE", "true")).await;
    stack.start_worker();
    let (_, secret) = create_endpoint(
        &stack,
        json!({"url": receiver.url("/batches"), "events": ["batch.completed"]}),
    )
    .await;
    let (gone, _) = create_endpoint(&stack, json!({"url": receiver.url("/gone")})).await;
    let source = {
        let id = stack.upload(&root().join(NOTE)).await;
        stack.wait_done(id, DONE).await;
        voxq_tests::job_source(&stack.config, id).await
    };
    let items: Vec<Value> = (0..3)
        .map(|i| json!({"audio_url": source, "custom_id": format!("n{i}")}))
        .collect();
    let (status, batch) = call(&stack, "POST", "/v1/batches", Some(json!({"items": items}))).await;
    assert_eq!(status, 202, "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_string();
    let got = receiver
        .wait("/batches", Duration::from_secs(60), |g| !g.is_empty())
        .await;
    verify(&secret, &got[0]);
    let payload = got[0].json();
    assert_eq!(payload["type"], "batch.completed");
    assert_eq!(payload["data"]["id"], batch_id.as_str());
    assert_eq!(payload["data"]["total"], 3);
    assert_eq!(payload["data"]["completed"], 3);
    assert_eq!(
        payload["data"]["links"]["results"],
        format!("/v1/batches/{batch_id}/results")
    );
    // Only batch events reach /batches: the filter holds.
    assert!(receiver
        .got()
        .iter()
        .filter(|g| g.path == "/batches")
        .all(|g| g.json()["type"] == "batch.completed"));

    // /gone answers 410 to its next delivery: the endpoint is disabled.
    let before = receiver.got().iter().filter(|g| g.path == "/gone").count();
    receiver.script("/gone", &[(410, None)]);
    let id = stack.upload(&root().join(NOTE)).await;
    stack.wait_done(id, DONE).await;
    receiver
        .wait("/gone", Duration::from_secs(30), |g| g.len() > before)
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, e) = call(&stack, "GET", &format!("/v1/webhooks/{gone}"), None).await;
        if e["enabled"] == false {
            assert!(
                e["disabled_reason"].as_str().unwrap().contains("410"),
                "{e}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not disabled: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = receiver.got().iter().filter(|g| g.path == "/gone").count();
    let id = stack.upload(&root().join(NOTE)).await;
    stack.wait_done(id, DONE).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.got().iter().filter(|g| g.path == "/gone").count(),
        n,
        "a disabled endpoint gets nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_survives_a_dispatcher_killed_while_the_receiver_was_down() {
    let _serial = serial().await;
    // Hold a port for the receiver, which is down for now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let placeholder = Receiver::start(port).await;
    placeholder.stop();
    drop(placeholder);
    let mut stack = Stack::start(
        StackConfig::from_env()
            .set("VOXQ_WEBHOOK_ALLOW", "127.0.0.1/32")
            .set("VOXQ_WEBHOOK_ALLOW_HTTP", "true")
            .set("VOXQ_WEBHOOK_ALLOW_PORTS", format!("[{port}]"))
            .set("VOXQ_WEBHOOK_RETRY_SCHEDULE_S", "[2, 2, 2, 2, 2, 2, 2, 2]")
            .set("VOXQ_BENCH_NOOP_TRANSCRIBE", "true"),
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/hook");
    let (_, secret) = create_endpoint(&stack, json!({"url": url})).await;
    let w = stack.start_worker();
    let id = stack.upload(&root().join(NOTE)).await;
    assert_eq!(stack.wait_done(id, DONE).await["status"], "completed");

    // The first attempt fails (nothing listens), then the dispatcher dies with -9.
    let pool = voxq_tests::db(&stack.config).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n: Option<i32> =
            sqlx::query_scalar("SELECT max(attempts) FROM webhook_deliveries WHERE job_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        if n.unwrap_or(0) >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no attempt was made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.workers[w].kill9();
    let receiver = Receiver::start(port).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(receiver.got().is_empty(), "no dispatcher runs now");
    stack.start_worker();
    let got = receiver
        .wait("/hook", Duration::from_secs(60), |g| !g.is_empty())
        .await;
    verify(&secret, &got[0]);
    assert_eq!(got[0].json()["data"]["id"], id.to_string());
    let (_, d) = call(
        &stack,
        "GET",
        &format!("/v1/webhooks/deliveries?job_id={id}"),
        None,
    )
    .await;
    let d = &d["data"][0];
    assert_eq!(d["webhook_id"], got[0].header("webhook-id").as_str());
    let log = d["attempt_log"].as_array().unwrap();
    assert!(
        log[0]["status"].is_null(),
        "the first attempt got no answer: {d}"
    );
    assert!(
        log[0]["error"].as_str().unwrap().contains("connection"),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn private_webhook_targets_are_refused() {
    let _serial = serial().await;
    let receiver = Receiver::start(0).await;
    // The API here allows nothing private; only the worker started below would.
    let stack =
        Stack::start(StackConfig::from_env().set("VOXQ_BENCH_NOOP_TRANSCRIBE", "true")).await;
    let (status, _) = call(&stack, "POST", "/v1/webhooks/secret", Some(json!({}))).await;
    assert_eq!(status, 200);
    for (url, code) in [
        ("https://127.0.0.1/hook", "webhook-forbidden-address"),
        ("https://localhost/hook", "webhook-forbidden-address"),
        (
            "https://169.254.169.254/latest/meta-data",
            "webhook-forbidden-address",
        ),
        ("https://[::1]/hook", "webhook-forbidden-address"),
        ("https://10.1.2.3/hook", "webhook-forbidden-address"),
        ("https://example.com:8443/hook", "webhook-forbidden-port"),
        ("http://example.com/hook", "invalid-webhook-url"),
        ("ftp://example.com/hook", "invalid-webhook-url"),
    ] {
        let r = stack
            .post_json(
                &stack.key,
                json!({"audio_url": "https://example.com/a.ogg", "webhook_url": url}),
            )
            .await;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap()),
            (400, code),
            "{url}: {body}"
        );
        let (status, body) = call(&stack, "POST", "/v1/webhooks", Some(json!({"url": url}))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap()),
            (400, code),
            "{url}: {body}"
        );
    }
    let (_, jobs) = call(&stack, "GET", "/v1/jobs", None).await;
    assert_eq!(
        jobs["data"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );

    // An endpoint the API accepted (public name) that resolves, at delivery, to a
    // private address the worker does not allow: the dispatcher refuses it too, and
    // says so in the delivery. (Simulated with a worker stricter than the API.)
    drop(stack);
    let mut stack = Stack::start(config(&receiver).set("VOXQ_BENCH_NOOP_TRANSCRIBE", "true")).await;
    let (endpoint, _) = create_endpoint(&stack, json!({"url": receiver.url("/private")})).await;
    stack.start_worker_with(&[("VOXQ_WEBHOOK_ALLOW", "")]);
    let id = stack.upload(&root().join(NOTE)).await;
    stack.wait_done(id, DONE).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let d = loop {
        let (_, d) = call(
            &stack,
            "GET",
            &format!("/v1/webhooks/{endpoint}/deliveries"),
            None,
        )
        .await;
        if d["data"][0]["status"] == "failed" {
            break d["data"][0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "not failed: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{d}"
    );
    assert!(
        receiver.got().is_empty(),
        "nothing reached the private receiver"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_receiver_verifies_and_prints_the_transcript() {
    let _serial = serial().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut stack = Stack::start(
        StackConfig::from_env()
            .set("VOXQ_WEBHOOK_ALLOW", "127.0.0.1/32")
            .set("VOXQ_WEBHOOK_ALLOW_HTTP", "true")
            .set("VOXQ_WEBHOOK_ALLOW_PORTS", format!("[{port}]")),
    )
    .await;
    stack.start_worker();
    let (_, secret) = call(&stack, "POST", "/v1/webhooks/secret", Some(json!({}))).await;
    let example = tokio::process::Command::new("python3")
        .arg(root().join("examples/webhook_receiver.py"))
        .args(["--once", "--port", &port.to_string()])
        .env("VOXQ_WEBHOOK_SECRET", secret["secret"].as_str().unwrap())
        .env("VOXQ_API", &stack.base)
        .env("VOXQ_KEY", &stack.key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 examples/webhook_receiver.py");
    voxq_tests::wait_port(port, Duration::from_secs(20));
    let hook = format!("http://127.0.0.1:{port}/voxq");
    let id = stack
        .upload_as(
            &stack.key.clone(),
            &root().join(NOTE),
            &[("webhook_url", &hook)],
        )
        .await;
    let job = stack.wait_done(id, DONE).await;
    let text = job["result"]["text"].as_str().unwrap().trim().to_string();
    assert!(!text.is_empty());
    let out = tokio::time::timeout(Duration::from_secs(60), example.wait_with_output())
        .await
        .expect("the example exits after one event")
        .expect("its output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("{id}: {text}"));
}
