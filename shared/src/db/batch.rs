//! Batches, job listing, idempotency keys, tenant limits, fair bulk dispatch and
//! reprocessing (result versions).
//!
//! A batch's items are rows of `batch_items`, each naming a job and the result version
//! the batch asked for. An item's status is its job's status while the job works on that
//! version; once the job has moved on to a later version (a reprocess), the item is
//! `completed` if its version was stored and `failed` otherwise. Batch counts, failures,
//! results and cost are all read from there.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::{stored_result, DbError, QueuedJob, QueuedRow};
use crate::domain::{JobOptions, JobResult, JobStatus, Lane};

// ---------------------------------------------------------------- batches

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchKind {
    /// Items submitted together.
    Batch,
    /// Finished jobs an admin asked to run again for a new result version.
    Reprocess,
}

impl BatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchKind::Batch => "batch",
            BatchKind::Reprocess => "reprocess",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    /// Its S3 prefix is being listed; items appear as the listing goes.
    Listing,
    Running,
    /// Its queued items are held (not dispatched) until it is resumed.
    Paused,
    /// Every item finished.
    Completed,
    /// Stopped: its items that had not started never will.
    Cancelled,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Listing => "listing",
            BatchStatus::Running => "running",
            BatchStatus::Paused => "paused",
            BatchStatus::Completed => "completed",
            BatchStatus::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for BatchStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "listing" => BatchStatus::Listing,
            "running" => BatchStatus::Running,
            "paused" => BatchStatus::Paused,
            "completed" => BatchStatus::Completed,
            "cancelled" => BatchStatus::Cancelled,
            other => return Err(format!("unknown batch status '{other}'")),
        })
    }
}

/// An `Idempotency-Key` and the SHA-256 of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: Vec<u8>,
}

/// The outcome of a create request that may carry an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Created now.
    New(Uuid),
    /// The key was used before with the same request: this is what it created.
    Replayed(Uuid),
    /// The key was used before with a different request: nothing was created.
    KeyReused,
}

/// A batch to create.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub lane: Lane,
    /// Batch-level options, recorded for the listing and for clients.
    pub options: JobOptions,
    /// `s3://bucket/prefix/` when the items come from a server-side listing.
    pub source: Option<String>,
    pub idempotency: Option<Idempotency>,
    /// The creating request's W3C `traceparent`, given to every job of the batch.
    pub traceparent: Option<String>,
}

/// One item of a new batch: it becomes a job.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub job_id: Uuid,
    pub source: String,
    pub options: JobOptions,
    pub custom_id: Option<String>,
}

/// What an idempotency key created in `table` (`jobs` or `batches`) for this tenant,
/// if anything, compared with this request's hash.
async fn prior<'e>(
    db: impl sqlx::PgExecutor<'e>,
    table: &'static str,
    tenant_id: Uuid,
    idem: &Idempotency,
) -> Result<Option<Created>, DbError> {
    let sql = format!(
        "SELECT id, request_hash FROM {table} WHERE tenant_id = $1 AND idempotency_key = $2"
    );
    let prior: Option<(Uuid, Option<Vec<u8>>)> = sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(&idem.key)
        .fetch_optional(db)
        .await?;
    Ok(prior.map(|(id, hash)| {
        if hash.as_deref() == Some(&idem.request_hash[..]) {
            Created::Replayed(id)
        } else {
            Created::KeyReused
        }
    }))
}

/// The same inside the transaction whose insert the key's unique index refused: the
/// row must be there.
async fn replay(
    tx: &mut sqlx::PgConnection,
    table: &'static str,
    tenant_id: Uuid,
    idem: &Idempotency,
) -> Result<Created, DbError> {
    prior(tx, table, tenant_id, idem)
        .await?
        .ok_or_else(|| DbError::Corrupt("idempotency key vanished while in use".into()))
}

/// Creates a batch and its items' jobs in one transaction (one `UNNEST` insert each),
/// or, for a reused idempotency key, nothing. Items start `queued` and not enqueued:
/// bulk ones wait for the dispatcher; the caller pushes interactive ones.
pub async fn create_batch(
    pool: &PgPool,
    batch: &NewBatch,
    items: &[NewItem],
) -> Result<Created, DbError> {
    let status = if batch.source.is_some() {
        BatchStatus::Listing
    } else {
        BatchStatus::Running
    };
    let mut tx = pool.begin().await?;
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO batches (id, tenant_id, kind, status, lane, options, source,
                              idempotency_key, request_hash, traceparent)
         VALUES ($1, $2, 'batch', $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
         RETURNING id",
    )
    .bind(batch.id)
    .bind(batch.tenant_id)
    .bind(status.as_str())
    .bind(batch.lane.as_str())
    .bind(super::to_json(&batch.options)?)
    .bind(&batch.source)
    .bind(batch.idempotency.as_ref().map(|i| &i.key))
    .bind(batch.idempotency.as_ref().map(|i| &i.request_hash))
    .bind(&batch.traceparent)
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        let idem = batch
            .idempotency
            .as_ref()
            .ok_or_else(|| DbError::Corrupt("batch id collision".into()))?;
        let out = replay(&mut tx, "batches", batch.tenant_id, idem).await?;
        tx.rollback().await?;
        return Ok(out);
    }
    insert_items(&mut tx, batch.id, batch.tenant_id, batch.lane, 0, items).await?;
    tx.commit().await?;
    Ok(Created::New(batch.id))
}

