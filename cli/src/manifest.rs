//! JSONL manifests: one pass over the file checks every line, digests the content and
//! finds where to split it into requests of at most 100,000 items, so that a bad line
//! is reported (with its line number in the file) before anything is submitted, and a
//! long manifest is sent as several batches streamed straight from the file.

use std::collections::HashSet;
use std::io::{self, BufRead};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Most items the API takes in one batch request.
pub(crate) const MAX_ITEMS_PER_REQUEST: u64 = 100_000;
/// Bad lines reported before giving up on listing them.
const MAX_REPORTED: usize = 20;

/// One request's share of the manifest: bytes `start..end` of the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunk {
    pub start: u64,
    pub end: u64,
    /// Line number (1-based, in the file) of the chunk's first line, to translate the
    /// API's line numbers (1-based within the request) back to the file's.
    pub first_line: u64,
    pub items: u64,
}

impl Chunk {
    /// The file's line number of line `line` (1-based) of this chunk's request.
    pub(crate) fn file_line(&self, line: u64) -> u64 {
        self.first_line + line.saturating_sub(1)
    }
}

#[derive(Debug)]
pub(crate) struct Manifest {
    pub chunks: Vec<Chunk>,
    pub items: u64,
    pub sha256: [u8; 32],
}

#[derive(Debug, PartialEq)]
pub(crate) struct BadLine {
    pub line: u64,
    pub message: String,
}

#[derive(Debug)]
pub(crate) enum ScanError {
    Io(io::Error),
    /// The first bad lines, and how many there are in all.
    Invalid {
        lines: Vec<BadLine>,
        count: u64,
    },
    Empty,
}

/// What every item must have; the API checks the rest.
#[derive(Deserialize)]
struct Item {
    #[allow(dead_code)]
    audio_url: String,
    #[serde(default)]
    custom_id: Option<String>,
}

