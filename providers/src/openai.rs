//! Clients of OpenAI-compatible APIs (OpenAI, Groq, vLLM, speaches, Ollama…):
//! `POST {base_url}/chat/completions` and `POST {base_url}/audio/transcriptions`.
//!
//! This file alone knows the wire format: the request and response structs are private
//! and translate to and from the provider-neutral types of `providers`.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::multipart::{Form, Part};
use serde::{Deserialize, Deserializer, Serialize};
use shared::error_chain;

use super::{
    ChatModel, ChatRequest, ChatResponse, Described, MaxTokensField, Price, ProviderConfig,
    ProviderError, Role, Transcriber, TranscriptionRequest,
};
use shared::domain::{Segment, Transcript};

/// `Bearer <key>`, kept out of `Debug` output.
#[derive(Clone)]
struct Auth(HeaderValue);

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer <redacted>")
    }
}

/// What both clients share: endpoint, key, timeout, HTTP client.
#[derive(Debug, Clone)]
struct Endpoint {
    name: String,
    model: String,
    price: Price,
    base_url: String,
    auth: Option<Auth>,
    timeout: Duration,
    http: reqwest::Client,
}

impl Endpoint {
    fn new(config: &ProviderConfig, api_key: Option<&str>) -> Result<Self, ProviderError> {
        let misconfigured = |message: String| ProviderError::Config {
            provider: config.name.clone(),
            message,
        };
        if config.model.trim().is_empty() {
            return Err(misconfigured("no model is configured".into()));
        }
        let base_url = config.base_url.trim_end_matches('/').to_string();
        match url::Url::parse(&base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return Err(misconfigured(format!(
                    "base URL '{}' is not an http(s) URL",
                    config.base_url
                )))
            }
        }
        let auth = match api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| misconfigured("the API key is not a valid header value".into()))?;
                value.set_sensitive(true);
                Some(Auth(value))
            }
            None => None,
        };
        let timeout = config.timeout();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // A redirect means a wrong base URL; following it would turn the POST into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("voxq/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| misconfigured(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(Self {
            name: config.name.clone(),
            model: config.model.clone(),
            price: config.price(),
            base_url,
            auth,
            timeout,
            http,
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let mut headers = HeaderMap::new();
        if let Some(Auth(value)) = &self.auth {
            headers.insert(AUTHORIZATION, value.clone());
        }
        self.http
            .post(format!("{}{path}", self.base_url))
            .headers(headers)
    }

    /// Sends the request and returns the body of a 2xx answer; maps everything else.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<bytes::Bytes, ProviderError> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        if status.is_success() {
            return Ok(body);
        }
        let message = error_message(&body);
        let status = status.as_u16();
        Err(match status {
            429 => ProviderError::RateLimited {
                retry_after,
                message,
            },
            500..=599 => ProviderError::Server { status, message },
            400..=499 => ProviderError::Client { status, message },
            _ => ProviderError::InvalidResponse(format!("unexpected status {status}: {message}")),
        })
    }

    fn transport(&self, e: reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            ProviderError::Timeout {
                after: self.timeout,
            }
        } else {
            ProviderError::Network(error_chain(&e))
        }
    }
}

/// `retry-after-ms` (OpenAI) or `retry-after` in seconds (HTTP dates are ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let v: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (v.is_finite() && v >= 0.0).then_some(v)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
}

/// The message of an error body: OpenAI's `{"error": {"message"}}`, the `{"error": "…"}`,
/// `{"detail": "…"}` or `{"message": "…"}` of other servers, or the start of the text.
fn error_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let found = [
            value.pointer("/error/message"),
            value.get("error"),
            value.get("detail"),
            value.get("message"),
        ]
        .into_iter()
        .flatten()
        .find_map(|v| v.as_str());
        if let Some(message) = found {
            return message.to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".into()
    } else {
        snippet(text)
    }
}

fn snippet(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn parse_body<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        ProviderError::InvalidResponse(format!(
            "body is not the expected JSON ({e}): '{}'",
            snippet(&String::from_utf8_lossy(body))
        ))
    })
}

// --- chat -------------------------------------------------------------------------

#[derive(Serialize)]
struct WireChatRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<WireResponseFormat<'a>>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireResponseFormat<'a> {
    JsonSchema { json_schema: WireJsonSchema<'a> },
}

#[derive(Serialize)]
struct WireJsonSchema<'a> {
    name: &'a str,
    schema: &'a serde_json::Value,
    strict: bool,
}

#[derive(Deserialize)]
struct WireChatCompletion {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireAnswer,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireAnswer {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

fn role(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// A chat model behind an OpenAI-compatible `/chat/completions` endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiChat {
    endpoint: Endpoint,
    max_tokens_field: MaxTokensField,
}

impl OpenAiChat {
    /// Reads the API key from the environment variable the configuration names.
    pub fn from_config(config: &ProviderConfig) -> Result<Self, ProviderError> {
        Self::new(config, config.api_key()?.as_deref())
    }

