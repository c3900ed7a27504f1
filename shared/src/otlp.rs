//! Optional OpenTelemetry trace export (OTLP/HTTP with JSON encoding, `POST
//! {otlp_endpoint}/v1/traces`), off unless `otlp_endpoint` is set.
//!
//! Spans keep voxq's own W3C trace ids ([`crate::trace`]): the API's `request` span
//! exports with the `trace_id`/`span_id`/`parent_id` it logs and answers in
//! `traceparent`, and a worker's `job` span with the trace and parent recorded from the
//! job's stored `traceparent`, so a job's stages appear under the request that created
//! it. Spans below a traced span inherit its trace; spans outside any trace (background
//! loops) are not exported. Events inside an exported span become its span events, and a
//! `WARN` or `ERROR` event marks the span's status as an error.
//!
//! Export never blocks the traced code: closed spans go to a bounded queue (dropped when
//! full) that a thread of its own sends in batches of up to 512 every second.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde_json::{json, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Spans waiting to be sent; beyond this, closed spans are dropped (and counted).
const QUEUE: usize = 8192;
const BATCH: usize = 512;
const EVENTS_PER_SPAN: usize = 32;
const ATTRIBUTES_PER_SPAN: usize = 64;
/// Longest string value kept (bytes); longer ones are cut at a character boundary.
const VALUE_BYTES: usize = 4096;

/// Where finished spans go once [`start`] ran; empty while export is off.
static SINK: OnceLock<mpsc::SyncSender<Msg>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

enum Msg {
    Span(Box<SpanData>),
    Flush(mpsc::Sender<()>),
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("otlp_endpoint '{0}' is not an http(s) URL")]
    Endpoint(String),
    #[error("otlp_headers entry '{0}' is not name=value")]
    Header(String),
    #[error("cannot build the OTLP client: {0}")]
    Client(String),
    #[error("the OTLP exporter is already running")]
    Started,
}

/// The [`Layer`] that records spans for export; installed by [`crate::logging::init`],
/// inert until [`start`].
#[derive(Debug, Default)]
pub struct OtlpLayer;

/// Flushes spans not yet sent when dropped (at most 3 s).
#[must_use = "dropping the guard flushes the exporter"]
pub struct OtlpGuard(());

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        if let Some(sink) = SINK.get() {
            let (tx, rx) = mpsc::channel();
            if sink.try_send(Msg::Flush(tx)).is_ok() {
                let _ = rx.recv_timeout(Duration::from_secs(3));
            }
        }
    }
}

/// Starts exporting as `service` (`voxq-api`, `voxq-worker`) to `endpoint` (the
/// collector's base URL, e.g. `http://otel-collector:4318`) with `headers`
/// (`name=value,name=value`, e.g. an API key). `Ok(None)` when `endpoint` is empty.
pub fn start(service: &str, endpoint: &str, headers: &str) -> Result<Option<OtlpGuard>, OtlpError> {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        return Ok(None);
    }
    let base = url::Url::parse(endpoint)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| OtlpError::Endpoint(endpoint.to_string()))?;
    let url = format!("{}/v1/traces", base.as_str().trim_end_matches('/'));
    let mut header_map = reqwest::header::HeaderMap::new();
    for pair in headers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| OtlpError::Header(pair.to_string()))?;
        let name = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| OtlpError::Header(pair.to_string()))?;
        let value = reqwest::header::HeaderValue::from_str(value.trim())
            .map_err(|_| OtlpError::Header(pair.to_string()))?;
        header_map.insert(name, value);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(header_map)
        .build()
        .map_err(|e| OtlpError::Client(e.to_string()))?;
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    SINK.set(tx).map_err(|_| OtlpError::Started)?;
    let resource = json!({"attributes": [
        attr("service.name", &Val::Str(service.to_string())),
        attr("service.version", &Val::Str(env!("CARGO_PKG_VERSION").to_string())),
        attr("service.instance.id", &Val::Str(instance_id())),
    ]});
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || export_loop(rx, client, url, resource))
        .map_err(|e| OtlpError::Client(e.to_string()))?;
    tracing::info!(endpoint = %base, "exporting traces over OTLP");
    Ok(Some(OtlpGuard(())))
}

fn instance_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("{host}:{}", std::process::id())
}

