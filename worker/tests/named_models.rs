//! Named local models through the one pipeline: with models `default` (tiny.en) and `base`
//! (multilingual), a job that names `base` is transcribed by base, loaded the first time
//! a job names it, and a job that names none by tiny.en; the transcript cache keeps them
//! apart; a name that is not configured fails with `unknown-model`, a directory that does
//! not load with `model-unavailable`.
//!
//! Needs the real models: `VOXQ_MODEL_DIR` (tiny.en; default `models/whisper-tiny.en`)
//! and `VOXQ_BASE_MODEL_DIR` (base), which `make test` sets after `make model` fetched
//! both (`scripts/fetch-model.sh base`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use audio::DecodeLimits;
use providers::{BreakerConfig, ChatTiers, Transcriber, TranscriberChain};
use shared::cache::{Cache, MemoryCache};
use shared::config::SummaryPolicy;
use shared::domain::{JobOptions, JobResult, Stage, StageUsage, Task};
use voxq_worker::pipeline::{Job, Pipeline, StageError, Timings};
use voxq_worker::stage::decode::DecodeStage;
use voxq_worker::stage::rubric::RubricStage;
use voxq_worker::stage::score::{ScoreConfig, ScoreStage};
use voxq_worker::stage::summarize::SummarizeStage;
use voxq_worker::stage::transcribe::{LocalWhisper, TranscribeStage};
use voxq_worker::whisper::{DecodeOptions, EngineConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny_dir() -> PathBuf {
    std::env::var_os("VOXQ_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/whisper-tiny.en"))
}

fn base_dir() -> PathBuf {
    let dir = std::env::var_os("VOXQ_BASE_MODEL_DIR")
        .map(PathBuf::from)
        .expect(
            "VOXQ_BASE_MODEL_DIR is not set: these tests need faster-whisper's base model \
         (`make model` fetches it into models/whisper-base and `make test` sets the \
         variable; or run scripts/fetch-model.sh base and export \
         VOXQ_BASE_MODEL_DIR=$PWD/models/whisper-base)",
        );
    assert!(
        dir.join("model.bin").is_file(),
        "VOXQ_BASE_MODEL_DIR='{}' holds no model.bin: run scripts/fetch-model.sh base '{}'",
        dir.display(),
        dir.display()
    );
    dir
}

/// The pipeline local mode builds, with the local engine holding `dirs` (`default` loaded
/// now, the others on first use) and an in-memory transcript cache.
async fn pipeline(dirs: BTreeMap<String, PathBuf>) -> (Pipeline, Arc<LocalWhisper>) {
    let engine = EngineConfig {
        threads: 1,
        replicas: 1,
        ..EngineConfig::default()
    };
    let default = dirs["default"].clone();
    let named = dirs.clone();
    let local = tokio::task::spawn_blocking(move || {
        LocalWhisper::load(&default, &engine, DecodeOptions::default())
            .map(|l| l.with_models(&named))
    })
    .await
    .unwrap()
    .expect("the default model loads");
    let local = Arc::new(local);
    let chain = TranscriberChain::new(
        vec![local.clone() as Arc<dyn Transcriber>],
        BreakerConfig::default(),
    );
    let cache: Arc<dyn Cache> = Arc::new(MemoryCache::default());
    let ttl = Duration::from_secs(3600);
    let pipeline = Pipeline {
        source: Arc::new(voxq_worker::local::Files),
        decode: DecodeStage::new(DecodeLimits::default()),
        transcribe: TranscribeStage::new(chain, &dirs, Some((cache.clone(), ttl))),
        score: Arc::new(ScoreStage::new(ScoreConfig::default())),
        summarize: SummarizeStage::new(SummaryPolicy::default(), ChatTiers::default(), cache, ttl),
        rubric: RubricStage::new(ChatTiers::default()),
        noop: false,
    };
    (pipeline, local)
}

fn options(model: Option<&str>, language: Option<&str>) -> JobOptions {
    JobOptions {
        model: model.map(String::from),
        language: language.map(String::from),
        tasks: vec![Task::Transcribe],
        ..JobOptions::default()
    }
}

async fn run(
    pipeline: &Pipeline,
    file: &Path,
    options: &JobOptions,
) -> Result<JobResult, StageError> {
    let source = file.to_string_lossy();
    let job = Job {
        source: &source,
        tenant: None,
        options,
        attempt: 1,
    };
    pipeline.run(&job, &mut Timings::default()).await
}

fn transcribe_usage(result: &JobResult) -> &StageUsage {
    result
        .usage
        .get(&Stage::Transcribe)
        .expect("the transcribe stage records its usage")
}

fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Share of the spoken words (fixtures/voice/transcripts.tsv) found in `text`.
fn recall(file: &str, text: &str) -> f64 {
    let tsv = std::fs::read_to_string(root().join("fixtures/voice/transcripts.tsv"))
        .expect("transcripts.tsv is committed");
    let spoken = tsv
        .lines()
        .find_map(|l| l.strip_prefix(file)?.strip_prefix('\t'))
        .expect("the fixture is in transcripts.tsv");
    let (spoken, heard) = (words(spoken), words(text));
    spoken.intersection(&heard).count() as f64 / spoken.len() as f64
}

/// A voice note without numbers (which base writes as digits, tiny.en as words).
const FILE: &str = "09-parking.flac";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_transcribed_by_the_model_it_names() {
    let base = base_dir();
    let (pipeline, local) = pipeline(BTreeMap::from([
        ("default".to_string(), tiny_dir()),
        ("base".to_string(), base.clone()),
    ]))
    .await;
    let file = root().join("fixtures/voice").join(FILE);
    assert!(local.is_loaded("default"));
    assert!(!local.is_loaded("base"), "base loads on first use only");

    // No model named: tiny.en, and base is still not loaded.
    let tiny = run(&pipeline, &file, &options(None, None))
        .await
        .expect("tiny.en transcribes");
    let used = transcribe_usage(&tiny);
    assert_eq!(
        (used.provider.as_str(), used.model.as_str()),
        ("local", "whisper-tiny.en")
    );
    assert!(!used.cached);
    assert!(
        recall(FILE, &tiny.transcript.text) >= 0.7,
        "{}",
        tiny.transcript.text
    );
    assert!(
        !local.is_loaded("base"),
        "a job without a model must not load base"
    );

    // The same file naming base: not tiny.en's cached transcript, but base's own.
    let by_base = run(&pipeline, &file, &options(Some("base"), None))
        .await
        .expect("base transcribes");
    let used = transcribe_usage(&by_base);
    let label = base.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        (used.provider.as_str(), used.model.as_str()),
        ("local", label.as_str())
    );
    assert!(
        !used.cached,
        "tiny.en's cache entry must not answer a base job"
    );
    assert!(local.is_loaded("base"));
    assert_eq!(
        by_base.transcript.language, "en",
        "base detects the language"
    );
    assert!(
        recall(FILE, &by_base.transcript.text) >= 0.7,
        "{}",
        by_base.transcript.text
    );

    // Again: base's own cache entry, which names base.
    let again = run(&pipeline, &file, &options(Some("base"), None))
        .await
        .unwrap();
    let used = transcribe_usage(&again);
    assert!(used.cached);
    assert_eq!(used.model, label);
    assert_eq!(again.transcript.text, by_base.transcript.text);

    // Only the multilingual model takes a language other than English: asked of
    // tiny.en it is an error with its code, not silently English.
    let tiny_de = run(&pipeline, &file, &options(Some("default"), Some("de")))
        .await
        .unwrap_err();
    assert_eq!(tiny_de.code, "english-only-model", "{tiny_de:?}");
    assert!(!tiny_de.transient);
    assert!(tiny_de.message.contains("'de'"), "{}", tiny_de.message);
    let tiny_en = run(&pipeline, &file, &options(Some("default"), Some("en")))
        .await
        .unwrap();
    assert_eq!(tiny_en.transcript.language, "en");
    assert_eq!(transcribe_usage(&tiny_en).model, "whisper-tiny.en");
    let base_de = run(&pipeline, &file, &options(Some("base"), Some("de")))
        .await
        .unwrap();
    assert_eq!(base_de.transcript.language, "de");
    assert_eq!(transcribe_usage(&base_de).model, label);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_unloadable_models_fail_for_good_with_their_codes() {
    let missing = std::env::temp_dir().join(format!("voxq-no-model-{}", std::process::id()));
    let (pipeline, local) = pipeline(BTreeMap::from([
        ("default".to_string(), tiny_dir()),
        ("broken".to_string(), missing.clone()),
    ]))
    .await;
    let file = root().join("fixtures/voice").join(FILE);

    let e = run(&pipeline, &file, &options(Some("small"), None))
        .await
        .unwrap_err();
    assert_eq!(e.code, "unknown-model", "{e:?}");
    assert!(!e.transient);
    assert!(e.message.contains("'small'"), "{}", e.message);

    for _ in 0..2 {
        // A failed load is not kept: the next job naming the model tries again.
        let e = run(&pipeline, &file, &options(Some("broken"), None))
            .await
            .unwrap_err();
        assert_eq!(e.code, "model-unavailable", "{e:?}");
        assert!(!e.transient);
        // The directory is for the log only.
        assert!(
            !e.message.contains(&*missing.to_string_lossy()),
            "{}",
            e.message
        );
        assert!(
            e.detail.contains(&*missing.to_string_lossy()),
            "{}",
            e.detail
        );
        assert!(!local.is_loaded("broken"));
    }

    // The default model is unaffected.
    let ok = run(&pipeline, &file, &options(None, None))
        .await
        .expect("tiny.en transcribes");
    assert_eq!(transcribe_usage(&ok).model, "whisper-tiny.en");
}
