//! Batches: `POST /v1/batches` (JSONL, a JSON list, an S3 prefix listed server-side, or
//! a multipart upload of many files), `GET /v1/batches[/{id}]`, the results stream and
//! pause / resume / cancel.
//!
//! A batch is validated whole before anything is stored: one bad item rejects the
//! request (400 `invalid-items`, listing up to [`MAX_REPORTED`] bad items by line), so a
//! client fixes its manifest and sends it again rather than tracking which lines went in.

use std::collections::{HashMap, HashSet};

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shared::db::batch::{BatchAction, Control, Created, Idempotency, NewBatch, NewItem};
use shared::db::batch::{BatchView, ItemResult};
use shared::domain::{
    is_canonical_key, AudioSource, JobOptions, Lane, ModelTier, Rubric, S3Prefix, SummaryMode, Task,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, ItemError};
use crate::extract::ApiQuery;
use crate::idempotency;
use crate::jobs::{decode_cursor, page, page_limit, parse_url};
use crate::openapi::Page;
use crate::options::{self, RawOptions, TextOptions};

/// Most items one request may carry; a larger backfill sends several or names a prefix.
pub const MAX_ITEMS: usize = 100_000;
/// Most files one multipart batch may carry.
pub const MAX_FILES: usize = 1_000;
/// Largest JSON or JSONL batch body.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Largest multipart batch body (its files together).
pub const MAX_UPLOAD_BODY_BYTES: usize = 512 * 1024 * 1024;
/// Bad items listed in an `invalid-items` answer (all are counted).
pub const MAX_REPORTED: usize = 100;
/// Longest `custom_id`.
const MAX_CUSTOM_ID: usize = 256;

/// One item of a JSONL or JSON batch: its audio and the options it sets over the
/// batch's.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = BatchItem)]
#[serde(deny_unknown_fields)]
struct ItemJson {
    /// `s3://bucket/key` or `https://host/path`.
    #[schema(max_length = 2048)]
    audio_url: String,
    /// The caller's id for the item, unique in the batch; results carry it.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    custom_id: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    tasks: Option<Vec<Task>>,
    #[serde(default)]
    summary: Option<SummaryMode>,
    #[serde(default)]
    summary_model: Option<ModelTier>,
    #[serde(default)]
    #[schema(value_type = Option<Rubric>)]
    rubric: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    webhook_result: Option<bool>,
    #[serde(default)]
    word_timestamps: Option<bool>,
    #[serde(default)]
    vad_filter: Option<bool>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    language_detection_segments: Option<u32>,
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    language_detection_threshold: Option<f64>,
}

impl ItemJson {
    fn raw(&self) -> RawOptions {
        RawOptions {
            lane: None,
            language: self.language.clone(),
            tasks: self.tasks.clone(),
            summary: self.summary,
            summary_model: self.summary_model,
            rubric: self.rubric.clone(),
            model: self.model.clone(),
            webhook_url: self.webhook_url.clone(),
            webhook_result: self.webhook_result,
            word_timestamps: self.word_timestamps,
            vad_filter: self.vad_filter,
            language_detection_segments: self.language_detection_segments,
            language_detection_threshold: self.language_detection_threshold,
        }
    }
}

/// A JSON batch: `items`, or a `source` prefix to list (one of the two).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CreateBatch)]
#[serde(deny_unknown_fields)]
struct BatchJson {
    /// At most 100,000 items.
    #[serde(default)]
    #[schema(value_type = Option<Vec<ItemJson>>, max_items = 100000)]
    items: Option<Vec<serde_json::Value>>,
    /// An `s3://bucket/prefix/` the tenant may read: every object under it is an item.
    #[serde(default)]
    source: Option<String>,
    /// Options of every item (an item's own options win).
    #[serde(default)]
    #[schema(value_type = Option<RawOptions>)]
    options: Option<RawOptions>,
    /// `bulk` (the default for batches) or `interactive`.
    #[serde(default)]
    #[schema(value_type = Option<Lane>)]
    lane: Option<String>,
}

