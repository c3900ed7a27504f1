//! A webhook receiver for the tests: records every request (path, headers, body) and
//! answers each with the next status of its script (200 once the script is used up).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON payload")
    }
}

/// A scripted answer: status and `Retry-After`.
type Answer = (u16, Option<String>);

#[derive(Clone, Default)]
struct Shared {
    got: Arc<Mutex<Vec<Got>>>,
    /// Per path: (status, Retry-After) to answer with, in order.
    script: Arc<Mutex<HashMap<String, VecDeque<Answer>>>>,
}

pub struct Receiver {
    pub port: u16,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on 127.0.0.1 at `port` (0: any free port).
    pub async fn start(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().expect("addr").port();
        let shared = Shared::default();
        let app = Router::new().fallback(record).with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver");
        });
        Self {
            port,
            shared,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers the next requests to `path` with these statuses (and optional
    /// `Retry-After`).
    pub fn script(&self, path: &str, answers: &[(u16, Option<&str>)]) {
        let mut script = self.shared.script.lock().unwrap();
        script
            .entry(path.to_string())
            .or_default()
            .extend(answers.iter().map(|(s, r)| (*s, r.map(String::from))));
    }

    pub fn got(&self) -> Vec<Got> {
        self.shared.got.lock().unwrap().clone()
    }

    /// The requests to `path`, once `done` holds for them (panics after `timeout`).
    pub async fn wait(
        &self,
        path: &str,
        timeout: Duration,
        done: impl Fn(&[Got]) -> bool,
    ) -> Vec<Got> {
        let deadline = Instant::now() + timeout;
        loop {
            let got: Vec<Got> = self.got().into_iter().filter(|g| g.path == path).collect();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} request(s) at {path}: {:?}",
                got.len(),
                got.iter()
                    .map(|g| String::from_utf8_lossy(&g.body).into_owned())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops listening (connections are then refused).
    pub fn stop(&self) {
        self.server.abort();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(State(shared): State<Shared>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    shared.got.lock().unwrap().push(Got {
        path: path.clone(),
        headers,
        body,
    });
    let (status, retry_after) = shared
        .script
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .unwrap_or((200, None));
    let mut response = StatusCode::from_u16(status)
        .unwrap_or(StatusCode::OK)
        .into_response();
    if let Some(r) = retry_after.and_then(|r| HeaderValue::from_str(&r).ok()) {
        response.headers_mut().insert("retry-after", r);
    }
    response
}
