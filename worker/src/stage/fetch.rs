//! Fetch stage: a job's audio bytes from S3 or over HTTPS.
//!
//! HTTPS fetches refuse private, loopback, link-local and other non-public addresses
//! (SSRF), unless `fetch_allow` lists them. The host is resolved once, checked, and the
//! connection pinned to the checked address, so a DNS answer cannot change between the
//! check and the request. Redirects are followed by hand (at most 5), each hop checked
//! the same way.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use shared::domain::AudioSource;
use shared::objects::{ObjectError, ObjectStore};
use url::Url;

const MAX_REDIRECTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the audio was not found ({0})")]
    NotFound(String),
    #[error("access to the audio was denied ({0})")]
    Denied(String),
    #[error("refusing to fetch from {host} ({addr}): not a public address")]
    ForbiddenAddress { host: String, addr: IpAddr },
    #[error("cannot resolve host '{0}'")]
    UnknownHost(String),
    #[error("the audio is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    InvalidUrl(String),
    #[error("too many redirects (more than {MAX_REDIRECTS})")]
    TooManyRedirects,
    #[error("the server answered HTTP {status} for {url}")]
    HttpStatus { status: u16, url: String },
    #[error("{0}")]
    Storage(String),
    /// Network trouble, timeouts, 5xx, 429: worth retrying.
    #[error("fetch failed, will retry: {0}")]
    Transient(String),
}

impl FetchError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "source-not-found",
            Self::Denied(_) => "source-denied",
            Self::ForbiddenAddress { .. } => "forbidden-address",
            Self::UnknownHost(_) => "unknown-host",
            Self::TooLarge { .. } => "file-too-large",
            Self::InvalidUrl(_) => "invalid-source",
            Self::TooManyRedirects => "too-many-redirects",
            Self::HttpStatus { .. } => "source-http-error",
            Self::Storage(_) => "source-error",
            Self::Transient(_) => "fetch-unavailable",
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
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
    allow: Vec<IpNet>,
    allow_http: bool,
    max_bytes: u64,
    timeout: Duration,
}

impl FetchStage {
    pub fn new(
        objects: ObjectStore,
        allow: Vec<IpNet>,
        allow_http: bool,
        max_bytes: u64,
        timeout: Duration,
    ) -> Self {
        Self {
            objects,
            allow,
            allow_http,
            max_bytes,
            timeout,
        }
    }

    pub async fn run(&self, source: &AudioSource) -> Result<Vec<u8>, FetchError> {
        match source {
            AudioSource::S3 { bucket, key } => {
                Ok(self.objects.get(bucket, key, self.max_bytes).await?)
            }
            AudioSource::Url(url) => self.fetch_url(url.clone()).await,
        }
    }

    async fn fetch_url(&self, mut url: Url) -> Result<Vec<u8>, FetchError> {
        for _ in 0..=MAX_REDIRECTS {
            match url.scheme() {
                "https" => {}
                "http" if self.allow_http => {}
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
            let addr = self.resolve_checked(&host, port).await?;
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(self.timeout)
                .connect_timeout(Duration::from_secs(10))
                .resolve(&host, addr)
                .no_proxy()
                .build()
                .map_err(|e| FetchError::Transient(format!("HTTP client: {e}")))?;
            let response = client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| FetchError::Transient(format!("{url}: {e}")))?;
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
            match status.as_u16() {
                200..=299 => return self.read_body(response).await,
                404 | 410 => return Err(FetchError::NotFound(format!("HTTP {status} for {url}"))),
                401 | 403 => return Err(FetchError::Denied(format!("HTTP {status} for {url}"))),
                408 | 429 | 500..=599 => {
                    return Err(FetchError::Transient(format!("HTTP {status} for {url}")))
                }
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

    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, FetchError> {
        let limit = self.max_bytes;
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(FetchError::TooLarge { limit });
        }
        let mut data = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Transient(format!("reading the body: {e}")))?
        {
            if (data.len() + chunk.len()) as u64 > limit {
                return Err(FetchError::TooLarge { limit });
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }

    /// Resolves `host` and returns an address to connect to, refusing the host if any of
    /// its addresses is non-public and not allow-listed.
    async fn resolve_checked(&self, host: &str, port: u16) -> Result<SocketAddr, FetchError> {
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| FetchError::UnknownHost(host.to_string()))?
                .collect(),
        };
        let first = *addrs
            .first()
            .ok_or_else(|| FetchError::UnknownHost(host.to_string()))?;
        for addr in &addrs {
            if !is_public(addr.ip()) && !self.allow.iter().any(|net| net.contains(&addr.ip())) {
                return Err(FetchError::ForbiddenAddress {
                    host: host.to_string(),
                    addr: addr.ip(),
                });
            }
        }
        Ok(first)
    }
}

/// Whether an address is on the public internet (not private, loopback, link-local,
/// shared, multicast, documentation, benchmarking or reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 to anything
                && v6 != Ipv6Addr::UNSPECIFIED
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