/// A batch of uploaded files: `file` parts (their file names become the items'
/// `custom_id`s) and the batch's options as text fields.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the form for the OpenAPI document; `read_files` reads it.
pub(crate) struct BatchForm {
    /// The audio files, at most 1,000, each at most `max_upload_bytes`.
    #[schema(value_type = Vec<String>, format = Binary, max_items = 1000)]
    file: Vec<Vec<u8>>,
    #[schema(value_type = Option<Lane>)]
    lane: Option<String>,
    language: Option<String>,
    /// Comma-separated stages: `transcribe,score,summarize`.
    tasks: Option<String>,
    summary: Option<SummaryMode>,
    summary_model: Option<ModelTier>,
    #[schema(value_type = Option<Rubric>)]
    rubric: Option<String>,
    model: Option<String>,
    webhook_url: Option<String>,
    webhook_result: Option<bool>,
    word_timestamps: Option<bool>,
    vad_filter: Option<bool>,
    #[schema(minimum = 1, maximum = 10)]
    language_detection_segments: Option<u32>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    language_detection_threshold: Option<f64>,
}

/// What the caller may read, loaded once per request: its uploads and its grants.
struct Readable {
    tenant_id: Uuid,
    uploads_bucket: String,
    grants: Vec<(String, String)>,
}

impl Readable {
    async fn load(state: &AppState, caller: &Caller) -> Result<Self, ApiError> {
        Ok(Self {
            tenant_id: caller.tenant_id(),
            uploads_bucket: state.objects.bucket().to_string(),
            grants: shared::db::batch::tenant_grants(&state.db, caller.tenant_id()).await?,
        })
    }

    /// The rule of `shared::db::may_read_source`, without a query per item.
    fn allows(&self, bucket: &str, key: &str) -> bool {
        if !is_canonical_key(key) {
            return false;
        }
        if bucket == self.uploads_bucket && key.starts_with(&format!("uploads/{}/", self.tenant_id))
        {
            return true;
        }
        self.grants
            .iter()
            .any(|(b, p)| b == bucket && key.starts_with(p.as_str()))
    }

    /// Whether a whole prefix is readable (listing it can only find readable keys).
    fn allows_prefix(&self, prefix: &S3Prefix) -> bool {
        let own = format!("uploads/{}/", self.tenant_id);
        (prefix.bucket == self.uploads_bucket && prefix.prefix.starts_with(&own))
            || self
                .grants
                .iter()
                .any(|(b, p)| *b == prefix.bucket && prefix.prefix.starts_with(p.as_str()))
    }
}

/// Validates items; every bad one is reported by its 1-based line.
struct Checker<'a> {
    state: &'a AppState,
    readable: Readable,
    batch: RawOptions,
    limits: shared::db::batch::TenantLimits,
    seen: HashSet<String>,
    items: Vec<NewItem>,
    errors: Vec<ItemError>,
    bad: usize,
}

impl<'a> Checker<'a> {
    fn push_error(&mut self, line: usize, e: ApiError) {
        self.bad += 1;
        if self.errors.len() < MAX_REPORTED {
            let code = match &e {
                ApiError::ForbiddenSource => "forbidden-source",
                ApiError::ForbiddenPort(_) => "forbidden-port",
                ApiError::FieldTooLong { .. } => "field-too-long",
                ApiError::NotAllowed { code, .. } => code,
                _ => "bad-request",
            };
            self.errors.push(ItemError {
                line,
                code,
                message: e.to_string(),
            });
        }
    }

    fn add(&mut self, line: usize, item: Result<ItemJson, String>) {
        match item
            .map_err(ApiError::BadRequest)
            .and_then(|i| self.check(i))
        {
            Ok(item) => self.items.push(item),
            Err(e) => self.push_error(line, e),
        }
    }

