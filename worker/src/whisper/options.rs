//! Engine and decoding options. Decoding defaults are faster-whisper's `transcribe()`
//! defaults; the one addition, `skip_silence`, only changes recordings with no speech
//! energy (set it to false to reproduce the reference exactly).

use serde::{Deserialize, Serialize};

/// How the model is loaded and run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// CTranslate2 compute type: int8 (default on CPU), int8_float32, float32, int16, default, auto.
    pub compute_type: String,
    /// Intra-op threads per model replica (0 lets CTranslate2 choose).
    pub threads: usize,
    /// Model replicas able to run at once; CTranslate2 copies the weights into each (one
    /// per listed device index). Callers use as many threads as replicas.
    pub replicas: usize,
    /// How many recordings share one encoder/decoder call for their first window.
    pub batch_size: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            compute_type: "int8".into(),
            threads: 0,
            replicas: 1,
            batch_size: 1,
        }
    }
}

/// Decoding options, each overridable; defaults equal faster-whisper's, plus `skip_silence`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DecodeOptions {
    /// ISO 639-1 code; `None` detects it on multilingual models (English-only: "en").
    pub language: Option<String>,
    pub beam_size: usize,
    pub best_of: usize,
    pub patience: f32,
    pub length_penalty: f32,
    pub repetition_penalty: f32,
    pub no_repeat_ngram_size: usize,
    /// Temperatures tried in order until a result passes the thresholds below.
    pub temperatures: Vec<f32>,
    pub compression_ratio_threshold: Option<f64>,
    pub log_prob_threshold: Option<f64>,
    pub no_speech_threshold: Option<f64>,
    pub condition_on_previous_text: bool,
    pub prompt_reset_on_temperature: f32,
    pub suppress_blank: bool,
    /// Seconds: the latest the first timestamp may be.
    pub max_initial_timestamp: f64,
    /// Skip the model for recordings with no speech energy (not in faster-whisper).
    pub skip_silence: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            language: None,
            beam_size: 5,
            best_of: 5,
            patience: 1.0,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            log_prob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: true,
            prompt_reset_on_temperature: 0.5,
            suppress_blank: true,
            max_initial_timestamp: 1.0,
            skip_silence: true,
        }
    }
}
