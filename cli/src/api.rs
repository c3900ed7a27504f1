//! The HTTP client: bearer key, the API's error body, and retries of requests the server
//! refused for now (429, 502–504) or that never got an answer, when repeating them is safe.

use std::fmt;
use std::time::Duration;

use reqwest::{header, Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Attempts of one request (the first included).
const ATTEMPTS: u32 = 5;
/// Longest wait between attempts, also the cap on a server's `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a request failed: the API's answer, or no answer at all.
#[derive(Debug)]
pub(crate) enum ApiFailure {
    /// The API answered with an error status.
    Api {
        status: StatusCode,
        code: String,
        message: String,
        /// Rejected lines of a batch (`invalid-items`), 1-based within the request.
        errors: Vec<LineError>,
    },
    /// No usable answer (connection refused, reset, timed out, unreadable body).
    Transport(String),
}

/// One rejected line of a batch request.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LineError {
    pub line: u64,
    pub code: String,
    pub message: String,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiFailure::Api {
                status,
                code,
                message,
                ..
            } => write!(f, "{} {code}: {message}", status.as_u16()),
            ApiFailure::Transport(detail) => write!(f, "no answer from the API: {detail}"),
        }
    }
}

impl std::error::Error for ApiFailure {}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
    #[serde(default)]
    errors: Vec<LineError>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// Whether a request may be sent again after it got no answer: the server may have
/// acted on it, so only requests whose repetition changes nothing qualify.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Repeat {
    /// Reads, state changes that are idempotent by nature, and requests carrying an
    /// `Idempotency-Key`.
    Safe,
    /// Only refusals (429, 502–504) are retried.
    RefusalsOnly,
}

pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    pub(crate) fn new(base: &str, key: &str) -> anyhow::Result<Api> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("the API URL '{base}' does not start with http:// or https://");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Between two reads of an answer; uploads and result streams may take long
            // in total, but a server silent this long is gone.
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("voxq-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api {
            http,
            base,
            key: key.to_string(),
        })
    }

    /// A request to `path` (starting with `/`) with the bearer key.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// Sends the request `build` makes (called again for each attempt) until it gets a
    /// success, an error that repeating would not change, or runs out of attempts.
    pub(crate) async fn send(
        &self,
        repeat: Repeat,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ApiFailure> {
        let mut attempt = 1;
        loop {
            let wait = match build().send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(&response);
                    let refused_for_now = status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::BAD_GATEWAY
                        || status == StatusCode::SERVICE_UNAVAILABLE
                        || status == StatusCode::GATEWAY_TIMEOUT;
                    let failure = failure_of(response).await;
                    if !refused_for_now || attempt >= ATTEMPTS {
                        return Err(failure);
                    }
                    eprintln!("voxq: {failure}; trying again");
                    retry_after.unwrap_or_else(|| backoff(attempt))
                }
                Err(e) => {
                    let failure = ApiFailure::Transport(transport_detail(&e));
                    // A request that never reached the server can always be repeated.
                    let unsent = e.is_connect();
                    if !(unsent || repeat == Repeat::Safe) || attempt >= ATTEMPTS {
                        return Err(failure);
                    }
                    eprintln!("voxq: {failure}; trying again");
                    backoff(attempt)
                }
            };
            tokio::time::sleep(wait.min(MAX_BACKOFF)).await;
            attempt += 1;
        }
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ApiFailure> {
        let response = self
            .send(Repeat::Safe, || {
                self.request(Method::GET, path).query(query)
            })
            .await?;
        json_of(response).await
    }

    pub(crate) async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        idempotency_key: Option<&str>,
        repeat: Repeat,
    ) -> Result<T, ApiFailure> {
        let response = self
            .send(repeat, || {
                let request = self.request(Method::POST, path).json(body);
                match idempotency_key {
                    Some(key) => request.header("Idempotency-Key", key),
                    None => request,
                }
            })
            .await?;
        json_of(response).await
    }
}

pub(crate) async fn json_of<T: DeserializeOwned>(response: Response) -> Result<T, ApiFailure> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ApiFailure::Transport(transport_detail(&e)))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiFailure::Transport(format!("unexpected answer from the API: {e}")))
}

/// The API's `{"error": {"code", "message"}}`, or the bare status when the body is not
/// one (a proxy's page, say).
async fn failure_of(response: Response) -> ApiFailure {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(body) => ApiFailure::Api {
            status,
            code: body.error.code,
            message: body.error.message,
            errors: body.errors,
        },
        Err(_) => ApiFailure::Api {
            status,
            code: "http-error".into(),
            message: status
                .canonical_reason()
                .unwrap_or("unexpected status")
                .to_lowercase(),
            errors: Vec::new(),
        },
    }
}

fn retry_after(response: &Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.max(1)))
}

/// 1 s, 2 s, 4 s, … before attempt `attempt + 1`.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << (attempt - 1).min(5)).min(MAX_BACKOFF)
}

/// The error with its causes (reqwest's own text names only the URL).
pub(crate) fn transport_detail(e: &reqwest::Error) -> String {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let waits: Vec<u64> = (1..=7).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn failures_read_like_the_api() {
        let failure = ApiFailure::Api {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized".into(),
            message: "missing or invalid api key".into(),
            errors: Vec::new(),
        };
        assert_eq!(
            failure.to_string(),
            "401 unauthorized: missing or invalid api key"
        );
    }
}
