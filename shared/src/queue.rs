//! The Redis job queue (apalis-redis): one queue per [`Lane`].
//!
//! A queue task carries only the job id; PostgreSQL holds the job itself. Task ids are
//! `<job id>:<attempts>`: pushing the same run twice is a no-op (apalis stores tasks with
//! HSETNX), while a retry after a transient error is a new run with a new id. This makes
//! re-pushing after a Redis failure safe, which is what the enqueue sweeper relies on.

use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskId, TaskSink, TaskSinkError};
use apalis_redis::{ConnectionManager, RedisStorage};
use redis::aio::ConnectionManagerConfig;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Config;
use crate::db::QueuedJob;
use crate::domain::Lane;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue: {0}")]
    Push(#[from] TaskSinkError<apalis_redis::Error>),
}

/// What a queue task carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub job_id: Uuid,
}

pub type LaneStorage = RedisStorage<JobMessage>;

/// Pushes larger than this are split: apalis-redis promotes all due tasks of a queue with
/// one `RPUSH unpack(...)`, which Lua refuses beyond a few thousand arguments.
const PUSH_CHUNK: usize = 1_000;

/// Both lanes' queues over one Redis connection.
#[derive(Clone)]
pub struct JobQueue {
    conn: ConnectionManager,
    interactive: LaneStorage,
    bulk: LaneStorage,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue").finish_non_exhaustive()
    }
}

/// Redis connection settings: apalis ends a worker on any Redis error, and the default
/// 500 ms response timeout turns a busy Redis into one; 5 s does not.
pub fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(2)
}

/// A connection that is established on first use, so a process can start while Redis
/// is down and report it through its readiness check.
pub fn connect_lazy(config: &Config) -> Result<ConnectionManager, QueueError> {
    let client = redis::Client::open(config.redis_url.as_str())?;
    Ok(ConnectionManager::new_lazy_with_config(
        client,
        connection_config(),
    )?)
}

/// apalis-redis settings of one lane. Every value is set explicitly: the crate's
/// `Default` and its serde defaults disagree (missed heartbeats 10 vs 2).
pub fn lane_config(config: &Config, lane: Lane, fetch_batch: usize) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(format!("{}:{}", config.queue_prefix, lane.as_str()))
        .batch_size(fetch_batch.max(1))
        .heartbeat_interval(Duration::from_secs(config.heartbeat_interval_s))
        .missed_heartbeats(config.missed_heartbeats)
        .lock_tasks(true)
        // Acknowledgement removes the task from the worker's in-flight set only when
        // results are persisted; without it a finished task is re-run after a restart.
        .persist_results(true)
        .emit_events(false)
}

/// Seconds since the Unix epoch: apalis-redis's clock for scheduling and `done_at`.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The `<job id>:<attempts>` task id of one run of a job.
pub fn task_id(job_id: Uuid, attempts: i32) -> TaskId {
    TaskId::from_string(format!("{job_id}:{attempts}"))
}

impl JobQueue {
    pub fn new(config: &Config, conn: ConnectionManager) -> Self {
        let storage =
            |lane| LaneStorage::new(conn.clone()).with_config(lane_config(config, lane, 1));
        Self {
            interactive: storage(Lane::Interactive),
            bulk: storage(Lane::Bulk),
            conn,
        }
    }

    pub fn storage(&self, lane: Lane) -> &LaneStorage {
        match lane {
            Lane::Interactive => &self.interactive,
            Lane::Bulk => &self.bulk,
        }
    }

    /// Pushes one run of a job, to start at once or after `delay`.
    pub async fn push(
        &self,
        job_id: Uuid,
        lane: Lane,
        attempts: i32,
        delay: Option<Duration>,
    ) -> Result<(), QueueError> {
        self.push_as(job_id, lane, task_id(job_id, attempts), delay)
            .await
    }

    /// Pushes a run whose task id is used up (finished or dead in Redis while PostgreSQL
    /// still wants it run) under a new id, `<job>:<attempts>:r<unix seconds>`.
    pub async fn push_again(
        &self,
        job_id: Uuid,
        lane: Lane,
        attempts: i32,
    ) -> Result<(), QueueError> {
        let id = TaskId::from_string(format!("{}:r{}", task_id(job_id, attempts), unix_now()));
        self.push_as(job_id, lane, id, None).await
    }

    async fn push_as(
        &self,
        job_id: Uuid,
        lane: Lane,
        id: TaskId,
        delay: Option<Duration>,
    ) -> Result<(), QueueError> {
        let mut task = TaskBuilder::new(JobMessage { job_id }).task_id(id);
        if let Some(delay) = delay {
            task = task.run_after(delay);
        }
        let mut storage = self.storage(lane).clone();
        storage.push_task(task.build()).await?;
        Ok(())
    }

    /// Pushes many jobs, grouped by lane, in chunks.
    pub async fn push_many(&self, jobs: &[QueuedJob]) -> Result<(), QueueError> {
        for lane in Lane::ALL {
            let tasks: Vec<_> = jobs
                .iter()
                .filter(|j| j.lane == lane)
                .map(|j| {
                    TaskBuilder::new(JobMessage { job_id: j.id })
                        .task_id(task_id(j.id, j.attempts))
                        .build()
                })
                .collect();
            let mut storage = self.storage(lane).clone();
            let mut tasks = tasks.into_iter().peekable();
            while tasks.peek().is_some() {
                let chunk: Vec<_> = tasks.by_ref().take(PUSH_CHUNK).collect();
                storage.push_all(&mut futures::stream::iter(chunk)).await?;
            }
        }
        Ok(())
    }

