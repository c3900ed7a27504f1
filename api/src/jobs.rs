//! `POST /v1/jobs`, `GET /v1/jobs` (listing), `GET /v1/jobs/{id}`, its versions and its
//! transcript as a file (`/transcript`).

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::db::batch::{Created, Idempotency, JobFilter};
use shared::db::NewJob;
use shared::domain::{
    AudioSource, Flag, JobStatus, Lane, ModelTier, Rubric, SummaryMode, Task, Transcript,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::idempotency;
use crate::openapi::{List, Page};
use crate::options::{self, RawOptions};

/// A job to fetch its audio from a URL: `s3://bucket/key` (the tenant's own uploads or a
/// granted prefix) or `https://…`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CreateJob)]
#[serde(deny_unknown_fields)]
struct CreateJson {
    /// `s3://bucket/key` or `https://host/path`.
    #[schema(max_length = 2048)]
    audio_url: String,
    /// Language code (`en`, `de`, …); detected when absent.
    #[serde(default)]
    language: Option<String>,
    /// `interactive` (the default for one job) or `bulk`.
    #[serde(default)]
    #[schema(value_type = Option<Lane>)]
    lane: Option<String>,
    /// Stages to run; default all.
    #[serde(default)]
    tasks: Option<Vec<Task>>,
    #[serde(default)]
    summary: Option<SummaryMode>,
    #[serde(default)]
    summary_model: Option<ModelTier>,
    #[serde(default)]
    #[schema(value_type = Option<Rubric>)]
    rubric: Option<String>,
    /// A configured transcription model (`GET /v1/models` lists them).
    #[serde(default)]
    model: Option<String>,
    /// Where this job's `job.completed` or `job.failed` event is POSTed, signed with
    /// the tenant's webhook secret (`POST /v1/webhooks/secret` makes it).
    #[serde(default)]
    #[schema(max_length = 2048)]
    webhook_url: Option<String>,
    /// Whether that event carries the result.
    #[serde(default)]
    webhook_result: Option<bool>,
    /// Each segment's words with their start, end and probability.
    #[serde(default)]
    word_timestamps: Option<bool>,
    /// Silero voice activity detection before transcription; by default on for audio
    /// longer than the worker's `vad_min_duration_s`.
    #[serde(default)]
    vad_filter: Option<bool>,
    /// 30-second windows the language may be detected on (1 to 10).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    language_detection_segments: Option<u32>,
    /// Probability above which a window's language is taken (0 to 1; default 0.5).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    language_detection_threshold: Option<f64>,
}

/// A job with its audio uploaded: one `file` part and the options as text fields.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the form for the OpenAPI document; `read_form` reads it.
pub(crate) struct JobForm {
    /// The audio (at most `max_upload_bytes`; 413 `file-too-large` beyond).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
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

/// The answer to an accepted job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobAccepted {
    pub id: Uuid,
    /// Always `queued` here.
    pub status: JobStatus,
}

impl JobAccepted {
    fn new(id: Uuid) -> Json<Self> {
        Json(Self {
            id,
            status: JobStatus::Queued,
        })
    }
}

/// Largest JSON body of `POST /v1/jobs`: a URL and a few options.
const MAX_JSON_BYTES: usize = 64 * 1024;
/// Longest `audio_url`.
const MAX_URL_BYTES: usize = 2 * 1024;
/// Longest text field of a multipart form.
const MAX_FIELD_BYTES: usize = 1024;

/// Accepts JSON `{"audio_url", options…}` or a multipart form with one `file` part
/// (stored in S3 by the API) and option fields. Every field is checked before anything
/// is written: an upload becomes an S3 object only once the whole form is valid, and is
/// deleted again if the job cannot be stored.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    operation_id = "create_job",
    summary = "Submit a job (scope jobs:write)",
    description = "JSON with an `audio_url`, or a multipart form with the audio as its `file` \
        part. Interactive jobs go to the queue at once; the answer names the job to poll \
        (`GET /v1/jobs/{id}?wait=N`).",
    params(
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "Retrying with the same key and request answers the same job \
                (`Idempotent-Replayed: true`); the same key with another request is 422."),
    ),
    request_body(content(
        (CreateJson = "application/json"),
        (JobForm = "multipart/form-data"),
    )),
    responses(
        (status = 202, description = "Accepted and queued.", body = JobAccepted,
            headers(
                ("Location" = String, description = "`/v1/jobs/{id}`"),
                ("Idempotent-Replayed" = Option<String>, description = "`true` when an earlier request with this Idempotency-Key made the job"),
            )),
        (status = 400, description = "A field is invalid (`bad-request`, `field-too-long`, `forbidden-port`, `webhook-*`, `invalid-webhook-url`, `webhook-secret-missing`).", body = ErrorBody),
        (status = 403, description = "A missing scope, a source the tenant may not read (`forbidden-source`), or an option it may not use (`strong-model-not-allowed`, `rubrics-not-allowed`).", body = ErrorBody),
        (status = 408, description = "The body stalled (`request-timeout`).", body = ErrorBody),
        (status = 413, description = "The upload or body is too large (`file-too-large`, `body-too-large`).", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with another request (`idempotency-key-reused`).", body = ErrorBody),
        (status = 429, description = "A rate limit, or a tenant limit (`daily-quota-exceeded`, `concurrency-limit`).", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
    let id = Uuid::new_v4();
    let traceparent = crate::app::traceparent(&request);
    let idem_key = idempotency::key(request.headers())?;
    let limits = shared::db::batch::tenant_limits(&state.db, caller.tenant_id()).await?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let source = if content_type.starts_with("multipart/form-data") {
        let form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?;
        let form = read_form(&state, form, &[]).await?;
        let options = options::validate(form.raw.clone(), Lane::Interactive, &state.config)?;
        options::check_allowed(&options.1, &limits)?;
        let idem = idem_key.map(|key| Idempotency {
            key,
            request_hash: form.hash.clone(),
        });
        // A retry of an upload that created its job already: answer it before storing
        // the audio a second time.
        if let Some(idem) = &idem {
            if let Some(prior) =
                shared::db::batch::find_idempotent_job(&state.db, caller.tenant_id(), idem).await?
            {
                return replayed(prior);
            }
        }
        let (source, key) = store_upload(&state, &caller, id, &form).await?;
        ((source, options), Some(key), idem)
    } else if content_type.starts_with("application/json") {
        let body = read_body(request, MAX_JSON_BYTES, state.config.body_timeout()).await?;
        let idem = idem_key.map(|key| Idempotency {
            key,
            request_hash: idempotency::hash_parts([b"json".as_slice(), &body]),
        });
        let body: CreateJson = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        if body.audio_url.len() > MAX_URL_BYTES {
            return Err(ApiError::FieldTooLong {
                field: "audio_url",
                limit: MAX_URL_BYTES,
            });
        }
        let raw = RawOptions {
            lane: body.lane,
            language: body.language,
            tasks: body.tasks,
            summary: body.summary,
            summary_model: body.summary_model,
            rubric: body.rubric,
            model: body.model,
            webhook_url: body.webhook_url,
            webhook_result: body.webhook_result,
            word_timestamps: body.word_timestamps,
            vad_filter: body.vad_filter,
            language_detection_segments: body.language_detection_segments,
            language_detection_threshold: body.language_detection_threshold,
        };
        let options = options::validate(raw, Lane::Interactive, &state.config)?;
        options::check_allowed(&options.1, &limits)?;
        let source = parse_url(&state, &body.audio_url)?;
        check_source(&state, &caller, &source).await?;
        ((body.audio_url, options), None, idem)
    } else {
        return Err(ApiError::BadRequest(
            "send application/json with audio_url, or multipart/form-data with a file part".into(),
        ));
    };
    let ((source, (lane, options)), uploaded, idem) = source;
    let job = NewJob {
        id,
        tenant_id: caller.tenant_id(),
        lane,
        source,
        options,
        traceparent,
    };
    if let Some(prior) = store_job(&state, &caller, &limits, &job, uploaded, idem).await? {
        return replayed(prior);
    }
    tracing::info!(job = %id, lane = lane.as_str(), tenant = %caller.tenant_id(), "job accepted");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/jobs/{id}"))],
        JobAccepted::new(id),
    )
        .into_response())
}

