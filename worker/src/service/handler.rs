//! One job, start to finish: claim → fetch → decode → transcribe → store.
//!
//! Delivery is at least once, so every step is idempotent: a finished job is not claimed
//! again, and a result version is stored once (see `shared::db::complete_job`).
//! Permanent errors (bad audio, 404, too long, forbidden address) fail the job at once
//! with a stable code. Transient ones (network, S3 5xx) put it back in the queue after
//! an exponential, jittered delay, until `max_attempts`. If PostgreSQL itself is
//! unreachable the error goes back to apalis, which re-delivers the task later.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::BoxDynError;
use rand::Rng;
use shared::config::Config;
use shared::db::{Claim, Fenced};
use shared::domain::Lane;
use shared::queue::{JobMessage, JobQueue};
use sqlx::PgPool;
use tracing::Instrument;

use super::exponential_delay;
use crate::pipeline::{Job, Pipeline, Timings};

/// Runs queued jobs through the pipeline and records their outcome.
pub struct Handler {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub queue: JobQueue,
    pub pipeline: Pipeline,
    pub metrics: Arc<super::metrics::WorkerMetrics>,
}

impl Handler {
    pub async fn handle(
        &self,
        msg: JobMessage,
        lane: Lane,
        worker: &str,
    ) -> Result<(), BoxDynError> {
        // The trace of the request that created the job, once the claim has read it.
        let span = tracing::info_span!(
            "job",
            id = %msg.job_id,
            lane = lane.as_str(),
            trace_id = tracing::field::Empty,
            parent_id = tracing::field::Empty,
        );
        self.handle_inner(msg, lane, worker).instrument(span).await
    }