/// Inserts items as new jobs (version 1) and as the batch's items numbered from `first_seq + 1`,
/// and adds them to the batch's total.
async fn insert_items(
    tx: &mut sqlx::PgConnection,
    batch_id: Uuid,
    tenant_id: Uuid,
    lane: Lane,
    first_seq: i32,
    items: &[NewItem],
) -> Result<(), DbError> {
    if items.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = items.iter().map(|i| i.job_id).collect();
    let sources: Vec<&str> = items.iter().map(|i| i.source.as_str()).collect();
    let options: Vec<String> = items
        .iter()
        .map(|i| serde_json::to_string(&i.options).map_err(|e| DbError::Corrupt(e.to_string())))
        .collect::<Result<_, _>>()?;
    let custom: Vec<Option<&str>> = items.iter().map(|i| i.custom_id.as_deref()).collect();
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, lane, source, options, batch_id, custom_id, traceparent)
         SELECT t.id, $2, $3, t.source, t.options::jsonb, $4, t.custom_id,
                (SELECT traceparent FROM batches WHERE id = $4)
         FROM UNNEST($1::uuid[], $5::text[], $6::text[], $7::text[])
              AS t(id, source, options, custom_id)",
    )
    .bind(&ids)
    .bind(tenant_id)
    .bind(lane.as_str())
    .bind(batch_id)
    .bind(&sources)
    .bind(&options)
    .bind(&custom)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO batch_items (batch_id, seq, job_id, version, custom_id)
         SELECT $1, $2 + t.n::integer, t.id, 1, t.custom_id
         FROM UNNEST($3::uuid[], $4::text[]) WITH ORDINALITY AS t(id, custom_id, n)",
    )
    .bind(batch_id)
    .bind(first_seq)
    .bind(&ids)
    .bind(&custom)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE batches SET total = total + $2 WHERE id = $1")
        .bind(batch_id)
        .bind(items.len() as i32)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A batch as its owner sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatchView {
    pub id: Uuid,
    pub kind: BatchKind,
    pub status: BatchStatus,
    pub lane: Lane,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub total: i64,
    /// Items by status (every status present, zero or not).
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub counts: std::collections::BTreeMap<&'static str, i64>,
    /// Failed items by error code.
    pub failures: std::collections::BTreeMap<String, i64>,
    /// Items finished per minute over the last five minutes.
    pub throughput_per_min: f64,
    /// Seconds until every item is finished at that rate; absent when nothing is
    /// finishing or nothing is left.
    pub eta_s: Option<f64>,
    /// Cost of the finished items' result versions, USD.
    pub cost_usd: f64,
}

#[derive(sqlx::FromRow)]
struct BatchRow {
    id: Uuid,
    kind: String,
    status: String,
    lane: String,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    source: Option<String>,
}

/// An item's status as the batch sees it (see the module documentation), its error code
/// when failed, whether it finished recently, and its result version's cost.
pub(crate) const ITEM_STATE: &str = "
    SELECT CASE WHEN j.requested_version = i.version THEN j.status
                WHEN r.job_id IS NOT NULL THEN 'completed' ELSE 'failed' END AS status,
           CASE WHEN j.requested_version = i.version THEN j.error_code
                WHEN r.job_id IS NULL THEN 'superseded' END AS error_code,
           COALESCE(CASE WHEN j.requested_version = i.version THEN j.finished_at
                         ELSE r.created_at END, 'epoch') > now() - interval '5 minutes' AS recent,
           COALESCE((SELECT sum((u.value->>'cost_usd')::float8)
                     FROM jsonb_each(r.usage) AS u), 0) AS cost
    FROM batch_items i
    JOIN jobs j ON j.id = i.job_id
    LEFT JOIN job_results r ON r.job_id = i.job_id AND r.version = i.version
    WHERE i.batch_id = $1";

#[derive(sqlx::FromRow)]
struct CountRow {
    status: String,
    error_code: Option<String>,
    n: i64,
    recent: i64,
    cost: f64,
}

