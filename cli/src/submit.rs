//! `voxq submit`: a directory, an `s3://` prefix or a JSONL manifest becomes one or more
//! batches. Bodies are streamed from the files; each request carries an
//! `Idempotency-Key` (see `idempotency.rs`), so running the same command again after a
//! failure submits only what is missing.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::{header, Body, Method};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::api::{Api, ApiFailure, Repeat};
use crate::idempotency::{chunk_key, Identity};
use crate::manifest::{self, Chunk, ScanError};
use crate::options::JobOptionArgs;
use crate::walk::{self, AudioFile};
use crate::watch::Batch;

#[derive(clap::Args, Debug)]
pub(crate) struct SubmitArgs {
    /// A directory of audio files, an s3://bucket/prefix/, or a JSONL manifest
    /// (.jsonl or .ndjson, one {"audio_url", "custom_id"?, ...} per line)
    input: String,
    /// Lane: bulk or interactive
    #[arg(long, default_value = "bulk")]
    lane: String,
    #[command(flatten)]
    options: JobOptionArgs,
    /// Base of the requests' Idempotency-Keys (`<key>-<request index>`); default: a
    /// digest of the input, its split into requests and the options
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Most files per request when submitting a directory (requests also stay under
    /// 100 MB of audio)
    #[arg(long, default_value_t = 200,
          value_parser = clap::value_parser!(u16).range(1..=walk::MAX_FILES_PER_REQUEST as i64))]
    chunk: u16,
    /// Follow the new batches until they finish (as `voxq watch`)
    #[arg(long)]
    watch: bool,
}

pub(crate) async fn run(api: &Api, args: SubmitArgs) -> anyhow::Result<()> {
    let ids = if args.input.starts_with("s3://") {
        submit_source(api, &args).await?
    } else {
        let path = PathBuf::from(&args.input);
        let metadata =
            std::fs::metadata(&path).with_context(|| format!("cannot read '{}'", args.input))?;
        if metadata.is_dir() {
            submit_directory(api, &args, &path).await?
        } else if is_manifest(&path) {
            submit_manifest(api, &args, &path).await?
        } else {
            anyhow::bail!(
                "'{}' is neither a directory, an s3:// prefix nor a .jsonl/.ndjson manifest",
                args.input
            );
        }
    };
    if args.watch {
        crate::watch::run(api, &ids).await?;
    }
    Ok(())
}

fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jsonl" | "ndjson"))
}

/// The identity every kind shares: the options and the lane.
fn identity(kind: &str, args: &SubmitArgs) -> Identity {
    let mut identity = Identity::new(kind);
    identity
        .part(args.lane.as_bytes())
        .part(args.options.json().to_string().as_bytes());
    identity
}

fn key_base(args: &SubmitArgs, identity: Identity) -> String {
    match &args.idempotency_key {
        Some(key) => key.clone(),
        None => identity.base(),
    }
}

/// Prints a new batch's id (stdout, for scripts) and keeps it.
fn created(ids: &mut Vec<uuid::Uuid>, batch: &Batch) {
    println!("{}", batch.id);
    ids.push(batch.id);
}

/// Context for a failed request of a submission made of several.
fn failed_request(index: usize, count: usize) -> String {
    if index > 0 {
        eprintln!(
            "voxq: the {index} request(s) before this one were submitted; running the same \
             command again submits the rest (the earlier ones are recognised by their \
             Idempotency-Key)"
        );
    }
    format!("request {} of {count}", index + 1)
}

async fn submit_source(api: &Api, args: &SubmitArgs) -> anyhow::Result<Vec<uuid::Uuid>> {
    let mut identity = identity("s3", args);
    identity.part(args.input.as_bytes());
    let key = chunk_key(&key_base(args, identity), 0);
    let body = serde_json::json!({
        "source": args.input,
        "options": args.options.json(),
        "lane": args.lane,
    });
    let batch: Batch = api
        .post_json("/v1/batches", &body, Some(&key), Repeat::Safe)
        .await?;
    let mut ids = Vec::new();
    created(&mut ids, &batch);
    Ok(ids)
}

