//! Outbound connections to addresses clients name (audio URLs, webhook targets): which
//! addresses are public, and the checks that keep a client from making voxq reach its
//! private network (SSRF).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use url::Url;

use crate::config::port_allowed;

/// Why a target was refused. Messages are what a client reads: a resolved address is
/// only in [`TargetError::detail`].
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{0}")]
    InvalidUrl(String),
    #[error("port {port} is not allowed")]
    ForbiddenPort { port: u16 },
    #[error("its host is not a public address")]
    ForbiddenAddress { host: String, addr: IpAddr },
    #[error("cannot resolve host '{0}'")]
    UnknownHost(String),
}

impl TargetError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "invalid-url",
            Self::ForbiddenPort { .. } => "forbidden-port",
            Self::ForbiddenAddress { .. } => "forbidden-address",
            Self::UnknownHost(_) => "unknown-host",
        }
    }

    /// The message with the resolved address, for the log.
    pub fn detail(&self) -> String {
        match self {
            Self::ForbiddenAddress { host, addr } => format!("{self} ('{host}' is {addr})"),
            _ => self.to_string(),
        }
    }
}

/// Which targets may be reached: public addresses on port 443 (and 80 with
/// `allow_http`), plus the listed networks and ports.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    pub allow: Vec<IpNet>,
    pub allow_http: bool,
    pub allow_ports: Vec<u16>,
}

impl TargetPolicy {
    /// The checks that need no name resolution: scheme, host present, port; and a
    /// literal IP address must be allowed. Returns the host (brackets removed) and port.
    pub fn check_url(&self, url: &Url) -> Result<(String, u16), TargetError> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => {
                return Err(TargetError::InvalidUrl(format!(
                    "scheme '{other}' is not allowed (use https)"
                )))
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::InvalidUrl(
                "credentials in the URL are not allowed".into(),
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| TargetError::InvalidUrl("the URL has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        if !port_allowed(port, self.allow_http, &self.allow_ports) {
            return Err(TargetError::ForbiddenPort { port });
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.check_ip(&host, ip)?;
        }
        Ok((host, port))
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), TargetError> {
        if is_public(ip) || self.allow.iter().any(|net| net.contains(&ip)) {
            Ok(())
        } else {
            Err(TargetError::ForbiddenAddress {
                host: host.to_string(),
                addr: ip,
            })
        }
    }

    /// Resolves `host` and returns the address to connect to (pin the connection to
    /// it, so a second DNS answer cannot differ), refusing the host if any of its
    /// addresses is not allowed.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, TargetError> {
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| TargetError::UnknownHost(host.to_string()))?
                .collect(),
        };
        let first = *addrs
            .first()
            .ok_or_else(|| TargetError::UnknownHost(host.to_string()))?;
        for addr in &addrs {
            self.check_ip(host, addr.ip())?;
        }
        Ok(first)
    }

    /// [`TargetPolicy::check_url`] then [`TargetPolicy::resolve`].
    pub async fn check(&self, url: &Url) -> Result<SocketAddr, TargetError> {
        let (host, port) = self.check_url(url)?;
        self.resolve(&host, port).await
    }
}

/// Whether an address is on the public internet (not private, loopback, link-local,
/// shared, multicast, documentation, benchmarking, reserved, or a tunnel or translation
/// prefix that embeds an IPv4 address, which could lead anywhere).
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
                || s[..6] == [0; 6] // IPv4-compatible ::a.b.c.d (deprecated), :: and ::1
                || s[..6] == [0, 0, 0, 0, 0xffff, 0] // IPv4-translated ::ffff:0:a.b.c.d
                || s[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32
                || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0) // benchmarking 2001:2::/48
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[0] == 0x2002 // 6to4 2002::/16
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
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}
