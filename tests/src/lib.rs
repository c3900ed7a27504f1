//! Harness for the end-to-end tests in `tests/tests/`: starts the real `voxq-api` and
//! `voxq-worker run` binaries against the real PostgreSQL, Redis and S3 server that
//! `make test` provides (`scripts/services.sh`), and throwaway Redis/PostgreSQL servers
//! for the fault tests.
//!
//! Each test stack gets its own queue prefix and tenants, so tests never take each
//! other's jobs.

pub mod receiver;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

/// Heavy tests (each starts model-loading workers on a 2-core machine) run one at a time.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// `$VOXQ_MODEL_DIR`, else the clone's `models/whisper-tiny.en` (not relative to the
/// test's working directory, which is `tests/`).
pub fn model_dir() -> String {
    std::env::var("VOXQ_MODEL_DIR")
        .unwrap_or_else(|_| root().join("models/whisper-tiny.en").display().to_string())
}

/// `$VOXQ_VAD_MODEL`, else the clone's `models/silero_vad_v6.onnx` (scripts/fetch-vad.sh).
pub fn vad_model() -> String {
    std::env::var("VOXQ_VAD_MODEL").unwrap_or_else(|_| {
        root()
            .join("models/silero_vad_v6.onnx")
            .display()
            .to_string()
    })
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A binary of the workspace, built by `cargo test --workspace --all-targets` next to
/// this test's own executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --workspace --all-targets` (make test does)",
        path.display()
    );
    path
}

/// A port that was free a moment ago. Another process may take it before the server
/// that is handed it binds it, so callers that start a server on it retry with a new one
/// when the start fails (see [`TempRedis`], [`TempPostgres`]); the API binds port 0.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The address a server printed in its log line `… listening addr=HOST:PORT`, once it
/// has (ANSI colour codes stripped).
fn logged_addr(log: &str) -> Option<String> {
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    // The API's own listener (not its metrics listener), in text or JSON logs.
    let line = plain.lines().find(|l| l.contains("voxq-api listening"))?;
    if let Some(rest) = line.split("\"addr\":\"").nth(1) {
        return Some(rest.split('"').next()?.to_string());
    }
    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
    Some(addr.to_string())
}

/// An environment variable that `make test` (scripts/services.sh) must have set.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, which starts the services")
    })
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, …).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {}", self.pid());
    }

    /// Waits for exit; `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn(name: &str, program: &Path, args: &[&str], env: &HashMap<String, String>) -> Proc {
    let dir = std::env::temp_dir().join("voxq-tests");
    std::fs::create_dir_all(&dir).expect("log dir");
    let log = dir.join(format!("{name}-{}.log", Uuid::new_v4().simple()));
    let file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(program)
        .args(args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log fd"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    Proc {
        name: name.into(),
        child,
        log,
    }
}

/// Configuration of one test stack: the environment both binaries get.
#[derive(Clone, Debug)]
pub struct StackConfig {
    pub env: HashMap<String, String>,
}

impl StackConfig {
    /// The shared services from `make test`, a unique queue prefix, fast heartbeats and
    /// polling, one inference thread per job.
    pub fn from_env() -> Self {
        let mut env = HashMap::new();
        for name in [
            "VOXQ_DATABASE_URL",
            "VOXQ_REDIS_URL",
            "VOXQ_S3_ENDPOINT",
            "VOXQ_S3_BUCKET",
            "VOXQ_S3_REGION",
        ] {
            env.insert(name.to_string(), required_env(name));
        }
        for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            env.insert(
                name.to_string(),
                std::env::var(name).unwrap_or_else(|_| "test".into()),
            );
        }
        let model = model_dir();
        let vad = vad_model();
        let defaults = [
            ("VOXQ_MODEL_DIR", model.as_str()),
            ("VOXQ_VAD_MODEL", vad.as_str()),
            ("VOXQ_INFERENCE_THREADS", "1"),
            ("VOXQ_INTERACTIVE_CONCURRENCY", "1"),
            ("VOXQ_BULK_CONCURRENCY", "1"),
            ("VOXQ_POLL_INTERVAL_MS", "50"),
            ("VOXQ_HEARTBEAT_INTERVAL_S", "1"),
            ("VOXQ_MISSED_HEARTBEATS", "3"),
            ("VOXQ_SWEEP_INTERVAL_MS", "300"),
            ("VOXQ_RETRY_BASE_MS", "200"),
            ("VOXQ_RETRY_MAX_MS", "2000"),
            ("VOXQ_SHUTDOWN_GRACE_S", "60"),
            ("VOXQ_RATE_LIMIT_PER_S", "0"),
            ("VOXQ_LOG", "info,symphonia=warn,sqlx=warn"),
        ];
        for (k, v) in defaults {
            env.insert(k.to_string(), v.to_string());
        }
        let prefix = format!("voxq-test-{}", &Uuid::new_v4().simple().to_string()[..12]);
        env.insert("VOXQ_QUEUE_PREFIX".into(), prefix);
        Self { env }
    }

    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.env.insert(key.to_string(), value.to_string());
        self
    }
}

