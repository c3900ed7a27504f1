//! Router, shared state and start-up of the API server.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use shared::config::Config;
use shared::objects::ObjectStore;
use shared::purge::Purger;
use shared::queue::JobQueue;
use shared::trace::TraceContext;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tracing::Instrument;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::{AuthGuard, RateLimiter};
use crate::error::ApiError;
use crate::openapi::{ApiDoc, DOCS_PATH, DOCUMENT_PATH};
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
    pub in_flight: Arc<Semaphore>,
    /// Long-poll requests waiting for jobs to finish.
    pub waiters: Arc<Waiters>,
    /// Deletes jobs everywhere they live.
    pub purger: Purger,
    pub metrics: Arc<crate::metrics::ApiMetrics>,
}

/// The JSON API: every route registered with its OpenAPI path item (`routes!` reads the
/// handler's `#[utoipa::path]`), so none can be served undocumented, and the layers that
/// are its own: the body limits, and the bound on requests in flight, which the health
/// routes stay outside so probes answer under load. The admin pages share the bound but
/// not the document.
fn api(body_limit: usize, in_flight: Arc<Semaphore>) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::create, jobs::list))
        .routes(routes!(jobs::get, jobs::delete))
        .routes(routes!(jobs::versions))
        .routes(routes!(jobs::transcript))
        .routes(routes!(reprocess::one))
        .routes(routes!(reprocess::by_filter))
        .routes(routes!(batches::list))
        .routes(routes!(batches::get))
        .routes(routes!(batches::results))
        .routes(routes!(batches::pause))
        .routes(routes!(batches::resume))
        .routes(routes!(batches::cancel))
        .routes(routes!(openai::transcriptions))
        .routes(routes!(openai::models))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::tenant_secret))
        .routes(routes!(webhooks::all_deliveries))
        .routes(routes!(webhooks::delivery))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(webhooks::get, webhooks::delete))
        .routes(routes!(webhooks::rotate))
        .routes(routes!(webhooks::enable))
        .routes(routes!(webhooks::endpoint_deliveries))
        .layer(DefaultBodyLimit::max(body_limit))
        // A batch carries up to 100,000 items, or up to 1,000 uploaded files.
        .routes(
            routes!(batches::create).layer(DefaultBodyLimit::max(batches::MAX_UPLOAD_BODY_BYTES)),
        )
        .merge(OpenApiRouter::from(crate::admin::router()))
        .layer(middleware::from_fn_with_state(in_flight, limit_in_flight))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// The OpenAPI document of [`api`], completed by [`crate::openapi::finish`].
pub fn api_document() -> utoipa::openapi::OpenApi {
    let mut doc = api(0, Arc::new(Semaphore::new(1))).into_openapi();
    crate::openapi::finish(&mut doc);
    doc
}

/// `GET /openapi.json` (the document) and `GET /docs` (Swagger UI, every file embedded
/// in the binary: the page works without internet access).
fn docs(doc: utoipa::openapi::OpenApi) -> Router<AppState> {
    let config = utoipa_swagger_ui::Config::new([DOCUMENT_PATH])
        // The default validator is a remote service; the page fetches nothing elsewhere.
        .validator_url("none")
        .persist_authorization(true);
    utoipa_swagger_ui::SwaggerUi::new(DOCS_PATH)
        .url(DOCUMENT_PATH, doc)
        .config(config)
        .into()
}

pub fn router(state: AppState) -> Router {
    // Multipart bodies carry the audio: allow the upload limit plus room for the form.
    let body_limit = usize::try_from(state.config.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024);
    let (api, mut doc) = api(body_limit, state.in_flight.clone()).split_for_parts();
    crate::openapi::finish(&mut doc);
    api.merge(docs(doc))
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
    State(in_flight): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let _permit = in_flight
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
        in_flight: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
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
