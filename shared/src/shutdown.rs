//! The shutdown signal both services stop on: SIGTERM (what Docker, Kubernetes and
//! systemd send) or Ctrl-C (a terminal).

use tokio::signal::unix::{signal, SignalKind};

/// Resolves once SIGTERM or Ctrl-C arrives, logging which one. Fails only if the
/// handlers cannot be installed, so a caller learns it cannot be stopped gracefully
/// instead of waiting for a signal that will never be seen.
pub async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let which = tokio::select! {
        r = tokio::signal::ctrl_c() => r.map(|()| "Ctrl-C")?,
        _ = term.recv() => "SIGTERM",
    };
    tracing::info!(
        signal = which,
        "shutdown requested: finishing the work in flight"
    );
    Ok(())
}
