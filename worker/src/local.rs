//! Local mode: the pipeline over files and directories on disk, with no services.
//! Files are the [`Source`], caches live in memory, and results are emitted in input
//! order while up to `concurrency` files (one per model replica) are in the pipeline at
//! once, so a directory of long recordings holds that many of them in memory, not more.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use futures::StreamExt;
use shared::domain::{JobOptions, JobResult};
use tracing::Instrument;

use crate::pipeline::{Fetched, Job, Pipeline, Source, StageError, Timings};

/// File endings picked up when a directory is given.
const AUDIO_EXTENSIONS: &[&str] = &[
    "ogg", "oga", "opus", "webm", "weba", "mka", "mkv", "m4a", "mp4", "aac", "mp3", "flac", "wav",
    "wave", "caf",
];

/// Why one file produced no transcript: a stable code and a readable message.
#[derive(Debug, Clone, PartialEq)]
pub struct FileError {
    pub code: String,
    pub message: String,
}

/// The outcome for one input file.
#[derive(Debug, Clone)]
pub struct FileOutcome {
    pub file: PathBuf,
    pub result: Result<JobResult, FileError>,
}

/// Expands the given paths: files as given, directories recursively (audio endings
/// only, sorted; symbolic links to directories are not followed, so a link loop cannot
/// repeat files). A missing or unreadable path is kept, so that it fails as its own input.
pub fn expand_inputs(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        let mut found = Vec::new();
        if p.is_dir() && collect_dir(p, &mut found).is_ok() {
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    out
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if let Err(e) = collect_dir(&path, out) {
                tracing::warn!(dir = %path.display(), "skipping unreadable directory: {e}");
            }
        } else if (kind.is_file() || path.is_file()) && is_audio_name(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn is_audio_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Files on disk as the pipeline's source: decoded straight from the file, so a missing
/// or unreadable one fails with the decoder's error codes.
pub struct Files;

impl Source for Files {
    fn fetch<'a>(&'a self, job: &'a Job<'a>) -> BoxFuture<'a, Result<Fetched, StageError>> {
        Box::pin(async move { Ok(Fetched::File(PathBuf::from(job.source))) })
    }
}

/// Runs `files` through the pipeline with `options`, calling `emit` once per file in
/// input order. Files finish out of order; a slow one delays only its own output.
pub async fn transcribe_files(
    pipeline: &Pipeline,
    files: &[PathBuf],
    options: &JobOptions,
    concurrency: usize,
    mut emit: impl FnMut(FileOutcome),
) {
    let mut done = futures::stream::iter(files.iter().enumerate())
        .map(|(i, file)| async move { (i, run_file(pipeline, file, options).await) })
        .buffer_unordered(concurrency.max(1));
    let mut waiting = BTreeMap::new();
    let mut next = 0;
    while let Some((i, outcome)) = done.next().await {
        waiting.insert(i, outcome);
        while let Some(o) = waiting.remove(&next) {
            emit(o);
            next += 1;
        }
    }
}

async fn run_file(pipeline: &Pipeline, file: &Path, options: &JobOptions) -> FileOutcome {
    let source = file.to_string_lossy();
    let job = Job {
        source: &source,
        tenant: None,
        options,
        attempt: 1,
    };
    let span = tracing::info_span!("file", path = %file.display());
    let result = pipeline
        .run(&job, &mut Timings::default())
        .instrument(span)
        .await
        .map_err(|e| {
            tracing::warn!(file = %file.display(), code = e.code, "{}", e.detail);
            // The operator runs local mode: the whole detail is theirs to read.
            FileError {
                code: e.code.to_string(),
                message: e.detail,
            }
        });
    FileOutcome {
        file: file.to_path_buf(),
        result,
    }
}
