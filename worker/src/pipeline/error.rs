//! Why a run of the pipeline produced no result: a stable code, what the client reads,
//! what the log reads, and whether trying again later may help.

use audio::DecodeError;
use providers::{ChainError, ProviderError};

#[derive(Debug, Clone, PartialEq)]
pub struct StageError {
    pub code: &'static str,
    /// What the client reads: a safe sentence, never an address, upstream body or
    /// internal name (those are in `detail`, which only the log and local mode see).
    pub message: String,
    pub detail: String,
    pub transient: bool,
}

impl StageError {
    /// An error about the client's own input (its file, its URL, its options): the
    /// message names what was wrong with it.
    pub fn input(code: &'static str, message: String) -> Self {
        Self {
            code,
            detail: message.clone(),
            message,
            transient: false,
        }
    }

    /// An error of the service or an upstream: the client reads the code's fixed
    /// sentence, the log gets `detail`.
    pub fn upstream(code: &'static str, detail: String, transient: bool) -> Self {
        Self {
            code,
            message: public_message(code).to_string(),
            detail,
            transient,
        }
    }

    /// A processing task panicked or was cancelled.
    pub fn internal(e: tokio::task::JoinError) -> Self {
        Self::upstream(
            "internal-error",
            format!("a processing task failed: {e}"),
            false,
        )
    }
}

impl From<DecodeError> for StageError {
    /// Decoding errors are about the file the client sent; their text quotes nothing
    /// but the file's own properties.
    fn from(e: DecodeError) -> Self {
        let text = shared::error_chain(&e);
        Self {
            code: e.code(),
            message: text.clone(),
            detail: text,
            transient: e.is_retryable(),
        }
    }
}

impl From<ChainError> for StageError {
    /// The chain's last error decides; an engine's refusal of the client's own request
    /// (a language the model lacks) is shown to the client as it is.
    fn from(e: ChainError) -> Self {
        match e.last() {
            Some(ProviderError::Local {
                code,
                message,
                about_input: true,
            }) => Self::input(code, message.clone()),
            _ => Self::upstream(e.code(), e.to_string(), e.is_transient()),
        }
    }
}

/// The sentence a client reads for an error that is not about its input.
fn public_message(code: &str) -> &'static str {
    match code {
        "forbidden-address" => "the audio URL leads to an address that is not public",
        "unknown-host" => "the audio URL's host name does not resolve",
        "source-not-found" => "the audio was not found",
        "source-denied" => "access to the audio was denied",
        "source-http-error" => "the audio server answered with an unexpected HTTP status",
        "fetch-unavailable" => "the audio could not be fetched",
        "source-error" => "the audio could not be read from object storage",
        "fetch-timeout" => "the audio server did not deliver the file in time",
        "fetch-too-slow" => "the audio server sent the file too slowly",
        "forbidden-port" => "the audio URL names a port that is not allowed",
        "file-too-large" => "the audio is larger than the size limit",
        "too-many-redirects" => "the audio URL redirects too many times",
        "invalid-source" => "the audio URL cannot be fetched",
        "no-provider" => "no transcription provider is available",
        "internal-error" => "an internal error stopped this job",
        "unknown-model" => "the job names a transcription model this service does not have",
        "model-unavailable" => "the transcription model the job names could not be loaded",
        c if c.starts_with("provider") || c.starts_with("upstream") => {
            "the transcription provider failed"
        }
        _ => "the job could not be processed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_carry_no_upstream_detail() {
        let e = StageError::upstream(
            "forbidden-address",
            "refusing 10.0.0.7 for internal.example".into(),
            false,
        );
        assert!(!e.message.contains("10.0.0.7"), "{}", e.message);
        assert!(e.detail.contains("10.0.0.7"));
        let e = StageError::upstream(
            "fetch-unavailable",
            "S3 is unavailable: minio:9000".into(),
            true,
        );
        assert!(!e.message.contains("minio"), "{}", e.message);
    }

    #[test]
    fn a_chain_error_keeps_input_refusals_and_hides_upstream_text() {
        let attempt = |error| providers::Attempt {
            provider: "p".into(),
            model: "m".into(),
            error,
        };
        let refused = ChainError {
            attempts: vec![attempt(ProviderError::Local {
                code: "unsupported-language",
                message: "language 'xx' is not supported by this model".into(),
                about_input: true,
            })],
        };
        let e = StageError::from(refused);
        assert_eq!(e.code, "unsupported-language");
        assert!(e.message.contains("'xx'"));
        let upstream = ChainError {
            attempts: vec![attempt(ProviderError::Server {
                status: 503,
                message: "backend 10.1.2.3 down".into(),
            })],
        };
        let e = StageError::from(upstream);
        assert_eq!(e.code, "provider-server-error");
        assert!(e.transient);
        assert!(!e.message.contains("10.1.2.3"));
    }
}
