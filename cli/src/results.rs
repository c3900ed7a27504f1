//! `voxq results`: streams a batch's results to a file or stdout. Lines are written only
//! whole; if the connection breaks, the download resumes after the last sequence number
//! written (`after=<seq>`), so nothing is lost or written twice.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context;
use futures::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use uuid::Uuid;

use crate::api::{backoff, transport_detail, Api, ApiFailure, Repeat};

/// Breaks in a row (without a new line in between) before giving up.
const MAX_RETRIES: u32 = 5;

#[derive(clap::Args, Debug)]
pub(crate) struct ResultsArgs {
    batch_id: Uuid,
    /// File to write (default: stdout)
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// jsonl: the API's lines as they are; txt: `custom_id<TAB>text` per completed item
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub(crate) enum Format {
    Jsonl,
    Txt,
}

/// One line of the results stream (the fields the client reads).
#[derive(Debug, Deserialize)]
pub(crate) struct ResultLine {
    pub seq: u64,
    #[serde(default)]
    pub custom_id: Option<String>,
    pub job_id: String,
    pub status: String,
    #[serde(default)]
    pub result: Option<serde_json::Value>,
}

/// A whole line as received (newline included) and what it says.
#[derive(Debug)]
pub(crate) struct Line {
    pub raw: Vec<u8>,
    pub item: ResultLine,
}

/// Where the download got to: the last sequence number taken, and the start of a line
/// whose end has not arrived yet.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    after: Option<u64>,
    partial: Vec<u8>,
}

/// A line that is not a result: the stream is not what the API sends.
#[derive(Debug)]
pub(crate) struct BadLine(pub String);

impl Cursor {
    /// The `after` parameter of the next request.
    pub(crate) fn after(&self) -> Option<u64> {
        self.after
    }

