//! Fuzzes the audio decoder: any bytes, under any file-name hint, must give audio or
//! a typed error; a panic inside a codec is caught and reported, never propagated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxq_shared::audio::{decode_bytes, DecodeLimits};

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
    // Either result is fine; reaching here without unwinding is the property.
    let _ = decode_bytes(bytes.to_vec(), hint, &limits);
});
