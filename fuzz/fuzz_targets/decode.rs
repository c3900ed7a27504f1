//! Fuzzes the audio decoder: any bytes, under any file-name hint, must give audio or
//! a typed error. The product catches a panicking codec and reports `decoder-panic`;
//! here a caught panic still counts as a finding, so codec bugs are not hidden.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxq_audio::{decode_bytes, DecodeError, DecodeLimits};

const HINTS: [Option<&str>; 8] = [
    None,
    Some("ogg"),
    Some("webm"),
    Some("m4a"),
    Some("mp3"),
    Some("flac"),
    Some("wav"),
    Some("opus"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let limits = DecodeLimits {
        max_bytes: 1 << 20,
        max_duration_s: 60.0,
    };
    let hint = HINTS[usize::from(selector) % HINTS.len()];
    if let Err(e @ DecodeError::Panicked { .. }) = decode_bytes(bytes.to_vec(), hint, &limits) {
        panic!("a codec panicked on this input: {e}");
    }
});