    /// The new whole lines that `bytes` completes. Lines at or before the cursor (sent
    /// again by a resumed request) are dropped.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Line>, BadLine> {
        self.partial.extend_from_slice(bytes);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let rest = self.partial.split_off(last_newline + 1);
        let whole = std::mem::replace(&mut self.partial, rest);
        let mut lines = Vec::new();
        for raw in whole.split_inclusive(|&b| b == b'\n') {
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Some(line) = self.take(raw.to_vec())? {
                lines.push(line);
            }
        }
        Ok(lines)
    }

    /// The connection broke: the unfinished line will come again.
    pub(crate) fn broken(&mut self) {
        self.partial.clear();
    }

    /// The stream ended cleanly. A last line without a newline counts if it is whole;
    /// `Err` if it is not (the answer was cut short).
    pub(crate) fn end(&mut self) -> Result<Option<Line>, BadLine> {
        let mut raw = std::mem::take(&mut self.partial);
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        raw.push(b'\n');
        self.take(raw)
    }

    fn take(&mut self, raw: Vec<u8>) -> Result<Option<Line>, BadLine> {
        let item: ResultLine = serde_json::from_slice(&raw).map_err(|e| {
            BadLine(format!(
                "not a result line ({e}): {}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            ))
        })?;
        if self.after.is_some_and(|after| item.seq <= after) {
            return Ok(None);
        }
        self.after = Some(item.seq);
        Ok(Some(Line { raw, item }))
    }
}

/// `custom_id<TAB>text` of a completed item (the job id when it has no custom_id);
/// tabs and line breaks in either become spaces, so each item is one line.
pub(crate) fn txt_line(item: &ResultLine) -> Option<String> {
    if item.status != "completed" {
        return None;
    }
    let text = item
        .result
        .as_ref()
        .and_then(|r| r.pointer("/transcript/text"))
        .and_then(|t| t.as_str())
        .unwrap_or("");
    let id = item.custom_id.as_deref().unwrap_or(&item.job_id);
    Some(format!("{}\t{}\n", one_line(id), one_line(text.trim())))
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What the output got.
#[derive(Debug, Default)]
struct Written {
    lines: u64,
    skipped: u64,
}

/// How one request ended.
enum Fetch {
    /// The answer ended cleanly; `lines` new lines came with it.
    Done { lines: u64 },
    /// The connection broke after `lines` new lines.
    Broken { lines: u64, detail: String },
}

pub(crate) async fn run(api: &Api, args: ResultsArgs) -> anyhow::Result<()> {
    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create '{}'", path.display()))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = io::BufWriter::with_capacity(256 * 1024, sink);
    let mut cursor = Cursor::default();
    let mut written = Written::default();
    let mut retries = 0;
    loop {
        match fetch(api, &args, &mut cursor, &mut out, &mut written).await? {
            // A page that brought nothing new: the results are complete. (Asking again
            // after a page that did costs one request, and serves a server that pages.)
            Fetch::Done { lines: 0 } => break,
            Fetch::Done { .. } => retries = 0,
            Fetch::Broken { lines, detail } => {
                cursor.broken();
                if lines > 0 {
                    retries = 0;
                }
                retries += 1;
                if retries > MAX_RETRIES {
                    return Err(ApiFailure::Transport(detail)).context(format!(
                        "results of batch {} broke off {MAX_RETRIES} times in a row",
                        args.batch_id
                    ));
                }
                eprintln!(
                    "voxq: the results stream broke ({detail}); resuming after seq {}",
                    cursor
                        .after()
                        .map_or_else(|| "none".to_string(), |s| s.to_string())
                );
                tokio::time::sleep(backoff(retries)).await;
            }
        }
    }
    out.flush().context("cannot write the results")?;
    let place = args
        .output
        .as_ref()
        .map_or_else(|| "stdout".to_string(), |p| format!("'{}'", p.display()));
    match args.format {
        Format::Jsonl => eprintln!("voxq: {} result lines written to {place}", written.lines),
        Format::Txt => eprintln!(
            "voxq: {} transcripts written to {place}; {} items not completed left out",
            written.lines, written.skipped
        ),
    }
    Ok(())
}

async fn fetch(
    api: &Api,
    args: &ResultsArgs,
    cursor: &mut Cursor,
    out: &mut impl Write,
    written: &mut Written,
) -> anyhow::Result<Fetch> {
    let path = format!("/v1/batches/{}/results", args.batch_id);
    let query: Vec<(&str, String)> = cursor
        .after()
        .map(|after| vec![("after", after.to_string())])
        .unwrap_or_default();
    let response = match api
        .send(Repeat::Safe, || {
            api.request(Method::GET, &path).query(&query)
        })
        .await
    {
        Ok(response) => response,
        // `send` already tried again; a refusal (404, 401, …) ends the download.
        Err(failure @ ApiFailure::Api { .. }) => return Err(failure.into()),
        Err(ApiFailure::Transport(detail)) => return Ok(Fetch::Broken { lines: 0, detail }),
    };
    let mut lines = 0u64;
    let mut body = response.bytes_stream();
    while let Some(piece) = body.next().await {
        let piece = match piece {
            Ok(piece) => piece,
            Err(e) => {
                return Ok(Fetch::Broken {
                    lines,
                    detail: transport_detail(&e),
                })
            }
        };
        let new = cursor
            .feed(&piece)
            .map_err(|BadLine(detail)| ApiFailure::Transport(detail))?;
        for line in new {
            emit(out, args.format, &line, written)?;
            lines += 1;
        }
    }
    match cursor.end() {
        Ok(last) => {
            if let Some(line) = last {
                emit(out, args.format, &line, written)?;
                lines += 1;
            }
            Ok(Fetch::Done { lines })
        }
        Err(BadLine(detail)) => Ok(Fetch::Broken {
            lines,
            detail: format!("the answer ended inside a line: {detail}"),
        }),
    }
}

fn emit(
    out: &mut impl Write,
    format: Format,
    line: &Line,
    written: &mut Written,
) -> anyhow::Result<()> {
    let result = match format {
        Format::Jsonl => out.write_all(&line.raw).map(|()| written.lines += 1),
        Format::Txt => match txt_line(&line.item) {
            Some(text) => out.write_all(text.as_bytes()).map(|()| written.lines += 1),
            None => {
                written.skipped += 1;
                Ok(())
            }
        },
    };
    result.context("cannot write the results")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64) -> String {
        format!(
            "{{\"seq\":{seq},\"custom_id\":\"c{seq}\",\"job_id\":\"j{seq}\",\"status\":\"completed\",\
             \"result\":{{\"transcript\":{{\"text\":\"text {seq}\"}}}}}}\n"
        )
    }

    fn seqs(lines: &[Line]) -> Vec<u64> {
        lines.iter().map(|l| l.item.seq).collect()
    }

    #[test]
    fn lines_split_across_pieces_come_out_whole() {
        let stream = format!("{}{}{}", line(1), line(2), line(3));
        // Pieces of every size, from single bytes to the whole stream.
        for size in 1..=stream.len() {
            let mut cursor = Cursor::default();
            let mut got = Vec::new();
            for piece in stream.as_bytes().chunks(size) {
                got.extend(cursor.feed(piece).unwrap());
            }
            assert_eq!(seqs(&got), [1, 2, 3]);
            let raw: Vec<u8> = got.iter().flat_map(|l| l.raw.clone()).collect();
            assert_eq!(raw, stream.as_bytes());
            assert_eq!(cursor.after(), Some(3));
            assert!(cursor.end().unwrap().is_none());
        }
    }

    #[test]
    fn a_break_resumes_after_the_last_whole_line_without_repeats() {
        let mut cursor = Cursor::default();
        let first = format!("{}{}", line(1), line(2));
        // The connection breaks in the middle of line 3.
        let cut = &line(3)[..20];
        let mut got = cursor.feed(first.as_bytes()).unwrap();
        got.extend(cursor.feed(cut.as_bytes()).unwrap());
        cursor.broken();
        assert_eq!(cursor.after(), Some(2), "resume with after=2");
        // A server that resends from an earlier point: the repeats are dropped.
        let resent = format!("{}{}{}", line(2), line(3), line(4));
        got.extend(cursor.feed(resent.as_bytes()).unwrap());
        assert_eq!(seqs(&got), [1, 2, 3, 4]);
        assert_eq!(cursor.after(), Some(4));
    }

    #[test]
    fn the_last_line_may_lack_its_newline_but_not_its_end() {
        let mut cursor = Cursor::default();
        let last = line(1);
        cursor.feed(last.trim_end().as_bytes()).unwrap();
        let line = cursor.end().unwrap().expect("a whole last line");
        assert_eq!(line.item.seq, 1);
        assert!(line.raw.ends_with(b"\n"));

        let mut cut = Cursor::default();
        cut.feed(b"{\"seq\":1,\"job_").unwrap();
        assert!(cut.end().is_err(), "a cut line is a broken answer");
        assert_eq!(cut.after(), None);
    }

    #[test]
    fn txt_has_one_line_per_completed_item() {
        let completed: ResultLine = serde_json::from_str(
            r#"{"seq":1,"custom_id":"calls/a b.ogg","job_id":"j1","status":"completed",
                "result":{"transcript":{"text":" Hello\tthere.\nBye. ","language":"en"}}}"#,
        )
        .unwrap();
        assert_eq!(
            txt_line(&completed).unwrap(),
            "calls/a b.ogg\tHello there. Bye.\n"
        );
        let no_custom_id: ResultLine = serde_json::from_str(
            r#"{"seq":2,"job_id":"j2","status":"completed","result":{"transcript":{"text":"x"}}}"#,
        )
        .unwrap();
        assert_eq!(txt_line(&no_custom_id).unwrap(), "j2\tx\n");
        let failed: ResultLine = serde_json::from_str(
            r#"{"seq":3,"job_id":"j3","status":"failed","error":{"code":"corrupt-audio","message":"m"}}"#,
        )
        .unwrap();
        assert!(txt_line(&failed).is_none());
    }
}