/// Stores a job (daily quota, webhook targets, concurrency limit, idempotency) and
/// pushes it if interactive. `Some` when nothing new was created (an idempotent
/// replay); an upload of a request that created nothing is deleted.
pub(crate) async fn store_job(
    state: &AppState,
    caller: &Caller,
    limits: &shared::db::batch::TenantLimits,
    job: &NewJob,
    uploaded: Option<String>,
    idem: Option<Idempotency>,
) -> Result<Option<Created>, ApiError> {
    let (id, lane) = (job.id, job.lane);
    let stored = async {
        options::check_daily_quota(&state.db, caller.tenant_id(), limits, 1).await?;
        options::check_webhooks(
            &state.config,
            &state.db,
            caller.tenant_id(),
            job.options.webhook_url.as_deref(),
        )
        .await?;
        if let Some(max) = limits.max_concurrent {
            let active =
                shared::db::batch::active_jobs(&state.db, caller.tenant_id(), lane).await?;
            if active >= i64::from(max) {
                return Err(ApiError::LimitExceeded {
                    code: "concurrency-limit",
                    message: format!(
                        "this tenant may have {max} jobs waiting or running in the {} lane; \
                         retry when one finishes",
                        lane.as_str()
                    ),
                });
            }
        }
        Ok(match &idem {
            Some(idem) => shared::db::batch::insert_job_idempotent(&state.db, job, idem).await?,
            None => {
                shared::db::insert_job(&state.db, job).await?;
                Created::New(id)
            }
        })
    }
    .await;
    let outcome = match stored {
        Ok(Created::New(_)) => None,
        other => Some(other),
    };
    if let Some(outcome) = outcome {
        // Nothing may outlive a request that created nothing: the upload goes too.
        if let Some(key) = uploaded {
            if let Err(de) = state.objects.delete(&key).await {
                tracing::warn!(error = %de, key, "cannot delete the upload of a refused job");
            }
        }
        return Ok(Some(outcome?));
    }
    // The job is durable now. A bulk job waits for the fair dispatcher (worker); an
    // interactive one goes to Redis at once, and if Redis is down the sweeper pushes it.
    let pushed = if lane == Lane::Bulk {
        Ok(None)
    } else {
        state.queue.push(id, lane, 0, None).await.map(Some)
    };
    match pushed {
        Ok(None) => {}
        Ok(Some(())) => {
            if let Err(e) = shared::db::mark_enqueued(&state.db, &[id]).await {
                tracing::warn!(job = %id, error = %e, "job enqueued but not marked; the sweeper re-pushes it (a no-op)");
            }
        }
        Err(e) => {
            tracing::warn!(job = %id, error = %e, "enqueue failed; the sweeper will push the job")
        }
    }
    Ok(None)
}

