//! The `voxq` binary's behaviour that needs no API: the command line, exit codes, and
//! inputs refused before any request. (Requests against the real API are end-to-end
//! tests in `tests/`.)

use std::path::PathBuf;
use std::process::{Command, Output};

fn voxq(args: &[&str], url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voxq"))
        .args(args)
        .env("VOXQ_URL", url)
        .env("VOXQ_API_KEY", format!("vxq_{}", "0".repeat(64)))
        .output()
        .expect("run voxq")
}

/// A URL nothing listens on: any request would fail (after retries) with exit code 3.
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("voxq-cli-test-{}", std::process::id()))
        .join(format!("{:?}", std::thread::current().id()).replace(['(', ')'], ""));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_documents_the_exit_codes() {
    let output = voxq(&["--help"], &closed_url());
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for code in [
        "0  done",
        "1  local error",
        "2  invalid command line",
        "3  the API",
    ] {
        assert!(help.contains(code), "help lacks '{code}':\n{help}");
    }
    for command in ["submit", "watch", "results", "batches", "reprocess", "job"] {
        assert!(help.contains(command), "help lacks '{command}'");
    }
}

#[test]
fn a_missing_key_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_voxq"))
        .args(["batches"])
        .env_remove("VOXQ_API_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("VOXQ_API_KEY"));
}

#[test]
fn an_invalid_manifest_is_refused_before_any_request() {
    let dir = scratch();
    let manifest = dir.join("items.jsonl");
    std::fs::write(
        &manifest,
        "{\"audio_url\":\"s3://b/a.ogg\",\"custom_id\":\"a\"}\n\
         {\"audio_url\":\"s3://b/b.ogg\",\"custom_id\":\"a\"}\n\
         {\"custom_id\":\"c\"}\n",
    )
    .unwrap();
    // Nothing listens at the URL: a request would end in exit code 3, not 1.
    let output = voxq(&["submit", manifest.to_str().unwrap()], &closed_url());
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("items.jsonl:2: custom_id 'a'"), "{err}");
    assert!(err.contains("items.jsonl:3: not an item"), "{err}");
    assert!(
        err.contains("2 invalid line(s); nothing was submitted"),
        "{err}"
    );
    assert!(output.stdout.is_empty(), "no batch id printed");
}

#[test]
fn a_directory_without_audio_is_a_local_error() {
    let dir = scratch().join("no-audio");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("readme.txt"), "x").unwrap();
    std::fs::write(dir.join("empty.ogg"), "").unwrap();
    let output = voxq(&["submit", dir.to_str().unwrap()], &closed_url());
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("skipped 'empty.ogg': empty file"), "{err}");
    assert!(err.contains("no audio files under"), "{err}");
}

#[test]
fn an_unreachable_api_exits_with_code_3() {
    // Connection refused is retried (1 + 2 + 4 + 8 s) before giving up.
    let output = voxq(
        &["watch", "0b0f7c4e-5b0e-4c56-9d4e-2a0a7c1d2e3f"],
        &closed_url(),
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert!(
        err.contains("error: batch 0b0f7c4e-5b0e-4c56-9d4e-2a0a7c1d2e3f: no answer from the API"),
        "{err}"
    );
}
