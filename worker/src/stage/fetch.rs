//! Fetch stage: a job's audio bytes from S3 or over HTTPS.
//!
//! HTTPS fetches refuse private, loopback, link-local and other non-public addresses
//! (SSRF), unless `fetch_allow` lists them, and ports other than 443 (80 with
//! `fetch_allow_http`) unless `fetch_allow_ports` lists them. The host is resolved once,
//! checked, and the connection pinned to the checked address, so a DNS answer cannot
//! change between the check and the request. Redirects are followed by hand (at most 5),
//! each hop checked the same way.
//!
//! A server cannot hold a worker: one deadline (`fetch_timeout_s`) covers the whole
//! fetch, name resolution and every redirect included, and a body arriving slower than
//! `fetch_min_bytes_per_s` over a sliding window is aborted. Both end the run with an
//! error that [`FetchError::worth_retrying`] retries once at most.
//!
//! Error messages are what a client reads: they never show a resolved address or a URL
//! the client did not write. [`FetchError::detail`] has those, for the log.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use shared::config::Config;
use shared::domain::AudioSource;
use shared::net::{TargetError, TargetPolicy};
use shared::objects::{ObjectError, ObjectStore};
use tokio::time::{Instant, MissedTickBehavior};
use url::Url;

const MAX_REDIRECTS: usize = 5;
/// Longest wait for a TCP connection (within the fetch's deadline).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the bytes received so far are sampled for the transfer rate.
const RATE_TICK: Duration = Duration::from_secs(1);
/// Most runs of a job whose fetch timed out or trickled: the first and one retry.
pub const SLOW_FETCH_MAX_ATTEMPTS: i32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the audio was not found ({0})")]
    NotFound(String),
    #[error("access to the audio was denied ({0})")]
    Denied(String),
    /// `host` and `addr` are for the log ([`FetchError::detail`]): where a name leads
    /// is not the client's business.
    #[error("refusing to fetch the audio: its host is not a public address")]
    ForbiddenAddress { host: String, addr: IpAddr },
    #[error("refusing to fetch the audio from port {port}: the port is not allowed")]
    ForbiddenPort { port: u16 },
    #[error("cannot resolve host '{0}'")]
    UnknownHost(String),
    #[error("the audio is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    InvalidUrl(String),
    #[error("too many redirects (more than {MAX_REDIRECTS})")]
    TooManyRedirects,
    /// `url` (perhaps a redirect's target) is for the log.
    #[error("the audio server answered HTTP {status}")]
    HttpStatus { status: u16, url: String },
    #[error("{0}")]
    Storage(String),
    /// 5xx, 429 and S3 trouble: worth retrying.
    #[error("fetch failed, will retry: {0}")]
    Transient(String),
    /// Refused, reset or failed TLS connections: worth retrying. `detail` is for the log.
    #[error("fetch failed, will retry: the connection to the audio server failed")]
    Connection { detail: String },
    /// The fetch's deadline passed (or a connection could not be made in time).
    #[error("the audio was not fetched within {after_s} s")]
    Timeout { after_s: u64 },
    /// The body arrived slower than the minimum rate.
    #[error("the audio server sent less than {min_bytes_per_s} bytes/s over {window_s} s")]
    TooSlow { min_bytes_per_s: u64, window_s: u64 },
}

impl FetchError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "source-not-found",
            Self::Denied(_) => "source-denied",
            Self::ForbiddenAddress { .. } => "forbidden-address",
            Self::ForbiddenPort { .. } => "forbidden-port",
            Self::UnknownHost(_) => "unknown-host",
            Self::TooLarge { .. } => "file-too-large",
            Self::InvalidUrl(_) => "invalid-source",
            Self::TooManyRedirects => "too-many-redirects",
            Self::HttpStatus { .. } => "source-http-error",
            Self::Storage(_) => "source-error",
            Self::Transient(_) | Self::Connection { .. } => "fetch-unavailable",
            Self::Timeout { .. } => "fetch-timeout",
            Self::TooSlow { .. } => "fetch-too-slow",
        }
    }

    /// Trouble that retries up to `max_attempts`. Timeouts are not among it: see
    /// [`FetchError::worth_retrying`].
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::Connection { .. })
    }

    /// A server that did not deliver in time or trickled.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::TooSlow { .. })
    }

    /// Whether a run that ended with this error deserves another, given that it was the
    /// job's `attempt`-th run (from 1); `max_attempts` still bounds the answer. Transient
    /// trouble is retried; a timeout or a trickle only on the first run, since a server
    /// that was slow once will likely be slow again and each try holds a worker for the
    /// whole deadline.
    pub fn worth_retrying(&self, attempt: i32) -> bool {
        self.is_transient() || (self.is_timeout() && attempt < SLOW_FETCH_MAX_ATTEMPTS)
    }

    /// The message with what it leaves out for the client (resolved addresses, redirect
    /// targets, connection errors): for the log only.
    pub fn detail(&self) -> String {
        match self {
            Self::ForbiddenAddress { host, addr } => {
                format!("{self} (host '{host}' resolved to {addr})")
            }
            Self::HttpStatus { url, .. } => format!("{self} (at {url})"),
            Self::Connection { detail } => format!("{self}: {detail}"),
            _ => self.to_string(),
        }
    }
}