/// Writes a form's file to S3 as `uploads/<tenant>/<job>.<ext>`; the job's `s3://`
/// source and the key.
pub(crate) async fn store_upload(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    form: &Form,
) -> Result<(String, String), ApiError> {
    let key = match &form.ext {
        Some(ext) => format!("uploads/{}/{id}.{ext}", caller.tenant_id()),
        None => format!("uploads/{}/{id}", caller.tenant_id()),
    };
    state
        .objects
        .put_file(&key, form.file.path(), &form.content_type)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "upload to S3 failed");
            ApiError::Unavailable("object storage")
        })?;
    Ok((format!("s3://{}/{key}", state.objects.bucket()), key))
}

/// A whole body of at most `limit` bytes, read within `timeout` (413 `body-too-large`,
/// 408 `request-timeout`).
pub async fn read_body(
    request: Request,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, ApiError> {
    let read = axum::body::to_bytes(request.into_body(), limit);
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(ApiError::BodyTooLarge { limit })
            } else {
                Err(ApiError::BadRequest(format!("cannot read the body: {e}")))
            }
        }
    }
}

/// A multipart form read to the end: the file on local disk, the options as text.
pub(crate) struct Form {
    file: TempUpload,
    ext: Option<String>,
    content_type: String,
    pub raw: RawOptions,
    /// The fields a caller of [`read_form`] asked for besides the options, in order.
    pub extras: Vec<(String, String)>,
    /// SHA-256 of every field in order, for `Idempotency-Key`.
    hash: Vec<u8>,
}

/// An upload spooled to a local file, removed when dropped.
pub(crate) struct TempUpload(std::path::PathBuf);

