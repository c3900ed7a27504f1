//! Job options as clients send them (JSON fields, form fields, query parameters) and
//! their validation into [`JobOptions`]; tenant limits on what a request may ask for.

use serde::Deserialize;
use shared::config::Config;
use shared::db::batch::TenantLimits;
use shared::domain::{JobOptions, Lane, ModelTier, Rubric, SummaryMode, Task};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// Options given by a client, none required. Later layers override earlier ones
/// ([`RawOptions::over`]): a batch item's options over the batch's.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[schema(as = Options)]
#[serde(deny_unknown_fields)]
pub struct RawOptions {
    /// `interactive` or `bulk`.
    #[serde(default)]
    #[schema(value_type = Option<Lane>)]
    pub lane: Option<String>,
    /// Language code (`en`, `de`, …); detected when absent.
    #[serde(default)]
    pub language: Option<String>,
    /// Stages to run; default all.
    #[serde(default)]
    pub tasks: Option<Vec<Task>>,
    #[serde(default)]
    pub summary: Option<SummaryMode>,
    #[serde(default)]
    pub summary_model: Option<ModelTier>,
    #[serde(default)]
    #[schema(value_type = Option<Rubric>)]
    pub rubric: Option<String>,
    /// Named transcription model (`default`, `base`, … as configured in `models`).
    #[serde(default)]
    pub model: Option<String>,
    /// URL the job's event is POSTed to (signed webhook).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Whether the webhook payload carries the result.
    #[serde(default)]
    pub webhook_result: Option<bool>,
    /// Each segment's words with their start, end and probability.
    #[serde(default)]
    pub word_timestamps: Option<bool>,
    /// Silero voice activity detection before transcription; by default on for audio
    /// longer than the worker's `vad_min_duration_s`.
    #[serde(default)]
    pub vad_filter: Option<bool>,
    /// 30-second windows the language may be detected on (1 to 10).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    pub language_detection_segments: Option<u32>,
    /// Probability above which a window's language is taken (0 to 1; default 0.5).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub language_detection_threshold: Option<f64>,
}

/// The options as text, as form fields and query parameters give them
/// ([`RawOptions::set_text`] reads them): for the OpenAPI document.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Describes the parameters; `RawOptions::set_text` reads them.
pub struct TextOptions {
    /// `interactive` or `bulk`.
    #[param(value_type = Option<Lane>)]
    lane: Option<String>,
    /// Language code (`en`, `de`, …); detected when absent.
    language: Option<String>,
    /// Comma-separated stages: `transcribe,score,summarize`.
    tasks: Option<String>,
    summary: Option<SummaryMode>,
    summary_model: Option<ModelTier>,
    #[param(value_type = Option<Rubric>)]
    rubric: Option<String>,
    /// A configured transcription model (`GET /v1/models` lists them).
    model: Option<String>,
    /// Where each job's event is POSTed, signed with the tenant's webhook secret.
    webhook_url: Option<String>,
    /// Whether that event carries the result.
    webhook_result: Option<bool>,
    /// Each segment's words with their start, end and probability.
    word_timestamps: Option<bool>,
    /// Silero voice activity detection before transcription.
    vad_filter: Option<bool>,
    /// 30-second windows the language may be detected on (1 to 10).
    #[param(minimum = 1, maximum = 10)]
    language_detection_segments: Option<u32>,
    /// Probability above which a window's language is taken (0 to 1).
    #[param(minimum = 0.0, maximum = 1.0)]
    language_detection_threshold: Option<f64>,
}

/// Names of the option fields, for form fields and query parameters.
pub const FIELDS: [&str; 13] = [
    "lane",
    "language",
    "tasks",
    "summary",
    "summary_model",
    "rubric",
    "model",
    "webhook_url",
    "webhook_result",
    "word_timestamps",
    "vad_filter",
    "language_detection_segments",
    "language_detection_threshold",
];

impl RawOptions {
    /// `self`, with every option `top` sets taken from `top`.
    pub fn over(&self, top: &RawOptions) -> RawOptions {
        RawOptions {
            lane: top.lane.clone().or_else(|| self.lane.clone()),
            language: top.language.clone().or_else(|| self.language.clone()),
            tasks: top.tasks.clone().or_else(|| self.tasks.clone()),
            summary: top.summary.or(self.summary),
            summary_model: top.summary_model.or(self.summary_model),
            rubric: top.rubric.clone().or_else(|| self.rubric.clone()),
            model: top.model.clone().or_else(|| self.model.clone()),
            webhook_url: top.webhook_url.clone().or_else(|| self.webhook_url.clone()),
            webhook_result: top.webhook_result.or(self.webhook_result),
            word_timestamps: top.word_timestamps.or(self.word_timestamps),
            vad_filter: top.vad_filter.or(self.vad_filter),
            language_detection_segments: top
                .language_detection_segments
                .or(self.language_detection_segments),
            language_detection_threshold: top
                .language_detection_threshold
                .or(self.language_detection_threshold),
        }
    }

