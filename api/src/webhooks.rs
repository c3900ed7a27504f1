//! `/v1/webhooks`: a tenant's webhook endpoints, their secrets and deliveries, and the
//! secret that signs per-job `webhook_url` deliveries. The worker delivers
//! (`worker/src/service/webhooks.rs`); the outbox is `shared::db::webhooks`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use shared::db::webhooks::Rotated;
use shared::db::webhooks::{self as db, DeliveryFilter, DeliveryView, EndpointView, NewEndpoint};
use shared::webhooks::Event;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::jobs::{decode_cursor, page, page_limit};
use crate::openapi::{List, Page};
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// An `https://` URL whose host resolves to an address `webhook_allow*` allows.
    #[schema(max_length = 2048)]
    url: String,
    /// Event types to deliver; absent or empty: all.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Event>>)]
    events: Vec<String>,
    /// Whether `job.completed` payloads carry the result.
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    include_result: bool,
    #[serde(default)]
    #[schema(max_length = 512)]
    description: Option<String>,
}

/// A new endpoint, with its signing secret (shown this once).
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointCreated {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_` and base64: verify deliveries with it (Standard Webhooks).
    pub secret: String,
}

/// `POST /v1/webhooks`: registers an endpoint; the answer carries its `secret`, shown
/// this once.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    operation_id = "create_webhook",
    summary = "Register a webhook endpoint (scope jobs:write)",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "Registered; the secret is shown this once.", body = EndpointCreated),
        (status = 400, description = "A bad body, URL or event (`bad-request`, `invalid-webhook-url`, `webhook-forbidden-port`, `webhook-forbidden-address`, `webhook-unknown-host`, `field-too-long`).", body = ErrorBody),
        (status = 409, description = "The tenant has 20 endpoints already (`conflict`).", body = ErrorBody),
        (status = 413, description = "The body is too large (`body-too-large`).", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateEndpoint>,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
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
    let (endpoint, secret) = db::create_endpoint(&state.db, tenant, &new).await?;
    let answer = EndpointCreated { endpoint, secret };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `GET /v1/webhooks`.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    operation_id = "list_webhooks",
    summary = "The tenant's webhook endpoints (scope jobs:read)",
    responses((status = 200, description = "The endpoints.", body = List<EndpointView>))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require("jobs:read")?;
    let rows = db::list_endpoints(&state.db, caller.tenant_id()).await?;
    Ok(Json(List { data: rows }).into_response())
}

/// `GET /v1/webhooks/{id}`.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "get_webhook",
    summary = "A webhook endpoint (scope jobs:read)",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "The endpoint.", body = EndpointView),
        (status = 404, description = "No such endpoint (`not-found`).", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "delete_webhook",
    summary = "Delete a webhook endpoint and its deliveries (scope jobs:write)",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such endpoint (`not-found`).", body = ErrorBody),
    )
)]
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

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Seconds the old secret keeps signing beside the new one (default
    /// `webhook_rotation_grace_s`; 0 retires it at once; at most 7 days).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 604800)]
    grace_s: Option<u64>,
}

fn grace(state: &AppState, body: Option<ApiJson<RotateBody>>) -> Result<Duration, ApiError> {
    let s = body
        .and_then(|ApiJson(b)| b.grace_s)
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
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/rotate",
    tag = "webhooks",
    operation_id = "rotate_webhook_secret",
    summary = "Give an endpoint a new secret (scope jobs:write)",
    description = "The new secret is shown once; the old one keeps signing beside it for \
        the grace period, so receivers can switch without losing events.",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    request_body(content = Option<RotateBody>, description = "Optional."),
    responses(
        (status = 200, description = "The new secret.", body = Rotated),
        (status = 400, description = "A bad body or grace (`bad-request`).", body = ErrorBody),
        (status = 404, description = "No such endpoint (`not-found`).", body = ErrorBody),
        (status = 413, description = "The body is too large (`body-too-large`).", body = ErrorBody),
    )
)]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Option<ApiJson<RotateBody>>,
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
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/enable",
    tag = "webhooks",
    operation_id = "enable_webhook",
    summary = "Re-enable a disabled endpoint (scope jobs:write)",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "The endpoint.", body = EndpointView),
        (status = 404, description = "No such endpoint (`not-found`).", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/v1/webhooks/secret",
    tag = "webhooks",
    operation_id = "rotate_tenant_webhook_secret",
    summary = "Create or rotate the secret that signs per-job webhook_url deliveries (scope jobs:write)",
    request_body(content = Option<RotateBody>, description = "Optional."),
    responses(
        (status = 200, description = "The new secret, shown once.", body = Rotated),
        (status = 400, description = "A bad body or grace (`bad-request`).", body = ErrorBody),
        (status = 413, description = "The body is too large (`body-too-large`).", body = ErrorBody),
    )
)]
pub async fn tenant_secret(
    State(state): State<AppState>,
    caller: Caller,
    body: Option<ApiJson<RotateBody>>,
) -> Result<Response, ApiError> {
    caller.require("jobs:write")?;
    let grace = grace(&state, body)?;
    let rotated = db::rotate_tenant_secret(&state.db, caller.tenant_id(), grace).await?;
    Ok(Json(rotated).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    #[serde(default)]
    #[param(inline, value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// One job's deliveries.
    #[serde(default)]
    job_id: Option<Uuid>,
    /// Page size, 20 by default.
    #[serde(default)]
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

/// Where a delivery is: more attempts to come, delivered, or given up.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Describes `status` for the OpenAPI document.
pub(crate) enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
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
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    operation_id = "list_webhook_deliveries",
    summary = "An endpoint's deliveries, newest first, with their attempts (scope jobs:read)",
    params(("id" = Uuid, Path, description = "The endpoint's id."), DeliveriesQuery),
    responses(
        (status = 200, description = "A page of deliveries.", body = Page<DeliveryView>),
        (status = 400, description = "A bad filter, limit or cursor (`bad-request`).", body = ErrorBody),
        (status = 404, description = "No such endpoint (`not-found`).", body = ErrorBody),
    )
)]
pub async fn endpoint_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
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
#[utoipa::path(
    get,
    path = "/v1/webhooks/deliveries",
    tag = "webhooks",
    operation_id = "list_deliveries",
    summary = "All the tenant's deliveries, per-job webhook_url ones included (scope jobs:read)",
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "A page of deliveries.", body = Page<DeliveryView>),
        (status = 400, description = "A bad filter, limit or cursor (`bad-request`).", body = ErrorBody),
    )
)]
pub async fn all_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Response, ApiError> {
    deliveries(state, caller, None, q).await
}

/// `GET /v1/webhooks/deliveries/{id}`.
#[utoipa::path(
    get,
    path = "/v1/webhooks/deliveries/{id}",
    tag = "webhooks",
    operation_id = "get_delivery",
    summary = "A delivery and its attempts (scope jobs:read)",
    params(("id" = Uuid, Path, description = "The delivery's id.")),
    responses(
        (status = 200, description = "The delivery.", body = DeliveryView),
        (status = 404, description = "No such delivery (`not-found`).", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/v1/webhooks/deliveries/{id}/redeliver",
    tag = "webhooks",
    operation_id = "redeliver",
    summary = "Send a delivery again now, with a fresh retry schedule (scope jobs:write)",
    params(("id" = Uuid, Path, description = "The delivery's id.")),
    responses(
        (status = 202, description = "Queued again.", body = DeliveryView),
        (status = 404, description = "No such delivery (`not-found`).", body = ErrorBody),
    )
)]
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
