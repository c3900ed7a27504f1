//! Renders per-file outcomes for the `transcribe` command: JSONL (one object per
//! input), plain text, SRT, WebVTT, or an aligned table for people. One transcript's
//! text, SRT and WebVTT come from `shared::render`, which the API's transcript export
//! uses too; this module adds what concerns many files (file names, headers, the table).

use std::io::{self, Write};

use serde_json::json;
use shared::render;

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
    /// SRT and WebVTT cues: per segment or per word.
    granularity: render::Granularity,
    rows: Vec<FileOutcome>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, format: Format, many: bool) -> Self {
        Self {
            out,
            format,
            many,
            granularity: render::Granularity::Segment,
            rows: Vec::new(),
        }
    }

    /// One SRT/WebVTT cue per word (of transcripts made with word timestamps).
    pub fn with_granularity(mut self, granularity: render::Granularity) -> Self {
        self.granularity = granularity;
        self
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
                        "language_probability": r.transcript.language_probability,
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
                    Ok(r) => {
                        let format = match self.format {
                            Format::Text => render::Format::Text,
                            Format::Srt => render::Format::Srt,
                            _ => render::Format::Vtt,
                        };
                        let rendered = render::render_as(&r.transcript, format, self.granularity);
                        write!(self.out, "{rendered}")?;
                    }
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