/// Reads a whole manifest. Blank lines are allowed (and are not items); every other line
/// must be a JSON object with a string `audio_url`, and `custom_id`s must be unique
/// within each request (each request becomes a batch).
pub(crate) fn scan(mut reader: impl BufRead, max_items: u64) -> Result<Manifest, ScanError> {
    let mut sha = Sha256::new();
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut current: Option<Chunk> = None;
    let mut custom_ids: HashSet<String> = HashSet::new();
    let mut bad = Vec::new();
    let mut bad_count = 0u64;
    let mut items = 0u64;
    let mut offset = 0u64;
    let mut line_no = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(ScanError::Io)?;
        if read == 0 {
            break;
        }
        line_no += 1;
        sha.update(&line);
        let start = offset;
        offset += read as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            // Blank: belongs to whichever request is open, counts for nothing.
            if let Some(chunk) = current.as_mut() {
                chunk.end = offset;
            }
            continue;
        }
        if current.as_ref().is_some_and(|c| c.items >= max_items) {
            chunks.extend(current.take());
            custom_ids.clear();
        }
        let chunk = current.get_or_insert(Chunk {
            start,
            end: start,
            first_line: line_no,
            items: 0,
        });
        chunk.end = offset;
        chunk.items += 1;
        items += 1;
        let problem = match serde_json::from_slice::<Item>(&line) {
            Ok(Item {
                custom_id: Some(id),
                ..
            }) if !custom_ids.insert(id.clone()) => Some(format!(
                "custom_id '{id}' repeats an earlier line of the same batch"
            )),
            Ok(_) => None,
            Err(e) => Some(format!("not an item with a string audio_url: {e}")),
        };
        if let Some(message) = problem {
            bad_count += 1;
            if bad.len() < MAX_REPORTED {
                bad.push(BadLine {
                    line: line_no,
                    message,
                });
            }
        }
    }
    chunks.extend(current);
    if bad_count > 0 {
        return Err(ScanError::Invalid {
            lines: bad,
            count: bad_count,
        });
    }
    if items == 0 {
        return Err(ScanError::Empty);
    }
    Ok(Manifest {
        chunks,
        items,
        sha256: sha.finalize().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(lines: u64) -> String {
        (0..lines)
            .map(|i| format!("{{\"audio_url\":\"s3://b/{i}.ogg\",\"custom_id\":\"n{i}\"}}\n"))
            .collect()
    }

    /// The bytes of each chunk, as the requests would send them.
    fn bodies<'a>(text: &'a str, manifest: &Manifest) -> Vec<&'a str> {
        manifest
            .chunks
            .iter()
            .map(|c| &text[c.start as usize..c.end as usize])
            .collect()
    }

    #[test]
    fn up_to_the_limit_is_one_request() {
        let text = manifest(100_000);
        let scanned = scan(text.as_bytes(), MAX_ITEMS_PER_REQUEST).unwrap();
        assert_eq!(scanned.items, 100_000);
        assert_eq!(scanned.chunks.len(), 1);
        assert_eq!(bodies(&text, &scanned), [text.as_str()]);
    }

    #[test]
    fn beyond_the_limit_splits_at_line_boundaries() {
        let text = manifest(250_001);
        let scanned = scan(text.as_bytes(), MAX_ITEMS_PER_REQUEST).unwrap();
        let sizes: Vec<u64> = scanned.chunks.iter().map(|c| c.items).collect();
        assert_eq!(sizes, [100_000, 100_000, 50_001]);
        let parts = bodies(&text, &scanned);
        // Nothing lost, nothing repeated, every request whole lines.
        assert_eq!(parts.concat(), text);
        for (part, chunk) in parts.iter().zip(&scanned.chunks) {
            assert!(part.ends_with('\n'));
            assert_eq!(part.lines().count() as u64, chunk.items);
        }
        assert!(parts[1].starts_with("{\"audio_url\":\"s3://b/100000.ogg\""));
        assert_eq!(scanned.chunks[2].first_line, 200_001);
        // Line 3 of the third request is line 200,003 of the file.
        assert_eq!(scanned.chunks[2].file_line(3), 200_003);
    }

    #[test]
    fn blank_lines_and_a_missing_final_newline() {
        let text = "\n{\"audio_url\":\"a\"}\n\n{\"audio_url\":\"b\"}\n  \n{\"audio_url\":\"c\"}";
        let scanned = scan(text.as_bytes(), 2).unwrap();
        assert_eq!(scanned.items, 3);
        let parts = bodies(text, &scanned);
        assert_eq!(
            parts,
            [
                "{\"audio_url\":\"a\"}\n\n{\"audio_url\":\"b\"}\n  \n",
                "{\"audio_url\":\"c\"}"
            ]
        );
        assert_eq!(scanned.chunks[0].first_line, 2);
        assert_eq!(scanned.chunks[1].first_line, 6);
        // Leading blank lines are sent with no request.
        assert_eq!(scanned.chunks[0].start, 1);
    }

    #[test]
    fn bad_lines_are_reported_with_file_line_numbers() {
        let text = "{\"audio_url\":\"a\",\"custom_id\":\"x\"}\n\
                    not json\n\
                    {\"custom_id\":\"y\"}\n\
                    {\"audio_url\":\"b\",\"custom_id\":\"x\"}\n\
                    {\"audio_url\":\"c\",\"custom_id\":\"x\"}\n";
        // Lines 1 and 4 share a request: the repeat is an error. Line 5 starts the
        // next request (limit 4 items), where "x" is new.
        let Err(ScanError::Invalid { lines, count }) = scan(text.as_bytes(), 4) else {
            panic!("bad lines accepted");
        };
        assert_eq!(count, 3);
        let numbers: Vec<u64> = lines.iter().map(|l| l.line).collect();
        assert_eq!(numbers, [2, 3, 4]);
        assert!(lines[1].message.contains("audio_url"));
        assert!(lines[2].message.contains("custom_id 'x'"));
    }

    #[test]
    fn an_empty_manifest_is_refused() {
        assert!(matches!(
            scan("\n \n".as_bytes(), 10),
            Err(ScanError::Empty)
        ));
    }

    #[test]
    fn the_digest_follows_the_content() {
        let a = scan(manifest(3).as_bytes(), 10).unwrap();
        let b = scan(manifest(3).as_bytes(), 10).unwrap();
        let c = scan(manifest(4).as_bytes(), 10).unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_ne!(a.sha256, c.sha256);
        assert_eq!(a.sha256, <[u8; 32]>::from(Sha256::digest(manifest(3))));
    }
}
