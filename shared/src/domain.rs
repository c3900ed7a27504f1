//! Domain types shared by the API and the workers: transcripts and their segments.
//!
//! This module does no I/O: no database, HTTP or queue types belong here.

use serde::{Deserialize, Serialize};

/// One timed stretch of a transcript, as Whisper emits it between two timestamp tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Segment {
    /// Start time in seconds from the beginning of the audio.
    pub start: f64,
    /// End time in seconds.
    pub end: f64,
    /// Text of the segment, without leading or trailing white space.
    pub text: String,
    /// Average log-probability of the segment's tokens (higher is more confident).
    pub avg_logprob: f64,
    /// Probability that the window holding this segment has no speech.
    pub no_speech_prob: f64,
    /// The segment's words with their times, when word timestamps were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word>>,
}

/// One word of a segment, timed as faster-whisper times words (cross-attention
/// alignment with dynamic time warping).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Word {
    /// The word with the punctuation attached to it, without surrounding white space.
    pub word: String,
    /// Start time in seconds from the beginning of the audio.
    pub start: f64,
    /// End time in seconds.
    pub end: f64,
    /// Mean probability of the word's tokens.
    pub probability: f64,
}

/// The result of transcribing one voice message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transcript {
    /// The whole text: the segments joined as the model spaced them.
    pub text: String,
    /// ISO 639-1 code of the spoken language (detected or given).
    pub language: String,
    /// Probability of `language`: the model's when it was detected, 1 when it was given
    /// or the model knows one language; absent when nothing was transcribed or the
    /// provider does not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_probability: Option<f64>,
    /// Duration of the decoded audio in seconds.
    pub duration_s: f64,
    pub segments: Vec<Segment>,
}

impl Transcript {
    /// An empty transcript for audio with nothing to transcribe.
    pub fn empty(language: impl Into<String>, duration_s: f64) -> Self {
        Self {
            text: String::new(),
            language: language.into(),
            language_probability: None,
            duration_s,
            segments: Vec::new(),
        }
    }
}

/// The queue a job waits in. Each lane has its own Redis queue and its own worker
/// concurrency, so bulk backlogs never delay interactive jobs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// Bots waiting for an answer.
    #[default]
    Interactive,
    /// Backfills and reprocessing.
    Bulk,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Interactive, Lane::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Interactive => "interactive",
            Lane::Bulk => "bulk",
        }
    }
}

impl std::str::FromStr for Lane {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "interactive" => Ok(Lane::Interactive),
            "bulk" => Ok(Lane::Bulk),
            other => Err(format!("unknown lane '{other}' (interactive or bulk)")),
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    /// Held: its batch is paused; it waits without being dispatched.
    Paused,
    /// Its batch was cancelled before it ran; it never will.
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Paused,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Paused => "paused",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the job will not run again unless it is reprocessed.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "queued" => Ok(JobStatus::Queued),
            "processing" => Ok(JobStatus::Processing),
            "completed" => Ok(JobStatus::Completed),
            "failed" => Ok(JobStatus::Failed),
            "paused" => Ok(JobStatus::Paused),
            "cancelled" => Ok(JobStatus::Cancelled),
            other => Err(format!("unknown job status '{other}'")),
        }
    }
}

/// Which summary a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SummaryMode {
    #[default]
    Auto,
    None,
    Extractive,
    Abstractive,
}

/// Which chat model an abstractive summary may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelTier {
    #[default]
    Cheap,
    Strong,
}

/// A rubric a job may ask the chat model to score (the worker's rubric stage holds each
/// one's prompt and schema). Stored in job options by name: add variants, never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rubric {
    /// A language learner's fluency, grammar and vocabulary, with corrections.
    LanguageLearner,
    /// A support call's urgency, sentiment and topic.
    Support,
}

impl Rubric {
    pub const ALL: [Rubric; 2] = [Rubric::LanguageLearner, Rubric::Support];

    /// The name jobs give and results carry: `language_learner`, `support`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rubric::LanguageLearner => "language_learner",
            Rubric::Support => "support",
        }
    }
}

impl std::fmt::Display for Rubric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Rubric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown rubric '{s}' (known: {})", known.join(", "))
            })
    }
}

/// Optional stages of a job. Transcription always runs (the others need its text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Transcribe,
    Score,
    Summarize,
}

fn default_tasks() -> Vec<Task> {
    vec![Task::Transcribe, Task::Score, Task::Summarize]
}