    fn check(&mut self, item: ItemJson) -> Result<NewItem, ApiError> {
        let (_, options) =
            options::validate(self.batch.over(&item.raw()), Lane::Bulk, &self.state.config)?;
        options::check_allowed(&options, &self.limits)?;
        let source = parse_url(self.state, &item.audio_url)?;
        if let AudioSource::S3 { bucket, key } = &source {
            if !self.readable.allows(bucket, key) {
                return Err(ApiError::ForbiddenSource);
            }
        }
        if let Some(id) = &item.custom_id {
            if id.is_empty() || id.len() > MAX_CUSTOM_ID {
                return Err(ApiError::BadRequest(format!(
                    "custom_id must be 1 to {MAX_CUSTOM_ID} bytes"
                )));
            }
            if !self.seen.insert(id.clone()) {
                return Err(ApiError::BadRequest(format!(
                    "custom_id '{id}' is used by an earlier item"
                )));
            }
        }
        Ok(NewItem {
            job_id: Uuid::new_v4(),
            source: item.audio_url,
            options,
            custom_id: item.custom_id,
        })
    }

    fn finish(self) -> Result<Vec<NewItem>, ApiError> {
        if self.bad > 0 {
            return Err(ApiError::InvalidItems {
                count: self.bad,
                errors: self.errors,
            });
        }
        if self.items.is_empty() {
            return Err(ApiError::BadRequest("the batch has no items".into()));
        }
        Ok(self.items)
    }
}

/// Batch-level options from the query string (JSONL and multipart batches).
fn query_options(query: &HashMap<String, String>) -> Result<RawOptions, ApiError> {
    let mut raw = RawOptions::default();
    for (k, v) in query {
        raw.set_text(k, v)?;
    }
    Ok(raw)
}

