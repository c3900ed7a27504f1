//! The API's Prometheus metrics, served on `metrics_addr` (`GET /metrics`): requests by
//! route, method and status with their durations, and levels read at scrape time:
//! tasks waiting in each Redis lane, open jobs by status and lane, the bulk backlog per
//! tenant, pending webhook deliveries.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use shared::domain::Lane;
use shared::metrics::prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::app::AppState;

pub struct ApiMetrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    queue_waiting: IntGaugeVec,
    open_jobs: IntGaugeVec,
    bulk_backlog: IntGaugeVec,
    webhooks_pending: IntGauge,
}

impl ApiMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "voxq_http_requests_total",
                "HTTP requests by route, method and status.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "voxq_http_request_duration_seconds",
                "HTTP request durations by route and method (long-polls included).",
            )
            .buckets(shared::metrics::SECONDS_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let queue_waiting = gauge(
            "voxq_queue_waiting_tasks",
            "Tasks waiting in each Redis lane (due or scheduled), not yet claimed.",
            &["lane"],
        );
        let open_jobs = gauge(
            "voxq_jobs_open",
            "Jobs queued or processing, by status and lane.",
            &["status", "lane"],
        );
        let bulk_backlog = gauge(
            "voxq_bulk_backlog_jobs",
            "Bulk jobs waiting in PostgreSQL for the fair dispatcher, by tenant.",
            &["tenant"],
        );
        let webhooks_pending = IntGauge::new(
            "voxq_webhook_deliveries_pending",
            "Webhook deliveries still to be made (first attempts and retries).",
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn shared::metrics::prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(queue_waiting.clone()),
            Box::new(open_jobs.clone()),
            Box::new(bulk_backlog.clone()),
            Box::new(webhooks_pending.clone()),
        ] {
            registry.register(m).expect("registered once");
        }
        Self {
            registry,
            requests,
            duration,
            queue_waiting,
            open_jobs,
            bulk_backlog,
            webhooks_pending,
        }
    }

    /// Reads the levels, then renders everything.
    async fn scrape(&self, state: &AppState) -> String {
        for lane in Lane::ALL {
            match state.queue.waiting(&state.config, lane).await {
                Ok(n) => self
                    .queue_waiting
                    .with_label_values(&[lane.as_str()])
                    .set(n as i64),
                Err(e) => tracing::debug!(error = %e, "queue depth not read"),
            }
        }
        match shared::db::levels(&state.db).await {
            Ok(levels) => {
                self.open_jobs.reset();
                for (status, lane, n) in levels.open_jobs {
                    self.open_jobs.with_label_values(&[&status, &lane]).set(n);
                }
                self.bulk_backlog.reset();
                for (tenant, n) in levels.bulk_backlog {
                    self.bulk_backlog.with_label_values(&[&tenant]).set(n);
                }
                self.webhooks_pending.set(levels.webhooks_pending);
            }
            Err(e) => tracing::debug!(error = %e, "levels not read"),
        }
        shared::metrics::render(&self.registry)
    }
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts and times every request by its route template (`/v1/jobs/{id}`, never the
/// id: bounded label values).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let m = &state.metrics;
    m.duration
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    response
}

/// Serves `GET /metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, state: AppState) {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move {
                (
                    [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                    state.metrics.scrape(&state).await,
                )
            }),
        )
        .with_state(state);
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            if let Ok(a) = listener.local_addr() {
                tracing::info!(addr = %a, "metrics listening");
            }
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "metrics listener stopped");
            }
        }
        Err(e) => tracing::warn!(%addr, error = %e, "cannot bind the metrics listener"),
    }
}
