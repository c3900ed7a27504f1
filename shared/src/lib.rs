//! voxq's core library, linked by the API and the worker: domain types, configuration,
//! and the database, queue, cache and object-storage code. Audio decoding
//! (`voxq-audio`) and model providers (`voxq-providers`) are crates of their own, so the
//! API links neither.

pub mod cache;
pub mod config;
pub mod db;
pub mod domain;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod objects;
pub mod otlp;
pub mod purge;
pub mod queue;
pub mod render;
pub mod shutdown;
pub mod trace;
pub mod webhooks;

/// An error and its causes as one readable line: `cannot read the audio: No such file`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
