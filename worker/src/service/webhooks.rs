//! The webhook dispatcher: delivers the outbox (`shared::db::webhooks`) as Standard
//! Webhooks.
//!
//! Every worker runs one; they share the work through `FOR UPDATE SKIP LOCKED`. A new
//! event wakes them at once (`LISTEN voxq_webhook`), and they look for due retries every
//! second. One attempt: the target is checked by the `webhook_allow*` rules (the fetch
//! stage's SSRF rules: public addresses only, the connection pinned to the checked
//! address), redirects are not followed, and the whole attempt has `webhook_timeout_s`.
//! A 2xx delivers; anything else is retried on `webhook_retry_schedule_s`, or later if
//! the receiver's `Retry-After` asks for it; 410 disables a registered endpoint.
//! Delivery is at-least-once: a dispatcher killed after sending but before recording
//! sends again, with the same `webhook-id`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use shared::config::Config;
use shared::db::webhooks::{record_attempt, take_due, DueDelivery, Outcome, WEBHOOK_CHANNEL};
use shared::net::{TargetError, TargetPolicy};
use shared::webhooks::{message_id, signature_header};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tracing::Instrument;
use url::Url;

/// How often due retries are looked for without a notification.
const POLL: Duration = Duration::from_secs(1);
/// Longest wait a receiver's `Retry-After` can impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

