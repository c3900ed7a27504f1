//! `/v1/webhooks`: a tenant's webhook endpoints, their secrets and deliveries, and the
//! secret that signs per-job `webhook_url` deliveries. The worker delivers
//! (`worker/src/service/webhooks.rs`); the outbox is `shared::db::webhooks`.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use shared::db::webhooks::{self as db, DeliveryFilter, NewEndpoint};
use shared::webhooks::Event;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::{decode_cursor, page, page_limit};
use crate::options::{check_webhook_url, resolve_webhooks};

/// Most endpoints one tenant may register.
const MAX_ENDPOINTS: usize = 20;
/// Longest description.
const MAX_DESCRIPTION: usize = 512;
/// Longest grace period a rotation may ask for.
const MAX_GRACE_S: u64 = 7 * 24 * 3600;

fn endpoint_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::WebhookNotFound)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    url: String,
    /// Event types to deliver; absent or empty: all.
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    include_result: bool,
    #[serde(default)]
    description: Option<String>,
}

/// `POST /v1/webhooks`: registers an endpoint; the answer carries its `secret`, shown
/// this once.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateEndpoint>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let url = check_webhook_url(body.url.trim(), &state.config)?;
    resolve_webhooks(&state.config, [url.as_str()]).await?;
    let mut events = Vec::new();
    for e in &body.events {
        let event: Event = e.parse().map_err(ApiError::BadRequest)?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    if body
        .description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION)
    {
        return Err(ApiError::FieldTooLong {
            field: "description",
            limit: MAX_DESCRIPTION,
        });
    }
    let tenant = caller.tenant_id();
    if db::list_endpoints(&state.db, tenant).await?.len() >= MAX_ENDPOINTS {
        return Err(ApiError::Conflict(format!(
            "a tenant may register at most {MAX_ENDPOINTS} endpoints; delete one first"
        )));
    }
    let new = NewEndpoint {
        url,
        events,
        include_result: body.include_result,
        description: body.description,
    };
    let (view, secret) = db::create_endpoint(&state.db, tenant, &new).await?;
    let mut answer = serde_json::to_value(&view).unwrap_or_default();
    answer["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `GET /v1/webhooks`.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let rows = db::list_endpoints(&state.db, caller.tenant_id()).await?;
    Ok(Json(json!({ "data": rows })).into_response())
}

/// `GET /v1/webhooks/{id}`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let view = db::get_endpoint(&state.db, caller.tenant_id(), endpoint_id(&id)?)
        .await?
        .ok_or(ApiError::WebhookNotFound)?;
    Ok(Json(view).into_response())
}

/// `DELETE /v1/webhooks/{id}`: the endpoint and its deliveries; 204.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
    if db::delete_endpoint(&state.db, caller.tenant_id(), endpoint_id(&id)?).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::WebhookNotFound)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Seconds the old secret keeps signing beside the new one (default
    /// `webhook_rotation_grace_s`; 0 retires it at once).
    #[serde(default)]
    grace_s: Option<u64>,
}

fn grace(state: &AppState, body: Option<Json<RotateBody>>) -> Result<Duration, ApiError> {
    let s = body
        .and_then(|Json(b)| b.grace_s)
        .unwrap_or(state.config.webhook_rotation_grace_s);
    if s > MAX_GRACE_S {
        return Err(ApiError::BadRequest(format!(
            "grace_s must be at most {MAX_GRACE_S}"
        )));
    }
    Ok(Duration::from_secs(s))
}

/// `POST /v1/webhooks/{id}/rotate`: a new secret (shown once); the old one signs
/// beside it for the grace period, so receivers can switch without losing events.
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Option<Json<RotateBody>>,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
    let grace = grace(&state, body)?;
    let rotated = db::rotate_endpoint(&state.db, caller.tenant_id(), endpoint_id(&id)?, grace)
        .await?
        .ok_or(ApiError::WebhookNotFound)?;
    Ok(Json(rotated).into_response())
}

/// `POST /v1/webhooks/{id}/enable`: re-enables an endpoint that was disabled (410, or
/// failing for the whole retry schedule).
pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
    let (tenant, id) = (caller.tenant_id(), endpoint_id(&id)?);
    if !db::enable_endpoint(&state.db, tenant, id).await? {
        return Err(ApiError::WebhookNotFound);
    }
    let view = db::get_endpoint(&state.db, tenant, id)
        .await?
        .ok_or(ApiError::WebhookNotFound)?;
    Ok(Json(view).into_response())
}

/// `POST /v1/webhooks/secret`: creates (or rotates) the tenant's secret for per-job
/// `webhook_url`s; shown once.
pub async fn tenant_secret(
    State(state): State<AppState>,
    caller: Caller,
    body: Option<Json<RotateBody>>,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
    let grace = grace(&state, body)?;
    let rotated = db::rotate_tenant_secret(&state.db, caller.tenant_id(), grace).await?;
    Ok(Json(rotated).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    job_id: Option<Uuid>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
}

async fn deliveries(
    state: AppState,
    caller: Caller,
    endpoint_id: Option<Uuid>,
    q: DeliveriesQuery,
) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let limit = page_limit(q.limit, 20, 100)?;
    if let Some(s) = q.status.as_deref() {
        if !["pending", "delivered", "failed"].contains(&s) {
            return Err(ApiError::BadRequest(format!(
                "invalid status '{}' (pending, delivered, failed)",
                s.chars().take(32).collect::<String>()
            )));
        }
    }
    let filter = DeliveryFilter {
        endpoint_id,
        job_id: q.job_id,
        status: q.status,
        after: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    };
    let rows = db::list_deliveries(&state.db, caller.tenant_id(), &filter).await?;
    Ok(page(&rows, limit, |d| (d.created_at, d.id)))
}

/// `GET /v1/webhooks/{id}/deliveries`: an endpoint's deliveries, newest first, each with
/// its attempts (time, HTTP status, error, duration) and next attempt.
pub async fn endpoint_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    caller.require("jobs:read")?;
    db::get_endpoint(&state.db, caller.tenant_id(), id)
        .await?
        .ok_or(ApiError::WebhookNotFound)?;
    deliveries(state, caller, Some(id), q).await
}

/// `GET /v1/webhooks/deliveries`: all the tenant's deliveries (`job_id=` for one job's,
/// per-job `webhook_url` deliveries included).
pub async fn all_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, ApiError> {
    deliveries(state, caller, None, q).await
}

/// `GET /v1/webhooks/deliveries/{id}`.
pub async fn delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::DeliveryNotFound)?;
    let view = db::get_delivery(&state.db, caller.tenant_id(), id)
        .await?
        .ok_or(ApiError::DeliveryNotFound)?;
    Ok(Json(view).into_response())
}

/// `POST /v1/webhooks/deliveries/{id}/redeliver`: sends it again now (same
/// `webhook-id` and body), with a fresh retry schedule; 202.
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::DeliveryNotFound)?;
    if !db::redeliver(&state.db, caller.tenant_id(), id).await? {
        return Err(ApiError::DeliveryNotFound);
    }
    let view = db::get_delivery(&state.db, caller.tenant_id(), id)
        .await?
        .ok_or(ApiError::DeliveryNotFound)?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}