    /// With an explicit API key (`None`: no `Authorization` header).
    pub fn new(config: &ProviderConfig, api_key: Option<&str>) -> Result<Self, ProviderError> {
        Ok(Self {
            endpoint: Endpoint::new(config, api_key)?,
            max_tokens_field: config.max_tokens_field,
        })
    }

    async fn call(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let (max_tokens, max_completion_tokens) = match self.max_tokens_field {
            MaxTokensField::MaxTokens => (request.max_tokens, None),
            MaxTokensField::MaxCompletionTokens => (None, request.max_tokens),
        };
        let body = WireChatRequest {
            model: &self.endpoint.model,
            messages: request
                .messages
                .iter()
                .map(|m| WireMessage {
                    role: role(m.role),
                    content: &m.content,
                })
                .collect(),
            max_tokens,
            max_completion_tokens,
            temperature: request.temperature,
            response_format: request
                .schema
                .as_ref()
                .map(|s| WireResponseFormat::JsonSchema {
                    json_schema: WireJsonSchema {
                        name: &s.name,
                        schema: &s.schema,
                        strict: s.strict,
                    },
                }),
        };
        let body = self
            .endpoint
            .send(self.endpoint.post("/chat/completions").json(&body))
            .await?;
        let answer: WireChatCompletion = parse_body(&body)?;
        let Some(choice) = answer.choices.into_iter().next() else {
            return Err(ProviderError::InvalidResponse(
                "no choices in the answer".into(),
            ));
        };
        let content = match (choice.message.content, choice.message.refusal) {
            (_, Some(refusal)) if !refusal.is_empty() => {
                return Err(ProviderError::InvalidResponse(format!(
                    "the model refused: '{}'",
                    snippet(&refusal)
                )))
            }
            (Some(content), _) => content,
            (None, _) => {
                return Err(ProviderError::InvalidResponse(format!(
                    "the answer has no content (finish reason '{}')",
                    choice.finish_reason.as_deref().unwrap_or("none")
                )))
            }
        };
        let json = match &request.schema {
            Some(_) => Some(serde_json::from_str(&content).map_err(|e| {
                let truncated = choice.finish_reason.as_deref() == Some("length");
                ProviderError::InvalidResponse(format!(
                    "content is not valid JSON ({e}{}): '{}'",
                    if truncated {
                        ", cut at the token limit"
                    } else {
                        ""
                    },
                    snippet(&content)
                ))
            })?),
            None => None,
        };
        let usage = answer.usage.unwrap_or(WireUsage {
            prompt_tokens: None,
            completion_tokens: None,
        });
        Ok(ChatResponse {
            content,
            json,
            tokens_in: usage.prompt_tokens.unwrap_or(0),
            tokens_out: usage.completion_tokens.unwrap_or(0),
            model: answer
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| self.endpoint.model.clone()),
        })
    }
}

/// Both clients describe themselves by their endpoint.
macro_rules! described_by_endpoint {
    ($($client:ty),+) => {$(
        impl Described for $client {
            fn name(&self) -> &str {
                &self.endpoint.name
            }
            fn model(&self) -> &str {
                &self.endpoint.model
            }
            fn price(&self) -> Price {
                self.endpoint.price
            }
        }
    )+};
}
described_by_endpoint!(OpenAiChat, OpenAiTranscriber);

impl ChatModel for OpenAiChat {
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(self.call(request))
    }
}

// --- transcription ------------------------------------------------------------------

/// `verbose_json`, every field optional: servers differ, and `json` answers carry only
/// `text`.
#[derive(Deserialize)]
struct WireTranscription {
    #[serde(default)]
    text: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default, deserialize_with = "lenient_f64")]
    duration: Option<f64>,
    #[serde(default)]
    segments: Option<Vec<WireSegment>>,
}

#[derive(Deserialize)]
struct WireSegment {
    #[serde(default, deserialize_with = "lenient_f64")]
    start: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    end: Option<f64>,
    #[serde(default)]
    text: String,
    #[serde(default, deserialize_with = "lenient_f64")]
    avg_logprob: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    no_speech_prob: Option<f64>,
}

/// A number, a numeric string or null.
fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        N(f64),
        S(String),
    }
    Ok(match Option::<Num>::deserialize(d)? {
        Some(Num::N(n)) => Some(n),
        Some(Num::S(s)) => s.trim().parse().ok(),
        None => None,
    })
    .map(|v| v.filter(|n: &f64| n.is_finite()))
}

