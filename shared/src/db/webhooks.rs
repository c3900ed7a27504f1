//! Webhooks: endpoints, secrets, and the delivery outbox.
//!
//! An event's deliveries are inserted in the transaction that stores what the event
//! announces (a result, a failure, a finished batch): one row per target (the job's own
//! `webhook_url` and each of the tenant's enabled endpoints whose filter takes the
//! event). So a crash between "stored" and "sent" loses nothing. Dispatchers take due
//! rows with `FOR UPDATE SKIP LOCKED`, moving each past its attempt's deadline, so two
//! never send the same attempt and a killed one's rows come due again: at-least-once.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

use super::DbError;
use crate::domain::{JobOptions, JobResult};
use crate::webhooks::{
    message_id, new_secret, BatchData, BatchLinks, ErrorData, Event, JobData, JobLinks, Payload,
    ResultData,
};

/// `NOTIFY` channel announcing new due deliveries (payload empty); dispatchers listen.
pub const WEBHOOK_CHANNEL: &str = "voxq_webhook";

fn corrupt(e: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(e.to_string())
}

// ---------------------------------------------------------------- outbox writes

#[derive(sqlx::FromRow)]
struct JobEventRow {
    tenant_id: Uuid,
    options: serde_json::Value,
    batch_id: Option<Uuid>,
    custom_id: Option<String>,
    requested_version: i32,
    error_code: Option<String>,
    error_message: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Target {
    id: Uuid,
    url: String,
    include_result: bool,
}

/// Records `event` of a job for every target, inside the caller's transaction (after
/// the job's row was finished in it). `result` is the stored result of `job.completed`.
pub async fn enqueue_job_event(
    conn: &mut PgConnection,
    job_id: Uuid,
    event: Event,
    result: Option<&JobResult>,
) -> Result<usize, DbError> {
    let job: Option<JobEventRow> = sqlx::query_as(
        "SELECT tenant_id, options, batch_id, custom_id, requested_version, error_code,
                error_message
         FROM jobs WHERE id = $1",
    )
    .bind(job_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(job) = job else { return Ok(0) };
    let options: JobOptions = serde_json::from_value(job.options).map_err(corrupt)?;
    let endpoints = endpoints_for(conn, job.tenant_id, event).await?;
    let mut targets: Vec<(Option<Uuid>, String, bool)> = endpoints
        .into_iter()
        .map(|t| (Some(t.id), t.url, t.include_result))
        .collect();
    if let Some(url) = options.webhook_url {
        targets.push((None, url, options.webhook_result));
    }
    if targets.is_empty() {
        return Ok(0);
    }
    let timestamp = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = |with_result: bool| {
        let data = JobData {
            id: job_id,
            status: match event {
                Event::JobCompleted => "completed",
                _ => "failed",
            },
            version: job.requested_version,
            batch_id: job.batch_id,
            custom_id: job.custom_id.clone(),
            error: (event == Event::JobFailed).then(|| ErrorData {
                code: job.error_code.clone().unwrap_or_else(|| "unknown".into()),
                message: job.error_message.clone().unwrap_or_default(),
            }),
            result: result.filter(|_| with_result).map(ResultData::of),
            links: JobLinks::new(job_id),
        };
        serde_json::to_string(&Payload {
            kind: event,
            timestamp: timestamp.clone(),
            data,
        })
        .map_err(corrupt)
    };
    let mut rows = Vec::with_capacity(targets.len());
    for (endpoint, url, with_result) in targets {
        rows.push((endpoint, url, body(with_result)?));
    }
    insert_deliveries(conn, job.tenant_id, Some(job_id), job.batch_id, event, rows).await
}

/// The tenant's enabled endpoints that take `event`.
async fn endpoints_for(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    event: Event,
) -> Result<Vec<Target>, DbError> {
    Ok(sqlx::query_as(
        "SELECT id, url, include_result FROM webhook_endpoints
         WHERE tenant_id = $1 AND enabled AND (events = '{}' OR $2 = ANY (events))",
    )
    .bind(tenant_id)
    .bind(event.as_str())
    .fetch_all(&mut *conn)
    .await?)
}

async fn insert_deliveries(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    job_id: Option<Uuid>,
    batch_id: Option<Uuid>,
    event: Event,
    rows: Vec<(Option<Uuid>, String, String)>,
) -> Result<usize, DbError> {
    let n = rows.len();
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let (endpoints, rest): (Vec<Option<Uuid>>, Vec<(String, String)>) =
        rows.into_iter().map(|(e, u, b)| (e, (u, b))).unzip();
    let (urls, bodies): (Vec<String>, Vec<String>) = rest.into_iter().unzip();
    sqlx::query(
        "INSERT INTO webhook_deliveries
             (id, tenant_id, endpoint_id, job_id, batch_id, event, url, body, next_attempt_at)
         SELECT d.id, $2, d.endpoint_id, $3, $4, $5, d.url, d.body, now()
         FROM UNNEST($1::uuid[], $6::uuid[], $7::text[], $8::text[])
              AS d (id, endpoint_id, url, body)",
    )
    .bind(&ids)
    .bind(tenant_id)
    .bind(job_id)
    .bind(batch_id)
    .bind(event.as_str())
    .bind(&endpoints)
    .bind(&urls)
    .bind(&bodies)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WEBHOOK_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(n)
}

#[derive(sqlx::FromRow)]
struct BatchEventRow {
    tenant_id: Uuid,
    kind: String,
    total: i64,
    completed: i64,
    failed: i64,
    cancelled: i64,
}

/// Records `batch.completed` for the tenant's endpoints, inside the caller's
/// transaction (after the batch was marked completed in it).
pub async fn enqueue_batch_event(
    conn: &mut PgConnection,
    batch_id: Uuid,
) -> Result<usize, DbError> {
    let row: Option<BatchEventRow> = sqlx::query_as(&format!(
        "WITH s AS ({})
         SELECT b.tenant_id, b.kind,
                (SELECT count(*) FROM s) AS total,
                (SELECT count(*) FROM s WHERE status = 'completed') AS completed,
                (SELECT count(*) FROM s WHERE status = 'failed') AS failed,
                (SELECT count(*) FROM s WHERE status = 'cancelled') AS cancelled
         FROM batches b WHERE b.id = $1",
        super::batch::ITEM_STATE
    ))
    .bind(batch_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(0) };
    let endpoints = endpoints_for(conn, row.tenant_id, Event::BatchCompleted).await?;
    if endpoints.is_empty() {
        return Ok(0);
    }
    let body = serde_json::to_string(&Payload {
        kind: Event::BatchCompleted,
        timestamp: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        data: BatchData {
            id: batch_id,
            kind: if row.kind == "reprocess" {
                "reprocess"
            } else {
                "batch"
            },
            status: "completed",
            total: row.total,
            completed: row.completed,
            failed: row.failed,
            cancelled: row.cancelled,
            links: BatchLinks::new(batch_id),
        },
    })
    .map_err(corrupt)?;
    let rows = endpoints
        .into_iter()
        .map(|t| (Some(t.id), t.url, body.clone()))
        .collect();
    insert_deliveries(
        conn,
        row.tenant_id,
        None,
        Some(batch_id),
        Event::BatchCompleted,
        rows,
    )
    .await
}

// ---------------------------------------------------------------- endpoints and secrets

/// An endpoint as its tenant sees it (never its secret, which is shown once).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EndpointView {
    pub id: Uuid,
    pub url: String,
    /// Event types delivered; empty means all.
    #[schema(value_type = Vec<Event>)]
    pub events: Vec<String>,
    pub include_result: bool,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// While a rotated-out secret still signs beside the new one: until when.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const ENDPOINT_COLUMNS: &str = "id, url, events, include_result, description, enabled,
    disabled_reason,
    CASE WHEN previous_until > now() THEN previous_until END AS previous_secret_expires_at,
    last_success_at, created_at";

/// What a new endpoint is to deliver.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub events: Vec<Event>,
    pub include_result: bool,
    pub description: Option<String>,
}

/// Registers an endpoint; returns it and its secret.
pub async fn create_endpoint(
    pool: &PgPool,
    tenant_id: Uuid,
    new: &NewEndpoint,
) -> Result<(EndpointView, String), DbError> {
    let secret = new_secret();
    let events: Vec<&str> = new.events.iter().map(|e| e.as_str()).collect();
    let view: EndpointView = sqlx::query_as(&format!(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, events, include_result, description, secret)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(&new.url)
    .bind(&events)
    .bind(new.include_result)
    .bind(&new.description)
    .bind(&secret)
    .fetch_one(pool)
    .await?;
    Ok((view, secret))
}

pub async fn list_endpoints(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<EndpointView>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1
         ORDER BY created_at, id"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?)
}

pub async fn get_endpoint(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<EndpointView>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// Deletes an endpoint and its deliveries; `false` if the tenant has no such endpoint.
pub async fn delete_endpoint(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A new secret, and until when the one it replaces keeps signing beside it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rotated {
    pub secret: String,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// Gives an endpoint a new secret; the old one signs too for `grace`.
pub async fn rotate_endpoint(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
    grace: Duration,
) -> Result<Option<Rotated>, DbError> {
    let secret = new_secret();
    let until: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,
                previous_until = now() + make_interval(secs => $4)
         WHERE tenant_id = $1 AND id = $2
         RETURNING CASE WHEN previous_until > now() THEN previous_until END",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(&secret)
    .bind(grace.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(until.map(|until| Rotated {
        secret,
        previous_secret_expires_at: until,
    }))
}

/// Re-enables a disabled endpoint (deliveries that failed meanwhile stay failed; they
/// can be redelivered).
pub async fn enable_endpoint(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET enabled = true, disabled_reason = NULL
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Creates the tenant's secret for per-job `webhook_url`s, or rotates it (the old one
/// signs too for `grace`).
pub async fn rotate_tenant_secret(
    pool: &PgPool,
    tenant_id: Uuid,
    grace: Duration,
) -> Result<Rotated, DbError> {
    let secret = new_secret();
    let until: Option<DateTime<Utc>> = sqlx::query_scalar(
        "INSERT INTO webhook_tenant_secrets (tenant_id, secret) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET previous_secret = webhook_tenant_secrets.secret,
                secret = EXCLUDED.secret, previous_until = now() + make_interval(secs => $3)
         RETURNING previous_until",
    )
    .bind(tenant_id)
    .bind(&secret)
    .bind(grace.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok(Rotated {
        secret,
        previous_secret_expires_at: until,
    })
}

/// Whether the tenant has a secret for per-job `webhook_url`s.
pub async fn has_tenant_secret(pool: &PgPool, tenant_id: Uuid) -> Result<bool, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM webhook_tenant_secrets WHERE tenant_id = $1)",
    )
    .bind(tenant_id)
    .fetch_one(pool)
    .await?)
}

// ---------------------------------------------------------------- deliveries (read)

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AttemptView {
    #[serde(skip)]
    pub delivery_id: Uuid,
    pub n: i32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status; absent when none was received.
    pub status: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    /// The `webhook-id` header: the same on every attempt and redelivery.
    #[sqlx(skip)]
    pub webhook_id: String,
    pub endpoint_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    #[schema(value_type = Event)]
    pub event: String,
    pub url: String,
    /// `pending` (more attempts to come), `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    pub attempt_log: Vec<AttemptView>,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub endpoint_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub status: Option<String>,
    /// Keyset cursor: deliveries created before this one (newest first).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

const DELIVERY_COLUMNS: &str = "id, endpoint_id, job_id, batch_id, event, url, status, attempts,
    CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, last_status,
    last_error, created_at, finished_at";

/// A tenant's deliveries, newest first, each with its attempts.
pub async fn list_deliveries(
    pool: &PgPool,
    tenant_id: Uuid,
    filter: &DeliveryFilter,
) -> Result<Vec<DeliveryView>, DbError> {
    let (after_at, after_id) = filter.after.unzip();
    let rows: Vec<DeliveryView> = sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
         WHERE tenant_id = $1
           AND ($2::uuid IS NULL OR endpoint_id = $2)
           AND ($3::uuid IS NULL OR job_id = $3)
           AND ($4::text IS NULL OR status = $4)
           AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6))
         ORDER BY created_at DESC, id DESC LIMIT $7"
    ))
    .bind(tenant_id)
    .bind(filter.endpoint_id)
    .bind(filter.job_id)
    .bind(&filter.status)
    .bind(after_at)
    .bind(after_id)
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    with_attempts(pool, rows).await
}

pub async fn get_delivery(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<DeliveryView>, DbError> {
    let rows: Vec<DeliveryView> = sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(with_attempts(pool, rows).await?.pop())
}

async fn with_attempts(
    pool: &PgPool,
    mut rows: Vec<DeliveryView>,
) -> Result<Vec<DeliveryView>, DbError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let attempts: Vec<AttemptView> = sqlx::query_as(
        "SELECT delivery_id, n, at, status, error, duration_ms FROM webhook_attempts
         WHERE delivery_id = ANY ($1) ORDER BY delivery_id, n",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    for row in &mut rows {
        row.webhook_id = message_id(row.id);
        row.attempt_log = attempts
            .iter()
            .filter(|a| a.delivery_id == row.id)
            .cloned()
            .collect();
    }
    Ok(rows)
}

/// Sends a delivery again, now, with the retry schedule started over (same
/// `webhook-id` and body). `false` if the tenant has no such delivery.
pub async fn redeliver(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<bool, DbError> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(),
                schedule_base = attempts, finished_at = NULL
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WEBHOOK_CHANNEL)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------- dispatch

/// A delivery a dispatcher has taken for one attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub endpoint_id: Option<Uuid>,
    pub url: String,
    pub body: String,
    /// This attempt's number (from 1).
    pub attempts: i32,
    /// Attempts of the current retry schedule, this one included.
    pub in_schedule: i32,
    pub created_at: DateTime<Utc>,
    /// The secrets to sign with: the current one, and the previous one during its grace.
    pub secret: Option<String>,
    pub previous_secret: Option<String>,
}