impl TempUpload {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads the whole form: the single `file` part is streamed to a temporary file (never
/// held in memory), text fields are bounded, and a body that stalls for the body timeout
/// ends the request with 408.
pub(crate) async fn read_form(
    state: &AppState,
    mut form: Multipart,
    extra_fields: &[&'static str],
) -> Result<Form, ApiError> {
    use tokio::io::AsyncWriteExt;
    let limit = state.config.max_upload_bytes;
    let stall = state.config.body_timeout();
    let mut raw = RawOptions::default();
    let mut extras = Vec::new();
    let mut file: Option<(TempUpload, Option<String>, String)> = None;
    let mut hash = Sha256::new();
    while let Some(mut field) = timed(stall, form.next_field())
        .await?
        .map_err(|e| multipart_error(e, limit))?
    {
        match field.name().unwrap_or("") {
            "file" => {
                if file.is_some() {
                    return Err(ApiError::BadRequest(
                        "the form has more than one file part".into(),
                    ));
                }
                let ext = field
                    .file_name()
                    .and_then(|n| n.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()))
                    .filter(|e| {
                        !e.is_empty()
                            && e.len() <= 5
                            && e.chars().all(|c| c.is_ascii_alphanumeric())
                    });
                let content_type = field
                    .content_type()
                    .filter(|c| c.len() <= 128 && c.is_ascii())
                    .unwrap_or("application/octet-stream")
                    .to_string();
                let spool = TempUpload(
                    std::env::temp_dir().join(format!("voxq-upload-{}", Uuid::new_v4().simple())),
                );
                let mut out = tokio::fs::File::create(spool.path()).await.map_err(|e| {
                    tracing::warn!(error = %e, "cannot create an upload spool file");
                    ApiError::Unavailable("upload storage")
                })?;
                let mut written: u64 = 0;
                hash.update(b"\0file\0");
                hash.update(field.file_name().unwrap_or("").as_bytes());
                hash.update(b"\0");
                while let Some(chunk) = timed(stall, field.chunk())
                    .await?
                    .map_err(|e| multipart_error(e, limit))?
                {
                    hash.update(&chunk);
                    written += chunk.len() as u64;
                    if written > limit {
                        return Err(ApiError::TooLarge { limit });
                    }
                    out.write_all(&chunk).await.map_err(|e| {
                        tracing::warn!(error = %e, "cannot write an upload spool file");
                        ApiError::Unavailable("upload storage")
                    })?;
                }
                out.flush()
                    .await
                    .map_err(|_| ApiError::Unavailable("upload storage"))?;
                if written == 0 {
                    return Err(ApiError::BadRequest("the file part is empty".into()));
                }
                file = Some((spool, ext, content_type));
            }
            name if options::FIELDS.contains(&name) || extra_fields.contains(&name) => {
                let name = name.to_string();
                let mut value = Vec::new();
                while let Some(chunk) = timed(stall, field.chunk())
                    .await?
                    .map_err(|e| multipart_error(e, limit))?
                {
                    if value.len() + chunk.len() > MAX_FIELD_BYTES {
                        return Err(ApiError::FieldTooLong {
                            field: field_name(&name),
                            limit: MAX_FIELD_BYTES,
                        });
                    }
                    value.extend_from_slice(&chunk);
                }
                let value = String::from_utf8(value)
                    .map_err(|_| ApiError::BadRequest(format!("field '{name}' is not UTF-8")))?;
                hash.update(idempotency::hash_parts([name.as_bytes(), value.as_bytes()]));
                if extra_fields.contains(&name.as_str()) {
                    extras.push((name, value));
                } else {
                    raw.set_text(&name, &value)?;
                }
            }
            other => {
                let other: String = other.chars().take(64).collect();
                let known: Vec<&str> = std::iter::once("file")
                    .chain(options::FIELDS)
                    .chain(extra_fields.iter().copied())
                    .collect();
                return Err(ApiError::BadRequest(format!(
                    "unknown form field '{other}' ({})",
                    known.join(", ")
                )));
            }
        }
    }
    let (file, ext, content_type) =
        file.ok_or_else(|| ApiError::BadRequest("the form has no file part".into()))?;
    Ok(Form {
        file,
        ext,
        content_type,
        raw,
        extras,
        hash: hash.finalize().to_vec(),
    })
}

/// The static name of a known form field.
fn field_name(name: &str) -> &'static str {
    options::FIELDS
        .into_iter()
        .find(|n| *n == name)
        .unwrap_or("field")
}

/// Awaits a piece of the request body, or answers 408 when the client stalls.
async fn timed<T>(
    stall: std::time::Duration,
    f: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    tokio::time::timeout(stall, f)
        .await
        .map_err(|_| ApiError::RequestTimeout)
}

fn multipart_error(e: axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge { limit }
    } else {
        ApiError::BadRequest(format!("invalid multipart body: {}", e.body_text()))
    }
}

