//! Configuration of the service binaries, loaded once at start-up into [`Config`].
//!
//! Sources, later ones winning: built-in defaults, the TOML file named by `VOXQ_CONFIG`
//! (if set), then environment variables `VOXQ_<FIELD>` (upper case). Every field is listed,
//! with its default, in README.md ("Configuration"). S3 credentials come from the standard
//! AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), never from this struct.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::LOCAL_PROVIDER;
pub mod provider;

pub use provider::{BreakerConfig, ProviderConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error(transparent)]
    Load(#[from] Box<figment::Error>),
}

/// Summary tier policy (see the worker's summarize stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SummaryPolicy {
    /// Below this many words there is nothing worth summarising (`auto`).
    pub min_words: usize,
    /// `auto` summarises locally up to this many tokens, and with the cheap model above.
    pub extractive_max_tokens: usize,
    /// Most tokens of transcript sent to a chat model (longer ones are trimmed).
    pub token_budget: usize,
    /// Most tokens a chat model may answer with.
    pub max_output_tokens: u32,
}

impl Default for SummaryPolicy {
    fn default() -> Self {
        Self {
            min_words: 40,
            extractive_max_tokens: 400,
            token_budget: 3_000,
            max_output_tokens: 200,
        }
    }
}

/// Everything `voxq-api` and `voxq-worker run` read from their environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    // --- services ---
    /// PostgreSQL URL.
    pub database_url: String,
    /// Maximum PostgreSQL connections per process.
    pub database_max_connections: u32,
    /// Redis URL (the queue).
    pub redis_url: String,
    /// Prefix of the Redis queue names; the lanes are `<prefix>:interactive` and `<prefix>:bulk`.
    pub queue_prefix: String,
    /// S3 endpoint URL; empty means AWS's own endpoints.
    pub s3_endpoint: String,
    /// Bucket for uploads; created by `voxq-api` at start-up if missing.
    pub s3_bucket: String,
    pub s3_region: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by MinIO and most S3 clones.
    pub s3_force_path_style: bool,

    // --- api ---
    pub listen_addr: SocketAddr,
    /// Largest accepted upload (multipart `file` part), bytes.
    pub max_upload_bytes: u64,
    /// Sustained requests per second allowed per API key; 0 disables the limit.
    pub rate_limit_per_s: f64,
    /// Requests a key may make in a burst above the sustained rate.
    pub rate_limit_burst: u32,
    /// Failed authentications allowed per client address and second; above the burst,
    /// unknown keys from that address get 429 without a database lookup (keys that
    /// recently succeeded keep working). 0 disables the limit.
    pub auth_failures_per_s: f64,
    /// Failed authentications a client address may make in a burst.
    pub auth_failures_burst: u32,
    /// Seconds a request body may stall (no bytes arriving) before the request ends
    /// with 408.
    pub body_timeout_s: u64,
    /// Requests one API process serves at once; more get 503 `overloaded`.
    pub max_concurrent_requests: usize,
    /// Long-poll requests (`GET /v1/jobs/{id}?wait=N`) one API process holds waiting at
    /// once; beyond that a request is answered at once with the job's current state.
    /// Keep it below `max_concurrent_requests`.
    pub max_waiting_requests: usize,
    /// Longest an OpenAI-compatible `POST /v1/audio/transcriptions` waits for its job,
    /// seconds; then it answers 504 and the job goes on (`GET /v1/jobs/{id}`).
    pub sync_timeout_s: u64,

    /// Address of this process's Prometheus `/metrics` listener, e.g. `0.0.0.0:9464`
    /// (a listener of its own, unauthenticated: keep it on the internal network); empty:
    /// no metrics listener.
    pub metrics_addr: String,
    /// OpenTelemetry collector to export traces to over OTLP/HTTP (JSON), e.g.
    /// `http://otel-collector:4318` (spans go to `<it>/v1/traces`); empty: no export.
    pub otlp_endpoint: String,
    /// Headers sent with every export, `name=value,name=value` (e.g. a vendor's API key).
    pub otlp_headers: String,

    // --- worker ---
    /// faster-whisper model directory: the model named `default`, which jobs that name
    /// no model get.
    pub model_dir: PathBuf,
    /// More faster-whisper model directories, by the name jobs ask for them with
    /// (`JobOptions::model`), e.g. `{ base = "models/whisper-base" }`. A worker loads each
    /// the first time a job asks for it. Naming `default` here replaces `model_dir`.
    pub models: BTreeMap<String, PathBuf>,
    /// faster-whisper's Silero VAD v6 model (`scripts/fetch-vad.sh`), loaded the first
    /// time a job asks for `vad_filter`; without it such jobs fail (`vad-unavailable`).
    pub vad_model: PathBuf,
    /// Jobs that do not set `vad_filter` get it when their audio is longer than this
    /// many seconds; 0: only when they ask.
    pub vad_min_duration_s: f64,
    /// Jobs a worker process runs at once from the `interactive` lane.
    pub interactive_concurrency: usize,
    /// Jobs a worker process runs at once from the `bulk` lane.
    pub bulk_concurrency: usize,
    /// Inference threads per model replica (0 = cores / replicas).
    pub inference_threads: usize,
    /// Tasks fetched from Redis per poll and lane (0 = that lane's concurrency).
    pub queue_fetch_batch: usize,
    /// How often an idle worker polls Redis, milliseconds.
    pub poll_interval_ms: u64,
    /// Worker heartbeat interval, seconds.
    pub heartbeat_interval_s: u64,
    /// Heartbeats a worker may miss before its in-flight jobs are given to another worker.
    pub missed_heartbeats: usize,
    /// Attempts (runs that reached a transient error) before a job fails for good.
    pub max_attempts: i32,
    /// First retry delay, milliseconds; doubles per attempt, with ±50% jitter.
    pub retry_base_ms: u64,
    /// Longest retry delay, milliseconds.
    pub retry_max_ms: u64,
    /// Seconds a queued job may sit in Redis before the sweeper pushes it again (in case
    /// Redis lost it). Pushes are idempotent, so a job still queued is not duplicated.
    pub requeue_after_s: u64,
    /// How often the sweeper looks for jobs to (re-)enqueue, milliseconds.
    pub sweep_interval_ms: u64,
    /// Bulk jobs the dispatcher keeps handed to Redis and not yet claimed, across the
    /// fleet. The rest of the bulk backlog waits in PostgreSQL, where the dispatcher
    /// picks it round-robin across tenants: a tenant's new jobs wait behind at most this
    /// many, not behind another tenant's whole backlog. Set it near the fleet's total
    /// `bulk_concurrency`.
    pub bulk_queue_depth: usize,
    /// How often the dispatcher tops the bulk lane up, milliseconds (at once again while
    /// it has more to hand out).
    pub dispatch_interval_ms: u64,
    /// Seconds the queue keeps the records of finished tasks before the sweeper deletes
    /// them (apalis-redis never does); the jobs themselves stay in PostgreSQL.
    pub queue_retention_s: u64,
    /// Seconds SIGTERM waits for in-flight jobs before the worker exits anyway.
    pub shutdown_grace_s: u64,
    /// Longest audio accepted, seconds.
    pub max_audio_s: f64,
    /// Largest audio file fetched, bytes.
    pub max_fetch_bytes: u64,
    /// Deadline of one whole fetch, seconds: for a URL, name resolution, every redirect
    /// and the body together; for S3, the whole download.
    pub fetch_timeout_s: u64,
    /// Slowest transfer accepted from an audio server, bytes per second averaged over the
    /// last `fetch_min_rate_window_s`; a slower one is aborted (0 = no minimum).
    pub fetch_min_bytes_per_s: u64,
    /// Window of `fetch_min_bytes_per_s`, seconds; the rate is first checked after the
    /// body has been arriving for this long.
    pub fetch_min_rate_window_s: u64,
    /// CIDRs that HTTPS fetches may reach even though they are private, loopback or
    /// link-local (e.g. `10.1.0.0/16`; a bare address is one host). Empty: only public
    /// addresses. A list, or one comma-separated string (the environment's form).
    #[serde(deserialize_with = "cidr_list")]
    pub fetch_allow: Vec<IpNet>,
    /// Also accept `http://` audio URLs (the SSRF rules still apply). Off by default.
    pub fetch_allow_http: bool,
    /// Ports audio URLs may name besides 443 (and 80 when `fetch_allow_http`), e.g.
    /// `[8443]`; any other port is refused before connecting.
    pub fetch_allow_ports: Vec<u16>,

    // --- webhooks (worker delivers; API checks targets at submission) ---
    /// Networks webhook targets may be in although they are private, loopback or
    /// link-local, as `fetch_allow` is for audio. Empty: public addresses only.
    #[serde(deserialize_with = "cidr_list")]
    pub webhook_allow: Vec<IpNet>,
    /// Also accept `http://` webhook URLs (the address rules still apply). Off by default.
    pub webhook_allow_http: bool,
    /// Ports webhook URLs may name besides 443 (and 80 with `webhook_allow_http`).
    pub webhook_allow_ports: Vec<u16>,
    /// Deadline of one delivery attempt (connect, send, answer), seconds.
    pub webhook_timeout_s: u64,
    /// Delays before each retry of a failed delivery, seconds: the first attempt is
    /// immediate, then one retry per entry (the Standard Webhooks schedule, ~3 days).
    pub webhook_retry_schedule_s: Vec<u64>,
    /// Deliveries one worker process makes at once.
    pub webhook_concurrency: usize,
    /// How long a rotated-out secret keeps signing beside the new one, seconds
    /// (a rotation request may ask for another grace).
    pub webhook_rotation_grace_s: u64,

    // --- retention (the sweeper's leader purges) ---
    /// Seconds after a job finished that its uploaded audio is deleted from S3 (0 =
    /// keep). Audio fetched from the tenant's own S3 or a URL is never deleted.
    /// A tenant may override it (`voxq-api limits --audio-retention-s`).
    pub audio_retention_s: u64,
    /// Seconds after a job finished that it is deleted with its results, as
    /// `DELETE /v1/jobs/{id}` would (0 = keep forever). A tenant may override it.
    pub result_retention_s: u64,
    /// How often the purge runs, seconds.
    pub purge_interval_s: u64,

    // --- providers, scoring and summaries (worker) ---
    /// Remote OpenAI-compatible transcription providers (`/audio/transcriptions`), by name.
    pub transcribe_providers: Vec<ProviderConfig>,
    /// Transcription providers tried in order: `local` (the CTranslate2 engine) and/or the
    /// names in `transcribe_providers`. The next is tried on timeout, 5xx or 429.
    pub transcribe_order: Vec<String>,
    /// Cheap chat models (summaries of long transcripts, rubrics), tried in order.
    pub chat_cheap: Vec<ProviderConfig>,
    /// Strong chat models, used only when a job asks for them (`summary_model: strong`).
    pub chat_strong: Vec<ProviderConfig>,
    /// Circuit breaker of every provider: failures in a row that open it, and cool-down.
    pub breaker: BreakerConfig,
    /// Summary tier policy: word and token thresholds, token budget.
    pub summary: SummaryPolicy,
    /// How long chat results are cached in Redis, seconds.
    pub chat_cache_ttl_s: u64,
    /// How long transcripts are cached by audio SHA-256 and options, seconds (0 = off).
    pub transcript_cache_ttl_s: u64,
    /// Benchmarks only: skip decoding and transcription and store an empty transcript,
    /// to measure the queue and database path alone.
    pub bench_noop_transcribe: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/voxq".into(),
            database_max_connections: 16,
            redis_url: "redis://127.0.0.1:6379".into(),
            queue_prefix: "voxq".into(),
            s3_endpoint: String::new(),
            s3_bucket: "voxq".into(),
            s3_region: "us-east-1".into(),
            s3_force_path_style: true,
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_upload_bytes: 25 * 1024 * 1024,
            rate_limit_per_s: 50.0,
            rate_limit_burst: 100,
            auth_failures_per_s: 1.0,
            auth_failures_burst: 20,
            body_timeout_s: 30,
            max_concurrent_requests: 512,
            max_waiting_requests: 256,
            sync_timeout_s: 300,
            metrics_addr: String::new(),
            otlp_endpoint: String::new(),
            otlp_headers: String::new(),
            model_dir: PathBuf::from("models/whisper-tiny.en"),
            models: BTreeMap::new(),
            vad_model: PathBuf::from("models/silero_vad_v6.onnx"),
            vad_min_duration_s: 0.0,
            interactive_concurrency: 2,
            bulk_concurrency: 1,
            inference_threads: 0,
            queue_fetch_batch: 0,
            poll_interval_ms: 100,
            heartbeat_interval_s: 10,
            missed_heartbeats: 3,
            max_attempts: 5,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
            requeue_after_s: 600,
            sweep_interval_ms: 2_000,
            bulk_queue_depth: 8,
            dispatch_interval_ms: 50,
            queue_retention_s: 3_600,
            shutdown_grace_s: 120,
            max_audio_s: 4.0 * 3600.0,
            max_fetch_bytes: 100 * 1024 * 1024,
            fetch_timeout_s: 60,
            fetch_min_bytes_per_s: 16 * 1024,
            fetch_min_rate_window_s: 5,
            fetch_allow: Vec::new(),
            fetch_allow_http: false,
            fetch_allow_ports: Vec::new(),
            webhook_allow: Vec::new(),
            webhook_allow_http: false,
            webhook_allow_ports: Vec::new(),
            webhook_timeout_s: 15,
            webhook_retry_schedule_s: vec![
                5, 300, 1_800, 7_200, 18_000, 36_000, 36_000, 86_400, 86_400,
            ],
            webhook_concurrency: 16,
            webhook_rotation_grace_s: 24 * 3600,
            audio_retention_s: 7 * 24 * 3600,
            result_retention_s: 0,
            purge_interval_s: 60,
            transcribe_providers: Vec::new(),
            transcribe_order: vec![LOCAL_PROVIDER.into()],
            chat_cheap: Vec::new(),
            chat_strong: Vec::new(),
            breaker: BreakerConfig::default(),
            summary: SummaryPolicy::default(),
            chat_cache_ttl_s: 7 * 24 * 3600,
            transcript_cache_ttl_s: 30 * 24 * 3600,
            bench_noop_transcribe: false,
        }
    }
}