/// `POST /v1/batches`.
#[utoipa::path(
    post,
    path = "/v1/batches",
    tag = "batches",
    operation_id = "create_batch",
    summary = "Submit many recordings at once (scope jobs:write)",
    description = "A JSONL manifest (one item per line), a JSON object with `items` or an \
        S3 `source` prefix, or a multipart form of audio files. The batch is validated \
        whole: one bad item refuses the request (400 `invalid-items`, listing the bad \
        lines) and nothing is stored. Batch-level options may also come as query \
        parameters (JSONL and multipart).",
    params(
        TextOptions,
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "Retrying with the same key and request answers the same batch."),
    ),
    request_body(
        description = "`application/x-ndjson` (also `application/jsonl`, \
            `application/json-lines`): one BatchItem JSON object per line, at most 100,000 \
            lines and 64 MiB. `application/json`: items or an S3 prefix. \
            `multipart/form-data`: audio files.",
        content(
        (Vec<ItemJson> = "application/x-ndjson"),
        (BatchJson = "application/json"),
        (BatchForm = "multipart/form-data"),
    )),
    responses(
        (status = 202, description = "Accepted.", body = BatchView,
            headers(
                ("Location" = String, description = "`/v1/batches/{id}`"),
                ("Idempotent-Replayed" = Option<String>, description = "`true` when an earlier request with this Idempotency-Key made the batch"),
            )),
        (status = 400, description = "Invalid items (`invalid-items`, with `errors`) or options (`bad-request`, …).", body = ErrorBody),
        (status = 403, description = "A missing scope, a source the tenant may not read (`forbidden-source`), or an option it may not use.", body = ErrorBody),
        (status = 408, description = "The body stalled (`request-timeout`).", body = ErrorBody),
        (status = 413, description = "A file or the body is too large (`file-too-large`, `body-too-large`).", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with another request (`idempotency-key-reused`).", body = ErrorBody),
        (status = 429, description = "A rate limit, or the tenant's daily quota (`daily-quota-exceeded`).", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
    let traceparent = crate::app::traceparent(&request);
    let idem_key = idempotency::key(request.headers())?;
    let limits = shared::db::batch::tenant_limits(&state.db, caller.tenant_id()).await?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut query_pairs: Vec<_> = query.iter().collect();
    query_pairs.sort();
    let query_text = serde_json::to_vec(&query_pairs).unwrap_or_default();
    let readable = Readable::load(&state, &caller).await?;
    let mut checker = Checker {
        state: &state,
        readable,
        batch: RawOptions::default(),
        limits: limits.clone(),
        seen: HashSet::new(),
        items: Vec::new(),
        errors: Vec::new(),
        bad: 0,
    };
    let mut source = None;
    let mut uploads: Vec<String> = Vec::new();
    let lane;
    let batch_options: JobOptions;
    let hash;
    if content_type.starts_with("multipart/form-data") {
        let form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?;
        let form = read_files(&state, form).await?;
        let raw = query_options(&query)?.over(&form.raw);
        (lane, batch_options) = options::validate(raw.clone(), Lane::Bulk, &state.config)?;
        options::check_allowed(&batch_options, &limits)?;
        hash = idempotency::hash_parts([b"multipart".as_slice(), &query_text, &form.hash]);
        let idem = idem_key.clone().map(|key| Idempotency {
            key,
            request_hash: hash.clone(),
        });
        if let Some(idem) = &idem {
            if let Some(prior) =
                shared::db::batch::find_idempotent_batch(&state.db, caller.tenant_id(), idem)
                    .await?
            {
                return answer_created(&state, &caller, prior).await;
            }
        }
        let mut seen = HashSet::new();
        for (n, f) in form.files.iter().enumerate() {
            if !seen.insert(f.name.clone()) {
                checker.push_error(
                    n + 1,
                    ApiError::BadRequest(format!("two files are named '{}'", f.name)),
                );
            }
        }
        if checker.bad > 0 {
            return Err(ApiError::InvalidItems {
                count: checker.bad,
                errors: checker.errors,
            });
        }
        options::check_daily_quota(&state.db, caller.tenant_id(), &limits, form.files.len())
            .await?;
        for f in &form.files {
            let id = Uuid::new_v4();
            let key = match &f.ext {
                Some(ext) => format!("uploads/{}/{id}.{ext}", caller.tenant_id()),
                None => format!("uploads/{}/{id}", caller.tenant_id()),
            };
            if let Err(e) = state.objects.put_file(&key, &f.path, &f.content_type).await {
                tracing::warn!(error = %e, "batch upload to S3 failed");
                delete_uploads(&state, &uploads).await;
                return Err(ApiError::Unavailable("object storage"));
            }
            uploads.push(key.clone());
            checker.items.push(NewItem {
                job_id: id,
                source: format!("s3://{}/{key}", state.objects.bucket()),
                options: batch_options.clone(),
                custom_id: Some(f.name.clone()),
            });
        }
    } else if content_type.starts_with("application/x-ndjson")
        || content_type.starts_with("application/jsonl")
        || content_type.starts_with("application/json-lines")
    {
        let body = read_body(request, &state).await?;
        checker.batch = query_options(&query)?;
        (lane, batch_options) =
            options::validate(checker.batch.clone(), Lane::Bulk, &state.config)?;
        options::check_allowed(&batch_options, &limits)?;
        hash = idempotency::hash_parts([b"jsonl".as_slice(), &query_text, &body]);
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
        let mut lines = 0;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            lines += 1;
            if lines > MAX_ITEMS {
                return Err(too_many());
            }
            let item =
                serde_json::from_str::<ItemJson>(line).map_err(|e| format!("invalid item: {e}"));
            checker.add(n + 1, item);
        }
    } else if content_type.starts_with("application/json") {
        let body = read_body(request, &state).await?;
        hash = idempotency::hash_parts([b"json".as_slice(), &query_text, &body]);
        let batch: BatchJson = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        let mut raw = batch.options.unwrap_or_default();
        if batch.lane.is_some() {
            raw.lane = batch.lane;
        }
        checker.batch = query_options(&query)?.over(&raw);
        (lane, batch_options) =
            options::validate(checker.batch.clone(), Lane::Bulk, &state.config)?;
        options::check_allowed(&batch_options, &limits)?;
        match (batch.items, batch.source) {
            (Some(items), None) => {
                if items.len() > MAX_ITEMS {
                    return Err(too_many());
                }
                for (n, item) in items.into_iter().enumerate() {
                    let item = serde_json::from_value::<ItemJson>(item)
                        .map_err(|e| format!("invalid item: {e}"));
                    checker.add(n + 1, item);
                }
            }
            (None, Some(prefix)) => {
                let parsed: S3Prefix = prefix.parse().map_err(ApiError::BadRequest)?;
                if !checker.readable.allows_prefix(&parsed) {
                    return Err(ApiError::ForbiddenSource);
                }
                source = Some(parsed.to_string());
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "send either \"items\" or \"source\" (an s3:// prefix)".into(),
                ))
            }
        }
    } else {
        return Err(ApiError::BadRequest(
            "send application/x-ndjson (one item per line), application/json with items or \
             source, or multipart/form-data with file parts"
                .into(),
        ));
    }
    let items = if source.is_some() || !uploads.is_empty() {
        std::mem::take(&mut checker.items)
    } else {
        checker.finish()?
    };
    if uploads.is_empty() && source.is_none() {
        options::check_daily_quota(&state.db, caller.tenant_id(), &limits, items.len()).await?;
    }
    let webhook_urls = items
        .iter()
        .filter_map(|i| i.options.webhook_url.as_deref())
        .chain(batch_options.webhook_url.as_deref());
    if let Err(e) =
        options::check_webhooks(&state.config, &state.db, caller.tenant_id(), webhook_urls).await
    {
        delete_uploads(&state, &uploads).await;
        return Err(e);
    }
    let batch = NewBatch {
        id: Uuid::new_v4(),
        tenant_id: caller.tenant_id(),
        lane,
        options: batch_options,
        source,
        idempotency: idem_key.map(|key| Idempotency {
            key,
            request_hash: hash,
        }),
        traceparent,
    };
    let created = shared::db::batch::create_batch(&state.db, &batch, &items).await;
    match created {
        Ok(Created::New(id)) => {
            push_interactive(&state, id).await;
            tracing::info!(batch = %id, items = items.len(), lane = lane.as_str(), tenant = %caller.tenant_id(), "batch accepted");
            let view = shared::db::batch::get_batch(&state.db, Some(caller.tenant_id()), id)
                .await?
                .ok_or(ApiError::BatchNotFound)?;
            Ok(batch_created(view, false))
        }
        other => {
            delete_uploads(&state, &uploads).await;
            answer_created(&state, &caller, other?).await
        }
    }
}