/// A tenant names only its own uploads and the S3 prefixes granted to it. The answer is
/// the same whether the object exists or not: nothing asks S3.
async fn check_source(
    state: &AppState,
    caller: &Caller,
    source: &AudioSource,
) -> Result<(), ApiError> {
    if let AudioSource::S3 { bucket, key } = source {
        let allowed = shared::db::may_read_source(
            &state.db,
            caller.tenant_id(),
            state.objects.bucket(),
            bucket,
            key,
        )
        .await?;
        if !allowed {
            return Err(ApiError::ForbiddenSource);
        }
    }
    Ok(())
}

/// Answers a create that an `Idempotency-Key` had already answered.
fn replayed(prior: Created) -> Result<Response, ApiError> {
    match prior {
        Created::KeyReused => Err(ApiError::IdempotencyKeyReused),
        Created::New(id) | Created::Replayed(id) => Ok((
            StatusCode::ACCEPTED,
            [
                (
                    header::LOCATION,
                    HeaderValue::from_str(&format!("/v1/jobs/{id}")).expect("ascii"),
                ),
                (
                    idempotency::REPLAYED.clone(),
                    HeaderValue::from_static("true"),
                ),
            ],
            JobAccepted::new(id),
        )
            .into_response()),
    }
}

/// An `audio_url` parsed, with its port checked.
pub fn parse_url(state: &AppState, url: &str) -> Result<AudioSource, ApiError> {
    if url.len() > MAX_URL_BYTES {
        return Err(ApiError::FieldTooLong {
            field: "audio_url",
            limit: MAX_URL_BYTES,
        });
    }
    let source =
        AudioSource::parse(url, state.config.fetch_allow_http).map_err(ApiError::BadRequest)?;
    if let AudioSource::Url(url) = &source {
        let port = url.port_or_known_default().unwrap_or(443);
        if !state.config.fetch_port_allowed(port) {
            return Err(ApiError::ForbiddenPort(port));
        }
    }
    Ok(source)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// A stored result version (`GET /v1/jobs/{id}/versions` lists them); the latest
    /// by default.
    #[serde(default)]
    version: Option<i32>,
    /// Long-poll: seconds to wait for the job to finish (at most 60, [`MAX_WAIT_S`]).
    #[serde(default)]
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u64>,
}

/// Longest long-poll.
pub const MAX_WAIT_S: u64 = 60;

/// `DELETE /v1/jobs/{id}`: the job, all its result versions, its uploaded audio, its
/// cache entries and queue tasks (`shared::purge`); 204, and 404 from then on. A run in
/// progress finishes unseen: its result is discarded.
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    operation_id = "delete_job",
    summary = "Delete a job and everything stored for it (scope jobs:write)",
    params(("id" = Uuid, Path, description = "The job's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such job (`not-found`).", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    match state.purger.delete_job(Some(caller.tenant_id()), id).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(ApiError::NotFound),
        Err(shared::purge::PurgeError::Db(e)) => Err(e.into()),
        Err(e @ shared::purge::PurgeError::Objects(_)) => {
            tracing::warn!(job = %id, error = %e, "job not deleted");
            Err(ApiError::Unavailable("object storage"))
        }
    }
}

