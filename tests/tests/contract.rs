//! The API against its OpenAPI document, checked by tools we did not write.
//!
//! schemathesis (PyPI) reads `/openapi.json` from the live API (with a worker, so
//! synchronous transcriptions finish) and sends generated requests, valid and invalid,
//! to every operation with a key of every tenant scope; it fails on any 5xx and on any
//! answer whose status, content type, headers or body the document does not describe.
//! The routes that name an object are pointed at real ones made first (a transcribed
//! job, a batch, a webhook endpoint and its delivery), so their full answers are
//! checked too. The document served is the committed `docs/openapi.json`, and `/docs` is
//! a page whose every file voxq serves itself.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use voxq_tests::{root, serial, Stack, StackConfig};

/// Test cases per operation and phase: enough to reach every parameter and content
/// type, few enough for a few minutes on two cores.
const MAX_EXAMPLES: &str = "50";

#[tokio::test(flavor = "multi_thread")]
async fn the_live_api_conforms_to_its_openapi_document() {
    let _serial = serial().await;
    // Webhooks may go to this machine only (nothing listens there: deliveries fail and
    // retry, locally).
    let config = StackConfig::from_env()
        .set("VOXQ_WEBHOOK_ALLOW", "127.0.0.1/32")
        .set("VOXQ_WEBHOOK_ALLOW_HTTP", "true");
    let mut stack = Stack::start(config).await;
    stack.start_worker();
    let key = stack.create_key(&stack.tenant, "jobs:read,jobs:write,admin");
    let objects = make_objects(&mut stack).await;
    let report = std::env::temp_dir()
        .join("voxq-tests")
        .join(format!("schemathesis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&report).unwrap();
    let config_file = report.join("schemathesis.toml");
    std::fs::write(&config_file, objects.config()).unwrap();
    let schema = format!("{}/openapi.json", stack.base);
    let args: Vec<String> = vec![
        "--config-file".into(),
        config_file.display().to_string(),
        "run".into(),
        schema,
        "--checks".into(),
        "not_a_server_error,status_code_conformance,content_type_conformance,\
         response_headers_conformance,response_schema_conformance"
            .into(),
        "--phases".into(),
        "examples,coverage,fuzzing".into(),
        "--max-examples".into(),
        MAX_EXAMPLES.into(),
        "--seed".into(),
        "20261201".into(),
        "--workers".into(),
        "1".into(),
        "--request-timeout".into(),
        "120".into(),
        "--suppress-health-check".into(),
        "all".into(),
        "--header".into(),
        format!("Authorization: Bearer {key}"),
        "--report".into(),
        "junit".into(),
        "--report-dir".into(),
        report.display().to_string(),
    ];
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .args(&args)
            // Its cache (`.schemathesis/`) goes with the report, not into the clone.
            .current_dir(&report)
            .env(
                "SCHEMATHESIS_HOOKS",
                root().join("tests/scripts/schemathesis_hooks.py"),
            )
            .env("NO_COLOR", "1")
            .output()
            .expect("schemathesis (scripts/install-deps.sh installs it from PyPI)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The summary goes to the test's output (`--nocapture` shows it).
    println!("{stdout}\nschemathesis ran {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}\napi log (tail):\n{}",
        out.status,
        voxq_tests::tail(&stack.api.log_text(), 60)
    );
    assert!(stdout.contains("Tested: 30"), "every operation: {stdout}");
}

/// Real objects for the routes that name one.
struct Objects {
    job: String,
    batch: String,
    endpoint: String,
    delivery: String,
}

impl Objects {
    /// schemathesis's configuration: each route with an `{id}` gets a real one (not
    /// the deletes, which would take it from the others).
    fn config(&self) -> String {
        let mut toml = String::new();
        for (path, id) in [
            (r"^/v1/jobs/\\{id\\}", &self.job),
            (r"^/v1/batches/\\{id\\}", &self.batch),
            (r"^/v1/webhooks/\\{id\\}", &self.endpoint),
            (r"^/v1/webhooks/deliveries/\\{id\\}", &self.delivery),
        ] {
            toml.push_str(&format!(
                "[[operations]]\ninclude-path-regex = \"{path}\"\nexclude-method = \"DELETE\"\n\
                 parameters = {{ \"path.id\" = \"{id}\" }}\n\n"
            ));
        }
        toml
    }
}

async fn make_objects(stack: &mut Stack) -> Objects {
    let r = stack
        .http
        .post(format!("{}/v1/webhooks", stack.base))
        .bearer_auth(&stack.key)
        .json(&json!({"url": "http://127.0.0.1/voxq-contract-test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let endpoint = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let note = root().join("fixtures/voice/01-running-late.ogg");
    let job = stack.upload(&note).await;
    let done = stack.wait_done(job, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(std::fs::read(&note).unwrap()).file_name("note.ogg"),
    );
    let r = stack
        .http
        .post(format!("{}/v1/batches", stack.base))
        .bearer_auth(&stack.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let batch = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The finished job's `job.completed` delivery to the endpoint.
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivery = loop {
        let page: Value = stack
            .http
            .get(format!(
                "{}/v1/webhooks/deliveries?job_id={job}",
                stack.base
            ))
            .bearer_auth(&stack.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(id) = page["data"][0]["id"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "no delivery: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    Objects {
        job: job.to_string(),
        batch,
        endpoint,
        delivery,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_served_document_is_the_committed_one() {
    let _serial = serial().await;
    let stack = Stack::start(StackConfig::from_env()).await;
    let r = stack.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let served: Value = r.json().await.unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/openapi.json")).expect("docs/openapi.json"),
    )
    .unwrap();
    assert_eq!(
        served, committed,
        "regenerate with `voxq-api openapi > docs/openapi.json`"
    );
    assert_eq!(served["openapi"], "3.1.0");
    // The CLI prints the same document.
    let (ok, printed) = stack.admin(&["openapi"]);
    assert!(ok, "{printed}");
    assert_eq!(serde_json::from_str::<Value>(&printed).unwrap(), committed);
}

/// `/docs` works without internet access: the page and every file it loads come from
/// voxq, and nothing in them points at another host.
#[tokio::test(flavor = "multi_thread")]
async fn the_docs_page_is_served_whole_by_voxq() {
    let _serial = serial().await;
    let stack = Stack::start(StackConfig::from_env()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = http
        .get(format!("{}/docs", stack.base))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    assert_eq!(r.headers()["location"], "/docs/");
    let r = http
        .get(format!("{}/docs/", stack.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");

    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let url = part.split('"').next().unwrap();
            assets.push(url.to_string());
        }
    }
    assert!(assets.len() >= 4, "{assets:?}");
    assert!(assets.iter().any(|a| a.ends_with(".js")), "{assets:?}");
    assert!(assets.iter().any(|a| a.ends_with(".css")), "{assets:?}");
    for asset in &assets {
        assert!(
            !asset.contains("://") && !asset.starts_with("//"),
            "{asset} is not served by voxq"
        );
        let url = format!("{}/docs/{}", stack.base, asset.trim_start_matches("./"));
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let body = r.bytes().await.unwrap();
        assert!(!body.is_empty(), "{url}");
        if asset.ends_with("swagger-initializer.js") {
            let js = String::from_utf8_lossy(&body);
            // The page loads voxq's document, and no remote validator.
            assert!(js.contains("\"/openapi.json\""), "{js}");
            assert!(js.contains("\"validatorUrl\": \"none\""), "{js}");
            assert!(!js.contains("http://") && !js.contains("https://"), "{js}");
        }
    }
    assert!(
        assets.iter().any(|a| a.ends_with("swagger-initializer.js")),
        "{assets:?}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
}
