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

use shared::domain::Transcript;

mod breaker;
mod chain;
mod openai;

pub use breaker::{BreakerState, CircuitBreaker, Clock, ManualClock, Permit, SystemClock};
pub use chain::{
    Attempt, Chain, ChainError, ChatChain, ChatTiers, LinkStats, Served, TranscriberChain,
};
pub use openai::{OpenAiChat, OpenAiTranscriber};
pub use shared::config::provider::{
    BreakerConfig, MaxTokensField, MissingApiKey, Price, ProviderConfig, ProviderKind,
};

/// What every provider says of itself; a [`Chain`] records it with each result.
pub trait Described: Send + Sync {
    /// The configured provider name (`openai`, `groq`, `local`…).
    fn name(&self) -> &str;
    /// The model asked for.
    fn model(&self) -> &str;
    /// What a call costs; free unless configured.
    fn price(&self) -> Price {
        Price::default()
    }
}

/// Speech to text. Implemented by the OpenAI-compatible client here and by the local
/// engine in the worker.
pub trait Transcriber: Described {
    /// Whether it reads [`TranscriptionRequest::audio`], the original file (remote
    /// APIs), rather than the decoded samples (the local engine).
    fn needs_file(&self) -> bool {
        true
    }
    fn transcribe<'a>(
        &'a self,
        request: &'a TranscriptionRequest,
    ) -> BoxFuture<'a, Result<Transcript, ProviderError>>;
}

/// A chat-completion model.
pub trait ChatModel: Described {
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;
}

/// One recording to transcribe.
#[derive(Debug, Clone)]
pub struct TranscriptionRequest {
    /// The original file; empty when no provider of the chain needs it
    /// ([`Transcriber::needs_file`]).
    pub audio: Bytes,
    /// The decoded recording (16 kHz mono), for engines that run here.
    pub decoded: Option<Arc<audio::Audio>>,
    /// File name sent with the audio; remote APIs tell the format by its extension
    /// (`note.ogg`).
    pub file_name: String,
    /// ISO 639-1 code; detected when absent.
    pub language: Option<String>,
    /// The local engine's model, by its configured name (`JobOptions::model`); `None` is
    /// the `default` one. Remote providers use their configured model and ignore it.
    pub model: Option<String>,
    /// Word timestamps, voice activity detection and language detection settings. The
    /// local engine honours them all; remote providers ignore them.
    pub engine: shared::domain::EngineOptions,
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
    /// An engine running in this process refused or failed this recording (unsupported
    /// language, inference failure): another provider may do better, and the engine stays
    /// healthy (its breaker does not count it).
    #[error("{message}")]
    Local {
        code: &'static str,
        message: String,
        /// The error is about the client's request (e.g. its language), so its message
        /// may be shown to the client.
        about_input: bool,
    },
    /// The provider cannot be built from its configuration (bad URL, missing key).
    #[error("provider '{provider}' is misconfigured: {message}")]
    Config { provider: String, message: String },
}

impl From<MissingApiKey> for ProviderError {
    fn from(e: MissingApiKey) -> Self {
        let message = e.to_string();
        Self::Config {
            provider: e.provider,
            message,
        }
    }
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

    /// Whether the error says the provider itself is unwell (its breaker counts it): a
    /// fallback-worthy failure of a remote provider. A local engine failing one
    /// recording is not.
    pub fn is_provider_fault(&self) -> bool {
        self.is_fallback_worthy() && !matches!(self, Self::Local { .. })
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
            Self::Config { .. } | Self::Local { .. } => false,
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
            Self::Local { code, .. } => code,
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
