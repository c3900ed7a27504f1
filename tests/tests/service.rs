//! End to end through the real binaries: API → Redis → worker → S3 → PostgreSQL.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use shared::config::Config;
use shared::objects::ObjectStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;
use voxq_tests::{db, local_transcripts, result_versions, root, serial, Stack, StackConfig};

const DONE: Duration = Duration::from_secs(120);

fn voice_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/voice"))
        .expect("fixtures/voice")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e != "tsv"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fixture_format_uploaded_through_the_api_is_transcribed() {
    let _serial = serial().await;
    let files = voice_files();
    assert!(files.len() >= 14, "voice fixtures missing");
    let expected = local_transcripts(&files);
    let mut stack = Stack::start(StackConfig::from_env()).await;
    stack.start_worker();
    let mut ids = Vec::new();
    for file in &files {
        ids.push((file.clone(), stack.upload(file).await));
    }
    let pool = db(&stack.config).await;
    for (file, id) in ids {
        let job = stack.wait_done(id, DONE).await;
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(job["status"], "completed", "{name}: {job}");
        assert_eq!(job["lane"], "interactive");
        assert_eq!(job["attempts"], 1);
        assert!(job["error"].is_null());
        for field in ["created_at", "started_at", "finished_at"] {
            assert!(job[field].is_string(), "{name}: {field} missing in {job}");
        }
        let result = &job["result"];
        assert_eq!(
            result["text"], expected[&name],
            "{name}: service and local engine differ"
        );
        assert_eq!(result["language"], "en");
        assert!(result["duration_s"].as_f64().unwrap() > 0.5);
        let segments = result["segments"].as_array().expect("segments");
        assert!(!segments.is_empty(), "{name}");
        for s in segments {
            for key in ["start", "end", "avg_logprob", "no_speech_prob"] {
                assert!(s[key].is_number(), "{name}: segment {key} in {s}");
            }
        }
        assert_eq!(result_versions(&pool, id).await, 1);
        let timings: Value = sqlx::query_scalar("SELECT timings FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        for stage in ["fetch", "decode", "transcribe", "total"] {
            assert!(
                timings[stage].is_number(),
                "{name}: timing {stage} in {timings}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_url_submission_and_bulk_lane() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env()).await;
    stack.start_worker();
    let config = Config {
        s3_endpoint: stack.config.env["VOXQ_S3_ENDPOINT"].clone(),
        s3_bucket: stack.config.env["VOXQ_S3_BUCKET"].clone(),
        s3_region: stack.config.env["VOXQ_S3_REGION"].clone(),
        ..Config::default()
    };
    let store = ObjectStore::connect(&config).await;
    let key = format!("external/{}/note.mp3", Uuid::new_v4());
    let bytes = std::fs::read(root().join("fixtures/voice/08-flight-delayed.mp3")).unwrap();
    store
        .put(&key, bytes.into(), "audio/mpeg")
        .await
        .expect("put");
    let url = format!("s3://{}/{key}", config.s3_bucket);
    // Outside the tenant's uploads, an S3 object needs a grant.
    let refused = stack.post_json(&stack.key, json!({"audio_url": url})).await;
    assert_eq!(refused.status(), 403);
    let (ok, out) = stack.admin(&[
        "sources",
        "grant",
        "--tenant",
        &stack.tenant,
        &format!("s3://{}/external/", config.s3_bucket),
    ]);
    assert!(ok, "{out}");
    let response = stack
        .post_json(
            &stack.key,
            json!({"audio_url": url, "lane": "bulk", "language": "en"}),
        )
        .await;
    assert_eq!(response.status(), 202);
    assert!(response.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/v1/jobs/"));
    let id: Value = response.json().await.unwrap();
    let id = Uuid::parse_str(id["id"].as_str().unwrap()).unwrap();
    let job = stack.wait_done(id, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["lane"], "bulk");
    let text = job["result"]["text"].as_str().unwrap().to_lowercase();
    assert!(text.contains("flight"), "{text}");

    // A missing object fails at once with its own code.
    let missing = stack
        .submit_url(&format!(
            "s3://{}/external/nothing-here.ogg",
            config.s3_bucket
        ))
        .await;
    let job = stack.wait_done(missing, DONE).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "source-not-found", "{job}");
    assert_eq!(job["attempts"], 1, "a permanent error is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_files_fail_their_own_job_and_the_next_job_succeeds() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env()).await;
    stack.start_worker();
    let bad = root().join("fixtures/bad");
    let cases = [
        ("random.mp3", "unrecognized-format"),
        ("text.wav", "unrecognized-format"),
        ("header-only.wav", "truncated-file"),
    ];
    let mut ids = Vec::new();
    for (file, _) in cases {
        ids.push(stack.upload(&bad.join(file)).await);
    }
    let good = stack
        .upload(&root().join("fixtures/voice/05-on-my-way.wav"))
        .await;
    for ((file, code), id) in cases.iter().zip(ids) {
        let job = stack.wait_done(id, DONE).await;
        assert_eq!(job["status"], "failed", "{file}: {job}");
        assert_eq!(job["error"]["code"], *code, "{file}: {job}");
        assert!(!job["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty());
        assert!(job["result"].is_null());
    }
    let job = stack.wait_done(good, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert!(
        stack.workers[0].is_running(),
        "the worker survived the corrupt files"
    );

    // An empty upload is refused by the API itself.
    let empty = stack
        .post_file(&stack.key, &bad.join("empty.wav"), &[])
        .await;
    assert_eq!(empty.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_isolated_and_keys_are_checked() {
    let _serial = serial().await;
    let stack = Stack::start(StackConfig::from_env()).await;
    let other = stack.create_key(
        &format!("other-{}", Uuid::new_v4().simple()),
        "jobs:write,jobs:read",
    );
    let read_only = stack.create_key(&format!("ro-{}", Uuid::new_v4().simple()), "jobs:read");
    let file = root().join("fixtures/voice/12-yes-that-works.flac");
    let id = stack.upload(&file).await;

    // Another tenant cannot see the job, nor use the upload by URL.
    assert_eq!(stack.get_job(&other, id).await.status(), 404);
    assert_eq!(stack.get_job(&stack.key, id).await.status(), 200);
    let pool = db(&stack.config).await;
    let source: String = sqlx::query_scalar("SELECT source FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(source.starts_with("s3://"), "{source}");
    let stolen = stack.post_json(&other, json!({"audio_url": source})).await;
    assert_eq!(stolen.status(), 403);
    let own = stack
        .post_json(&stack.key, json!({"audio_url": source}))
        .await;
    assert_eq!(own.status(), 202);

    // Authentication and scopes.
    let url = format!("{}/v1/jobs/{id}", stack.base);
    let none = stack.http.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = stack
        .http
        .get(&url)
        .bearer_auth("vxq_not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let basic = stack
        .http
        .get(&url)
        .header("authorization", format!("Basic {}", stack.key))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    let forbidden = stack.post_file(&read_only, &file, &[]).await;
    assert_eq!(forbidden.status(), 403);
    // Refused before its body was read: the client must not reuse the connection.
    assert_eq!(forbidden.headers()["connection"], "close");
    assert_eq!(
        stack.get_job(&read_only, Uuid::new_v4()).await.status(),
        404
    );
    assert_eq!(
        stack
            .http
            .get(format!("{}/v1/jobs/not-a-uuid", stack.base))
            .bearer_auth(&stack.key)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Bad requests name the problem.
    for (body, needle) in [
        (json!({"audio_url": "ftp://example.com/a.ogg"}), "scheme"),
        (json!({"audio_url": "s3://bucket-only"}), "s3://bucket/key"),
        (
            json!({"audio_url": "https://example.com/a.ogg", "lane": "urgent"}),
            "lane",
        ),
        (json!({"nothing": true}), "JSON"),
    ] {
        let r = stack.post_json(&stack.key, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }

    // Health and readiness.
    let h = stack.get("/healthz").await;
    assert_eq!(h.status(), 200);
    let r = stack.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["checks"],
        json!({"postgres": "ok", "redis": "ok", "s3": "ok"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_over_the_limit_and_requests_over_the_rate_are_refused() {
    let _serial = serial().await;
    let config = StackConfig::from_env()
        .set("VOXQ_RATE_LIMIT_PER_S", "0.5")
        .set("VOXQ_RATE_LIMIT_BURST", "3")
        .set("VOXQ_MAX_UPLOAD_BYTES", "20000");
    let stack = Stack::start(config).await;
    let big = root().join("fixtures/voice/09-parking.flac");
    assert!(std::fs::metadata(&big).unwrap().len() > 20_000);
    let r = stack.post_file(&stack.key, &big, &[]).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "file-too-large");
    // The 413 used one token of the burst of 3.
    let id = Uuid::new_v4();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let r = stack.get_job(&stack.key, id).await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
        }
    }
    assert_eq!(statuses, [404, 404, 429]);
    // The bucket refills at 0.5/s: the wait is under 2 s, rounded up to whole seconds;
    // how far under depends on how long the requests above took.
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    // Keys have separate buckets.
    let other = stack.create_key(&format!("rl-{}", Uuid::new_v4().simple()), "jobs:read");
    assert_eq!(stack.get_job(&other, id).await.status(), 404);
}

/// A tiny HTTP server for fetch tests: `/audio.ogg` serves a voice note, `/to-metadata`
/// redirects to the cloud metadata address, `/to-audio` redirects to `/audio.ogg`.
async fn audio_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let audio = std::fs::read(root().join("fixtures/voice/01-running-late.ogg")).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let audio = audio.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let head = |status: &str, extra: &str, len: usize| {
                    format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {len}\r\nConnection: close\r\n\r\n")
                };
                let response = match path.as_str() {
                    "/audio.ogg" => [
                        head("200 OK", "Content-Type: audio/ogg\r\n", audio.len()).into_bytes(),
                        audio,
                    ]
                    .concat(),
                    "/to-metadata" => head(
                        "302 Found",
                        "Location: http://169.254.169.254/latest/meta-data/\r\n",
                        0,
                    )
                    .into_bytes(),
                    "/to-audio" => head("302 Found", "Location: /audio.ogg\r\n", 0).into_bytes(),
                    _ => head("404 Not Found", "", 0).into_bytes(),
                };
                let _ = socket.write_all(&response).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn fetches_refuse_private_addresses_and_redirects_to_them() {
    let _serial = serial().await;
    let port = audio_server().await;
    let mut stack = Stack::start(
        StackConfig::from_env()
            .set("VOXQ_FETCH_ALLOW_HTTP", "true")
            .set("VOXQ_FETCH_ALLOW", "127.0.0.1/32")
            .set("VOXQ_FETCH_ALLOW_PORTS", format!("[{port}]")),
    )
    .await;
    stack.start_worker();
    let refused = [
        "https://127.0.0.2/a.ogg".to_string(),
        "https://10.0.0.1/a.ogg".into(),
        "https://[::1]/a.ogg".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        "https://192.168.1.1/a.ogg".into(),
        // Allow-listed server, but the redirect leads to the metadata address.
        format!("http://127.0.0.1:{port}/to-metadata"),
    ];
    let mut ids = Vec::new();
    for url in &refused {
        ids.push(stack.submit_url(url).await);
    }
    let ok = stack
        .submit_url(&format!("http://127.0.0.1:{port}/to-audio"))
        .await;
    let missing = stack
        .submit_url(&format!("http://127.0.0.1:{port}/nothing.ogg"))
        .await;
    for (url, id) in refused.iter().zip(ids) {
        let job = stack.wait_done(id, DONE).await;
        assert_eq!(job["status"], "failed", "{url}: {job}");
        assert_eq!(job["error"]["code"], "forbidden-address", "{url}: {job}");
        // The client reads why, not the resolved address or the internal target.
        let message = job["error"]["message"].as_str().unwrap();
        assert!(message.contains("not public"), "{message}");
        for leak in ["127.0.0", "10.0.0.1", "169.254", "192.168", "::1"] {
            assert!(
                !message.contains(leak),
                "{url}: message leaks '{leak}': {message}"
            );
        }
    }
    let job = stack.wait_done(ok, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert!(job["result"]["text"].as_str().unwrap().contains("running"));
    let job = stack.wait_done(missing, DONE).await;
    assert_eq!(job["error"]["code"], "source-not-found", "{job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_backlog_does_not_delay_interactive_jobs() {
    let _serial = serial().await;
    // The backlog repeats one note: without the transcript cache each is real work.
    let mut stack =
        Stack::start(StackConfig::from_env().set("VOXQ_TRANSCRIPT_CACHE_TTL_S", 0)).await;
    let note = root().join("fixtures/voice/06-project-update.ogg");
    let mut bulk = Vec::new();
    for _ in 0..12 {
        bulk.push(
            stack
                .upload_as(&stack.key.clone(), &note, &[("lane", "bulk")])
                .await,
        );
    }
    stack.start_worker();
    // Let the bulk lane get going, then send one interactive job.
    stack
        .wait_status(bulk[0], &["processing", "completed"], DONE)
        .await;
    let interactive = stack
        .upload(&root().join("fixtures/voice/14-almost-there.mp3"))
        .await;
    let job = stack.wait_done(interactive, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    let pool = db(&stack.config).await;
    let bulk_left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status <> 'completed'",
    )
    .bind(&bulk)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        bulk_left > 0,
        "the interactive job should finish while bulk jobs are still waiting"
    );
    for id in bulk {
        assert_eq!(stack.wait_done(id, DONE).await["status"], "completed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_job_in_flight_and_starts_no_new_one() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env()).await;
    stack.start_worker();
    let long = voxq_tests::long_recording();
    let first = stack.upload(&long).await;
    stack.wait_status(first, &["processing"], DONE).await;
    let second = stack
        .upload(&root().join("fixtures/voice/02-call-me-back.wav"))
        .await;
    stack.workers[0].sigterm();
    let status = stack.workers[0]
        .wait_exit(Duration::from_secs(90))
        .expect("the worker exits after draining");
    assert!(status.success(), "worker exit status {status}");
    let job = stack.job(first).await;
    assert_eq!(
        job["status"], "completed",
        "the job in flight finished: {job}"
    );
    let job = stack.job(second).await;
    assert_eq!(
        job["status"], "queued",
        "no new job started after SIGTERM: {job}"
    );
    // The next worker picks it up.
    stack.start_worker();
    let job = stack.wait_done(second, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    let pool = db(&stack.config).await;
    assert_eq!(result_versions(&pool, first).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn scores_summaries_rubrics_usage_and_caches() {
    let _serial = serial().await;
    let stub = voxq_tests::provider_stub("sk-stub").await;
    let toml = std::env::temp_dir().join(format!("voxq-chat-{}.toml", Uuid::new_v4().simple()));
    std::fs::write(
        &toml,
        format!(
            "[[chat_cheap]]\nname = \"stub-cheap\"\nbase_url = \"{}\"\n\
             api_key_env = \"STUB_CHAT_KEY\"\nmodel = \"gpt-4o-mini\"\n\
             price_in_per_mtok = 0.15\nprice_out_per_mtok = 0.6\n",
            stub.base_url()
        ),
    )
    .unwrap();
    let mut stack = Stack::start(
        StackConfig::from_env()
            .set("VOXQ_CONFIG", toml.display())
            .set("STUB_CHAT_KEY", "sk-stub"),
    )
    .await;
    stack.start_worker();
    let note = root().join("fixtures/voice/06-project-update.ogg");

    // 1. Abstractive summary by the cheap chat model, with scores and usage.
    let first = stack
        .upload_as(&stack.key.clone(), &note, &[("summary", "abstractive")])
        .await;
    let job = stack.wait_done(first, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    let r = &job["result"];
    assert_eq!(r["summary"]["kind"], "abstractive", "{r}");
    assert_eq!(r["summary"]["text"], voxq_tests::STUB_SUMMARY);
    let s = &r["usage"]["summarize"];
    assert_eq!(s["provider"], "stub-cheap");
    assert_eq!(s["model"], "gpt-4o-mini");
    assert!(s["tokens_in"].as_u64().unwrap() > 50, "{s}");
    assert_eq!(s["tokens_out"], 15);
    let expected_cost = (s["tokens_in"].as_f64().unwrap() * 0.15 + 15.0 * 0.6) / 1e6;
    assert!(
        (s["cost_usd"].as_f64().unwrap() - expected_cost).abs() < 1e-12,
        "{s}"
    );
    assert_eq!(r["usage"]["transcribe"]["provider"], "local");
    assert!(
        r["usage"]["transcribe"].get("cached").is_none(),
        "first run is not cached"
    );
    let scores = &r["scores"];
    assert!(scores["quality"].as_u64().unwrap() >= 75, "{scores}");
    assert!(scores["flags"].is_array());
    for key in [
        "loudness_lufs",
        "snr_db",
        "speech_ratio",
        "words_per_minute",
        "asr_confidence",
    ] {
        assert!(scores[key].is_number(), "{key} in {scores}");
    }
    assert_eq!(stub.chat_bodies().len(), 1);

    // 2. The same audio again: the transcript comes from the content-hash cache, and
    //    `auto` summarises this medium-length transcript locally.
    let second = stack.upload(&note).await;
    let job2 = stack.wait_done(second, DONE).await;
    let r2 = &job2["result"];
    assert_eq!(r2["usage"]["transcribe"]["cached"], true, "{r2}");
    assert_eq!(r2["text"], r["text"]);
    assert_eq!(r2["scores"], r["scores"], "scores are deterministic");
    assert_eq!(r2["summary"]["kind"], "extractive");
    assert_eq!(r2["usage"]["summarize"]["provider"], "local");
    assert_eq!(r2["usage"]["summarize"]["cost_usd"], 0.0);

    // 3. Abstractive again: the chat cache answers, the model is not called.
    let third = stack
        .upload_as(&stack.key.clone(), &note, &[("summary", "abstractive")])
        .await;
    let r3 = stack.wait_done(third, DONE).await["result"].clone();
    assert_eq!(r3["summary"]["text"], voxq_tests::STUB_SUMMARY);
    assert_eq!(r3["usage"]["summarize"]["cached"], true, "{r3}");
    assert_eq!(stub.chat_bodies().len(), 1, "chat cache hit");

    // 4. A rubric through the JSON-schema path, and a job asking for transcription only.
    let rubric = stack
        .upload_as(
            &stack.key.clone(),
            &note,
            &[("rubric", "support"), ("tasks", "transcribe")],
        )
        .await;
    let r4 = stack.wait_done(rubric, DONE).await["result"].clone();
    assert_eq!(r4["rubric"]["name"], "support", "{r4}");
    assert_eq!(r4["rubric"]["urgency"], "low");
    assert_eq!(r4["rubric"]["sentiment"], "negative");
    assert_eq!(r4["usage"]["rubric"]["provider"], "stub-cheap");
    assert!(r4.get("scores").is_none(), "scoring not asked for: {r4}");
    assert!(r4["summary"].is_null());
    assert_eq!(stub.chat_bodies().len(), 2);
    stub.assert_clean();

    // Unknown options are refused by the API.
    let bad = stack
        .post_json(
            &stack.key,
            json!({"audio_url": "https://example.com/a.ogg", "rubric": "poetry"}),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let bad = stack
        .post_json(
            &stack.key,
            json!({"audio_url": "https://example.com/a.ogg", "summary": "haiku"}),
        )
        .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_transcription_provider_with_fallback_to_the_local_engine() {
    let _serial = serial().await;
    let stub = voxq_tests::provider_stub("sk-asr").await;
    let toml = std::env::temp_dir().join(format!("voxq-asr-{}.toml", Uuid::new_v4().simple()));
    std::fs::write(
        &toml,
        format!(
            "transcribe_order = [\"stub-asr\", \"local\"]\n\
             [[transcribe_providers]]\nname = \"stub-asr\"\n\
             base_url = \"{}\"\napi_key_env = \"STUB_ASR_KEY\"\n\
             model = \"whisper-1\"\nprice_per_audio_minute = 0.006\n",
            stub.base_url()
        ),
    )
    .unwrap();
    let mut stack = Stack::start(
        StackConfig::from_env()
            .set("VOXQ_CONFIG", toml.display())
            .set("STUB_ASR_KEY", "sk-asr"),
    )
    .await;
    stack.start_worker();

    let remote = stack
        .upload(&root().join("fixtures/voice/05-on-my-way.wav"))
        .await;
    let job = stack.wait_done(remote, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    let r = &job["result"];
    assert_eq!(r["text"], voxq_tests::STUB_TRANSCRIPT);
    assert_eq!(r["language"], "en");
    assert_eq!(r["usage"]["transcribe"]["provider"], "stub-asr");
    assert_eq!(r["usage"]["transcribe"]["model"], "whisper-1");
    let cost = r["usage"]["transcribe"]["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.006).abs() < 1e-9, "one minute at $0.006: {cost}");
    assert!(
        r["scores"]["quality"].is_number(),
        "scores come from the local audio"
    );
    assert_eq!(stub.uploads().len(), 1);

    // The provider goes down: the local engine takes over, and the job still completes.
    stub.set_default(stub::error(503, "down"));
    let local = stack
        .upload(&root().join("fixtures/voice/12-yes-that-works.flac"))
        .await;
    let job = stack.wait_done(local, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["result"]["usage"]["transcribe"]["provider"], "local");
    assert!(job["result"]["text"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("works"));
    stub.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_queue_tasks_are_vacuumed_from_redis() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env().set("VOXQ_QUEUE_RETENTION_S", 0)).await;
    stack.start_worker();
    let id = stack
        .upload(&root().join("fixtures/voice/07-sounds-perfect.opus"))
        .await;
    assert_eq!(stack.wait_done(id, DONE).await["status"], "completed");

    let config = Config {
        queue_prefix: stack.config.env["VOXQ_QUEUE_PREFIX"].clone(),
        ..Config::default()
    };
    let lane = shared::queue::lane_config(&config, shared::domain::Lane::Interactive, 1);
    let client = redis::Client::open(stack.config.env["VOXQ_REDIS_URL"].as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let task = shared::queue::task_id(id, 0).to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let done: usize = redis::cmd("SCARD")
            .arg(lane.done_jobs_set())
            .query_async(&mut conn)
            .await
            .unwrap();
        let data: bool = redis::cmd("HEXISTS")
            .arg(lane.job_data_hash())
            .arg(&task)
            .query_async(&mut conn)
            .await
            .unwrap();
        let meta: bool = redis::cmd("EXISTS")
            .arg(format!("{}:{task}", lane.job_meta_hash()))
            .query_async(&mut conn)
            .await
            .unwrap();
        if done == 0 && !data && !meta {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {task} still in Redis: done set {done}, data {data}, meta {meta}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The job itself is still there, with its result.
    let job = stack.job(id).await;
    assert_eq!(job["status"], "completed");
    assert!(job["result"]["text"].is_string());
}