/// Per-job options chosen at submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// Language code; detected when absent (multilingual models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Stages to run; default all.
    #[serde(default = "default_tasks")]
    pub tasks: Vec<Task>,
    #[serde(default)]
    pub summary: SummaryMode,
    /// Chat model tier for an abstractive summary or a rubric.
    #[serde(default)]
    pub summary_model: ModelTier,
    /// Rubric scored by the chat model (`language_learner`, `support`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rubric: Option<Rubric>,
    /// Local Whisper model, by its configured name (`base`); `None` is the model named
    /// `default` (the worker's `model_dir`). Remote providers use their own model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Where this job's `job.completed` or `job.failed` event is POSTed, signed with the
    /// tenant's webhook secret (besides the tenant's registered endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Whether that event carries the result (transcript cut to 16 KiB, language,
    /// duration, summary); by default it carries ids, status and links.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub webhook_result: bool,
    /// Times of each word in every segment (`words`), computed as faster-whisper does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub word_timestamps: bool,
    /// Silero voice activity detection before transcription: silences are cut out and
    /// times mapped back to the original audio. `None` lets the worker decide (on for
    /// audio longer than its `vad_min_duration_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vad_filter: Option<bool>,
    /// 30-second windows the language may be detected on (1 to 10; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_detection_segments: Option<u32>,
    /// Probability above which a window's detected language is taken (default 0.5);
    /// below it, further windows vote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_detection_threshold: Option<f64>,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            language: None,
            tasks: default_tasks(),
            summary: SummaryMode::default(),
            summary_model: ModelTier::default(),
            rubric: None,
            model: None,
            webhook_url: None,
            webhook_result: false,
            word_timestamps: false,
            vad_filter: None,
            language_detection_segments: None,
            language_detection_threshold: None,
        }
    }
}

impl JobOptions {
    pub fn wants(&self, task: Task) -> bool {
        task == Task::Transcribe || self.tasks.contains(&task)
    }

    /// What the transcription engine is asked beyond the language and model.
    pub fn engine(&self) -> EngineOptions {
        EngineOptions {
            word_timestamps: self.word_timestamps,
            vad_filter: self.vad_filter,
            language_detection_segments: self.language_detection_segments,
            language_detection_threshold: self.language_detection_threshold,
        }
    }
}

/// How a recording is transcribed, beyond its language and model (see [`JobOptions`]).
/// Part of a transcript's cache key, since each changes the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineOptions {
    pub word_timestamps: bool,
    pub vad_filter: Option<bool>,
    pub language_detection_segments: Option<u32>,
    pub language_detection_threshold: Option<f64>,
}

impl EngineOptions {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Where a job's audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSource {
    /// `s3://bucket/key`
    S3 { bucket: String, key: String },
    /// `https://…` (or `http://…` where configuration allows it)
    Url(url::Url),
}

impl AudioSource {
    /// Parses an `audio_url`. `allow_http` also accepts plain `http://`.
    pub fn parse(s: &str, allow_http: bool) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("s3://") {
            return match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok(Self::S3 {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                }),
                _ => Err(format!("'{s}' is not of the form s3://bucket/key")),
            };
        }
        let url = url::Url::parse(s).map_err(|e| format!("'{s}' is not a URL: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            other => {
                return Err(format!(
                    "unsupported URL scheme '{other}' (use s3:// or https://)"
                ))
            }
        }
        if url.host().is_none() {
            return Err(format!("'{s}' has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("URLs with credentials are not accepted".into());
        }
        Ok(Self::Url(url))
    }

    /// The file extension of the object or URL path, as a decoding hint.
    pub fn extension(&self) -> Option<String> {
        let path = match self {
            Self::S3 { key, .. } => key.as_str(),
            Self::Url(url) => url.path(),
        };
        let name = path.rsplit('/').next()?;
        let (_, ext) = name.rsplit_once('.')?;
        (!ext.is_empty() && ext.len() <= 5).then(|| ext.to_ascii_lowercase())
    }
}

/// Whether an S3 key is canonical: non-empty `/`-separated segments, none of them `.`
/// or `..`, and no control characters. Anything else could name an object other than
/// the one it seems to (S3 clones normalise paths differently), so it is refused.
pub fn is_canonical_key(key: &str) -> bool {
    !key.is_empty()
        && !key.chars().any(char::is_control)
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// A granted S3 prefix: `s3://bucket/` (the whole bucket) or `s3://bucket/dir/…/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Prefix {
    pub bucket: String,
    /// Empty (the whole bucket) or canonical segments ending with `/`.
    pub prefix: String,
}

