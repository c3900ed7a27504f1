//! Directories of audio files: the walk (recursive, hidden entries skipped, sorted so
//! that every run chunks alike), the split into requests bounded by file count and
//! bytes, and the multipart body of one request, built by hand so that the same files
//! always give the same bytes (a fixed boundary), whatever the attempt.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// File endings taken as audio (those the worker's local mode picks up).
pub(crate) const AUDIO_EXTENSIONS: &[&str] = &[
    "ogg", "oga", "opus", "webm", "weba", "mka", "mkv", "m4a", "mp4", "aac", "mp3", "flac", "wav",
    "wave", "caf",
];

/// Most bytes of audio in one request.
pub(crate) const MAX_BYTES_PER_REQUEST: u64 = 100 * 1024 * 1024;
/// Most files the API takes in one multipart request.
pub(crate) const MAX_FILES_PER_REQUEST: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AudioFile {
    pub path: PathBuf,
    /// Path relative to the directory, `/`-separated: the item's custom_id.
    pub relative: String,
    pub size: u64,
    /// Modification time (ns since the epoch), part of the submission's identity.
    pub modified_ns: u128,
}

/// What the walk left out, to tell the user.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Skipped {
    /// Files without an audio ending.
    pub not_audio: u64,
    /// Empty files (the API refuses an empty part, and with it the whole request).
    pub empty: Vec<String>,
    /// Names that cannot be a multipart file name unambiguously (not UTF-8, or with a
    /// quote, backslash or control character).
    pub unnamable: Vec<String>,
}

/// Every audio file under `dir`, sorted by relative path. Hidden files and directories
/// (name starting with `.`) are skipped; symbolic links to files are followed, links to
/// directories are not (no cycles).
pub(crate) fn audio_files(dir: &Path) -> io::Result<(Vec<AudioFile>, Skipped)> {
    let mut files = Vec::new();
    let mut skipped = Skipped::default();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, prefix)) = pending.pop() {
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let name = entry.file_name();
            let shown = name.to_string_lossy().into_owned();
            if shown.starts_with('.') {
                continue;
            }
            let file_type = entry.file_type()?;
            let is_dir = file_type.is_dir();
            let metadata = if file_type.is_symlink() {
                match std::fs::metadata(entry.path()) {
                    Ok(m) if m.is_file() => m,
                    // Dangling links and links to directories.
                    _ => continue,
                }
            } else if is_dir || file_type.is_file() {
                entry.metadata()?
            } else {
                continue;
            };
            let Some(name) = name.to_str() else {
                skipped.unnamable.push(format!("{prefix}{shown}"));
                continue;
            };
            let relative = format!("{prefix}{name}");
            if is_dir {
                pending.push((entry.path(), format!("{relative}/")));
                continue;
            }
            if !is_audio(name) {
                skipped.not_audio += 1;
            } else if !nameable(name) {
                skipped.unnamable.push(relative);
            } else if metadata.len() == 0 {
                skipped.empty.push(relative);
            } else {
                let modified_ns = metadata
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                files.push(AudioFile {
                    path: entry.path(),
                    relative,
                    size: metadata.len(),
                    modified_ns,
                });
            }
        }
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok((files, skipped))
}

fn is_audio(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty() && AUDIO_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
    })
}

/// Whether a name can go in `filename="…"` and come back out of the API's multipart
/// parser unchanged.
fn nameable(name: &str) -> bool {
    !name
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
}

/// Consecutive runs of `sizes` with at most `max_files` files and `max_bytes` bytes each
/// (a single file larger than `max_bytes` goes alone).
pub(crate) fn chunks(sizes: &[u64], max_files: usize, max_bytes: u64) -> Vec<Range<usize>> {
    let max_files = max_files.max(1);
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        let count = i - start;
        if count > 0 && (count >= max_files || bytes + size > max_bytes) {
            ranges.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        ranges.push(start..sizes.len());
    }
    ranges
}

/// Content type of an audio file by its ending.
pub(crate) fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "ogg" | "oga" | "opus" => "audio/ogg",
        "webm" | "weba" => "audio/webm",
        "mka" | "mkv" => "audio/x-matroska",
        "m4a" | "mp4" => "audio/mp4",
        "aac" => "audio/aac",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "wav" | "wave" => "audio/wav",
        "caf" => "audio/x-caf",
        _ => "application/octet-stream",
    }
}

/// The pieces of a `multipart/form-data` body around the files' contents: the body is
/// `head`, then for each file its header, its bytes and `\r\n`, then `tail`.
#[derive(Debug)]
pub(crate) struct MultipartLayout {
    pub boundary: String,
    pub head: String,
    pub file_headers: Vec<String>,
    pub tail: String,
}

