//! A stand-in for the remote OpenAI-compatible APIs (`POST /v1/chat/completions` and
//! `POST /v1/audio/transcriptions`), the only servers the tests and the cost benchmark
//! cannot run here. It checks what we send against OpenAI's documented requests (bearer
//! key, content type, known fields only, a model it serves, well-formed messages, the
//! JSON-schema response format, the multipart fields), records each request that passes,
//! and answers in the documented wire format. A request that breaks the contract gets an
//! error answer and is recorded as a violation, so callers can assert there were none
//! ([`Stub::assert_clean`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// What the stub answers to a request that passed the checks.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body.
    Json(Value),
    Status {
        status: u16,
        body: Value,
        headers: Vec<(&'static str, &'static str)>,
    },
    /// The inner reply after a delay, for timeouts.
    Slow(Duration, Box<Reply>),
    /// A reply made from the request, for answers that depend on what was asked.
    With(Arc<dyn Fn(Asked<'_>) -> Reply + Send + Sync>),
}

impl Reply {
    pub fn with(answer: impl Fn(Asked<'_>) -> Reply + Send + Sync + 'static) -> Reply {
        Reply::With(Arc::new(answer))
    }
}

/// A request that passed the checks.
#[derive(Clone, Copy)]
pub enum Asked<'a> {
    /// The JSON body of a chat completion request.
    Chat(&'a Value),
    /// The multipart fields of a transcription request.
    Transcription(&'a [Field]),
}

/// One multipart field of a transcription request.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

impl Field {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.data).unwrap_or("(not UTF-8)")
    }
}

/// A documented chat completion answering `content`, reporting `model` and the usage.
pub fn completion(model: &str, content: &str, tokens_in: u64, tokens_out: u64) -> Reply {
    Reply::Json(json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": tokens_in,
            "completion_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306"
    }))
}

/// A documented error answer.
pub fn error(status: u16, message: &str) -> Reply {
    Reply::Status {
        status,
        body: error_body(status, message),
        headers: vec![],
    }
}