fn too_many() -> ApiError {
    ApiError::BadRequest(format!(
        "a batch request holds at most {MAX_ITEMS} items; send several, or name an s3:// prefix"
    ))
}

async fn delete_uploads(state: &AppState, keys: &[String]) {
    for key in keys {
        if let Err(e) = state.objects.delete(key).await {
            tracing::warn!(error = %e, key, "cannot delete the upload of a refused batch");
        }
    }
}

/// Interactive batches skip the dispatcher: their jobs go to Redis at once (pipelined,
/// in chunks). If Redis is down the sweeper pushes them later.
pub async fn push_interactive(state: &AppState, batch_id: Uuid) {
    let started = std::time::Instant::now();
    let jobs = match shared::db::batch::batch_jobs_to_push(&state.db, batch_id).await {
        Ok(jobs) if !jobs.is_empty() => jobs,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the batch's jobs; the sweeper pushes them");
            return;
        }
    };
    let read_ms = started.elapsed().as_millis() as u64;
    match state.queue.push_many(&jobs).await {
        Ok(()) => {
            let pushed_ms = started.elapsed().as_millis() as u64;
            tracing::info!(batch = %batch_id, jobs = jobs.len(), read_ms, pushed_ms, "batch pushed to Redis");
            let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
            if let Err(e) = shared::db::mark_enqueued(&state.db, &ids).await {
                tracing::warn!(error = %e, "batch enqueued but not marked; the sweeper re-pushes (a no-op)");
            }
        }
        Err(e) => tracing::warn!(error = %e, "batch enqueue failed; the sweeper pushes it"),
    }
}

async fn answer_created(
    state: &AppState,
    caller: &Caller,
    prior: Created,
) -> Result<Response, ApiError> {
    match prior {
        Created::KeyReused => Err(ApiError::IdempotencyKeyReused),
        Created::New(id) | Created::Replayed(id) => {
            let view = shared::db::batch::get_batch(&state.db, Some(caller.tenant_id()), id)
                .await?
                .ok_or(ApiError::BatchNotFound)?;
            Ok(batch_created(view, true))
        }
    }
}

