//! `/healthz` (the process answers) and `/readyz` (PostgreSQL, Redis and S3 answer).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::app::AppState;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
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
    ) -> (&'static str, (bool, &'static str)) {
        let state = match r {
            Ok(Ok(())) => (true, "ok"),
            Ok(Err(e)) => {
                tracing::warn!(dependency = name, error = %e, "readiness check failed");
                (false, "down")
            }
            Err(_) => {
                tracing::warn!(dependency = name, "readiness check timed out");
                (false, "timeout")
            }
        };
        (name, state)
    }
    let checks = [show("postgres", db), show("redis", redis), show("s3", s3)];
    let ready = checks.iter().all(|(_, (ok, _))| *ok);
    let body: serde_json::Map<String, Value> = checks
        .into_iter()
        .map(|(name, (_, state))| (name.to_string(), json!(state)))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready, "checks": body})))
}
