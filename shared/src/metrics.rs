//! Prometheus metrics: each binary keeps its own registry (`voxq_` names) and serves
//! it in the text exposition format on `metrics_addr`, a listener of its own.

use std::net::SocketAddr;

pub use prometheus;
use prometheus::{Encoder, Registry, TextEncoder};

/// The registry in Prometheus's text format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "cannot encode the metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Seconds buckets for stage and request durations: 5 ms to 10 min.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Parses `metrics_addr`: `None` when empty.
pub fn listen_addr(setting: &str) -> Result<Option<SocketAddr>, String> {
    let s = setting.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("metrics_addr '{s}' is not an address like 0.0.0.0:9464"))
}
