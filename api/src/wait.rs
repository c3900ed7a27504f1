//! Long-poll: `GET /v1/jobs/{id}?wait=N` answers as soon as the job finishes, woken by
//! PostgreSQL `LISTEN/NOTIFY` (`shared::db::JOB_FINISHED_CHANNEL`, sent in the
//! transaction that finishes a job), not by polling the database.
//!
//! One listener task per process holds one connection and wakes the requests waiting on
//! the job it hears about. Waiting requests are bounded (`max_waiting_requests`): beyond
//! that a request is answered at once with the job's current state, as without `wait`.
//! While the listener is reconnecting, every waiter is woken to read the job again, so
//! a notification lost in the gap costs a re-read, never a full wait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Requests waiting for jobs to finish.
#[derive(Debug)]
pub struct Waiters {
    waiting: Mutex<HashMap<Uuid, Vec<oneshot::Sender<()>>>>,
    /// One permit per waiting request.
    pub slots: tokio::sync::Semaphore,
}

impl Waiters {
    pub fn new(max_waiting: usize) -> Self {
        Self {
            waiting: Mutex::new(HashMap::new()),
            slots: tokio::sync::Semaphore::new(max_waiting.max(1)),
        }
    }

    /// Registers interest in `id` finishing. Register before reading the job's state,
    /// so a finish between the read and the wait is not missed.
    pub fn register(&self, id: Uuid) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.entry(id).or_default().push(tx);
        }
        rx
    }

    /// Drops the registrations of `id` whose requests stopped waiting (timed out, or
    /// the client went away).
    pub fn forget_closed(&self, id: Uuid) {
        if let Ok(mut w) = self.waiting.lock() {
            if let Some(list) = w.get_mut(&id) {
                list.retain(|tx| !tx.is_closed());
                if list.is_empty() {
                    w.remove(&id);
                }
            }
        }
    }

    /// Wakes every request waiting for `id`.
    pub fn wake(&self, id: Uuid) {
        let woken = self.waiting.lock().ok().and_then(|mut w| w.remove(&id));
        for tx in woken.into_iter().flatten() {
            let _ = tx.send(());
        }
    }

    /// Wakes every waiting request (the listener lost its connection: what it missed is
    /// unknown).
    pub fn wake_all(&self) {
        let all = self
            .waiting
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        for tx in all.into_values().flatten() {
            let _ = tx.send(());
        }
    }

    /// Requests waiting now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting
            .lock()
            .map(|w| w.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

/// Listens for finished jobs until the process ends, reconnecting after a pause when
/// PostgreSQL goes away.
pub async fn listen(db: PgPool, waiters: std::sync::Arc<Waiters>) {
    loop {
        let mut listener = match PgListener::connect_with(&db).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "long-poll listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(shared::db::JOB_FINISHED_CHANNEL).await {
            tracing::debug!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Jobs that finished while nobody listened: let their waiters read them.
        waiters.wake_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Ok(id) = Uuid::parse_str(n.payload()) {
                        waiters.wake(id);
                    }
                }
                Ok(None) => {
                    tracing::debug!("long-poll listener lost its connection; reconnecting");
                    waiters.wake_all();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "long-poll listener failed; starting again");
                    waiters.wake_all();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_finish_wakes_only_the_waiters_of_that_job() {
        let w = Waiters::new(4);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let ra1 = w.register(a);
        let ra2 = w.register(a);
        let mut rb = w.register(b);
        w.wake(a);
        assert!(ra1.await.is_ok() && ra2.await.is_ok());
        assert!(rb.try_recv().is_err(), "b is still waiting");
        assert_eq!(w.len(), 1);
        // A waiter that gave up is forgotten; wake_all reaches the rest.
        drop(rb);
        w.forget_closed(b);
        assert_eq!(w.len(), 0);
        let rc = w.register(b);
        w.wake_all();
        assert!(rc.await.is_ok());
    }
}
