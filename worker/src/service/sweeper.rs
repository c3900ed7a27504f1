//! The enqueue sweeper: PostgreSQL is the source of truth for jobs, Redis only carries
//! their ids. Every `sweep_interval_ms` this pushes
//! - queued jobs that never reached Redis (the API could not push them), and
//! - queued jobs pushed more than `requeue_after_s` ago whose queue task is gone (Redis
//!   restarted without persistence) or dead (apalis gave up re-delivering it while
//!   PostgreSQL was down), and
//! - processing jobs their worker stopped touching (the worker died, or its run was
//!   cancelled when a Redis failure ended the lane worker): put back to `queued` with
//!   their run token cleared, or failed as `worker-crashed` once their attempts are used
//!   up, so a job that kills its worker cannot take down the fleet.
//!
//! Each pass first promotes due tasks in chunks (`shared::queue::promote_due`), so a
//! large backlog never reaches apalis-redis's unchunked promotion. It also vacuums the
//! queue records of tasks finished more than `queue_retention_s` ago.
//!
//! Every worker runs one, but only the holder of the `sweeper` lease (PostgreSQL, see
//! `shared::db::try_lease`) acts, so the fleet sweeps once per interval whatever its
//! size; pushes are idempotent by task id, so a lease changing hands mid-sweep does no
//! harm.

use std::sync::Arc;
use std::time::Duration;

use apalis_redis::ConnectionManager;
use shared::config::Config;
use shared::db::QueuedJob;
use shared::queue::{self, JobQueue};
use sqlx::PgPool;

const BATCH: i64 = 1_000;

/// Name of the lease the acting sweeper holds.
const LEASE: &str = "sweeper";

pub async fn run(
    db: PgPool,
    queue: JobQueue,
    conn: ConnectionManager,
    purger: shared::purge::Purger,
    config: Arc<Config>,
    holder: String,
) {
    let every = Duration::from_millis(config.sweep_interval_ms.max(100));
    // The lease outlives a few missed sweeps, so a busy leader keeps it, and a dead one
    // is replaced within seconds.
    let lease_ttl = (every * 5).max(Duration::from_secs(5));
    let mut leading = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Finished tasks are vacuumed every `queue_retention_s / 10` (at least every sweep).
    let vacuum_every = Duration::from_secs(config.queue_retention_s / 10).max(every);
    let mut last_vacuum = tokio::time::Instant::now();
    let purge_every = Duration::from_secs(config.purge_interval_s.max(1));
    let mut last_purge: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        match shared::db::try_lease(&db, LEASE, &holder, lease_ttl).await {
            Ok(now_leading) => {
                if now_leading != leading {
                    tracing::info!(leading = now_leading, "sweeper lease changed hands");
                }
                leading = now_leading;
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot reach the lease; sweeping skipped");
                leading = false;
            }
        }
        if !leading {
            continue;
        }
        for lane in shared::domain::Lane::ALL {
            let mut c = conn.clone();
            match shared::queue::promote_due(&mut c, &config, lane).await {
                Ok(n) if n > 1_000 => tracing::info!(
                    lane = lane.as_str(),
                    promoted = n,
                    "promoted a large backlog in chunks"
                ),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "promotion failed; next time"),
            }
        }
        if let Err(e) = sweep(&db, &queue, conn.clone(), &config).await {
            tracing::debug!(error = %e, "sweep failed; next time");
        }
        match shared::db::batch::finish_batches(&db).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(batches = n, "batches completed"),
            Err(e) => tracing::debug!(error = %e, "batch completion check failed; next time"),
        }
        if last_purge.is_none_or(|t| t.elapsed() >= purge_every) {
            last_purge = Some(tokio::time::Instant::now());
            if let Err(e) = purger.purge().await {
                tracing::warn!(error = %e, "retention purge failed; next time");
            }
        }
        if last_vacuum.elapsed() >= vacuum_every {
            last_vacuum = tokio::time::Instant::now();
            let retention = Duration::from_secs(config.queue_retention_s);
            for lane in shared::domain::Lane::ALL {
                let mut c = conn.clone();
                match shared::queue::vacuum(&mut c, &config, lane, retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        lane = lane.as_str(),
                        removed = n,
                        "vacuumed finished queue tasks"
                    ),
                    Err(e) => tracing::debug!(error = %e, "vacuum failed; next time"),
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Db(#[from] shared::db::DbError),
    #[error(transparent)]
    Queue(#[from] shared::queue::QueueError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// One pass; returns how many jobs were pushed.
pub async fn sweep(
    db: &PgPool,
    queue: &JobQueue,
    mut conn: ConnectionManager,
    config: &Config,
) -> Result<usize, SweepError> {
    // Lost runs first: a worker touches its job every heartbeat, and a lane worker's
    // orphan recovery re-delivers after `run_lost_after`; twice that without a touch
    // means the run is gone for good.
    let lost =
        shared::db::recover_lost_runs(db, config.run_lost_after() * 2, config.max_attempts, BATCH)
            .await?;
    for id in &lost.failed {
        tracing::warn!(job = %id, "every run of this job was lost with its worker; failed as worker-crashed");
    }
    let stale = Duration::from_secs(config.requeue_after_s);
    let mut jobs = shared::db::jobs_to_enqueue(db, stale, BATCH).await?;
    jobs.retain(|j| !lost.requeued.iter().any(|l| l.id == j.id));
    jobs.extend(lost.requeued.iter().copied());
    if jobs.is_empty() {
        return Ok(0);
    }
    let mut fresh = Vec::new();
    let mut pushed = 0;
    for job in &jobs {
        let lane_cfg = queue::lane_config(config, job.lane, 1);
        let task = queue::task_id(job.id, job.attempts).to_string();
        let meta_key = format!("{}:{task}", lane_cfg.job_meta_hash());
        let exists: bool = redis::cmd("EXISTS")
            .arg(&meta_key)
            .query_async(&mut conn)
            .await?;
        if !exists {
            fresh.push(*job);
            continue;
        }
        let dead: bool = redis::cmd("SISMEMBER")
            .arg(lane_cfg.dead_jobs_set())
            .arg(&task)
            .query_async(&mut conn)
            .await?;
        let done: bool = redis::cmd("SISMEMBER")
            .arg(lane_cfg.done_jobs_set())
            .arg(&task)
            .query_async(&mut conn)
            .await?;
        if dead || done || job.abandoned {
            // The task id is used up: push this run again under a new one.
            queue.push_again(job.id, job.lane, job.attempts).await?;
            pushed += 1;
        }
    }
    queue.push_many(&fresh).await?;
    pushed += fresh.len();
    let ids: Vec<_> = jobs.iter().map(|j: &QueuedJob| j.id).collect();
    shared::db::mark_enqueued(db, &ids).await?;
    for job in jobs.iter().filter(|j| j.abandoned) {
        tracing::warn!(job = %job.id, "processing job abandoned by its worker; enqueued again");
    }
    if pushed > 0 {
        tracing::info!(pushed, "sweeper enqueued jobs missing from Redis");
    }
    Ok(pushed)
}
