//! Command-line interface of `voxq-worker`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod decode;
mod transcribe;

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
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOXQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Transcribe(args) => transcribe::run(args),
        Command::Decode(args) => decode::run(args),
    }
}

/// `$VOXQ_MODEL_DIR`, else `models/whisper-tiny.en`.
fn default_model_dir() -> PathBuf {
    std::env::var_os("VOXQ_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/whisper-tiny.en"))
}
