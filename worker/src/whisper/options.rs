//! Engine and decoding options. Decoding defaults are faster-whisper's `transcribe()`
//! defaults; the one addition, `skip_silence`, only changes recordings with no speech
//! energy (set it to false to reproduce the reference exactly).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::vad::VadOptions;

/// CTranslate2's compute types for the CPU, spelled as CTranslate2 and faster-whisper
/// spell them (`int8_float32`), on the command line and in serialized options alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ComputeType {
    /// Weights in 8-bit integers: the fastest on CPU, and faster-whisper's choice there.
    #[default]
    Int8,
    /// 8-bit integer weights, other layers in 32-bit floats.
    Int8Float32,
    /// Full precision: the slowest.
    Float32,
    /// Weights in 16-bit integers.
    Int16,
    /// The type the model was converted with.
    Default,
    /// The fastest type the machine supports.
    Auto,
}

/// How the model is loaded and run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    pub compute_type: ComputeType,
    /// Intra-op threads per model replica (0 lets CTranslate2 choose).
    pub threads: usize,
    /// Model replicas able to run at once; CTranslate2 copies the weights into each (one
    /// per listed device index). Callers use as many threads as replicas.
    pub replicas: usize,
    /// How many recordings share one encoder/decoder call for their first window.
    pub batch_size: usize,
    /// The Silero VAD v6 model (`scripts/fetch-vad.sh`), read the first time a request
    /// asks for `vad_filter`.
    pub vad_model: PathBuf,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            compute_type: ComputeType::default(),
            threads: 0,
            replicas: 1,
            batch_size: 1,
            vad_model: PathBuf::from("models/silero_vad_v6.onnx"),
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
    /// Times of each word (`Segment::words`), from the alignment heads. As in
    /// faster-whisper, this also moves each window's end to its last word's end, so long
    /// recordings may be windowed (and transcribed) a little differently.
    pub word_timestamps: bool,
    /// Punctuation merged into the word that follows it (word timestamps).
    pub prepend_punctuations: String,
    /// Punctuation merged into the word before it (word timestamps).
    pub append_punctuations: String,
    /// 30-second windows the language may be detected on (multilingual models, no
    /// language given); more than one only matters below `language_detection_threshold`.
    pub language_detection_segments: usize,
    /// A window's top language is taken when its probability is above this; otherwise
    /// the next window is tried, and if none passes, the most frequent top language wins.
    pub language_detection_threshold: f64,
    /// Silero voice activity detection first: only speech is decoded, and times are
    /// mapped back to the original audio (faster-whisper's `vad_filter`).
    pub vad_filter: bool,
    /// How speech is told from silence (faster-whisper's `VadOptions` defaults).
    pub vad: VadOptions,
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
            word_timestamps: false,
            prepend_punctuations: "\"'“¿([{-".to_string(),
            append_punctuations: "\"'.。,，!！?？:：”)]}、".to_string(),
            language_detection_segments: 1,
            language_detection_threshold: 0.5,
            vad_filter: false,
            vad: VadOptions::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn compute_types_are_spelled_alike_by_clap_and_serde() {
        let spellings = [
            (ComputeType::Int8, "int8"),
            (ComputeType::Int8Float32, "int8_float32"),
            (ComputeType::Float32, "float32"),
            (ComputeType::Int16, "int16"),
            (ComputeType::Default, "default"),
            (ComputeType::Auto, "auto"),
        ];
        assert_eq!(spellings.len(), ComputeType::value_variants().len());
        for (value, name) in spellings {
            assert_eq!(
                ComputeType::from_str(name, false),
                Ok(value),
                "clap: {name}"
            );
            assert_eq!(serde_json::to_value(value).unwrap(), name, "serde: {name}");
            let parsed: ComputeType = serde_json::from_value(name.into()).unwrap();
            assert_eq!(parsed, value, "serde: {name}");
        }
        assert!(ComputeType::from_str("int4", false).is_err());
        assert!(serde_json::from_value::<ComputeType>("int4".into()).is_err());
        assert_eq!(EngineConfig::default().compute_type, ComputeType::Int8);
    }
}
