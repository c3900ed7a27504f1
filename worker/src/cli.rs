//! Command-line interface of `voxq-worker`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod decode;
mod run;
mod transcribe;
mod vad;

#[derive(Debug, Parser)]
#[command(
    name = "voxq-worker",
    version,
    about = "voxq worker: transcribe voice messages"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Transcribe audio files or directories locally (no services needed).
    Transcribe(transcribe::Args),
    /// Decode and resample files only, reporting speed (for benchmarks).
    Decode(decode::Args),
    /// Find speech with Silero VAD (faster-whisper's model and rules), as JSONL.
    Vad(vad::Args),
    /// Process jobs from the Redis queue (configured by VOXQ_* variables) until SIGTERM.
    Run(run::Args),
}

pub fn init_tracing(service: bool) {
    // The service logs job progress by default; local mode prints only errors.
    shared::logging::init(if service {
        "info,symphonia=warn"
    } else {
        "error"
    });
}

impl Cli {
    pub fn is_service(&self) -> bool {
        matches!(self.command, Command::Run(_))
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Transcribe(args) => transcribe::run(args),
        Command::Decode(args) => decode::run(args),
        Command::Run(args) => run::run(args),
        Command::Vad(args) => vad::run(args),
    }
}

/// `$VOXQ_MODEL_DIR`, else `models/whisper-tiny.en`.
fn default_model_dir() -> PathBuf {
    std::env::var_os("VOXQ_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/whisper-tiny.en"))
}
