//! Shared setup of the Redis suites: the test server's URL (with the store suite's policy: with
//! `CI` set, a missing URL fails instead of skipping), private servers for tests that stop
//! Redis, and limiters with their own key prefix so tests never share state.
#![allow(dead_code, reason = "each test binary uses part of this module")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use limits::{RedisConfig, RedisLimiter};

pub const URL_VAR: &str = "GATEWAY_TEST_REDIS_URL";

/// The shared test server, or `None` (with a notice) outside CI when it is not configured.
pub fn redis_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{URL_VAR} is not set but CI is: the Redis half of the limits suite must run \
             (start a server with scripts/test-redis.sh)"
        ),
        _ => {
            eprintln!(
                "notice: {URL_VAR} is not set; skipping a Redis test \
                 (eval \"$(scripts/test-redis.sh)\" to include them)"
            );
            None
        }
    }
}

/// A prefix no other test uses.
pub fn prefix() -> String {
    format!("test:{}", uuid_like())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn config(url: &str, prefix: &str) -> RedisConfig {
    RedisConfig {
        prefix: prefix.to_owned(),
        probe_interval: Duration::from_millis(100),
        heartbeat_interval: Duration::from_millis(200),
        ..RedisConfig::new(url)
    }
}

pub fn limiter(config: RedisConfig) -> RedisLimiter {
    RedisLimiter::new(config).unwrap_or_else(|e| panic!("limiter: {e}"))
}

pub async fn client(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap_or_else(|e| panic!("client: {e}"));
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| panic!("connect timed out"))
    .unwrap_or_else(|e| panic!("connect: {e}"))
}

/// A redis-server of this test's own, on a free loopback port, killed on drop.
pub struct PrivateServer {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateServer {
    /// `None` (with a notice) when there is no redis-server outside CI; fails under CI.
    pub fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var_os("CI").is_some() {
                panic!("redis-server not found but CI is set (scripts/test-redis.sh installs it)");
            }
            eprintln!("notice: no redis-server on PATH; skipping a degraded-mode test");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("free port: {e}"));
        let mut server = PrivateServer { port, child: None };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}