/// Takes up to `limit` due deliveries for one attempt each, moving them `hold` ahead
/// (past the attempt's deadline) so no other dispatcher takes them meanwhile.
pub async fn take_due(
    pool: &PgPool,
    limit: i64,
    hold: Duration,
) -> Result<Vec<DueDelivery>, DbError> {
    Ok(sqlx::query_as(
        "WITH due AS (
             SELECT id FROM webhook_deliveries
             WHERE status = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED),
         taken AS (
             UPDATE webhook_deliveries d
             SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
             FROM due WHERE d.id = due.id
             RETURNING d.id, d.tenant_id, d.endpoint_id, d.url, d.body, d.attempts,
                       d.attempts - d.schedule_base AS in_schedule, d.created_at)
         SELECT t.*, COALESCE(e.secret, s.secret) AS secret,
                CASE WHEN COALESCE(e.previous_until, s.previous_until) > now()
                     THEN COALESCE(e.previous_secret, s.previous_secret) END AS previous_secret
         FROM taken t
         LEFT JOIN webhook_endpoints e ON e.id = t.endpoint_id
         LEFT JOIN webhook_tenant_secrets s
                ON t.endpoint_id IS NULL AND s.tenant_id = t.tenant_id",
    )
    .bind(limit)
    .bind(hold.as_secs_f64())
    .fetch_all(pool)
    .await?)
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx.
    Delivered { status: u16 },
    /// Try again after `after`.
    Retry {
        status: Option<u16>,
        error: String,
        after: Duration,
    },
    /// Give up on this delivery (schedule exhausted, or nothing would ever change).
    GiveUp { status: Option<u16>, error: String },
    /// 410 Gone from a registered endpoint: disable it.
    Gone,
}