/// Sends batches until every sender is gone; a failed send is logged and dropped (the
/// collector being down must not grow memory).
fn export_loop(rx: mpsc::Receiver<Msg>, client: reqwest::Client, url: String, resource: Value) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("otlp: cannot start the export runtime: {e}");
            return;
        }
    };
    let mut batch: Vec<Box<SpanData>> = Vec::new();
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let mut flushed = Vec::new();
        let mut closed = false;
        while batch.len() < BATCH {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Msg::Span(s)) => batch.push(s),
                Ok(Msg::Flush(done)) => {
                    flushed.push(done);
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let body = request_body(&resource, &batch);
            batch.clear();
            let sent = runtime.block_on(async {
                let r = client.post(&url).json(&body).send().await?;
                r.error_for_status().map(|_| ())
            });
            if let Err(e) = sent {
                // At most one warning a minute: the collector may be down for long.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_warning = Some(std::time::Instant::now());
                    tracing::warn!(error = %e, "cannot send spans to the OTLP endpoint; dropped");
                }
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

/// An `ExportTraceServiceRequest` in OTLP's JSON encoding (hex ids, nanoseconds as
/// strings, enums as numbers).
fn request_body(resource: &Value, spans: &[Box<SpanData>]) -> Value {
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    let spans: Vec<Value> = spans.iter().map(|s| s.to_json()).collect();
    let mut scope = json!({"name": "voxq", "version": env!("CARGO_PKG_VERSION")});
    if dropped > 0 {
        scope["attributes"] = json!([attr("voxq.spans_dropped", &Val::Int(dropped as i64))]);
    }
    json!({"resourceSpans": [{
        "resource": resource,
        "scopeSpans": [{"scope": scope, "spans": spans}],
    }]})
}

#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

fn attr(key: &str, value: &Val) -> Value {
    let v = match value {
        Val::Str(s) => json!({"stringValue": s}),
        Val::Int(i) => json!({"intValue": i.to_string()}),
        Val::Float(f) if f.is_finite() => json!({"doubleValue": f}),
        Val::Float(f) => json!({"stringValue": f.to_string()}),
        Val::Bool(b) => json!({"boolValue": b}),
    };
    json!({"key": key, "value": v})
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

/// An event inside a span: when, its message, its other fields.
type SpanEvent = (SystemTime, String, Vec<(String, Val)>);

/// A span being recorded (kept in the registry's extensions) and, once closed, sent.
#[derive(Debug)]
struct SpanData {
    name: &'static str,
    trace_id: Option<String>,
    span_id: String,
    parent_id: Option<String>,
    start: SystemTime,
    end: Option<SystemTime>,
    attributes: Vec<(String, Val)>,
    events: Vec<SpanEvent>,
    error: Option<String>,
}

impl SpanData {
    fn to_json(&self) -> Value {
        // request: SERVER; job: CONSUMER (of the queue); everything else INTERNAL.
        let kind = match self.name {
            "request" => 2,
            "job" => 5,
            _ => 1,
        };
        let mut span = json!({
            "traceId": self.trace_id.as_deref().unwrap_or_default(),
            "spanId": self.span_id,
            "name": self.name,
            "kind": kind,
            "startTimeUnixNano": nanos(self.start),
            "endTimeUnixNano": nanos(self.end.unwrap_or_else(SystemTime::now)),
            "attributes": self.attributes.iter().map(|(k, v)| attr(k, v)).collect::<Vec<_>>(),
            "events": self.events.iter().map(|(t, name, attrs)| json!({
                "timeUnixNano": nanos(*t),
                "name": name,
                "attributes": attrs.iter().map(|(k, v)| attr(k, v)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            // STATUS_CODE_ERROR = 2, UNSET = 0.
            "status": match &self.error {
                Some(message) => json!({"code": 2, "message": message}),
                None => json!({"code": 0}),
            },
        });
        if let Some(parent) = &self.parent_id {
            span["parentSpanId"] = json!(parent);
        }
        span
    }

    /// Applies a recorded field: the trace fields set the span's place in its trace,
    /// every other field becomes an attribute.
    fn set(&mut self, name: &str, value: Val) {
        match (name, &value) {
            ("trace_id", Val::Str(s)) if is_hex(s, 32) => self.trace_id = Some(s.clone()),
            ("span_id", Val::Str(s)) if is_hex(s, 16) => self.span_id = s.clone(),
            ("parent_id", Val::Str(s)) if is_hex(s, 16) => self.parent_id = Some(s.clone()),
            ("trace_id" | "span_id" | "parent_id", _) => {}
            _ => {
                let full = self.attributes.len() >= ATTRIBUTES_PER_SPAN;
                match self.attributes.iter_mut().find(|(k, _)| k == name) {
                    Some(slot) => slot.1 = value,
                    None if !full => self.attributes.push((name.to_string(), value)),
                    None => {}
                }
            }
        }
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

fn random_span_id() -> String {
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// `s`, cut to at most [`VALUE_BYTES`] at a character boundary.
fn clip(s: &str) -> String {
    let mut end = s.len().min(VALUE_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Collects fields as attribute values (strings clipped to [`VALUE_BYTES`]).
struct Fields<'a>(&'a mut Vec<(String, Val)>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().into(), Val::Str(clip(value))));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name().into(), Val::Int(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        let v = i64::try_from(value).map_or(Val::Str(value.to_string()), Val::Int);
        self.0.push((field.name().into(), v));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name().into(), Val::Float(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name().into(), Val::Bool(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .push((field.name().into(), Val::Str(clip(&format!("{value:?}")))));
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if SINK.get().is_none() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let (trace_id, parent_id) = span
            .parent()
            .and_then(|p| {
                let ext = p.extensions();
                let d = ext.get::<SpanData>()?;
                Some((d.trace_id.clone(), Some(d.span_id.clone())))
            })
            .unwrap_or((None, None));
        let mut data = SpanData {
            name: attrs.metadata().name(),
            trace_id,
            span_id: random_span_id(),
            parent_id,
            start: SystemTime::now(),
            end: None,
            attributes: Vec::new(),
            events: Vec::new(),
            error: None,
        };
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        for (k, v) in fields {
            data.set(&k, v);
        }
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(data) = ext.get_mut::<SpanData>() else {
            return;
        };
        let mut fields = Vec::new();
        values.record(&mut Fields(&mut fields));
        for (k, v) in fields {
            data.set(&k, v);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let mut ext = span.extensions_mut();
        let Some(data) = ext.get_mut::<SpanData>() else {
            return;
        };
        if data.trace_id.is_none() {
            return;
        }
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        fields.truncate(ATTRIBUTES_PER_SPAN);
        let message = fields
            .iter()
            .position(|(k, _)| k == "message")
            .map(|i| match fields.remove(i).1 {
                Val::Str(s) => s,
                other => format!("{other:?}"),
            })
            .unwrap_or_else(|| event.metadata().name().to_string());
        let level = *event.metadata().level();
        if level <= Level::WARN && data.error.is_none() {
            data.error = Some(message.clone());
        }
        if data.events.len() < EVENTS_PER_SPAN {
            fields.push(("level".into(), Val::Str(level.to_string())));
            data.events.push((SystemTime::now(), message, fields));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(sink) = SINK.get() else { return };
        let Some(span) = ctx.span(&id) else { return };
        let Some(mut data) = span.extensions_mut().remove::<SpanData>() else {
            return;
        };
        if data.trace_id.is_none() {
            return;
        }
        data.end = Some(SystemTime::now());
        if sink.try_send(Msg::Span(Box::new(data))).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_encode_as_otlp_json() {
        let mut s = SpanData {
            name: "request",
            trace_id: None,
            span_id: random_span_id(),
            parent_id: None,
            start: UNIX_EPOCH + Duration::from_nanos(1_500),
            end: Some(UNIX_EPOCH + Duration::from_nanos(2_500)),
            attributes: Vec::new(),
            events: Vec::new(),
            error: None,
        };
        s.set(
            "trace_id",
            Val::Str("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        );
        s.set("parent_id", Val::Str(String::new()));
        s.set("span_id", Val::Str("00f067aa0ba902b7".into()));
        s.set("route", Val::Str("/v1/jobs".into()));
        s.set("status", Val::Int(202));
        s.set("status", Val::Int(201));
        let v = s.to_json();
        assert_eq!(v["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["spanId"], "00f067aa0ba902b7");
        assert!(
            v.get("parentSpanId").is_none(),
            "an empty parent is no parent"
        );
        assert_eq!(v["kind"], 2);
        assert_eq!(v["startTimeUnixNano"], "1500");
        assert_eq!(v["endTimeUnixNano"], "2500");
        assert_eq!(
            v["attributes"],
            json!([
                {"key": "route", "value": {"stringValue": "/v1/jobs"}},
                {"key": "status", "value": {"intValue": "201"}},
            ])
        );
        assert_eq!(v["status"]["code"], 0);
    }

    #[test]
    fn long_values_are_clipped_at_a_character_boundary() {
        let long = "é".repeat(VALUE_BYTES);
        let clipped = clip(&long);
        assert!(clipped.len() <= VALUE_BYTES && clipped.len() >= VALUE_BYTES - 1);
        assert!(clipped.chars().all(|c| c == 'é'));
        assert_eq!(clip("short"), "short");
    }
}
