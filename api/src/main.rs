//! `voxq-api`: the HTTP API (axum) that will accept jobs and serve results.
//!
//! The service is not built yet; until it is, this binary says so and fails, rather than
//! pretending to serve. Local transcription works today: `voxq-worker transcribe`.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "voxq-api: the HTTP service is not implemented yet; use `voxq-worker transcribe` \
         for local transcription"
    );
    ExitCode::from(2)
}