fn error_body(status: u16, message: &str) -> Value {
    let kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

struct Shared {
    models: Vec<String>,
    key: Option<String>,
    hits: AtomicUsize,
    replies: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    chat_bodies: Mutex<Vec<Value>>,
    uploads: Mutex<Vec<Vec<Field>>>,
    violations: Mutex<Vec<String>>,
}

/// A running stand-in on 127.0.0.1, serving until the process ends.
pub struct Stub {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Stub {
    /// A server for `models` that requires `Authorization: Bearer <key>` (or, for `None`,
    /// no such header) and answers `default` unless replies were queued.
    pub async fn start(models: &[&str], key: Option<&str>, default: Reply) -> Stub {
        let shared = Arc::new(Shared {
            models: models.iter().map(|m| m.to_string()).collect(),
            key: key.map(Into::into),
            hits: AtomicUsize::new(0),
            replies: Mutex::default(),
            default: Mutex::new(default),
            chat_bodies: Mutex::default(),
            uploads: Mutex::default(),
            violations: Mutex::default(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/audio/transcriptions", post(transcription))
            .fallback(unexpected)
            // OpenAI's documented upload limit, rather than axum's 2 MB default.
            .layer(DefaultBodyLimit::max(25 << 20))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("stub server") });
        Stub { addr, shared }
    }

    /// The API base, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received, malformed ones included.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Answers the next request with `reply` (first in, first out) instead of the default.
    pub fn queue(&self, reply: Reply) {
        self.shared.replies.lock().unwrap().push_back(reply);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.shared.default.lock().unwrap() = reply;
    }

    /// The bodies of the chat requests that passed the checks, in order.
    pub fn chat_bodies(&self) -> Vec<Value> {
        self.shared.chat_bodies.lock().unwrap().clone()
    }

    /// The fields of the transcription requests that passed the checks, in order.
    pub fn uploads(&self) -> Vec<Vec<Field>> {
        self.shared.uploads.lock().unwrap().clone()
    }

    /// What each request that broke the contract did wrong.
    pub fn violations(&self) -> Vec<String> {
        self.shared.violations.lock().unwrap().clone()
    }

    pub fn assert_clean(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "requests broke the contract: {violations:?}"
        );
    }
}

/// A request that broke the contract: what the client is told and what the caller sees.
struct Broken {
    status: u16,
    message: String,
    problem: String,
}

fn bad(problem: String) -> Broken {
    Broken {
        status: 400,
        message: format!("stub: {problem}"),
        problem,
    }
}

impl Shared {
    fn refuse(&self, broken: Broken) -> Response {
        self.violations.lock().unwrap().push(broken.problem);
        let status = StatusCode::from_u16(broken.status).unwrap();
        (status, Json(error_body(broken.status, &broken.message))).into_response()
    }

    async fn reply(&self, asked: Asked<'_>) -> Response {
        let queued = self.replies.lock().unwrap().pop_front();
        let mut reply = queued.unwrap_or_else(|| self.default.lock().unwrap().clone());
        loop {
            match reply {
                Reply::Slow(delay, inner) => {
                    tokio::time::sleep(delay).await;
                    reply = *inner;
                }
                Reply::With(answer) => reply = answer(asked),
                Reply::Json(body) => return Json(body).into_response(),
                Reply::Status {
                    status,
                    body,
                    headers,
                } => {
                    let mut response =
                        (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value.parse().unwrap());
                    }
                    return response;
                }
            }
        }
    }
}

async fn unexpected(State(stub): State<Arc<Shared>>, request: Request) -> Response {
    stub.hits.fetch_add(1, Ordering::SeqCst);
    stub.refuse(Broken {
        status: 404,
        message: "unknown path".into(),
        problem: format!("unexpected {} {}", request.method(), request.uri()),
    })
}

async fn chat(State(stub): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    stub.hits.fetch_add(1, Ordering::SeqCst);
    let checked = (|| {
        check_auth(&stub, &headers)?;
        check_content_type(&headers, |t| t == "application/json")?;
        let body: Value =
            serde_json::from_slice(&body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
        check_chat(&body).map_err(bad)?;
        check_model(&stub.models, body["model"].as_str())?;
        Ok(body)
    })();
    match checked {
        Err(broken) => stub.refuse(broken),
        Ok(body) => {
            stub.chat_bodies.lock().unwrap().push(body.clone());
            stub.reply(Asked::Chat(&body)).await
        }
    }
}

async fn transcription(State(stub): State<Arc<Shared>>, request: Request) -> Response {
    stub.hits.fetch_add(1, Ordering::SeqCst);
    let checked = async {
        check_auth(&stub, request.headers())?;
        let multipart = |t: &str| t.starts_with("multipart/form-data; boundary=");
        check_content_type(request.headers(), multipart)?;
        let fields = read_fields(request).await?;
        check_upload(&fields).map_err(bad)?;
        let model = fields.iter().find(|f| f.name == "model").map(Field::text);
        check_model(&stub.models, model)?;
        Ok(fields)
    };
    match checked.await {
        Err(broken) => stub.refuse(broken),
        Ok(fields) => {
            stub.uploads.lock().unwrap().push(fields.clone());
            stub.reply(Asked::Transcription(&fields)).await
        }
    }
}

async fn read_fields(request: Request) -> Result<Vec<Field>, Broken> {
    let broken = |e: axum::extract::multipart::MultipartError| bad(format!("bad multipart: {e}"));
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| bad(format!("not multipart: {e}")))?;
    let mut fields = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(broken)? {
        fields.push(Field {
            name: field.name().unwrap_or("").into(),
            file_name: field.file_name().map(Into::into),
            content_type: field.content_type().map(Into::into),
            data: field.bytes().await.map_err(broken)?.to_vec(),
        });
    }
    Ok(fields)
}

/// OpenAI answers a missing or wrong key with 401.
fn check_auth(stub: &Shared, headers: &HeaderMap) -> Result<(), Broken> {
    let got = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let want = stub.key.as_ref().map(|k| format!("Bearer {k}"));
    if got == want.as_deref() {
        return Ok(());
    }
    Err(Broken {
        status: 401,
        message: "Incorrect API key provided".into(),
        problem: format!("authorization {got:?} instead of {want:?}"),
    })
}

fn check_content_type(headers: &HeaderMap, ok: impl Fn(&str) -> bool) -> Result<(), Broken> {
    let got = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ok(got) {
        return Ok(());
    }
    Err(bad(format!("content-type '{got}'")))
}

/// OpenAI answers a model it does not serve with 404.
fn check_model(models: &[String], model: Option<&str>) -> Result<(), Broken> {
    if model.is_some_and(|m| models.iter().any(|served| served == m)) {
        return Ok(());
    }
    Err(Broken {
        status: 404,
        message: format!(
            "The model `{}` does not exist or you do not have access to it.",
            model.unwrap_or_default()
        ),
        problem: format!("model {model:?} is not one of {models:?}"),
    })
}

/// The documented request: known fields only; messages with a role and string content,
/// one of them a user message with text; positive answer limits; a temperature in
/// 0..=2; a `response_format` of type `json_schema` with a valid name, a schema and
/// `strict`.
fn check_chat(body: &Value) -> Result<(), String> {
    const KNOWN: [&str; 6] = [
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "response_format",
    ];
    let object = body.as_object().ok_or("body is not an object")?;
    if let Some(key) = object.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("unexpected field '{key}'"));
    }
    let messages = body["messages"].as_array().ok_or("no messages array")?;
    for m in messages {
        let role = m["role"].as_str().unwrap_or("");
        if !["system", "developer", "user", "assistant"].contains(&role)
            || !m["content"].is_string()
            || m.as_object().map_or(0, |o| o.len()) != 2
        {
            return Err(format!("bad message {m}"));
        }
    }
    let has_text = |m: &Value| m["content"].as_str().is_some_and(|c| !c.trim().is_empty());
    if !messages.iter().any(|m| m["role"] == "user" && has_text(m)) {
        return Err("no user message with content".into());
    }
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = body.get(key).filter(|v| v.as_u64().is_none_or(|n| n == 0)) {
            return Err(format!("{key} is {v}"));
        }
    }
    if let Some(t) = body.get("temperature") {
        if !t.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t)) {
            return Err(format!("temperature is {t}"));
        }
    }
    if let Some(format) = body.get("response_format") {
        if format["type"] != "json_schema" || format.as_object().unwrap().len() != 2 {
            return Err(format!("response_format {format}"));
        }
        let schema = &format["json_schema"];
        let name = schema["name"].as_str().unwrap_or("");
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok
            || !schema["schema"].is_object()
            || !schema["strict"].is_boolean()
            || schema.as_object().unwrap().len() != 3
        {
            return Err(format!("json_schema {schema}"));
        }
    }
    Ok(())
}

