//! Remote model providers: the [`Transcriber`] and [`ChatModel`] traits, their errors and
//! configuration, OpenAI-compatible HTTP clients, a circuit breaker per provider and
//! ordered fallback chains.
//!
//! The traits take and return domain types only; each vendor's wire format is private to
//! its own file (`providers/openai.rs`). A chain tries its providers in order and moves on
//! when one fails in a way another provider might not ([`ProviderError::is_fallback_worthy`]),
//! skipping providers whose breaker is open.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::domain::Transcript;

mod breaker;
mod chain;
mod openai;

pub use breaker::{
    BreakerConfig, BreakerState, CircuitBreaker, Clock, ManualClock, Permit, SystemClock,
};
pub use chain::{
    Attempt, Chain, ChainError, ChatChain, ChatTiers, Described, Served, TranscriberChain,
};
pub use openai::{OpenAiChat, OpenAiTranscriber};

/// Speech to text. Implemented by the OpenAI-compatible client here and by the local
/// engine in the worker.
pub trait Transcriber: Send + Sync {
    /// The configured provider name (`openai`, `groq`, `local`…).
    fn name(&self) -> &str;
    /// The model asked for.
    fn model(&self) -> &str;
    /// What a call costs; free unless configured.
    fn price(&self) -> Price {
        Price::default()
    }
    fn transcribe<'a>(
        &'a self,
        request: &'a TranscriptionRequest,
    ) -> BoxFuture<'a, Result<Transcript, ProviderError>>;
}

/// A chat-completion model.
pub trait ChatModel: Send + Sync {
    fn name(&self) -> &str;
    fn model(&self) -> &str;
    fn price(&self) -> Price {
        Price::default()
    }
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;
}

/// One recording to transcribe.
#[derive(Debug, Clone)]
pub struct TranscriptionRequest {
    pub audio: Bytes,
    /// File name sent with the audio; remote APIs tell the format by its extension
    /// (`note.ogg`).
    pub file_name: String,
    /// ISO 639-1 code; detected when absent.
    pub language: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// A JSON schema the answer must follow (structured output).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonSchema {
    /// `a-z`, `A-Z`, `0-9`, `_` and `-`, at most 64 characters.
    pub name: String,
    pub schema: serde_json::Value,
    /// Ask the provider to enforce the schema exactly (OpenAI's strict mode, which needs
    /// `additionalProperties: false` and every property required).
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// When set, the answer is parsed as JSON into [`ChatResponse::json`].
    pub schema: Option<JsonSchema>,
    /// Not sent when absent.
    pub max_tokens: Option<u32>,
    /// Not sent when absent (reasoning models refuse any other than the default).
    pub temperature: Option<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The answer's text.
    pub content: String,
    /// The answer parsed as JSON; present when the request had a schema.
    pub json: Option<serde_json::Value>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// The model as the provider reported it (often a dated snapshot of the one asked for).
    pub model: String,
}

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("no answer within {} ms", .after.as_millis())]
    Timeout { after: Duration },
    #[error("rate limited (429){}: {message}", retry_after_text(.retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("server error {status}: {message}")]
    Server { status: u16, message: String },
    #[error("request refused with {status}: {message}")]
    Client { status: u16, message: String },
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    #[error("network error: {0}")]
    Network(String),
    #[error("circuit breaker of provider '{provider}' is open")]
    CircuitOpen { provider: String },
    /// The provider cannot be built from its configuration (bad URL, missing key).
    #[error("provider '{provider}' is misconfigured: {message}")]
    Config { provider: String, message: String },
}

fn retry_after_text(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(", retry after {} s", d.as_secs_f64()),
        None => String::new(),
    }
}

impl ProviderError {
    /// Whether another provider may succeed where this one failed.
    ///
    /// Everything is, except client errors our request caused: a 400 or 422 would fail
    /// the same way everywhere, so the chain stops there. 401/403 (a key this provider
    /// refuses), 404 (a model or path it lacks), 408 and 413 (its own size limit) are about
    /// this provider, so the next one is tried.
    pub fn is_fallback_worthy(&self) -> bool {
        match self {
            Self::Client { status, .. } => matches!(status, 401 | 403 | 404 | 408 | 413),
            _ => true,
        }
    }