impl std::str::FromStr for S3Prefix {
    type Err = String;

    /// Parses `s3://bucket/prefix/`; a prefix without its final `/` gets one, so a grant
    /// of `s3://b/calls` never covers `s3://b/calls-private/…`.
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| format!("'{s}' is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(format!("'{bucket}' is not a valid bucket name"));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() && !is_canonical_key(prefix) {
            return Err(format!(
                "prefix '{prefix}' is not canonical (no '.', '..' or empty segments)"
            ));
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

impl std::fmt::Display for S3Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rubric_names_are_their_serde_names() {
        for rubric in Rubric::ALL {
            let name = rubric.as_str();
            assert_eq!(serde_json::to_value(rubric).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<Rubric>(name.into()).unwrap(),
                rubric
            );
            assert_eq!(name.parse::<Rubric>(), Ok(rubric));
        }
        let err = "poetry".parse::<Rubric>().unwrap_err();
        assert_eq!(
            err,
            "unknown rubric 'poetry' (known: language_learner, support)"
        );
    }

    #[test]
    fn audio_sources_parse_and_refuse() {
        assert_eq!(
            AudioSource::parse("s3://b/dir/a.ogg", false).unwrap(),
            AudioSource::S3 {
                bucket: "b".into(),
                key: "dir/a.ogg".into()
            }
        );
        assert_eq!(
            AudioSource::parse("s3://b/dir/a.OGG", false)
                .unwrap()
                .extension()
                .as_deref(),
            Some("ogg")
        );
        assert!(AudioSource::parse("https://example.com/v.mp3", false).is_ok());
        for bad in [
            "s3://bucket",
            "s3:///key",
            "ftp://x/y",
            "file:///etc/passwd",
            "nonsense",
        ] {
            assert!(AudioSource::parse(bad, true).is_err(), "{bad}");
        }
        assert!(AudioSource::parse("http://example.com/v.mp3", false).is_err());
        assert!(AudioSource::parse("http://example.com/v.mp3", true).is_ok());
        assert!(AudioSource::parse("https://u:p@example.com/v.mp3", false).is_err());
    }

    #[test]
    fn only_canonical_keys_are_readable() {
        for good in ["uploads/t/a.ogg", "a", "dir/sub/file.mp3", "a..b/c.d"] {
            assert!(is_canonical_key(good), "{good}");
        }
        for bad in [
            "",
            "/a",
            "a//b",
            "a/",
            "a/../b",
            "../x",
            "./a",
            "a/.",
            "uploads/t/..",
            "a\u{0}b",
        ] {
            assert!(!is_canonical_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn grant_prefixes_parse_to_canonical_directories() {
        let p: S3Prefix = "s3://calls-archive/2024/q1".parse().unwrap();
        assert_eq!(p.bucket, "calls-archive");
        assert_eq!(p.prefix, "2024/q1/");
        assert_eq!(p.to_string(), "s3://calls-archive/2024/q1/");
        let whole: S3Prefix = "s3://calls-archive".parse().unwrap();
        assert_eq!(whole.prefix, "");
        for bad in [
            "s3://Bad_Bucket/x/",
            "https://b/x/",
            "s3://bucket/a/../b/",
            "s3://bucket/a//b/",
        ] {
            assert!(bad.parse::<S3Prefix>().is_err(), "{bad}");
        }
    }
}

/// A problem found in a recording, as listed in [`Scores::flags`]. Stored results and API
/// clients read the snake_case names (`"no_speech"`): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// Nothing to transcribe: empty transcript, almost no speech, or nothing above
    /// BS.1770's -70 LUFS absolute gate.
    NoSpeech,
    /// Speech recorded too low for a listener or a model.
    TooQuiet,
    /// Samples at full scale or on flat tops, often enough to be heard.
    Clipped,
    /// Speech too close to the background noise.
    Noisy,
    /// The model doubts its own transcript.
    LowConfidence,
    /// The transcript may be invented (repetitive, or text where the model heard silence).
    PossibleHallucination,
    /// Too short to be more than a word or an accidental tap.
    TooShort,
}

impl Flag {
    /// Every flag, in the order [`Scores::flags`] lists them.
    pub const ALL: [Flag; 7] = [
        Flag::NoSpeech,
        Flag::TooQuiet,
        Flag::Clipped,
        Flag::Noisy,
        Flag::LowConfidence,
        Flag::PossibleHallucination,
        Flag::TooShort,
    ];

    /// The name results carry, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::NoSpeech => "no_speech",
            Flag::TooQuiet => "too_quiet",
            Flag::Clipped => "clipped",
            Flag::Noisy => "noisy",
            Flag::LowConfidence => "low_confidence",
            Flag::PossibleHallucination => "possible_hallucination",
            Flag::TooShort => "too_short",
        }
    }
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Signal and transcript measurements of one recording, with a combined 0–100 `quality`
/// and flags a bot can act on ("please record that again").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct Scores {
    /// 0 (unusable) to 100 (clean, confident speech).
    pub quality: u8,
    /// Problems found, in the order of [`Flag`]'s variants.
    pub flags: Vec<Flag>,
    pub duration_s: f64,
    /// RMS level of the whole recording, dBFS.
    pub loudness_dbfs: f64,
    /// Integrated loudness (ITU-R BS.1770 K-weighting with gating), LUFS.
    pub loudness_lufs: f64,
    pub peak_dbfs: f64,
    /// Share of samples at or near full scale.
    pub clipping_ratio: f64,
    /// Share of 30 ms frames an energy VAD calls speech.
    pub speech_ratio: f64,
    /// Speech-frame energy over noise-frame energy, dB.
    pub snr_db: f64,
    /// Words per minute of detected speech.
    pub words_per_minute: f64,
    /// exp(duration-weighted mean of segment average log-probabilities), 0–1.
    pub asr_confidence: f64,
    /// Highest no-speech probability of any segment (0 when there are none).
    pub no_speech_prob: f64,
    /// Whisper's gzip compression ratio of the text; above 2.4 suggests repetition.
    pub compression_ratio: f64,
}

/// How a summary was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SummaryKind {
    /// Sentences picked from the transcript, locally, at no model cost.
    Extractive,
    /// Written by a chat model.
    Abstractive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    pub kind: SummaryKind,
    pub text: String,
}