/// `file` with a file name and bytes; `model`; `response_format=verbose_json`;
/// `timestamp_granularities[]=segment`; optionally `language`; nothing else, no repeats.
fn check_upload(fields: &[Field]) -> Result<(), String> {
    const KNOWN: [&str; 5] = [
        "file",
        "model",
        "response_format",
        "timestamp_granularities[]",
        "language",
    ];
    for (i, f) in fields.iter().enumerate() {
        if !KNOWN.contains(&f.name.as_str()) {
            return Err(format!("unexpected field '{}'", f.name));
        }
        if fields[..i].iter().any(|earlier| earlier.name == f.name) {
            return Err(format!("repeated field '{}'", f.name));
        }
    }
    let get = |name: &str| fields.iter().find(|f| f.name == name);
    let file = get("file").ok_or("no file field")?;
    if file.file_name.as_deref().unwrap_or("").is_empty() || file.data.is_empty() {
        return Err("file part without file name or bytes".into());
    }
    let text = |name: &str| get(name).map(Field::text);
    if text("response_format") != Some("verbose_json") {
        return Err(format!("response_format {:?}", text("response_format")));
    }
    if text("timestamp_granularities[]") != Some("segment") {
        return Err("timestamp_granularities[] is not 'segment'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each broken rule is refused and recorded; a documented request is answered.
    #[tokio::test]
    async fn requests_that_break_the_contract_are_recorded() {
        let stub = Stub::start(&["m"], Some("k"), completion("m", "ok", 1, 1)).await;
        let http = reqwest::Client::new();
        let url = |path: &str| format!("{}/{path}", stub.base_url());
        let chat = |key: &str, body: Value| {
            http.post(url("chat/completions"))
                .bearer_auth(key)
                .json(&body)
                .send()
        };
        let user = json!([{"role": "user", "content": "hi"}]);
        let fine = chat("k", json!({"model": "m", "messages": user}))
            .await
            .unwrap();
        assert_eq!(fine.status(), 200);
        stub.assert_clean();

        let statuses = [
            chat("x", json!({"model": "m", "messages": user})),
            chat("k", json!({"model": "n", "messages": user})),
            chat("k", json!({"model": "m", "messages": user, "n": 2})),
            chat(
                "k",
                json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}),
            ),
            chat(
                "k",
                json!({"model": "m", "messages": user, "max_tokens": 0}),
            ),
        ];
        let mut got = Vec::new();
        for request in statuses {
            got.push(request.await.unwrap().status().as_u16());
        }
        assert_eq!(got, [401, 404, 400, 400, 400]);
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(vec![1]).file_name("a.ogg"),
            )
            .text("model", "m")
            .text("response_format", "json");
        let upload = http
            .post(url("audio/transcriptions"))
            .bearer_auth("k")
            .multipart(form);
        assert_eq!(upload.send().await.unwrap().status(), 400);
        let other = http
            .get(url("models"))
            .bearer_auth("k")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 404);

        assert_eq!(stub.violations().len(), 7, "{:?}", stub.violations());
        assert_eq!(
            (stub.hits(), stub.chat_bodies().len(), stub.uploads().len()),
            (8, 1, 0)
        );
    }
}
