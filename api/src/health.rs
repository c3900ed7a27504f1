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
    fn show<E: std::fmt::Display>(
        r: Result<Result<(), E>, tokio::time::error::Elapsed>,
    ) -> (bool, String) {
        match r {
            Ok(Ok(())) => (true, "ok".into()),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => (false, "timed out".into()),
        }
    }
    let checks = [
        ("postgres", show(db)),
        ("redis", show(redis)),
        ("s3", show(s3)),
    ];
    let ready = checks.iter().all(|(_, (ok, _))| *ok);
    let body: serde_json::Map<String, Value> = checks
        .into_iter()
        .map(|(name, (_, detail))| (name.to_string(), json!(detail)))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready, "checks": body})))
}
