//! The fair bulk dispatcher, and the server-side listing of batch prefixes.
//!
//! Bulk jobs do not go to Redis when they are submitted: they wait in PostgreSQL, and
//! the dispatcher keeps at most `bulk_queue_depth` of them waiting in the bulk lane's
//! Redis queue (handed out, not yet claimed; Redis's own count). Each top-up takes the oldest waiting jobs of
//! every tenant (a few index rows per tenant, `shared::db::batch::bulk_candidates`) and
//! hands them out round-robin, one per tenant in turn, starting with a different tenant
//! each time. So a tenant's new jobs wait behind at most about `bulk_queue_depth` jobs
//! of other tenants, not behind their whole backlog, and a tenant's `max_concurrent`
//! limit is applied here (its running plus handed-out jobs). apalis-redis has one FIFO
//! per queue and no notion of tenants; per-tenant Redis queues would need one lane
//! worker per tenant, so fairness lives in this dispatcher instead.
//!
//! Batches given as an S3 prefix are listed here too, a page at a time: each page's
//! jobs and the last key listed are stored in one transaction, so a listing that stops
//! (worker killed, lease moved) resumes after its last stored page.
//!
//! Only the holder of the `dispatcher` lease acts; pushes are idempotent by task id, so
//! a lease changing hands mid-pass does no harm.

use std::sync::Arc;
use std::time::Duration;

use shared::config::Config;
use shared::db::batch::{Listing, NewItem};
use shared::domain::{is_canonical_key, JobOptions, S3Prefix};
use shared::objects::ObjectStore;
use shared::queue::JobQueue;
use sqlx::PgPool;
use uuid::Uuid;

const LEASE: &str = "dispatcher";
/// Keys listed per page of a prefix listing.
const LIST_PAGE: i32 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Db(#[from] shared::db::DbError),
    #[error(transparent)]
    Queue(#[from] shared::queue::QueueError),
    #[error(transparent)]
    Objects(#[from] shared::objects::ObjectError),
}

pub async fn run(
    db: PgPool,
    queue: JobQueue,
    objects: ObjectStore,
    config: Arc<Config>,
    holder: String,
) {
    let every = Duration::from_millis(config.dispatch_interval_ms.max(5));
    let lease_ttl = Duration::from_secs(5).max(every * 20);
    let mut leading = false;
    let mut last_lease = tokio::time::Instant::now() - lease_ttl;
    let mut round: usize = 0;
    loop {
        // Renew the lease well before it expires, not on every (frequent) pass.
        if last_lease.elapsed() >= lease_ttl / 3 {
            last_lease = tokio::time::Instant::now();
            match shared::db::try_lease(&db, LEASE, &holder, lease_ttl).await {
                Ok(now) => {
                    if now != leading {
                        tracing::info!(leading = now, "dispatcher lease changed hands");
                    }
                    leading = now;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot reach the lease; dispatching skipped");
                    leading = false;
                }
            }
        }
        let mut busy = false;
        if leading {
            round = round.wrapping_add(1);
            match dispatch(&db, &queue, &config, round).await {
                Ok(filled) => busy = filled,
                Err(e) => tracing::debug!(error = %e, "dispatch failed; next time"),
            }
            match list_prefixes(&db, &objects).await {
                Ok(more) => busy |= more,
                Err(e) => tracing::warn!(error = %e, "batch listing failed; next time"),
            }
        }
        // While there is more to hand out, go again at once (after yielding).
        if busy {
            tokio::time::sleep(Duration::from_millis(2)).await;
        } else {
            tokio::time::sleep(every).await;
        }
    }
}

/// One top-up of the bulk lane; `true` when it filled all the room there was (more may
/// be waiting).
pub async fn dispatch(
    db: &PgPool,
    queue: &JobQueue,
    config: &Config,
    round: usize,
) -> Result<bool, DispatchError> {
    // Redis is asked, not PostgreSQL: tasks Redis lost (a restart without persistence)
    // must not hold the lane's room until the sweeper re-pushes their jobs.
    let depth = config.bulk_queue_depth.max(1) as i64;
    let waiting = queue.waiting(config, shared::domain::Lane::Bulk).await? as i64;
    let room = depth - waiting;
    if room <= 0 {
        return Ok(false);
    }
    let candidates = shared::db::batch::bulk_candidates(db, room).await?;
    let picked = shared::db::batch::fair_pick(&candidates, room as usize, round);
    if picked.is_empty() {
        return Ok(false);
    }
    queue.push_many(&picked).await?;
    let ids: Vec<Uuid> = picked.iter().map(|j| j.id).collect();
    shared::db::mark_enqueued(db, &ids).await?;
    tracing::debug!(dispatched = picked.len(), room, "bulk lane topped up");
    Ok(picked.len() as i64 == room)
}

/// Lists one page of every batch still listing its prefix; `true` while any has more.
async fn list_prefixes(db: &PgPool, objects: &ObjectStore) -> Result<bool, DispatchError> {
    let mut more = false;
    for listing in shared::db::batch::listings(db, 8).await? {
        more |= list_one(db, objects, &listing).await?;
    }
    Ok(more)
}

async fn list_one(
    db: &PgPool,
    objects: &ObjectStore,
    listing: &Listing,
) -> Result<bool, DispatchError> {
    let prefix: S3Prefix = listing
        .source
        .parse()
        .map_err(|e: String| shared::db::DbError::Corrupt(format!("batch source: {e}")))?;
    let options: JobOptions = serde_json::from_value(listing.options.clone())
        .map_err(|e| shared::db::DbError::Corrupt(format!("batch options: {e}")))?;
    let (keys, truncated) = objects
        .list_page(
            &prefix.bucket,
            &prefix.prefix,
            listing.listing_after.as_deref(),
            LIST_PAGE,
        )
        .await?;
    let last = keys.last().cloned();
    let items: Vec<NewItem> = keys
        .into_iter()
        // Folder markers and keys that are not canonical name no readable object.
        .filter(|k| !k.ends_with('/') && is_canonical_key(k))
        .map(|key| NewItem {
            job_id: Uuid::new_v4(),
            source: format!("s3://{}/{key}", prefix.bucket),
            options: options.clone(),
            custom_id: Some(key),
        })
        .collect();
    let n = items.len();
    let stored =
        shared::db::batch::append_listed(db, listing, &items, last.as_deref(), !truncated).await?;
    if stored {
        tracing::info!(batch = %listing.id, listed = n, done = !truncated, "batch prefix listed");
    }
    Ok(stored && truncated)
}