pub fn batch_created(view: BatchView, replayed: bool) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        [(
            header::LOCATION,
            HeaderValue::from_str(&format!("/v1/batches/{}", view.id)).expect("ascii"),
        )],
        Json(view),
    )
        .into_response();
    if replayed {
        response.headers_mut().insert(
            idempotency::REPLAYED.clone(),
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// A JSON or JSONL body, at most [`MAX_BODY_BYTES`]; being larger, it may take up to
/// four body timeouts.
async fn read_body(request: Request, state: &AppState) -> Result<bytes::Bytes, ApiError> {
    crate::jobs::read_body(request, MAX_BODY_BYTES, state.config.body_timeout() * 4).await
}

/// A file part of a multipart batch, spooled to disk (removed when dropped).
struct Spooled {
    name: String,
    ext: Option<String>,
    content_type: String,
    path: std::path::PathBuf,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Files {
    files: Vec<Spooled>,
    raw: RawOptions,
    hash: Vec<u8>,
}

/// Reads a multipart batch: every `file` part spooled to disk (each at most
/// `max_upload_bytes`, at most [`MAX_FILES`]), option fields as text.
async fn read_files(state: &AppState, mut form: Multipart) -> Result<Files, ApiError> {
    use tokio::io::AsyncWriteExt;
    let limit = state.config.max_upload_bytes;
    let stall = state.config.body_timeout();
    let mut raw = RawOptions::default();
    let mut files = Vec::new();
    let mut hash = Sha256::new();
    loop {
        let next = tokio::time::timeout(stall, form.next_field())
            .await
            .map_err(|_| ApiError::RequestTimeout)?
            .map_err(|e| {
                ApiError::BadRequest(format!("invalid multipart body: {}", e.body_text()))
            })?;
        let Some(mut field) = next else { break };
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            if files.len() == MAX_FILES {
                return Err(ApiError::BadRequest(format!(
                    "a multipart batch holds at most {MAX_FILES} files"
                )));
            }
            let file_name: String = field
                .file_name()
                .map(|n| {
                    n.chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_CUSTOM_ID)
                        .collect()
                })
                .filter(|n: &String| !n.is_empty())
                .unwrap_or_else(|| format!("file-{}", files.len() + 1));
            let ext = file_name
                .rsplit_once('.')
                .map(|(_, e)| e.to_ascii_lowercase())
                .filter(|e| {
                    !e.is_empty() && e.len() <= 5 && e.chars().all(|c| c.is_ascii_alphanumeric())
                });
            let content_type = field
                .content_type()
                .filter(|c| c.len() <= 128 && c.is_ascii())
                .unwrap_or("application/octet-stream")
                .to_string();
            let spool = Spooled {
                name: file_name.clone(),
                ext,
                content_type,
                path: std::env::temp_dir().join(format!("voxq-batch-{}", Uuid::new_v4().simple())),
            };
            let mut out = tokio::fs::File::create(&spool.path).await.map_err(|e| {
                tracing::warn!(error = %e, "cannot create an upload spool file");
                ApiError::Unavailable("upload storage")
            })?;
            hash.update(idempotency::hash_parts([
                b"file".as_slice(),
                file_name.as_bytes(),
            ]));
            let mut written = 0u64;
            loop {
                let chunk = tokio::time::timeout(stall, field.chunk())
                    .await
                    .map_err(|_| ApiError::RequestTimeout)?
                    .map_err(|e| {
                        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                            ApiError::TooLarge { limit }
                        } else {
                            ApiError::BadRequest(format!(
                                "invalid multipart body: {}",
                                e.body_text()
                            ))
                        }
                    })?;
                let Some(chunk) = chunk else { break };
                written += chunk.len() as u64;
                if written > limit {
                    return Err(ApiError::TooLarge { limit });
                }
                hash.update(&chunk);
                out.write_all(&chunk)
                    .await
                    .map_err(|_| ApiError::Unavailable("upload storage"))?;
            }
            out.flush()
                .await
                .map_err(|_| ApiError::Unavailable("upload storage"))?;
            if written == 0 {
                return Err(ApiError::BadRequest(format!(
                    "the file part '{file_name}' is empty"
                )));
            }
            files.push(spool);
        } else if options::FIELDS.contains(&name.as_str()) {
            let value = tokio::time::timeout(stall, field.text())
                .await
                .map_err(|_| ApiError::RequestTimeout)?
                .map_err(|e| {
                    ApiError::BadRequest(format!("invalid multipart body: {}", e.body_text()))
                })?;
            if value.len() > 1024 {
                return Err(ApiError::BadRequest(format!("field '{name}' is too long")));
            }
            hash.update(idempotency::hash_parts([name.as_bytes(), value.as_bytes()]));
            raw.set_text(&name, &value)?;
        } else {
            let name: String = name.chars().take(64).collect();
            return Err(ApiError::BadRequest(format!("unknown form field '{name}'")));
        }
    }
    if files.is_empty() {
        return Err(ApiError::BadRequest("the form has no file part".into()));
    }
    Ok(Files {
        files,
        raw,
        hash: hash.finalize().to_vec(),
    })
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::BatchNotFound)
}

