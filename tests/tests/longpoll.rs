//! Long-poll: `GET /v1/jobs/{id}?wait=N` answers when the job finishes (woken by
//! PostgreSQL NOTIFY), or after N seconds with the current state; waiting requests are
//! bounded per process.

use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;
use voxq_tests::{root, serial, Stack, StackConfig};

async fn wait_get(stack: &Stack, id: Uuid, wait: u64) -> (u16, Value, Duration) {
    let started = Instant::now();
    let r = stack
        .http
        .get(format!("{}/v1/jobs/{id}?wait={wait}", stack.base))
        .bearer_auth(&stack.key)
        .timeout(Duration::from_secs(wait + 30))
        .send()
        .await
        .expect("GET ?wait");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON"), started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_answers_when_the_job_finishes_not_when_the_wait_ends() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env()).await;
    stack.start_worker();
    let note = root().join("fixtures/voice/01-running-late.ogg");
    // Let the worker load its model first, so the wait below is the job's alone.
    let warm = stack.upload(&note).await;
    let (_, job, _) = wait_get(&stack, warm, 60).await;
    assert_eq!(job["status"], "completed", "{job}");

    let id = stack
        .upload(&root().join("fixtures/voice/08-flight-delayed.mp3"))
        .await;
    let (status, job, took) = wait_get(&stack, id, 50).await;
    assert_eq!(status, 200);
    assert_eq!(job["status"], "completed", "{job}");
    assert!(job["result"]["text"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("flight"));
    assert!(
        took < Duration::from_secs(30),
        "answered after {took:?}: the finish did not wake the request"
    );
    // A finished job is answered at once.
    let (_, job, took) = wait_get(&stack, id, 50).await;
    assert_eq!(job["status"], "completed");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Over the limit: 400.
    let r = stack
        .http
        .get(format!("{}/v1/jobs/{id}?wait=61", stack.base))
        .bearer_auth(&stack.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_ends_after_its_wait_and_waiting_requests_are_bounded() {
    let _serial = serial().await;
    // No worker: the job stays queued.
    let stack = Stack::start(StackConfig::from_env().set("VOXQ_MAX_WAITING_REQUESTS", 1)).await;
    let id = stack
        .upload(&root().join("fixtures/voice/01-running-late.ogg"))
        .await;
    let first = wait_get(&stack, id, 3);
    let second = async {
        // Starts once the first is surely waiting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        wait_get(&stack, id, 3).await
    };
    let ((s1, j1, t1), (s2, j2, t2)) = tokio::join!(first, second);
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(
        (j1["status"].as_str(), j2["status"].as_str()),
        (Some("queued"), Some("queued"))
    );
    assert!(
        t1 >= Duration::from_secs(3),
        "the first waited its 3 s: {t1:?}"
    );
    assert!(
        t2 < Duration::from_secs(2),
        "the second found no free waiting slot and was answered at once: {t2:?}"
    );
}