    /// Whether the same call may succeed later (the job is worth retrying).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout { .. }
            | Self::RateLimited { .. }
            | Self::Server { .. }
            | Self::Network(_)
            | Self::CircuitOpen { .. }
            | Self::InvalidResponse(_) => true,
            Self::Client { status, .. } => *status == 408,
            Self::Config { .. } => false,
        }
    }

    /// Stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "provider-timeout",
            Self::RateLimited { .. } => "provider-rate-limited",
            Self::Server { .. } => "provider-server-error",
            Self::Client { .. } => "provider-request-refused",
            Self::InvalidResponse(_) => "provider-invalid-response",
            Self::Network(_) => "provider-unreachable",
            Self::CircuitOpen { .. } => "provider-circuit-open",
            Self::Config { .. } => "provider-misconfigured",
        }
    }
}

/// Prices of one provider, USD.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    pub in_per_mtok: f64,
    pub out_per_mtok: f64,
    pub per_audio_minute: f64,
}

impl Price {
    pub fn chat_cost_usd(&self, tokens_in: u64, tokens_out: u64) -> f64 {
        (tokens_in as f64 * self.in_per_mtok + tokens_out as f64 * self.out_per_mtok) / 1e6
    }

    pub fn audio_cost_usd(&self, duration_s: f64) -> f64 {
        duration_s.max(0.0) / 60.0 * self.per_audio_minute
    }
}

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// OpenAI's `/v1/chat/completions` and `/v1/audio/transcriptions` (OpenAI, Groq,
    /// vLLM, speaches, Ollama, llama.cpp…).
    #[default]
    OpenaiCompatible,
}

/// Which request field carries the answer-length limit. OpenAI deprecated `max_tokens`
/// and its reasoning models refuse it; many compatible servers know only `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensField {
    #[default]
    MaxTokens,
    MaxCompletionTokens,
}

/// One configured provider (an entry of an ordered list per task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name recorded with each stage it serves (`openai`, `groq`…).
    pub name: String,
    pub kind: ProviderKind,
    /// API root including the version: `https://api.openai.com/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the API key; none sends no
    /// `Authorization` header (local servers). The key itself never goes in configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    pub model: String,
    /// Whole-request timeout, milliseconds.
    pub timeout_ms: u64,
    /// USD per million input tokens.
    pub price_in_per_mtok: f64,
    /// USD per million output tokens.
    pub price_out_per_mtok: f64,
    /// USD per minute of audio transcribed.
    pub price_per_audio_minute: f64,
    pub max_tokens_field: MaxTokensField,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            name: "openai".into(),
            kind: ProviderKind::OpenaiCompatible,
            base_url: "https://api.openai.com/v1".into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            model: String::new(),
            timeout_ms: 30_000,
            price_in_per_mtok: 0.0,
            price_out_per_mtok: 0.0,
            price_per_audio_minute: 0.0,
            max_tokens_field: MaxTokensField::MaxTokens,
        }
    }
}

impl ProviderConfig {
    pub fn price(&self) -> Price {
        Price {
            in_per_mtok: self.price_in_per_mtok,
            out_per_mtok: self.price_out_per_mtok,
            per_audio_minute: self.price_per_audio_minute,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// The API key from the environment variable `api_key_env` names.
    pub fn api_key(&self) -> Result<Option<String>, ProviderError> {
        let Some(var) = self.api_key_env.as_deref().filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_string())),
            _ => Err(ProviderError::Config {
                provider: self.name.clone(),
                message: format!("environment variable '{var}' holding the API key is not set"),
            }),
        }
    }
}

/// Builds the chat client a configuration describes (reads the API key).
pub fn chat_model(config: &ProviderConfig) -> Result<Arc<dyn ChatModel>, ProviderError> {
    match config.kind {
        ProviderKind::OpenaiCompatible => Ok(Arc::new(OpenAiChat::from_config(config)?)),
    }
}

/// Builds the transcription client a configuration describes (reads the API key).
pub fn transcriber(config: &ProviderConfig) -> Result<Arc<dyn Transcriber>, ProviderError> {
    match config.kind {
        ProviderKind::OpenaiCompatible => Ok(Arc::new(OpenAiTranscriber::from_config(config)?)),
    }
}
