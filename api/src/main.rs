//! `voxq-api`: the HTTP API (default command) and API-key administration.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shared::config::Config;

mod app;
mod auth;
mod error;
mod health;
mod jobs;

#[derive(Debug, Parser)]
#[command(name = "voxq-api", version, about = "voxq HTTP API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default): applies pending migrations and creates the bucket first.
    Serve,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key (and the tenant, if new). The key is printed once, alone on the last
    /// line of stdout; only its hash is stored.
    Create {
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes: jobs:write, jobs:read.
        #[arg(long, value_delimiter = ',', default_value = "jobs:write,jobs:read")]
        scopes: Vec<String>,
    },
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("voxq-api: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voxq-api: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => app::serve(config).await,
        Command::Keys {
            command: KeysCommand::Create { tenant, scopes },
        } => {
            for scope in &scopes {
                anyhow::ensure!(
                    shared::db::SCOPES.contains(&scope.as_str()),
                    "unknown scope '{scope}' (known: {})",
                    shared::db::SCOPES.join(", ")
                );
            }
            anyhow::ensure!(!tenant.trim().is_empty(), "--tenant must not be empty");
            let pool = shared::db::connect(&config)
                .await
                .context("connecting to PostgreSQL")?;
            shared::db::migrate(&pool).await?;
            let key = shared::db::create_api_key(&pool, tenant.trim(), &scopes).await?;
            println!("tenant: {} ({})", tenant.trim(), key.tenant_id);
            println!("key id: {}", key.id);
            println!("scopes: {}", scopes.join(","));
            println!("{}", key.secret);
            Ok(())
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOXQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