/// Records one attempt and its outcome. A registered endpoint that answered 410, or
/// whose delivery gave up with no success since the delivery was created (so it has
/// failed for the whole schedule, ~3 days by default), is disabled, and its pending
/// deliveries fail with it.
pub async fn record_attempt(
    pool: &PgPool,
    d: &DueDelivery,
    outcome: &Outcome,
    took: Duration,
) -> Result<(), DbError> {
    let (status, error): (Option<u16>, Option<&str>) = match outcome {
        Outcome::Delivered { status } => (Some(*status), None),
        Outcome::Retry { status, error, .. } | Outcome::GiveUp { status, error } => {
            (*status, Some(error.as_str()))
        }
        Outcome::Gone => (Some(410), Some("the endpoint answered 410 Gone")),
    };
    let status = status.map(i32::from);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, n, status, error, duration_ms)
         SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = $1)
         ON CONFLICT DO NOTHING",
    )
    .bind(d.id)
    .bind(d.attempts)
    .bind(status)
    .bind(error)
    .bind(took.as_millis().min(i32::MAX as u128) as i32)
    .execute(&mut *tx)
    .await?;
    let (new_status, next_in) = match outcome {
        Outcome::Delivered { .. } => ("delivered", None),
        Outcome::Retry { after, .. } => ("pending", Some(after.as_secs_f64())),
        Outcome::GiveUp { .. } | Outcome::Gone => ("failed", None),
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $2, last_status = $3, last_error = $4,
                next_attempt_at = CASE WHEN $5::float8 IS NULL THEN NULL
                                       ELSE now() + make_interval(secs => $5) END,
                finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END
         WHERE id = $1",
    )
    .bind(d.id)
    .bind(new_status)
    .bind(status)
    .bind(error)
    .bind(next_in)
    .execute(&mut *tx)
    .await?;
    if let Some(endpoint) = d.endpoint_id {
        let disable = match outcome {
            Outcome::Delivered { .. } => {
                sqlx::query("UPDATE webhook_endpoints SET last_success_at = now() WHERE id = $1")
                    .bind(endpoint)
                    .execute(&mut *tx)
                    .await?;
                None
            }
            Outcome::Gone => Some("the endpoint answered 410 Gone".to_string()),
            Outcome::GiveUp { .. } => {
                let succeeded_since: bool = sqlx::query_scalar(
                    "SELECT COALESCE(last_success_at > $2, false) FROM webhook_endpoints
                     WHERE id = $1",
                )
                .bind(endpoint)
                .bind(d.created_at)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(true);
                (!succeeded_since).then(|| {
                    format!(
                        "every attempt failed since {}",
                        d.created_at.format("%Y-%m-%d %H:%M:%S UTC")
                    )
                })
            }
            Outcome::Retry { .. } => None,
        };
        if let Some(reason) = disable {
            sqlx::query(
                "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2 WHERE id = $1",
            )
            .bind(endpoint)
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', finished_at = now(),
                        last_error = COALESCE(last_error, '') || ' (endpoint disabled: ' || $2 || ')'
                 WHERE endpoint_id = $1 AND status = 'pending'",
            )
            .bind(endpoint)
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
            tracing::warn!(%endpoint, %reason, "webhook endpoint disabled");
        }
    }
    tx.commit().await?;
    Ok(())
}
