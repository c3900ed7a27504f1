//! Trust boundaries: which S3 objects a tenant may name, what one tenant can learn about
//! another's audio, and what slow, oversized or abusive requests get.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::config::Config;
use shared::objects::ObjectStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;
use voxq_tests::{db, root, serial, Stack, StackConfig};

const DONE: Duration = Duration::from_secs(120);

async fn store(stack: &Stack) -> ObjectStore {
    let env = &stack.config.env;
    ObjectStore::connect(&Config {
        s3_endpoint: env["VOXQ_S3_ENDPOINT"].clone(),
        s3_bucket: env["VOXQ_S3_BUCKET"].clone(),
        s3_region: env["VOXQ_S3_REGION"].clone(),
        ..Config::default()
    })
    .await
}

async fn tenant_id(stack: &Stack, name: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
        .bind(name)
        .fetch_one(&db(&stack.config).await)
        .await
        .expect("tenant")
}

/// Status and body of a JSON submission by URL.
async fn submit(stack: &Stack, key: &str, url: &str) -> (u16, Value) {
    let r = stack.post_json(key, json!({"audio_url": url})).await;
    (r.status().as_u16(), r.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_read_only_their_uploads_and_granted_prefixes() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env()).await;
    let objects = store(&stack).await;
    let bucket = objects.bucket().to_string();
    let run = Uuid::new_v4().simple().to_string();
    let note = std::fs::read(root().join("fixtures/voice/08-flight-delayed.mp3")).unwrap();
    for key in [
        format!("granted/{run}/note.mp3"),
        format!("other/{run}/note.mp3"),
        format!("private/{run}/secret.mp3"),
    ] {
        objects
            .put(&key, note.clone().into(), "audio/mpeg")
            .await
            .unwrap();
    }

    // Nothing is granted yet: every S3 URL but the tenant's own uploads is refused at
    // submission, with one answer whether the object exists or not.
    let refused = [
        "s3://someone-elses-bucket/private/secret.ogg".to_string(),
        format!("s3://{bucket}/private/{run}/secret.mp3"),
        format!("s3://{bucket}/private/{run}/missing.mp3"),
        format!("s3://{bucket}/granted/{run}/note.mp3"),
        format!("s3://{bucket}/uploads/{run}/../../private/{run}/secret.mp3"),
        format!("s3://{bucket}/granted//{run}/note.mp3"),
        format!("s3://{bucket}/granted/./{run}/note.mp3"),
    ];
    let mut answers = Vec::new();
    for url in &refused {
        let (status, body) = submit(&stack, &stack.key, url).await;
        assert_eq!(status, 403, "{url}: {body}");
        assert_eq!(body["error"]["code"], "forbidden-source", "{url}");
        answers.push(body);
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "existing and missing objects must get the same answer: {answers:?}"
    );

    // An admin grants two prefixes.
    for prefix in ["granted", "other/"] {
        let (ok, out) = stack.admin(&[
            "sources",
            "grant",
            "--tenant",
            &stack.tenant,
            &format!("s3://{bucket}/{prefix}"),
        ]);
        assert!(ok, "{out}");
    }
    let (ok, listed) = stack.admin(&["sources", "list", "--tenant", &stack.tenant]);
    assert!(ok, "{listed}");
    assert!(
        listed.contains(&format!("s3://{bucket}/granted/")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("s3://{bucket}/other/")),
        "{listed}"
    );
    let (ok, out) = stack.admin(&[
        "sources",
        "grant",
        "--tenant",
        "no-such-tenant",
        "s3://b-x/",
    ]);
    assert!(!ok && out.contains("unknown tenant"), "{out}");
    let (ok, out) = stack.admin(&[
        "sources",
        "grant",
        "--tenant",
        &stack.tenant,
        "s3://bucket/a/../b/",
    ]);
    assert!(!ok && out.contains("not canonical"), "{out}");

    let granted = stack
        .submit_url(&format!("s3://{bucket}/granted/{run}/note.mp3"))
        .await;
    let missing = stack
        .submit_url(&format!("s3://{bucket}/granted/{run}/missing.mp3"))
        .await;
    let later_revoked = stack
        .submit_url(&format!("s3://{bucket}/other/{run}/note.mp3"))
        .await;
    // A grant of `granted/` does not cover `granted-x/`, nor another tenant.
    let (status, _) = submit(
        &stack,
        &stack.key,
        &format!("s3://{bucket}/granted-x/{run}/note.mp3"),
    )
    .await;
    assert_eq!(status, 403);
    let stranger = stack.create_key(&format!("stranger-{run}"), "jobs:write,jobs:read");
    let (status, _) = submit(
        &stack,
        &stranger,
        &format!("s3://{bucket}/granted/{run}/note.mp3"),
    )
    .await;
    assert_eq!(status, 403);

    // A grant revoked after submission stops the job when it runs.
    let (ok, out) = stack.admin(&[
        "sources",
        "revoke",
        "--tenant",
        &stack.tenant,
        &format!("s3://{bucket}/other/"),
    ]);
    assert!(ok, "{out}");
    let (status, _) = submit(
        &stack,
        &stack.key,
        &format!("s3://{bucket}/other/{run}/note.mp3"),
    )
    .await;
    assert_eq!(status, 403, "refused again once revoked");

    stack.start_worker();
    let job = stack.wait_done(granted, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert!(job["result"]["text"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("flight"));
    let job = stack.wait_done(missing, DONE).await;
    assert_eq!(job["error"]["code"], "source-not-found", "{job}");
    let job = stack.wait_done(later_revoked, DONE).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "forbidden-source", "{job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_transcript_cache_never_serves_one_tenant_what_another_submitted() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env()).await;
    stack.start_worker();
    let note = root().join("fixtures/voice/12-yes-that-works.flac");
    let other = stack.create_key(
        &format!("other-{}", Uuid::new_v4().simple()),
        "jobs:write,jobs:read",
    );
    let cached = |job: &Value| job["result"]["usage"]["transcribe"]["cached"] == true;

    let first = stack.upload(&note).await;
    let first = stack.wait_done(first, DONE).await;
    assert_eq!(first["status"], "completed", "{first}");
    assert!(!cached(&first), "{first}");

    // The same audio from another tenant is transcribed anew: a hit would tell it that
    // someone else sent this recording.
    let theirs = stack.upload_as(&other, &note, &[]).await;
    let deadline = Instant::now() + DONE;
    let theirs = loop {
        let job: Value = stack.get_job(&other, theirs).await.json().await.unwrap();
        if job["status"] == "completed" || job["status"] == "failed" {
            break job;
        }
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(theirs["status"], "completed", "{theirs}");
    assert!(!cached(&theirs), "cross-tenant cache hit: {theirs}");
    assert_eq!(theirs["result"]["usage"]["transcribe"]["provider"], "local");

    // Within a tenant the cache still works.
    let again = stack.upload(&note).await;
    let again = stack.wait_done(again, DONE).await;
    assert!(cached(&again), "{again}");
    assert_eq!(again["result"]["text"], first["result"]["text"]);
}

/// A raw HTTP/1.1 request on a fresh connection: sends `head` and `body`, then waits
/// (up to `wait`) for the status line.
async fn raw_status(base: &str, head: &str, body: &[u8], wait: Duration) -> Option<u16> {
    let addr = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.ok()?;
    socket.write_all(head.as_bytes()).await.ok()?;
    socket.write_all(body).await.ok()?;
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(wait, socket.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_oversized_and_abusive_requests_are_bounded() {
    let _serial = serial().await;
    let stack = Stack::start(
        StackConfig::from_env()
            .set("VOXQ_BODY_TIMEOUT_S", 2)
            .set("VOXQ_MAX_CONCURRENT_REQUESTS", 3)
            .set("VOXQ_DATABASE_MAX_CONNECTIONS", 4),
    )
    .await;
    let objects = store(&stack).await;
    let tenant = tenant_id(&stack, &stack.tenant).await;
    let uploads = format!("uploads/{tenant}/");
    let note = root().join("fixtures/voice/05-on-my-way.wav");

    // JSON bodies and fields have their own limits.
    let huge = json!({"audio_url": format!("https://example.com/{}", "a".repeat(100_000))});
    let r = stack.post_json(&stack.key, huge).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "body-too-large"
    );
    let long = json!({"audio_url": format!("https://example.com/{}", "a".repeat(3000))});
    let r = stack.post_json(&stack.key, long).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "field-too-long"
    );

    // A bad field after the file part: refused, and no object is left behind.
    let r = stack
        .post_file(&stack.key, &note, &[("lane", "urgent")])
        .await;
    assert_eq!(r.status(), 400);
    let r = stack
        .post_file(&stack.key, &note, &[("rubric", &"x".repeat(5000))])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "field-too-long"
    );
    // Two file parts: refused.
    let bytes = std::fs::read(&note).unwrap();
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name("a.wav"),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("b.wav"),
        );
    let r = stack
        .http
        .post(format!("{}/v1/jobs", stack.base))
        .bearer_auth(&stack.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        objects.list_keys(&uploads, 10).await.unwrap(),
        Vec::<String>::new(),
        "refused uploads leave no object"
    );
    // An accepted upload is stored.
    stack.upload(&note).await;
    assert_eq!(objects.list_keys(&uploads, 10).await.unwrap().len(), 1);

    // A body that stalls ends with 408 after the body timeout.
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 100000\r\n\r\n",
        stack.key
    );
    let started = Instant::now();
    let partial =
        b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF";
    let status = raw_status(&stack.base, &head, partial, Duration::from_secs(10)).await;
    assert_eq!(status, Some(408));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // Requests beyond the process's concurrency limit are shed with 503.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let addr = stack.base.trim_start_matches("http://").to_string();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(partial).await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = stack.get_job(&stack.key, Uuid::new_v4()).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "overloaded"
    );
    drop(stalled);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack.get_job(&stack.key, Uuid::new_v4()).await.status(),
        404
    );

    // A flood of wrong keys: after a burst, the address gets 429 without database work,
    // and a valid caller (whose key just worked) keeps getting answers throughout.
    let id = stack.upload(&note).await;
    assert_eq!(stack.get_job(&stack.key, id).await.status(), 200);
    let flood = {
        let (http, base) = (stack.http.clone(), stack.base.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..20 {
                let batch: Vec<_> = (0..2)
                    .map(|_| {
                        let junk = format!("vxq_{}", Uuid::new_v4().simple().to_string().repeat(2));
                        http.get(format!("{base}/v1/jobs/{}", Uuid::new_v4()))
                            .bearer_auth(junk)
                            .send()
                    })
                    .collect();
                for r in futures::future::join_all(batch).await {
                    statuses.push(r.map(|r| r.status().as_u16()).unwrap_or(0));
                }
            }
            statuses
        })
    };
    for _ in 0..10 {
        let r = stack.get_job(&stack.key, id).await;
        assert_eq!(r.status(), 200, "a valid caller during the flood");
    }
    let statuses = flood.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "the flood was never limited: {statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 401).count() <= 25,
        "{statuses:?}"
    );
    // A bearer that is not shaped like a key is refused as unauthorized, not looked up.
    let r = stack
        .http
        .get(format!("{}/v1/jobs/{id}", stack.base))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert!(r.status() == 401 || r.status() == 429, "{}", r.status());
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_names_the_dependency_that_is_down_without_addresses() {
    let _serial = serial().await;
    // Nothing listens on port 1.
    let stack =
        Stack::start(StackConfig::from_env().set("VOXQ_REDIS_URL", "redis://127.0.0.1:1")).await;
    let r = stack.get("/readyz").await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"]["postgres"], "ok");
    assert_eq!(v["checks"]["s3"], "ok");
    assert!(
        matches!(v["checks"]["redis"].as_str(), Some("down" | "timeout")),
        "{v}"
    );
    assert!(
        !body.contains("127.0.0.1") && !body.contains(":1"),
        "{body}"
    );
}
