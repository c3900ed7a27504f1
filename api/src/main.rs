//! `voxq-api`: the HTTP API (default command) and API-key administration.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shared::config::Config;
use shared::domain::S3Prefix;

mod admin;
mod app;
mod auth;
mod batches;
mod error;
mod extract;
mod health;
mod idempotency;
mod jobs;
mod metrics;
mod openai;
mod openapi;
mod options;
mod reprocess;
mod wait;
mod webhooks;

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
    /// Print the OpenAPI document (as committed in docs/openapi.json, and served at
    /// /openapi.json); needs no configuration.
    Openapi,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage the S3 prefixes a tenant may submit audio from (besides its own uploads).
    Sources {
        #[command(subcommand)]
        command: SourcesCommand,
    },
    /// Set a tenant's limits (each flag left out is set to "no limit" / allowed).
    Limits {
        #[arg(long)]
        tenant: String,
        /// Jobs running (or handed to workers) at once.
        #[arg(long)]
        max_concurrent: Option<i32>,
        /// Jobs created per rolling 24 hours.
        #[arg(long)]
        max_jobs_per_day: Option<i32>,
        /// Refuse `summary_model: strong`.
        #[arg(long)]
        no_strong: bool,
        /// Refuse rubrics.
        #[arg(long)]
        no_rubrics: bool,
    },
    /// Override a tenant's retention (each flag left out: the service's
    /// `audio_retention_s` / `result_retention_s`; 0 keeps forever).
    Retention {
        #[arg(long)]
        tenant: String,
        /// Seconds after a job finished that its uploaded audio is deleted.
        #[arg(long)]
        audio_retention_s: Option<u32>,
        /// Seconds after a job finished that it is deleted with its results.
        #[arg(long)]
        result_retention_s: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
enum SourcesCommand {
    /// Let a tenant submit any object under an S3 prefix: `s3://bucket/prefix/`.
    Grant {
        #[arg(long)]
        tenant: String,
        prefix: S3Prefix,
    },
    /// Withdraw a grant; jobs not yet run from it then fail with `forbidden-source`.
    Revoke {
        #[arg(long)]
        tenant: String,
        prefix: S3Prefix,
    },
    /// List grants, of one tenant or of all: `tenant<TAB>s3://bucket/prefix/<TAB>created`.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key (and the tenant, if new). The key is printed once, alone on the last
    /// line of stdout; only its hash is stored.
    Create {
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes: jobs:write, jobs:read, admin (reprocess the tenant's
        /// jobs), operator (reprocess any tenant's).
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
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Openapi = command {
        print!("{}", openapi::document_json());
        return Ok(());
    }
    let config = Config::load()?;
    match command {
        Command::Openapi => unreachable!("answered above"),
        Command::Serve => app::serve(config).await,
        Command::Sources { command } => sources(&config, command).await,
        Command::Limits {
            tenant,
            max_concurrent,
            max_jobs_per_day,
            no_strong,
            no_rubrics,
        } => {
            let pool = shared::db::connect(&config)
                .await
                .context("connecting to PostgreSQL")?;
            shared::db::migrate(&pool).await?;
            let limits = shared::db::batch::TenantLimits {
                max_concurrent,
                max_jobs_per_day,
                allow_strong: !no_strong,
                allow_rubrics: !no_rubrics,
            };
            anyhow::ensure!(
                shared::db::batch::set_tenant_limits(&pool, tenant.trim(), &limits).await?,
                "unknown tenant '{}'",
                tenant.trim()
            );
            println!("limits of {}: {limits:?}", tenant.trim());
            Ok(())
        }
        Command::Retention {
            tenant,
            audio_retention_s,
            result_retention_s,
        } => {
            let pool = shared::db::connect(&config)
                .await
                .context("connecting to PostgreSQL")?;
            shared::db::migrate(&pool).await?;
            let (audio, result) = (
                audio_retention_s.map(i64::from),
                result_retention_s.map(i64::from),
            );
            anyhow::ensure!(
                shared::db::purge::set_tenant_retention(&pool, tenant.trim(), audio, result)
                    .await?,
                "unknown tenant '{}'",
                tenant.trim()
            );
            let show = |v: Option<i64>| {
                v.map_or("the service's setting".to_string(), |s| format!("{s} s"))
            };
            println!(
                "retention of {}: audio {}, results {}",
                tenant.trim(),
                show(audio),
                show(result)
            );
            Ok(())
        }
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

async fn sources(config: &Config, command: SourcesCommand) -> anyhow::Result<()> {
    let pool = shared::db::connect(config)
        .await
        .context("connecting to PostgreSQL")?;
    shared::db::migrate(&pool).await?;
    match command {
        SourcesCommand::Grant { tenant, prefix } => {
            shared::db::grant_source(&pool, tenant.trim(), &prefix).await?;
            println!("granted {prefix} to tenant {}", tenant.trim());
        }
        SourcesCommand::Revoke { tenant, prefix } => {
            if shared::db::revoke_source(&pool, tenant.trim(), &prefix).await? {
                println!("revoked {prefix} from tenant {}", tenant.trim());
            } else {
                anyhow::bail!("tenant {} has no grant of {prefix}", tenant.trim());
            }
        }
        SourcesCommand::List { tenant } => {
            for g in shared::db::list_sources(&pool, tenant.as_deref().map(str::trim)).await? {
                println!(
                    "{}\ts3://{}/{}\t{}",
                    g.tenant,
                    g.bucket,
                    g.prefix,
                    g.created_at.to_rfc3339()
                );
            }
        }
    }
    Ok(())
}

fn init_tracing() {
    shared::logging::init("info");
}
