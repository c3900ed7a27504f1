//! PostgreSQL: tenants, API keys, jobs and their result versions.
//!
//! Every query the binaries run lives here, so the schema (`migrations/`) and its users
//! change together. The queries are checked by the integration tests against a real
//! database (`tests/`), not at compile time, so building needs no database.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

use crate::config::Config;
use crate::domain::{JobOptions, JobResult, JobStatus, Lane, Transcript};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
}

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

/// What an API key may do.
pub const SCOPES: [&str; 2] = ["jobs:write", "jobs:read"];

/// A newly created key; `secret` is shown once and never stored.
#[derive(Debug)]
pub struct NewApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub secret: String,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
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

/// The live key whose secret this is, if any.
pub async fn find_api_key(pool: &PgPool, secret: &str) -> Result<Option<ApiKeyRecord>, DbError> {
    let row = sqlx::query(
        "SELECT id, tenant_id, scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash_key(secret))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| ApiKeyRecord {
        id: r.get("id"),
        tenant_id: r.get("tenant_id"),
        scopes: r.get("scopes"),
    }))
}

// ---------------------------------------------------------------- jobs

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub lane: Lane,
    pub source: String,
    pub options: JobOptions,
}

pub async fn insert_job(pool: &PgPool, job: &NewJob) -> Result<DateTime<Utc>, DbError> {
    let options =
        serde_json::to_value(&job.options).map_err(|e| DbError::Corrupt(e.to_string()))?;
    let created: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO jobs (id, tenant_id, lane, source, options) VALUES ($1, $2, $3, $4, $5)
         RETURNING created_at",
    )
    .bind(job.id)
    .bind(job.tenant_id)
    .bind(job.lane.as_str())
    .bind(&job.source)
    .bind(options)
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
    /// A `processing` job whose worker stopped touching it: its run was lost.
    pub abandoned: bool,
}

/// Queued jobs that were never pushed to Redis, or were pushed longer ago than
/// `stale` (Redis may have lost them), oldest first; then `processing` jobs not touched
/// for `abandoned` (their worker's run was lost, e.g. cancelled when Redis failed).
pub async fn jobs_to_enqueue(
    pool: &PgPool,
    stale: Duration,
    abandoned: Duration,
    limit: i64,
) -> Result<Vec<QueuedJob>, DbError> {
    let rows = sqlx::query(
        "(SELECT id, lane, attempts, false AS abandoned FROM jobs
          WHERE status = 'queued'
            AND (enqueued_at IS NULL OR enqueued_at < now() - make_interval(secs => $1))
          ORDER BY enqueued_at NULLS FIRST LIMIT $2)
         UNION ALL
         (SELECT id, lane, attempts, true FROM jobs
          WHERE status = 'processing' AND updated_at < now() - make_interval(secs => $3)
          LIMIT $2)",
    )
    .bind(stale.as_secs_f64())
    .bind(limit)
    .bind(abandoned.as_secs_f64())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let lane: String = r.get("lane");
            Ok(QueuedJob {
                id: r.get("id"),
                lane: lane.parse().map_err(DbError::Corrupt)?,
                attempts: r.get("attempts"),
                abandoned: r.get("abandoned"),
            })
        })
        .collect()
}

