use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::http::{FetchError, client};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn every_non_public_range_is_refused_by_default() {
    let p = EgressPolicy::default();
    for a in [
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.255.0.1",
        "169.254.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "ff02::1",
        "2001:db8::1",
        "2001:0:4136:e378::1",
        "100::1",
        // IPv6 forms carrying a private IPv4 address.
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "::10.1.2.3",
        "64:ff9b::a00:1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "2002:a00:1::1",
    ] {
        assert!(p.check(ip(a)).is_err(), "{a} was allowed");
    }
}

#[test]
fn public_addresses_pass() {
    let p = EgressPolicy::default();
    for a in [
        "1.1.1.1",
        "8.8.8.8",
        "104.18.0.1",
        "172.15.255.255",
        "172.32.0.1",
        "100.63.255.255",
        "100.128.0.1",
        "192.167.1.1",
        "2606:4700::1111",
        "2a00:1450:4001::200e",
    ] {
        assert_eq!(p.check(ip(a)), Ok(()), "{a}");
    }
}

#[test]
fn metadata_addresses_are_refused_even_when_allow_listed() {
    let wide = EgressPolicy::parse_allow("0.0.0.0/0, ::/0, 169.254.0.0/16").unwrap();
    for a in [
        "169.254.169.254",
        "169.254.170.2",
        "100.100.100.200",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::",
    ] {
        let r = wide.check(ip(a)).unwrap_err();
        assert!(r.never, "{a}: {r}");
        assert!(r.to_string().contains("never allowed"), "{r}");
    }
    // The rest of link-local may be allowed on purpose.
    assert_eq!(wide.check(ip("169.254.10.10")), Ok(()));
}

#[test]
fn an_allow_list_opens_exactly_its_ranges() {
    let p = EgressPolicy::parse_allow("127.0.0.0/8,10.1.0.0/16, fd00::1").unwrap();
    assert_eq!(p.check(ip("127.0.0.1")), Ok(()));
    assert_eq!(
        p.check(ip("::ffff:127.0.0.1")),
        Ok(()),
        "mapped form of an allowed address"
    );
    assert_eq!(p.check(ip("10.1.2.3")), Ok(()));
    assert_eq!(p.check(ip("fd00::1")), Ok(()));
    assert!(p.check(ip("10.2.0.1")).is_err());
    assert!(p.check(ip("fd00::2")).is_err());
    let r = p.check(ip("192.168.0.1")).unwrap_err();
    assert!(r.to_string().contains("GATEWAY_EGRESS_ALLOW"), "{r}");
    assert!(EgressPolicy::parse_allow("10.0.0.0/33").is_err());
    assert!(EgressPolicy::parse_allow("localhost").is_err());
    assert_eq!(
        EgressPolicy::parse_allow(" ").unwrap(),
        EgressPolicy::default()
    );
}

proptest! {
    #[test]
    fn any_address_in_a_refused_v4_range_is_refused(
        net in prop::sample::select(vec![
            "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
            "172.16.0.0/12", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
        ]),
        host: u32,
        mapped: bool,
    ) {
        let net: ipnet::Ipv4Net = net.parse().unwrap();
        let bits = u32::from(net.network()) | (host & !u32::from(net.netmask()));
        let v4 = Ipv4Addr::from(bits);
        let addr = if mapped { IpAddr::V6(v4.to_ipv6_mapped()) } else { IpAddr::V4(v4) };
        prop_assert!(EgressPolicy::default().check(addr).is_err());
    }
}

/// A loopback HTTP server answering `reply` to every request; counts connections.
async fn server(reply: &'static str) -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, n)
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"keys\":[]}";

#[tokio::test]
async fn loopback_in_every_spelling_is_refused_before_connecting() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (port, seen) = server(OK).await;
    let c = client(EgressPolicy::default()).unwrap();
    for host in [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "0x7f.0.0.1",
        "127.000.000.001",
    ] {
        let url = format!("http://{host}:{port}/jwks.json");
        let r = c.get_limited(&url, Duration::from_secs(2), 1024).await;
        assert!(r.is_err(), "{url} was fetched");
        if let Err(FetchError::Refused(refusal)) = &r {
            assert!(refusal.to_string().contains("loopback"), "{refusal}");
        }
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a refused host was connected to"
    );
}

#[tokio::test]
async fn an_allowed_range_connects_and_limits_still_hold() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (port, seen) = server(OK).await;
    let c = client(EgressPolicy::parse_allow("127.0.0.0/8").unwrap()).unwrap();
    let body = c
        .get_limited(
            &format!("http://127.0.0.1:{port}/j"),
            Duration::from_secs(2),
            1024,
        )
        .await
        .unwrap();
    assert_eq!(&body[..], b"{\"keys\":[]}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // The cap holds while reading.
    let r = c
        .get_limited(
            &format!("http://127.0.0.1:{port}/j"),
            Duration::from_secs(2),
            5,
        )
        .await;
    assert!(matches!(r, Err(FetchError::TooLarge(5))), "{r:?}");
    // IPv6 loopback is not in 127.0.0.0/8.
    let r = c
        .get_limited(
            &format!("http://[::1]:{port}/j"),
            Duration::from_secs(2),
            1024,
        )
        .await;
    assert!(matches!(r, Err(FetchError::Refused(_))), "{r:?}");
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_not_followed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (target_port, target_seen) = server(OK).await;
    let redirect: &'static str = Box::leak(
        format!(
            "HTTP/1.1 302 Found\r\nlocation: http://10.0.0.1:{target_port}/ \r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .into_boxed_str(),
    );
    let (port, seen) = server(redirect).await;
    let c = client(EgressPolicy::parse_allow("127.0.0.0/8").unwrap()).unwrap();
    let r = c
        .get_limited(
            &format!("http://127.0.0.1:{port}/j"),
            Duration::from_secs(2),
            1024,
        )
        .await;
    assert!(matches!(r, Err(FetchError::Status(302))), "{r:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(target_seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn metadata_is_refused_with_an_allow_all_policy_without_any_connection() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = client(EgressPolicy::parse_allow("0.0.0.0/0,::/0").unwrap()).unwrap();
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "http://2852039166/",
    ] {
        let r = c.get_limited(url, Duration::from_secs(2), 1024).await;
        match r {
            Err(FetchError::Refused(refusal)) => assert!(refusal.never, "{url}: {refusal}"),
            other => panic!("{url}: {other:?}"),
        }
    }
}