/// The batch, if it belongs to `tenant_id` (any tenant's for `None`: operators).
pub async fn get_batch(
    pool: &PgPool,
    tenant_id: Option<Uuid>,
    id: Uuid,
) -> Result<Option<BatchView>, DbError> {
    let row: Option<BatchRow> = sqlx::query_as(
        "SELECT id, kind, status, lane, created_at, finished_at, source FROM batches
         WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let counts: Vec<CountRow> = sqlx::query_as(&format!(
        "SELECT s.status, s.error_code, count(*) AS n,
                count(*) FILTER (WHERE s.recent AND s.status IN ('completed', 'failed')) AS recent,
                COALESCE(sum(s.cost), 0)::float8 AS cost
         FROM ({ITEM_STATE}) s GROUP BY s.status, s.error_code"
    ))
    .bind(id)
    .fetch_all(pool)
    .await?;
    let mut view = BatchView {
        id: row.id,
        kind: if row.kind == "reprocess" {
            BatchKind::Reprocess
        } else {
            BatchKind::Batch
        },
        status: row.status.parse().map_err(DbError::Corrupt)?,
        lane: row.lane.parse().map_err(DbError::Corrupt)?,
        created_at: row.created_at,
        finished_at: row.finished_at,
        source: row.source,
        total: 0,
        counts: JobStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
        failures: Default::default(),
        throughput_per_min: 0.0,
        eta_s: None,
        cost_usd: 0.0,
    };
    let mut recent = 0;
    for c in counts {
        let status: JobStatus = c.status.parse().map_err(DbError::Corrupt)?;
        *view.counts.entry(status.as_str()).or_default() += c.n;
        view.total += c.n;
        recent += c.recent;
        view.cost_usd += c.cost;
        if status == JobStatus::Failed {
            let code = c.error_code.unwrap_or_else(|| "unknown".into());
            *view.failures.entry(code).or_default() += c.n;
        }
    }
    let open = view.counts["queued"] + view.counts["processing"] + view.counts["paused"];
    view.throughput_per_min = recent as f64 / 5.0;
    if open > 0 && recent > 0 {
        view.eta_s = Some(open as f64 / view.throughput_per_min * 60.0);
    }
    if view.status == BatchStatus::Running && open == 0 {
        // Every item has finished: the batch is complete (recorded once).
        if let Some(at) = complete_batch(pool, id).await? {
            view.status = BatchStatus::Completed;
            view.finished_at = Some(at);
        }
    }
    Ok(Some(view))
}

/// Marks a running batch completed and records its `batch.completed` event, in one
/// transaction; the time it finished, or `None` if it was not running (done already).
/// The caller has seen that none of its items is open.
async fn complete_batch(pool: &PgPool, id: Uuid) -> Result<Option<DateTime<Utc>>, DbError> {
    let mut tx = pool.begin().await?;
    let finished: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE batches SET status = 'completed', finished_at = now()
         WHERE id = $1 AND status = 'running' RETURNING finished_at",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if finished.is_some() {
        super::webhooks::enqueue_batch_event(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(finished)
}

/// Completes every running batch none of whose items is still open (queued,
/// processing or paused for the version the batch asked for), so `batch.completed` is
/// sent without anyone reading the batch. Run by the sweeper's leader. Each batch's
/// check reads its items from the last one back (the last to finish), so a running
/// batch costs a row or two. Returns how many were completed.
pub async fn finish_batches(pool: &PgPool) -> Result<usize, DbError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT b.id FROM batches b
         WHERE b.status = 'running' AND (
             SELECT i.seq FROM batch_items i JOIN jobs j ON j.id = i.job_id
             WHERE i.batch_id = b.id AND j.requested_version = i.version
               AND j.status IN ('queued', 'processing', 'paused')
             ORDER BY i.seq DESC LIMIT 1) IS NULL
         LIMIT 100",
    )
    .fetch_all(pool)
    .await?;
    let mut n = 0;
    for id in ids {
        n += usize::from(complete_batch(pool, id).await?.is_some());
    }
    Ok(n)
}

/// A page of a tenant's batches, newest first, after the `(created_at, id)` cursor.
pub async fn list_batches(
    pool: &PgPool,
    tenant_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<BatchView>, DbError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM batches WHERE tenant_id = $1
           AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
         ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .bind(tenant_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(b) = get_batch(pool, Some(tenant_id), id).await? {
            out.push(b);
        }
    }
    Ok(out)
}

/// What a pause, resume or cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Done,
    /// The batch is not in a state this applies to (e.g. resuming a running batch).
    NotApplicable(BatchStatus),
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchAction {
    Pause,
    Resume,
    Cancel,
}

