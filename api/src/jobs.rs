//! `POST /v1/jobs` and `GET /v1/jobs/{id}`.

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::BytesMut;
use serde::Deserialize;
use serde_json::json;
use shared::db::NewJob;
use shared::domain::{AudioSource, JobOptions, Lane, ModelTier, SummaryMode, Task, RUBRICS};
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

fn parse_enum<T: serde::de::DeserializeOwned>(field: &str, value: &str) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::String(value.trim().to_string()))
        .map_err(|_| ApiError::BadRequest(format!("invalid {field} '{}'", value.trim())))
}

/// Accepts JSON `{"audio_url", "language"?, "lane"?}` or a multipart form with a `file`
/// part (stored in S3 by the API) and optional `language` and `lane` fields.
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
    let (source, raw) = if content_type.starts_with("multipart/form-data") {
        let form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?;
        upload(&state, &caller, id, form).await?
    } else if content_type.starts_with("application/json") {
        let Json(body) = Json::<CreateJson>::from_request(request, &state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {}", e.body_text())))?;
        let source = AudioSource::parse(&body.audio_url, state.config.fetch_allow_http)
            .map_err(ApiError::BadRequest)?;
        check_source_owner(&state, &caller, &source)?;
        let raw = RawOptions {
            lane: body.lane,
            language: body.language,
            tasks: body.tasks,
            summary: body.summary,
            summary_model: body.summary_model,
            rubric: body.rubric,
        };
        (body.audio_url, raw)
    } else {
        return Err(ApiError::BadRequest(
            "send application/json with audio_url, or multipart/form-data with a file part".into(),
        ));
    };
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
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
    {
        Some(r) if !RUBRICS.contains(&r.as_str()) => {
            return Err(ApiError::BadRequest(format!(
                "unknown rubric '{r}' (known: {})",
                RUBRICS.join(", ")
            )))
        }
        other => other,
    };
    let job = NewJob {
        id,
        tenant_id: caller.tenant_id(),
        lane,
        source,
        options: JobOptions {
            language,
            tasks: raw.tasks.unwrap_or_else(|| JobOptions::default().tasks),
            summary: raw.summary.unwrap_or_default(),
            summary_model: raw.summary_model.unwrap_or_default(),
            rubric,
        },
    };
    shared::db::insert_job(&state.db, &job).await?;
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

/// Reads the form, storing the `file` part in S3 under the tenant's upload prefix.
async fn upload(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    mut form: Multipart,
) -> Result<(String, RawOptions), ApiError> {
    let limit = state.config.max_upload_bytes;
    let mut raw = RawOptions::default();
    let mut stored = None;
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| multipart_error(e, limit))?
    {
        match field.name().unwrap_or("") {
            "file" => {
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
                    .unwrap_or("application/octet-stream")
                    .to_string();
                let mut data = BytesMut::new();
                while let Some(chunk) =
                    field.chunk().await.map_err(|e| multipart_error(e, limit))?
                {
                    if (data.len() + chunk.len()) as u64 > limit {
                        return Err(ApiError::TooLarge { limit });
                    }
                    data.extend_from_slice(&chunk);
                }
                if data.is_empty() {
                    return Err(ApiError::BadRequest("the file part is empty".into()));
                }
                let key = match ext {
                    Some(ext) => format!("uploads/{}/{id}.{ext}", caller.tenant_id()),
                    None => format!("uploads/{}/{id}", caller.tenant_id()),
                };
                state
                    .objects
                    .put(&key, data.freeze(), &content_type)
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "upload to S3 failed");
                        ApiError::Unavailable("object storage")
                    })?;
                stored = Some(format!("s3://{}/{key}", state.objects.bucket()));
            }
            name @ ("lane" | "language" | "tasks" | "summary" | "summary_model" | "rubric") => {
                let name = name.to_string();
                let value = field.text().await.map_err(|e| multipart_error(e, limit))?;
                match name.as_str() {
                    "lane" => raw.lane = Some(value),
                    "language" => raw.language = Some(value),
                    "rubric" => raw.rubric = Some(value),
                    "summary" => raw.summary = Some(parse_enum("summary", &value)?),
                    "summary_model" => raw.summary_model = Some(parse_enum("summary_model", &value)?),
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
                return Err(ApiError::BadRequest(format!(
                    "unknown form field '{other}' (file, language, lane, tasks, summary, summary_model, rubric)"
                )))
            }
        }
    }
    let source = stored.ok_or_else(|| ApiError::BadRequest("the form has no file part".into()))?;
    Ok((source, raw))
}

fn multipart_error(e: axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge { limit }
    } else {
        ApiError::BadRequest(format!("invalid multipart body: {}", e.body_text()))
    }
}

/// Uploads of other tenants are off limits, even by URL.
fn check_source_owner(
    state: &AppState,
    caller: &Caller,
    source: &AudioSource,
) -> Result<(), ApiError> {
    if let AudioSource::S3 { bucket, key } = source {
        let own = format!("uploads/{}/", caller.tenant_id());
        if bucket == state.objects.bucket() && key.starts_with("uploads/") && !key.starts_with(&own)
        {
            return Err(ApiError::ForbiddenSource(
                "that object belongs to another tenant".into(),
            ));
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
