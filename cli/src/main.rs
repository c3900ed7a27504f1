//! `voxq`: the command-line client of the voxq HTTP API, for backfills (submit a
//! directory, an S3 prefix or a JSONL manifest as batches, watch them, fetch their
//! results) and admin reprocessing. It speaks the public API only.

mod api;
mod command;
mod idempotency;
mod manifest;
mod options;
mod results;
mod submit;
mod walk;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api::{Api, ApiFailure};
use crate::options::JobOptionArgs;

/// Exit status when everything asked for was done.
const EXIT_OK: u8 = 0;
/// Exit status for a local problem: an input that cannot be read or is invalid, an
/// output that cannot be written.
const EXIT_LOCAL: u8 = 1;
/// Exit status when the API could not be reached or refused the request.
const EXIT_API: u8 = 3;

const EXIT_CODES: &str = "\
Exit codes:
  0  done (for `watch`: every batch finished, even if some items failed; the failures
     are printed by code)
  1  local error: an input that cannot be read or is invalid, an output that cannot be
     written
  2  invalid command line
  3  the API could not be reached or refused the request (its error code and message
     are printed; e.g. unauthorized, missing-scope, not-found, invalid-items)

Batch ids, results and counts go to stdout; progress and diagnostics to stderr.";

#[derive(Parser, Debug)]
#[command(name = "voxq", version, about = "Client of the voxq API: batches, results, reprocessing", after_help = EXIT_CODES)]
struct Cli {
    /// Base URL of the voxq API
    #[arg(
        long,
        global = true,
        env = "VOXQ_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// API key (vxq_...)
    #[arg(long, global = true, env = "VOXQ_API_KEY", hide_env_values = true)]
    key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit a directory of audio files, an s3:// prefix or a JSONL manifest as batches;
    /// prints one batch id per line
    #[command(after_help = EXIT_CODES)]
    Submit(submit::SubmitArgs),
    /// Follow batches until they finish, with a progress bar
    #[command(after_help = EXIT_CODES)]
    Watch {
        /// Batch ids
        #[arg(required = true)]
        batch_ids: Vec<uuid::Uuid>,
    },
    /// Download a batch's results (resumes if the connection breaks)
    #[command(after_help = EXIT_CODES)]
    Results(results::ResultsArgs),
    /// List batches, newest first
    #[command(after_help = EXIT_CODES)]
    Batches {
        /// How many batches to list
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Continue from the `next_cursor` of an earlier listing
        #[arg(long)]
        cursor: Option<String>,
        /// Print the API's JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Pause a batch: its queued items wait until it is resumed
    #[command(after_help = EXIT_CODES)]
    Pause { batch_id: uuid::Uuid },
    /// Resume a paused batch
    #[command(after_help = EXIT_CODES)]
    Resume { batch_id: uuid::Uuid },
    /// Cancel a batch: items that have not run never will
    #[command(after_help = EXIT_CODES)]
    Cancel { batch_id: uuid::Uuid },
    /// Run jobs again (admin scope): one job, or every job a filter matches
    #[command(after_help = EXIT_CODES)]
    Reprocess(ReprocessArgs),
    /// Show a job (JSON), one of its result versions, or the list of its versions
    #[command(after_help = EXIT_CODES)]
    Job {
        job_id: uuid::Uuid,
        /// Result version to show (default: the latest)
        #[arg(long, conflicts_with = "versions")]
        version: Option<u32>,
        /// List the job's result versions instead
        #[arg(long)]
        versions: bool,
    },
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true)
    .args(["job", "filter_batch", "filter_status", "created_after", "created_before",
           "error_code", "flag", "model_filter", "tenant"])))]
pub(crate) struct ReprocessArgs {
    /// Reprocess this one job
    #[arg(long, conflicts_with_all = ["filter_batch", "filter_status", "created_after",
        "created_before", "error_code", "flag", "model_filter", "tenant", "dry_run"])]
    job: Option<uuid::Uuid>,
    /// Filter: jobs of this batch
    #[arg(long)]
    filter_batch: Option<uuid::Uuid>,
    /// Filter: jobs in this status (e.g. failed)
    #[arg(long)]
    filter_status: Option<String>,
    /// Filter: jobs created at or after this time (RFC 3339)
    #[arg(long)]
    created_after: Option<String>,
    /// Filter: jobs created before this time (RFC 3339)
    #[arg(long)]
    created_before: Option<String>,
    /// Filter: jobs that failed with this error code
    #[arg(long)]
    error_code: Option<String>,
    /// Filter: jobs whose quality flags include this one
    #[arg(long)]
    flag: Option<String>,
    /// Filter: jobs whose current result came from this model
    #[arg(long)]
    model_filter: Option<String>,
    /// Filter: jobs of this tenant
    #[arg(long)]
    tenant: Option<String>,
    /// Only count the matching jobs
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    options: JobOptionArgs,
    /// Lane of the new runs (interactive or bulk)
    #[arg(long)]
    lane: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(key) = cli.key.clone().filter(|k| !k.is_empty()) else {
        eprintln!("error: no API key: pass --key or set VOXQ_API_KEY");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_LOCAL);
        }
    };
    let outcome = runtime.block_on(async {
        let api = Api::new(&cli.url, &key)?;
        run(api, cli.command).await
    });
    match outcome {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            if let Some(failure) = e.downcast_ref::<ApiFailure>() {
                // The context (which request, which chunk) first, then the API's answer.
                let context: Vec<String> = e
                    .chain()
                    .take_while(|cause| cause.downcast_ref::<ApiFailure>().is_none())
                    .map(|cause| cause.to_string())
                    .collect();
                if context.is_empty() {
                    eprintln!("error: {failure}");
                } else {
                    eprintln!("error: {}: {failure}", context.join(": "));
                }
                ExitCode::from(EXIT_API)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_LOCAL)
            }
        }
    }
}

async fn run(api: Api, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Submit(args) => submit::run(&api, args).await,
        Command::Watch { batch_ids } => watch::run(&api, &batch_ids).await,
        Command::Results(args) => results::run(&api, args).await,
        Command::Batches {
            limit,
            cursor,
            json,
        } => command::batches(&api, limit, cursor.as_deref(), json).await,
        Command::Pause { batch_id } => command::batch_action(&api, batch_id, "pause").await,
        Command::Resume { batch_id } => command::batch_action(&api, batch_id, "resume").await,
        Command::Cancel { batch_id } => command::batch_action(&api, batch_id, "cancel").await,
        Command::Reprocess(args) => command::reprocess(&api, args).await,
        Command::Job {
            job_id,
            version,
            versions,
        } => command::job(&api, job_id, version, versions).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn reprocess_needs_a_job_or_a_filter() {
        let none = Cli::try_parse_from(["voxq", "--key", "k", "reprocess", "--model", "m"]);
        assert!(none.is_err());
        let job_and_filter = Cli::try_parse_from([
            "voxq",
            "reprocess",
            "--job",
            "6f1f1b1e-0000-4000-8000-000000000001",
            "--filter-status",
            "failed",
        ]);
        assert!(job_and_filter.is_err());
        let filter = Cli::try_parse_from([
            "voxq",
            "reprocess",
            "--filter-status",
            "failed",
            "--model",
            "large-v3",
            "--dry-run",
        ])
        .expect("a filter alone is valid");
        let Command::Reprocess(args) = filter.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.filter_status.as_deref(), Some("failed"));
        assert_eq!(args.options.model.as_deref(), Some("large-v3"));
        assert!(args.dry_run);
    }
}
