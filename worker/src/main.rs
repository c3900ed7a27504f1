//! `voxq-worker`: the worker binary. `transcribe` runs the local engine over files.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(args.is_service());
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("voxq-worker: {e:#}");
            ExitCode::from(2)
        }
    }
}
