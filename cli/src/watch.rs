//! `voxq watch`: polls batches until each is completed or cancelled, with one progress
//! bar over all of them (a line every 5 s when stderr is not a terminal), then prints
//! the final counts and the failures by code.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use uuid::Uuid;

use crate::api::Api;

/// The batch object of the API (the fields the client reads).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Batch {
    pub id: Uuid,
    #[serde(default)]
    pub kind: String,
    pub status: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub counts: Counts,
    #[serde(default)]
    pub failures: BTreeMap<String, u64>,
    #[serde(default)]
    pub throughput_per_min: f64,
    #[serde(default)]
    pub cost_usd: f64,
}

/// The counts the client reads (the API also sends queued, processing and paused).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Counts {
    #[serde(default)]
    pub completed: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub cancelled: u64,
}

impl Batch {
    /// Items that will not run again.
    pub(crate) fn finished(&self) -> u64 {
        self.counts.completed + self.counts.failed + self.counts.cancelled
    }

    /// Whether the batch is over (nothing of it will run any more).
    pub(crate) fn is_over(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "cancelled")
    }
}

/// Progress summed over the watched batches.
#[derive(Debug, PartialEq)]
pub(crate) struct Progress {
    pub total: u64,
    pub finished: u64,
    pub failed: u64,
    pub per_min: f64,
    /// Seconds left at the current throughput; `None` while nothing is being done.
    pub eta_s: Option<f64>,
    pub paused: bool,
}

pub(crate) fn progress(batches: &[Batch]) -> Progress {
    let total = batches.iter().map(|b| b.total).sum();
    let finished = batches.iter().map(Batch::finished).sum();
    let failed = batches.iter().map(|b| b.counts.failed).sum();
    // Finished batches no longer contribute throughput.
    let per_min: f64 = batches
        .iter()
        .filter(|b| !b.is_over())
        .map(|b| b.throughput_per_min.max(0.0))
        .sum();
    let remaining = batches
        .iter()
        .filter(|b| !b.is_over())
        .map(|b| b.total.saturating_sub(b.finished()))
        .sum::<u64>();
    let eta_s = (per_min > 0.0).then(|| remaining as f64 / per_min * 60.0);
    let paused = batches.iter().any(|b| b.status == "paused");
    Progress {
        total,
        finished,
        failed,
        per_min,
        eta_s,
        paused,
    }
}

/// `45s`, `3m 20s`, `2h 05m`.
pub(crate) fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The part of the progress line after the counts.
pub(crate) fn describe(p: &Progress) -> String {
    let eta = match p.eta_s {
        Some(eta) => format!("ETA {}", duration(eta)),
        None => "ETA -".to_string(),
    };
    let mut text = format!("{:.1}/min, {eta}, {} failed", p.per_min, p.failed);
    if p.paused {
        text.push_str(", paused");
    }
    text
}

/// The final report: one line per batch, then the failures by code over all batches.
pub(crate) fn summary(batches: &[Batch]) -> Vec<String> {
    let mut lines: Vec<String> = batches
        .iter()
        .map(|b| {
            format!(
                "batch {}: {}, {} items: {} completed, {} failed, {} cancelled, ${:.4}",
                b.id,
                b.status,
                b.total,
                b.counts.completed,
                b.counts.failed,
                b.counts.cancelled,
                b.cost_usd
            )
        })
        .collect();
    let mut failures: BTreeMap<&str, u64> = BTreeMap::new();
    for batch in batches {
        for (code, n) in &batch.failures {
            *failures.entry(code).or_default() += n;
        }
    }
    if !failures.is_empty() {
        let mut by_count: Vec<(&str, u64)> = failures.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let listed: Vec<String> = by_count
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        lines.push(format!("failures: {}", listed.join(", ")));
    }
    lines
}

/// Time between two polls: each batch is read once a second, but no more than five
/// requests a second in all (the API rate-limits keys).
fn poll_interval(active: usize) -> Duration {
    Duration::from_millis((active as u64 * 200).clamp(1000, 10_000))
}