    /// Tasks of a lane waiting to be claimed: its active list and its scheduled set
    /// (apalis-redis parks every push there until it is due and promoted). Runs in
    /// progress are not counted.
    pub async fn waiting(&self, config: &Config, lane: Lane) -> Result<usize, QueueError> {
        let cfg = lane_config(config, lane, 1);
        let mut conn = self.conn.clone();
        let (active, scheduled): (usize, usize) = redis::pipe()
            .cmd("LLEN")
            .arg(cfg.active_jobs_list())
            .cmd("ZCARD")
            .arg(cfg.scheduled_jobs_set())
            .query_async(&mut conn)
            .await?;
        Ok(active + scheduled)
    }

    /// `PING`, for readiness checks.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

/// Deletes the queue records (task data, metadata, result) of tasks that finished more
/// than `retention` ago, from one lane's done and dead sets; apalis-redis never expires
/// them, so without this Redis grows by every job ever run. PostgreSQL keeps the jobs.
/// Scans in batches (`SSCAN`), so Redis is never blocked for long. Returns how many
/// tasks were removed.
pub async fn vacuum(
    conn: &mut ConnectionManager,
    config: &Config,
    lane: Lane,
    retention: Duration,
) -> Result<usize, QueueError> {
    let cfg = lane_config(config, lane, 1);
    let cutoff = unix_now().saturating_sub(retention.as_secs());
    let meta = cfg.job_meta_hash();
    let results = format!("{meta}:result");
    let mut removed = 0;
    for set in [cfg.done_jobs_set(), cfg.dead_jobs_set()] {
        let mut cursor: u64 = 0;
        loop {
            let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(&set)
                .arg(cursor)
                .arg("COUNT")
                .arg(500)
                .query_async(conn)
                .await?;
            let mut pipe = redis::pipe();
            for id in &ids {
                let done_at: Option<u64> = redis::cmd("HGET")
                    .arg(format!("{meta}:{id}"))
                    .arg("done_at")
                    .query_async(conn)
                    .await?;
                if done_at.is_none_or(|t| t <= cutoff) {
                    pipe.cmd("HDEL").arg(cfg.job_data_hash()).arg(id).ignore();
                    pipe.cmd("HDEL").arg(&results).arg(id).ignore();
                    pipe.cmd("DEL").arg(format!("{meta}:{id}")).ignore();
                    pipe.cmd("SREM").arg(&set).arg(id).ignore();
                    removed += 1;
                }
            }
            let _: () = pipe.query_async(conn).await?;
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok(removed)
}

/// Deletes the queue tasks of a deleted job: runs `0..=attempts` (`<job>:<n>`; a
/// rare re-push under a `:r` id is left to [`vacuum`]), from every list and set of the
/// lane and their records.
pub async fn forget_job(
    conn: &mut ConnectionManager,
    config: &Config,
    lane: Lane,
    job_id: Uuid,
    attempts: i32,
) -> Result<(), QueueError> {
    let cfg = lane_config(config, lane, 1);
    let meta = cfg.job_meta_hash();
    let mut pipe = redis::pipe();
    for n in 0..=attempts.max(0) {
        let id = task_id(job_id, n).to_string();
        pipe.cmd("LREM")
            .arg(cfg.active_jobs_list())
            .arg(0)
            .arg(&id)
            .ignore();
        pipe.cmd("ZREM")
            .arg(cfg.scheduled_jobs_set())
            .arg(&id)
            .ignore();
        pipe.cmd("SREM").arg(cfg.done_jobs_set()).arg(&id).ignore();
        pipe.cmd("SREM").arg(cfg.dead_jobs_set()).arg(&id).ignore();
        pipe.cmd("HDEL").arg(cfg.job_data_hash()).arg(&id).ignore();
        pipe.cmd("HDEL")
            .arg(format!("{meta}:result"))
            .arg(&id)
            .ignore();
        pipe.cmd("DEL").arg(format!("{meta}:{id}")).ignore();
    }
    let _: () = pipe.query_async(conn).await?;
    Ok(())
}

/// Moves due tasks from a lane's scheduled set to its active list, `PROMOTE_CHUNK` at a
/// time. apalis-redis pushes every task into the scheduled set and promotes *all* due
/// ones inside its fetch script with one `RPUSH unpack(...)`, which Lua refuses beyond
/// about 8,000 ids ("too many results to unpack"): a backlog that size would stop every
/// fetch. Promoting in chunks first keeps the set small. Returns how many were moved.
pub async fn promote_due(
    conn: &mut ConnectionManager,
    config: &Config,
    lane: Lane,
) -> Result<usize, QueueError> {
    const PROMOTE_CHUNK: usize = 1_000;
    static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            r"
            local ids = redis.call('zrangebyscore', KEYS[1], 0, ARGV[1], 'LIMIT', 0, ARGV[2])
            if #ids > 0 then
                redis.call('rpush', KEYS[2], unpack(ids))
                redis.call('zrem', KEYS[1], unpack(ids))
                redis.call('del', KEYS[3])
                redis.call('lpush', KEYS[3], 1)
            end
            return #ids
            ",
        )
    });
    let cfg = lane_config(config, lane, 1);
    let mut moved = 0;
    loop {
        let n: usize = SCRIPT
            .key(cfg.scheduled_jobs_set())
            .key(cfg.active_jobs_list())
            .key(cfg.signal_list())
            .arg(unix_now())
            .arg(PROMOTE_CHUNK)
            .invoke_async(conn)
            .await?;
        moved += n;
        if n < PROMOTE_CHUNK {
            return Ok(moved);
        }
    }
}
