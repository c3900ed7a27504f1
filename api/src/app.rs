//! Router, shared state and start-up of the API server.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use shared::config::Config;
use shared::objects::ObjectStore;
use shared::purge::Purger;
use shared::queue::JobQueue;
use shared::trace::TraceContext;
use sqlx::PgPool;
use tracing::Instrument;

use crate::auth::{AuthGuard, RateLimiter};
use crate::error::ApiError;
use crate::wait::Waiters;
use crate::{batches, health, jobs, openai, reprocess, webhooks};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub queue: JobQueue,
    pub objects: ObjectStore,
    pub limiter: Arc<RateLimiter>,
    pub auth: Arc<AuthGuard>,
    /// Requests in flight in this process, bounded by `max_concurrent_requests`.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Long-poll requests waiting for jobs to finish.
    pub waiters: Arc<Waiters>,
    /// Deletes jobs everywhere they live.
    pub purger: Purger,
    pub metrics: Arc<crate::metrics::ApiMetrics>,
}

pub fn router(state: AppState) -> Router {
    // Multipart bodies carry the audio: allow the upload limit plus room for the form.
    let body_limit = usize::try_from(state.config.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024);
    Router::new()
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route("/v1/jobs/{id}/versions", get(jobs::versions))
        .route("/v1/jobs/{id}/transcript", get(jobs::transcript))
        .route("/v1/jobs/{id}/reprocess", post(reprocess::one))
        .route("/v1/reprocess", post(reprocess::by_filter))
        .route("/v1/batches", get(batches::list))
        .route("/v1/batches/{id}", get(batches::get))
        .route("/v1/batches/{id}/results", get(batches::results))
        .route("/v1/batches/{id}/pause", post(batches::pause))
        .route("/v1/batches/{id}/resume", post(batches::resume))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route("/v1/audio/transcriptions", post(openai::transcriptions))
        .route("/v1/models", get(openai::models))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/v1/webhooks/secret", post(webhooks::tenant_secret))
        .route("/v1/webhooks/deliveries", get(webhooks::all_deliveries))
        .route("/v1/webhooks/deliveries/{id}", get(webhooks::delivery))
        .route(
            "/v1/webhooks/deliveries/{id}/redeliver",
            post(webhooks::redeliver),
        )
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get).delete(webhooks::delete),
        )
        .route("/v1/webhooks/{id}/rotate", post(webhooks::rotate))
        .route("/v1/webhooks/{id}/enable", post(webhooks::enable))
        .route(
            "/v1/webhooks/{id}/deliveries",
            get(webhooks::endpoint_deliveries),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        // A batch carries up to 100,000 items, or up to 1,000 uploaded files.
        .route(
            "/v1/batches",
            post(batches::create).layer(DefaultBodyLimit::max(batches::MAX_UPLOAD_BODY_BYTES)),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_in_flight,
        ))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route_layer(middleware::from_fn(trace_request))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(middleware::from_fn(close_after_refused_body))
        .with_state(state)
}

/// Runs each request in a `request` span of its own trace context: the caller's
/// `traceparent` continued, or a new trace. The context is kept in the request's
/// extensions (jobs store it, so the worker's spans carry the same trace id) and
/// answered in a `traceparent` header.
async fn trace_request(mut request: Request, next: Next) -> Response {
    let incoming = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    let ctx = TraceContext::continue_from(incoming);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        trace_id = %ctx.trace_id,
        span_id = %ctx.span_id,
        parent_id = ctx.parent_id.as_deref().unwrap_or(""),
    );
    let header = HeaderValue::from_str(&ctx.traceparent()).ok();
    request.extensions_mut().insert(ctx);
    let mut response = next.run(request).instrument(span).await;
    if let Some(h) = header {
        response.headers_mut().insert("traceparent", h);
    }
    response
}

/// The `traceparent` a job created by this request records (its `request` span).
pub fn traceparent(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<TraceContext>()
        .map(TraceContext::traceparent)
}

/// Sheds load beyond `max_concurrent_requests` with 503 `overloaded`, so a flood of slow
/// clients cannot hold every connection, file descriptor and pool slot of the process.
async fn limit_in_flight(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let _permit = state
        .in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded)?;
    Ok(next.run(request).await)
}

/// A request refused before its body was read (bad key, rate limit, database down, …)
/// leaves unread bytes on the connection, so the server drops it after answering. Saying
/// `Connection: close` keeps a client from reusing that connection for its next request,
/// which would otherwise fail with an incomplete message.
async fn close_after_refused_body(request: Request, next: Next) -> Response {
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let mut response = next.run(request).await;
    let status = response.status();
    if has_body && (status.is_client_error() || status.is_server_error()) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Applies migrations, creates the bucket, then serves until SIGTERM or Ctrl-C, letting
/// requests in flight finish.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let _otlp = shared::otlp::start("voxq-api", &config.otlp_endpoint, &config.otlp_headers)?;
    let db = shared::db::connect(&config)
        .await
        .context("connecting to PostgreSQL")?;
    shared::db::migrate(&db).await?;
    let objects = ObjectStore::connect(&config).await;
    objects
        .ensure_bucket()
        .await
        .with_context(|| format!("creating bucket '{}'", config.s3_bucket))?;
    let conn = shared::queue::connect_lazy(&config)?;
    let queue = JobQueue::new(&config, conn.clone());
    let config_arc = Arc::new(config.clone());
    let purger = Purger::new(db.clone(), objects.clone(), conn, config_arc.clone());
    let state = AppState {
        purger,
        metrics: Arc::new(crate::metrics::ApiMetrics::new()),
        limiter: Arc::new(RateLimiter::new(
            config.rate_limit_per_s,
            config.rate_limit_burst,
        )),
        auth: Arc::new(AuthGuard::new(
            config.auth_failures_per_s,
            config.auth_failures_burst,
            // Key lookups may use half the pool; job queries keep the rest.
            (config.database_max_connections as usize / 2).max(1),
        )),
        in_flight: Arc::new(tokio::sync::Semaphore::new(
            config.max_concurrent_requests.max(1),
        )),
        waiters: Arc::new(Waiters::new(config.max_waiting_requests)),
        config: config_arc,
        db,
        queue,
        objects,
    };
    tokio::spawn(crate::wait::listen(state.db.clone(), state.waiters.clone()));
    if let Some(addr) =
        shared::metrics::listen_addr(&config.metrics_addr).map_err(anyhow::Error::msg)?
    {
        tokio::spawn(crate::metrics::serve(addr, state.clone()));
    }
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding {}", config.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "voxq-api listening");
    // Client addresses feed the failed-authentication limit.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            if let Err(e) = shared::shutdown::shutdown_signal().await {
                // Better to serve on without a graceful stop than to stop at once.
                tracing::error!(error = %e, "cannot listen for SIGTERM or Ctrl-C");
                std::future::pending::<()>().await;
            }
        })
        .await?;
    tracing::info!("voxq-api stopped");
    Ok(())
}
