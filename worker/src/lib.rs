//! voxq's worker: turns voice messages into transcripts.
//!
//! [`pipeline`] is the one pipeline (fetch → decode → transcribe → score → summarize →
//! rubric) whose stages live one per file in [`stage`]. [`local`] runs it over files on
//! disk for `voxq-worker transcribe` (no services needed); [`service`] runs it for jobs
//! from the Redis queue (`voxq-worker run`). [`whisper`] is the local CTranslate2
//! Whisper engine; [`cpu`] measures per-job CPU time; [`output`] renders results as
//! JSONL, text, SRT, VTT or a table.

pub mod cpu;
pub mod local;
pub mod output;
pub mod pipeline;
pub mod service;
pub mod stage;
pub mod whisper;
