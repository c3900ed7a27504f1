//! `voxq-worker vad`: the speech chunks that Silero VAD (faster-whisper's
//! `get_speech_timestamps`, default options) finds in each file, as JSONL, optionally
//! with every window's speech probability. For parity checks against faster-whisper
//! (`bench/reference/silero-v6-probs.jsonl`) and for timing the VAD alone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use serde_json::json;
use voxq_worker::local;
use voxq_worker::stage::decode::DecodeStage;
use voxq_worker::whisper::{timestamps_from_probs, SileroVad, VadOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// faster-whisper's silero_vad_v6.onnx [default: $VOXQ_VAD_MODEL, else
    /// models/silero_vad_v6.onnx; scripts/fetch-vad.sh fetches it]
    #[arg(long)]
    model: Option<PathBuf>,
    /// Also print the speech probability of each 512-sample window (`probs`).
    #[arg(long)]
    probs: bool,
    /// The inputs are raw 16 kHz mono f32 little-endian samples (as `decode --write-f32`
    /// writes them, or another decoder's output), not audio files.
    #[arg(long)]
    f32le: bool,
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// `$VOXQ_VAD_MODEL`, else `models/silero_vad_v6.onnx`.
fn default_model() -> PathBuf {
    std::env::var_os("VOXQ_VAD_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/silero_vad_v6.onnx"))
}

fn read_f32le(path: &Path) -> std::io::Result<Vec<f32>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Prints one line per file: `file`, `samples` (at 16 kHz), `speech` (`[start, end]`
/// sample pairs), `seconds` (VAD time, decoding excluded) and with `--probs` `probs`; or
/// `error` and `error_code`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let model = args.model.unwrap_or_else(default_model);
    let vad = SileroVad::load(&model)?;
    let options = VadOptions::default();
    let stage = DecodeStage::default();
    let mut failed = false;
    let files = if args.f32le {
        args.paths
    } else {
        local::expand_inputs(&args.paths)
    };
    for file in files {
        let name = file.display().to_string();
        let samples = if args.f32le {
            read_f32le(&file).map_err(|e| (e.to_string(), "io-error"))
        } else {
            stage
                .run(&file)
                .map(|audio| audio.samples)
                .map_err(|e| (e.to_string(), e.code()))
        };
        let samples = match samples {
            Ok(samples) => samples,
            Err((error, code)) => {
                failed = true;
                println!(
                    "{}",
                    json!({"file": name, "error": error, "error_code": code})
                );
                continue;
            }
        };
        let t = Instant::now();
        let probs = vad.speech_probs(&samples);
        let speech = timestamps_from_probs(&probs, samples.len(), &options);
        let seconds = t.elapsed().as_secs_f64();
        let speech: Vec<[usize; 2]> = speech.iter().map(|r| [r.start, r.end]).collect();
        let mut line = json!({
            "file": name,
            "samples": samples.len(),
            "speech": speech,
            "seconds": seconds,
        });
        if args.probs {
            line["probs"] = json!(probs);
        }
        println!("{line}");
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
