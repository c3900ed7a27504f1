//! Pipeline stages, one per file, each a small struct with a typed input and output.

pub mod decode;
pub mod transcribe;