/// Pauses, resumes or cancels a batch and its queued items, in one transaction.
/// - pause: queued items become `paused` and are not dispatched (a run already
///   claimed finishes);
/// - resume: paused items are `queued` again under a new run number (their old queue
///   task may have been consumed while they were paused);
/// - cancel: queued and paused items become `cancelled`; running ones finish.
pub async fn control_batch(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
    action: BatchAction,
) -> Result<Control, DbError> {
    let mut tx = pool.begin().await?;
    let status: Option<String> = sqlx::query_scalar(
        "SELECT status FROM batches WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(status) = status else {
        return Ok(Control::NotFound);
    };
    let status: BatchStatus = status.parse().map_err(DbError::Corrupt)?;
    let (from, to, jobs_from, jobs_set): (&[BatchStatus], &str, &str, &str) = match action {
        BatchAction::Pause => (
            &[BatchStatus::Running],
            "paused",
            "'queued'",
            "status = 'paused', updated_at = now()",
        ),
        BatchAction::Resume => (
            &[BatchStatus::Paused],
            "running",
            "'paused'",
            "status = 'queued', updated_at = now(), enqueued_at = NULL,
             attempts = j.attempts + 1, attempts_base = j.attempts_base + 1",
        ),
        BatchAction::Cancel => (
            &[
                BatchStatus::Listing,
                BatchStatus::Running,
                BatchStatus::Paused,
            ],
            "cancelled",
            "'queued', 'paused'",
            "status = 'cancelled', updated_at = now(), finished_at = now()",
        ),
    };
    if !from.contains(&status) {
        return Ok(Control::NotApplicable(status));
    }
    sqlx::query(
        "UPDATE batches SET status = $2,
                finished_at = CASE WHEN $2 = 'cancelled' THEN now() ELSE finished_at END
         WHERE id = $1",
    )
    .bind(id)
    .bind(to)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "UPDATE jobs j SET {jobs_set}
         FROM batch_items i
         WHERE i.batch_id = $1 AND j.id = i.job_id AND j.requested_version = i.version
           AND j.status IN ({jobs_from})"
    ))
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Control::Done)
}

/// One line of a batch's results.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemResult {
    pub seq: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    pub job_id: Uuid,
    pub version: i32,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<super::JobErrorView>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    seq: i32,
    custom_id: Option<String>,
    job_id: Uuid,
    version: i32,
    status: String,
    error_code: Option<String>,
    error_message: Option<String>,
    result: Option<serde_json::Value>,
}

/// Up to `limit` items of a batch after `after` (their `seq`), in submission order, with
/// the result of the version the batch asked for.
pub async fn batch_results(
    pool: &PgPool,
    batch_id: Uuid,
    after: i32,
    limit: i64,
) -> Result<Vec<ItemResult>, DbError> {
    let rows: Vec<ItemRow> = sqlx::query_as(
        "SELECT i.seq, i.custom_id, i.job_id, i.version,
                CASE WHEN j.requested_version = i.version THEN j.status
                     WHEN r.job_id IS NOT NULL THEN 'completed' ELSE 'failed' END AS status,
                CASE WHEN j.requested_version = i.version THEN j.error_code
                     WHEN r.job_id IS NULL THEN 'superseded' END AS error_code,
                CASE WHEN j.requested_version = i.version THEN j.error_message
                     WHEN r.job_id IS NULL THEN 'a later version was requested before this one finished' END
                    AS error_message,
                CASE WHEN r.job_id IS NOT NULL THEN
                    jsonb_build_object('transcript', r.transcript, 'scores', r.scores,
                        'summary', r.summary, 'rubric', r.rubric, 'usage', r.usage) END AS result
         FROM batch_items i
         JOIN jobs j ON j.id = i.job_id
         LEFT JOIN job_results r ON r.job_id = i.job_id AND r.version = i.version
         WHERE i.batch_id = $1 AND i.seq > $2
         ORDER BY i.seq LIMIT $3",
    )
    .bind(batch_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let status: JobStatus = r.status.parse().map_err(DbError::Corrupt)?;
            let error = match (status, r.error_code) {
                (JobStatus::Failed, code) => Some(super::JobErrorView {
                    code: code.unwrap_or_else(|| "unknown".into()),
                    message: r.error_message.unwrap_or_default(),
                }),
                _ => None,
            };
            Ok(ItemResult {
                seq: r.seq,
                custom_id: r.custom_id,
                job_id: r.job_id,
                version: r.version,
                status,
                result: r.result.map(stored_result).transpose()?,
                error,
            })
        })
        .collect()
}

/// Whether the batch exists for this tenant (`None`: any tenant).
pub async fn batch_exists(
    pool: &PgPool,
    tenant_id: Option<Uuid>,
    id: Uuid,
) -> Result<bool, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM batches WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2))",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_one(pool)
    .await?)
}