/// `GET /v1/jobs/{id}[?version=N][&wait=S]`: the job, its status and its result.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    operation_id = "get_job",
    summary = "A job, its status and result (scope jobs:read)",
    description = "With `wait`, answers as soon as the job finishes, or after `wait` seconds \
        with its state then.",
    params(("id" = Uuid, Path, description = "The job's id."), GetQuery),
    responses(
        (status = 200, description = "The job.", body = shared::db::JobView),
        (status = 400, description = "A bad query parameter (`bad-request`).", body = ErrorBody),
        (status = 404, description = "No such job (`not-found`) or result version (`version-not-found`).", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_S {
        return Err(ApiError::BadRequest(format!(
            "wait is at most {MAX_WAIT_S} seconds"
        )));
    }
    // Long-poll: register first, then read, so a finish in between is not missed. Over
    // the bound of waiting requests, answer at once as without `wait`.
    let slot = (wait > 0)
        .then(|| state.waiters.slots.try_acquire().ok())
        .flatten();
    let woken = slot.as_ref().map(|_| state.waiters.register(id));
    let mut job = shared::db::get_job(&state.db, caller.tenant_id(), id, q.version)
        .await?
        .ok_or(ApiError::NotFound)?;
    if let Some(woken) = woken {
        if !job.status.is_final() {
            let finished = tokio::time::timeout(std::time::Duration::from_secs(wait), woken).await;
            if finished.is_err() {
                state.waiters.forget_closed(id);
            }
            job = shared::db::get_job(&state.db, caller.tenant_id(), id, q.version)
                .await?
                .ok_or(ApiError::NotFound)?;
        } else {
            drop(woken);
            state.waiters.forget_closed(id);
        }
    }
    drop(slot);
    if let (Some(v), None) = (q.version, job.version) {
        return Err(ApiError::VersionNotFound(v));
    }
    Ok(Json(job).into_response())
}

/// `GET /v1/jobs/{id}/versions`: the stored result versions, oldest first.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/versions",
    tag = "jobs",
    operation_id = "list_job_versions",
    summary = "A job's stored result versions, oldest first (scope jobs:read)",
    params(("id" = Uuid, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The versions.", body = List<shared::db::batch::VersionSummary>),
        (status = 404, description = "No such job (`not-found`).", body = ErrorBody),
    )
)]
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let versions = shared::db::batch::job_versions(&state.db, caller.tenant_id(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(List { data: versions }).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Jobs of this batch only.
    #[serde(default)]
    batch: Option<Uuid>,
    #[serde(default)]
    created_after: Option<DateTime<Utc>>,
    #[serde(default)]
    created_before: Option<DateTime<Utc>>,
    /// Failed jobs with this error code.
    #[serde(default)]
    error_code: Option<String>,
    /// Jobs whose latest result carries this quality flag.
    #[serde(default)]
    #[param(value_type = Option<Flag>)]
    flag: Option<String>,
    /// Page size, 100 by default.
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

/// Largest page of a listing.
pub const MAX_PAGE: i64 = 1_000;

/// `<created_at in µs since the epoch>.<id>`: the last row of a page. Opaque to clients.
/// The `limit` of a listing: `default` when absent, else 1 to `max`.
pub fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {max}")));
    }
    Ok(limit)
}

/// One page of a keyset listing, `{"data", "next_cursor"}`: a full page names its last
/// row (`key`: its `(created_at, id)`) as the cursor of the next.
pub fn page<T: serde::Serialize>(
    rows: &[T],
    limit: i64,
    key: impl Fn(&T) -> (DateTime<Utc>, Uuid),
) -> Response {
    let next = (rows.len() as i64 == limit)
        .then(|| {
            rows.last().map(|r| {
                let (at, id) = key(r);
                encode_cursor(at, id)
            })
        })
        .flatten();
    Json(json!({ "data": rows, "next_cursor": next })).into_response()
}

fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}.{}", at.timestamp_micros(), id.simple())
}

pub fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::BadRequest("invalid cursor".into());
    let (micros, id) = cursor.split_once('.').ok_or_else(bad)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// A job status filter (`?status=`), checked.
pub fn parse_status(status: Option<&str>) -> Result<Option<JobStatus>, ApiError> {
    status
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(ApiError::BadRequest)
}

/// A quality flag filter (`?flag=`), checked against the flags results carry.
pub fn parse_flag(flag: Option<&str>) -> Result<Option<String>, ApiError> {
    flag.map(|f| {
        shared::domain::Flag::ALL
            .into_iter()
            .find(|x| x.as_str() == f)
            .map(|x| x.as_str().to_string())
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "unknown flag '{}'",
                    f.chars().take(64).collect::<String>()
                ))
            })
    })
    .transpose()
}

