//! IP rules per gateway API and the client address they are checked against.
//!
//! The client is the socket peer. Only when the peer is a configured trusted proxy is
//! `X-Forwarded-For` read, walked from the right (the entry the nearest proxy appended) past
//! trusted hops; the first untrusted entry is the client. Anything malformed in the header means
//! the header cannot be trusted at all, and the peer address is used: a spoofed or garbled header
//! never moves the client somewhere an allow-list admits.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Allow and block lists (CIDR, IPv4 and IPv6). Block wins; an empty allow list admits all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRules {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block: Vec<IpNet>,
}

impl IpRules {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.block.is_empty()
    }

    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.block.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is that IPv4 address: rules written for
/// one spelling hold for the other.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address: the peer, or — when the peer is a trusted proxy — the rightmost
/// `X-Forwarded-For` entry that is not itself trusted. `forwarded` yields the raw values of every
/// `X-Forwarded-For` header in the order received.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a [u8]>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in forwarded {
        let Ok(text) = std::str::from_utf8(value) else {
            return peer;
        };
        for entry in text.split(',') {
            match parse_entry(entry) {
                Some(ip) => hops.push(ip),
                None => return peer,
            }
            if hops.len() > MAX_HOPS {
                return peer;
            }
        }
    }
    let mut client = peer;
    for ip in hops.into_iter().rev() {
        client = ip;
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    client
}

/// More entries than any real proxy chain has: treated as malformed.
const MAX_HOPS: usize = 64;

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`). Nothing else is accepted.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_matches(|c| c == ' ' || c == '\t');
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff<'a>(values: &'a [&'a str]) -> impl Iterator<Item = &'a [u8]> {
        values.iter().map(|v| v.as_bytes())
    }

    #[test]
    fn block_wins_and_an_empty_allow_list_admits_all() {
        let r = IpRules {
            allow: nets(&["10.0.0.0/8", "2001:db8::/32"]),
            block: nets(&["10.6.6.0/24"]),
        };
        assert!(r.admits(ip("10.1.2.3")));
        assert!(!r.admits(ip("10.6.6.7")));
        assert!(!r.admits(ip("192.0.2.1")));
        assert!(r.admits(ip("2001:db8::5")));
        assert!(!r.admits(ip("2001:db9::5")));
        // The mapped spelling of a blocked address is blocked too.
        assert!(!r.admits(ip("::ffff:10.6.6.7")));
        assert!(r.admits(ip("::ffff:10.1.1.1")));
        let open = IpRules {
            allow: vec![],
            block: nets(&["203.0.113.0/24"]),
        };
        assert!(open.admits(ip("198.51.100.1")));
        assert!(!open.admits(ip("203.0.113.9")));
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let got = client_ip(ip("198.51.100.7"), xff(&["10.0.0.1"]), &[]);
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_another_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_ip(ip("198.51.100.7"), xff(&["10.0.0.1"]), &trusted);
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn walks_from_the_right_past_trusted_hops() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client prepended a spoofed entry; the proxies appended the real one.
        let got = client_ip(
            ip("10.0.0.2"),
            xff(&["6.6.6.6, 203.0.113.5", "10.0.0.9"]),
            &trusted,
        );
        assert_eq!(got, ip("203.0.113.5"));
        let ported = client_ip(ip("10.0.0.2"), xff(&["[2001:db8::1]:443"]), &trusted);
        assert_eq!(ported, ip("2001:db8::1"));
        let with_port = client_ip(ip("10.0.0.2"), xff(&["203.0.113.5:5555"]), &trusted);
        assert_eq!(with_port, ip("203.0.113.5"));
    }

    #[test]
    fn all_trusted_means_the_leftmost_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_ip(ip("10.0.0.2"), xff(&["10.1.1.1, 10.2.2.2"]), &trusted);
        assert_eq!(got, ip("10.1.1.1"));
        let none = client_ip(ip("10.0.0.2"), std::iter::empty(), &trusted);
        assert_eq!(none, ip("10.0.0.2"));
    }

    #[test]
    fn malformed_headers_fall_back_to_the_peer() {
        let trusted = nets(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        for bad in [
            "unknown",
            "203.0.113.5, garbage",
            "203.0.113.5,,",
            "1.2.3.4.5",
            "203.0.113.5; drop table",
            "",
            "0177.0.0.1",
        ] {
            assert_eq!(client_ip(peer, xff(&[bad]), &trusted), peer, "{bad:?}");
        }
        let binary: &[&[u8]] = &[b"203.0.113.5\xff"];
        assert_eq!(client_ip(peer, binary.iter().copied(), &trusted), peer);
        let long = vec!["10.9.9.9"; 100].join(",");
        assert_eq!(client_ip(peer, xff(&[&long]), &trusted), peer);
    }

    proptest! {
        /// Whatever an untrusted client writes in the header, it is never believed.
        #[test]
        fn an_untrusted_peer_is_always_the_client(a: u32, header in "\\PC{0,64}") {
            let peer = IpAddr::V4(std::net::Ipv4Addr::from(a));
            let trusted = nets(&["10.0.0.0/8"]);
            prop_assume!(!is_trusted(peer, &trusted));
            prop_assert_eq!(client_ip(peer, xff(&[&header]), &trusted), peer);
        }

        /// With a trusted peer, the answer is the peer or an address that appears in the header.
        #[test]
        fn the_answer_comes_from_the_header_or_the_peer(header in "[0-9., :]{0,64}") {
            let peer = ip("10.0.0.2");
            let trusted = nets(&["10.0.0.0/8"]);
            let got = client_ip(peer, xff(&[&header]), &trusted);
            prop_assert!(got == peer || header.contains(&got.to_string()));
        }
    }
}
