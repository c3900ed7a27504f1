//! OpenAI-compatible routes: `POST /v1/audio/transcriptions` and `GET /v1/models`, so
//! code written for OpenAI's client moves to voxq by changing its base URL and key.
//!
//! A transcription request is an ordinary interactive job (stored, billed, listed,
//! deletable like any other; its id is in the `x-voxq-job-id` header) that the request
//! waits for, woken by the same `LISTEN/NOTIFY` as the long-poll. Errors on these
//! routes use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`.

use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use shared::config::DEFAULT_MODEL;
use shared::db::NewJob;
use shared::domain::{JobStatus, Lane, ModelTier, Rubric, SummaryMode, Transcript};
use shared::render::{self, Format};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::{read_form, store_job, store_upload};
use crate::options;

/// The model name OpenAI's clients send; it means the `default` model.
pub const OPENAI_MODEL: &str = "whisper-1";
/// Form fields of OpenAI's request besides voxq's own options.
const FIELDS: [&str; 5] = [
    "response_format",
    "prompt",
    "temperature",
    "timestamp_granularities[]",
    "stream",
];

/// The body of an error on the OpenAI-compatible routes: OpenAI's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The form field at fault, when one is.
    pub param: Option<String>,
    /// voxq's error code (`unsupported-response-format`, `model_not_found`, …).
    pub code: String,
}

impl OpenAiErrorBody {
    fn new(kind: &'static str, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: OpenAiErrorDetail {
                message: message.into(),
                kind,
                param: None,
                code: code.into(),
            },
        }
    }
}

/// An error in OpenAI's shape, with voxq's status and code.
pub struct OpenAiError(ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<shared::db::DbError> for OpenAiError {
    fn from(e: shared::db::DbError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let (status, code) = self.0.status_and_code();
        let kind = match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        let param = match &self.0 {
            ApiError::Invalid { code, .. } if code.starts_with("unsupported-") => {
                Some(code.trim_start_matches("unsupported-").replace('-', "_"))
            }
            _ => None,
        };
        let mut body = OpenAiErrorBody::new(kind, code, self.0.to_string());
        body.error.param = param;
        let mut response = (status, Json(body)).into_response();
        // Keep voxq's headers (Retry-After, WWW-Authenticate).
        let original = self.0.into_response();
        for name in [header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
            if let Some(v) = original.headers().get(&name) {
                response.headers_mut().insert(name, v.clone());
            }
        }
        response
    }
}

fn invalid(code: &'static str, message: impl Into<String>) -> OpenAiError {
    OpenAiError(ApiError::Invalid {
        code,
        message: message.into(),
    })
}

/// `GET /v1/models`'s answer, as OpenAI's.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<Model>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Model {
    /// `whisper-1` (the `default` model) or a configured model's name.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    pub created: i64,
    pub owned_by: &'static str,
}

/// `GET /v1/models`: the configured local models, and `whisper-1` (the default).
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    operation_id = "list_models",
    summary = "The transcription models, as OpenAI lists them (scope jobs:read)",
    responses((status = 200, description = "`whisper-1` and the configured models.", body = ModelList))
)]
pub async fn models(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<Response, OpenAiError> {
    caller?.require("jobs:read")?;
    let mut names: Vec<String> = vec![OPENAI_MODEL.to_string()];
    names.extend(state.config.model_dirs().into_keys());
    let data = names
        .into_iter()
        .map(|id| Model {
            id,
            object: "model",
            created: 0,
            owned_by: "voxq",
        })
        .collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    })
    .into_response())
}

/// What the client asked for, besides the options.
struct Asked {
    format: ResponseFormat,
    /// `verbose_json` carries `segments` (asked, or no granularity asked).
    segments: bool,
    /// `verbose_json` carries `words` (`timestamp_granularities[]=word`).
    words: bool,
}

#[derive(Clone, Copy, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ResponseFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

/// A `timestamp_granularities[]` value.
#[derive(Clone, Copy, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Granularity {
    Segment,
    Word,
}

