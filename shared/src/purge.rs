//! Deleting a job everywhere it lives, and the retention purge.
//!
//! A job lives in PostgreSQL (the job, its result versions, batch items, webhook
//! deliveries), in S3 (its uploaded audio, if it was uploaded), in Redis (transcript
//! cache entries its runs wrote, its queue tasks). [`Purger::delete_job`] removes all
//! of it: the upload first (a failure there leaves everything as it was, so the caller
//! can retry), then the rows, then the Redis records (best effort: cache entries
//! expire, and finished queue tasks are vacuumed, if that fails).
//!
//! Audio fetched from a tenant's own S3 prefix or from a URL is not ours: it is never
//! deleted, only the job's reference to it.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::db::purge::{self as q, JobTraces};
use crate::db::DbError;
use crate::domain::Lane;
use crate::objects::{ObjectError, ObjectStore};

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("deleting the uploaded audio: {0}")]
    Objects(#[from] ObjectError),
}

/// What one retention pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Uploads deleted from S3.
    pub audio: usize,
    /// Jobs deleted with their results.
    pub jobs: usize,
}

/// Most jobs one retention pass handles of each kind (the next pass goes on).
const PASS_LIMIT: i64 = 500;

#[derive(Clone)]
pub struct Purger {
    db: PgPool,
    objects: ObjectStore,
    conn: ConnectionManager,
    config: Arc<Config>,
}

impl Purger {
    pub fn new(
        db: PgPool,
        objects: ObjectStore,
        conn: ConnectionManager,
        config: Arc<Config>,
    ) -> Self {
        Self {
            db,
            objects,
            conn,
            config,
        }
    }

    /// The S3 key of an upload of ours (`s3://<uploads bucket>/uploads/…`); `None` for
    /// any other source.
    fn upload_key<'a>(&self, source: &'a str) -> Option<&'a str> {
        source
            .strip_prefix("s3://")?
            .strip_prefix(self.objects.bucket())?
            .strip_prefix('/')
            .filter(|key| key.starts_with("uploads/"))
    }

    /// Deletes the job if it belongs to `tenant_id` (any tenant's for `None`); `false`
    /// if there is no such job.
    pub async fn delete_job(&self, tenant_id: Option<Uuid>, id: Uuid) -> Result<bool, PurgeError> {
        let Some(traces) = q::job_traces(&self.db, tenant_id, id).await? else {
            return Ok(false);
        };
        if !traces.audio_deleted {
            if let Some(key) = self.upload_key(&traces.source) {
                self.objects.delete(key).await?;
            }
        }
        let Some(traces) = q::delete_job(&self.db, id).await? else {
            return Ok(false);
        };
        self.forget(&traces).await;
        tracing::info!(job = %id, "job deleted");
        Ok(true)
    }

    /// The job's Redis records: its cache entries and its queue tasks.
    async fn forget(&self, traces: &JobTraces) {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for key in &traces.cache_keys {
            pipe.cmd("DEL")
                .arg(format!("{}:cache:{key}", self.config.queue_prefix))
                .ignore();
        }
        if !traces.cache_keys.is_empty() {
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                tracing::warn!(job = %traces.id, error = %e, "cache entries not deleted; they expire");
            }
        }
        let lane: Lane = traces.lane.parse().unwrap_or(Lane::Interactive);
        if let Err(e) =
            crate::queue::forget_job(&mut conn, &self.config, lane, traces.id, traces.attempts)
                .await
        {
            tracing::warn!(job = %traces.id, error = %e, "queue tasks not deleted; the vacuum will");
        }
    }

    /// One retention pass: uploads past `audio_retention_s`, then jobs past
    /// `result_retention_s` (each a tenant may override).
    pub async fn purge(&self) -> Result<Purged, PurgeError> {
        let mut purged = Purged::default();
        let audio_default = Duration::from_secs(self.config.audio_retention_s);
        let due = q::audio_due(&self.db, audio_default, PASS_LIMIT).await?;
        let mut done = Vec::with_capacity(due.len());
        for job in &due {
            if let Some(key) = self.upload_key(&job.source) {
                if let Err(e) = self.objects.delete(key).await {
                    tracing::warn!(job = %job.id, error = %e, "uploaded audio not deleted; next pass");
                    continue;
                }
                purged.audio += 1;
            }
            done.push(job.id);
        }
        q::mark_audio_deleted(&self.db, &done).await?;
        let results_default = Duration::from_secs(self.config.result_retention_s);
        for id in q::results_due(&self.db, results_default, PASS_LIMIT).await? {
            match self.delete_job(None, id).await {
                Ok(true) => purged.jobs += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(job = %id, error = %e, "job not purged; next pass"),
            }
        }
        if purged != Purged::default() {
            tracing::info!(audio = purged.audio, jobs = purged.jobs, "retention purge");
        }
        Ok(purged)
    }
}