impl From<ObjectError> for FetchError {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::NotFound { .. } => Self::NotFound(e.to_string()),
            ObjectError::Forbidden { .. } => Self::Denied(e.to_string()),
            ObjectError::TooLarge { limit } => Self::TooLarge { limit },
            ObjectError::Unavailable { .. } => Self::Transient(e.to_string()),
            ObjectError::Other { .. } => Self::Storage(e.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FetchStage {
    objects: ObjectStore,
    /// `fetch_allow*`: which addresses and ports URLs may reach.
    policy: TargetPolicy,
    max_bytes: u64,
    deadline: Duration,
    min_bytes_per_s: u64,
    rate_window: Duration,
}

impl FetchStage {
    /// The stage as `config` sets it up (`fetch_*` and `max_fetch_bytes`).
    pub fn new(objects: ObjectStore, config: &Config) -> Self {
        Self {
            objects,
            policy: TargetPolicy {
                allow: config.fetch_allow.clone(),
                allow_http: config.fetch_allow_http,
                allow_ports: config.fetch_allow_ports.clone(),
            },
            max_bytes: config.max_fetch_bytes,
            deadline: Duration::from_secs(config.fetch_timeout_s.max(1)),
            min_bytes_per_s: config.fetch_min_bytes_per_s,
            rate_window: Duration::from_secs(config.fetch_min_rate_window_s.max(1)),
        }
    }

    pub async fn run(&self, source: &AudioSource) -> Result<Vec<u8>, FetchError> {
        let deadline = Instant::now() + self.deadline;
        let after_s = self.deadline.as_secs();
        let result = match source {
            AudioSource::S3 { bucket, key } => {
                match tokio::time::timeout_at(
                    deadline,
                    self.objects.get(bucket, key, self.max_bytes),
                )
                .await
                {
                    Ok(got) => got.map_err(FetchError::from),
                    Err(_) => Err(FetchError::Transient(format!(
                        "the object store did not deliver the audio within {after_s} s"
                    ))),
                }
            }
            AudioSource::Url(url) => {
                tokio::time::timeout_at(deadline, self.fetch_url(url.clone(), deadline))
                    .await
                    .unwrap_or(Err(FetchError::Timeout { after_s }))
            }
        };
        if let Err(e) = &result {
            tracing::warn!(code = e.code(), detail = %e.detail(), "fetch failed");
        }
        result
    }

    fn port_allowed(&self, port: u16) -> bool {
        shared::config::port_allowed(port, self.policy.allow_http, &self.policy.allow_ports)
    }

    async fn fetch_url(&self, mut url: Url, deadline: Instant) -> Result<Vec<u8>, FetchError> {
        let started = Instant::now();
        // A connection that cannot be made in time is a timeout, reported as long as it took.
        let timed_out = || FetchError::Timeout {
            after_s: started.elapsed().as_secs_f64().round() as u64,
        };
        for _ in 0..=MAX_REDIRECTS {
            match url.scheme() {
                "https" => {}
                "http" if self.policy.allow_http => {}
                other => {
                    return Err(FetchError::InvalidUrl(format!(
                        "refusing to follow a redirect to scheme '{other}'"
                    )))
                }
            }
            let host = url
                .host_str()
                .ok_or_else(|| FetchError::InvalidUrl(format!("'{url}' has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = url.port_or_known_default().unwrap_or(443);
            if !self.port_allowed(port) {
                return Err(FetchError::ForbiddenPort { port });
            }
            let addr = self.resolve_checked(&host, port).await?;
            tracing::debug!(%url, %addr, "requesting");
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(
                    CONNECT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now())),
                )
                .resolve(&host, addr)
                .no_proxy()
                .build()
                .map_err(|e| FetchError::Connection {
                    detail: format!("HTTP client: {}", shared::error_chain(&e)),
                })?;
            let response = client.get(url.clone()).send().await.map_err(|e| {
                if e.is_timeout() {
                    timed_out()
                } else {
                    FetchError::Connection {
                        detail: format!("{url} ({addr}): {}", shared::error_chain(&e)),
                    }
                }
            })?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| FetchError::HttpStatus {
                        status: status.as_u16(),
                        url: url.to_string(),
                    })?;
                url = url.join(location).map_err(|e| {
                    FetchError::InvalidUrl(format!("bad redirect '{location}': {e}"))
                })?;
                continue;
            }
            let answered = format!("the audio server answered HTTP {}", status.as_u16());
            match status.as_u16() {
                200..=299 => return self.read_body(response, &url).await,
                404 | 410 => return Err(FetchError::NotFound(answered)),
                401 | 403 => return Err(FetchError::Denied(answered)),
                408 | 429 | 500..=599 => return Err(FetchError::Transient(answered)),
                code => {
                    return Err(FetchError::HttpStatus {
                        status: code,
                        url: url.to_string(),
                    })
                }
            }
        }
        Err(FetchError::TooManyRedirects)
    }

    /// The body, up to `max_bytes`, aborted if it arrives slower than the minimum rate.
    async fn read_body(
        &self,
        response: reqwest::Response,
        url: &Url,
    ) -> Result<Vec<u8>, FetchError> {
        let limit = self.max_bytes;
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(FetchError::TooLarge { limit });
        }
        let start = Instant::now();
        let mut rate = RateWindow::new(self.min_bytes_per_s, self.rate_window, start);
        let mut tick = tokio::time::interval_at(start + RATE_TICK, RATE_TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut body = response.bytes_stream();
        let mut data = Vec::new();
        loop {
            // Both branches are cancel-safe: a chunk is either returned or left in the stream.
            tokio::select! {
                chunk = body.next() => match chunk {
                    None => return Ok(data),
                    Some(Err(e)) => {
                        return Err(FetchError::Connection {
                            detail: format!("reading the body of {url}: {}", shared::error_chain(&e)),
                        })
                    }
                    Some(Ok(chunk)) => {
                        if (data.len() + chunk.len()) as u64 > limit {
                            return Err(FetchError::TooLarge { limit });
                        }
                        data.extend_from_slice(&chunk);
                    }
                },
                now = tick.tick() => {
                    if !rate.record(now, data.len() as u64) {
                        return Err(FetchError::TooSlow {
                            min_bytes_per_s: self.min_bytes_per_s,
                            window_s: self.rate_window.as_secs(),
                        });
                    }
                }
            }
        }
    }

    /// Resolves `host` and returns an address to connect to, refusing the host if any of
    /// its addresses is non-public and not allow-listed.
    async fn resolve_checked(&self, host: &str, port: u16) -> Result<SocketAddr, FetchError> {
        self.policy.resolve(host, port).await.map_err(|e| match e {
            TargetError::ForbiddenAddress { host, addr } => {
                FetchError::ForbiddenAddress { host, addr }
            }
            TargetError::UnknownHost(host) => FetchError::UnknownHost(host),
            TargetError::ForbiddenPort { port } => FetchError::ForbiddenPort { port },
            TargetError::InvalidUrl(m) => FetchError::InvalidUrl(m),
        })
    }
}

/// The bytes received so far, sampled once a tick, to average the transfer rate over a
/// sliding window. The first window is a grace period: nothing is judged before the
/// body has been arriving for one whole window.
struct RateWindow {
    min_bytes_per_s: u64,
    window: Duration,
    /// (when, bytes received by then), oldest first; the first is at or before the
    /// window's start once the grace period is over.
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    fn new(min_bytes_per_s: u64, window: Duration, start: Instant) -> Self {
        Self {
            min_bytes_per_s,
            window,
            samples: VecDeque::from([(start, 0)]),
        }
    }

