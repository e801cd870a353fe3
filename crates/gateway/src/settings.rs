//! Process settings from the environment (DESIGN §1), parsed and checked once at start.

use std::path::PathBuf;

use anyhow::{Context, bail};

#[derive(Debug, Clone)]
pub struct Settings {
    pub port: u16,
    pub admin_port: u16,
    pub bind: String,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub config_file: Option<PathBuf>,
    pub max_body_bytes: usize,
    /// How long a shutdown waits for in-flight requests and streams.
    pub shutdown_grace: std::time::Duration,
    /// Wallet holds older than this are released by the sweeper (their request vanished).
    pub hold_timeout: std::time::Duration,
    /// `GATEWAY_LOG_RETENTION`: request-log rows older than this many days are deleted.
    pub log_retention_days: u32,
    /// `GATEWAY_LOG_QUEUE`: request-log rows that may wait for the writer before rows drop.
    pub log_queue: usize,
    /// `GATEWAY_REQUEST_LOG=off` turns the request log (rows, tail, metrics) off.
    pub request_log: bool,
    /// After this long without a first token a stream is committed and kept alive with SSE
    /// comments at this interval.
    pub sse_keepalive: std::time::Duration,
    /// `GATEWAY_KEY_PREFIX`: the prefix of new gateway keys.
    pub key_prefix: String,
    /// `GATEWAY_TRUSTED_PROXIES`: CIDRs whose `X-Forwarded-For` entries are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `GATEWAY_EGRESS_ALLOW`: private ranges outbound fetches may reach.
    pub egress: providers::egress::EgressPolicy,
    /// `GATEWAY_DEV=1`.
    pub dev: bool,
    /// `GATEWAY_KB_MAX_UPLOAD_MB` (default 5): the largest document a knowledge base accepts.
    pub kb_max_upload_bytes: usize,
    /// `GATEWAY_KB_WORKERS` (default 1): documents indexed at once.
    pub kb_workers: usize,
    /// `GATEWAY_MODELS_DIR` (default `GATEWAY_DATA_DIR/models`): the local models.
    pub models_dir: PathBuf,
    /// `GATEWAY_LOCAL_MODELS=off` removes the implicit `local` provider.
    pub local_models: bool,
    /// `GATEWAY_MODELS_AUTO_PULL=off`: a gateway with no provider does not download its local
    /// chat model at start.
    pub models_auto_pull: bool,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A switch that is on unless set to off.
fn on_off(name: &str) -> anyhow::Result<bool> {
    match var(name).as_deref().map(str::trim) {
        None | Some("on" | "1" | "true") => Ok(true),
        Some("off" | "0" | "false") => Ok(false),
        Some(_) => bail!("{name} must be on or off"),
    }
}

fn port(name: &str, default: u16) -> anyhow::Result<u16> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name} must be a port number, got '{v}'")),
    }
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Settings> {
        let data_dir = match var("GATEWAY_DATA_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let home = var("HOME").context("GATEWAY_DATA_DIR is unset and so is HOME")?;
                PathBuf::from(home).join(".ai-gateway")
            }
        };
        let database_url = match var("GATEWAY_DATABASE_URL") {
            Some(u) => {
                if !(u.starts_with("sqlite:")
                    || u.starts_with("postgres://")
                    || u.starts_with("postgresql://"))
                {
                    bail!("GATEWAY_DATABASE_URL must start with sqlite: or postgres://");
                }
                u
            }
            None => format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("gateway.db").display()
            ),
        };
        let max_body_bytes = match var("GATEWAY_MAX_BODY_BYTES") {
            None => pipeline::Limits::default().max_body_bytes,
            Some(v) => v
                .trim()
                .parse()
                .context("GATEWAY_MAX_BODY_BYTES must be a number of bytes")?,
        };
        let shutdown_grace = match var("GATEWAY_SHUTDOWN_GRACE") {
            None => std::time::Duration::from_secs(30),
            Some(v) => std::time::Duration::from_secs(
                v.trim()
                    .parse()
                    .context("GATEWAY_SHUTDOWN_GRACE must be a number of seconds")?,
            ),
        };
        let hold_timeout = match var("GATEWAY_HOLD_TIMEOUT") {
            None => std::time::Duration::from_secs(15 * 60),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(secs) if (1..=86_400).contains(&secs) => std::time::Duration::from_secs(secs),
                _ => bail!("GATEWAY_HOLD_TIMEOUT must be a number of seconds (1 to 86400)"),
            },
        };
        let log_retention_days = match var("GATEWAY_LOG_RETENTION") {
            None => 30,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(d) if (1..=3650).contains(&d) => d,
                _ => bail!("GATEWAY_LOG_RETENTION must be a number of days (1 to 3650)"),
            },
        };
        let log_queue = match var("GATEWAY_LOG_QUEUE") {
            None => pipeline::Limits::default().log_queue,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=10_000_000).contains(&n) => n,
                _ => bail!("GATEWAY_LOG_QUEUE must be a number of rows (1 to 10000000)"),
            },
        };
        let request_log = on_off("GATEWAY_REQUEST_LOG")?;
        let sse_keepalive = match var("GATEWAY_SSE_KEEPALIVE_MS") {
            None => pipeline::Limits::default().sse_keepalive,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(ms) if (10..=600_000).contains(&ms) => std::time::Duration::from_millis(ms),
                _ => bail!(
                    "GATEWAY_SSE_KEEPALIVE_MS must be a number of milliseconds (10 to 600000)"
                ),
            },
        };
        let key_prefix =
            var("GATEWAY_KEY_PREFIX").unwrap_or_else(|| access::keys::DEFAULT_PREFIX.into());
        access::keys::validate_prefix(&key_prefix)
            .map_err(|e| anyhow::anyhow!("GATEWAY_KEY_PREFIX: {e}"))?;
        let trusted_proxies = match var("GATEWAY_TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(|c| {
                    let c = c.trim();
                    c.parse::<ipnet::IpNet>()
                        .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .with_context(|| {
                            format!("GATEWAY_TRUSTED_PROXIES: '{c}' is not a CIDR or address")
                        })
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let egress = providers::egress::EgressPolicy::parse_allow(
            &var("GATEWAY_EGRESS_ALLOW").unwrap_or_default(),
        )
        .map_err(|e| anyhow::anyhow!("GATEWAY_EGRESS_ALLOW: {e}"))?;
        let kb_max_upload_bytes = match var("GATEWAY_KB_MAX_UPLOAD_MB") {
            None => 5 * 1024 * 1024,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=200).contains(&n) => n * 1024 * 1024,
                _ => bail!("GATEWAY_KB_MAX_UPLOAD_MB must be a number of megabytes (1 to 200)"),
            },
        };
        let kb_workers = match var("GATEWAY_KB_WORKERS") {
            None => 1,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (0..=16).contains(&n) => n,
                _ => bail!("GATEWAY_KB_WORKERS must be a number (0 to 16)"),
            },
        };
        let models_dir = var("GATEWAY_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("models"));
        let local_models = on_off("GATEWAY_LOCAL_MODELS")?;
        let models_auto_pull = on_off("GATEWAY_MODELS_AUTO_PULL")?;
        let s = Settings {
            models_dir,
            local_models,
            models_auto_pull,
            kb_max_upload_bytes,
            kb_workers,
            egress,
            key_prefix,
            trusted_proxies,
            dev: var("GATEWAY_DEV").is_some_and(|v| v == "1"),
            shutdown_grace,
            hold_timeout,
            log_retention_days,
            log_queue,
            request_log,
            sse_keepalive,
            port: port("GATEWAY_PORT", 4080)?,
            admin_port: port("GATEWAY_ADMIN_PORT", 4081)?,
            bind: var("GATEWAY_BIND").unwrap_or_else(|| "127.0.0.1".into()),
            data_dir,
            database_url,
            config_file: var("GATEWAY_CONFIG").map(PathBuf::from),
            max_body_bytes,
        };
        if s.port == s.admin_port && s.port != 0 {
            bail!(
                "GATEWAY_PORT and GATEWAY_ADMIN_PORT must differ (both are {})",
                s.port
            );
        }
        Ok(s)
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }
}
