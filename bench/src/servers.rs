//! The two processes under test, started from the release binaries, each pinned to one core
//! with `taskset`, listening on a free 127.0.0.1 port that they report on their first stdout
//! line. Dropping a [`Server`] kills it and removes its scratch directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

/// How long a process may take to print its listening address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The key the emulator expects and the gateway's provider sends.
pub const EMU_KEY: &str = "bench-emulator-key";
/// The model the gateway config exposes.
pub const GATEWAY_MODEL: &str = "bench-model";
/// The upstream model the emulator is asked for directly.
pub const UPSTREAM_MODEL: &str = "gpt-4o-mini";
/// The gateway's admin token in every scenario.
const ADMIN_TOKEN: &str = "bench-admin-token";

pub struct Server {
    pub addr: SocketAddr,
    /// The admin API's port (the gateway only).
    pub admin_port: Option<u16>,
    pub pid: u32,
    child: Child,
    scratch: PathBuf,
}

impl Server {
    /// `emulator --port 0 --chunks N --key K --threads 1 --record false` on `core`.
    pub fn emulator(bin: &Path, core: usize, chunks: usize) -> anyhow::Result<Server> {
        let scratch = scratch_dir("emulator")?;
        let mut cmd = pinned(&core.to_string(), bin);
        cmd.args([
            "--port",
            "0",
            "--chunks",
            &chunks.to_string(),
            "--key",
            EMU_KEY,
            "--threads",
            "1",
            "--record",
            "false",
        ]);
        spawn("emulator", cmd, scratch, |line| {
            line.strip_prefix("emulator listening on ")
                .map(str::to_string)
        })
    }

    /// `gateway start` on `core`, with a fresh data directory and a config file whose only model
    /// routes to the emulator at `upstream`.
    pub fn gateway(bin: &Path, core: usize, upstream: SocketAddr) -> anyhow::Result<Server> {
        Server::gateway_with(bin, &core.to_string(), upstream, "", |_| Ok(()))
    }