async fn submit_manifest(
    api: &Api,
    args: &SubmitArgs,
    path: &Path,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    let scanned = {
        let owned = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&owned)?;
            Ok::<_, io::Error>(manifest::scan(
                io::BufReader::with_capacity(1 << 20, file),
                manifest::MAX_ITEMS_PER_REQUEST,
            ))
        })
        .await?
        .with_context(|| format!("cannot read '{}'", path.display()))?
    };
    let manifest = match scanned {
        Ok(manifest) => manifest,
        Err(ScanError::Io(e)) => {
            return Err(e).with_context(|| format!("cannot read '{}'", path.display()))
        }
        Err(ScanError::Empty) => anyhow::bail!("'{}' holds no items", path.display()),
        Err(ScanError::Invalid { lines, count }) => {
            for bad in &lines {
                eprintln!("{}:{}: {}", path.display(), bad.line, bad.message);
            }
            anyhow::bail!(
                "'{}' has {count} invalid line(s); nothing was submitted",
                path.display()
            );
        }
    };
    let mut identity = identity("manifest", args);
    identity
        .part(&manifest.sha256)
        .number(manifest::MAX_ITEMS_PER_REQUEST);
    let base = key_base(args, identity);
    let mut query = args.options.pairs();
    query.push(("lane", args.lane.clone()));
    let count = manifest.chunks.len();
    if count > 1 {
        eprintln!(
            "voxq: {} items in {count} requests of at most {}",
            manifest.items,
            manifest::MAX_ITEMS_PER_REQUEST
        );
    }
    let mut ids = Vec::new();
    for (index, chunk) in manifest.chunks.iter().enumerate() {
        let key = chunk_key(&base, index);
        let sent = api
            .send(Repeat::Safe, || {
                api.request(Method::POST, "/v1/batches")
                    .query(&query)
                    .header(header::CONTENT_TYPE, "application/x-ndjson")
                    .header(header::CONTENT_LENGTH, chunk.end - chunk.start)
                    .header("Idempotency-Key", &key)
                    .body(Body::wrap_stream(file_range(
                        path.to_path_buf(),
                        chunk.start,
                        chunk.end - chunk.start,
                    )))
            })
            .await;
        let batch: Result<Batch, ApiFailure> = match sent {
            Ok(response) => crate::api::json_of(response).await,
            Err(failure) => Err(failure),
        };
        match batch {
            Ok(batch) => created(&mut ids, &batch),
            Err(failure) => {
                report_bad_lines(path, chunk, &failure);
                return Err(failure).context(failed_request(index, count));
            }
        }
    }
    Ok(ids)
}

/// The API's rejected lines, numbered as in the file.
fn report_bad_lines(path: &Path, chunk: &Chunk, failure: &ApiFailure) {
    if let ApiFailure::Api { errors, .. } = failure {
        for error in errors {
            eprintln!(
                "{}:{}: {}: {}",
                path.display(),
                chunk.file_line(error.line),
                error.code,
                error.message
            );
        }
    }
}

async fn submit_directory(
    api: &Api,
    args: &SubmitArgs,
    dir: &Path,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    let walked = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || walk::audio_files(&dir)).await?
    };
    let (files, skipped) = walked.with_context(|| format!("cannot read '{}'", dir.display()))?;
    if skipped.not_audio > 0 {
        eprintln!(
            "voxq: skipped {} file(s) without an audio ending",
            skipped.not_audio
        );
    }
    for name in &skipped.empty {
        eprintln!("voxq: skipped '{name}': empty file");
    }
    for name in &skipped.unnamable {
        eprintln!("voxq: skipped '{name}': a name that cannot be a custom_id (quote, backslash, control character or not UTF-8)");
    }
    if files.is_empty() {
        anyhow::bail!("no audio files under '{}'", dir.display());
    }
    let max_files = usize::from(args.chunk);
    let sizes: Vec<u64> = files.iter().map(|f| f.size).collect();
    let ranges = walk::chunks(&sizes, max_files, walk::MAX_BYTES_PER_REQUEST);
    let mut identity = identity("dir", args);
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    identity
        .part(canonical.to_string_lossy().as_bytes())
        .number(max_files as u64)
        .number(walk::MAX_BYTES_PER_REQUEST);
    for file in &files {
        identity
            .part(file.relative.as_bytes())
            .number(file.size)
            .part(&file.modified_ns.to_le_bytes());
    }
    let base = key_base(args, identity);
    let mut fields = vec![("lane", args.lane.clone())];
    fields.extend(args.options.pairs());
    let count = ranges.len();
    let mut ids = Vec::new();
    for (index, range) in ranges.into_iter().enumerate() {
        let chunk = &files[range];
        let key = chunk_key(&base, index);
        let bytes: u64 = chunk.iter().map(|f| f.size).sum();
        eprintln!(
            "voxq: request {} of {count}: {} file(s), {:.1} MB",
            index + 1,
            chunk.len(),
            bytes as f64 / 1e6
        );
        let batch = upload(api, &key, &fields, chunk)
            .await
            .with_context(|| failed_request(index, count))?;
        created(&mut ids, &batch);
    }
    Ok(ids)
}