/// What one stage of a job used, and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct StageUsage {
    /// `local` or the configured provider name.
    pub provider: String,
    pub model: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Elapsed time of the stage, milliseconds.
    #[serde(default)]
    pub wall_ms: f64,
    /// CPU time this process spent on the stage for this job, milliseconds: the thread
    /// CPU clock of the threads that ran it (see the worker's `cpu` module).
    pub cpu_ms: f64,
    pub cost_usd: f64,
    /// Served from a cache (no model call).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// Why the stage did less than asked (`no chat model configured`, `chat failed:
    /// provider-timeout`); absent when it did what was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Provider name of work done on this machine (the local engine, scoring, extractive
/// summaries); also the name of the local engine in `transcribe_order`.
pub const LOCAL_PROVIDER: &str = "local";

impl StageUsage {
    /// A stage run on this machine: no tokens, no fee.
    pub fn local(model: impl Into<String>) -> Self {
        Self {
            provider: LOCAL_PROVIDER.into(),
            model: model.into(),
            ..Self::default()
        }
    }
}

/// The stages that record usage. Declared in alphabetical order so a [`Usage`] map
/// serializes its keys in the same order as it did when they were strings.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Rubric,
    Score,
    Summarize,
    Transcribe,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Rubric => "rubric",
            Stage::Score => "score",
            Stage::Summarize => "summarize",
            Stage::Transcribe => "transcribe",
        }
    }
}

/// Usage per stage.
pub type Usage = std::collections::BTreeMap<Stage, StageUsage>;

/// Everything a job produced: the transcript (its fields at the top level), scores,
/// summary, rubric and usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobResult {
    #[serde(flatten)]
    pub transcript: Transcript,
    /// Absent when the job did not ask for scoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Scores>,
    /// `null` when the transcript is too short or no summary was asked for.
    #[serde(default)]
    pub summary: Option<Summary>,
    /// The rubric's scores, shaped by the rubric asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub rubric: Option<serde_json::Value>,
    /// What each stage used and cost, by stage.
    #[serde(default)]
    #[schema(value_type = std::collections::BTreeMap<Stage, StageUsage>)]
    pub usage: Usage,
}
