//! PostgreSQL: tenants, API keys, jobs and their result versions.
//!
//! Every query the binaries run lives here, so the schema (`migrations/`) and its users
//! change together. Rows are read into `sqlx::FromRow` structs (or `query_scalar`), never
//! with `Row::get`, so a renamed or retyped column is an error, not a panic.
//! `shared/tests/db.rs` runs every function here against a real database with the
//! migrations applied, so the queries are checked by tests rather than at compile time
//! and building needs no database.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

pub mod admin;
pub mod batch;
pub mod purge;
pub mod webhooks;

use crate::config::Config;
use crate::domain::{
    is_canonical_key, JobOptions, JobResult, JobStatus, Lane, S3Prefix, Transcript,
};
use crate::webhooks::Event;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
}

/// PostgreSQL `NOTIFY` channel on which every job that reaches `completed` or `failed`
/// is announced (payload: its id), in the transaction that finishes it; the API's
/// long-poll (`GET /v1/jobs/{id}?wait=N`) listens on it.
pub const JOB_FINISHED_CHANNEL: &str = "voxq_job_finished";

/// Embedded `migrations/`, applied by `voxq-api` at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens a pool. Connections are checked before use so a restarted server is survived.
pub async fn connect(config: &Config) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(&config.database_url)?;
    let pool = PgPoolOptions::new()
        .max_connections(config.database_max_connections.max(1))
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(true)
        .connect_with(options)
        .await?;
    Ok(pool)
}

pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

// ---------------------------------------------------------------- tenants and keys

/// What an API key may do: submit jobs and batches, read them, reprocess the tenant's
/// jobs (`admin`), and act across tenants (`operator`, the service owner's).
pub const SCOPES: [&str; 4] = ["jobs:write", "jobs:read", "admin", "operator"];

/// A newly created key; `secret` is shown once and never stored.
#[derive(Debug)]
pub struct NewApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub secret: String,
}

/// An authenticated caller.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub scopes: Vec<String>,
}

impl ApiKeyRecord {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// SHA-256 of a key. Keys are 256 random bits, so a fast hash is as strong as a slow one.
pub fn hash_key(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Creates the tenant if needed and a key for it.
pub async fn create_api_key(
    pool: &PgPool,
    tenant: &str,
    scopes: &[String],
) -> Result<NewApiKey, DbError> {
    let mut tx = pool.begin().await?;
    let tenant_id: Uuid = sqlx::query_scalar(
        "INSERT INTO tenants (id, name) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!("vxq_{}", hex::encode(raw));
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, prefix, key_hash, scopes) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(&secret[..12])
    .bind(hash_key(&secret))
    .bind(scopes)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(NewApiKey {
        id,
        tenant_id,
        secret,
    })
}

/// The live key whose secret hashes to `hash` ([`hash_key`]), if any.
pub async fn find_api_key_by_hash(
    pool: &PgPool,
    hash: &[u8],
) -> Result<Option<ApiKeyRecord>, DbError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await?)
}

// ---------------------------------------------------------------- source grants

/// An S3 prefix a tenant may submit audio from.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SourceGrant {
    pub tenant: String,
    pub bucket: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("unknown tenant '{0}'")]
    UnknownTenant(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for GrantError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e.into())
    }
}

/// Lets `tenant` submit any object of `prefix` (see [`S3Prefix`]). Granting twice is a
/// no-op.
pub async fn grant_source(
    pool: &PgPool,
    tenant: &str,
    prefix: &S3Prefix,
) -> Result<(), GrantError> {
    let done = sqlx::query(
        "INSERT INTO source_grants (tenant_id, bucket, prefix)
         SELECT id, $2, $3 FROM tenants WHERE name = $1
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&prefix.bucket)
    .bind(&prefix.prefix)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 && tenant_id(pool, tenant).await?.is_none() {
        return Err(GrantError::UnknownTenant(tenant.to_string()));
    }
    Ok(())
}