    /// Sets one option from its text form (a form field or query parameter).
    pub fn set_text(&mut self, name: &str, value: &str) -> Result<(), ApiError> {
        match name {
            "lane" => self.lane = Some(value.to_string()),
            "language" => self.language = Some(value.to_string()),
            "rubric" => self.rubric = Some(value.to_string()),
            "model" => self.model = Some(value.to_string()),
            "webhook_url" => self.webhook_url = Some(value.to_string()),
            "webhook_result" => self.webhook_result = Some(parse_bool(name, value)?),
            "word_timestamps" => self.word_timestamps = Some(parse_bool(name, value)?),
            "vad_filter" => self.vad_filter = Some(parse_bool(name, value)?),
            "language_detection_segments" => {
                self.language_detection_segments = Some(parse_number(name, value)?)
            }
            "language_detection_threshold" => {
                self.language_detection_threshold = Some(parse_number(name, value)?)
            }
            "summary" => self.summary = Some(parse_enum("summary", value)?),
            "summary_model" => self.summary_model = Some(parse_enum("summary_model", value)?),
            "tasks" => {
                self.tasks = Some(
                    value
                        .split(',')
                        .filter(|t| !t.trim().is_empty())
                        .map(|t| parse_enum("task", t))
                        .collect::<Result<_, _>>()?,
                )
            }
            other => {
                let other: String = other.chars().take(64).collect();
                return Err(ApiError::BadRequest(format!("unknown option '{other}'")));
            }
        }
        Ok(())
    }
}

fn parse_bool(field: &str, value: &str) -> Result<bool, ApiError> {
    match value.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => {
            let other: String = other.chars().take(16).collect();
            Err(ApiError::BadRequest(format!(
                "invalid {field} '{other}' (true or false)"
            )))
        }
    }
}

fn parse_number<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, ApiError> {
    value.trim().parse().map_err(|_| {
        let value: String = value.trim().chars().take(16).collect();
        ApiError::BadRequest(format!("invalid {field} '{value}' (a number)"))
    })
}

pub fn parse_enum<T: serde::de::DeserializeOwned>(field: &str, value: &str) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::String(value.trim().to_string()))
        .map_err(|_| ApiError::BadRequest(format!("invalid {field} '{}'", value.trim())))
}

/// Every option checked and resolved to its typed value; `default_lane` when none is
/// given (interactive for single jobs, bulk for batches and reprocessing).
pub fn validate(
    raw: RawOptions,
    default_lane: Lane,
    config: &Config,
) -> Result<(Lane, JobOptions), ApiError> {
    let lane = match raw.lane.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => default_lane,
        Some(s) => s.parse().map_err(ApiError::BadRequest)?,
    };
    let language = match raw.language.map(|l| l.trim().to_ascii_lowercase()) {
        Some(l) if l.is_empty() => None,
        Some(l) if l.len() > 8 || !l.chars().all(|c| c.is_ascii_alphabetic() || c == '-') => {
            return Err(ApiError::BadRequest(format!("invalid language '{l}'")))
        }
        other => other,
    };
    let rubric = match raw
        .rubric
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        None => None,
        Some(r) => Some(r.parse::<Rubric>().map_err(ApiError::BadRequest)?),
    };
    let model = match raw
        .model
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        None => None,
        Some(m) if config.has_model(m) => Some(m.to_string()),
        Some(m) => {
            let m: String = m.chars().take(64).collect();
            return Err(ApiError::BadRequest(format!(
                "unknown model '{m}' (configured: {})",
                config
                    .model_dirs()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let webhook_url = match raw
        .webhook_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        None => None,
        Some(u) => Some(check_webhook_url(u, config)?),
    };
    let tasks = raw.tasks.unwrap_or_else(|| JobOptions::default().tasks);
    if let Some(n) = raw.language_detection_segments {
        if !(1..=10).contains(&n) {
            return Err(ApiError::BadRequest(format!(
                "language_detection_segments must be 1 to 10, not {n}"
            )));
        }
    }
    if let Some(t) = raw.language_detection_threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(ApiError::BadRequest(format!(
                "language_detection_threshold must be 0 to 1, not {t}"
            )));
        }
    }
    Ok((
        lane,
        JobOptions {
            language,
            tasks,
            summary: raw.summary.unwrap_or_default(),
            summary_model: raw.summary_model.unwrap_or_default(),
            rubric,
            model,
            webhook_url,
            webhook_result: raw.webhook_result.unwrap_or(false),
            word_timestamps: raw.word_timestamps.unwrap_or(false),
            vad_filter: raw.vad_filter,
            language_detection_segments: raw.language_detection_segments,
            language_detection_threshold: raw.language_detection_threshold,
        },
    ))
}

