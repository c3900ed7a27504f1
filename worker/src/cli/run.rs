//! `voxq-worker run`: process jobs from the queue until SIGTERM.

use std::process::ExitCode;

use shared::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(voxq_worker::service::run(config))?;
    Ok(ExitCode::SUCCESS)
}
