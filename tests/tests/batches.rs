//! Batches, fair bulk dispatch, listing, idempotency, tenant limits and reprocessing, on
//! the real stack (API, workers in no-op mode, PostgreSQL, Redis, moto S3).

use std::time::{Duration, Instant};

use reqwest::Response;
use serde_json::{json, Value};
use shared::config::Config;
use shared::objects::ObjectStore;
use uuid::Uuid;
use voxq_tests::{db, root, serial, Stack, StackConfig};

const DONE: Duration = Duration::from_secs(240);

/// A stack whose workers store empty transcripts (the queue and database path alone),
/// with a small bulk hand-out depth.
async fn noop_stack() -> Stack {
    Stack::start(
        StackConfig::from_env()
            .set("VOXQ_BENCH_NOOP_TRANSCRIBE", "true")
            .set("VOXQ_BULK_QUEUE_DEPTH", 8)
            .set("VOXQ_BULK_CONCURRENCY", 4)
            .set("VOXQ_POLL_INTERVAL_MS", 20)
            .set("VOXQ_DISPATCH_INTERVAL_MS", 20),
    )
    .await
}

/// The `s3://` URL of one uploaded fixture, readable by `key`'s tenant: batch items name
/// it many times.
async fn uploaded_url(stack: &mut Stack, key: &str) -> String {
    let id = stack
        .upload_as(key, &root().join("fixtures/voice/01-running-late.ogg"), &[])
        .await;
    sqlx::query_scalar("SELECT source FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&db(&stack.config).await)
        .await
        .expect("the upload's job")
}

fn jsonl(url: &str, n: usize, tag: &str) -> String {
    (1..=n)
        .map(|i| json!({"audio_url": url, "custom_id": format!("{tag}-{i}")}).to_string() + "\n")
        .collect()
}

async fn post_batch(stack: &Stack, key: &str, body: String, idem: Option<&str>) -> Response {
    let mut r = stack
        .http
        .post(format!("{}/v1/batches", stack.base))
        .bearer_auth(key)
        .header("content-type", "application/x-ndjson")
        .body(body);
    if let Some(k) = idem {
        r = r.header("Idempotency-Key", k);
    }
    r.send().await.expect("POST /v1/batches")
}

async fn created(r: Response) -> Value {
    let status = r.status();
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(status, 202, "{body}");
    body
}

async fn get(stack: &Stack, key: &str, path: &str) -> Value {
    let r = stack
        .http
        .get(format!("{}{path}", stack.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("GET");
    let status = r.status();
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn post(stack: &Stack, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = stack
        .http
        .post(format!("{}{path}", stack.base))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("POST");
    (r.status().as_u16(), r.json().await.expect("JSON"))
}

/// Polls the batch until `done(batch)` holds.
async fn wait_batch(
    stack: &Stack,
    key: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + DONE;
    loop {
        let b = get(stack, key, &format!("/v1/batches/{id}")).await;
        if done(&b) {
            return b;
        }
        assert!(Instant::now() < deadline, "batch never {what}: {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn results(stack: &Stack, key: &str, id: &str, query: &str) -> Vec<Value> {
    let r = stack
        .http
        .get(format!("{}/v1/batches/{id}/results{query}", stack.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("results");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.expect("body");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_thousand_item_batch_completes_with_counts_results_and_no_duplicates() {
    let _serial = serial().await;
    let mut stack = noop_stack().await;
    stack.start_worker();
    let key = stack.key.clone();
    let url = uploaded_url(&mut stack, &key).await;
    let body = jsonl(&url, 2_000, "msg");

    // Retried with the same key and body: one batch, the same answer.
    let first = created(post_batch(&stack, &key, body.clone(), Some("backfill-1")).await).await;
    let again = post_batch(&stack, &key, body.clone(), Some("backfill-1")).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = created(again).await;
    assert_eq!(first["id"], again["id"]);
    assert_eq!(first["total"], 2_000, "{first}");
    assert_eq!(first["kind"], "batch");
    // The same key with another body is refused, and creates nothing.
    let other = post_batch(&stack, &key, jsonl(&url, 3, "x"), Some("backfill-1")).await;
    assert_eq!(other.status(), 422);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["error"]["code"], "idempotency-key-reused");
    let id = first["id"].as_str().unwrap().to_string();
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE batch_id = $1")
        .bind(Uuid::parse_str(&id).unwrap())
        .fetch_one(&db(&stack.config).await)
        .await
        .unwrap();
    assert_eq!(jobs, 2_000, "idempotent retries must not duplicate jobs");

    let done = wait_batch(&stack, &key, &id, "completed", |b| {
        b["status"] == "completed"
    })
    .await;
    assert_eq!(done["counts"]["completed"], 2_000, "{done}");
    for s in ["queued", "processing", "failed", "paused", "cancelled"] {
        assert_eq!(done["counts"][s], 0, "{s}: {done}");
    }
    assert!(done["finished_at"].is_string(), "{done}");
    assert!(done["throughput_per_min"].as_f64().unwrap() > 0.0, "{done}");

    // The results stream: every item once, in submission order, with its custom_id.
    let lines = results(&stack, &key, &id, "").await;
    assert_eq!(lines.len(), 2_000);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i + 1);
        assert_eq!(line["custom_id"], format!("msg-{}", i + 1));
        assert_eq!(line["status"], "completed", "{line}");
        assert!(line["result"].is_object(), "{line}");
    }
    // Resuming after a seq gives exactly the rest.
    let rest = results(&stack, &key, &id, "?after=1500").await;
    assert_eq!(rest.len(), 500);
    assert_eq!(rest[0]["seq"], 1501);

    // GET /v1/jobs?batch= pages through the batch with a keyset cursor; jobs created
    // between pages neither repeat nor shift a page.
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/jobs?batch={id}&limit=700&cursor={c}"),
            None => format!("/v1/jobs?batch={id}&limit=700"),
        };
        let page = get(&stack, &key, &q).await;
        for job in page["data"].as_array().unwrap() {
            assert!(
                seen.insert(job["id"].as_str().unwrap().to_string()),
                "repeated {job}"
            );
            assert_eq!(job["batch_id"], id.as_str());
        }
        pages += 1;
        // Newer jobs arrive while the client pages.
        stack.submit_url(&url).await;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2_000);
    assert_eq!(pages, 3);
    // Filters: by status, and a bad filter value is a 400.
    let failed = get(&stack, &key, &format!("/v1/jobs?batch={id}&status=failed")).await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 0);
    let r = stack
        .http
        .get(format!("{}/v1/jobs?status=nonsense", stack.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The batch is listed.
    let listed = get(&stack, &key, "/v1/batches").await;
    assert!(listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["id"] == id.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_bad_line_rejects_the_batch_and_every_bad_line_is_named() {
    let _serial = serial().await;
    let mut stack = noop_stack().await;
    let key = stack.key.clone();
    let url = uploaded_url(&mut stack, &key).await;
    let body = [
        json!({"audio_url": url, "custom_id": "a"}).to_string(),
        "{not json".to_string(),
        json!({"audio_url": url, "custom_id": "a"}).to_string(),
        json!({"audio_url": "s3://someone-elses/secret.ogg"}).to_string(),
        json!({"audio_url": url, "summary": "sometimes"}).to_string(),
        json!({"audio_url": url, "custom_id": "b"}).to_string(),
    ]
    .join("\n");
    let r = post_batch(&stack, &key, body, None).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid-items", "{e}");
    let lines: Vec<u64> = e["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 3, 4, 5], "{e}");
    assert_eq!(e["error"]["errors"][2]["code"], "forbidden-source", "{e}");
    let batches = get(&stack, &key, "/v1/batches").await;
    assert_eq!(
        batches["data"].as_array().unwrap().len(),
        0,
        "nothing is created"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_holds_queued_items_resume_releases_them_and_cancel_stops_them() {
    let _serial = serial().await;
    let mut stack = noop_stack().await;
    let key = stack.key.clone();
    let url = uploaded_url(&mut stack, &key).await;
    stack.start_worker();
    let b = created(post_batch(&stack, &key, jsonl(&url, 1_500, "p"), None).await).await;
    let id = b["id"].as_str().unwrap().to_string();
    wait_batch(&stack, &key, &id, "started", |b| {
        b["counts"]["completed"].as_i64().unwrap() >= 50
    })
    .await;
    let (status, paused) = post(&stack, &key, &format!("/v1/batches/{id}/pause"), json!({})).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["status"], "paused");
    // Runs already claimed finish; nothing else starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = get(&stack, &key, &format!("/v1/batches/{id}")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = get(&stack, &key, &format!("/v1/batches/{id}")).await;
    assert_eq!(
        held["counts"], still["counts"],
        "a paused batch made progress"
    );
    assert!(
        still["counts"]["paused"].as_i64().unwrap() > 1_000,
        "{still}"
    );
    assert_eq!(still["counts"]["queued"], 0, "{still}");
    // Pausing twice is a conflict, not a silent success.
    let (status, _) = post(&stack, &key, &format!("/v1/batches/{id}/pause"), json!({})).await;
    assert_eq!(status, 409);

    let (status, resumed) =
        post(&stack, &key, &format!("/v1/batches/{id}/resume"), json!({})).await;
    assert_eq!(status, 200, "{resumed}");
    let done = wait_batch(&stack, &key, &id, "completed", |b| {
        b["status"] == "completed"
    })
    .await;
    assert_eq!(done["counts"]["completed"], 1_500, "{done}");

    // Cancel: queued items never run; the batch ends as cancelled.
    let b = created(post_batch(&stack, &key, jsonl(&url, 1_500, "c"), None).await).await;
    let id = b["id"].as_str().unwrap().to_string();
    wait_batch(&stack, &key, &id, "started", |b| {
        b["counts"]["completed"].as_i64().unwrap() >= 20
    })
    .await;
    let (status, cancelled) =
        post(&stack, &key, &format!("/v1/batches/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = get(&stack, &key, &format!("/v1/batches/{id}")).await;
    let c = &end["counts"];
    let cancelled_n = c["cancelled"].as_i64().unwrap();
    assert!(cancelled_n > 1_000, "{end}");
    assert_eq!(
        c["completed"].as_i64().unwrap() + cancelled_n,
        1_500,
        "every item is completed or cancelled: {end}"
    );
    let ran: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE batch_id = $1 AND status = 'cancelled'
           AND started_at IS NOT NULL",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .fetch_one(&db(&stack.config).await)
    .await
    .unwrap();
    assert_eq!(ran, 0, "a cancelled job never started");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_tenants_backlog_does_not_starve_another() {
    let _serial = serial().await;
    let mut stack = noop_stack().await;
    let key_a = stack.key.clone();
    let key_b = stack.create_key(
        &format!("b-{}", Uuid::new_v4().simple()),
        "jobs:write,jobs:read",
    );
    let url_a = uploaded_url(&mut stack, &key_a).await;
    let url_b = uploaded_url(&mut stack, &key_b).await;
    let a = created(post_batch(&stack, &key_a, jsonl(&url_a, 5_000, "a"), None).await).await;
    let a_id = Uuid::parse_str(a["id"].as_str().unwrap()).unwrap();
    stack.start_worker();
    wait_batch(&stack, &key_a, &a_id.to_string(), "started", |b| {
        b["counts"]["completed"].as_i64().unwrap() >= 100
    })
    .await;
    let b = created(post_batch(&stack, &key_b, jsonl(&url_b, 5, "b"), None).await).await;
    let b_id = Uuid::parse_str(b["id"].as_str().unwrap()).unwrap();
    let pool = db(&stack.config).await;
    let submitted: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT created_at FROM batches WHERE id = $1")
            .bind(b_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    wait_batch(&stack, &key_b, &b_id.to_string(), "completed", |b| {
        b["status"] == "completed"
    })
    .await;
    let last_b_start: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(started_at) FROM jobs WHERE batch_id = $1")
            .bind(b_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    // How many of A's jobs started between B's submission and B's last start: B waited
    // for that many job-service-times (divided by the worker's concurrency).
    let a_between: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE batch_id = $1 AND started_at > $2 AND started_at <= $3",
    )
    .bind(a_id)
    .bind(submitted)
    .bind(last_b_start)
    .fetch_one(&pool)
    .await
    .unwrap();
    let a_left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE batch_id = $1 AND status = 'queued'")
            .bind(a_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    println!(
        "fairness: B's 5 jobs all started after {a_between} of A's jobs (A still had {a_left} queued); \
         B waited {} ms",
        (last_b_start - submitted).num_milliseconds()
    );
    // B waits behind at most the hand-out depth (8), the jobs the lane worker has
    // fetched (4) and is running (4), and one A job per B job in the round-robin (5):
    // 21, far from A's backlog of thousands. 40 leaves room for timing.
    assert!(a_between <= 40, "B waited behind {a_between} of A's jobs");
    assert!(
        a_left > 3_000,
        "A's backlog was nearly done ({a_left} left): not a fair test"
    );
    // Leave no backlog to the next test's workers (the database is shared).
    let cancel = format!("/v1/batches/{a_id}/cancel");
    assert_eq!(post(&stack, &key_a, &cancel, json!({})).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn reprocess_by_filter_creates_a_new_version_for_exactly_the_matched_jobs() {
    let _serial = serial().await;
    let mut stack = noop_stack().await;
    stack.start_worker();
    let key = stack.key.clone();
    let admin = stack.create_key(&stack.tenant.clone(), "jobs:write,jobs:read,admin");
    let url = uploaded_url(&mut stack, &key).await;
    let redo = created(post_batch(&stack, &key, jsonl(&url, 20, "r"), None).await).await;
    let keep = created(post_batch(&stack, &key, jsonl(&url, 10, "k"), None).await).await;
    let (redo_id, keep_id) = (redo["id"].as_str().unwrap(), keep["id"].as_str().unwrap());
    for id in [redo_id, keep_id] {
        wait_batch(&stack, &key, id, "completed", |b| {
            b["status"] == "completed"
        })
        .await;
    }
    let filter = json!({"filter": {"batch": redo_id}, "options": {"summary": "none"}});
    // Only admins reprocess.
    let (status, e) = post(&stack, &key, "/v1/reprocess", filter.clone()).await;
    assert_eq!(status, 403, "{e}");
    // A filter naming no real flag or status is refused, not matched against nothing.
    for bad in [json!({"flag": "nonsense"}), json!({"status": "done"})] {
        let (status, e) = post(
            &stack,
            &admin,
            "/v1/reprocess",
            json!({"filter": bad, "dry_run": true}),
        )
        .await;
        assert_eq!(
            (status, e["error"]["code"].clone()),
            (400, json!("bad-request")),
            "{e}"
        );
    }
    let mut dry = filter.clone();
    dry["dry_run"] = json!(true);
    let (status, counted) = post(&stack, &admin, "/v1/reprocess", dry).await;
    assert_eq!(
        (status, counted["matched"].clone()),
        (200, json!(20)),
        "{counted}"
    );
    let (status, rb) = post(&stack, &admin, "/v1/reprocess", filter).await;
    assert_eq!(status, 202, "{rb}");
    assert_eq!(rb["kind"], "reprocess");
    assert_eq!(rb["total"], 20);
    let rb_id = rb["id"].as_str().unwrap();
    wait_batch(&stack, &key, rb_id, "completed", |b| {
        b["status"] == "completed"
    })
    .await;

    let pool = db(&stack.config).await;
    let versions = |batch: &str| {
        let pool = pool.clone();
        let batch = Uuid::parse_str(batch).unwrap();
        async move {
            sqlx::query_as::<_, (Uuid, i64)>(
                "SELECT j.id, (SELECT count(*) FROM job_results r WHERE r.job_id = j.id)
                 FROM jobs j WHERE j.batch_id = $1",
            )
            .bind(batch)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let redone = versions(redo_id).await;
    assert_eq!(redone.len(), 20);
    assert!(redone.iter().all(|(_, n)| *n == 2), "{redone:?}");
    assert!(versions(keep_id).await.iter().all(|(_, n)| *n == 1));

    // Version 2 is the answer, version 1 stays readable, and the versions are listed.
    let job = redone[0].0;
    let latest = get(&stack, &key, &format!("/v1/jobs/{job}")).await;
    assert_eq!(latest["version"], 2, "{latest}");
    assert!(latest["result"]["summary"].is_null(), "{latest}");
    let v1 = get(&stack, &key, &format!("/v1/jobs/{job}?version=1")).await;
    assert_eq!(v1["version"], 1);
    let listed = get(&stack, &key, &format!("/v1/jobs/{job}/versions")).await;
    let nums: Vec<i64> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(nums, vec![1, 2]);
    let r = stack
        .http
        .get(format!("{}/v1/jobs/{job}?version=7", stack.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The original batch still reports its own version's results.
    let orig = results(&stack, &key, redo_id, "").await;
    assert!(orig
        .iter()
        .all(|l| l["version"] == 1 && l["status"] == "completed"));
    let again = results(&stack, &key, rb_id, "").await;
    assert!(again
        .iter()
        .all(|l| l["version"] == 2 && l["status"] == "completed"));

    // One job, by id.
    let (status, one) = post(
        &stack,
        &admin,
        &format!("/v1/jobs/{job}/reprocess"),
        json!({"options": {"tasks": ["transcribe"]}}),
    )
    .await;
    assert_eq!(status, 202, "{one}");
    wait_batch(
        &stack,
        &key,
        one["id"].as_str().unwrap(),
        "completed",
        |b| b["status"] == "completed",
    )
    .await;
    let latest = get(&stack, &key, &format!("/v1/jobs/{job}")).await;
    assert_eq!(latest["version"], 3, "{latest}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_limits_answer_with_codes_that_say_which() {
    let _serial = serial().await;
    let mut stack = noop_stack().await;
    let key = stack.key.clone();
    let url = uploaded_url(&mut stack, &key).await;
    let (ok, out) = stack.admin(&[
        "limits",
        "--tenant",
        &stack.tenant.clone(),
        "--max-jobs-per-day",
        "5",
        "--no-strong",
        "--no-rubrics",
    ]);
    assert!(ok, "{out}");
    let r = stack
        .post_json(&key, json!({"audio_url": url, "summary_model": "strong"}))
        .await;
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "strong-model-not-allowed");
    let r = stack
        .post_json(&key, json!({"audio_url": url, "rubric": "support"}))
        .await;
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "rubrics-not-allowed", "{e}");
    // One job was created by the upload: a batch of 5 passes the daily quota.
    let r = post_batch(&stack, &key, jsonl(&url, 5, "q"), None).await;
    assert_eq!(r.status(), 429);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "daily-quota-exceeded", "{e}");
    let b = created(post_batch(&stack, &key, jsonl(&url, 4, "q"), None).await).await;
    let r = stack.post_json(&key, json!({"audio_url": url})).await;
    assert_eq!(r.status(), 429);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "daily-quota-exceeded", "{e}");
    // Leave no backlog to the next test's workers (the database is shared).
    let cancel = format!("/v1/batches/{}/cancel", b["id"].as_str().unwrap());
    assert_eq!(post(&stack, &key, &cancel, json!({})).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_prefix_is_listed_server_side_into_a_batch() {
    let _serial = serial().await;
    let mut stack = noop_stack().await;
    let env = &stack.config.env;
    let objects = ObjectStore::connect(&Config {
        s3_endpoint: env["VOXQ_S3_ENDPOINT"].clone(),
        s3_bucket: env["VOXQ_S3_BUCKET"].clone(),
        s3_region: env["VOXQ_S3_REGION"].clone(),
        ..Config::default()
    })
    .await;
    let run = Uuid::new_v4().simple().to_string();
    let note = std::fs::read(root().join("fixtures/voice/01-running-late.ogg")).unwrap();
    // More keys than one listing page (1,000), so the listing resumes across pages.
    let n = 1_205;
    let mut puts = futures::stream::iter((0..n).map(|i| {
        let (objects, note, run) = (objects.clone(), note.clone(), run.clone());
        async move {
            objects
                .put(
                    &format!("archive/{run}/{i:05}.ogg"),
                    note.into(),
                    "audio/ogg",
                )
                .await
        }
    }));
    use futures::StreamExt;
    let mut puts = (&mut puts).buffer_unordered(16);
    while let Some(r) = puts.next().await {
        r.expect("put");
    }
    let prefix = format!("s3://{}/archive/{run}/", objects.bucket());
    let key = stack.key.clone();
    let body = json!({"source": prefix});
    let (status, refused) = post(&stack, &key, "/v1/batches", body.clone()).await;
    assert_eq!(
        (status, refused["error"]["code"].clone()),
        (403, json!("forbidden-source"))
    );
    let (ok, out) = stack.admin(&[
        "sources",
        "grant",
        "--tenant",
        &stack.tenant.clone(),
        &prefix,
    ]);
    assert!(ok, "{out}");
    let (status, b) = post(&stack, &key, "/v1/batches", body).await;
    assert_eq!(status, 202, "{b}");
    assert_eq!(b["status"], "listing");
    stack.start_worker();
    let id = b["id"].as_str().unwrap();
    let done = wait_batch(&stack, &key, id, "completed", |b| {
        b["status"] == "completed"
    })
    .await;
    assert_eq!(done["total"], n, "{done}");
    assert_eq!(done["counts"]["completed"], n, "{done}");
    let lines = results(&stack, &key, id, "?limit=3").await;
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        (0..3)
            .map(|i| format!("archive/{run}/{i:05}.ogg"))
            .collect::<Vec<_>>()
    );
}

/// `voxq` (the command-line client) against the real API.
fn voxq(stack: &Stack, key: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(voxq_tests::bin("voxq"))
        .args(args)
        .env("VOXQ_URL", &stack.base)
        .env("VOXQ_API_KEY", key)
        .output()
        .expect("run voxq");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_submits_a_directory_watches_it_and_downloads_the_results() {
    let _serial = serial().await;
    let mut stack = noop_stack().await;
    stack.start_worker();
    let key = stack.key.clone();
    let dir = std::env::temp_dir().join(format!("voxq-cli-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let notes = [
        "01-running-late.ogg",
        "08-flight-delayed.mp3",
        "09-parking.flac",
    ];
    for (i, note) in notes.iter().enumerate() {
        let to = if i == 2 {
            dir.join("sub").join(note)
        } else {
            dir.join(note)
        };
        std::fs::copy(root().join("fixtures/voice").join(note), to).unwrap();
    }
    let d = dir.to_str().unwrap();
    // Two requests of at most 2 files; --watch follows them to the end.
    let (code, out, err) = voxq(&stack, &key, &["submit", d, "--chunk", "2", "--watch"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let ids: Vec<&str> = out
        .lines()
        .filter(|l| Uuid::parse_str(l.trim()).is_ok())
        .collect();
    assert_eq!(ids.len(), 2, "one batch id per request: {out}");
    // The same submit again is answered by the idempotency keys: no new batch.
    let (code, again, err) = voxq(&stack, &key, &["submit", d, "--chunk", "2"]);
    assert_eq!(code, 0, "{err}");
    let again: Vec<&str> = again
        .lines()
        .filter(|l| Uuid::parse_str(l.trim()).is_ok())
        .collect();
    assert_eq!(again, ids, "a re-run must not create batches");
    let listed = get(&stack, &key, "/v1/batches").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);

    let mut custom = Vec::new();
    for id in &ids {
        let b = get(&stack, &key, &format!("/v1/batches/{}", id.trim())).await;
        assert_eq!(b["status"], "completed", "{b}");
        let out_file = dir.join(format!("{}.jsonl", id.trim()));
        let (code, _, err) = voxq(
            &stack,
            &key,
            &["results", id.trim(), "-o", out_file.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{err}");
        for line in std::fs::read_to_string(&out_file).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["status"], "completed", "{v}");
            custom.push(v["custom_id"].as_str().unwrap().to_string());
        }
    }
    custom.sort();
    assert_eq!(
        custom,
        [
            "01-running-late.ogg",
            "08-flight-delayed.mp3",
            "sub/09-parking.flac"
        ]
    );
    // A refused request: its error code reaches the user, exit code 3.
    let (code, _, err) = voxq(
        &stack,
        "vxq_0000000000000000000000000000000000000000000000000000000000000000",
        &["batches"],
    );
    assert_eq!(code, 3);
    assert!(err.contains("unauthorized"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn reprocessing_with_the_base_model_keeps_the_tiny_version() {
    let _serial = serial().await;
    let base = voxq_tests::required_env("VOXQ_BASE_MODEL_DIR");
    let mut stack =
        Stack::start(StackConfig::from_env().set("VOXQ_MODELS", format!("{{base=\"{base}\"}}")))
            .await;
    stack.start_worker();
    let admin = stack.create_key(&stack.tenant.clone(), "jobs:read,jobs:write,admin");
    let id = stack
        .upload(&root().join("fixtures/voice/08-flight-delayed.mp3"))
        .await;
    let first = stack.wait_done(id, DONE).await;
    assert_eq!(first["status"], "completed", "{first}");
    let (status, b) = post(
        &stack,
        &admin,
        &format!("/v1/jobs/{id}/reprocess"),
        json!({"options": {"model": "base"}, "lane": "interactive"}),
    )
    .await;
    assert_eq!(status, 202, "{b}");
    // An unknown model is refused before anything changes.
    let (status, e) = post(
        &stack,
        &admin,
        &format!("/v1/jobs/{id}/reprocess"),
        json!({"options": {"model": "large-v9"}}),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    wait_batch(
        &stack,
        &stack.key,
        b["id"].as_str().unwrap(),
        "completed",
        |b| b["status"] == "completed",
    )
    .await;
    let versions = get(&stack, &stack.key, &format!("/v1/jobs/{id}/versions")).await;
    let models: Vec<&str> = versions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["whisper-tiny.en", "whisper-base"], "{versions}");
    let latest = stack.job(id).await;
    assert_eq!(latest["version"], 2);
    assert_eq!(
        latest["result"]["usage"]["transcribe"]["model"],
        "whisper-base"
    );
    assert!(latest["result"]["text"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("flight"));
    let v1 = get(&stack, &stack.key, &format!("/v1/jobs/{id}?version=1")).await;
    assert_eq!(v1["result"]["text"], first["result"]["text"]);
}