/// OpenAI's transcription form, and voxq's job options as extra fields.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // Describes the form for the OpenAPI document; `read_form` reads it.
pub(crate) struct TranscriptionForm {
    /// The audio (at most `max_upload_bytes`).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// `whisper-1` (the `default` model) or a configured model (`GET /v1/models`).
    #[schema(example = "whisper-1")]
    model: String,
    /// Language code (`en`, …); detected when absent.
    language: Option<String>,
    /// Accepted, not used.
    prompt: Option<String>,
    /// `json` by default.
    response_format: Option<ResponseFormat>,
    /// Checked, not used: the engine falls back over temperatures itself.
    #[schema(minimum = 0.0, maximum = 1.0)]
    temperature: Option<f64>,
    /// `segment` and/or `word`, with `response_format=verbose_json`: `word` adds the
    /// top-level `words` list; asking only `word` leaves `segments` out, as OpenAI does.
    #[serde(rename = "timestamp_granularities[]")]
    timestamp_granularities: Option<Vec<Granularity>>,
    /// Only `false`: streaming is not supported.
    stream: Option<bool>,
    /// Comma-separated voxq stages besides transcription: `score,summarize`.
    tasks: Option<String>,
    summary: Option<SummaryMode>,
    summary_model: Option<ModelTier>,
    #[schema(value_type = Option<Rubric>)]
    rubric: Option<String>,
    webhook_url: Option<String>,
    webhook_result: Option<bool>,
    /// voxq's own name for `timestamp_granularities[]=word` (words in the stored job).
    word_timestamps: Option<bool>,
    vad_filter: Option<bool>,
    #[schema(minimum = 1, maximum = 10)]
    language_detection_segments: Option<u32>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    language_detection_threshold: Option<f64>,
}

/// `response_format=json` or `verbose_json`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Transcription {
    Json(TranscriptionJson),
    Verbose(VerboseTranscription),
}

/// `response_format=json`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)] // Only `text`: tells it apart from `verbose_json`.
pub struct TranscriptionJson {
    pub text: String,
}

/// `response_format=verbose_json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerboseTranscription {
    /// Always `transcribe`.
    pub task: &'static str,
    /// The language's English name, as Whisper names it (`english`).
    pub language: String,
    /// Seconds.
    pub duration: f64,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<VerboseSegment>>,
    /// With `timestamp_granularities[]=word`: every word with its times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<VerboseWord>>,
}