/// Withdraws a grant; `false` if there was none.
pub async fn revoke_source(
    pool: &PgPool,
    tenant: &str,
    prefix: &S3Prefix,
) -> Result<bool, GrantError> {
    if tenant_id(pool, tenant).await?.is_none() {
        return Err(GrantError::UnknownTenant(tenant.to_string()));
    }
    let done = sqlx::query(
        "DELETE FROM source_grants g USING tenants t
         WHERE g.tenant_id = t.id AND t.name = $1 AND g.bucket = $2 AND g.prefix = $3",
    )
    .bind(tenant)
    .bind(&prefix.bucket)
    .bind(&prefix.prefix)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Grants of one tenant, or of all tenants, by tenant, bucket and prefix.
pub async fn list_sources(
    pool: &PgPool,
    tenant: Option<&str>,
) -> Result<Vec<SourceGrant>, DbError> {
    Ok(sqlx::query_as(
        "SELECT t.name AS tenant, g.bucket, g.prefix, g.created_at
         FROM source_grants g JOIN tenants t ON t.id = g.tenant_id
         WHERE $1::text IS NULL OR t.name = $1
         ORDER BY t.name, g.bucket, g.prefix",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

async fn tenant_id(pool: &PgPool, name: &str) -> Result<Option<Uuid>, DbError> {
    Ok(sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?)
}

/// Whether a tenant may have `s3://bucket/key` transcribed: its own uploads in the
/// uploads bucket, or an object under a prefix granted to it. Keys that are not
/// canonical (`..`, `.` or empty segments) are never readable. Nothing asks S3, so the
/// answer is the same whether the object exists or not.
pub async fn may_read_source(
    pool: &PgPool,
    tenant_id: Uuid,
    uploads_bucket: &str,
    bucket: &str,
    key: &str,
) -> Result<bool, DbError> {
    if !is_canonical_key(key) {
        return Ok(false);
    }
    if bucket == uploads_bucket && key.starts_with(&format!("uploads/{tenant_id}/")) {
        return Ok(true);
    }
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM source_grants
                        WHERE tenant_id = $1 AND bucket = $2 AND starts_with($3, prefix))",
    )
    .bind(tenant_id)
    .bind(bucket)
    .bind(key)
    .fetch_one(pool)
    .await?)
}

// ---------------------------------------------------------------- leases

/// Takes or renews the lease `name` for `holder` for `ttl`; `true` while `holder` has
/// it. Another holder gets it only once it has expired, so one process at a time does
/// a fleet-wide duty, and a dead holder is replaced within `ttl`.
pub async fn try_lease(
    pool: &PgPool,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, DbError> {
    let got: Option<String> = sqlx::query_scalar(
        "INSERT INTO leases (name, holder, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))
         ON CONFLICT (name) DO UPDATE
             SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
             WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()
         RETURNING holder",
    )
    .bind(name)
    .bind(holder)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(got.is_some())
}

// ---------------------------------------------------------------- jobs

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub lane: Lane,
    pub source: String,
    pub options: JobOptions,
    /// The creating request's W3C `traceparent` (see `shared::trace`).
    pub traceparent: Option<String>,
}

pub async fn insert_job(pool: &PgPool, job: &NewJob) -> Result<DateTime<Utc>, DbError> {
    let options =
        serde_json::to_value(&job.options).map_err(|e| DbError::Corrupt(e.to_string()))?;
    let created: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO jobs (id, tenant_id, lane, source, options, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING created_at",
    )
    .bind(job.id)
    .bind(job.tenant_id)
    .bind(job.lane.as_str())
    .bind(&job.source)
    .bind(options)
    .bind(&job.traceparent)
    .fetch_one(pool)
    .await?;
    Ok(created)
}

/// Records that these jobs are in Redis.
pub async fn mark_enqueued(pool: &PgPool, ids: &[Uuid]) -> Result<(), DbError> {
    // By primary key only: with `AND status = 'queued'` the planner may pick the partial
    // index of queued jobs and read every one of them (found by bench/load.sh).
    sqlx::query("UPDATE jobs SET enqueued_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// A job waiting to be pushed to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedJob {
    pub id: Uuid,
    pub lane: Lane,
    /// Runs so far; part of the queue task id, so a re-push of the same run is a no-op.
    pub attempts: i32,
    /// A run of this job was lost (its worker stopped touching it) and the job was put
    /// back to `queued`: its old task id is used up.
    pub abandoned: bool,
}

/// Queued interactive jobs that were never pushed to Redis, and queued jobs of either lane
/// pushed longer ago than `stale` (Redis may have lost them), oldest first. Bulk jobs
/// never pushed are the dispatcher's ([`batch::bulk_candidates`]), not the sweeper's.
/// Each part is an index range of `jobs_to_enqueue` (lane, enqueued_at), so a sweep
/// reads only the rows it returns, however long the bulk backlog.
pub async fn jobs_to_enqueue(
    pool: &PgPool,
    stale: Duration,
    limit: i64,
) -> Result<Vec<QueuedJob>, DbError> {
    let rows: Vec<QueuedRow> = sqlx::query_as(
        "(SELECT id, lane, attempts FROM jobs
          WHERE status = 'queued' AND lane = 'interactive' AND enqueued_at IS NULL
          ORDER BY lane, enqueued_at NULLS FIRST LIMIT $2)
         UNION ALL
         (SELECT id, lane, attempts FROM jobs
          WHERE status = 'queued' AND lane = 'interactive'
            AND enqueued_at < now() - make_interval(secs => $1)
          ORDER BY lane, enqueued_at NULLS FIRST LIMIT $2)
         UNION ALL
         (SELECT id, lane, attempts FROM jobs
          WHERE status = 'queued' AND lane = 'bulk'
            AND enqueued_at < now() - make_interval(secs => $1)
          ORDER BY lane, enqueued_at NULLS FIRST LIMIT $2)",
    )
    .bind(stale.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(|r| r.into_job(false)).collect()
}

/// A queued job as stored; `lane` is checked when it becomes a [`QueuedJob`].
#[derive(sqlx::FromRow)]
struct QueuedRow {
    id: Uuid,
    lane: String,
    attempts: i32,
}

impl QueuedRow {
    fn into_job(self, abandoned: bool) -> Result<QueuedJob, DbError> {
        Ok(QueuedJob {
            id: self.id,
            lane: self.lane.parse().map_err(DbError::Corrupt)?,
            attempts: self.attempts,
            abandoned,
        })
    }
}

/// A row of [`recover_lost_runs`]: the job and the status it was given.
#[derive(sqlx::FromRow)]
struct RecoveredRow {
    #[sqlx(flatten)]
    job: QueuedRow,
    status: String,
}

/// What became of the `processing` jobs whose run was lost (not touched for `lost`).
#[derive(Debug, Default)]
pub struct LostRuns {
    /// Put back to `queued` (run token cleared), to be pushed again.
    pub requeued: Vec<QueuedJob>,
    /// Failed as `worker-crashed`: their runs reached `max_attempts`, each one lost. A job
    /// that takes its worker down (out of memory, an abort in native code) ends here
    /// instead of taking down every worker in turn.
    pub failed: Vec<Uuid>,
}

/// Recovers lost runs: each `processing` job untouched for `lost` is failed as
/// `worker-crashed` when its attempts are used up, else put back to `queued` with its
/// run token cleared, so the lost run can write nothing if it ever resumes.
pub async fn recover_lost_runs(
    pool: &PgPool,
    lost: Duration,
    max_attempts: i32,
    limit: i64,
) -> Result<LostRuns, DbError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<RecoveredRow> = sqlx::query_as(
        "WITH lost AS (
             SELECT id FROM jobs
             WHERE status = 'processing' AND updated_at < now() - make_interval(secs => $1)
             ORDER BY updated_at LIMIT $3
             FOR UPDATE SKIP LOCKED)
         UPDATE jobs j SET
             status = CASE WHEN j.attempts - j.attempts_base >= $2 THEN 'failed' ELSE 'queued' END,
             run_token = NULL,
             updated_at = now(),
             enqueued_at = CASE WHEN j.attempts - j.attempts_base >= $2 THEN j.enqueued_at
                           ELSE now() END,
             finished_at = CASE WHEN j.attempts - j.attempts_base >= $2 THEN now() ELSE NULL END,
             error_code = CASE WHEN j.attempts - j.attempts_base >= $2 THEN $4 ELSE j.error_code END,
             error_message = CASE WHEN j.attempts - j.attempts_base >= $2 THEN $5
                             ELSE j.error_message END
         FROM lost WHERE j.id = lost.id
         RETURNING j.id, j.lane, j.attempts, j.status",
    )
    .bind(lost.as_secs_f64())
    .bind(max_attempts)
    .bind(limit)
    .bind(WORKER_CRASHED)
    .bind(worker_crashed_message(max_attempts))
    .fetch_all(&mut *tx)
    .await?;
    let mut out = LostRuns::default();
    for r in rows {
        if r.status == "failed" {
            out.failed.push(r.job.id);
        } else {
            out.requeued.push(r.job.into_job(true)?);
        }
    }
    if !out.failed.is_empty() {
        sqlx::query("SELECT count(pg_notify($1, x::text)) FROM unnest($2::uuid[]) AS x")
            .bind(JOB_FINISHED_CHANNEL)
            .bind(&out.failed)
            .execute(&mut *tx)
            .await?;
        for id in &out.failed {
            webhooks::enqueue_job_event(&mut tx, *id, Event::JobFailed, None).await?;
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Error code of a job whose every run was lost with its worker.
pub const WORKER_CRASHED: &str = "worker-crashed";
/// Error code of a job whose runs all ended in transient errors.
pub const RETRIES_EXHAUSTED: &str = "retries-exhausted";

fn worker_crashed_message(attempts: i32) -> String {
    format!(
        "the worker stopped during each of {attempts} runs of this job (it may exhaust memory \
         or crash the decoder); not retried"
    )
}

/// Marks a running job as alive (its worker calls this while it works on it). `false`
/// when `run` no longer owns the job: another run replaced it, or it was failed; the
/// caller should stop working on it.
pub async fn touch_job(pool: &PgPool, id: Uuid, run: Uuid) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE jobs SET updated_at = now()
         WHERE id = $1 AND run_token = $2 AND status = 'processing'",
    )
    .bind(id)
    .bind(run)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A job as its owner sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub status: JobStatus,
    pub lane: Lane,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    /// The batch that created the job, and the caller's id for it there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// The result version `result` holds: the latest stored one unless another was asked
    /// for. A reprocessed job keeps answering its previous version until the new one is
    /// stored.
    pub version: Option<i32>,
    /// The version the job's current (or last) run works on; `status` is that run's.
    pub requested_version: i32,
    pub result: Option<JobResult>,
    pub error: Option<JobErrorView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobErrorView {
    pub code: String,
    pub message: String,
}

/// A row of [`get_job`]: `result` is the latest result version as one JSON object.
#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    status: String,
    lane: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    attempts: i32,
    batch_id: Option<Uuid>,
    custom_id: Option<String>,
    requested_version: i32,
    error_code: Option<String>,
    error_message: Option<String>,
    version: Option<i32>,
    result: Option<serde_json::Value>,
}

/// The job with its latest result (or result `version`), if it belongs to `tenant_id`.
/// With a `version` that was never stored, `result` and `version` are absent.
pub async fn get_job(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
    version: Option<i32>,
) -> Result<Option<JobView>, DbError> {
    let row: Option<JobRow> = sqlx::query_as(
        "SELECT j.id, j.status, j.lane, j.created_at, j.started_at, j.finished_at, j.attempts,
                j.batch_id, j.custom_id, j.requested_version, j.error_code, j.error_message,
                r.version,
                CASE WHEN r.job_id IS NOT NULL THEN
                    jsonb_build_object('transcript', r.transcript, 'scores', r.scores,
                        'summary', r.summary, 'rubric', r.rubric, 'usage', r.usage) END AS result
         FROM jobs j
         LEFT JOIN LATERAL (
             SELECT * FROM job_results x
             WHERE x.job_id = j.id AND ($3::integer IS NULL OR x.version = $3)
             ORDER BY x.version DESC LIMIT 1) r ON true
         WHERE j.id = $1 AND j.tenant_id = $2",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(version)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let status: JobStatus = r.status.parse().map_err(DbError::Corrupt)?;
    let result = r.result.map(stored_result).transpose()?;
    let error = match (status, r.error_code) {
        (JobStatus::Failed, Some(code)) => Some(JobErrorView {
            code,
            message: r.error_message.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(Some(JobView {
        id: r.id,
        status,
        lane: r.lane.parse().map_err(DbError::Corrupt)?,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        attempts: r.attempts,
        batch_id: r.batch_id,
        custom_id: r.custom_id,
        version: r.version,
        requested_version: r.requested_version,
        result,
        error,
    }))
}

fn stored_result(mut v: serde_json::Value) -> Result<JobResult, DbError> {
    let corrupt = |e: serde_json::Error| DbError::Corrupt(format!("stored result: {e}"));
    let field = |v: &mut serde_json::Value, k: &str| v.get_mut(k).map(serde_json::Value::take);
    let transcript: Transcript =
        serde_json::from_value(field(&mut v, "transcript").unwrap_or_default()).map_err(corrupt)?;
    let opt = |x: Option<serde_json::Value>| x.filter(|x| !x.is_null());
    Ok(JobResult {
        transcript,
        scores: opt(field(&mut v, "scores"))
            .map(serde_json::from_value)
            .transpose()
            .map_err(corrupt)?,
        summary: opt(field(&mut v, "summary"))
            .map(serde_json::from_value)
            .transpose()
            .map_err(corrupt)?,
        rubric: opt(field(&mut v, "rubric")),
        usage: opt(field(&mut v, "usage"))
            .map(serde_json::from_value)
            .transpose()
            .map_err(corrupt)?
            .unwrap_or_default(),
    })
}

/// A job a worker has started.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub source: String,
    pub options: JobOptions,
    /// Runs of this job so far, this one included (part of queue task ids).
    pub attempts: i32,
    /// Runs of the current result version so far, this one included: what
    /// `max_attempts` bounds (a reprocessed job starts again at 1).
    pub run_number: i32,
    pub version: i32,
    /// This run's fencing token: every later write of the run must present it.
    pub run: Uuid,
    /// The `traceparent` of the request that created the job.
    pub traceparent: Option<String>,
}

/// The answer to a claim.
#[derive(Debug)]
// One value per claim, moved once: boxing the job would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Claim {
    /// This run owns the job now.
    Run(ClaimedJob),
    /// The job had used up its attempts and was failed with `code`
    /// (`worker-crashed` when its last run was lost with its worker).
    Exhausted { code: &'static str },
    /// Finished, unknown, or running under a live run: a duplicate delivery, which the
    /// caller acknowledges and drops (the sweeper re-pushes the job if that run is lost).
    Skip,
}

/// A job [`claim_job`] may take, as found under its row lock.
#[derive(sqlx::FromRow)]
struct Claimable {
    status: String,
    attempts: i32,
}

/// A job as [`claim_job`] left it.
#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: Uuid,
    tenant_id: Uuid,
    source: String,
    options: serde_json::Value,
    attempts: i32,
    attempts_base: i32,
    requested_version: i32,
    traceparent: Option<String>,
}

/// Claims a job for one run: a `queued` job, or a `processing` job whose run has not
/// touched it for `lost` (its worker died), counting the attempt and drawing a new run
/// token. A job whose attempts are used up is failed instead of run again, so a job
/// that kills its worker cannot come back forever.
pub async fn claim_job(
    pool: &PgPool,
    id: Uuid,
    worker: &str,
    max_attempts: i32,
    lost: Duration,
) -> Result<Claim, DbError> {
    let mut tx = pool.begin().await?;
    let row: Option<Claimable> = sqlx::query_as(
        "SELECT status, attempts - attempts_base AS attempts FROM jobs
         WHERE id = $1 AND (status = 'queued'
            OR (status = 'processing' AND updated_at < now() - make_interval(secs => $2)))
         FOR UPDATE",
    )
    .bind(id)
    .bind(lost.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Claimable { status, attempts }) = row else {
        return Ok(Claim::Skip);
    };
    if attempts >= max_attempts {
        let (code, message) = if status == "processing" {
            (WORKER_CRASHED, worker_crashed_message(attempts))
        } else {
            (
                RETRIES_EXHAUSTED,
                format!("gave up after {attempts} attempts"),
            )
        };
        sqlx::query(
            "UPDATE jobs SET status = 'failed', run_token = NULL, finished_at = now(),
                    updated_at = now(), error_code = $2, error_message = $3
             WHERE id = $1",
        )
        .bind(id)
        .bind(code)
        .bind(message)
        .execute(&mut *tx)
        .await?;
        notify_finished(&mut tx, id).await?;
        webhooks::enqueue_job_event(&mut tx, id, Event::JobFailed, None).await?;
        tx.commit().await?;
        return Ok(Claim::Exhausted { code });
    }
    let run = Uuid::new_v4();
    let r: ClaimedRow = sqlx::query_as(
        "UPDATE jobs SET status = 'processing', attempts = attempts + 1, run_token = $3,
                started_at = COALESCE(started_at, now()), updated_at = now(), worker = $2
         WHERE id = $1
         RETURNING id, tenant_id, source, options, attempts, attempts_base, requested_version,
                   traceparent",
    )
    .bind(id)
    .bind(worker)
    .bind(run)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Claim::Run(ClaimedJob {
        id: r.id,
        tenant_id: r.tenant_id,
        source: r.source,
        options: serde_json::from_value(r.options)
            .map_err(|e| DbError::Corrupt(format!("job options: {e}")))?,
        attempts: r.attempts,
        run_number: r.attempts - r.attempts_base,
        version: r.requested_version,
        run,
        traceparent: r.traceparent,
    }))
}

/// Whether a fenced write was made, or refused because its run no longer owns the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    Done,
    /// Another run owns the job now, or it was finished without this run: nothing was
    /// written.
    Superseded,
}

/// Stores the result version and completes the job, in one transaction, if `job.run`
/// still owns it. A stale run changes nothing, and a failed job never turns completed.
pub async fn complete_job(
    pool: &PgPool,
    job: &ClaimedJob,
    result: &JobResult,
    model: &str,
    worker: &str,
    timings: &serde_json::Value,
    cache_keys: &[String],
) -> Result<Fenced, DbError> {
    let transcript = to_json(&result.transcript)?;
    let scores = to_json(&result.scores)?;
    let summary = to_json(&result.summary)?;
    let usage = to_json(&result.usage)?;
    let mut tx = pool.begin().await?;
    let owned = sqlx::query(
        "UPDATE jobs SET status = 'completed', finished_at = now(), updated_at = now(),
                run_token = NULL, timings = $3, error_code = NULL, error_message = NULL
         WHERE id = $1 AND run_token = $2 AND status = 'processing'",
    )
    .bind(job.id)
    .bind(job.run)
    .bind(timings)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !owned {
        tx.rollback().await?;
        return Ok(Fenced::Superseded);
    }
    // The version is new unless an unfenced writer stored it; keep the first either way.
    sqlx::query(
        "INSERT INTO job_results (job_id, version, transcript, model, worker, scores, summary, rubric, usage)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (job_id, version) DO NOTHING",
    )
    .bind(job.id)
    .bind(job.version)
    .bind(transcript)
    .bind(model)
    .bind(worker)
    .bind(Some(scores).filter(|v| !v.is_null()))
    .bind(Some(summary).filter(|v| !v.is_null()))
    .bind(result.rubric.clone())
    .bind(usage)
    .execute(&mut *tx)
    .await?;
    if !cache_keys.is_empty() {
        sqlx::query(
            "UPDATE jobs SET cache_keys = ARRAY(SELECT DISTINCT unnest(cache_keys || $2))
             WHERE id = $1",
        )
        .bind(job.id)
        .bind(cache_keys)
        .execute(&mut *tx)
        .await?;
    }
    notify_finished(&mut tx, job.id).await?;
    webhooks::enqueue_job_event(&mut tx, job.id, Event::JobCompleted, Some(result)).await?;
    tx.commit().await?;
    Ok(Fenced::Done)
}

/// Announces a finished job on [`JOB_FINISHED_CHANNEL`] when `tx` commits.
async fn notify_finished(tx: &mut sqlx::PgConnection, id: Uuid) -> Result<(), DbError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(JOB_FINISHED_CHANNEL)
        .bind(id.to_string())
        .execute(tx)
        .await?;
    Ok(())
}

