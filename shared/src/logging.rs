//! Logging of both binaries: `VOXQ_LOG` is the filter (tracing `EnvFilter` syntax),
//! `VOXQ_LOG_FORMAT` the format: `text` (default) or `json` (one JSON object per line,
//! with the fields of the current span and its parents, such as a job's `trace_id`).
//! Logs go to stderr.

/// Installs the global subscriber; `default_filter` applies without `VOXQ_LOG`.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOXQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("VOXQ_LOG_FORMAT").as_deref().map(str::trim) {
        Ok("json") => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        Ok("text") | Ok("") | Err(_) => builder.init(),
        Ok(other) => {
            builder.init();
            tracing::warn!(
                format = other,
                "VOXQ_LOG_FORMAT is text or json; logging as text"
            );
        }
    }
}
