//! The egress guard: every server-side fetch (provider base URLs an admin set, JWKS URLs,
//! hooks) may reach public addresses only, unless the operator allow-listed a range for
//! self-hosted models (`GATEWAY_EGRESS_ALLOW`). Cloud metadata addresses are never reachable.
//!
//! The guard sits in the connector, below any URL handling: a host name is resolved once and
//! refused if *any* of its addresses is refused (a DNS answer mixing public and private
//! addresses is a rebinding attempt); the connection then goes to exactly the addresses checked.
//! IP-literal hosts skip DNS in hyper's connector, so they are checked on the URI first. Odd
//! spellings (`2130706433`, `0x7f.1`, `0177.0.0.1`) are not literals to `http::Uri`; the system
//! resolver turns them into addresses, which are then checked like any other answer.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which addresses the gateway may connect to beyond the public internet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<IpNet>,
}

/// Why a connection was not made. Its `Display` names the address and its class, for the
/// operator's log; consumers get a message without the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub ip: IpAddr,
    pub class: &'static str,
    /// Metadata endpoints: refused whatever the allow list says.
    pub never: bool,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.never {
            write!(
                f,
                "egress to {} refused: {}, never allowed",
                self.ip, self.class
            )
        } else {
            write!(
                f,
                "egress to {} refused: {} (allow it with GATEWAY_EGRESS_ALLOW)",
                self.ip, self.class
            )
        }
    }
}

impl std::error::Error for Refusal {}

impl EgressPolicy {
    /// A policy that also allows `nets` (a metadata address stays refused).
    pub fn allowing(nets: Vec<IpNet>) -> EgressPolicy {
        EgressPolicy { allow: nets }
    }

    /// A comma-separated list of CIDRs or bare addresses (`/32`, `/128`).
    pub fn parse_allow(s: &str) -> Result<EgressPolicy, String> {
        let mut allow = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = match part.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => part
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("'{part}' is not a CIDR (10.0.0.0/8) or an address"))?,
            };
            allow.push(net.trunc());
        }
        Ok(EgressPolicy { allow })
    }

    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether the gateway may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(ip);
        let Some((class, never)) = classify(ip) else {
            return Ok(());
        };
        if !never && self.allow.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        Err(Refusal { ip, class, never })
    }
}

/// IPv4-mapped IPv6 addresses are the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The class of a non-public address, and whether it is never allowed.
fn classify(ip: IpAddr) -> Option<(&'static str, bool)> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, DigitalOcean, …
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

fn classify_v4(ip: Ipv4Addr) -> Option<(&'static str, bool)> {
    if METADATA_V4.contains(&ip) {
        return Some(("a cloud metadata address", true));
    }
    let [a, b, c, _] = ip.octets();
    let class = match (a, b, c) {
        (0, _, _) => "an unspecified address",
        (10, _, _) => "a private address",
        (100, 64..=127, _) => "a shared (CGNAT) address",
        (127, _, _) => "a loopback address",
        (169, 254, _) => "a link-local address",
        (172, 16..=31, _) => "a private address",
        (192, 0, 0) => "an IETF protocol address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (192, 168, _) => "a private address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved address",
        _ => return None,
    };
    Some((class, false))
}

fn classify_v6(ip: Ipv6Addr) -> Option<(&'static str, bool)> {
    if METADATA_V6.contains(&ip) {
        return Some(("a cloud metadata address", true));
    }
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(("an unspecified address", false));
    }
    if ip.is_loopback() {
        return Some(("a loopback address", false));
    }
    // IPv6 forms that carry an IPv4 address: judged by the IPv4 address inside.
    // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) carry it in the low 32 bits,
    // 6to4 (2002:aabb:ccdd::) right after its prefix.
    let bits = u128::from(ip);
    let embedded = if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(Ipv4Addr::from((bits & 0xffff_ffff) as u32))
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32))
    } else {
        None
    };
    if let Some(v4) = embedded {
        return Some(match classify_v4(v4) {
            Some((class, never)) => (class, never),
            // A public IPv4 address behind a transition prefix: the relay decides where it
            // goes, which the guard cannot see.
            None => ("an IPv4-embedding transition address", false),
        });
    }
    let class = match s[0] {
        0xfc00..=0xfdff => "a unique-local (private) address",
        0xfe80..=0xfebf => "a link-local address",
        0xfec0..=0xfeff => "a site-local address",
        0xff00..=0xffff => "a multicast address",
        0x2001 if s[1] == 0x0db8 => "a documentation address",
        0x2001 if s[1] == 0 => "a Teredo address",
        0x0100 if s[1..4] == [0, 0, 0] => "a discard-only address",
        _ => return None,
    };
    Some((class, false))
}

/// The system resolver, with every answer checked against the policy.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<EgressPolicy>,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err("the host resolved to no address".into());
            }
            for a in &addrs {
                policy.check(a.ip()).map_err(|r| {
                    tracing::warn!(host = name.as_str(), refusal = %r, "egress refused");
                    Box::new(r) as BoxError
                })?;
            }
            Ok(addrs.into_iter())
        })
    }
}

/// hyper's connector behind the guard: IP-literal hosts are checked here (they skip DNS),
/// names by [`GuardedResolver`].
#[derive(Clone)]
pub struct GuardedConnector {
    inner: HttpConnector<GuardedResolver>,
    policy: Arc<EgressPolicy>,
}

impl GuardedConnector {
    pub fn new(
        policy: EgressPolicy,
        configure: impl FnOnce(&mut HttpConnector<GuardedResolver>),
    ) -> Self {
        let policy = Arc::new(policy);
        let mut inner = HttpConnector::new_with_resolver(GuardedResolver {
            policy: policy.clone(),
        });
        configure(&mut inner);
        GuardedConnector { inner, policy }
    }
}

/// The host of `uri` as an address, if it is an IP literal (`[::1]` brackets removed).
fn literal_host(uri: &Uri) -> Option<IpAddr> {
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

impl tower::Service<Uri> for GuardedConnector {
    type Response = <HttpConnector<GuardedResolver> as tower::Service<Uri>>::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Some(ip) = literal_host(&uri)
            && let Err(r) = self.policy.check(ip)
        {
            tracing::warn!(refusal = %r, "egress refused");
            return Box::pin(std::future::ready(Err(Box::new(r) as BoxError)));
        }
        let fut = self.inner.call(uri);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests;
