//! voxq shared library: domain types, audio decoding, configuration, and the database,
//! queue and object-storage code both binaries use.

pub mod audio;
pub mod cache;
pub mod config;
pub mod db;
pub mod domain;
pub mod objects;
pub mod providers;
pub mod queue;

/// An error and its causes as one readable line: `cannot read the audio: No such file`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
