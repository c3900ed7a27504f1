//! Fetching cannot hold a worker hostage (issue 8, part 4), through the real binaries:
//! a server that trickles its body or its redirects is cut off by one deadline for the
//! whole fetch and retried at most once, the worker is free for the next job at once,
//! and ports other than 443 (80 with `VOXQ_FETCH_ALLOW_HTTP`) and the allow-listed ones
//! are refused before connecting.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use voxq_tests::{root, serial, Stack, StackConfig};

const DONE: Duration = Duration::from_secs(120);
/// `VOXQ_FETCH_TIMEOUT_S` of the workers below.
const DEADLINE: Duration = Duration::from_secs(4);
/// Time a server trickles between two bytes, or waits before each redirect.
const DRIP: Duration = Duration::from_secs(2);
/// Queue polling, the retry's back-off (100-300 ms here) and the API's answers.
const SLACK: Duration = Duration::from_secs(3);

/// One request a [`TestServer`] received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    /// From the request until the client hung up (or the server answered in full).
    held: Option<Duration>,
}

/// A plain-HTTP audio server on 127.0.0.1, one connection per request:
/// - `/audio.ogg`: a voice note;
/// - `/drip.ogg`: the headers of a 100 kB file, then one byte every [`DRIP`];
/// - `/hop/N`: waits [`DRIP`], then redirects to `/hop/N+1`, forever;
/// - `/to/PORT`: redirects to `/audio.ogg` on 127.0.0.1:PORT.
struct TestServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let audio =
            std::fs::read(root().join("fixtures/voice/01-running-late.ogg")).expect("fixture");
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, audio.clone(), log.clone()));
            }
        });
        Self { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen(&self, prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

async fn serve(mut socket: TcpStream, audio: Vec<u8>, log: Arc<Mutex<Vec<Seen>>>) {
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = socket.read(&mut buf).await.unwrap_or(0);
    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let index = {
        let mut log = log.lock().unwrap();
        log.push(Seen {
            path: path.clone(),
            held: None,
        });
        log.len() - 1
    };
    let head = |status: &str, extra: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let (mut reader, mut writer) = socket.split();
    // Until the client hangs up (read returns 0 or fails), trickle or wait.
    let hung_up = async {
        let mut byte = [0u8; 1];
        while let Ok(1..) = reader.read(&mut byte).await {}
    };
    let answer = async {
        if path == "/audio.ogg" {
            let head = head("200 OK", "Content-Type: audio/ogg\r\n", audio.len());
            let _ = writer.write_all(&[head.into_bytes(), audio].concat()).await;
        } else if path == "/drip.ogg" {
            let head = head("200 OK", "Content-Type: audio/ogg\r\n", 100_000);
            if writer.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(DRIP).await;
                if writer.write_all(b"O").await.is_err() {
                    return;
                }
            }
        } else if let Some(n) = path.strip_prefix("/hop/") {
            tokio::time::sleep(DRIP).await;
            let next = n.parse::<u64>().unwrap_or(0) + 1;
            let head = head("302 Found", &format!("Location: /hop/{next}\r\n"), 0);
            let _ = writer.write_all(head.as_bytes()).await;
        } else if let Some(port) = path.strip_prefix("/to/") {
            let location = format!("Location: http://127.0.0.1:{port}/audio.ogg\r\n");
            let _ = writer
                .write_all(head("302 Found", &location, 0).as_bytes())
                .await;
        } else {
            let _ = writer
                .write_all(head("404 Not Found", "", 0).as_bytes())
                .await;
        }
        // Answered in full: wait for the client to close, as it would.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = hung_up => {}
        _ = answer => {}
        _ = tokio::time::sleep(Duration::from_secs(120)) => {}
    }
    log.lock().unwrap()[index].held = Some(started.elapsed());
}

fn attempts(job: &serde_json::Value) -> u32 {
    job["attempts"].as_u64().expect("attempts") as u32
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickling_server_fails_within_the_deadline_and_frees_the_worker() {
    let _serial = serial().await;
    let server = TestServer::start().await;
    let mut stack = Stack::start(
        StackConfig::from_env()
            .set("VOXQ_FETCH_ALLOW", "127.0.0.1/32")
            .set("VOXQ_FETCH_ALLOW_HTTP", "true")
            .set("VOXQ_FETCH_ALLOW_PORTS", format!("[{}]", server.port))
            .set("VOXQ_FETCH_TIMEOUT_S", DEADLINE.as_secs()),
    )
    .await;
    stack.start_worker();
    // Once this is done the model is loaded, so the times below are the fetch's alone.
    let warm = stack.submit_url(&server.url("/audio.ogg")).await;
    let job = stack.wait_done(warm, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");

    // A body of one byte every 2 s; five redirects 2 s apart (with a deadline per hop,
    // as before, these took 6 hops x 2 s and then failed with too-many-redirects).
    for (path, prefix) in [("/drip.ogg", "/drip.ogg"), ("/hop/0", "/hop/")] {
        let submitted = Instant::now();
        let id = stack.submit_url(&server.url(path)).await;
        let job = stack.wait_done(id, DONE).await;
        let took = submitted.elapsed();
        assert_eq!(job["status"], "failed", "{path}: {job}");
        assert_eq!(job["error"]["code"], "fetch-timeout", "{path}: {job}");
        let runs = attempts(&job);
        assert!(
            (1..=2).contains(&runs),
            "{path}: a timed-out fetch is retried at most once: {job}"
        );
        assert!(
            took < DEADLINE * runs + SLACK,
            "{path}: {runs} runs took {took:?} with a deadline of {DEADLINE:?}"
        );
        let message = job["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && !message.contains("127.0.0.1"),
            "{message}"
        );
        let seen = server.seen(prefix);
        if path == "/drip.ogg" {
            assert_eq!(seen.len(), runs as usize, "one request per run: {seen:?}");
        }
        for s in &seen {
            let held = s.held.expect("the worker hung up");
            assert!(held <= DEADLINE + Duration::from_secs(1), "{s:?}");
        }
    }

    // The worker is free: a job submitted now completes promptly.
    let submitted = Instant::now();
    let next = stack
        .upload(&root().join("fixtures/voice/05-on-my-way.wav"))
        .await;
    let job = stack.wait_done(next, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert!(
        submitted.elapsed() < Duration::from_secs(30),
        "the next job waited {:?}",
        submitted.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ports_are_refused_before_connecting_unless_allowed() {
    let _serial = serial().await;
    let allowed = TestServer::start().await;
    let other = TestServer::start().await;
    let mut stack = Stack::start(
        StackConfig::from_env()
            .set("VOXQ_FETCH_ALLOW", "127.0.0.1/32")
            .set("VOXQ_FETCH_ALLOW_HTTP", "true")
            .set("VOXQ_FETCH_ALLOW_PORTS", format!("[{}]", allowed.port)),
    )
    .await;
    stack.start_worker();
    // A URL naming a port that is not allowed is refused at submission.
    for url in [
        other.url("/audio.ogg"),
        "https://127.0.0.1:22/a.ogg".to_string(),
    ] {
        let r = stack
            .post_json(&stack.key, serde_json::json!({"audio_url": url}))
            .await;
        assert_eq!(r.status(), 400, "{url}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden-port", "{url}: {body}");
    }
    // A redirect to such a port is refused by the worker, before connecting.
    let refused = [allowed.url(&format!("/to/{}", other.port))];
    let mut ids = Vec::new();
    for url in &refused {
        ids.push(stack.submit_url(url).await);
    }
    let ok = stack
        .submit_url(&allowed.url(&format!("/to/{}", allowed.port)))
        .await;
    for (url, id) in refused.iter().zip(ids) {
        let job = stack.wait_done(id, DONE).await;
        assert_eq!(job["status"], "failed", "{url}: {job}");
        assert_eq!(job["error"]["code"], "forbidden-port", "{url}: {job}");
        assert_eq!(attempts(&job), 1, "{url}: a refusal is not retried");
    }
    let job = stack.wait_done(ok, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert!(
        other.seen("/").is_empty(),
        "the refused port was never connected to: {:?}",
        other.seen("/")
    );
}
