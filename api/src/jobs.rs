//! `POST /v1/jobs` and `GET /v1/jobs/{id}`.

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use shared::db::NewJob;
use shared::domain::{AudioSource, JobOptions, Lane, ModelTier, Rubric, SummaryMode, Task};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJson {
    audio_url: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    lane: Option<String>,
    #[serde(default)]
    tasks: Option<Vec<Task>>,
    #[serde(default)]
    summary: Option<SummaryMode>,
    #[serde(default)]
    summary_model: Option<ModelTier>,
    #[serde(default)]
    rubric: Option<String>,
}

/// Options given as text (multipart fields, or JSON converted to text).
#[derive(Debug, Default)]
struct RawOptions {
    lane: Option<String>,
    language: Option<String>,
    tasks: Option<Vec<Task>>,
    summary: Option<SummaryMode>,
    summary_model: Option<ModelTier>,
    rubric: Option<String>,
}

/// Largest JSON body of `POST /v1/jobs`: a URL and a few options.
const MAX_JSON_BYTES: usize = 64 * 1024;
/// Longest `audio_url`.
const MAX_URL_BYTES: usize = 2 * 1024;
/// Longest text field of a multipart form.
const MAX_FIELD_BYTES: usize = 1024;

fn parse_enum<T: serde::de::DeserializeOwned>(field: &str, value: &str) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::String(value.trim().to_string()))
        .map_err(|_| ApiError::BadRequest(format!("invalid {field} '{}'", value.trim())))
}

/// Accepts JSON `{"audio_url", options…}` or a multipart form with one `file` part
/// (stored in S3 by the API) and option fields. Every field is checked before anything
/// is written: an upload becomes an S3 object only once the whole form is valid, and is
/// deleted again if the job cannot be stored.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
    let id = Uuid::new_v4();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (source, uploaded) = if content_type.starts_with("multipart/form-data") {
        let form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?;
        let form = read_form(&state, form).await?;
        let options = validate_options(form.raw)?;
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
        let source = format!("s3://{}/{key}", state.objects.bucket());
        ((source, options), Some(key))
    } else if content_type.starts_with("application/json") {
        let body = read_body(request, &state).await?;
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
        };
        let options = validate_options(raw)?;
        let source = AudioSource::parse(&body.audio_url, state.config.fetch_allow_http)
            .map_err(ApiError::BadRequest)?;
        if let AudioSource::Url(url) = &source {
            let port = url.port_or_known_default().unwrap_or(443);
            if !state.config.fetch_port_allowed(port) {
                return Err(ApiError::ForbiddenPort(port));
            }
        }
        check_source(&state, &caller, &source).await?;
        ((body.audio_url, options), None)
    } else {
        return Err(ApiError::BadRequest(
            "send application/json with audio_url, or multipart/form-data with a file part".into(),
        ));
    };
    let (source, (lane, options)) = source;
    let job = NewJob {
        id,
        tenant_id: caller.tenant_id(),
        lane,
        source,
        options,
    };
    if let Err(e) = shared::db::insert_job(&state.db, &job).await {
        // Nothing may outlive a refused request: the upload goes too.
        if let Some(key) = uploaded {
            if let Err(de) = state.objects.delete(&key).await {
                tracing::warn!(error = %de, key, "cannot delete the upload of a refused job");
            }
        }
        return Err(e.into());
    }
    // The job is durable now. If Redis is down the enqueue sweeper pushes it later.
    match state.queue.push(id, lane, 0, None).await {
        Ok(()) => {
            if let Err(e) = shared::db::mark_enqueued(&state.db, &[id]).await {
                tracing::warn!(job = %id, error = %e, "job enqueued but not marked; the sweeper re-pushes it (a no-op)");
            }
        }
        Err(e) => {
            tracing::warn!(job = %id, error = %e, "enqueue failed; the sweeper will push the job")
        }
    }
    tracing::info!(job = %id, lane = lane.as_str(), tenant = %caller.tenant_id(), "job accepted");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/jobs/{id}"))],
        Json(json!({"id": id, "status": "queued"})),
    )
        .into_response())
}

/// A JSON body, at most [`MAX_JSON_BYTES`], read within the body timeout.
async fn read_body(request: Request, state: &AppState) -> Result<bytes::Bytes, ApiError> {
    let limit = MAX_JSON_BYTES;
    let read = axum::body::to_bytes(request.into_body(), limit);
    match tokio::time::timeout(state.config.body_timeout(), read).await {
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

/// Every option checked and resolved to its typed value.
fn validate_options(raw: RawOptions) -> Result<(Lane, JobOptions), ApiError> {
    let lane = match raw.lane.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Lane::Interactive,
        Some(s) => s.parse().map_err(ApiError::BadRequest)?,
    };
    let language = match raw.language.map(|l| l.trim().to_ascii_lowercase()) {
        Some(l) if l.is_empty() => None,
        Some(l) if l.len() > 8 || !l.chars().all(|c| c.is_ascii_alphabetic() || c == '-') => {
            return Err(ApiError::BadRequest(format!("invalid language '{l}'")))
        }
        other => other,
    };
    let rubric = match raw
        .rubric
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        None => None,
        Some(r) => Some(r.parse::<Rubric>().map_err(ApiError::BadRequest)?),
    };
    let tasks = raw.tasks.unwrap_or_else(|| JobOptions::default().tasks);
    Ok((
        lane,
        JobOptions {
            language,
            tasks,
            summary: raw.summary.unwrap_or_default(),
            summary_model: raw.summary_model.unwrap_or_default(),
            rubric,
        },
    ))
}

/// A multipart form read to the end: the file on local disk, the options as text.
struct Form {
    file: TempUpload,
    ext: Option<String>,
    content_type: String,
    raw: RawOptions,
}

/// An upload spooled to a local file, removed when dropped.
struct TempUpload(std::path::PathBuf);

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
async fn read_form(state: &AppState, mut form: Multipart) -> Result<Form, ApiError> {
    use tokio::io::AsyncWriteExt;
    let limit = state.config.max_upload_bytes;
    let stall = state.config.body_timeout();
    let mut raw = RawOptions::default();
    let mut file: Option<(TempUpload, Option<String>, String)> = None;
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
                while let Some(chunk) = timed(stall, field.chunk())
                    .await?
                    .map_err(|e| multipart_error(e, limit))?
                {
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
            name @ ("lane" | "language" | "tasks" | "summary" | "summary_model" | "rubric") => {
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
                match name.as_str() {
                    "lane" => raw.lane = Some(value),
                    "language" => raw.language = Some(value),
                    "rubric" => raw.rubric = Some(value),
                    "summary" => raw.summary = Some(parse_enum("summary", &value)?),
                    "summary_model" => {
                        raw.summary_model = Some(parse_enum("summary_model", &value)?)
                    }
                    _ => {
                        raw.tasks = Some(
                            value
                                .split(',')
                                .filter(|t| !t.trim().is_empty())
                                .map(|t| parse_enum("task", t))
                                .collect::<Result<_, _>>()?,
                        )
                    }
                }
            }
            other => {
                let other: String = other.chars().take(64).collect();
                return Err(ApiError::BadRequest(format!(
                    "unknown form field '{other}' (file, language, lane, tasks, summary, summary_model, rubric)"
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
    })
}

/// The static name of a known form field.
fn field_name(name: &str) -> &'static str {
    [
        "lane",
        "language",
        "tasks",
        "summary",
        "summary_model",
        "rubric",
    ]
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

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let job = shared::db::get_job(&state.db, caller.tenant_id(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(job).into_response())
}