/// `GET /v1/batches/{id}`.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}",
    tag = "batches",
    operation_id = "get_batch",
    summary = "A batch and its progress (scope jobs:read)",
    params(("id" = Uuid, Path, description = "The batch's id.")),
    responses(
        (status = 200, description = "The batch.", body = BatchView),
        (status = 404, description = "No such batch (`not-found`).", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let view = shared::db::batch::get_batch(&state.db, Some(caller.tenant_id()), parse_id(&id)?)
        .await?
        .ok_or(ApiError::BatchNotFound)?;
    Ok(Json(view).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 20 by default.
    #[serde(default)]
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

/// `GET /v1/batches`: the tenant's batches, newest first, keyset-paginated.
#[utoipa::path(
    get,
    path = "/v1/batches",
    tag = "batches",
    operation_id = "list_batches",
    summary = "The tenant's batches, newest first (scope jobs:read)",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of batches.", body = Page<BatchView>),
        (status = 400, description = "A bad limit or cursor (`bad-request`).", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let limit = page_limit(q.limit, 20, 100)?;
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let rows = shared::db::batch::list_batches(&state.db, caller.tenant_id(), after, limit).await?;
    Ok(page(&rows, limit, |b| (b.created_at, b.id)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    /// Resume after this `seq` (the last line a client got).
    #[serde(default)]
    after: Option<i32>,
    /// Most lines to send; all by default.
    #[serde(default)]
    #[param(minimum = 1)]
    limit: Option<i64>,
}

/// Items read from PostgreSQL per page of the results stream.
const RESULTS_PAGE: i64 = 500;

/// `GET /v1/batches/{id}/results`: JSONL, one line per item in submission order
/// (`seq`, `custom_id`, `job_id`, `version`, `status`, `result` or `error`), streamed page
/// by page so a 100,000-item batch never sits in memory. `after=<seq>` resumes after
/// the last line a client got; `limit` caps the lines.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/results",
    tag = "batches",
    operation_id = "get_batch_results",
    summary = "A batch's results as JSONL, in submission order (scope jobs:read)",
    params(("id" = Uuid, Path, description = "The batch's id."), ResultsQuery),
    responses(
        (status = 200, description = "One ItemResult JSON object per line.",
            content((Vec<ItemResult> = "application/x-ndjson"))),
        (status = 400, description = "A bad query parameter (`bad-request`).", body = ErrorBody),
        (status = 404, description = "No such batch (`not-found`).", body = ErrorBody),
    )
)]
pub async fn results(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ResultsQuery>,
) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let id = parse_id(&id)?;
    if !shared::db::batch::batch_exists(&state.db, Some(caller.tenant_id()), id).await? {
        return Err(ApiError::BatchNotFound);
    }
    let limit = q.limit.unwrap_or(i64::MAX);
    if limit < 1 {
        return Err(ApiError::BadRequest("limit must be at least 1".into()));
    }
    let db = state.db.clone();
    let stream = futures::stream::unfold(
        (q.after.unwrap_or(0), limit, false),
        move |(after, left, done)| {
            let db = db.clone();
            async move {
                if done || left == 0 {
                    return None;
                }
                let page = RESULTS_PAGE.min(left);
                match shared::db::batch::batch_results(&db, id, after, page).await {
                    Err(e) => {
                        // The status line is sent already: end the stream early; the
                        // client resumes with `after`.
                        tracing::warn!(error = %e, batch = %id, "results stream ended early");
                        None
                    }
                    Ok(rows) => {
                        if rows.is_empty() {
                            return None;
                        }
                        let last = rows.last().map_or(after, |r| r.seq);
                        let n = rows.len() as i64;
                        let mut out = Vec::with_capacity(rows.len() * 256);
                        for r in &rows {
                            if serde_json::to_writer(&mut out, r).is_ok() {
                                out.push(b'\n');
                            }
                        }
                        Some((
                            Ok::<_, std::io::Error>(bytes::Bytes::from(out)),
                            (last, left - n, n < page),
                        ))
                    }
                }
            }
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn control(
    state: AppState,
    caller: Caller,
    id: String,
    action: BatchAction,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
    let id = parse_id(&id)?;
    match shared::db::batch::control_batch(&state.db, caller.tenant_id(), id, action).await? {
        Control::NotFound => return Err(ApiError::BatchNotFound),
        Control::NotApplicable(status) => {
            return Err(ApiError::Conflict(format!(
                "the batch is {}; cannot {}",
                status.as_str(),
                match action {
                    BatchAction::Pause => "pause it",
                    BatchAction::Resume => "resume it",
                    BatchAction::Cancel => "cancel it",
                }
            )))
        }
        Control::Done => {}
    }
    if action == BatchAction::Resume {
        push_interactive(&state, id).await;
    }
    tracing::info!(batch = %id, ?action, "batch control");
    let view = shared::db::batch::get_batch(&state.db, Some(caller.tenant_id()), id)
        .await?
        .ok_or(ApiError::BatchNotFound)?;
    Ok(Json(view).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/batches/{id}/pause",
    tag = "batches",
    operation_id = "pause_batch",
    summary = "Pause a batch (scope jobs:write)",
    description = "Holds the batch's queued items until it is resumed.",
    params(("id" = Uuid, Path, description = "The batch's id.")),
    responses(
        (status = 200, description = "The batch now.", body = BatchView),
        (status = 404, description = "No such batch (`not-found`).", body = ErrorBody),
        (status = 409, description = "The batch's status does not allow it (`conflict`).", body = ErrorBody),
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    control(state, caller, id, BatchAction::Pause).await
}

#[utoipa::path(
    post,
    path = "/v1/batches/{id}/resume",
    tag = "batches",
    operation_id = "resume_batch",
    summary = "Resume a batch (scope jobs:write)",
    description = "Dispatches its held items again.",
    params(("id" = Uuid, Path, description = "The batch's id.")),
    responses(
        (status = 200, description = "The batch now.", body = BatchView),
        (status = 404, description = "No such batch (`not-found`).", body = ErrorBody),
        (status = 409, description = "The batch's status does not allow it (`conflict`).", body = ErrorBody),
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    control(state, caller, id, BatchAction::Resume).await
}

#[utoipa::path(
    post,
    path = "/v1/batches/{id}/cancel",
    tag = "batches",
    operation_id = "cancel_batch",
    summary = "Cancel a batch (scope jobs:write)",
    description = "Its items that have not started never will.",
    params(("id" = Uuid, Path, description = "The batch's id.")),
    responses(
        (status = 200, description = "The batch now.", body = BatchView),
        (status = 404, description = "No such batch (`not-found`).", body = ErrorBody),
        (status = 409, description = "The batch's status does not allow it (`conflict`).", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    control(state, caller, id, BatchAction::Cancel).await
}
