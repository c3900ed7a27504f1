//! Admin reprocessing: `POST /v1/jobs/{id}/reprocess` and `POST /v1/reprocess` (by
//! filter). Each matched finished job gets its next result version, run with the new
//! options in the bulk lane (or the lane asked for); the reprocess is a batch with the
//! same progress, results and controls as any other. Earlier versions stay readable
//! (`GET /v1/jobs/{id}?version=N`), and the job answers its latest stored version until
//! the new one is stored.
//!
//! Scopes: `admin` reprocesses the caller's tenant's jobs; `operator` (the service
//! owner's) any tenant's, named by `filter.tenant`, or every tenant's.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::db::batch::{BatchView, JobFilter, Reprocess};
use shared::domain::{Flag, JobStatus, Lane};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Caller;
use crate::batches::{batch_created, push_interactive};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::jobs::{parse_flag, parse_status};
use crate::options::{self, RawOptions};

/// Which finished jobs to reprocess; every field narrows the match.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = ReprocessFilter)]
#[serde(deny_unknown_fields)]
pub struct FilterJson {
    /// Another tenant, by name (`operator` keys only); absent with an operator key:
    /// every tenant.
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    batch: Option<Uuid>,
    #[serde(default)]
    #[schema(value_type = Option<JobStatus>)]
    status: Option<String>,
    #[serde(default)]
    created_after: Option<DateTime<Utc>>,
    #[serde(default)]
    created_before: Option<DateTime<Utc>>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Flag>)]
    flag: Option<String>,
    /// Jobs whose latest result was made by this model.
    #[serde(default)]
    model: Option<String>,
}