/// Queued interactive items of a batch, to push to Redis after it is stored.
pub async fn batch_jobs_to_push(pool: &PgPool, batch_id: Uuid) -> Result<Vec<QueuedJob>, DbError> {
    let rows: Vec<QueuedRow> = sqlx::query_as(
        // The batch's items first (its primary-key range), then each job by id: right
        // after a large insert the statistics are stale, and a planner left to choose
        // the join order once scanned the items once per job.
        "WITH i AS MATERIALIZED (SELECT job_id FROM batch_items WHERE batch_id = $1)
         SELECT j.id, j.lane, j.attempts FROM i JOIN jobs j ON j.id = i.job_id
         WHERE j.status = 'queued' AND j.enqueued_at IS NULL AND j.lane = 'interactive'",
    )
    .bind(batch_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(|r| r.into_job(false)).collect()
}

// ---------------------------------------------------------------- server-side listing

/// A batch whose S3 prefix is still being listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Listing {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub lane: String,
    pub options: serde_json::Value,
    pub source: String,
    pub listing_after: Option<String>,
    pub total: i32,
}

/// Batches in `listing`, oldest first.
pub async fn listings(pool: &PgPool, limit: i64) -> Result<Vec<Listing>, DbError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, lane, options, source, listing_after, total FROM batches
         WHERE status = 'listing' AND source IS NOT NULL ORDER BY created_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Adds one page of a listing as items and records how far the listing got, in one
/// transaction, so a listing that stops resumes after its last stored page. `done`
/// ends the listing (the batch runs). A page already stored (another lister got there
/// first) changes nothing.
pub async fn append_listed(
    pool: &PgPool,
    listing: &Listing,
    items: &[NewItem],
    last_key: Option<&str>,
    done: bool,
) -> Result<bool, DbError> {
    let mut tx = pool.begin().await?;
    let current: Option<(Option<String>, i32, String)> =
        sqlx::query_as("SELECT listing_after, total, status FROM batches WHERE id = $1 FOR UPDATE")
            .bind(listing.id)
            .fetch_optional(&mut *tx)
            .await?;
    match current {
        Some((after, total, status))
            if after == listing.listing_after && total == listing.total && status == "listing" => {}
        _ => return Ok(false),
    }
    let lane: Lane = listing.lane.parse().map_err(DbError::Corrupt)?;
    insert_items(
        &mut tx,
        listing.id,
        listing.tenant_id,
        lane,
        listing.total,
        items,
    )
    .await?;
    sqlx::query(
        "UPDATE batches SET listing_after = COALESCE($2, listing_after),
                status = CASE WHEN $3 THEN 'running' ELSE status END
         WHERE id = $1",
    )
    .bind(listing.id)
    .bind(last_key)
    .bind(done)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

// ---------------------------------------------------------------- fair dispatch

/// A bulk job the dispatcher may hand to Redis, with its tenant.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub tenant_id: Uuid,
    pub job: QueuedJob,
}

#[derive(sqlx::FromRow)]
struct CandidateRow {
    tenant_id: Uuid,
    #[sqlx(flatten)]
    job: QueuedRow,
}

/// The oldest undispatched bulk jobs of every tenant, at most `per_tenant` each, fewer
/// for a tenant near its `max_concurrent` (counting its running and dispatched jobs),
/// grouped by tenant, oldest first within each. Reads a few index rows per tenant
/// (`jobs_bulk_backlog`), however long the backlog.
pub async fn bulk_candidates(pool: &PgPool, per_tenant: i64) -> Result<Vec<Candidate>, DbError> {
    let rows: Vec<CandidateRow> = sqlx::query_as(
        "SELECT t.id AS tenant_id, j.id, j.lane, j.attempts
         FROM tenants t
         CROSS JOIN LATERAL (
             SELECT id, lane, attempts, created_at FROM jobs
             WHERE tenant_id = t.id AND status = 'queued' AND lane = 'bulk'
               AND enqueued_at IS NULL
             ORDER BY created_at, id
             LIMIT CASE WHEN t.max_concurrent IS NULL THEN $1
                   ELSE LEAST($1, GREATEST(0, t.max_concurrent - (
                        SELECT count(*) FROM jobs p
                        WHERE p.tenant_id = t.id AND (p.status = 'processing'
                           OR (p.status = 'queued' AND p.enqueued_at IS NOT NULL)))))
                   END
         ) j
         ORDER BY t.id, j.created_at, j.id",
    )
    .bind(per_tenant)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Candidate {
                tenant_id: r.tenant_id,
                job: r.job.into_job(false)?,
            })
        })
        .collect()
}