/// A running API (and its workers) with one tenant key.
pub struct Stack {
    pub config: StackConfig,
    pub api: Proc,
    pub base: String,
    /// Name of the tenant `key` belongs to.
    pub tenant: String,
    pub key: String,
    pub http: reqwest::Client,
    pub workers: Vec<Proc>,
}

impl Stack {
    /// Starts the API, waits for `/healthz`, and creates a key for a new tenant.
    pub async fn start(config: StackConfig) -> Self {
        let mut config = config;
        // Port 0: the API binds a port nobody holds and logs which one it got.
        config
            .env
            .insert("VOXQ_LISTEN_ADDR".into(), "127.0.0.1:0".into());
        let mut api = spawn("api", &bin("voxq-api"), &[], &config.env);
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            if let Some(addr) = logged_addr(&api.log_text()) {
                break addr;
            }
            assert!(
                api.is_running() && Instant::now() < deadline,
                "voxq-api did not start listening:\n{}",
                api.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let base = format!("http://{addr}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let tenant = format!("tenant-{}", Uuid::new_v4().simple());
        let mut stack = Self {
            config,
            api,
            base,
            tenant: tenant.clone(),
            key: String::new(),
            http,
            workers: Vec::new(),
        };
        stack.wait_healthy(Duration::from_secs(60)).await;
        stack.key = stack.create_key(&tenant, "jobs:write,jobs:read");
        stack
    }

    /// Runs `voxq-api ARGS…` (an admin command) with this stack's environment; returns
    /// its exit status and stdout.
    pub fn admin(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(bin("voxq-api"))
            .args(args)
            .envs(&self.config.env)
            .output()
            .expect("voxq-api admin command");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                self.api.is_running(),
                "voxq-api exited during start-up:\n{}",
                self.api.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "voxq-api not healthy:\n{}",
                self.api.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `voxq-api keys create`; returns the key from stdout's last line.
    pub fn create_key(&self, tenant: &str, scopes: &str) -> String {
        let out = Command::new(bin("voxq-api"))
            .args(["keys", "create", "--tenant", tenant, "--scopes", scopes])
            .envs(&self.config.env)
            .output()
            .expect("voxq-api keys create");
        assert!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        let key = stdout
            .lines()
            .last()
            .expect("a key line")
            .trim()
            .to_string();
        assert!(
            key.starts_with("vxq_") && key.len() > 40,
            "unexpected key line '{key}'"
        );
        key
    }

    pub fn start_worker(&mut self) -> usize {
        self.start_worker_with(&[])
    }

    /// Starts `voxq-worker run` with extra environment; returns its index.
    pub fn start_worker_with(&mut self, extra: &[(&str, &str)]) -> usize {
        let mut env = self.config.env.clone();
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let worker = spawn("worker", &bin("voxq-worker"), &["run"], &env);
        self.workers.push(worker);
        self.workers.len() - 1
    }

    pub async fn upload(&self, path: &Path) -> Uuid {
        self.upload_as(&self.key, path, &[]).await
    }

    /// Uploads each named note of `fixtures/voice`, in order; panics unless each is accepted.
    pub async fn upload_voice_notes(&self, notes: &[&str]) -> Vec<Uuid> {
        let mut ids = Vec::with_capacity(notes.len());
        for note in notes {
            ids.push(self.upload(&root().join("fixtures/voice").join(note)).await);
        }
        ids
    }

    /// Multipart upload; panics unless the API answers 202.
    pub async fn upload_as(&self, key: &str, path: &Path, fields: &[(&str, &str)]) -> Uuid {
        let response = self.post_file(key, path, fields).await;
        let status = response.status();
        let body: Value = response.json().await.expect("JSON answer");
        assert_eq!(status, 202, "upload of {} refused: {body}", path.display());
        Uuid::parse_str(body["id"].as_str().expect("id")).expect("uuid")
    }

    pub async fn post_file(
        &self,
        key: &str,
        path: &Path,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let bytes = std::fs::read(path).expect("fixture");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name),
        );
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        self.http
            .post(format!("{}/v1/jobs", self.base))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .expect("POST /v1/jobs")
    }

    pub async fn post_json(&self, key: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/jobs", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("POST /v1/jobs")
    }

    /// Submits by URL; panics unless 202.
    pub async fn submit_url(&self, url: &str) -> Uuid {
        let response = self
            .post_json(&self.key, serde_json::json!({"audio_url": url}))
            .await;
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(status, 202, "submission of {url} refused: {body}");
        Uuid::parse_str(body["id"].as_str().expect("id")).expect("uuid")
    }

    /// An unauthenticated GET of a path of the API (`/healthz`, `/readyz`).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn get_job(&self, key: &str, id: Uuid) -> reqwest::Response {
        self.http
            .get(format!("{}/v1/jobs/{id}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET /v1/jobs/{id}")
    }

    pub async fn job(&self, id: Uuid) -> Value {
        let r = self.get_job(&self.key, id).await;
        assert_eq!(r.status(), 200, "GET job {id}");
        r.json().await.expect("JSON")
    }

    /// Polls until the job is `completed` or `failed`.
    pub async fn wait_done(&mut self, id: Uuid, timeout: Duration) -> Value {
        self.wait_status(id, &["completed", "failed"], timeout)
            .await
    }

    pub async fn wait_status(&mut self, id: Uuid, statuses: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.get_job(&self.key, id).await.json::<Value>().await {
                if statuses.contains(&r["status"].as_str().unwrap_or("")) {
                    return r;
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .workers
                    .iter()
                    .map(|w| format!("--- {} ---\n{}", w.name, tail(&w.log_text(), 40)))
                    .collect();
                panic!(
                    "job {id} did not reach {statuses:?} in {timeout:?}: {}\n{}",
                    self.job(id).await,
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Stack {
    /// Stops the processes, then deletes this stack's Redis keys (queues and caches share
    /// its unique prefix), so test runs leave the shared Redis as they found it.
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.kill9();
        }
        self.api.kill9();
        let (Some(prefix), Some(url)) = (
            self.config.env.get("VOXQ_QUEUE_PREFIX"),
            self.config.env.get("VOXQ_REDIS_URL"),
        ) else {
            return;
        };
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "redis-cli -u '{url}' --scan --pattern '{prefix}:*' | xargs -r redis-cli -u '{url}' del >/dev/null"
            ))
            .status();
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A connection to the test database, for checks the API does not expose.
pub async fn db(config: &StackConfig) -> sqlx::PgPool {
    sqlx::PgPool::connect(&config.env["VOXQ_DATABASE_URL"])
        .await
        .expect("test database")
}

/// The `source` of a job as stored (`s3://…` for an upload).
pub async fn job_source(config: &StackConfig, id: Uuid) -> String {
    sqlx::query_scalar("SELECT source FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&db(config).await)
        .await
        .expect("job source")
}

pub async fn result_versions(pool: &sqlx::PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM job_results WHERE job_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("count results")
}

pub async fn attempts(pool: &sqlx::PgPool, id: Uuid) -> i32 {
    sqlx::query_scalar("SELECT attempts FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("attempts")
}

/// A long recording (87 s): six different voice notes joined with ffmpeg, made once per
/// test process. Natural speech, so it transcribes at temperature 0 (deterministic).
pub fn long_recording() -> PathBuf {
    let out = std::env::temp_dir().join(format!("voxq-long-{}.wav", std::process::id()));
    if out.exists() {
        return out;
    }
    let voice = root().join("fixtures/voice");
    let notes = [
        "01-running-late.ogg",
        "04-dentist-reminder.m4a",
        "06-project-update.ogg",
        "08-flight-delayed.mp3",
        "10-birthday-party.wav",
        "11-plumber-voicemail.m4a",
    ];
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y"]);
    for note in notes {
        cmd.arg("-i").arg(voice.join(note));
    }
    let inputs: String = (0..notes.len()).map(|i| format!("[{i}:a]")).collect();
    cmd.args([
        "-filter_complex",
        &format!("{inputs}concat=n={}:v=0:a=1", notes.len()),
        "-ar",
        "16000",
        "-ac",
        "1",
    ])
    .arg(&out);
    let status = cmd.status().expect("ffmpeg (installed by make deps)");
    assert!(status.success(), "ffmpeg failed");
    out
}

/// Throwaway `redis-server` on a free port without persistence, like the shared one.
pub struct TempRedis {
    pub port: u16,
    proc: Option<Proc>,
}

impl TempRedis {
    pub fn start() -> Self {
        // The port may be taken between `free_port` and the server's bind: try another.
        for _ in 0..5 {
            let mut r = Self {
                port: free_port(),
                proc: None,
            };
            r.restart();
            if r.proc.as_mut().is_some_and(Proc::is_running) {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        let port = self.port.to_string();
        let p = spawn(
            "redis",
            Path::new("redis-server"),
            &[
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            &HashMap::new(),
        );
        self.proc = Some(p);
        wait_port(self.port, Duration::from_secs(10));
        // Give a server that lost the port race time to exit, so `start` can tell.
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Throwaway PostgreSQL cluster (initdb + pg_ctl) on a free port. As root, the server
/// runs as the `postgres` user, since PostgreSQL refuses to run as root.
pub struct TempPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

impl TempPostgres {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("voxq-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("pg dir");
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown")
                .success();
            assert!(ok, "chown postgres {}", dir.display());
        }
        let mut pg = Self {
            port: free_port(),
            dir,
            bin,
            as_postgres,
        };
        let data = pg.dir.join("data");
        let ok = pg
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("initdb")
            .success();
        assert!(ok, "initdb failed");
        // The port may be taken between `free_port` and the server's bind: try another.
        for _ in 0..5 {
            if pg.try_start_server() {
                return pg;
            }
            pg.port = free_port();
        }
        panic!("PostgreSQL did not start on any of 5 free ports");
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn start_server(&self) {
        assert!(self.try_start_server(), "pg_ctl start failed");
    }

    fn try_start_server(&self) -> bool {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        self.command("pg_ctl")
            .args(["-w", "-t", "30", "-D"])
            .arg(self.dir.join("data"))
            .args(["-l"])
            .arg(self.dir.join("log"))
            .args(["-o", &opts, "start"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl start")
            .success()
    }

    /// Immediate shutdown: connections drop as in a crash.
    pub fn stop_server(&self) {
        let _ = self
            .command("pg_ctl")
            .args(["-w", "-D"])
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn wait_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The local engine's transcripts (`voxq-worker transcribe`, one thread), by file name.
pub fn local_transcripts(files: &[PathBuf]) -> HashMap<String, String> {
    let out = Command::new(bin("voxq-worker"))
        .args(["transcribe", "--format", "jsonl", "--threads", "1"])
        .env("VOXQ_MODEL_DIR", model_dir())
        .args(files)
        .output()
        .expect("voxq-worker transcribe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSONL"))
        .map(|v| {
            let file = PathBuf::from(v["file"].as_str().expect("file"));
            let name = file
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, v["text"].as_str().expect("text").to_string())
        })
        .collect()
}

/// The local engine's transcript of one file.
pub fn local_text(path: &Path) -> String {
    let name = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    local_transcripts(&[path.to_path_buf()])
        .remove(&name)
        .expect("a transcript")
}

pub const STUB_TRANSCRIPT: &str = "This transcript came from the remote provider.";

pub const STUB_SUMMARY: &str =
    "The website launch moves forward a week; review open tasks by Friday.";

/// The stand-in for the remote providers (`voxq-stub`, which checks every request),
/// serving `gpt-4o-mini` (chat) and `whisper-1` (transcription) to `Bearer <key>`. A chat
/// answer fills a JSON schema's properties with plausible values, or else is
/// [`STUB_SUMMARY`], and counts one prompt token per word and 15 completion tokens; a
/// transcription is one minute of [`STUB_TRANSCRIPT`].
pub async fn provider_stub(key: &str) -> stub::Stub {
    let answer = |asked: stub::Asked<'_>| match asked {
        stub::Asked::Chat(body) => {
            let properties = body["response_format"]["json_schema"]["schema"]["properties"]
                .as_object()
                .cloned();
            let content = match properties {
                Some(props) => {
                    let filled: serde_json::Map<String, Value> = props
                        .into_iter()
                        .map(|(k, v)| {
                            let value = match v["type"].as_str() {
                                Some("integer") | Some("number") => serde_json::json!(7),
                                Some("array") => serde_json::json!(["use the past tense: 'went'"]),
                                _ => match v["enum"].as_array().and_then(|e| e.first()) {
                                    Some(first) => first.clone(),
                                    None => serde_json::json!("fine"),
                                },
                            };
                            (k, value)
                        })
                        .collect();
                    Value::Object(filled).to_string()
                }
                None => STUB_SUMMARY.to_string(),
            };
            let messages = body["messages"].as_array().into_iter().flatten();
            let prompt = messages
                .map(|m| {
                    m["content"]
                        .as_str()
                        .unwrap_or("")
                        .split_whitespace()
                        .count()
                })
                .sum::<usize>();
            let model = body["model"].as_str().unwrap_or_default();
            stub::completion(model, &content, prompt as u64, 15)
        }
        stub::Asked::Transcription(_) => stub::Reply::Json(serde_json::json!({
            "task": "transcribe", "language": "english", "duration": 60.0,
            "text": STUB_TRANSCRIPT,
            "segments": [{"id": 0, "start": 0.0, "end": 60.0, "text": STUB_TRANSCRIPT,
                          "avg_logprob": -0.2, "no_speech_prob": 0.01}]
        })),
    };
    let models = ["gpt-4o-mini", "whisper-1"];
    stub::Stub::start(&models, Some(key), stub::Reply::with(answer)).await
}