impl MultipartLayout {
    /// `fields` are the text fields (options), `files` the (file name, content type) of
    /// each file part, all named `file`.
    pub(crate) fn new(
        boundary: &str,
        fields: &[(&str, String)],
        files: &[(&str, &str)],
    ) -> MultipartLayout {
        let mut head = String::new();
        for (name, value) in fields {
            head.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        let file_headers = files
            .iter()
            .map(|(file_name, content_type)| {
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                     filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n"
                )
            })
            .collect();
        MultipartLayout {
            boundary: boundary.to_string(),
            head,
            file_headers,
            tail: format!("--{boundary}--\r\n"),
        }
    }

    /// The body's length given the files' sizes (in the order of `files`).
    pub(crate) fn content_length(&self, sizes: impl IntoIterator<Item = u64>) -> u64 {
        let files: u64 = self
            .file_headers
            .iter()
            .zip(sizes)
            .map(|(header, size)| header.len() as u64 + size + 2)
            .sum();
        self.head.len() as u64 + files + self.tail.len() as u64
    }

    pub(crate) fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("voxq-cli-walk-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(dir: &Path, relative: &str, bytes: usize) {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![7u8; bytes]).unwrap();
    }

    #[test]
    fn the_walk_finds_audio_recursively_and_skips_hidden_and_other_files() {
        let dir = scratch();
        write(&dir, "b.ogg", 3);
        write(&dir, "a/z.MP3", 5);
        write(&dir, "a/deep/c.wav", 4);
        write(&dir, "a/notes.txt", 9);
        write(&dir, ".hidden.ogg", 2);
        write(&dir, ".cache/x.ogg", 2);
        write(&dir, "a/.y.flac", 2);
        write(&dir, "empty.opus", 0);
        write(&dir, "say \"hi\".ogg", 1);
        write(&dir, ".ogg", 1);
        std::os::unix::fs::symlink(dir.join("b.ogg"), dir.join("link.ogg")).unwrap();
        std::os::unix::fs::symlink(dir.join("a"), dir.join("loop")).unwrap();

        let (files, skipped) = audio_files(&dir).unwrap();
        let found: Vec<(&str, u64)> = files
            .iter()
            .map(|f| (f.relative.as_str(), f.size))
            .collect();
        assert_eq!(
            found,
            [
                ("a/deep/c.wav", 4),
                ("a/z.MP3", 5),
                ("b.ogg", 3),
                ("link.ogg", 3)
            ]
        );
        assert_eq!(files[0].path, dir.join("a/deep/c.wav"));
        assert!(files.iter().all(|f| f.modified_ns > 0));
        assert_eq!(
            skipped,
            Skipped {
                not_audio: 1,
                empty: vec!["empty.opus".into()],
                unnamable: vec!["say \"hi\".ogg".into()],
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn chunks_are_bounded_by_count() {
        let sizes = vec![1u64; 450];
        let ranges = chunks(&sizes, 200, MAX_BYTES_PER_REQUEST);
        assert_eq!(ranges, [0..200, 200..400, 400..450]);
    }

    #[test]
    fn chunks_are_bounded_by_bytes() {
        let mb = 1024 * 1024;
        // 40 + 40 fit; the third 40 would exceed 100 MB.
        let sizes = [40 * mb, 40 * mb, 40 * mb, 150 * mb, 10 * mb, 90 * mb, 1];
        let ranges = chunks(&sizes, 200, MAX_BYTES_PER_REQUEST);
        assert_eq!(ranges, [0..2, 2..3, 3..4, 4..6, 6..7]);
        for range in &ranges {
            let bytes: u64 = sizes[range.clone()].iter().sum();
            assert!(bytes <= MAX_BYTES_PER_REQUEST || range.len() == 1);
        }
        assert!(chunks(&[], 10, 10).is_empty());
    }

    #[test]
    fn the_multipart_layout_adds_up() {
        let layout = MultipartLayout::new(
            "B0",
            &[
                ("lane", "bulk".into()),
                ("tasks", "transcribe,score".into()),
            ],
            &[("a/x.ogg", "audio/ogg"), ("y.mp3", "audio/mpeg")],
        );
        let mut body = layout.head.clone();
        for (header, content) in layout.file_headers.iter().zip(["abc", "defgh"]) {
            body.push_str(header);
            body.push_str(content);
            body.push_str("\r\n");
        }
        body.push_str(&layout.tail);
        assert_eq!(layout.content_length([3, 5]), body.len() as u64);
        assert_eq!(
            body,
            "--B0\r\nContent-Disposition: form-data; name=\"lane\"\r\n\r\nbulk\r\n\
             --B0\r\nContent-Disposition: form-data; name=\"tasks\"\r\n\r\ntranscribe,score\r\n\
             --B0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a/x.ogg\"\r\n\
             Content-Type: audio/ogg\r\n\r\nabc\r\n\
             --B0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"y.mp3\"\r\n\
             Content-Type: audio/mpeg\r\n\r\ndefgh\r\n\
             --B0--\r\n"
        );
        assert_eq!(layout.content_type(), "multipart/form-data; boundary=B0");
        assert_eq!(content_type("X.OPUS"), "audio/ogg");
    }
}
