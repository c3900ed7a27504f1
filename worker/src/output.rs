//! Renders per-file outcomes for the `transcribe` command: JSONL (one object per
//! input), plain text, SRT, WebVTT, or an aligned table for people.

use std::io::{self, Write};

use serde_json::json;
use shared::domain::Transcript;

use crate::local::FileOutcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Text,
    Srt,
    Vtt,
    Table,
}

/// Writes outcomes as they arrive (all formats but `table` stream).
pub struct Writer<W: Write> {
    out: W,
    format: Format,
    many: bool,
    rows: Vec<FileOutcome>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, format: Format, many: bool) -> Self {
        Self {
            out,
            format,
            many,
            rows: Vec::new(),
        }
    }

    pub fn write(&mut self, o: FileOutcome) -> io::Result<()> {
        let file = o.file.display().to_string();
        match self.format {
            Format::Jsonl => {
                let line = match &o.result {
                    Ok(r) => json!({
                        "file": file,
                        "text": r.transcript.text,
                        "language": r.transcript.language,
                        "duration_s": r.transcript.duration_s,
                        "segments": r.transcript.segments,
                        "scores": r.scores,
                        "summary": r.summary,
                        "usage": r.usage,
                        "error": null,
                    }),
                    Err(e) => json!({
                        "file": file,
                        "text": null,
                        "language": null,
                        "duration_s": null,
                        "segments": [],
                        "scores": null,
                        "summary": null,
                        "usage": {},
                        "error": e.message,
                        "error_code": e.code,
                    }),
                };
                writeln!(self.out, "{line}")?;
            }
            Format::Text | Format::Srt | Format::Vtt => {
                if self.many {
                    writeln!(self.out, "==> {file} <==")?;
                }
                match &o.result {
                    Ok(r) => match self.format {
                        Format::Text => writeln!(self.out, "{}", r.transcript.text)?,
                        Format::Srt => write!(self.out, "{}", srt(&r.transcript))?,
                        _ => write!(self.out, "{}", vtt(&r.transcript))?,
                    },
                    Err(e) => writeln!(self.out, "error ({}): {}", e.code, e.message)?,
                }
            }
            Format::Table => self.rows.push(o),
        }
        self.out.flush()
    }

    pub fn finish(mut self) -> io::Result<()> {
        if self.format == Format::Table {
            let rows = std::mem::take(&mut self.rows);
            write!(self.out, "{}", table(&rows))?;
        }
        self.out.flush()
    }
}

fn timestamp(t: f64, sep: char) -> String {
    let ms = (t.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

pub fn srt(t: &Transcript) -> String {
    let mut s = String::new();
    for (i, seg) in t.segments.iter().enumerate() {
        s.push_str(&format!(
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            timestamp(seg.start, ','),
            timestamp(seg.end, ','),
            seg.text
        ));
    }
    s
}

pub fn vtt(t: &Transcript) -> String {
    let mut s = String::from("WEBVTT\n\n");
    for seg in &t.segments {
        s.push_str(&format!(
            "{} --> {}\n{}\n\n",
            timestamp(seg.start, '.'),
            timestamp(seg.end, '.'),
            seg.text
        ));
    }
    s
}

fn table(rows: &[FileOutcome]) -> String {
    const TEXT_WIDTH: usize = 70;
    let name = |o: &FileOutcome| {
        o.file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| o.file.display().to_string())
    };
    let width = rows
        .iter()
        .map(|o| name(o).chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!(
        "{:<width$}  {:>7}  {:<4}  {:>3}  {:<22}  TEXT\n",
        "FILE", "SECONDS", "LANG", "Q", "FLAGS"
    );
    let mut summaries = String::new();
    for o in rows {
        let (secs, lang, quality, flags, text) = match &o.result {
            Ok(r) => {
                let t = &r.transcript;
                if let Some(summary) = &r.summary {
                    summaries.push_str(&format!("  {}: {}\n", name(o), summary.text));
                }
                (
                    format!("{:.1}", t.duration_s),
                    t.language.clone(),
                    r.scores
                        .as_ref()
                        .map_or("-".into(), |s| s.quality.to_string()),
                    r.scores
                        .as_ref()
                        .map(|s| {
                            let names: Vec<_> = s.flags.iter().map(|f| f.as_str()).collect();
                            names.join(",")
                        })
                        .filter(|f| !f.is_empty())
                        .unwrap_or_else(|| "-".into()),
                    if t.text.is_empty() {
                        "(no speech)".to_string()
                    } else {
                        t.text.clone()
                    },
                )
            }
            Err(e) => (
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("ERROR {}: {}", e.code, e.message),
            ),
        };
        let shown: String = if text.chars().count() > TEXT_WIDTH {
            text.chars().take(TEXT_WIDTH - 1).chain(['…']).collect()
        } else {
            text
        };
        s.push_str(&format!(
            "{:<width$}  {secs:>7}  {lang:<4}  {quality:>3}  {flags:<22}  {shown}\n",
            name(o)
        ));
    }
    if !summaries.is_empty() {
        s.push_str("\nSummaries (local, extractive unless a chat model is configured):\n");
        s.push_str(&summaries);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::domain::Segment;

    fn transcript() -> Transcript {
        Transcript {
            text: "Hello there. Bye.".into(),
            language: "en".into(),
            duration_s: 3.5,
            segments: vec![
                Segment {
                    start: 0.0,
                    end: 1.5,
                    text: "Hello there.".into(),
                    avg_logprob: -0.2,
                    no_speech_prob: 0.01,
                },
                Segment {
                    start: 1.5,
                    end: 3661.25,
                    text: "Bye.".into(),
                    avg_logprob: -0.3,
                    no_speech_prob: 0.01,
                },
            ],
        }
    }

    #[test]
    fn srt_numbers_cues_and_uses_commas() {
        let s = srt(&transcript());
        assert_eq!(
            s,
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 01:01:01,250\nBye.\n\n"
        );
    }

    #[test]
    fn vtt_has_header_and_dots() {
        let s = vtt(&transcript());
        assert!(s.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n"));
    }
}