/// Round-robin over tenants: one job of each tenant in turn, starting at the tenant
/// `rotate` places along (so no tenant is always first), until `room` are picked.
pub fn fair_pick(candidates: &[Candidate], room: usize, rotate: usize) -> Vec<QueuedJob> {
    let mut by_tenant: Vec<std::collections::VecDeque<QueuedJob>> = Vec::new();
    let mut last: Option<Uuid> = None;
    for c in candidates {
        if last != Some(c.tenant_id) {
            by_tenant.push(Default::default());
            last = Some(c.tenant_id);
        }
        if let Some(q) = by_tenant.last_mut() {
            q.push_back(c.job);
        }
    }
    let n = by_tenant.len();
    let mut out = Vec::with_capacity(room);
    if n == 0 {
        return out;
    }
    let start = rotate % n;
    while out.len() < room {
        let mut any = false;
        for k in 0..n {
            if out.len() == room {
                break;
            }
            if let Some(job) = by_tenant[(start + k) % n].pop_front() {
                out.push(job);
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    out
}

// ---------------------------------------------------------------- listing jobs

/// Filters of `GET /v1/jobs` and of a reprocess.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub batch: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub error_code: Option<String>,
    /// A quality flag of the latest result (`no_speech`, …).
    pub flag: Option<String>,
    /// The model of the latest result (`whisper-tiny.en`).
    pub model: Option<String>,
}

/// The filter as SQL over `jobs j`, parameters `$1` (tenant, NULL for all) to `$8`.
const FILTER: &str = "($1::uuid IS NULL OR j.tenant_id = $1)
    AND ($2::text IS NULL OR j.status = $2)
    AND ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM batch_items bi
                                     WHERE bi.batch_id = $3 AND bi.job_id = j.id))
    AND ($4::timestamptz IS NULL OR j.created_at >= $4)
    AND ($5::timestamptz IS NULL OR j.created_at < $5)
    AND ($6::text IS NULL OR j.error_code = $6)
    AND ($7::text IS NULL OR (SELECT r.scores->'flags' FROM job_results r WHERE r.job_id = j.id
                              ORDER BY r.version DESC LIMIT 1) @> jsonb_build_array($7::text))
    AND ($8::text IS NULL OR (SELECT r.model FROM job_results r WHERE r.job_id = j.id
                              ORDER BY r.version DESC LIMIT 1) = $8)";

fn bind_filter<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    tenant_id: Option<Uuid>,
    f: &'q JobFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    q.bind(tenant_id)
        .bind(f.status.map(JobStatus::as_str))
        .bind(f.batch)
        .bind(f.created_after)
        .bind(f.created_before)
        .bind(f.error_code.as_deref())
        .bind(f.flag.as_deref())
        .bind(f.model.as_deref())
}

/// One job in a listing.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct JobSummary {
    pub id: Uuid,
    #[schema(value_type = JobStatus)]
    pub status: String,
    #[schema(value_type = Lane)]
    pub lane: String,
    pub batch_id: Option<Uuid>,
    pub custom_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error_code: Option<String>,
    /// The latest stored result version (absent before the first).
    pub version: Option<i32>,
}

/// A page of a tenant's jobs matching `filter`, newest first, strictly after the
/// `(created_at, id)` cursor: keyset pagination, stable while jobs are added.
pub async fn list_jobs(
    pool: &PgPool,
    tenant_id: Uuid,
    filter: &JobFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<JobSummary>, DbError> {
    let sql = format!(
        "SELECT j.id, j.status, j.lane, j.batch_id, j.custom_id, j.created_at, j.finished_at,
                j.error_code,
                (SELECT max(r.version) FROM job_results r WHERE r.job_id = j.id) AS version
         FROM jobs j
         WHERE {FILTER}
           AND ($9::timestamptz IS NULL OR (j.created_at, j.id) < ($9, $10))
         ORDER BY j.created_at DESC, j.id DESC LIMIT $11"
    );
    let q = bind_filter(sqlx::query_as(&sql), Some(tenant_id), filter);
    Ok(q.bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit)
        .fetch_all(pool)
        .await?)
}

// ---------------------------------------------------------------- reprocessing

/// Jobs a reprocess may take: finished ones (a queued or running job is left alone).
const REPROCESSABLE: &str = "j.status IN ('completed', 'failed', 'cancelled')";

/// How many finished jobs match (a dry run).
pub async fn count_reprocess(
    pool: &PgPool,
    tenant_id: Option<Uuid>,
    filter: &JobFilter,
) -> Result<i64, DbError> {
    let sql = format!("SELECT count(*) FROM jobs j WHERE {FILTER} AND {REPROCESSABLE}");
    let (n,): (i64,) = bind_filter(sqlx::query_as(&sql), tenant_id, filter)
        .fetch_one(pool)
        .await?;
    Ok(n)
}

