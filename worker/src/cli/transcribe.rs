//! `voxq-worker transcribe`: local mode, the embedded default.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shared::audio::DecodeLimits;
use std::sync::Arc;
use std::time::Duration;
use voxq_worker::local;
use voxq_worker::output::{Format, Writer};

use shared::cache::MemoryCache;
use shared::domain::{ModelTier, SummaryMode};
use shared::providers::ChatTiers;
use voxq_worker::stage::decode::DecodeStage;
use voxq_worker::stage::score::{ScoreConfig, ScoreStage};
use voxq_worker::stage::summarize::{SummarizeStage, SummaryPolicy};
use voxq_worker::stage::transcribe::TranscribeStage;
use voxq_worker::whisper::{DecodeOptions, EngineConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// faster-whisper model directory [default: $VOXQ_MODEL_DIR, else models/whisper-tiny.en]
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Beam size at temperature 0.
    #[arg(long, default_value_t = 5)]
    beam_size: usize,
    /// Language code (e.g. en, de); detected when omitted on multilingual models.
    #[arg(long)]
    language: Option<String>,
    /// Inference threads per worker [default: cores / workers].
    #[arg(long)]
    threads: Option<usize>,
    /// Recordings whose first window share one model call.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Model replicas transcribing in parallel, each with its own copy of the weights
    /// [default: one per core, at most 4].
    #[arg(long)]
    workers: Option<usize>,
    /// CTranslate2 compute type (int8, int8_float32, float32, ...).
    #[arg(long, default_value = "int8")]
    compute_type: String,
    /// Run the model even on recordings with no speech energy.
    #[arg(long)]
    no_skip_silence: bool,
    /// Longest audio accepted, in seconds.
    #[arg(long, default_value_t = 4.0 * 3600.0)]
    max_duration_s: f64,
    /// Audio files, or directories searched for audio files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let model_dir = args.model_dir.unwrap_or_else(super::default_model_dir);
    // Measured on 2 cores with tiny.en: one single-threaded replica per core transcribes a
    // batch of voice notes ~10% faster than one replica using both cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.workers.unwrap_or(cores.min(4)).max(1);
    let threads = args.threads.unwrap_or((cores / workers).max(1));
    let config = EngineConfig {
        compute_type: args.compute_type,
        threads,
        replicas: workers,
        batch_size: args.batch_size,
    };
    let options = DecodeOptions {
        language: args.language,
        beam_size: args.beam_size,
        skip_silence: !args.no_skip_silence,
        ..DecodeOptions::default()
    };
    let files = local::expand_inputs(&args.paths);
    let transcribe = TranscribeStage::load(&model_dir, &config, options)
        .with_context(|| format!("loading the model from '{}'", model_dir.display()))?;
    let decode = DecodeStage::new(DecodeLimits {
        max_duration_s: args.max_duration_s,
        ..DecodeLimits::default()
    });

    let progress = ProgressBar::new(files.len() as u64);
    if files.len() > 1 && std::io::stderr().is_terminal() {
        progress.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} files  {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        progress.set_draw_target(ProgressDrawTarget::hidden());
    }

    let stdout = std::io::stdout().lock();
    let mut writer = Writer::new(stdout, args.format, files.len() > 1);
    let mut failed = 0usize;
    let mut io_error = None;
    let score = ScoreStage::new(ScoreConfig::default());
    // Key-free default: no chat model, so summaries are local (extractive) or none.
    let summarize = SummarizeStage::new(
        SummaryPolicy::default(),
        ChatTiers::default(),
        Arc::new(MemoryCache::default()),
        Duration::from_secs(3600),
    );
    local::transcribe_files(&files, &decode, &transcribe, &score, |mut outcome| {
        if let Ok(result) = &mut outcome.result {
            let text = result.transcript.text.clone();
            let summary = futures::executor::block_on(summarize.run(
                &text,
                SummaryMode::Auto,
                ModelTier::Cheap,
            ));
            result.summary = summary.summary;
            result.usage.insert("summarize".into(), summary.usage);
        }
        failed += usize::from(outcome.result.is_err());
        progress.inc(1);
        if let Err(e) = writer.write(outcome) {
            io_error.get_or_insert(e);
        }
    });
    progress.finish_and_clear();
    writer.finish().context("writing results")?;
    if let Some(e) = io_error {
        return Err(e).context("writing results");
    }
    if failed > 0 {
        eprintln!("voxq-worker: {failed} of {} file(s) failed", files.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
