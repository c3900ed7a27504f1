//! API errors: every failure answers `{"error": {"code", "message"}}` with a fitting status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("this API key lacks the '{0}' scope")]
    Forbidden(&'static str),
    #[error("this tenant may read only its own uploads and the S3 prefixes granted to it")]
    ForbiddenSource,
    #[error("audio URLs may not use port {0}")]
    ForbiddenPort(u16),
    #[error("refusing the webhook URL: {0}")]
    WebhookTarget(shared::net::TargetError),
    #[error("webhook endpoint not found")]
    WebhookNotFound,
    #[error("webhook delivery not found")]
    DeliveryNotFound,
    #[error("job not found")]
    NotFound,
    #[error("batch not found")]
    BatchNotFound,
    #[error("this job has no result version {0}")]
    VersionNotFound(i32),
    #[error("{count} invalid item(s); nothing was created")]
    InvalidItems {
        count: usize,
        errors: Vec<ItemError>,
    },
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("{0}")]
    Conflict(String),
    #[error("the job has no result yet (status: {})", .0.as_str())]
    NoResult(shared::domain::JobStatus),
    /// A tenant limit (`daily-quota-exceeded`, `concurrency-limit`).
    #[error("{message}")]
    LimitExceeded { code: &'static str, message: String },
    /// An option the tenant may not use (`strong-model-not-allowed`, `rubrics-not-allowed`).
    #[error("{message}")]
    NotAllowed { code: &'static str, message: String },
    #[error("{0}")]
    BadRequest(String),
    /// A request that is well-formed but cannot be accepted as it is, with its own code.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("upload larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// A JSON body over the route's limit, refused by the extractor (which does not
    /// know the limit).
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("{field} is longer than {limit} bytes")]
    FieldTooLong { field: &'static str, limit: usize },
    #[error("the request body stalled; send it faster")]
    RequestTimeout,
    #[error("too many failed authentications from this address; retry after {retry_after_s} s")]
    AuthRateLimited { retry_after_s: u64 },
    #[error("the server is at its request limit; retry shortly")]
    Overloaded,
    #[error("rate limit exceeded; retry after {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("{0} is unavailable; retry later")]
    Unavailable(&'static str),
}

impl ApiError {
    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "missing-scope"),
            Self::ForbiddenSource => (StatusCode::FORBIDDEN, "forbidden-source"),
            Self::ForbiddenPort(_) => (StatusCode::BAD_REQUEST, "forbidden-port"),
            Self::WebhookTarget(e) => (
                StatusCode::BAD_REQUEST,
                match e {
                    shared::net::TargetError::InvalidUrl(_) => "invalid-webhook-url",
                    shared::net::TargetError::ForbiddenPort { .. } => "webhook-forbidden-port",
                    shared::net::TargetError::ForbiddenAddress { .. } => {
                        "webhook-forbidden-address"
                    }
                    shared::net::TargetError::UnknownHost(_) => "webhook-unknown-host",
                },
            ),
            Self::NotFound
            | Self::BatchNotFound
            | Self::WebhookNotFound
            | Self::DeliveryNotFound => (StatusCode::NOT_FOUND, "not-found"),
            Self::VersionNotFound(_) => (StatusCode::NOT_FOUND, "version-not-found"),
            Self::InvalidItems { .. } => (StatusCode::BAD_REQUEST, "invalid-items"),
            Self::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused")
            }
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::NoResult(_) => (StatusCode::CONFLICT, "no-result"),
            Self::LimitExceeded { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            Self::NotAllowed { code, .. } => (StatusCode::FORBIDDEN, code),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            Self::Invalid { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "file-too-large"),
            Self::BodyTooLarge { .. } | Self::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large")
            }
            Self::FieldTooLong { .. } => (StatusCode::BAD_REQUEST, "field-too-long"),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request-timeout"),
            Self::AuthRateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "auth-rate-limited"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let errors = match &self {
            Self::InvalidItems { errors, .. } => Some(errors.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
                errors,
            },
        };
        let mut response = (status, Json(body)).into_response();
        match &self {
            Self::RateLimited { retry_after_s } | Self::AuthRateLimited { retry_after_s } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            Self::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::Overloaded => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// The body of every error answer (the OpenAI-compatible routes excepted, see
/// `openai::OpenAiErrorBody`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable kebab-case code: `not-found`, `bad-request`, `invalid-items`, …
    #[schema(value_type = String, example = "not-found")]
    pub code: &'static str,
    /// A sentence for people; it may change, `code` does not.
    pub message: String,
    /// With `invalid-items`: the bad items (at most 100 listed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ItemError>>,
}

/// One bad item of a batch: its 1-based line (JSONL) or index (`items`), and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ItemError {
    pub line: usize,
    #[schema(value_type = String)]
    pub code: &'static str,
    pub message: String,
}

/// A database error seen by a request: logged in full, answered as 503; but a value
/// PostgreSQL cannot hold (text with a NUL character, a date out of its range) is the
/// caller's error, 400.
impl From<shared::db::DbError> for ApiError {
    fn from(e: shared::db::DbError) -> Self {
        if let shared::db::DbError::Sqlx(sqlx::Error::Database(d)) = &e {
            match d.code().as_deref() {
                // character_not_in_repertoire (text), untranslatable_character (jsonb)
                Some("22021" | "22P05") => {
                    return ApiError::BadRequest("text may not contain NUL characters".into())
                }
                // datetime_field_overflow
                Some("22008") => return ApiError::BadRequest("a date is out of range".into()),
                _ => {}
            }
        }
        tracing::warn!(error = %e, "database error");
        ApiError::Unavailable("the database")
    }
}
