//! Local mode: transcribe files and directories on disk with no services. Decoding runs
//! on its own thread, ahead of inference; `workers` inference threads (one per model
//! replica) take batches as they are ready; results are emitted in input order.
//!
//! Decoding runs ahead by a number of files and by an amount of audio
//! ([`DECODE_AHEAD_SAMPLES`]), so a directory of long recordings holds a bounded number of
//! them in memory at once, not one per queue slot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;

use shared::audio::{Audio, DecodeError};
use shared::domain::{JobResult, StageUsage, Transcript, Usage};

use crate::stage::decode::DecodeStage;
use crate::stage::score::ScoreStage;
use crate::stage::transcribe::TranscribeStage;

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
    /// The transcript with its scores and usage; the summary is added by the caller.
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

type Decoded = (usize, PathBuf, Result<Audio, DecodeError>);

/// Decoded samples (16 kHz f32) that may wait for or be in inference before the decoding
/// thread stops to let the workers catch up: one hour, 230 MB. Voice notes never reach it;
/// a directory of long recordings then holds at most this plus the file decoded last.
const DECODE_AHEAD_SAMPLES: usize = 3_600 * shared::audio::SAMPLE_RATE as usize;

/// Samples decoded and not yet transcribed and scored, shared by the decoding thread
/// (which waits on it) and the inference threads (which release what they finish).
#[derive(Default)]
struct InFlight {
    /// Samples held, and inference threads still running.
    state: Mutex<(usize, usize)>,
    changed: Condvar,
}

impl InFlight {
    /// Waits until fewer than `limit` samples are held, or no inference thread is left to
    /// release any (then the next send fails and decoding stops).
    fn wait_below(&self, limit: usize) {
        let Ok(guard) = self.state.lock() else { return };
        let _unused = self
            .changed
            .wait_while(guard, |(held, workers)| *held >= limit && *workers > 0);
    }

    fn add(&self, samples: usize) {
        if let Ok(mut state) = self.state.lock() {
            state.0 += samples;
        }
    }

    fn release(&self, samples: usize) {
        if let Ok(mut state) = self.state.lock() {
            state.0 = state.0.saturating_sub(samples);
        }
        self.changed.notify_all();
    }

    fn worker_started(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.1 += 1;
        }
    }

    fn worker_stopped(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.1 = state.1.saturating_sub(1);
        }
        self.changed.notify_all();
    }
}

/// Counts an inference thread as running until it ends, however it ends.
struct WorkerAlive<'a>(&'a InFlight);

impl<'a> WorkerAlive<'a> {
    fn new(in_flight: &'a InFlight) -> Self {
        in_flight.worker_started();
        Self(in_flight)
    }
}

impl Drop for WorkerAlive<'_> {
    fn drop(&mut self) {
        self.0.worker_stopped();
    }
}

