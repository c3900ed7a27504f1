//! The admin dashboard (`/admin`) in a real headless Chromium (Debian's `chromium`,
//! driven by Playwright from PyPI: `tests/scripts/admin_browser.py`) against the live
//! stack. The test makes the data each panel shows (a completed job, a failed job with
//! a known error code, an interactive batch that finished, a bulk batch held in
//! PostgreSQL, a worker, a priced remote transcription), then checks what the browser
//! read against the database, and the effect of every action the browser took: retry,
//! pause, resume, a POST without its CSRF token, sign-out. Screenshots of every page are
//! written under `$CARGO_TARGET_TMPDIR/admin-screens/` (their paths are printed).
//! The login form's failed-authentication limit is checked last, with plain requests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use voxq_tests::{db, root, serial, Stack, StackConfig};

const DONE: Duration = Duration::from_secs(240);

fn browser(phase: &str, params: &Value) -> Value {
    let mut params = params.clone();
    params["phase"] = json!(phase);
    let out = Command::new("python3")
        .arg(root().join("tests/scripts/admin_browser.py"))
        .arg(params.to_string())
        .output()
        .expect("python3 tests/scripts/admin_browser.py (make deps installs Playwright)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "admin_browser.py {phase} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{phase}: not one JSON line ({e}):\n{stdout}"));
    for shot in seen["shots"].as_array().into_iter().flatten() {
        let path = shot.as_str().unwrap();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{path} looks empty ({size} bytes)");
        println!("screenshot: {path}");
    }
    seen
}

async fn browser_async(phase: &'static str, params: &Value) -> Value {
    let params = params.clone();
    tokio::task::spawn_blocking(move || browser(phase, &params))
        .await
        .expect("browser thread")
}

async fn post_jsonl(stack: &Stack, query: &str, lines: &[Value]) -> Value {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let r = stack
        .http
        .post(format!("{}/v1/batches{query}", stack.base))
        .bearer_auth(&stack.key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("POST /v1/batches");
    let status = r.status();
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(status, 202, "{body}");
    body
}

async fn get_batch(stack: &Stack, id: &str) -> Value {
    let r = stack
        .http
        .get(format!("{}/v1/batches/{id}", stack.base))
        .bearer_auth(&stack.key)
        .send()
        .await
        .expect("GET batch");
    assert_eq!(r.status(), 200);
    r.json().await.expect("JSON")
}

async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DONE;
    while !done().await {
        assert!(Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn usd(v: f64) -> String {
    format!("${v:.4}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_dashboard_works_in_a_real_browser() {
    let _serial = serial().await;
    // Transcriptions go to a priced remote provider (the stand-in), so cost per tenant
    // has something to add up; decoding stays local, so a corrupt file still fails.
    let stub = voxq_tests::provider_stub("sk-asr").await;
    let toml = std::env::temp_dir().join(format!("voxq-admin-{}.toml", Uuid::new_v4().simple()));
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
            .set("STUB_ASR_KEY", "sk-asr")
            // No bulk lane worker: the bulk batch stays queued for pause and resume.
            .set("VOXQ_BULK_CONCURRENCY", 0)
            .set("VOXQ_AUTH_FAILURES_PER_S", 0.01)
            .set("VOXQ_AUTH_FAILURES_BURST", 5),
    )
    .await;
    stack.start_worker();
    let pool = db(&stack.config).await;
    let admin_key = stack.create_key(&stack.tenant.clone(), "jobs:read,jobs:write,admin");

    // A completed job and a failed one with a known code.
    let completed = stack
        .upload(&root().join("fixtures/voice/01-running-late.ogg"))
        .await;
    let failed = stack.upload(&root().join("fixtures/bad/text.wav")).await;
    assert_eq!(
        stack.wait_done(completed, DONE).await["status"],
        "completed"
    );
    let job = stack.wait_done(failed, DONE).await;
    assert_eq!(job["error"]["code"], "unrecognized-format", "{job}");
    let source = |id: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT source FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (good_url, bad_url) = (source(completed).await, source(failed).await);

    // An interactive batch that finishes (two completed, one failed) and a bulk one that
    // waits: no worker runs the bulk lane.
    let done_batch = post_jsonl(
        &stack,
        "?lane=interactive",
        &[
            json!({"audio_url": good_url, "custom_id": "a"}),
            json!({"audio_url": good_url, "custom_id": "b"}),
            json!({"audio_url": bad_url, "custom_id": "c"}),
        ],
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bulk_batch = post_jsonl(
        &stack,
        "",
        &[
            json!({"audio_url": good_url}),
            json!({"audio_url": good_url}),
            json!({"audio_url": good_url}),
        ],
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bulk_id = Uuid::parse_str(&bulk_batch).unwrap();
    wait_until("the interactive batch completed", || async {
        get_batch(&stack, &done_batch).await["status"] == "completed"
    })
    .await;
    // The dispatcher hands the bulk jobs to Redis, where nothing claims them.
    wait_until("the bulk batch dispatched", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM jobs WHERE batch_id = $1 AND enqueued_at IS NOT NULL",
        )
        .bind(bulk_id)
        .fetch_one(&pool)
        .await
        .unwrap()
            == 3
    })
    .await;
    let worker: String = sqlx::query_scalar("SELECT worker FROM jobs WHERE id = $1")
        .bind(completed)
        .fetch_one(&pool)
        .await
        .unwrap();
    let tenant_cost: f64 = sqlx::query_scalar(
        "SELECT COALESCE(sum((u.value->>'cost_usd')::float8), 0)::float8
         FROM job_results r JOIN jobs j ON j.id = r.job_id, jsonb_each(r.usage) u
         WHERE j.tenant_id = (SELECT id FROM tenants WHERE name = $1)",
    )
    .bind(&stack.tenant)
    .fetch_one(&pool)
    .await
    .unwrap();
    // One minute at $0.006 for the first transcription (repeats of the same audio may
    // come from the transcript cache, at no cost).
    assert!(tenant_cost >= 0.006 - 1e-9, "{tenant_cost}");

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin-screens");
    let _ = std::fs::remove_dir_all(&out);
    let state = out.join("browser-state.json");
    let params = json!({
        "base": stack.base,
        "out": out,
        "state": state,
        "state_before_logout": out.join("browser-state-signed-in.json"),
        "admin_key": admin_key,
        "user_key": stack.key,
        "failed_job": failed,
        "completed_job": completed,
        "bulk_batch": bulk_batch,
    });

    // ---- view: sign in, read every page.
    let v = browser_async("view", &params).await;
    assert!(
        v["unauthenticated_url"]
            .as_str()
            .unwrap()
            .ends_with("/admin/login"),
        "{v}"
    );
    assert_eq!(v["user_login_status"], 403, "a key without admin scope");
    assert!(
        v["user_login_alert"].as_str().unwrap().contains("'admin'"),
        "{v}"
    );
    assert_eq!(v["user_login_cookies"], json!([]), "no session for it");
    assert_eq!(v["admin_login_status"], 303);
    assert!(v["after_login_url"].as_str().unwrap().ends_with("/admin"));
    let cookie = v["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "voxq_admin")
        .unwrap_or_else(|| panic!("a session cookie: {v}"));
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["secure"], true);
    assert_eq!(cookie["sameSite"], "Strict");
    assert_eq!(cookie["path"], "/admin");
    let session_token = cookie["value"].as_str().unwrap();
    assert!(
        !session_token.contains(&admin_key[4..]),
        "the key is not in the cookie"
    );
    // Stored server-side as the token's hash, never the key.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT s.token_hash FROM admin_sessions s JOIN api_keys k ON k.id = s.key_id
         JOIN tenants t ON t.id = k.tenant_id WHERE t.name = $1",
    )
    .bind(&stack.tenant)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        vec![Sha256::digest(session_token.as_bytes()).to_vec()]
    );

    // Lanes: this stack's Redis queue holds the three bulk tasks; PostgreSQL counts are
    // the fleet's (other tests' jobs share the database), so at least ours.
    let lanes = &v["lanes"];
    let n = |lane: &str, col: &str| -> i64 { lanes[lane][col].as_str().unwrap().parse().unwrap() };
    assert_eq!(n("bulk", "waiting"), 3, "{lanes}");
    assert_eq!(n("interactive", "waiting"), 0, "{lanes}");
    assert!(n("bulk", "queued") >= 3, "{lanes}");
    assert!(n("interactive", "completed") >= 3, "{lanes}");
    assert!(n("interactive", "failed") >= 2, "{lanes}");
    assert!(v["finished_hour"].as_str().unwrap().parse::<i64>().unwrap() >= 5);
    assert!(v["chart"]["bars_completed"].as_i64().unwrap() >= 1, "{v}");
    assert!(v["chart"]["bars_failed"].as_i64().unwrap() >= 1, "{v}");
    // The worker that ran the jobs, alive, heard from seconds ago, with its jobs.
    let row = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == worker.as_str())
        .unwrap_or_else(|| panic!("worker {worker} listed: {v}"));
    let cells: Vec<&str> = row["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cells[1], "interactive", "{cells:?}");
    assert_eq!(cells[2], "alive", "{cells:?}");
    assert!(cells[3].ends_with(" s ago"), "{cells:?}");
    assert!(
        cells[5].parse::<i64>().unwrap() >= 3,
        "completed: {cells:?}"
    );
    assert!(v["workers_alive"].as_str().unwrap().parse::<i64>().unwrap() >= 1);

    // Failures: the tenant's two corrupt files under their code, each linked.
    let failures = v["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["code"], "unrecognized-format");
    assert!(
        failures[0]["title"].as_str().unwrap().contains("2 job(s)"),
        "{failures:?}"
    );
    let links = failures[0]["jobs"].as_array().unwrap();
    assert_eq!(links.len(), 2);
    assert!(links.contains(&json!(format!("/admin/jobs/{failed}"))));
    assert_eq!(failures[0]["retry_buttons"], 2);

    // Batches: the finished one full, the bulk one waiting with a Pause button.
    let batches = v["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2, "{batches:?}");
    let row = |rows: &Value, id: &str| -> Value {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("batch {id} listed: {rows}"))
    };
    let b = row(&v["batches"], &done_batch);
    assert_eq!(b["status"], "completed");
    let progress = b["progress"].as_str().unwrap();
    assert!(progress.starts_with("100% · 3/3 finished"), "{progress}");
    assert!(
        progress.contains("2 completed") && progress.contains("1 failed"),
        "{progress}"
    );
    let b = row(&v["batches"], &bulk_batch);
    assert_eq!(b["status"], "running");
    assert!(
        b["progress"]
            .as_str()
            .unwrap()
            .starts_with("0% · 0/3 finished"),
        "{b}"
    );
    assert_eq!(b["buttons"], json!(["Pause"]));

    // Cost: this tenant's only (an admin key), as the database adds it up.
    assert_eq!(
        v["costs"],
        json!([{"tenant": stack.tenant, "day": usd(tenant_cost), "month": usd(tenant_cost)}])
    );
    assert_eq!(v["failed_job"]["status"], "failed");
    assert_eq!(v["failed_job"]["error_code"], "unrecognized-format");
    assert_eq!(v["failed_job"]["retry_buttons"], 1);
    assert_eq!(v["completed_job"]["status"], "completed");
    assert_eq!(v["completed_job"]["reprocess_forms"], 1);

    // A bearer admin key opens the pages too; a bearer key without the scope does not.
    let page = |key: String, path: String| {
        let (http, base) = (stack.http.clone(), stack.base.clone());
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let get = |key: String, path: String| {
        let status = page(key, path);
        async move { status.await.0 }
    };
    let (status, html) = page(admin_key.clone(), "/admin".into()).await;
    assert_eq!(status, 200);
    assert!(html.contains(&stack.tenant) && html.contains("name=\"_csrf\""));
    assert_eq!(get(stack.key.clone(), "/admin".into()).await, 403);
    // The dashboard asks the scopes the API asks: an admin-only key sees the fleet
    // overview, not the tenant's jobs and batches (jobs:read).
    let admin_only = stack.create_key(&stack.tenant.clone(), "admin");
    assert_eq!(get(admin_only.clone(), "/admin".into()).await, 200);
    for path in ["/admin/failures", "/admin/batches"] {
        assert_eq!(get(admin_only.clone(), path.into()).await, 403, "{path}");
    }
    assert_eq!(get(admin_only, format!("/admin/jobs/{failed}")).await, 403);
    // Another tenant's admin sees none of this tenant's jobs.
    let other = stack.create_key("admin-other-tenant", "jobs:read,jobs:write,admin");
    assert_eq!(get(other, format!("/admin/jobs/{failed}")).await, 404);
    assert_eq!(
        get(admin_key.clone(), format!("/admin/jobs/{failed}")).await,
        200
    );

    // ---- act: retry the failed job, pause the bulk batch.
    std::fs::copy(&state, out.join("browser-state-signed-in.json")).unwrap();
    let a = browser_async("act", &params).await;
    assert_eq!(a["retry_status"], 303, "{a}");
    assert!(
        a["retry_url"]
            .as_str()
            .unwrap()
            .contains(&format!("/admin/jobs/{failed}?notice=retried")),
        "{a}"
    );
    assert!(a["retry_notice"]
        .as_str()
        .unwrap()
        .starts_with("Retry started"));
    assert_eq!(a["retry_requested_version"], "2");
    let (version, lane): (i32, String) =
        sqlx::query_as("SELECT requested_version, lane FROM jobs WHERE id = $1")
            .bind(failed)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (version, lane.as_str()),
        (2, "interactive"),
        "retried as it was"
    );
    let retry_batch: String = sqlx::query_scalar(
        "SELECT b.kind FROM batch_items i JOIN batches b ON b.id = i.batch_id
         WHERE i.job_id = $1 AND i.version = 2",
    )
    .bind(failed)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(retry_batch, "reprocess");
    // The worker runs it again (the file is still corrupt).
    let job = stack.wait_done(failed, DONE).await;
    assert_eq!(job["requested_version"], 2, "{job}");
    assert_eq!(job["error"]["code"], "unrecognized-format");

    assert_eq!(a["pause_status"], 303);
    assert!(a["pause_notice"]
        .as_str()
        .unwrap()
        .starts_with("Batch paused"));
    assert_eq!(
        row(&a["batches_after_pause"], &bulk_batch)["status"],
        "paused"
    );
    assert_eq!(get_batch(&stack, &bulk_batch).await["status"], "paused");
    let held = |status: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM jobs WHERE batch_id = $1 AND status = $2",
            )
            .bind(bulk_id)
            .bind(status)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(held("paused").await, 3);

    // ---- finish: forged POSTs refused, resume, sign out.
    let f = browser_async("finish", &params).await;
    assert_eq!(f["no_token_status"], 403, "{f}");
    assert!(
        f["no_token_page"]
            .as_str()
            .unwrap()
            .contains("CSRF token is missing or invalid"),
        "{f}"
    );
    assert_eq!(f["bare_no_token_status"], 403);
    assert_eq!(f["bare_bad_token_status"], 403);
    assert_eq!(
        row(&f["batches_after_refusals"], &bulk_batch)["status"],
        "paused",
        "refused POSTs changed nothing"
    );
    assert_eq!(f["resume_status"], 303);
    assert_eq!(
        row(&f["batches_after_resume"], &bulk_batch)["status"],
        "running"
    );
    assert_eq!(get_batch(&stack, &bulk_batch).await["status"], "running");
    assert_eq!(held("queued").await, 3, "resumed jobs are queued again");
    assert!(f["after_logout_url"]
        .as_str()
        .unwrap()
        .ends_with("/admin/login"));
    assert!(f["after_logout_admin_url"]
        .as_str()
        .unwrap()
        .ends_with("/admin/login"));
    assert!(
        f["old_session_url"]
            .as_str()
            .unwrap()
            .ends_with("/admin/login"),
        "the signed-out session is dead server-side: {f}"
    );
    let sessions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM admin_sessions s JOIN api_keys k ON k.id = s.key_id
         JOIN tenants t ON t.id = k.tenant_id WHERE t.name = $1",
    )
    .bind(&stack.tenant)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sessions, 0);

    // ---- the login form and session cookies spend the failed-authentication budget
    // of bearer keys (a burst of 5 here, refilling at 0.01/s). The two visits with the
    // signed-out session above were lookups that found nothing and spent two, so the
    // fourth wrong key from this address is refused with 429.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(wrong_login(&stack).await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429], "{statuses:?}");
    print_shots(&out);
}

/// Signs in with a well-formed key that does not exist, as a browser would (the form's
/// nonce cookie and token first); the status.
async fn wrong_login(stack: &Stack) -> u16 {
    let form = stack
        .http
        .get(format!("{}/admin/login", stack.base))
        .send()
        .await
        .unwrap();
    let nonce = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("voxq_admin_login="))
        .and_then(|v| v.split(';').next())
        .expect("a nonce cookie")
        .to_string();
    let html = form.text().await.unwrap();
    let token = html
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a CSRF field");
    stack
        .http
        .post(format!("{}/admin/login", stack.base))
        .header("cookie", format!("voxq_admin_login={nonce}"))
        .form(&[
            ("_csrf", token),
            ("key", &format!("vxq_{}", "0".repeat(64))),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn print_shots(out: &Path) {
    let mut shots: Vec<_> = std::fs::read_dir(out)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    shots.retain(|p| p.extension().is_some_and(|e| e == "png"));
    shots.sort();
    println!("{} screenshots in {}", shots.len(), out.display());
}