/// Fails the job for good with a stable code and a readable message, if `run` owns it.
pub async fn fail_job(
    pool: &PgPool,
    job: &ClaimedJob,
    code: &str,
    message: &str,
    timings: &serde_json::Value,
) -> Result<Fenced, DbError> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE jobs SET status = 'failed', finished_at = now(), updated_at = now(),
                run_token = NULL, error_code = $3, error_message = $4, timings = $5
         WHERE id = $1 AND run_token = $2 AND status = 'processing'",
    )
    .bind(job.id)
    .bind(job.run)
    .bind(code)
    .bind(message)
    .bind(timings)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if done == 1 {
        notify_finished(&mut tx, job.id).await?;
        webhooks::enqueue_job_event(&mut tx, job.id, Event::JobFailed, None).await?;
    }
    tx.commit().await?;
    Ok(fenced(done))
}

/// Puts the job back to `queued` after a transient error, if `run` owns it, keeping the
/// error for operators (it is shown to clients only if the job finally fails).
pub async fn requeue_job(
    pool: &PgPool,
    job: &ClaimedJob,
    code: &str,
    message: &str,
) -> Result<Fenced, DbError> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'queued', updated_at = now(), enqueued_at = now(),
                run_token = NULL, error_code = $3, error_message = $4
         WHERE id = $1 AND run_token = $2 AND status = 'processing'",
    )
    .bind(job.id)
    .bind(job.run)
    .bind(code)
    .bind(message)
    .execute(pool)
    .await?;
    Ok(fenced(done.rows_affected()))
}