/// Marks a running job as alive (its worker calls this while it works on it).
pub async fn touch_job(pool: &PgPool, id: Uuid) -> Result<(), DbError> {
    sqlx::query("UPDATE jobs SET updated_at = now() WHERE id = $1 AND status = 'processing'")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// A job as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: Uuid,
    pub status: JobStatus,
    pub lane: Lane,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub result: Option<JobResult>,
    pub error: Option<JobErrorView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobErrorView {
    pub code: String,
    pub message: String,
}

/// The job with its latest result, if it belongs to `tenant_id`.
pub async fn get_job(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<Option<JobView>, DbError> {
    let row = sqlx::query(
        "SELECT j.id, j.status, j.lane, j.created_at, j.started_at, j.finished_at, j.attempts,
                j.error_code, j.error_message,
                (SELECT jsonb_build_object('transcript', r.transcript, 'scores', r.scores,
                        'summary', r.summary, 'rubric', r.rubric, 'usage', r.usage)
                 FROM job_results r WHERE r.job_id = j.id
                 ORDER BY r.version DESC LIMIT 1) AS result
         FROM jobs j WHERE j.id = $1 AND j.tenant_id = $2",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let status: String = r.get("status");
    let lane: String = r.get("lane");
    let status: JobStatus = status.parse().map_err(DbError::Corrupt)?;
    let stored: Option<serde_json::Value> = r.get("result");
    let result = stored.map(stored_result).transpose()?;
    let code: Option<String> = r.get("error_code");
    let error = match (status, code) {
        (JobStatus::Failed, Some(code)) => Some(JobErrorView {
            code,
            message: r
                .get::<Option<String>, _>("error_message")
                .unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(Some(JobView {
        id: r.get("id"),
        status,
        lane: lane.parse().map_err(DbError::Corrupt)?,
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
        attempts: r.get("attempts"),
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
    pub attempts: i32,
    pub version: i32,
}

/// Marks the job as processing by `worker` and counts the attempt. `None` if the job is
/// finished or unknown: a duplicate delivery, which the caller acknowledges and drops.
pub async fn claim_job(
    pool: &PgPool,
    id: Uuid,
    worker: &str,
) -> Result<Option<ClaimedJob>, DbError> {
    let row = sqlx::query(
        "UPDATE jobs SET status = 'processing', attempts = attempts + 1,
                started_at = COALESCE(started_at, now()), updated_at = now(), worker = $2
         WHERE id = $1 AND status IN ('queued', 'processing')
         RETURNING id, tenant_id, source, options, attempts, requested_version",
    )
    .bind(id)
    .bind(worker)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        let options: serde_json::Value = r.get("options");
        Ok(ClaimedJob {
            id: r.get("id"),
            tenant_id: r.get("tenant_id"),
            source: r.get("source"),
            options: serde_json::from_value(options)
                .map_err(|e| DbError::Corrupt(format!("job options: {e}")))?,
            attempts: r.get("attempts"),
            version: r.get("requested_version"),
        })
    })
    .transpose()
}

/// Stores the result version and completes the job, in one transaction. A second run of
/// the same job (at-least-once delivery) finds the version present and changes nothing,
/// so each version exists exactly once. Returns whether this call stored it.
pub async fn complete_job(
    pool: &PgPool,
    job: &ClaimedJob,
    result: &JobResult,
    model: &str,
    worker: &str,
    timings: &serde_json::Value,
) -> Result<bool, DbError> {
    let transcript = to_json(&result.transcript)?;
    let scores = to_json(&result.scores)?;
    let summary = to_json(&result.summary)?;
    let usage = to_json(&result.usage)?;
    let mut tx = pool.begin().await?;
    let stored = sqlx::query(
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
    .await?
    .rows_affected()
        == 1;
    sqlx::query(
        "UPDATE jobs SET status = 'completed', finished_at = now(), updated_at = now(),
                timings = $2, error_code = NULL, error_message = NULL
         WHERE id = $1 AND status <> 'completed'",
    )
    .bind(job.id)
    .bind(timings)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(stored)
}

/// Fails the job for good with a stable code and a readable message.
pub async fn fail_job(
    pool: &PgPool,
    id: Uuid,
    code: &str,
    message: &str,
    timings: &serde_json::Value,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE jobs SET status = 'failed', finished_at = now(), updated_at = now(),
                error_code = $2, error_message = $3, timings = $4
         WHERE id = $1 AND status <> 'completed'",
    )
    .bind(id)
    .bind(code)
    .bind(message)
    .bind(timings)
    .execute(pool)
    .await?;
    Ok(())
}

/// Puts the job back to `queued` after a transient error, keeping the error for operators
/// (it is shown to clients only if the job finally fails).
pub async fn requeue_job(
    pool: &PgPool,
    id: Uuid,
    code: &str,
    message: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE jobs SET status = 'queued', updated_at = now(), enqueued_at = now(),
                error_code = $2, error_message = $3
         WHERE id = $1 AND status = 'processing'",
    )
    .bind(id)
    .bind(code)
    .bind(message)
    .execute(pool)
    .await?;
    Ok(())
}

/// Number of result versions stored for a job (used by tests and operators).
pub async fn result_versions(pool: &PgPool, id: Uuid) -> Result<i64, DbError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM job_results WHERE job_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?,
    )
}

/// Cheap liveness query for readiness checks.
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, DbError> {
    serde_json::to_value(value).map_err(|e| DbError::Corrupt(e.to_string()))
}