/// Transcribes `files`, calling `emit` once per file, in input order. Batches are the
/// engine's batch size, with one inference thread per model replica.
pub fn transcribe_files(
    files: &[PathBuf],
    decode: &DecodeStage,
    transcribe: &TranscribeStage,
    score: &ScoreStage,
    mut emit: impl FnMut(FileOutcome),
) {
    let batch_size = transcribe.batch_size();
    let workers = transcribe.replicas();
    let (decoded_tx, decoded_rx) = mpsc::sync_channel::<Decoded>(batch_size * (workers + 1));
    // Owned by the workers only: when the last one stops (even early), the receiver is
    // dropped and the decoding thread's next send fails instead of blocking for ever.
    let decoded_rx = Arc::new(Mutex::new(decoded_rx));
    let (done_tx, done_rx) = mpsc::channel::<(usize, FileOutcome)>();
    let in_flight = InFlight::default();
    // Counted before any thread starts, so the decoding thread cannot see "no workers".
    let alive: Vec<WorkerAlive<'_>> = (0..workers).map(|_| WorkerAlive::new(&in_flight)).collect();
    thread::scope(|scope| {
        let in_flight = &in_flight;
        scope.spawn(move || {
            for (i, f) in files.iter().enumerate() {
                in_flight.wait_below(DECODE_AHEAD_SAMPLES);
                let decoded = decode.run(f);
                if let Ok(audio) = &decoded {
                    in_flight.add(audio.samples.len());
                }
                if decoded_tx.send((i, f.clone(), decoded)).is_err() {
                    return;
                }
            }
        });
        for alive in alive {
            let done_tx = done_tx.clone();
            let decoded_rx = Arc::clone(&decoded_rx);
            scope.spawn(move || {
                let _alive = alive;
                loop {
                    let (batch, finished) = next_batch(&decoded_rx, batch_size);
                    for outcome in process(batch, transcribe, score, in_flight) {
                        if done_tx.send(outcome).is_err() {
                            return;
                        }
                    }
                    if finished {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        drop(decoded_rx);
        // Re-order: workers finish batches out of order.
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        for (i, outcome) in done_rx {
            waiting.insert(i, outcome);
            while let Some(o) = waiting.remove(&next) {
                emit(o);
                next += 1;
            }
        }
    });
}

/// Takes decoded files until `batch_size` of them decoded successfully (failures ride
/// along) or the input is exhausted. Holding the lock while filling keeps batches full.
fn next_batch(rx: &Mutex<mpsc::Receiver<Decoded>>, batch_size: usize) -> (Vec<Decoded>, bool) {
    let mut batch = Vec::new();
    let Ok(rx) = rx.lock() else {
        return (batch, true);
    };
    loop {
        if batch.iter().filter(|(_, _, r)| r.is_ok()).count() >= batch_size {
            return (batch, false);
        }
        match rx.recv() {
            Ok(item) => batch.push(item),
            Err(_) => return (batch, true),
        }
    }
}

fn process(
    batch: Vec<Decoded>,
    transcribe: &TranscribeStage,
    score: &ScoreStage,
    in_flight: &InFlight,
) -> Vec<(usize, FileOutcome)> {
    let audios: Vec<&Audio> = batch
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().ok())
        .collect();
    let started = std::time::Instant::now();
    let transcripts = if audios.is_empty() {
        Vec::new()
    } else {
        transcribe.run_batch(&audios)
    };
    // A batch is one model call: its time is shared equally by its recordings.
    let transcribe_ms = started.elapsed().as_secs_f64() * 1e3 / audios.len().max(1) as f64;
    let mut transcripts = transcripts.into_iter();
    batch
        .into_iter()
        .map(|(i, file, decoded)| {
            let result = match decoded {
                Err(e) => Err(FileError {
                    code: e.code().to_string(),
                    message: shared::error_chain(&e),
                }),
                Ok(audio) => {
                    let result = match transcripts.next() {
                        Some(Ok(t)) => Ok(scored(t, &audio, score, transcribe_ms)),
                        Some(Err(e)) => Err(FileError {
                            code: e.code().to_string(),
                            message: shared::error_chain(&e),
                        }),
                        None => Err(FileError {
                            code: "inference-failed".into(),
                            message: "no transcript returned".into(),
                        }),
                    };
                    let samples = audio.samples.len();
                    drop(audio);
                    in_flight.release(samples);
                    result
                }
            };
            if let Err(e) = &result {
                tracing::warn!(file = %file.display(), code = %e.code, "{}", e.message);
            }
            (i, FileOutcome { file, result })
        })
        .collect()
}

/// The local result of one recording: its transcript, scores and usage.
fn scored(
    transcript: Transcript,
    audio: &Audio,
    score: &ScoreStage,
    transcribe_ms: f64,
) -> JobResult {
    let started = std::time::Instant::now();
    let scores = score.run(audio, &transcript);
    let mut usage = Usage::new();
    usage.insert(
        "transcribe".into(),
        StageUsage::local("whisper", transcribe_ms),
    );
    usage.insert(
        "score".into(),
        StageUsage::local("signal", started.elapsed().as_secs_f64() * 1e3),
    );
    JobResult {
        transcript,
        scores: Some(scores),
        summary: None,
        rubric: None,
        usage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn decoding_waits_for_released_samples_and_never_for_stopped_workers() {
        let in_flight = InFlight::default();
        let alive = WorkerAlive::new(&in_flight);
        in_flight.add(10);
        thread::scope(|scope| {
            let waiter = scope.spawn(|| in_flight.wait_below(10));
            thread::sleep(Duration::from_millis(50));
            assert!(
                !waiter.is_finished(),
                "10 samples held, limit 10: must wait"
            );
            in_flight.release(1);
            waiter.join().unwrap();
        });
        // Over the limit with no inference thread left: returns at once.
        in_flight.add(100);
        drop(alive);
        in_flight.wait_below(10);
    }
}
