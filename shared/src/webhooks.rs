//! Webhooks as the Standard Webhooks specification (standardwebhooks.com) defines them:
//! event types, payloads, secrets (`whsec_` + base64) and signatures.
//!
//! A delivery carries `webhook-id` (`msg_…`, the same on every attempt and redelivery,
//! so receivers can drop duplicates: delivery is at-least-once), `webhook-timestamp`
//! (Unix seconds of the attempt) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`, one per secret in effect, space-separated (two during a
//! rotation's grace period).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

use crate::domain::JobResult;

/// The prefix of a secret as the specification writes it.
pub const SECRET_PREFIX: &str = "whsec_";
/// Most transcript bytes a payload with the result carries (cut at a character
/// boundary, with `text_truncated: true`); the whole result is one GET away.
pub const RESULT_TEXT_MAX: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("a webhook secret must be 'whsec_' followed by base64")]
    BadSecret,
}

/// What a delivery announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub enum Event {
    #[serde(rename = "job.completed")]
    JobCompleted,
    #[serde(rename = "job.failed")]
    JobFailed,
    #[serde(rename = "batch.completed")]
    BatchCompleted,
}

impl Event {
    pub const ALL: [Event; 3] = [Event::JobCompleted, Event::JobFailed, Event::BatchCompleted];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::JobCompleted => "job.completed",
            Event::JobFailed => "job.failed",
            Event::BatchCompleted => "batch.completed",
        }
    }
}

impl std::str::FromStr for Event {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Event::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                format!("unknown event '{s}' (job.completed, job.failed, batch.completed)")
            })
    }
}

/// A new random secret: 32 bytes, `whsec_<base64>`.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", B64.encode(key))
}

/// The webhook id of a delivery: `msg_<uuid without dashes>`.
pub fn message_id(delivery: Uuid) -> String {
    format!("msg_{}", delivery.simple())
}

/// One signature, `v1,<base64>`, of `id.timestamp.body` with `secret`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, WebhookError> {
    let key = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = B64.decode(key).map_err(|_| WebhookError::BadSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| WebhookError::BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, WebhookError> {
    let sigs: Result<Vec<_>, _> = secrets
        .iter()
        .map(|s| sign(s, id, timestamp, body))
        .collect();
    Ok(sigs?.join(" "))
}

/// The envelope every event is sent in.
#[derive(Debug, Serialize)]
pub struct Payload<T: Serialize> {
    #[serde(rename = "type")]
    pub kind: Event,
    /// When the event happened (RFC 3339), the same on every attempt.
    pub timestamp: String,
    pub data: T,
}

/// `data` of `job.completed` and `job.failed`.
#[derive(Debug, Serialize)]
pub struct JobData {
    pub id: Uuid,
    pub status: &'static str,
    /// The result version this event is about (1, then one more per reprocess).
    pub version: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultData>,
    pub links: JobLinks,
}

#[derive(Debug, Serialize)]
pub struct ErrorData {
    pub code: String,
    pub message: String,
}

/// The small part of a result a payload may carry.
#[derive(Debug, Serialize)]
pub struct ResultData {
    pub text: String,
    pub text_truncated: bool,
    pub language: String,
    pub duration_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl ResultData {
    pub fn of(result: &JobResult) -> Self {
        let text = &result.transcript.text;
        let mut end = text.len().min(RESULT_TEXT_MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            text: text[..end].to_string(),
            text_truncated: end < text.len(),
            language: result.transcript.language.clone(),
            duration_s: result.transcript.duration_s,
            summary: result.summary.as_ref().map(|s| {
                let mut end = s.text.len().min(RESULT_TEXT_MAX / 4);
                while !s.text.is_char_boundary(end) {
                    end -= 1;
                }
                s.text[..end].to_string()
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct JobLinks {
    #[serde(rename = "self")]
    pub job: String,
    pub transcript: String,
}

impl JobLinks {
    /// Paths on the API (`/v1/jobs/…`).
    pub fn new(id: Uuid) -> Self {
        Self {
            job: format!("/v1/jobs/{id}"),
            transcript: format!("/v1/jobs/{id}/transcript"),
        }
    }
}

/// `data` of `batch.completed`.
#[derive(Debug, Serialize)]
pub struct BatchData {
    pub id: Uuid,
    pub kind: &'static str,
    pub status: &'static str,
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub links: BatchLinks,
}

#[derive(Debug, Serialize)]
pub struct BatchLinks {
    #[serde(rename = "self")]
    pub batch: String,
    pub results: String,
}

impl BatchLinks {
    /// Paths on the API (`/v1/batches/…`).
    pub fn new(id: Uuid) -> Self {
        Self {
            batch: format!("/v1/batches/{id}"),
            results: format!("/v1/batches/{id}/results"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference libraries (secret, id, timestamp
    /// and body from standard-webhooks' test suites).
    #[test]
    fn signs_like_the_reference_libraries() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, id, 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_signs_twice_and_secrets_are_fresh() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX) && a.len() > 40);
        let header = signature_header(&[&a, &b], "msg_1", 1, b"{}").unwrap();
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&a, "msg_1", 1, b"{}").unwrap());
        assert_eq!(parts[1], sign(&b, "msg_1", 1, b"{}").unwrap());
        assert!(sign("whsec_!!", "m", 1, b"").is_err());
    }

    #[test]
    fn result_text_is_cut_at_a_character_boundary() {
        let mut result = JobResult {
            transcript: crate::domain::Transcript::empty("cs", 1.0),
            scores: None,
            summary: None,
            rubric: None,
            usage: Default::default(),
        };
        result.transcript.text = "ž".repeat(RESULT_TEXT_MAX); // 2 bytes each
        let data = ResultData::of(&result);
        assert!(data.text_truncated);
        assert_eq!(data.text.len(), RESULT_TEXT_MAX);
        result.transcript.text = "short".into();
        let data = ResultData::of(&result);
        assert!(!data.text_truncated);
        assert_eq!(data.text, "short");
    }
}
