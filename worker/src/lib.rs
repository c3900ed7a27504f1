//! voxq's worker: turns voice messages into transcripts.
//!
//! The pipeline stages live one per file in [`stage`]; [`local`] runs them over files on
//! disk for the `voxq-worker transcribe` command (no services needed); [`service`] runs
//! them for jobs from the Redis queue (`voxq-worker run`); [`whisper`] is the local
//! CTranslate2 Whisper engine; [`output`] renders results as JSONL, text, SRT, VTT or a
//! table.

pub mod local;
pub mod output;
pub mod service;
pub mod stage;
pub mod whisper;
