//! Queries of the admin dashboard (`/admin`, `api/src/admin/`): its login sessions, and
//! what an operator watches: throughput per lane, jobs finished per minute, failures by
//! error code, worker activity, lease holders and cost per tenant. Queue levels come
//! from [`super::levels`] and batches from [`super::batch`], as the API and the metrics
//! scrape read them.
//!
//! Every query reads a time window (finished jobs through the `jobs_finished` index,
//! running ones through `jobs_processing_touched`) and returns a bounded number of rows,
//! so a page load does not grow with the jobs the service ever ran. Cost per tenant
//! reads the result versions of the last 30 days.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{ApiKeyRecord, DbError};

// ---------------------------------------------------------------- sessions

/// Opens a session for `key_id` until `ttl` from now, stored under the SHA-256 of its
/// token (the token itself lives only in the browser's cookie). Expired sessions are
/// deleted on the way, so the table holds only live ones. Returns when it expires.
pub async fn create_session(
    pool: &PgPool,
    token_hash: &[u8],
    key_id: Uuid,
    ttl: Duration,
) -> Result<DateTime<Utc>, DbError> {
    sqlx::query("DELETE FROM admin_sessions WHERE expires_at < now()")
        .execute(pool)
        .await?;
    Ok(sqlx::query_scalar(
        "INSERT INTO admin_sessions (token_hash, key_id, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))
         RETURNING expires_at",
    )
    .bind(token_hash)
    .bind(key_id)
    .bind(ttl.as_secs_f64())
    .fetch_one(pool)
    .await?)
}

/// The live key behind a live session: `None` once the session expired, was ended, or
/// its key was revoked.
pub async fn find_session(
    pool: &PgPool,
    token_hash: &[u8],
) -> Result<Option<ApiKeyRecord>, DbError> {
    Ok(sqlx::query_as(
        "SELECT k.id, k.tenant_id, k.scopes
         FROM admin_sessions s JOIN api_keys k ON k.id = s.key_id
         WHERE s.token_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await?)
}

/// Ends a session (logout); `false` if there was none.
pub async fn delete_session(pool: &PgPool, token_hash: &[u8]) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The name of a tenant.
pub async fn tenant_name(pool: &PgPool, tenant_id: Uuid) -> Result<Option<String>, DbError> {
    Ok(sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(pool)
        .await?)
}

// ---------------------------------------------------------------- fleet

/// Jobs of one lane that finished recently (every tenant's).
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct LaneThroughput {
    pub lane: String,
    pub completed_5m: i64,
    pub failed_5m: i64,
    pub completed_60m: i64,
    pub failed_60m: i64,
}

/// Jobs finished per lane in the last 5 and 60 minutes.
pub async fn lane_throughput(pool: &PgPool) -> Result<Vec<LaneThroughput>, DbError> {
    Ok(sqlx::query_as(
        "SELECT lane,
                count(*) FILTER (WHERE status = 'completed'
                                   AND finished_at > now() - interval '5 minutes') AS completed_5m,
                count(*) FILTER (WHERE status = 'failed'
                                   AND finished_at > now() - interval '5 minutes') AS failed_5m,
                count(*) FILTER (WHERE status = 'completed') AS completed_60m,
                count(*) FILTER (WHERE status = 'failed') AS failed_60m
         FROM jobs
         WHERE finished_at > now() - interval '60 minutes'
         GROUP BY lane ORDER BY lane",
    )
    .fetch_all(pool)
    .await?)
}

/// Jobs that finished within one minute (every tenant's).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Minute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub completed: i64,
    pub failed: i64,
}

/// Jobs completed and failed in each of the last `minutes` minutes (at most a day),
/// oldest first, the current minute last; a minute with none is there with zeros.
pub async fn jobs_per_minute(pool: &PgPool, minutes: u32) -> Result<Vec<Minute>, DbError> {
    let minutes = i32::try_from(minutes.clamp(1, 1440)).unwrap_or(60);
    Ok(sqlx::query_as(
        "WITH f AS (
             SELECT date_trunc('minute', finished_at) AS minute, status FROM jobs
             WHERE finished_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
               AND status IN ('completed', 'failed'))
         SELECT m.minute,
                count(f.minute) FILTER (WHERE f.status = 'completed') AS completed,
                count(f.minute) FILTER (WHERE f.status = 'failed') AS failed
         FROM generate_series(date_trunc('minute', now()) - make_interval(mins => $1 - 1),
                              date_trunc('minute', now()), interval '1 minute') AS m(minute)
         LEFT JOIN f ON f.minute = m.minute
         GROUP BY m.minute ORDER BY m.minute",
    )
    .bind(minutes)
    .fetch_all(pool)
    .await?)
}

/// What jobs show of the workers that ran them: the queue worker name a run was
/// claimed under (`<host>-<pid>-<id>-<lane>-<restarts>`), its lane, and its jobs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerActivity {
    pub worker: String,
    pub lane: String,
    /// Jobs it is running now.
    pub running: i64,
    /// Jobs it completed or failed within the window.
    pub completed: i64,
    pub failed: i64,
    pub last_finished: Option<DateTime<Utc>>,
}