/// A word of `verbose_json`, as OpenAI gives it (no probability).
#[derive(Debug, Serialize, ToSchema)]
pub struct VerboseWord {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerboseSegment {
    pub id: usize,
    pub seek: u32,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f64,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
}

/// `POST /v1/audio/transcriptions` (multipart: `file`, `model`, `language`, `prompt`,
/// `response_format`, `temperature`, `timestamp_granularities[]`).
#[utoipa::path(
    post,
    path = "/v1/audio/transcriptions",
    tag = "openai",
    operation_id = "create_transcription",
    summary = "Transcribe a file and wait for it, as OpenAI's API does (scope jobs:write)",
    description = "Runs an ordinary interactive job (stored, listed and billed like any other; \
        its id is in `x-voxq-job-id`) and answers when it finishes, in the `response_format` \
        asked for. Errors use OpenAI's shape.",
    request_body(content((TranscriptionForm = "multipart/form-data"))),
    responses(
        (status = 200, description = "The transcript: JSON for `json` and `verbose_json`, text for `text`, `srt` and `vtt`.",
            headers(("x-voxq-job-id" = Uuid, description = "The job that made it.")),
            content(
                (Transcription = "application/json"),
                (String = "text/plain"),
                (String = "application/x-subrip"),
                (String = "text/vtt"),
            )),
        (status = 400, description = "A bad form or option, or the audio could not be transcribed (its error code).",
            headers(("x-voxq-job-id" = Option<Uuid>, description = "When a job was made.")),
            body = OpenAiErrorBody),
        (status = 403, description = "A missing scope or an option the tenant may not use.", body = OpenAiErrorBody),
        (status = 408, description = "The body stalled (`request-timeout`).", body = OpenAiErrorBody),
        (status = 413, description = "The upload is too large (`file-too-large`).", body = OpenAiErrorBody),
        (status = 429, description = "A rate limit or tenant limit.", body = OpenAiErrorBody),
        (status = 500, description = "The job failed on the server's side (`retries-exhausted`, `worker-crashed`, `model-unavailable`, `internal`).",
            headers(("x-voxq-job-id" = Uuid, description = "The job.")),
            body = OpenAiErrorBody),
        (status = 504, description = "The job did not finish within `sync_timeout_s` (`timeout`); its result will be at `GET /v1/jobs/{id}`.",
            headers(("x-voxq-job-id" = Uuid, description = "The job.")),
            body = OpenAiErrorBody),
    )
)]
pub async fn transcriptions(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    request: Request,
) -> Result<Response, OpenAiError> {
    let caller = caller?;
    caller.require("jobs:write")?;
    let traceparent = crate::app::traceparent(&request);
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_form {
        return Err(invalid(
            "bad-request",
            "send multipart/form-data with a file part, as OpenAI's API takes it",
        ));
    }
    // A waiting slot first: a request that cannot wait is refused before any work.
    let slot = state
        .waiters
        .slots
        .try_acquire()
        .map_err(|_| ApiError::Overloaded)?;
    let limits = shared::db::batch::tenant_limits(&state.db, caller.tenant_id()).await?;
    let form = Multipart::from_request(request, &state)
        .await
        .map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?;
    let mut form = read_form(&state, form, &FIELDS).await?;
    let asked = read_openai_fields(&mut form.raw, &form.extras, &state)?;
    form.raw.lane = Some(Lane::Interactive.as_str().to_string());
    let (lane, job_options) =
        options::validate(form.raw.clone(), Lane::Interactive, &state.config)?;
    options::check_allowed(&job_options, &limits)?;
    let id = Uuid::new_v4();
    let (source, key) = store_upload(&state, &caller, id, &form).await?;
    let job = NewJob {
        id,
        tenant_id: caller.tenant_id(),
        lane,
        source,
        options: job_options,
        traceparent,
    };
    // Register before the job can finish, so its notification is not missed.
    let woken = state.waiters.register(id);
    store_job(&state, &caller, &limits, &job, Some(key), None).await?;
    tracing::info!(job = %id, tenant = %caller.tenant_id(), "OpenAI-compatible transcription accepted");
    let wait = Duration::from_secs(state.config.sync_timeout_s.max(1));
    let finished = tokio::time::timeout(wait, woken).await.is_ok();
    if !finished {
        state.waiters.forget_closed(id);
    }
    drop(slot);
    let view = shared::db::get_job(&state.db, caller.tenant_id(), id, None)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut response = match (view.status, view.result, view.error) {
        (JobStatus::Completed, Some(result), _) => answer(&result.transcript, &asked),
        (JobStatus::Failed, _, Some(error)) => {
            let client_fault = !matches!(
                error.code.as_str(),
                "retries-exhausted" | "worker-crashed" | "model-unavailable" | "internal"
            );
            let (status, kind) = if client_fault {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, "server_error")
            };
            let body = OpenAiErrorBody::new(kind, error.code, error.message);
            (status, Json(body)).into_response()
        }
        (status, _, _) => {
            let body = OpenAiErrorBody::new(
                "server_error",
                "timeout",
                format!(
                    "the transcription is still {} after {} s; its result will be at GET /v1/jobs/{id}",
                    status.as_str(),
                    wait.as_secs()
                ),
            );
            (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-voxq-job-id", v);
    }
    Ok(response)
}

/// OpenAI's fields: `model` (as a voxq model name), `response_format`, `temperature`
/// (checked, not used: the engine decodes with faster-whisper's temperature fallback),
/// `prompt` (accepted, not used), `timestamp_granularities[]` (`segment`, `word`: the
/// job then has `word_timestamps`), `stream` (only `false`).
fn read_openai_fields(
    raw: &mut options::RawOptions,
    extras: &[(String, String)],
    state: &AppState,
) -> Result<Asked, OpenAiError> {
    match raw.model.as_deref().map(str::trim) {
        None | Some("") => {
            return Err(invalid(
                "bad-request",
                "model is required (whisper-1, or a configured model)",
            ))
        }
        Some(OPENAI_MODEL) => raw.model = Some(DEFAULT_MODEL.into()),
        Some(m) if state.config.has_model(m) => {}
        Some(m) => {
            let m: String = m.chars().take(64).collect();
            return Err(OpenAiError(ApiError::Invalid {
                code: "model_not_found",
                message: format!("the model '{m}' does not exist (GET /v1/models lists them)"),
            }));
        }
    }
    let mut format = ResponseFormat::Json;
    let (mut segments, mut words) = (false, false);
    for (name, value) in extras {
        let value = value.trim();
        match name.as_str() {
            "response_format" => {
                format = options::parse_enum("response_format", value).map_err(|_| {
                    let value: String = value.chars().take(32).collect();
                    invalid(
                        "unsupported-response-format",
                        format!(
                            "response_format '{value}' is not supported (json, text, srt, \
                             verbose_json, vtt)"
                        ),
                    )
                })?;
            }
            "temperature" => {
                let ok = value.parse::<f64>().is_ok_and(|t| (0.0..=1.0).contains(&t));
                if !ok {
                    return Err(invalid(
                        "bad-request",
                        "temperature must be a number from 0 to 1",
                    ));
                }
            }
            "timestamp_granularities[]" => {
                match options::parse_enum("timestamp granularity", value) {
                    Ok(Granularity::Segment) => segments = true,
                    Ok(Granularity::Word) => words = true,
                    Err(_) => {
                        let value: String = value.chars().take(32).collect();
                        return Err(invalid(
                            "bad-request",
                            format!("unknown timestamp granularity '{value}' (segment, word)"),
                        ));
                    }
                }
            }
            "stream" if value == "false" => {}
            "stream" => return Err(invalid("unsupported-stream", "streaming is not supported")),
            _ => {} // prompt
        }
    }
    if (segments || words) && format != ResponseFormat::VerboseJson {
        return Err(invalid(
            "unsupported-timestamp-granularities",
            "timestamp_granularities[] needs response_format=verbose_json",
        ));
    }
    if words {
        raw.word_timestamps = Some(true);
    }
    Ok(Asked {
        format,
        segments: segments || !words,
        words,
    })
}

/// The transcript as OpenAI answers it in each format.
fn answer(t: &Transcript, asked: &Asked) -> Response {
    // `media_type` names the charset already.
    let plain = |format: Format, body: String| {
        ([(header::CONTENT_TYPE, format.media_type())], body).into_response()
    };
    match asked.format {
        ResponseFormat::Json => Json(Transcription::Json(TranscriptionJson {
            text: t.text.trim().to_string(),
        }))
        .into_response(),
        ResponseFormat::Text => plain(Format::Text, render::text(t)),
        ResponseFormat::Srt => plain(Format::Srt, render::srt(t)),
        ResponseFormat::Vtt => plain(Format::Vtt, render::vtt(t)),
        ResponseFormat::VerboseJson => {
            let segments = || {
                t.segments
                    .iter()
                    .enumerate()
                    .map(|(i, s)| VerboseSegment {
                        id: i,
                        seek: 0,
                        start: s.start,
                        end: s.end,
                        text: s.text.clone(),
                        tokens: Vec::new(),
                        temperature: 0.0,
                        avg_logprob: s.avg_logprob,
                        compression_ratio: 0.0,
                        no_speech_prob: s.no_speech_prob,
                    })
                    .collect()
            };
            let words = || {
                t.segments
                    .iter()
                    .flat_map(|s| s.words.iter().flatten())
                    .map(|w| VerboseWord {
                        word: w.word.clone(),
                        start: w.start,
                        end: w.end,
                    })
                    .collect()
            };
            Json(Transcription::Verbose(VerboseTranscription {
                task: "transcribe",
                language: language_name(&t.language),
                duration: t.duration_s,
                text: t.text.trim().to_string(),
                segments: asked.segments.then(segments),
                words: asked.words.then(words),
            }))
            .into_response()
        }
    }
}

/// Whisper's language names, as OpenAI's `verbose_json` gives them.
fn language_name(code: &str) -> String {
    const NAMES: &str = "en:english,zh:chinese,de:german,es:spanish,ru:russian,ko:korean,\
        fr:french,ja:japanese,pt:portuguese,tr:turkish,pl:polish,ca:catalan,nl:dutch,\
        ar:arabic,sv:swedish,it:italian,id:indonesian,hi:hindi,fi:finnish,vi:vietnamese,\
        he:hebrew,uk:ukrainian,el:greek,ms:malay,cs:czech,ro:romanian,da:danish,\
        hu:hungarian,ta:tamil,no:norwegian,th:thai,ur:urdu,hr:croatian,bg:bulgarian,\
        lt:lithuanian,la:latin,mi:maori,ml:malayalam,cy:welsh,sk:slovak,te:telugu,\
        fa:persian,lv:latvian,bn:bengali,sr:serbian,az:azerbaijani,sl:slovenian,\
        kn:kannada,et:estonian,mk:macedonian,br:breton,eu:basque,is:icelandic,\
        hy:armenian,ne:nepali,mn:mongolian,bs:bosnian,kk:kazakh,sq:albanian,sw:swahili,\
        gl:galician,mr:marathi,pa:punjabi,si:sinhala,km:khmer,sn:shona,yo:yoruba,\
        so:somali,af:afrikaans,oc:occitan,ka:georgian,be:belarusian,tg:tajik,sd:sindhi,\
        gu:gujarati,am:amharic,yi:yiddish,lo:lao,uz:uzbek,fo:faroese,ht:haitian creole,\
        ps:pashto,tk:turkmen,nn:nynorsk,mt:maltese,sa:sanskrit,lb:luxembourgish,\
        my:myanmar,bo:tibetan,tl:tagalog,mg:malagasy,as:assamese,tt:tatar,haw:hawaiian,\
        ln:lingala,ha:hausa,ba:bashkir,jw:javanese,su:sundanese,yue:cantonese";
    NAMES
        .split(',')
        .filter_map(|pair| pair.trim().split_once(':'))
        .find(|(c, _)| *c == code)
        .map_or_else(|| code.to_string(), |(_, name)| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_names_are_whispers() {
        assert_eq!(language_name("en"), "english");
        assert_eq!(language_name("cs"), "czech");
        assert_eq!(language_name("yue"), "cantonese");
        assert_eq!(language_name("xx"), "xx");
    }
}
