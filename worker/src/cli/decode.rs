//! `voxq-worker decode`: decode and resample only, timing each file. Used by
//! `bench/run.sh` to compare against `ffmpeg -ac 1 -ar 16000 -f f32le`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use serde_json::json;
use voxq_worker::local;
use voxq_worker::stage::decode::DecodeStage;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Decode each file this many times and report the fastest run.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Also write each decoded signal as raw 16 kHz mono f32le into this directory.
    #[arg(long)]
    write_f32: Option<PathBuf>,
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// Writes `values` as raw little-endian f32, streamed rather than copied to bytes first.
fn write_f32le(path: &std::path::Path, values: &[f32]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for v in values {
        out.write_all(&v.to_le_bytes())?;
    }
    out.flush()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let stage = DecodeStage::default();
    let mut failed = false;
    for file in local::expand_inputs(&args.paths) {
        let mut best = f64::INFINITY;
        let mut outcome = None;
        for _ in 0..args.repeat.max(1) {
            let t = Instant::now();
            let r = stage.run(&file);
            best = best.min(t.elapsed().as_secs_f64());
            outcome = Some(r);
        }
        if let (Some(dir), Some(Ok(audio))) = (&args.write_f32, &outcome) {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            write_f32le(&dir.join(format!("{name}.f32")), &audio.samples)?;
            let (mel, _) = voxq_worker::whisper::log_mel_features(&audio.samples, 80);
            write_f32le(&dir.join(format!("{name}.mel80")), &mel)?;
        }
        let line = match outcome {
            Some(Ok(audio)) => json!({
                "file": file.display().to_string(),
                "codec": audio.codec,
                "samples": audio.samples.len(),
                "duration_s": audio.duration_s(),
                "seconds": best,
                "x_realtime": audio.duration_s() / best.max(1e-9),
                "error": null,
            }),
            Some(Err(e)) => {
                failed = true;
                json!({"file": file.display().to_string(), "error": e.to_string(), "error_code": e.code()})
            }
            None => continue,
        };
        println!("{line}");
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