/// `VOXQ_*` variables that are not settings of [`Config`]: read by the logger, the build
/// (`VOXQ_ONEDNN_DIR`, see worker/onednn) or the tests (`VOXQ_BASE_MODEL_DIR`, exported
/// by the Makefile). Every other `VOXQ_*` variable must name a setting, so a typo is
/// refused instead of ignored.
const NOT_SETTINGS: &[&str] = &[
    "base_model_dir",
    "config",
    "log",
    "log_format",
    "onednn_dir",
    "test_database",
    "test_s3_port",
];

/// CIDRs from a list or from one comma-separated string: an environment variable gives
/// the string (`VOXQ_FETCH_ALLOW=10.0.0.0/8,fd00::/8`), a TOML file either form.
fn cidr_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    struct Cidrs;

    impl<'de> serde::de::Visitor<'de> for Cidrs {
        type Value = Vec<IpNet>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of CIDRs or a comma-separated string of them")
        }

        fn visit_str<E: serde::de::Error>(self, csv: &str) -> Result<Self::Value, E> {
            csv.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(cidr)
                .collect()
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut nets = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                nets.push(cidr(s.trim())?);
            }
            Ok(nets)
        }
    }

    deserializer.deserialize_any(Cidrs)
}

/// One CIDR; a bare address is the network of that one host.
fn cidr<E: serde::de::Error>(s: &str) -> Result<IpNet, E> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| E::custom(format!("'{s}' is not a CIDR (e.g. 10.1.0.0/16)")))
}