pub(crate) async fn run(api: &Api, ids: &[Uuid]) -> anyhow::Result<()> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let mut latest: Vec<Option<Batch>> = vec![None; ids.len()];
    let mut last_line: Option<Instant> = None;
    let started = Instant::now();
    loop {
        for (id, slot) in ids.iter().zip(latest.iter_mut()) {
            if slot.as_ref().is_some_and(Batch::is_over) {
                continue;
            }
            let batch: Batch = api
                .get_json(&format!("/v1/batches/{id}"), &[])
                .await
                .with_context(|| format!("batch {id}"))?;
            *slot = Some(batch);
        }
        let batches: Vec<Batch> = latest.iter().flatten().cloned().collect();
        let p = progress(&batches);
        match &bar {
            Some(bar) => {
                bar.set_length(p.total);
                bar.set_position(p.finished);
                bar.set_message(describe(&p));
            }
            None => {
                if last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                    eprintln!(
                        "voxq: [{}] {}/{} finished ({:.1}%), {}",
                        duration(started.elapsed().as_secs_f64()),
                        p.finished,
                        p.total,
                        if p.total > 0 {
                            p.finished as f64 * 100.0 / p.total as f64
                        } else {
                            0.0
                        },
                        describe(&p)
                    );
                    last_line = Some(Instant::now());
                }
            }
        }
        let active = batches.iter().filter(|b| !b.is_over()).count();
        if active == 0 {
            break;
        }
        tokio::time::sleep(poll_interval(active)).await;
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    let batches: Vec<Batch> = latest.into_iter().flatten().collect();
    for line in summary(&batches) {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(status: &str, total: u64, counts: [u64; 3], per_min: f64) -> Batch {
        Batch {
            id: Uuid::new_v4(),
            kind: "batch".into(),
            status: status.into(),
            created_at: None,
            total,
            counts: Counts {
                completed: counts[0],
                failed: counts[1],
                cancelled: counts[2],
            },
            failures: BTreeMap::new(),
            throughput_per_min: per_min,
            cost_usd: 0.0,
        }
    }

    #[test]
    fn progress_sums_the_batches() {
        let batches = [
            batch("running", 100, [40, 5, 0], 30.0),
            batch("running", 50, [10, 0, 0], 30.0),
            // Over: its 20 cancelled count as finished, its stale throughput does not.
            batch("cancelled", 30, [5, 5, 20], 99.0),
        ];
        let p = progress(&batches);
        assert_eq!((p.total, p.finished, p.failed), (180, 85, 10));
        assert_eq!(p.per_min, 60.0);
        // 55 + 40 items left at 60 a minute.
        assert_eq!(p.eta_s, Some(95.0));
        assert_eq!(describe(&p), "60.0/min, ETA 1m 35s, 10 failed");
        let idle = progress(&[batch("paused", 10, [0, 0, 0], 0.0)]);
        assert_eq!(idle.eta_s, None);
        assert_eq!(describe(&idle), "0.0/min, ETA -, 0 failed, paused");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(44.6), "45s");
        assert_eq!(duration(200.0), "3m 20s");
        assert_eq!(duration(7500.0), "2h 05m");
    }

    #[test]
    fn the_summary_lists_failures_by_code_over_all_batches() {
        let mut a = batch("completed", 10, [7, 3, 0], 0.0);
        a.failures = BTreeMap::from([("corrupt-audio".into(), 2), ("audio-too-long".into(), 1)]);
        let mut b = batch("completed", 5, [4, 1, 0], 0.0);
        b.failures = BTreeMap::from([("audio-too-long".into(), 1)]);
        let lines = summary(&[a.clone(), b]);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with(&format!(
            "batch {}: completed, 10 items: 7 completed, 3 failed",
            a.id
        )));
        assert_eq!(lines[2], "failures: audio-too-long 2, corrupt-audio 2");
        assert_eq!(summary(&[batch("completed", 1, [1, 0, 0], 0.0)]).len(), 1);
    }

    #[test]
    fn the_batch_object_parses() {
        let batch: Batch = serde_json::from_value(serde_json::json!({
            "id": "0b0f7c4e-5b0e-4c56-9d4e-2a0a7c1d2e3f", "kind": "batch", "status": "running",
            "created_at": "2025-01-01T00:00:00Z", "finished_at": null, "total": 3,
            "counts": {"queued": 1, "processing": 0, "completed": 1, "failed": 1, "paused": 0, "cancelled": 0},
            "failures": {"corrupt-audio": 1}, "throughput_per_min": 2.5, "eta_s": null, "cost_usd": 0.01
        }))
        .unwrap();
        assert_eq!(batch.finished(), 2);
        assert!(!batch.is_over());
        assert_eq!(batch.failures["corrupt-audio"], 1);
    }

    #[test]
    fn polling_stays_under_five_requests_a_second() {
        assert_eq!(poll_interval(1), Duration::from_secs(1));
        assert_eq!(poll_interval(20), Duration::from_secs(4));
        assert_eq!(poll_interval(500), Duration::from_secs(10));
    }
}