/// `POST /v1/reprocess`: the jobs to match and the options their new versions use.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ReprocessRequest)]
#[serde(deny_unknown_fields)]
pub struct ReprocessJson {
    #[serde(default)]
    #[schema(value_type = Option<FilterJson>)]
    filter: FilterJson,
    /// The options to change (merged over each job's own).
    #[serde(default)]
    #[schema(value_type = Option<RawOptions>)]
    options: RawOptions,
    /// `bulk` by default.
    #[serde(default)]
    #[schema(value_type = Option<Lane>)]
    lane: Option<String>,
    /// Only count the matching jobs.
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v1/jobs/{id}/reprocess`: the options its new version uses.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = ReprocessJob)]
#[serde(deny_unknown_fields)]
pub struct OneJson {
    /// The options to change (merged over the job's own).
    #[serde(default)]
    #[schema(value_type = Option<RawOptions>)]
    options: RawOptions,
    /// `bulk` by default.
    #[serde(default)]
    #[schema(value_type = Option<Lane>)]
    lane: Option<String>,
}

/// The answer to a `dry_run`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReprocessCount {
    /// Finished jobs the filter matches.
    pub matched: i64,
    /// Always `true`.
    pub dry_run: bool,
}

/// The options a reprocess changes, checked, as a JSON object of just those keys (merged
/// over each job's own options), and the lane.
fn patch(
    state: &AppState,
    mut raw: RawOptions,
    lane: Option<String>,
) -> Result<(Lane, Value), ApiError> {
    if lane.is_some() {
        raw.lane = lane;
    }
    let (lane, checked) = options::validate(raw.clone(), Lane::Bulk, &state.config)?;
    let full = serde_json::to_value(&checked).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut out = Map::new();
    let given = [
        ("language", raw.language.is_some()),
        ("tasks", raw.tasks.is_some()),
        ("summary", raw.summary.is_some()),
        ("summary_model", raw.summary_model.is_some()),
        ("rubric", raw.rubric.is_some()),
        ("model", raw.model.is_some()),
        ("word_timestamps", raw.word_timestamps.is_some()),
        ("vad_filter", raw.vad_filter.is_some()),
        (
            "language_detection_segments",
            raw.language_detection_segments.is_some(),
        ),
        (
            "language_detection_threshold",
            raw.language_detection_threshold.is_some(),
        ),
    ];
    for (key, is_given) in given {
        if is_given {
            out.insert(key.into(), full.get(key).cloned().unwrap_or(Value::Null));
        }
    }
    // A null clears the option (back to its default).
    out.retain(|_, v| !v.is_null());
    // `false` is not serialised (it is the default), but given, it must override a job's
    // `true`.
    if let Some(w) = raw.word_timestamps {
        out.insert("word_timestamps".into(), Value::Bool(w));
    }
    Ok((lane, Value::Object(out)))
}

fn scope(caller: &Caller) -> Result<bool, ApiError> {
    if caller.0.has_scope("operator") {
        Ok(true)
    } else {
        caller.require("admin")?;
        Ok(false)
    }
}

/// `POST /v1/reprocess`.
#[utoipa::path(
    post,
    path = "/v1/reprocess",
    tag = "reprocess",
    operation_id = "reprocess_jobs",
    summary = "Reprocess the finished jobs a filter matches (scope admin or operator)",
    description = "Each matched job gets its next result version, run with the new options \
        in the bulk lane (or the lane asked for). The reprocess is a batch, with the same \
        progress, results and controls as any other.",
    request_body = ReprocessJson,
    responses(
        (status = 200, description = "With `dry_run`: how many jobs match.", body = ReprocessCount),
        (status = 202, description = "Started: the reprocess batch.", body = BatchView,
            headers(("Location" = String, description = "`/v1/batches/{id}`"))),
        (status = 400, description = "A bad filter or option, or an unknown tenant (`bad-request`).", body = ErrorBody),
        (status = 409, description = "No finished job matches (`conflict`).", body = ErrorBody),
        (status = 413, description = "The body is too large (`body-too-large`).", body = ErrorBody),
    )
)]
pub async fn by_filter(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ReprocessJson>,
) -> Result<Response, ApiError> {
    let operator = scope(&caller)?;
    let f = body.filter;
    let tenant_id = match (&f.tenant, operator) {
        (Some(name), true) => Some(
            shared::db::batch::tenant_by_name(&state.db, name)
                .await?
                .ok_or_else(|| ApiError::BadRequest(format!("unknown tenant '{name}'")))?,
        ),
        (None, true) => None,
        (Some(_), false) => {
            return Err(ApiError::Forbidden("operator"));
        }
        (None, false) => Some(caller.tenant_id()),
    };
    let filter = JobFilter {
        status: parse_status(f.status.as_deref())?,
        batch: f.batch,
        created_after: f.created_after,
        created_before: f.created_before,
        error_code: f.error_code,
        flag: parse_flag(f.flag.as_deref())?,
        model: f.model,
    };
    let (lane, options_patch) = patch(&state, body.options, body.lane)?;
    if body.dry_run {
        let n = shared::db::batch::count_reprocess(&state.db, tenant_id, &filter).await?;
        return Ok(Json(ReprocessCount {
            matched: n,
            dry_run: true,
        })
        .into_response());
    }
    start(
        &state,
        &caller,
        tenant_id,
        None,
        filter,
        options_patch,
        lane,
    )
    .await
}

/// `POST /v1/jobs/{id}/reprocess`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/reprocess",
    tag = "reprocess",
    operation_id = "reprocess_job",
    summary = "Reprocess one finished job (scope admin or operator)",
    params(("id" = Uuid, Path, description = "The job's id.")),
    request_body(content = Option<OneJson>, description = "Optional: without a body the job runs again with its own options."),
    responses(
        (status = 202, description = "Started: the reprocess batch.", body = BatchView,
            headers(("Location" = String, description = "`/v1/batches/{id}`"))),
        (status = 400, description = "A bad option (`bad-request`).", body = ErrorBody),
        (status = 404, description = "No such job (`not-found`).", body = ErrorBody),
        (status = 409, description = "The job has not finished (`conflict`).", body = ErrorBody),
        (status = 413, description = "The body is too large (`body-too-large`).", body = ErrorBody),
    )
)]
pub async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Option<ApiJson<OneJson>>,
) -> Result<Response, ApiError> {
    let operator = scope(&caller)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let body = body.map(|b| b.0).unwrap_or_default();
    let (lane, options_patch) = patch(&state, body.options, body.lane)?;
    let tenant_id = (!operator).then(|| caller.tenant_id());
    let response = start(
        &state,
        &caller,
        tenant_id,
        Some(id),
        JobFilter::default(),
        options_patch,
        lane,
    )
    .await;
    match response {
        Err(ApiError::Conflict(_)) => {
            // Nothing matched: no such job, or it has not finished.
            let exists = tenant_id.is_none()
                || shared::db::get_job(&state.db, caller.tenant_id(), id, None)
                    .await?
                    .is_some();
            if exists {
                Err(ApiError::Conflict(
                    "the job has not finished; reprocess it once it has".into(),
                ))
            } else {
                Err(ApiError::NotFound)
            }
        }
        other => other,
    }
}

async fn start(
    state: &AppState,
    caller: &Caller,
    tenant_id: Option<Uuid>,
    job: Option<Uuid>,
    filter: JobFilter,
    options_patch: Value,
    lane: Lane,
) -> Result<Response, ApiError> {
    let batch_id = Uuid::new_v4();
    let r = Reprocess {
        batch_id,
        owner: tenant_id.unwrap_or(caller.tenant_id()),
        tenant_id,
        job,
        filter,
        options_patch,
        lane,
    };
    let n = shared::db::batch::reprocess(&state.db, &r).await?;
    if n == 0 {
        return Err(ApiError::Conflict(
            "no finished job matches; nothing to reprocess".into(),
        ));
    }
    if lane == Lane::Interactive {
        push_interactive(state, batch_id).await;
    }
    tracing::info!(batch = %batch_id, jobs = n, "reprocess started");
    let view = shared::db::batch::get_batch(&state.db, None, batch_id)
        .await?
        .ok_or(ApiError::BatchNotFound)?;
    Ok(batch_created(view, false))
}