/// What a reprocess asks for.
#[derive(Debug, Clone)]
pub struct Reprocess {
    pub batch_id: Uuid,
    /// The tenant the batch belongs to: the caller's, or for an operator the filter's.
    pub owner: Uuid,
    /// Tenant of the jobs (`None`: every tenant, operators only).
    pub tenant_id: Option<Uuid>,
    /// A single job instead of a filter.
    pub job: Option<Uuid>,
    pub filter: JobFilter,
    /// Options merged over each job's own (JSON object of the changed options only).
    pub options_patch: serde_json::Value,
    pub lane: Lane,
}

/// Creates a reprocess batch of the matched finished jobs and requests each one's next
/// result version, in one transaction: the job is `queued` again with the merged
/// options and a fresh attempt budget, its earlier versions stay readable, and `GET`
/// keeps answering the latest stored one until the new one is stored. Returns how many
/// jobs were taken (0 creates no batch).
pub async fn reprocess(pool: &PgPool, r: &Reprocess) -> Result<i64, DbError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO batches (id, tenant_id, kind, status, lane, options)
         VALUES ($1, $2, 'reprocess', 'running', $3, $4)",
    )
    .bind(r.batch_id)
    .bind(r.owner)
    .bind(r.lane.as_str())
    .bind(&r.options_patch)
    .execute(&mut *tx)
    .await?;
    let sql = format!(
        "WITH m AS (
             SELECT j.id FROM jobs j
             WHERE {FILTER} AND {REPROCESSABLE} AND ($9::uuid IS NULL OR j.id = $9)
             ORDER BY j.created_at, j.id
             FOR UPDATE SKIP LOCKED),
         u AS (
             UPDATE jobs j SET status = 'queued', lane = $10, options = j.options || $11::jsonb,
                    requested_version = j.requested_version + 1, attempts_base = j.attempts,
                    enqueued_at = NULL, started_at = NULL, finished_at = NULL,
                    error_code = NULL, error_message = NULL, run_token = NULL,
                    updated_at = now()
             FROM m WHERE j.id = m.id
             RETURNING j.id, j.requested_version, j.created_at)
         INSERT INTO batch_items (batch_id, seq, job_id, version)
         SELECT $12, (row_number() OVER (ORDER BY u.created_at, u.id))::integer, u.id,
                u.requested_version
         FROM u
         RETURNING job_id"
    );
    let taken: Vec<(Uuid,)> = bind_filter(sqlx::query_as(&sql), r.tenant_id, &r.filter)
        .bind(r.job)
        .bind(r.lane.as_str())
        .bind(&r.options_patch)
        .bind(r.batch_id)
        .fetch_all(&mut *tx)
        .await?;
    let n = taken.len() as i64;
    if n == 0 {
        tx.rollback().await?;
        return Ok(0);
    }
    sqlx::query("UPDATE batches SET total = $2 WHERE id = $1")
        .bind(r.batch_id)
        .bind(n as i32)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// One stored result version of a job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct VersionSummary {
    pub version: i32,
    pub model: String,
    pub created_at: DateTime<Utc>,
    pub quality: Option<i32>,
    #[schema(value_type = Option<crate::domain::SummaryKind>)]
    pub summary_kind: Option<String>,
}

/// The stored result versions of a tenant's job, oldest first; `None` if no such job.
pub async fn job_versions(
    pool: &PgPool,
    tenant_id: Uuid,
    job_id: Uuid,
) -> Result<Option<Vec<VersionSummary>>, DbError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND tenant_id = $2)")
            .bind(job_id)
            .bind(tenant_id)
            .fetch_one(pool)
            .await?;
    if !exists {
        return Ok(None);
    }
    Ok(Some(
        sqlx::query_as(
            "SELECT version, model, created_at, (scores->>'quality')::integer AS quality,
                    summary->>'kind' AS summary_kind
             FROM job_results WHERE job_id = $1 ORDER BY version",
        )
        .bind(job_id)
        .fetch_all(pool)
        .await?,
    ))
}

// ---------------------------------------------------------------- tenant limits

/// Limits an admin set for a tenant (`None`: unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TenantLimits {
    /// Jobs running (or handed to workers) at once.
    pub max_concurrent: Option<i32>,
    /// Jobs created per rolling 24 hours.
    pub max_jobs_per_day: Option<i32>,
    /// Whether jobs may ask for the strong chat model.
    pub allow_strong: bool,
    /// Whether jobs may ask for a rubric.
    pub allow_rubrics: bool,
}

