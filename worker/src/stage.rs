//! Pipeline stages, one per file, each a small struct with a typed input and output.

pub mod decode;
pub mod fetch;
pub mod rubric;
pub mod score;
pub mod summarize;
pub mod transcribe;
