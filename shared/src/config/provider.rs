//! Settings of remote model providers and their circuit breakers: plain data, read
//! with the rest of [`Config`](super::Config) and used by the `voxq-providers` crate.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The environment variable a provider's `api_key_env` names is not set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("provider '{provider}': environment variable '{var}' holding the API key is not set")]
pub struct MissingApiKey {
    pub provider: String,
    pub var: String,
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
    pub fn api_key(&self) -> Result<Option<String>, MissingApiKey> {
        let Some(var) = self.api_key_env.as_deref().filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_string())),
            _ => Err(MissingApiKey {
                provider: self.name.clone(),
                var: var.to_string(),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive fallback-worthy failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before letting one trial through, ms.
    pub cool_down_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            cool_down_ms: 30_000,
        }
    }
}

impl BreakerConfig {
    pub fn cool_down(&self) -> Duration {
        Duration::from_millis(self.cool_down_ms)
    }
}