/// One multipart request of `files`.
async fn upload(
    api: &Api,
    key: &str,
    fields: &[(&str, String)],
    files: &[AudioFile],
) -> Result<Batch, ApiFailure> {
    // The boundary follows from the key: the same request is always the same bytes.
    let boundary = format!(
        "voxq-{}",
        &hex::encode(Sha256::digest(key.as_bytes()))[..32]
    );
    let names: Vec<(&str, &str)> = files
        .iter()
        .map(|f| (f.relative.as_str(), walk::content_type(&f.relative)))
        .collect();
    let layout = walk::MultipartLayout::new(&boundary, fields, &names);
    let length = layout.content_length(files.iter().map(|f| f.size));
    let body = || {
        let mut pieces: Vec<BoxStream<'static, io::Result<Vec<u8>>>> = Vec::new();
        pieces.push(text(layout.head.clone()));
        for (file, header) in files.iter().zip(&layout.file_headers) {
            pieces.push(text(header.clone()));
            pieces.push(file_range(file.path.clone(), 0, file.size).boxed());
            pieces.push(text("\r\n".into()));
        }
        pieces.push(text(layout.tail.clone()));
        Body::wrap_stream(stream::iter(pieces).flatten())
    };
    let response = api
        .send(Repeat::Safe, || {
            api.request(Method::POST, "/v1/batches")
                .header(header::CONTENT_TYPE, layout.content_type())
                .header(header::CONTENT_LENGTH, length)
                .header("Idempotency-Key", key)
                .body(body())
        })
        .await?;
    crate::api::json_of(response).await
}

fn text(text: String) -> BoxStream<'static, io::Result<Vec<u8>>> {
    stream::once(async move { Ok(text.into_bytes()) }).boxed()
}

/// `len` bytes of the file from `start`, read as the request is sent (the file is
/// opened on the first read, so a request of many files holds one open at a time). A
/// file shorter than that is an error: the request must not go out short.
fn file_range(
    path: PathBuf,
    start: u64,
    len: u64,
) -> impl futures::Stream<Item = io::Result<Vec<u8>>> + Send + 'static {
    const READ: u64 = 256 * 1024;
    stream::try_unfold((None::<tokio::fs::File>, len), move |(file, remaining)| {
        let path = path.clone();
        async move {
            if remaining == 0 {
                return Ok(None);
            }
            let mut file = match file {
                Some(file) => file,
                None => {
                    let mut file = tokio::fs::File::open(&path).await?;
                    file.seek(io::SeekFrom::Start(start)).await?;
                    file
                }
            };
            let mut buf = vec![0u8; remaining.min(READ) as usize];
            let read = file.read(&mut buf).await?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("'{}' became shorter while it was sent", path.display()),
                ));
            }
            buf.truncate(read);
            Ok(Some((buf, (Some(file), remaining - read as u64))))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_range_streams_exactly_its_bytes() {
        let path = std::env::temp_dir().join(format!("voxq-cli-range-{}", uuid::Uuid::new_v4()));
        let content: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let read: Vec<Vec<u8>> = file_range(path.clone(), 1000, 600_000)
            .map(|piece| piece.unwrap())
            .collect()
            .await;
        assert!(read.len() > 1, "read in pieces, not at once");
        assert_eq!(read.concat(), &content[1000..601_000]);
        // Asking for more than the file holds fails instead of sending a short body.
        let short: Vec<io::Result<Vec<u8>>> =
            file_range(path.clone(), 600_000, 200_000).collect().await;
        assert_eq!(
            short.last().unwrap().as_ref().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn manifests_are_recognised_by_their_ending() {
        assert!(is_manifest(Path::new("a/items.jsonl")));
        assert!(is_manifest(Path::new("items.NDJSON")));
        assert!(!is_manifest(Path::new("note.ogg")));
        assert!(!is_manifest(Path::new("jsonl")));
    }
}
