//! `/healthz` (the process answers) and `/readyz` (PostgreSQL, Redis and S3 answer).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    summary = "The process answers",
    responses((status = 200, description = "Always `ok`.", body = String, content_type = "text/plain"))
)]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Whether each dependency answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Every check is `ok`.
    pub ready: bool,
    pub checks: Checks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    pub postgres: Check,
    pub redis: Check,
    pub s3: Check,
}

/// A dependency's state; why it failed goes to the log only.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Ok,
    Down,
    Timeout,
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    summary = "PostgreSQL, Redis and S3 answer (each within 2 s)",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "A dependency is down or slow.", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    const LIMIT: Duration = Duration::from_secs(2);
    let (db, redis, s3) = tokio::join!(
        tokio::time::timeout(LIMIT, shared::db::ping(&state.db)),
        tokio::time::timeout(LIMIT, state.queue.ping()),
        tokio::time::timeout(LIMIT, state.objects.ping()),
    );
    // The answer names the dependency and its state only; the cause (addresses, raw
    // errors) goes to the log.
    fn show<E: std::fmt::Display>(
        name: &'static str,
        r: Result<Result<(), E>, tokio::time::error::Elapsed>,
    ) -> Check {
        match r {
            Ok(Ok(())) => Check::Ok,
            Ok(Err(e)) => {
                tracing::warn!(dependency = name, error = %e, "readiness check failed");
                Check::Down
            }
            Err(_) => {
                tracing::warn!(dependency = name, "readiness check timed out");
                Check::Timeout
            }
        }
    }
    let checks = Checks {
        postgres: show("postgres", db),
        redis: show("redis", redis),
        s3: show("s3", s3),
    };
    let ready = [checks.postgres, checks.redis, checks.s3]
        .iter()
        .all(|c| matches!(c, Check::Ok));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { ready, checks }))
}
