//! Deleting jobs (`DELETE /v1/jobs/{id}`, result retention) and finding uploaded audio
//! past its retention. What lives outside PostgreSQL (the upload in S3, cache entries,
//! queue records) is cleaned by [`crate::purge`], which calls these.

use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

use super::DbError;

/// What a job left outside PostgreSQL.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobTraces {
    pub id: Uuid,
    pub source: String,
    /// Whether its uploaded audio was purged already.
    pub audio_deleted: bool,
    pub cache_keys: Vec<String>,
    /// Its lane (`interactive`, `bulk`).
    pub lane: String,
    pub attempts: i32,
}

/// The job's traces, if it belongs to `tenant_id` (any tenant's for `None`).
pub async fn job_traces(
    pool: &PgPool,
    tenant_id: Option<Uuid>,
    id: Uuid,
) -> Result<Option<JobTraces>, DbError> {
    Ok(sqlx::query_as(
        "SELECT id, source, audio_deleted_at IS NOT NULL AS audio_deleted, cache_keys, lane,
                attempts
         FROM jobs WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?)
}

/// Deletes the job with its result versions, batch items and webhook deliveries (the
/// foreign keys cascade), and announces it on the finished channel so long-polls
/// answer. A run in progress finds its job gone and its result is discarded (its fenced
/// writes change nothing). Returns the traces as they were at deletion.
pub async fn delete_job(pool: &PgPool, id: Uuid) -> Result<Option<JobTraces>, DbError> {
    let mut tx = pool.begin().await?;
    let traces: Option<JobTraces> = sqlx::query_as(
        "DELETE FROM jobs WHERE id = $1
         RETURNING id, source, audio_deleted_at IS NOT NULL AS audio_deleted, cache_keys,
                   lane, attempts",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if traces.is_some() {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(super::JOB_FINISHED_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(traces)
}

/// A job whose uploaded audio is past its tenant's audio retention.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AudioDue {
    pub id: Uuid,
    pub source: String,
}

/// Up to `limit` finished jobs whose audio is past retention (the tenant's
/// `audio_retention_s`, else `default`; 0 keeps it) and not purged yet, oldest first.
pub async fn audio_due(
    pool: &PgPool,
    default: Duration,
    limit: i64,
) -> Result<Vec<AudioDue>, DbError> {
    Ok(sqlx::query_as(
        "SELECT j.id, j.source FROM jobs j JOIN tenants t ON t.id = j.tenant_id
         WHERE j.audio_deleted_at IS NULL AND j.finished_at IS NOT NULL
           AND j.status IN ('completed', 'failed', 'cancelled')
           AND COALESCE(t.audio_retention_s, $1) > 0
           AND j.finished_at < now() - make_interval(secs => COALESCE(t.audio_retention_s, $1))
         ORDER BY j.finished_at LIMIT $2",
    )
    .bind(default.as_secs() as i64)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Records that these jobs' audio is gone (or was never ours to delete).
pub async fn mark_audio_deleted(pool: &PgPool, ids: &[Uuid]) -> Result<(), DbError> {
    sqlx::query("UPDATE jobs SET audio_deleted_at = now() WHERE id = ANY ($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// Up to `limit` finished jobs past their tenant's result retention
/// (`result_retention_s`, else `default`; 0 keeps them), oldest first.
pub async fn results_due(
    pool: &PgPool,
    default: Duration,
    limit: i64,
) -> Result<Vec<Uuid>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT j.id FROM jobs j JOIN tenants t ON t.id = j.tenant_id
         WHERE j.finished_at IS NOT NULL
           AND j.status IN ('completed', 'failed', 'cancelled')
           AND COALESCE(t.result_retention_s, $1) > 0
           AND j.finished_at < now() - make_interval(secs => COALESCE(t.result_retention_s, $1))
         ORDER BY j.finished_at LIMIT $2",
    )
    .bind(default.as_secs() as i64)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Sets a tenant's retention overrides (`None`: the service's setting); `false` if
/// there is no such tenant.
pub async fn set_tenant_retention(
    pool: &PgPool,
    tenant: &str,
    audio_retention_s: Option<i64>,
    result_retention_s: Option<i64>,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE tenants SET audio_retention_s = $2, result_retention_s = $3 WHERE name = $1",
    )
    .bind(tenant)
    .bind(audio_retention_s)
    .bind(result_retention_s)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