/// Whisper's language names (what `verbose_json` reports) to ISO 639-1 codes.
const LANGUAGE_CODES: &[(&str, &str)] = &[
    ("english", "en"),
    ("chinese", "zh"),
    ("german", "de"),
    ("spanish", "es"),
    ("russian", "ru"),
    ("korean", "ko"),
    ("french", "fr"),
    ("japanese", "ja"),
    ("portuguese", "pt"),
    ("turkish", "tr"),
    ("polish", "pl"),
    ("catalan", "ca"),
    ("dutch", "nl"),
    ("arabic", "ar"),
    ("swedish", "sv"),
    ("italian", "it"),
    ("indonesian", "id"),
    ("hindi", "hi"),
    ("finnish", "fi"),
    ("vietnamese", "vi"),
    ("hebrew", "he"),
    ("ukrainian", "uk"),
    ("greek", "el"),
    ("malay", "ms"),
    ("czech", "cs"),
    ("romanian", "ro"),
    ("danish", "da"),
    ("hungarian", "hu"),
    ("tamil", "ta"),
    ("norwegian", "no"),
    ("thai", "th"),
    ("urdu", "ur"),
    ("croatian", "hr"),
    ("bulgarian", "bg"),
    ("lithuanian", "lt"),
    ("latin", "la"),
    ("maori", "mi"),
    ("malayalam", "ml"),
    ("welsh", "cy"),
    ("slovak", "sk"),
    ("telugu", "te"),
    ("persian", "fa"),
    ("latvian", "lv"),
    ("bengali", "bn"),
    ("serbian", "sr"),
    ("azerbaijani", "az"),
    ("slovenian", "sl"),
    ("kannada", "kn"),
    ("estonian", "et"),
    ("macedonian", "mk"),
    ("breton", "br"),
    ("basque", "eu"),
    ("icelandic", "is"),
    ("armenian", "hy"),
    ("nepali", "ne"),
    ("mongolian", "mn"),
    ("bosnian", "bs"),
    ("kazakh", "kk"),
    ("albanian", "sq"),
    ("swahili", "sw"),
    ("galician", "gl"),
    ("marathi", "mr"),
    ("punjabi", "pa"),
    ("sinhala", "si"),
    ("khmer", "km"),
    ("shona", "sn"),
    ("yoruba", "yo"),
    ("somali", "so"),
    ("afrikaans", "af"),
    ("occitan", "oc"),
    ("georgian", "ka"),
    ("belarusian", "be"),
    ("tajik", "tg"),
    ("sindhi", "sd"),
    ("gujarati", "gu"),
    ("amharic", "am"),
    ("yiddish", "yi"),
    ("lao", "lo"),
    ("uzbek", "uz"),
    ("faroese", "fo"),
    ("haitian creole", "ht"),
    ("pashto", "ps"),
    ("turkmen", "tk"),
    ("nynorsk", "nn"),
    ("maltese", "mt"),
    ("sanskrit", "sa"),
    ("luxembourgish", "lb"),
    ("myanmar", "my"),
    ("tibetan", "bo"),
    ("tagalog", "tl"),
    ("malagasy", "mg"),
    ("assamese", "as"),
    ("tatar", "tt"),
    ("hawaiian", "haw"),
    ("lingala", "ln"),
    ("hausa", "ha"),
    ("bashkir", "ba"),
    ("javanese", "jw"),
    ("sundanese", "su"),
    ("cantonese", "yue"),
];

/// A reported language as a code: names are looked up, codes kept, anything else kept
/// lower-cased.
fn language_code(reported: &str) -> String {
    let lower = reported.trim().to_ascii_lowercase();
    LANGUAGE_CODES
        .iter()
        .find(|(name, _)| *name == lower)
        .map_or(lower, |(_, code)| code.to_string())
}

/// The file name to send: OpenAI tells formats by extension and knows Ogg only as `.ogg`
/// (Telegram's voice notes are `.oga`).
fn wire_file_name(name: &str) -> (String, &'static str) {
    let name = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, ext.to_ascii_lowercase()),
        _ => (if name.is_empty() { "audio" } else { name }, String::new()),
    };
    let (ext, mime) = match ext.as_str() {
        "ogg" | "oga" | "opus" => ("ogg", "audio/ogg"),
        "mp3" | "mpga" | "mpeg" => (ext.as_str(), "audio/mpeg"),
        "m4a" | "mp4" => (ext.as_str(), "audio/mp4"),
        "wav" => ("wav", "audio/wav"),
        "webm" => ("webm", "audio/webm"),
        "flac" => ("flac", "audio/flac"),
        "" => return (stem.to_string(), "application/octet-stream"),
        other => (other, "application/octet-stream"),
    };
    (format!("{stem}.{ext}"), mime)
}

/// A speech-to-text model behind an OpenAI-compatible `/audio/transcriptions` endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiTranscriber {
    endpoint: Endpoint,
}