pub async fn tenant_limits(pool: &PgPool, tenant_id: Uuid) -> Result<TenantLimits, DbError> {
    Ok(sqlx::query_as(
        "SELECT max_concurrent, max_jobs_per_day, allow_strong, allow_rubrics
         FROM tenants WHERE id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?
    .unwrap_or(TenantLimits {
        max_concurrent: None,
        max_jobs_per_day: None,
        allow_strong: true,
        allow_rubrics: true,
    }))
}

/// Sets a tenant's limits; `false` if there is no such tenant.
pub async fn set_tenant_limits(
    pool: &PgPool,
    tenant: &str,
    limits: &TenantLimits,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE tenants SET max_concurrent = $2, max_jobs_per_day = $3, allow_strong = $4,
                allow_rubrics = $5 WHERE name = $1",
    )
    .bind(tenant)
    .bind(limits.max_concurrent)
    .bind(limits.max_jobs_per_day)
    .bind(limits.allow_strong)
    .bind(limits.allow_rubrics)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The tenant's id by name.
pub async fn tenant_by_name(pool: &PgPool, name: &str) -> Result<Option<Uuid>, DbError> {
    super::tenant_id(pool, name).await
}

/// Jobs the tenant created in the last 24 hours.
pub async fn jobs_last_day(pool: &PgPool, tenant_id: Uuid) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND created_at > now() - interval '1 day'",
    )
    .bind(tenant_id)
    .fetch_one(pool)
    .await?)
}

/// The tenant's jobs waiting or running in `lane`.
pub async fn active_jobs(pool: &PgPool, tenant_id: Uuid, lane: Lane) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND lane = $2
           AND status IN ('queued', 'processing')",
    )
    .bind(tenant_id)
    .bind(lane.as_str())
    .fetch_one(pool)
    .await?)
}

/// A tenant's S3 grants as `(bucket, prefix)`, to check many URLs without a query each.
pub async fn tenant_grants(
    pool: &PgPool,
    tenant_id: Uuid,
) -> Result<Vec<(String, String)>, DbError> {
    Ok(
        sqlx::query_as("SELECT bucket, prefix FROM source_grants WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_all(pool)
            .await?,
    )
}

/// Jobs created by an idempotent `POST /v1/jobs`: see [`Created`].
pub async fn insert_job_idempotent(
    pool: &PgPool,
    job: &super::NewJob,
    idem: &Idempotency,
) -> Result<Created, DbError> {
    let mut tx = pool.begin().await?;
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO jobs (id, tenant_id, lane, source, options, idempotency_key, request_hash,
                           traceparent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING id",
    )
    .bind(job.id)
    .bind(job.tenant_id)
    .bind(job.lane.as_str())
    .bind(&job.source)
    .bind(super::to_json(&job.options)?)
    .bind(&idem.key)
    .bind(&idem.request_hash)
    .bind(&job.traceparent)
    .fetch_optional(&mut *tx)
    .await?;
    let out = match inserted {
        Some(id) => Created::New(id),
        None => replay(&mut tx, "jobs", job.tenant_id, idem).await?,
    };
    tx.commit().await?;
    Ok(out)
}

/// The job an idempotency key created, if any, compared with this request's hash.
pub async fn find_idempotent_job(
    pool: &PgPool,
    tenant_id: Uuid,
    idem: &Idempotency,
) -> Result<Option<Created>, DbError> {
    prior(pool, "jobs", tenant_id, idem).await
}

/// The same for batches.
pub async fn find_idempotent_batch(
    pool: &PgPool,
    tenant_id: Uuid,
    idem: &Idempotency,
) -> Result<Option<Created>, DbError> {
    prior(pool, "batches", tenant_id, idem).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(tenant: u128, n: u128) -> Candidate {
        Candidate {
            tenant_id: Uuid::from_u128(tenant),
            job: QueuedJob {
                id: Uuid::from_u128(tenant * 1000 + n),
                lane: Lane::Bulk,
                attempts: 0,
                abandoned: false,
            },
        }
    }

    #[test]
    fn fair_pick_alternates_tenants_and_rotates_the_first() {
        let mut c: Vec<_> = (0..5).map(|n| cand(1, n)).collect();
        c.extend((0..2).map(|n| cand(2, n)));
        let ids = |v: Vec<QueuedJob>| v.iter().map(|j| j.id.as_u128()).collect::<Vec<_>>();
        assert_eq!(ids(fair_pick(&c, 5, 0)), vec![1000, 2000, 1001, 2001, 1002]);
        assert_eq!(ids(fair_pick(&c, 3, 1)), vec![2000, 1000, 2001]);
        // More room than candidates: all of them, each tenant's in order.
        assert_eq!(
            ids(fair_pick(&c, 100, 0)),
            vec![1000, 2000, 1001, 2001, 1002, 1003, 1004]
        );
        assert!(fair_pick(&[], 10, 3).is_empty());
    }
}