fn fenced(rows: u64) -> Fenced {
    if rows == 1 {
        Fenced::Done
    } else {
        Fenced::Superseded
    }
}

/// Cheap liveness query for readiness checks.
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, DbError> {
    serde_json::to_value(value).map_err(|e| DbError::Corrupt(e.to_string()))
}

/// Levels an operator watches, read when metrics are scraped.
#[derive(Debug, Default, Clone)]
pub struct Levels {
    /// (status, lane, jobs) for jobs queued or processing.
    pub open_jobs: Vec<(String, String, i64)>,
    /// (tenant name, jobs) of the bulk backlog still waiting in PostgreSQL.
    pub bulk_backlog: Vec<(String, i64)>,
    /// Webhook deliveries still to be made.
    pub webhooks_pending: i64,
}

pub async fn levels(pool: &PgPool) -> Result<Levels, DbError> {
    let open_jobs = sqlx::query_as(
        "SELECT status, lane, count(*) FROM jobs WHERE status IN ('queued', 'processing')
         GROUP BY status, lane",
    )
    .fetch_all(pool)
    .await?;
    let bulk_backlog = sqlx::query_as(
        "SELECT t.name, count(*) FROM jobs j JOIN tenants t ON t.id = j.tenant_id
         WHERE j.status = 'queued' AND j.lane = 'bulk' AND j.enqueued_at IS NULL
         GROUP BY t.name",
    )
    .fetch_all(pool)
    .await?;
    let webhooks_pending =
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
            .fetch_one(pool)
            .await?;
    Ok(Levels {
        open_jobs,
        bulk_backlog,
        webhooks_pending,
    })
}
