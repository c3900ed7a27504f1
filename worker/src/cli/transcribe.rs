//! `voxq-worker transcribe`: local mode, the embedded default.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use audio::DecodeLimits;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use providers::{BreakerConfig, ChatTiers, Transcriber, TranscriberChain};
use shared::cache::{Cache, MemoryCache};
use shared::config::{SummaryPolicy, DEFAULT_MODEL};
use shared::domain::JobOptions;
use shared::render;
use voxq_worker::local;
use voxq_worker::output::{Format, Writer};
use voxq_worker::pipeline::Pipeline;
use voxq_worker::stage::decode::DecodeStage;
use voxq_worker::stage::rubric::RubricStage;
use voxq_worker::stage::score::{ScoreConfig, ScoreStage};
use voxq_worker::stage::summarize::SummarizeStage;
use voxq_worker::stage::transcribe::{LocalWhisper, TranscribeStage};
use voxq_worker::whisper::{ComputeType, DecodeOptions, EngineConfig};

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
    /// Model replicas transcribing in parallel, each with its own copy of the weights
    /// [default: one per core, at most 4].
    #[arg(long)]
    workers: Option<usize>,
    /// CTranslate2 compute type (int8, int8_float32, float32, ...).
    #[arg(long, default_value = "int8")]
    compute_type: ComputeType,
    /// Run the model even on recordings with no speech energy.
    #[arg(long)]
    no_skip_silence: bool,
    /// Times of each word (in JSONL `segments[].words`).
    #[arg(long)]
    word_timestamps: bool,
    /// SRT/WebVTT cues per `segment` or per `word` (`word` implies --word-timestamps).
    #[arg(long, value_enum, default_value = "segment")]
    granularity: Granularity,
    /// Cut silences out with Silero VAD before transcribing (times stay those of the
    /// original audio). Needs the VAD model: scripts/fetch-vad.sh.
    #[arg(long)]
    vad_filter: bool,
    /// 30-second windows the language may be detected on (multilingual models).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10))]
    language_detection_segments: Option<u32>,
    /// Probability above which a window's detected language is taken [default: 0.5].
    #[arg(long)]
    language_detection_threshold: Option<f64>,
    /// Longest audio accepted, in seconds.
    #[arg(long, default_value_t = 4.0 * 3600.0)]
    max_duration_s: f64,
    /// Audio files, or directories searched for audio files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// What one SRT/WebVTT cue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Granularity {
    Segment,
    Word,
}

/// Where `scripts/fetch-vad.sh` puts the VAD model.
const DEFAULT_VAD_MODEL: &str = "models/silero_vad_v6.onnx";

/// How long local mode's in-memory caches keep an entry: the whole run, in practice.
const CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

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
        batch_size: 1,
        vad_model: std::env::var_os("VOXQ_VAD_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_VAD_MODEL)),
    };
    let engine_options = DecodeOptions {
        beam_size: args.beam_size,
        skip_silence: !args.no_skip_silence,
        ..DecodeOptions::default()
    };
    let files = local::expand_inputs(&args.paths);
    let engine = LocalWhisper::load(&model_dir, &config, engine_options)
        .with_context(|| format!("loading the model from '{}'", model_dir.display()))?;
    let engine: Arc<dyn Transcriber> = Arc::new(engine);
    let cache: Arc<dyn Cache> = Arc::new(MemoryCache::default());
    // Key-free default: no chat model, so summaries are local (extractive) or none.
    let chat = ChatTiers::default();
    let pipeline = Pipeline {
        source: Arc::new(local::Files),
        decode: DecodeStage::new(DecodeLimits {
            max_duration_s: args.max_duration_s,
            ..DecodeLimits::default()
        }),
        transcribe: TranscribeStage::new(
            TranscriberChain::new(vec![engine], BreakerConfig::default()),
            &BTreeMap::from([(DEFAULT_MODEL.to_string(), model_dir)]),
            Some((cache.clone(), CACHE_TTL)),
        ),
        score: Arc::new(ScoreStage::new(ScoreConfig::default())),
        summarize: SummarizeStage::new(SummaryPolicy::default(), chat.clone(), cache, CACHE_TTL),
        rubric: RubricStage::new(chat),
        noop: false,
    };
    let options = JobOptions {
        language: args.language,
        word_timestamps: args.word_timestamps || args.granularity == Granularity::Word,
        vad_filter: Some(args.vad_filter),
        language_detection_segments: args.language_detection_segments,
        language_detection_threshold: args.language_detection_threshold,
        ..JobOptions::default()
    };

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
    let mut writer = Writer::new(stdout, args.format, files.len() > 1).with_granularity(match args
        .granularity
    {
        Granularity::Segment => render::Granularity::Segment,
        Granularity::Word => render::Granularity::Word,
    });
    let mut failed = 0usize;
    let mut io_error = None;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(local::transcribe_files(
        &pipeline,
        &files,
        &options,
        workers,
        |outcome| {
            failed += usize::from(outcome.result.is_err());
            progress.inc(1);
            if let Err(e) = writer.write(outcome) {
                io_error.get_or_insert(e);
            }
        },
    ));
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