/// `GET /v1/jobs`: the tenant's jobs, newest first, filtered, in pages of `limit`
/// (default 100, at most 1,000) with keyset pagination: `next_cursor` names the last
/// row, so jobs created meanwhile neither repeat nor shift a page.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    operation_id = "list_jobs",
    summary = "The tenant's jobs, newest first, filtered (scope jobs:read)",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs.", body = Page<shared::db::batch::JobSummary>),
        (status = 400, description = "A bad filter, limit or cursor (`bad-request`).", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let limit = page_limit(q.limit, 100, MAX_PAGE)?;
    let status = parse_status(q.status.as_deref())?;
    let flag = parse_flag(q.flag.as_deref())?;
    let filter = JobFilter {
        status,
        batch: q.batch,
        created_after: q.created_after,
        created_before: q.created_before,
        error_code: q.error_code,
        flag,
        model: None,
    };
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let rows =
        shared::db::batch::list_jobs(&state.db, caller.tenant_id(), &filter, after, limit).await?;
    Ok(page(&rows, limit, |r| (r.created_at, r.id)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TranscriptQuery {
    /// The file format, `txt` by default.
    #[serde(default)]
    #[param(inline, value_type = Option<TranscriptFormat>)]
    format: Option<String>,
    /// A stored result version; the latest by default.
    #[serde(default)]
    version: Option<i32>,
    /// `srt` and `vtt` cues: one per `segment` (the default) or one per `word` (for a
    /// job run with `word_timestamps`; segments without word times stay whole).
    #[serde(default)]
    #[param(inline)]
    granularity: Option<shared::render::Granularity>,
}

/// A transcript file format: the names `shared::render::Format` parses.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Describes `format` for the OpenAPI document.
pub(crate) enum TranscriptFormat {
    Txt,
    Srt,
    Vtt,
    Json,
}

/// `GET /v1/jobs/{id}/transcript[?format=txt|srt|vtt|json][&version=N]`: the transcript
/// of the latest (or the named) result version as a file to download, `txt` unless
/// another format is asked for. `shared::render` renders it, the same code that prints
/// `voxq-worker transcribe --format text|srt|vtt`. A job without a stored result
/// answers 409 `no-result`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/transcript",
    tag = "jobs",
    operation_id = "get_job_transcript",
    summary = "A job's transcript as a file: text, SRT, WebVTT or JSON (scope jobs:read)",
    params(("id" = Uuid, Path, description = "The job's id."), TranscriptQuery),
    responses(
        (status = 200, description = "The transcript, as an attachment.",
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"<id>.v<version>.<format>\"`")),
            content(
                (String = "text/plain"),
                (String = "application/x-subrip"),
                (String = "text/vtt"),
                (Transcript = "application/json"),
            )),
        (status = 400, description = "A bad query parameter (`bad-request`).", body = ErrorBody),
        (status = 404, description = "No such job (`not-found`) or result version (`version-not-found`).", body = ErrorBody),
        (status = 409, description = "The job has no result yet (`no-result`).", body = ErrorBody),
    )
)]
pub async fn transcript(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TranscriptQuery>,
) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let format = match q.format.as_deref() {
        None => shared::render::Format::Text,
        Some(f) => f.parse().map_err(ApiError::BadRequest)?,
    };
    let job = shared::db::get_job(&state.db, caller.tenant_id(), id, q.version)
        .await?
        .ok_or(ApiError::NotFound)?;
    if let (Some(v), None) = (q.version, job.version) {
        return Err(ApiError::VersionNotFound(v));
    }
    let (Some(version), Some(result)) = (job.version, job.result) else {
        return Err(ApiError::NoResult(job.status));
    };
    let body = shared::render::render_as(
        &result.transcript,
        format,
        q.granularity.unwrap_or_default(),
    );
    let disposition = format!(
        "attachment; filename=\"{}.v{version}.{}\"",
        job.id,
        format.as_str()
    );
    let headers = [
        (header::CONTENT_TYPE, format.media_type().to_string()),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    Ok((headers, body).into_response())
}
