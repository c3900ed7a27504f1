//! Domain types shared by the API and the workers: transcripts and their segments.
//!
//! This module does no I/O: no database, HTTP or queue types belong here.

use serde::{Deserialize, Serialize};

/// One timed stretch of a transcript, as Whisper emits it between two timestamp tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Start time in seconds from the beginning of the audio.
    pub start: f64,
    /// End time in seconds.
    pub end: f64,
    /// Text of the segment, without leading or trailing white space.
    pub text: String,
    /// Average log-probability of the segment's tokens (higher is more confident).
    pub avg_logprob: f64,
    /// Probability that the window holding this segment has no speech.
    pub no_speech_prob: f64,
}

/// The result of transcribing one voice message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The whole text: the segments joined as the model spaced them.
    pub text: String,
    /// ISO 639-1 code of the spoken language (detected or given).
    pub language: String,
    /// Duration of the decoded audio in seconds.
    pub duration_s: f64,
    pub segments: Vec<Segment>,
}

impl Transcript {
    /// An empty transcript for audio with nothing to transcribe.
    pub fn empty(language: impl Into<String>, duration_s: f64) -> Self {
        Self {
            text: String::new(),
            language: language.into(),
            duration_s,
            segments: Vec::new(),
        }
    }
}