    async fn handle_inner(
        &self,
        msg: JobMessage,
        lane: Lane,
        worker: &str,
    ) -> Result<(), BoxDynError> {
        let claim = shared::db::claim_job(
            &self.db,
            msg.job_id,
            worker,
            self.config.max_attempts,
            self.config.run_lost_after(),
        )
        .await;
        let job = match claim {
            Ok(Claim::Run(job)) => {
                if let Some((trace_id, parent)) =
                    job.traceparent.as_deref().and_then(shared::trace::parse)
                {
                    let span = tracing::Span::current();
                    span.record("trace_id", trace_id.as_str());
                    span.record("parent_id", parent.as_str());
                }
                job
            }
            Ok(Claim::Skip) => {
                tracing::info!("job finished, unknown or running elsewhere: delivery dropped");
                return Ok(());
            }
            Ok(Claim::Exhausted { code }) => {
                tracing::warn!(
                    code,
                    "job used up its attempts; failed instead of run again"
                );
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim the job; the queue will re-deliver it");
                return Err(Box::new(e));
            }
        };
        tracing::info!(attempt = job.attempts, run = %job.run, "job started");
        // Keep the job visibly alive for the sweeper while it runs; a touch that finds
        // the run replaced (this worker was paused past its heartbeats) ends the run.
        let superseded = Arc::new(tokio::sync::Notify::new());
        let keepalive = {
            let (db, id, run, lost) = (self.db.clone(), job.id, job.run, superseded.clone());
            let every = Duration::from_secs(self.config.heartbeat_interval_s.max(1));
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Ok(false) = shared::db::touch_job(&db, id, run).await {
                        lost.notify_one();
                        return;
                    }
                }
            }))
        };
        let started = Instant::now();
        let mut timings = Timings::default();
        let run = Job {
            source: &job.source,
            tenant: Some(job.tenant_id),
            options: &job.options,
            attempt: job.attempts,
        };
        let outcome = tokio::select! {
            outcome = self.pipeline.run(&run, &mut timings) => outcome,
            () = superseded.notified() => {
                tracing::warn!("another run owns this job now; this run stops and writes nothing");
                return Ok(());
            }
        };
        timings.record("total", started);

        drop(keepalive);
        let stored = match outcome {
            Ok(result) => {
                let t = Instant::now();
                let r = shared::db::complete_job(
                    &self.db,
                    &job,
                    &result,
                    &self.model(&result),
                    worker,
                    &timings.to_json(),
                    &timings.cache_keys,
                )
                .await;
                timings.record("store", t);
                if matches!(r, Ok(Fenced::Done)) {
                    self.metrics
                        .completed(lane, job.tenant_id, &result, &timings.to_json());
                }
                r.map(|fenced| log_fenced(fenced, "job completed"))
            }
            Err(e) if e.transient && job.run_number < self.config.max_attempts => {
                let delay = self.backoff(job.run_number);
                tracing::warn!(code = e.code, error = %e.detail, retry_in_ms = delay.as_millis() as u64, "transient error; retrying");
                match shared::db::requeue_job(&self.db, &job, e.code, &e.message).await {
                    Ok(Fenced::Done) => {
                        self.metrics.ended(lane, "retried", e.code);
                        // The new run's task id is <job>:<attempts>, distinct from this run's.
                        if let Err(qe) = self
                            .queue
                            .push(job.id, lane, job.attempts, Some(delay))
                            .await
                        {
                            tracing::warn!(error = %qe, "retry not enqueued; the sweeper will push it");
                        }
                        Ok(())
                    }
                    Ok(Fenced::Superseded) => {
                        log_fenced(Fenced::Superseded, "");
                        Ok(())
                    }
                    Err(db) => Err(db),
                }
            }
            Err(e) => {
                let (code, message) = if e.transient {
                    (
                        shared::db::RETRIES_EXHAUSTED,
                        format!("gave up after {} attempts: {}", job.run_number, e.message),
                    )
                } else {
                    (e.code, e.message)
                };
                tracing::warn!(code, error = %e.detail, "job failed");
                let r =
                    shared::db::fail_job(&self.db, &job, code, &message, &timings.to_json()).await;
                if matches!(r, Ok(Fenced::Done)) {
                    self.metrics.ended(lane, "failed", code);
                }
                r.map(|fenced| log_fenced(fenced, "job failed"))
            }
        };
        stored.map_err(|e| {
            tracing::warn!(error = %e, "cannot record the outcome; the queue will re-deliver the job");
            Box::new(e) as BoxDynError
        })
    }

    /// The model recorded with a result: the one that transcribed it.
    fn model(&self, result: &shared::domain::JobResult) -> String {
        if self.pipeline.noop {
            return "noop".into();
        }
        result
            .usage
            .get(&shared::domain::Stage::Transcribe)
            .map(|u| u.model.clone())
            .unwrap_or_default()
    }

    /// `retry_base_ms * 2^(attempt-1)`, jittered by 0.5–1.5, at most `retry_max_ms`.
    fn backoff(&self, attempt: i32) -> Duration {
        exponential_delay(
            Duration::from_millis(self.config.retry_base_ms),
            Duration::from_millis(self.config.retry_max_ms),
            u32::try_from(attempt.saturating_sub(1)).unwrap_or(0),
            rand::rng().random_range(0.5..1.5),
        )
    }
}

/// Aborts a task when dropped, including when the job's future is cancelled.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logs the outcome of a fenced write; a superseded run wrote nothing.
fn log_fenced(fenced: Fenced, done: &str) {
    match fenced {
        Fenced::Done => tracing::info!("{done}"),
        Fenced::Superseded => {
            tracing::warn!("another run owns this job now; this run's outcome was discarded")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_jitter_and_never_exceed_the_maximum() {
        let ms = |attempt: u32, jitter| {
            let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
            exponential_delay(base, max, attempt - 1, jitter).as_millis()
        };
        assert_eq!(ms(1, 1.0), 1_000);
        assert_eq!(ms(2, 1.0), 2_000);
        assert_eq!(ms(3, 0.5), 2_000);
        assert_eq!(ms(6, 1.0), 32_000);
        // 64 s × 1.5 would be 96 s: the maximum holds after the jitter.
        assert_eq!(ms(7, 1.5), 60_000);
        assert_eq!(ms(40, 1.49), 60_000);
        assert_eq!(ms(7, 0.5), 32_000);
    }
}