    /// `gateway start` on the cores `cpus` (a taskset list such as `0,1`), its config the
    /// bench's plus `extra_yaml`, after `prepare` has run on its empty data directory.
    pub fn gateway_with(
        bin: &Path,
        cpus: &str,
        upstream: SocketAddr,
        extra_yaml: &str,
        prepare: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Server> {
        let scratch = scratch_dir("gateway")?;
        let config = scratch.join("bench.yaml");
        std::fs::write(&config, gateway_config(upstream) + extra_yaml)
            .context("cannot write the gateway config")?;
        let data = scratch.join("data");
        std::fs::create_dir_all(&data).context("cannot create the data directory")?;
        prepare(&data)?;
        let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("cannot find a free port for the admin API")?
            .port();
        let mut cmd = pinned(cpus, bin);
        cmd.arg("start")
            .env("GATEWAY_PORT", "0")
            .env("GATEWAY_ADMIN_PORT", admin_port.to_string())
            .env("GATEWAY_BIND", "127.0.0.1")
            .env("GATEWAY_DATA_DIR", &data)
            .env("GATEWAY_CONFIG", &config)
            .env("GATEWAY_LOG", "warn")
            .env("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("EMU_KEY", EMU_KEY)
            .env("GATEWAY_EGRESS_ALLOW", "127.0.0.0/8")
            .env_remove("GATEWAY_DATABASE_URL")
            .env_remove("GATEWAY_DEV");
        // "gateway listening: data plane http://127.0.0.1:PORT/v1  admin http://…"
        let mut server = spawn("gateway", cmd, scratch, |line| {
            let rest = line.strip_prefix("gateway listening: data plane http://")?;
            rest.split_once("/v1").map(|(addr, _)| addr.to_string())
        })?;
        server.admin_port = Some(admin_port);
        Ok(server)
    }

    /// Issues a gateway key through the admin API on `127.0.0.1:admin_port`: the bench calls the
    /// gateway as a consumer does, so key auth is part of what it measures.
    pub async fn issue_key(admin_port: u16) -> anyhow::Result<String> {
        let (status, v) = admin(admin_port, "POST", "/admin/keys", br#"{"label":"bench"}"#).await?;
        if status != 201 {
            bail!("creating a gateway key failed: {status} {v}");
        }
        v["key"]
            .as_str()
            .map(str::to_string)
            .context("the key answer has no key")
    }

    /// The last lines of the process's stderr, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.scratch)
    }
}

/// One admin API call on `127.0.0.1:admin_port` with the bench's token: the status and the
/// JSON answer (`null` when the body is not JSON).
pub async fn admin(
    admin_port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", admin_port))
        .await
        .context("cannot reach the gateway's admin API")?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut resp = Vec::new();
    tokio::time::timeout(START_TIMEOUT, s.read_to_end(&mut resp))
        .await
        .context("the admin API did not answer")??;
    let text = String::from_utf8_lossy(&resp);
    let (head, json) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP answer: {head}"))?;
    Ok((status, serde_json::from_str(json).unwrap_or_default()))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A `SCHED_IDLE` busy loop pinned to one core: it runs only when nothing else wants the core,
/// so the core never halts. On a VM, waking a halted vCPU costs tens of microseconds per hop,
/// which would otherwise be counted as latency.
pub struct Spinner {
    pub pid: u32,
    child: Child,
}

impl Spinner {
    pub fn start(core: usize) -> anyhow::Result<Spinner> {
        let child = Command::new("taskset")
            .args([
                "-c",
                &core.to_string(),
                "chrt",
                "-i",
                "0",
                "sh",
                "-c",
                "while :; do :; done",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the idle spinner (taskset, chrt)")?;
        Ok(Spinner {
            pid: child.id(),
            child,
        })
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway_config(upstream: SocketAddr) -> String {
    format!(
        "providers:\n  - {{name: emu, kind: openai, api_key: \"${{EMU_KEY}}\", base_url: \"http://{upstream}/v1\"}}\n\
         models:\n  - name: {GATEWAY_MODEL}\n    targets: [{{provider: emu, model: {UPSTREAM_MODEL}}}]\n"
    )
}

/// `taskset -c CPUS BIN` (taskset execs the binary, so the child's pid is the server's).
fn pinned(cpus: &str, bin: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpus).arg(bin);
    cmd
}

fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "ai-gateway-bench-{}-{name}-{n}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn log_tail(scratch: &Path) -> String {
    let text = std::fs::read_to_string(scratch.join("stderr.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Starts the command (stderr to `scratch/stderr.log`) and waits for the stdout line from which
/// `addr_of` reads the listening address. Stdout is drained afterwards so the child never blocks.
fn spawn(
    name: &'static str,
    mut cmd: Command,
    scratch: PathBuf,
    addr_of: fn(&str) -> Option<String>,
) -> anyhow::Result<Server> {
    let log = std::fs::File::create(scratch.join("stderr.log"))
        .context("cannot create the stderr log")?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name} (is taskset installed?)"))?;
    let pid = child.id();
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        bail!("{name}: no stdout pipe");
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && let Some(addr) = addr_of(&line) {
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let server = |addr| Server {
        addr,
        admin_port: None,
        pid,
        child,
        scratch,
    };
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(addr) => match addr.parse::<SocketAddr>() {
            Ok(a) => Ok(server(a)),
            Err(e) => {
                let s = server(SocketAddr::from(([127, 0, 0, 1], 0)));
                bail!(
                    "{name} printed an unreadable address '{addr}': {e}\n{}",
                    s.log_tail()
                )
            }
        },
        Err(_) => {
            let s = server(SocketAddr::from(([127, 0, 0, 1], 0)));
            bail!(
                "{name} did not report its address within {START_TIMEOUT:?}; its stderr ends with:\n{}",
                s.log_tail()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_routes_the_bench_model_to_the_emulator() {
        let yaml = gateway_config(SocketAddr::from(([127, 0, 0, 1], 5555)));
        assert!(
            yaml.contains(r#"base_url: "http://127.0.0.1:5555/v1""#),
            "{yaml}"
        );
        assert!(yaml.contains(r#"api_key: "${EMU_KEY}""#), "{yaml}");
        assert!(
            yaml.contains(
                "- name: bench-model\n    targets: [{provider: emu, model: gpt-4o-mini}]"
            ),
            "{yaml}"
        );
    }
}