    /// Records `total` bytes received by `now`; false when the last window's average is
    /// below the minimum.
    fn record(&mut self, now: Instant, total: u64) -> bool {
        if self.min_bytes_per_s == 0 {
            return true;
        }
        self.samples.push_back((now, total));
        let Some(window_start) = now.checked_sub(self.window) else {
            return true;
        };
        while self.samples.len() > 2 && self.samples[1].0 <= window_start {
            self.samples.pop_front();
        }
        let (since, before) = self.samples[0];
        if since > window_start {
            return true;
        }
        let seconds = now.duration_since(since).as_secs_f64();
        (total - before) as f64 >= self.min_bytes_per_s as f64 * seconds
    }
}

pub use shared::net::is_public;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn address_classes() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "192.88.98.1",
            "192.88.100.1",
            "2001:4860:4860::8888",
            "2003::1",
            "fe00::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn ipv4_compatible_addresses_are_refused() {
        for ip in [
            "::127.0.0.1",
            "::10.0.0.1",
            "::169.254.169.254",
            "::8.8.8.8",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn ipv4_translated_addresses_are_refused() {
        for ip in ["::ffff:0:127.0.0.1", "::ffff:0:8.8.8.8"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn six_to_four_addresses_are_refused() {
        // 2002:7f00:1:: embeds 127.0.0.1, 2002:a9fe:a9fe:: 169.254.169.254.
        for ip in ["2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:808:808::1"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn teredo_addresses_are_refused() {
        for ip in ["2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        // 2001:1::/32 and up are not Teredo.
        assert!(is_public("2001:4860::1".parse().unwrap()));
    }

    #[test]
    fn site_local_addresses_are_refused() {
        for ip in ["fec0::1", "feff:ffff::1", "fed0::1"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_six_to_four_relay_is_refused() {
        for ip in [
            "192.88.99.0",
            "192.88.99.1",
            "192.88.99.255",
            "::ffff:192.88.99.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn other_v6_special_ranges_are_refused() {
        for ip in ["100::1", "2001:2::1", "2001:db8::1", "64:ff9b::a00:1"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn client_messages_hide_addresses_and_redirect_targets() {
        let forbidden = FetchError::ForbiddenAddress {
            host: "metadata.internal".into(),
            addr: "169.254.169.254".parse().unwrap(),
        };
        let status = FetchError::HttpStatus {
            status: 418,
            url: "http://intranet.corp/x".into(),
        };
        let connection = FetchError::Connection {
            detail: "http://a/ (10.0.0.7:443): connection refused".into(),
        };
        for (e, secret) in [
            (&forbidden, "169.254"),
            (&forbidden, "metadata.internal"),
            (&status, "intranet"),
            (&connection, "10.0.0.7"),
        ] {
            assert!(!e.to_string().contains(secret), "{e}");
            assert!(e.detail().contains(secret), "{}", e.detail());
        }
        assert!(forbidden.to_string().contains("not a public address"));
    }

    #[test]
    fn slow_fetches_retry_once_and_transient_ones_until_the_limit() {
        let timeout = FetchError::Timeout { after_s: 60 };
        let slow = FetchError::TooSlow {
            min_bytes_per_s: 1,
            window_s: 5,
        };
        for e in [&timeout, &slow] {
            assert!(e.worth_retrying(1), "{e}");
            assert!(!e.worth_retrying(2), "{e}");
            assert!(!e.is_transient(), "{e}");
        }
        assert_eq!(timeout.code(), "fetch-timeout");
        assert_eq!(slow.code(), "fetch-too-slow");
        let transient = FetchError::Transient("HTTP 503".into());
        assert!(transient.worth_retrying(4));
        assert!(!FetchError::ForbiddenPort { port: 22 }.worth_retrying(1));
    }

    #[test]
    fn the_rate_is_averaged_over_a_sliding_window_after_a_grace() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut rate = RateWindow::new(100, Duration::from_secs(3), start);
        // Nothing at all during the grace period is tolerated...
        assert!(rate.record(at(1), 0));
        assert!(rate.record(at(2), 0));
        // ...but not once a whole window has passed.
        assert!(!rate.record(at(3), 0));

        let mut rate = RateWindow::new(100, Duration::from_secs(3), start);
        // A burst carries the average only while it is inside the window.
        assert!(rate.record(at(1), 150));
        assert!(rate.record(at(2), 1_000));
        assert!(rate.record(at(3), 1_000), "1000 B in 0..3");
        assert!(rate.record(at(4), 1_000), "850 B in 1..4");
        assert!(!rate.record(at(5), 1_000), "nothing arrived in 2..5");

        let mut rate = RateWindow::new(100, Duration::from_secs(3), start);
        for s in 1..20 {
            assert!(
                rate.record(at(s), s * 100),
                "a steady 100 B/s passes at {s} s"
            );
        }
        assert!(rate.samples.len() <= 5, "old samples are dropped");

        let mut off = RateWindow::new(0, Duration::from_secs(3), start);
        assert!(off.record(at(100), 0), "0 disables the minimum");
    }

    /// A plain-HTTP server on 127.0.0.1: `/drip` sends headers, then one byte every
    /// 300 ms; `/hop/N` waits 400 ms, then redirects to `/hop/N+1`; `/ok` answers "ok".
    async fn slow_server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                    if path == "/drip" {
                        let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
                        if socket.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        loop {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            if socket.write_all(b"x").await.is_err() {
                                return;
                            }
                        }
                    } else if let Some(n) = path.strip_prefix("/hop/") {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                        let next = n.parse::<u32>().unwrap_or(0) + 1;
                        let response = format!(
                            "HTTP/1.1 302 Found\r\nLocation: /hop/{next}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                    } else {
                        let response =
                            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                        let _ = socket.write_all(response.as_bytes()).await;
                    }
                });
            }
        });
        port
    }

    async fn stage(edit: impl FnOnce(&mut Config)) -> FetchStage {
        let mut config = Config {
            fetch_allow: vec!["127.0.0.1/32".parse().unwrap()],
            fetch_allow_http: true,
            ..Config::default()
        };
        edit(&mut config);
        let objects = ObjectStore::connect(&config).await;
        FetchStage::new(objects, &config)
    }

    fn url(port: u16, path: &str) -> AudioSource {
        AudioSource::Url(Url::parse(&format!("http://127.0.0.1:{port}{path}")).unwrap())
    }

    #[tokio::test]
    async fn a_trickling_body_is_aborted_by_the_minimum_rate() {
        let port = slow_server().await;
        let stage = stage(|c| {
            c.fetch_allow_ports = vec![port];
            c.fetch_min_bytes_per_s = 100;
            c.fetch_min_rate_window_s = 1;
            c.fetch_timeout_s = 30;
        })
        .await;
        let started = std::time::Instant::now();
        let err = stage.run(&url(port, "/drip")).await.unwrap_err();
        assert_eq!(err.code(), "fetch-too-slow", "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(stage.run(&url(port, "/ok")).await.unwrap(), b"ok");
    }

    #[tokio::test]
    async fn one_deadline_covers_the_body_and_every_redirect() {
        let port = slow_server().await;
        let stage = stage(|c| {
            c.fetch_allow_ports = vec![port];
            c.fetch_min_bytes_per_s = 0;
            c.fetch_timeout_s = 1;
        })
        .await;
        for path in ["/drip", "/hop/0"] {
            let started = std::time::Instant::now();
            let err = stage.run(&url(port, path)).await.unwrap_err();
            assert_eq!(err.code(), "fetch-timeout", "{path}: {err}");
            let took = started.elapsed();
            // Each hop takes 400 ms: a deadline per hop would let the five hops run 2 s.
            assert!(
                took >= Duration::from_millis(900) && took < Duration::from_millis(1_500),
                "{path}: {took:?}"
            );
        }
    }

    #[tokio::test]
    async fn ports_are_refused_before_connecting_unless_allowed() {
        let port = slow_server().await;
        let closed = stage(|_| {}).await;
        let err = closed.run(&url(port, "/ok")).await.unwrap_err();
        assert_eq!(err.code(), "forbidden-port", "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
        // A port on a host that does not exist: refused before any resolution.
        let err = closed
            .run(&AudioSource::Url(
                Url::parse("https://no-such-host.invalid:22/a.ogg").unwrap(),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "forbidden-port", "{err}");
        // 80 only with `fetch_allow_http`; 443 always.
        assert!(closed.port_allowed(443));
        assert!(closed.port_allowed(80));
        let https_only = stage(|c| c.fetch_allow_http = false).await;
        assert!(!https_only.port_allowed(80));
        assert!(https_only.port_allowed(443));
        let open = stage(|c| c.fetch_allow_ports = vec![port]).await;
        assert_eq!(open.run(&url(port, "/ok")).await.unwrap(), b"ok");
    }
}