/// The name of the model in [`Config::model_dir`], which jobs that name none get.
pub const DEFAULT_MODEL: &str = "default";

/// A model name as jobs give it: 1 to 64 ASCII letters, digits, `.`, `_` and `-`.
fn valid_model_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The fetch port rule (see [`Config::fetch_port_allowed`]).
pub fn port_allowed(port: u16, allow_http: bool, allow_ports: &[u16]) -> bool {
    port == 443 || (port == 80 && allow_http) || allow_ports.contains(&port)
}

impl Config {
    /// Defaults, then `$VOXQ_CONFIG` (TOML) if set, then `VOXQ_*` variables.
    pub fn load() -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = std::env::var_os("VOXQ_CONFIG") {
            figment = figment.merge(Toml::file_exact(PathBuf::from(path)));
        }
        let config: Config = figment
            .merge(Env::prefixed("VOXQ_").ignore(NOT_SETTINGS))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.interactive_concurrency == 0 && self.bulk_concurrency == 0 {
            return invalid("interactive_concurrency and bulk_concurrency are both 0".into());
        }
        if self.max_attempts < 1 {
            return invalid(format!(
                "max_attempts must be >= 1, not {}",
                self.max_attempts
            ));
        }
        if self.heartbeat_interval_s == 0 || self.missed_heartbeats == 0 {
            return invalid("heartbeat_interval_s and missed_heartbeats must be > 0".into());
        }
        if self.rate_limit_per_s < 0.0 || !self.rate_limit_per_s.is_finite() {
            return invalid(format!(
                "rate_limit_per_s must be >= 0, not {}",
                self.rate_limit_per_s
            ));
        }
        if self.vad_min_duration_s < 0.0 || !self.vad_min_duration_s.is_finite() {
            return invalid(format!(
                "vad_min_duration_s must be >= 0, not {}",
                self.vad_min_duration_s
            ));
        }
        if self.transcribe_order.is_empty() {
            return invalid("transcribe_order is empty".into());
        }
        if let Some(name) = self.models.keys().find(|n| !valid_model_name(n)) {
            return invalid(format!(
                "models names '{name}': a model name is 1 to 64 of a-z, A-Z, 0-9, '.', '_' and '-'"
            ));
        }
        for name in &self.transcribe_order {
            if name != LOCAL_PROVIDER && !self.transcribe_providers.iter().any(|p| &p.name == name)
            {
                return invalid(format!(
                    "transcribe_order names '{name}', which is neither 'local' nor in transcribe_providers"
                ));
            }
        }
        Ok(())
    }

    /// Every local model directory by name: [`Config::models`], plus `default` (the
    /// [`Config::model_dir`]) unless `models` names `default` itself.
    pub fn model_dirs(&self) -> BTreeMap<String, PathBuf> {
        let mut dirs = self.models.clone();
        dirs.entry(DEFAULT_MODEL.to_string())
            .or_insert_with(|| self.model_dir.clone());
        dirs
    }

    /// Whether `name` is a local model of [`Config::model_dirs`].
    pub fn has_model(&self, name: &str) -> bool {
        name == DEFAULT_MODEL || self.models.contains_key(name)
    }

    /// How long a `processing` job may go untouched before its run counts as lost (its
    /// worker missed `missed_heartbeats` heartbeats) and another run may claim it.
    pub fn run_lost_after(&self) -> Duration {
        Duration::from_secs(
            self.heartbeat_interval_s
                .saturating_mul(self.missed_heartbeats as u64),
        )
    }

    /// Whether audio may be fetched from `port`: 443, 80 with `fetch_allow_http`, and
    /// the ports of `fetch_allow_ports`. The API checks it at submission, the fetch stage
    /// on every hop.
    pub fn fetch_port_allowed(&self, port: u16) -> bool {
        port_allowed(port, self.fetch_allow_http, &self.fetch_allow_ports)
    }

    /// Where webhooks may be delivered (`webhook_allow*`).
    pub fn webhook_policy(&self) -> crate::net::TargetPolicy {
        crate::net::TargetPolicy {
            allow: self.webhook_allow.clone(),
            allow_http: self.webhook_allow_http,
            allow_ports: self.webhook_allow_ports.clone(),
        }
    }

    /// How long a request body may stall.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_s.max(1))
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(1))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn fetch_ports_are_a_list_in_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            assert!(Config::load().expect("loads").fetch_allow_ports.is_empty());
            jail.set_env("VOXQ_FETCH_ALLOW_PORTS", "[8443, 9000]");
            jail.set_env("VOXQ_FETCH_MIN_BYTES_PER_S", "0");
            let config = Config::load().expect("loads");
            assert_eq!(config.fetch_allow_ports, [8443, 9000]);
            assert_eq!(config.fetch_min_bytes_per_s, 0);
            jail.set_env("VOXQ_FETCH_ALLOW_PORTS", "[70000]");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.to_lowercase().contains("fetch_allow_ports"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn env_overrides_file_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("voxq.toml", "s3_bucket = \"from-file\"\nmax_attempts = 7\n")?;
            jail.set_env("VOXQ_CONFIG", "voxq.toml");
            jail.set_env("VOXQ_MAX_ATTEMPTS", "9");
            jail.set_env("VOXQ_FETCH_ALLOW", "10.0.0.0/8, 127.0.0.1,fd00::/8");
            let config = Config::load().expect("loads");
            assert_eq!(config.s3_bucket, "from-file");
            assert_eq!(config.max_attempts, 9);
            assert_eq!(config.queue_prefix, Config::default().queue_prefix);
            let nets: Vec<IpNet> = ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]
                .map(|s| s.parse().unwrap())
                .into();
            assert_eq!(config.fetch_allow, nets);
            Ok(())
        });
    }

    #[test]
    fn fetch_allow_in_a_file_is_a_list_or_one_string() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("VOXQ_CONFIG", "voxq.toml");
            jail.create_file("voxq.toml", "fetch_allow = [\"10.1.0.0/16\", \"::1\"]\n")?;
            let nets: Vec<IpNet> = ["10.1.0.0/16", "::1/128"]
                .map(|s| s.parse().unwrap())
                .into();
            assert_eq!(Config::load().expect("loads").fetch_allow, nets);
            jail.create_file("voxq.toml", "fetch_allow = \"10.1.0.0/16, ::1\"\n")?;
            assert_eq!(Config::load().expect("loads").fetch_allow, nets);
            jail.create_file("voxq.toml", "fetch_allow = [\"10.1.0.0/16\", \"lan\"]\n")?;
            let err = Config::load().unwrap_err().to_string();
            assert!(
                err.contains("fetch_allow") && err.contains("'lan'"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn structured_settings_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("VOXQ_SUMMARY", "{min_words = 10, token_budget = 500}");
            jail.set_env("VOXQ_TRANSCRIBE_ORDER", "[local, groq]");
            jail.set_env(
                "VOXQ_TRANSCRIBE_PROVIDERS",
                "[{name = groq, base_url = \"https://api.groq.com/openai/v1\", model = whisper-large-v3}]",
            );
            let config = Config::load().expect("loads");
            assert_eq!(config.summary.min_words, 10);
            assert_eq!(config.summary.token_budget, 500);
            assert_eq!(
                config.summary.extractive_max_tokens, 400,
                "other fields keep defaults"
            );
            assert_eq!(config.transcribe_order, ["local", "groq"]);
            assert_eq!(config.transcribe_providers[0].model, "whisper-large-v3");
            jail.set_env("VOXQ_TRANSCRIBE_ORDER", "[local, nobody]");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("nobody"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn named_models_from_a_file_or_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            let config = Config::load().expect("loads");
            let default = PathBuf::from("models/whisper-tiny.en");
            assert_eq!(
                config.model_dirs(),
                BTreeMap::from([("default".to_string(), default.clone())])
            );
            assert!(config.has_model("default") && !config.has_model("base"));

            jail.create_file("voxq.toml", "models = { base = \"models/whisper-base\" }\n")?;
            jail.set_env("VOXQ_CONFIG", "voxq.toml");
            let config = Config::load().expect("loads");
            assert_eq!(
                config.model_dirs(),
                BTreeMap::from([
                    ("base".to_string(), PathBuf::from("models/whisper-base")),
                    ("default".to_string(), default.clone()),
                ])
            );
            assert!(config.has_model("base") && !config.has_model("small"));

            // The environment's form is a TOML-like inline table; it is merged with the
            // file's (figment merges dictionaries key by key).
            jail.set_env(
                "VOXQ_MODELS",
                "{small = \"/m/whisper-small\", default = \"/m/whisper-tiny\"}",
            );
            jail.set_env("VOXQ_MODEL_DIR", "/ignored/because/default/is/named");
            let config = Config::load().expect("loads");
            assert_eq!(
                config.model_dirs(),
                BTreeMap::from([
                    ("base".to_string(), PathBuf::from("models/whisper-base")),
                    ("default".to_string(), PathBuf::from("/m/whisper-tiny")),
                    ("small".to_string(), PathBuf::from("/m/whisper-small")),
                ])
            );
            assert!(config.has_model("small") && config.has_model("default"));

            jail.set_env("VOXQ_MODELS", "{\"a b\" = \"/m\"}");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("'a b'"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("VOXQ_FETCH_ALLOW", "10.0.0.0/8,not-a-net");
            // figment names the variable: `key "FETCH_ALLOW" in `VOXQ_` environment variable(s)`.
            let err = Config::load().unwrap_err().to_string();
            assert!(
                err.to_lowercase().contains("fetch_allow")
                    && err.contains("'not-a-net' is not a CIDR"),
                "{err}"
            );
            jail.set_env("VOXQ_FETCH_ALLOW", "");
            // The build's and the logger's variables are not settings, and not refused.
            jail.set_env("VOXQ_ONEDNN_DIR", "/opt/onednn");
            jail.set_env("VOXQ_LOG", "debug");
            jail.set_env("VOXQ_BASE_MODEL_DIR", "/models/whisper-base");
            Config::load()
                .expect("VOXQ_ONEDNN_DIR, VOXQ_LOG and VOXQ_BASE_MODEL_DIR are not settings");
            jail.set_env("VOXQ_NO_SUCH_SETTING", "1");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("no_such_setting"), "{err}");
            Ok(())
        });
    }
}