impl OpenAiTranscriber {
    /// Reads the API key from the environment variable the configuration names.
    pub fn from_config(config: &ProviderConfig) -> Result<Self, ProviderError> {
        Self::new(config, config.api_key()?.as_deref())
    }

    /// With an explicit API key (`None`: no `Authorization` header).
    pub fn new(config: &ProviderConfig, api_key: Option<&str>) -> Result<Self, ProviderError> {
        Ok(Self {
            endpoint: Endpoint::new(config, api_key)?,
        })
    }

    async fn call(&self, request: &TranscriptionRequest) -> Result<Transcript, ProviderError> {
        let (file_name, mime) = wire_file_name(&request.file_name);
        let file = Part::stream_with_length(
            reqwest::Body::from(request.audio.clone()),
            request.audio.len() as u64,
        )
        .file_name(file_name)
        .mime_str(mime)
        .map_err(|e| ProviderError::InvalidResponse(format!("bad MIME type: {e}")))?;
        let mut form = Form::new()
            .part("file", file)
            .text("model", self.endpoint.model.clone())
            .text("response_format", "verbose_json")
            .text("timestamp_granularities[]", "segment");
        if let Some(language) = request.language.as_deref().filter(|l| !l.is_empty()) {
            form = form.text("language", language.to_string());
        }
        let body = self
            .endpoint
            .send(self.endpoint.post("/audio/transcriptions").multipart(form))
            .await?;
        let answer: WireTranscription = parse_body(&body)?;
        Ok(to_transcript(answer, request.language.as_deref()))
    }
}

fn to_transcript(answer: WireTranscription, requested_language: Option<&str>) -> Transcript {
    let segments: Vec<Segment> = answer
        .segments
        .unwrap_or_default()
        .into_iter()
        .map(|s| Segment {
            start: s.start.unwrap_or(0.0),
            end: s.end.or(s.start).unwrap_or(0.0),
            text: s.text.trim().to_string(),
            avg_logprob: s.avg_logprob.unwrap_or(0.0),
            no_speech_prob: s.no_speech_prob.unwrap_or(0.0),
            words: None,
        })
        .collect();
    let duration_s = answer
        .duration
        .unwrap_or_else(|| segments.iter().map(|s| s.end).fold(0.0, f64::max));
    let language = match (
        requested_language.filter(|l| !l.is_empty()),
        answer.language,
    ) {
        (Some(requested), _) => requested.to_string(),
        (None, Some(reported)) => language_code(&reported),
        (None, None) => String::new(),
    };
    Transcript {
        text: answer.text.trim().to_string(),
        language,
        language_probability: None,
        duration_s,
        segments,
    }
}

impl Transcriber for OpenAiTranscriber {
    fn transcribe<'a>(
        &'a self,
        request: &'a TranscriptionRequest,
    ) -> BoxFuture<'a, Result<Transcript, ProviderError>> {
        Box::pin(self.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_and_languages() {
        assert_eq!(
            wire_file_name("voice.OGA"),
            ("voice.ogg".into(), "audio/ogg")
        );
        assert_eq!(wire_file_name("a/b/n.mp3"), ("n.mp3".into(), "audio/mpeg"));
        assert_eq!(
            wire_file_name("x.aiff"),
            ("x.aiff".into(), "application/octet-stream")
        );
        assert_eq!(wire_file_name("noext").0, "noext");
        assert_eq!(language_code("English"), "en");
        assert_eq!(language_code("de"), "de");
        assert_eq!(language_code("haitian creole"), "ht");
    }

    #[test]
    fn error_bodies_and_retry_after() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#),
            "bad key"
        );
        assert_eq!(error_message(br#"{"detail":"nope"}"#), "nope");
        assert_eq!(error_message(b"  "), "(empty body)");
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.clear();
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn transcripts_tolerate_missing_fields() {
        let plain: WireTranscription = serde_json::from_str(r#"{"text":" hi "}"#).unwrap();
        let t = to_transcript(plain, None);
        assert_eq!(
            (t.text.as_str(), t.language.as_str(), t.duration_s),
            ("hi", "", 0.0)
        );
        assert!(t.segments.is_empty());
        let partial: WireTranscription = serde_json::from_str(
            r#"{"text":"a b","language":"german","duration":"2.5",
                "segments":[{"start":0,"end":1.2,"text":" a"},{"start":1.2,"end":null,"text":"b","avg_logprob":-0.3}]}"#,
        )
        .unwrap();
        let t = to_transcript(partial, None);
        assert_eq!(t.language, "de");
        assert_eq!(t.duration_s, 2.5);
        assert_eq!(t.segments[0].text, "a");
        assert_eq!(t.segments[1].end, 1.2);
        assert_eq!(t.segments[1].avg_logprob, -0.3);
    }
}
