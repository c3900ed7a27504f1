//! Logging of both binaries: `VOXQ_LOG` is the filter (tracing `EnvFilter` syntax),
//! `VOXQ_LOG_FORMAT` the format: `text` (default) or `json` (one JSON object per line,
//! with the fields of the current span and its parents, such as a job's `trace_id`).
//! Logs go to stderr. Spans at `info` and above are also recorded for the OTLP exporter
//! ([`crate::otlp`]), whatever `VOXQ_LOG` says; they are sent only once it is started.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer, Registry};

/// Installs the global subscriber; `default_filter` applies without `VOXQ_LOG`.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOXQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let format = std::env::var("VOXQ_LOG_FORMAT").unwrap_or_default();
    let text = || fmt::layer().with_writer(std::io::stderr).boxed();
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format.trim() {
        "json" => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
        _ => text(),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(crate::otlp::OtlpLayer.with_filter(LevelFilter::INFO))
        .init();
    if !matches!(format.trim(), "json" | "text" | "") {
        tracing::warn!(
            format = format.trim(),
            "VOXQ_LOG_FORMAT is text or json; logging as text"
        );
    }
}
