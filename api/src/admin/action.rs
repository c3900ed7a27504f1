//! The dashboard's actions, each a POST form whose CSRF token [`Posted`] checked. They
//! run the API's own code: retry and reprocess are `POST /v1/jobs/{id}/reprocess`
//! ([`crate::reprocess::one`]: a reprocess batch asking for the job's next result
//! version); pause and resume are the batch controls of `shared::db::batch`, with the
//! API's push of an interactive batch's jobs on resume ([`crate::batches::push_interactive`]).
//! Each answers with a redirect to the page that shows the effect.

use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;
use shared::db::batch::{BatchAction, Control};
use shared::domain::JobStatus;
use uuid::Uuid;

use super::session::{CsrfForm, Posted, TokenOnly};
use super::AdminError;
use crate::app::AppState;

fn job_id(id: &str) -> Result<Uuid, AdminError> {
    Uuid::parse_str(id).map_err(|_| AdminError::NotFound("job"))
}

/// Runs `POST /v1/jobs/{id}/reprocess` with `body` as `caller`; the batch it created.
async fn reprocess_job(
    state: AppState,
    posted: &Posted<impl Sized>,
    id: Uuid,
    body: serde_json::Value,
) -> Result<Option<Uuid>, AdminError> {
    let body = serde_json::from_value(body).map_err(|e| AdminError::BadForm(e.to_string()))?;
    let response = crate::reprocess::one(
        State(state),
        posted.admin.caller.clone(),
        Path(id.to_string()),
        Some(crate::extract::ApiJson(body)),
    )
    .await?;
    if response.status() != StatusCode::ACCEPTED {
        return Err(AdminError::Conflict(format!(
            "the reprocess was not accepted (HTTP {})",
            response.status().as_u16()
        )));
    }
    // `Location: /v1/batches/{id}`.
    Ok(response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit('/').next())
        .and_then(|v| Uuid::parse_str(v).ok()))
}

fn to_job(id: Uuid, notice: &str, batch: Option<Uuid>) -> Response {
    let batch = batch.map(|b| format!("&batch={b}")).unwrap_or_default();
    Redirect::to(&format!("/admin/jobs/{id}?notice={notice}{batch}")).into_response()
}

/// `POST /admin/jobs/{id}/retry`: runs a failed job again as it was (its options, its
/// lane), as its next result version.
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<TokenOnly>,
) -> Result<Response, AdminError> {
    let id = job_id(&id)?;
    let job = shared::db::get_job(&state.db, posted.admin.tenant_id(), id, None)
        .await?
        .ok_or(AdminError::NotFound("job"))?;
    if job.status != JobStatus::Failed {
        return Err(AdminError::Conflict(format!(
            "only a failed job can be retried; this one is {}",
            job.status.as_str()
        )));
    }
    let batch = reprocess_job(state, &posted, id, json!({ "lane": job.lane.as_str() })).await?;
    tracing::info!(job = %id, key = %posted.admin.key().id, "admin retried a job");
    Ok(to_job(id, "retried", batch))
}

#[derive(Debug, Deserialize)]
pub struct ReprocessForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    lane: Option<String>,
    /// Empty: the job's model unchanged.
    #[serde(default)]
    model: Option<String>,
}

impl CsrfForm for ReprocessForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /admin/jobs/{id}/reprocess`: a finished job's next result version, in the
/// lane chosen (bulk by default), with another model if one is chosen.
pub async fn reprocess(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<ReprocessForm>,
) -> Result<Response, AdminError> {
    let id = job_id(&id)?;
    // Only the key's own tenant's jobs, as for retry (an operator key reads every
    // tenant's costs, not their jobs).
    shared::db::get_job(&state.db, posted.admin.tenant_id(), id, None)
        .await?
        .ok_or(AdminError::NotFound("job"))?;
    let form = &posted.form;
    let mut body =
        json!({ "lane": form.lane.as_deref().filter(|l| !l.is_empty()).unwrap_or("bulk") });
    if let Some(model) = form.model.as_deref().filter(|m| !m.is_empty()) {
        body["options"] = json!({ "model": model });
    }
    let batch = reprocess_job(state, &posted, id, body).await?;
    tracing::info!(job = %id, key = %posted.admin.key().id, "admin reprocessed a job");
    Ok(to_job(id, "reprocessed", batch))
}

async fn control(
    state: AppState,
    posted: Posted<TokenOnly>,
    id: String,
    action: BatchAction,
) -> Result<Response, AdminError> {
    posted.admin.require("jobs:write")?;
    let id = Uuid::parse_str(&id).map_err(|_| AdminError::NotFound("batch"))?;
    let tenant = posted.admin.tenant_id();
    match shared::db::batch::control_batch(&state.db, tenant, id, action).await? {
        Control::NotFound => return Err(AdminError::NotFound("batch")),
        Control::NotApplicable(status) => {
            return Err(AdminError::Conflict(format!(
                "the batch is {}; cannot {}",
                status.as_str(),
                if action == BatchAction::Pause {
                    "pause it"
                } else {
                    "resume it"
                }
            )))
        }
        Control::Done => {}
    }
    if action == BatchAction::Resume {
        crate::batches::push_interactive(&state, id).await;
    }
    tracing::info!(batch = %id, ?action, key = %posted.admin.key().id, "admin batch control");
    let notice = if action == BatchAction::Pause {
        "paused"
    } else {
        "resumed"
    };
    Ok(Redirect::to(&format!("/admin/batches?notice={notice}")).into_response())
}

/// `POST /admin/batches/{id}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<TokenOnly>,
) -> Result<Response, AdminError> {
    control(state, posted, id, BatchAction::Pause).await
}

/// `POST /admin/batches/{id}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<TokenOnly>,
) -> Result<Response, AdminError> {
    control(state, posted, id, BatchAction::Resume).await
}