pub async fn run(db: PgPool, config: Arc<Config>, metrics: Arc<super::metrics::WorkerMetrics>) {
    let dispatcher = Dispatcher {
        metrics,
        policy: config.webhook_policy(),
        timeout: Duration::from_secs(config.webhook_timeout_s.max(1)),
        schedule: config
            .webhook_retry_schedule_s
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect(),
    };
    let dispatcher = Arc::new(dispatcher);
    let concurrency = config.webhook_concurrency.max(1);
    // Taken rows are held past the attempt's deadline plus time to record it.
    let hold = dispatcher.timeout + Duration::from_secs(30);
    let mut listener = listen(&db).await;
    let mut inflight = JoinSet::new();
    loop {
        let free = concurrency.saturating_sub(inflight.len());
        let mut taken = 0;
        if free > 0 {
            match take_due(&db, free as i64, hold).await {
                Ok(due) => {
                    taken = due.len();
                    for d in due {
                        let (db, dispatcher) = (db.clone(), dispatcher.clone());
                        let span =
                            tracing::info_span!("webhook", delivery = %d.id, attempt = d.attempts);
                        inflight.spawn(
                            async move { dispatcher.deliver(&db, d).await }.instrument(span),
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read due webhook deliveries"),
            }
        }
        if taken == free && free > 0 {
            continue; // there may be more due right now
        }
        tokio::select! {
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
            woken = wait(&mut listener) => {
                if !woken {
                    listener = listen(&db).await;
                }
            }
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn listen(db: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(db).await.ok()?;
    listener.listen(WEBHOOK_CHANNEL).await.ok()?;
    Some(listener)
}

/// Waits for a notification; `false` if the listener is gone (then it is re-made, and
/// the poll covers the gap).
async fn wait(listener: &mut Option<PgListener>) -> bool {
    match listener {
        Some(l) => l.recv().await.is_ok(),
        None => {
            tokio::time::sleep(POLL).await;
            false
        }
    }
}

struct Dispatcher {
    metrics: Arc<super::metrics::WorkerMetrics>,
    policy: TargetPolicy,
    timeout: Duration,
    schedule: Vec<Duration>,
}

impl Dispatcher {
    async fn deliver(&self, db: &PgPool, d: DueDelivery) {
        let started = Instant::now();
        let outcome = self.attempt(&d).await;
        let took = started.elapsed();
        self.metrics.webhook(match &outcome {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::GiveUp { .. } => "failed",
            Outcome::Gone => "gone",
        });
        match &outcome {
            Outcome::Delivered { status } => tracing::info!(status, "webhook delivered"),
            Outcome::Retry {
                status,
                error,
                after,
            } => tracing::info!(
                ?status,
                %error,
                retry_in_s = after.as_secs(),
                "webhook attempt failed; will retry"
            ),
            Outcome::GiveUp { status, error } => {
                tracing::warn!(?status, %error, "webhook delivery failed for good")
            }
            Outcome::Gone => tracing::warn!("webhook endpoint answered 410 Gone; disabling it"),
        }
        if let Err(e) = record_attempt(db, &d, &outcome, took).await {
            // The row comes due again after its hold: at-least-once.
            tracing::warn!(error = %e, "webhook attempt not recorded; it will be retried");
        }
    }

    /// One attempt, and what follows from it.
    async fn attempt(&self, d: &DueDelivery) -> Outcome {
        let Some(secret) = d.secret.as_deref() else {
            return Outcome::GiveUp {
                status: None,
                error: "no signing secret: the endpoint or the tenant's webhook secret was deleted"
                    .into(),
            };
        };
        let url = match Url::parse(&d.url) {
            Ok(url) => url,
            Err(e) => {
                return Outcome::GiveUp {
                    status: None,
                    error: format!("invalid URL: {e}"),
                }
            }
        };
        let (host, addr) = match self.policy.check_url(&url) {
            Ok((host, port)) => match self.policy.resolve(&host, port).await {
                Ok(addr) => (host, addr),
                Err(e) => return self.target_refused(d, e),
            },
            Err(e) => return self.target_refused(d, e),
        };
        let id = message_id(d.id);
        let timestamp = chrono::Utc::now().timestamp();
        let mut secrets = vec![secret];
        secrets.extend(d.previous_secret.as_deref());
        let signature = match signature_header(&secrets, &id, timestamp, d.body.as_bytes()) {
            Ok(s) => s,
            Err(e) => {
                return Outcome::GiveUp {
                    status: None,
                    error: e.to_string(),
                }
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static("voxq-webhooks/1"));
        for (name, value) in [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&host, addr)
            .no_proxy()
            .timeout(self.timeout)
            .build()
        {
            Ok(c) => c,
            Err(e) => return self.retry(d, None, format!("HTTP client: {e}"), None),
        };
        let sent = client
            .post(url)
            .headers(headers)
            .body(d.body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return self.retry(
                    d,
                    None,
                    format!("no answer within {} s", self.timeout.as_secs()),
                    None,
                )
            }
            Err(e) => {
                return self.retry(
                    d,
                    None,
                    format!("connection failed: {}", shared::error_chain(&e)),
                    None,
                )
            }
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Outcome::Delivered { status };
        }
        if status == 410 {
            return match d.endpoint_id {
                Some(_) => Outcome::Gone,
                None => Outcome::GiveUp {
                    status: Some(status),
                    error: "the receiver answered 410 Gone".into(),
                },
            };
        }
        let retry_after = retry_after(response.headers());
        let error = if response.status().is_redirection() {
            format!("the receiver answered {status} (redirects are not followed)")
        } else {
            format!("the receiver answered {status}")
        };
        self.retry(d, Some(status), error, retry_after)
    }

    /// A refused or unresolvable target: a refusal is final, an unknown host may be a
    /// passing DNS failure.
    fn target_refused(&self, d: &DueDelivery, e: TargetError) -> Outcome {
        tracing::info!(detail = %e.detail(), "webhook target refused");
        let error = format!("refusing to deliver: {e}");
        match e {
            TargetError::UnknownHost(_) => self.retry(d, None, error, None),
            _ => Outcome::GiveUp {
                status: None,
                error,
            },
        }
    }

    /// The next attempt on the schedule (at least `retry_after` away), or giving up
    /// when the schedule is used up.
    fn retry(
        &self,
        d: &DueDelivery,
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    ) -> Outcome {
        match next_delay(&self.schedule, d.in_schedule, retry_after) {
            Some(after) => Outcome::Retry {
                status,
                error,
                after,
            },
            None => Outcome::GiveUp {
                status,
                error: format!("{error}; gave up after {} attempts", d.in_schedule),
            },
        }
    }
}

/// The delay before the attempt after the `in_schedule`-th (from 1) of a schedule,
/// `None` when it was the last; a receiver's `Retry-After` can lengthen it (to a day
/// at most), never shorten it.
fn next_delay(
    schedule: &[Duration],
    in_schedule: i32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let planned = *schedule.get(usize::try_from(in_schedule - 1).ok()?)?;
    Some(planned.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER)))
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_then_give_up_and_retry_after_only_lengthens() {
        let s: Vec<Duration> = [5, 300].map(Duration::from_secs).to_vec();
        assert_eq!(next_delay(&s, 1, None), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(&s, 2, None), Some(Duration::from_secs(300)));
        assert_eq!(next_delay(&s, 3, None), None);
        assert_eq!(
            next_delay(&s, 1, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            next_delay(&s, 2, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            next_delay(&s, 1, Some(Duration::from_secs(10 * 86_400))),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(next_delay(&[], 1, None), None);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(80) && d <= Duration::from_secs(90),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