/// Activity per queue worker: jobs running now and jobs finished within `window`.
pub async fn worker_activity(
    pool: &PgPool,
    window: Duration,
) -> Result<Vec<WorkerActivity>, DbError> {
    Ok(sqlx::query_as(
        "SELECT worker, lane,
                count(*) FILTER (WHERE status = 'processing') AS running,
                count(*) FILTER (WHERE status = 'completed') AS completed,
                count(*) FILTER (WHERE status = 'failed') AS failed,
                max(finished_at) AS last_finished
         FROM jobs
         WHERE worker IS NOT NULL
           AND (status = 'processing' OR finished_at > now() - make_interval(secs => $1))
         GROUP BY worker, lane
         ORDER BY max(finished_at) DESC NULLS FIRST, worker
         LIMIT 200",
    )
    .bind(window.as_secs_f64())
    .fetch_all(pool)
    .await?)
}

/// A fleet-wide duty (`sweeper`, `dispatcher`) and the worker process that holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub expires_at: DateTime<Utc>,
}

pub async fn leases(pool: &PgPool) -> Result<Vec<Lease>, DbError> {
    Ok(
        sqlx::query_as("SELECT name, holder, expires_at FROM leases ORDER BY name LIMIT 100")
            .fetch_all(pool)
            .await?,
    )
}

// ---------------------------------------------------------------- a tenant's jobs

/// A tenant's failed jobs with one error code.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailureGroup {
    pub code: String,
    pub jobs: i64,
    pub last_at: DateTime<Utc>,
    /// The message of the latest one.
    pub message: Option<String>,
    /// The latest ones, newest first.
    pub recent: Vec<Uuid>,
}

/// The tenant's jobs that failed within `window`, grouped by error code, most frequent
/// first, each with its `per_code` latest jobs.
pub async fn failures_by_code(
    pool: &PgPool,
    tenant_id: Uuid,
    window: Duration,
    per_code: u32,
) -> Result<Vec<FailureGroup>, DbError> {
    Ok(sqlx::query_as(
        "SELECT COALESCE(error_code, 'unknown') AS code, count(*) AS jobs,
                max(finished_at) AS last_at,
                (array_agg(error_message ORDER BY finished_at DESC, id))[1] AS message,
                (array_agg(id ORDER BY finished_at DESC, id))[1:$3] AS recent
         FROM jobs
         WHERE status = 'failed' AND finished_at > now() - make_interval(secs => $2)
           AND tenant_id = $1
         GROUP BY 1 ORDER BY jobs DESC, code LIMIT 100",
    )
    .bind(tenant_id)
    .bind(window.as_secs_f64())
    .bind(i32::try_from(per_code.clamp(1, 100)).unwrap_or(5))
    .fetch_all(pool)
    .await?)
}

/// What the admin's job page shows besides [`super::get_job`]: who ran it and with
/// what.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobOps {
    pub worker: Option<String>,
    pub options: serde_json::Value,
    /// Milliseconds per stage of the run that completed it.
    pub timings: Option<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
    pub tenant: String,
}

pub async fn job_ops(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<Option<JobOps>, DbError> {
    Ok(sqlx::query_as(
        "SELECT j.worker, j.options, j.timings, j.updated_at, t.name AS tenant
         FROM jobs j JOIN tenants t ON t.id = j.tenant_id
         WHERE j.id = $1 AND j.tenant_id = $2",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?)
}

// ---------------------------------------------------------------- cost

/// What a tenant's stored result versions cost (the sum of their stages' `cost_usd`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantCost {
    pub tenant: String,
    pub results_24h: i64,
    pub cost_24h: f64,
    pub results_30d: i64,
    pub cost_30d: f64,
    /// Audio transcribed by those result versions, seconds.
    pub audio_s_30d: f64,
}

/// Cost of the result versions stored in the last 30 days (and 24 hours), per tenant:
/// one tenant's, or every tenant's for `None`, costliest first.
pub async fn tenant_costs(
    pool: &PgPool,
    tenant_id: Option<Uuid>,
) -> Result<Vec<TenantCost>, DbError> {
    Ok(sqlx::query_as(
        "SELECT t.name AS tenant,
                count(*) FILTER (WHERE r.created_at > now() - interval '24 hours') AS results_24h,
                COALESCE(sum(c.cost) FILTER (WHERE r.created_at > now() - interval '24 hours'),
                         0)::float8 AS cost_24h,
                count(*) AS results_30d,
                COALESCE(sum(c.cost), 0)::float8 AS cost_30d,
                COALESCE(sum((r.transcript->>'duration_s')::float8), 0)::float8 AS audio_s_30d
         FROM job_results r
         JOIN jobs j ON j.id = r.job_id
         JOIN tenants t ON t.id = j.tenant_id
         CROSS JOIN LATERAL (SELECT sum((u.value->>'cost_usd')::float8) AS cost
                             FROM jsonb_each(r.usage) AS u) c
         WHERE r.created_at > now() - interval '30 days'
           AND ($1::uuid IS NULL OR j.tenant_id = $1)
         GROUP BY t.name ORDER BY cost_30d DESC, t.name LIMIT 500",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?)
}
