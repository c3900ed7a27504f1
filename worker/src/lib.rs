//! voxq's worker: turns voice messages into transcripts.
//!
//! The pipeline stages live one per file in [`stage`]; [`local`] runs them over files on
//! disk for the `voxq-worker transcribe` command (no services needed); [`whisper`] is the
//! local CTranslate2 Whisper engine; [`output`] renders results as JSONL, text, SRT, VTT
//! or a table.

pub mod local;
pub mod output;
pub mod stage;
pub mod whisper;
