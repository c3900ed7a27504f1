//! Per-job CPU time. A stage's CPU-bound work (decoding, inference, scoring) runs on a
//! blocking thread through [`blocking`], which reads that thread's CPU clock
//! (`CLOCK_THREAD_CPUTIME_ID`) around the work and charges it to the job's stage being
//! measured by [`metered`]. Wall time is measured separately by the pipeline.
//!
//! CTranslate2 runs inference on threads of its own (one per model replica), which no
//! clock of ours runs on: [`ForeignThreads`] reads their CPU time from
//! `/proc/self/task/<tid>/schedstat` around each call. When several calls overlap, the
//! replica threads' time during the call is shared equally among the calls in flight, so
//! per-job figures are exact for one job at a time and a fair split otherwise.
//! Time spent on the async runtime's threads (HTTP, JSON) is not counted, nor is that of
//! threads the engine starts after loading (its intra-op threads when `threads` > 1).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

tokio::task_local! {
    static SPENT: Cell<Duration>;
}

/// CPU time of the calling thread so far.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux
    // supports for every thread.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Runs `work` and returns its output with the CPU time charged to it (by [`blocking`]
/// and [`charge`]) while it ran.
pub async fn metered<F: Future>(work: F) -> (F::Output, Duration) {
    SPENT
        .scope(Cell::new(Duration::ZERO), async {
            let out = work.await;
            (out, SPENT.with(Cell::get))
        })
        .await
}

/// Adds `cpu` to the measurement in progress, if any.
pub fn charge(cpu: Duration) {
    let _ = SPENT.try_with(|spent| spent.set(spent.get() + cpu));
}

/// Runs CPU-bound `work` on a blocking thread (so the async threads keep serving
/// heartbeats), in the current tracing span, and charges its CPU time.
pub async fn blocking<T, F>(work: F) -> Result<T, tokio::task::JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::Span::current();
    let (out, cpu) = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let start = thread_cpu();
        let out = work();
        (out, thread_cpu().saturating_sub(start))
    })
    .await?;
    charge(cpu);
    Ok(out)
}

/// Threads a library started (CTranslate2's replica threads), found by comparing this
/// process's threads before and after the library's start-up.
#[derive(Debug, Default)]
pub struct ForeignThreads {
    tids: Vec<u32>,
    in_flight: AtomicUsize,
}

impl ForeignThreads {
    /// Runs `start` and records the threads that appeared meanwhile.
    pub fn started_by<T>(start: impl FnOnce() -> T) -> (T, Self) {
        let before = threads();
        let out = start();
        let tids = threads().difference(&before).copied().collect();
        (
            out,
            Self {
                tids,
                in_flight: AtomicUsize::new(0),
            },
        )
    }

    /// Runs `call` (which makes those threads work for it) and returns its output with
    /// their CPU time during the call, shared among the calls in flight.
    pub fn measure<T>(&self, call: impl FnOnce() -> T) -> (T, Duration) {
        let mut peers = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let before = self.total();
        let out = call();
        let after = self.total();
        peers = peers.max(self.in_flight.fetch_sub(1, Ordering::SeqCst));
        (out, after.saturating_sub(before) / peers.max(1) as u32)
    }

    fn total(&self) -> Duration {
        self.tids.iter().map(|&tid| task_cpu(tid)).sum()
    }
}

fn threads() -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Time thread `tid` of this process has spent on a CPU (the first field of its
/// `schedstat`, nanoseconds); zero once it is gone.
fn task_cpu(tid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(for_cpu: Duration) -> u64 {
        let start = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - start < for_cpu {
            for i in 0..10_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        x
    }

    #[tokio::test]
    async fn blocking_work_is_charged_to_the_metered_future_and_sleep_is_not() {
        let ((), cpu) = metered(async {
            blocking(|| spin(Duration::from_millis(60))).await.unwrap();
            blocking(|| std::thread::sleep(Duration::from_millis(100)))
                .await
                .unwrap();
        })
        .await;
        assert!(cpu >= Duration::from_millis(60), "{cpu:?}");
        assert!(cpu < Duration::from_millis(150), "{cpu:?}");
        // Outside a measurement, charging is a no-op.
        charge(Duration::from_secs(1));
    }

    #[test]
    fn foreign_threads_are_found_and_measured() {
        let (stop, threads) = ForeignThreads::started_by(|| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                ready_tx.send(()).unwrap();
                while rx.try_recv().is_err() {
                    spin(Duration::from_millis(5));
                }
            });
            ready_rx.recv().unwrap();
            tx
        });
        // Other tests' threads may have started meanwhile too; the spinner is among them.
        assert!(!threads.tids.is_empty());
        let ((), cpu) = threads.measure(|| std::thread::sleep(Duration::from_millis(80)));
        stop.send(()).unwrap();
        // The spinning thread ran most of the 80 ms (the machine may be busy).
        assert!(cpu >= Duration::from_millis(20), "{cpu:?}");
        assert!(cpu < Duration::from_millis(500), "{cpu:?}");
    }
}