/// Longest webhook URL.
const MAX_WEBHOOK_URL: usize = 2048;

/// A webhook URL's syntax, scheme, port and (for a literal address) address, as the
/// `webhook_allow*` settings allow; [`resolve_webhooks`] checks the names later.
pub fn check_webhook_url(u: &str, config: &Config) -> Result<String, ApiError> {
    if u.len() > MAX_WEBHOOK_URL {
        return Err(ApiError::FieldTooLong {
            field: "webhook_url",
            limit: MAX_WEBHOOK_URL,
        });
    }
    let url = url::Url::parse(u)
        .map_err(|e| ApiError::BadRequest(format!("invalid webhook_url: {e}")))?;
    config
        .webhook_policy()
        .check_url(&url)
        .map_err(ApiError::WebhookTarget)?;
    Ok(url.to_string())
}

/// Before jobs with `webhook_url`s are stored: the tenant has a secret to sign their
/// deliveries with, and every URL's host leads where `webhook_allow*` allows.
pub async fn check_webhooks<'a>(
    config: &Config,
    db: &sqlx::PgPool,
    tenant_id: uuid::Uuid,
    urls: impl IntoIterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let urls: Vec<&str> = urls.into_iter().collect();
    if urls.is_empty() {
        return Ok(());
    }
    if !shared::db::webhooks::has_tenant_secret(db, tenant_id).await? {
        return Err(ApiError::Invalid {
            code: "webhook-secret-missing",
            message: "deliveries to a webhook_url are signed with the tenant's webhook secret,                       and this tenant has none yet: create it once with POST /v1/webhooks/secret"
                .into(),
        });
    }
    resolve_webhooks(config, urls).await
}

/// Resolves the hosts of webhook URLs and refuses any that leads to an address the
/// `webhook_allow*` settings do not allow (the dispatcher checks again, and pins the
/// connection, at every attempt).
pub async fn resolve_webhooks<'a>(
    config: &Config,
    urls: impl IntoIterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let policy = config.webhook_policy();
    let unique: std::collections::BTreeSet<&str> = urls.into_iter().collect();
    for u in unique {
        let url = url::Url::parse(u)
            .map_err(|e| ApiError::BadRequest(format!("invalid webhook_url: {e}")))?;
        policy.check(&url).await.map_err(|e| {
            tracing::info!(detail = %e.detail(), "webhook target refused");
            ApiError::WebhookTarget(e)
        })?;
    }
    Ok(())
}

/// Refuses options the tenant may not use.
pub fn check_allowed(options: &JobOptions, limits: &TenantLimits) -> Result<(), ApiError> {
    if !limits.allow_strong && options.summary_model == ModelTier::Strong {
        return Err(ApiError::NotAllowed {
            code: "strong-model-not-allowed",
            message: "this tenant may not use the strong chat model (summary_model: strong)".into(),
        });
    }
    if !limits.allow_rubrics && options.rubric.is_some() {
        return Err(ApiError::NotAllowed {
            code: "rubrics-not-allowed",
            message: "this tenant may not ask for rubrics".into(),
        });
    }
    Ok(())
}

/// Refuses `new_jobs` more jobs when they would pass the tenant's daily quota.
pub async fn check_daily_quota(
    db: &sqlx::PgPool,
    tenant_id: uuid::Uuid,
    limits: &TenantLimits,
    new_jobs: usize,
) -> Result<(), ApiError> {
    if let Some(max) = limits.max_jobs_per_day {
        let used = shared::db::batch::jobs_last_day(db, tenant_id).await?;
        if used + new_jobs as i64 > i64::from(max) {
            return Err(ApiError::LimitExceeded {
                code: "daily-quota-exceeded",
                message: format!(
                    "this tenant may create {max} jobs per 24 hours; {used} were created and \
                     this request adds {new_jobs}"
                ),
            });
        }
    }
    Ok(())
}
