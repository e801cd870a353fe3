//! `bench`: the gateway's load harness.
//!
//! It starts the release `emulator` (a fast OpenAI stand-in) and, per scenario, a fresh release
//! `gateway` in front of it, each pinned to a core with `taskset`; pins itself to the emulator's
//! core; then runs every scenario — {non-streaming, streaming} × each concurrency — twice:
//! straight at the emulator and through the gateway. It prints one Markdown report (throughput,
//! latency percentiles and what the gateway adds to them, the gateway's CPU time per request and
//! peak memory, how busy the load core was) and writes it to `bench/results/`.
//!
//! - [`load`]: the load generator (keep-alive connections, a warm-up and a measured window).
//! - [`scenario`]: one direct + gateway pair, with CPU sampled over the measured window.
//! - [`servers`]: starting, pinning and stopping the emulator and the gateway.
//! - [`procfs`]: CPU time and peak RSS from `/proc`.
//! - [`report`]: the machine description, the tables and the verdict on each target.
//!
//! Everything listens on 127.0.0.1; every wait is bounded.

mod load;
mod procfs;
mod report;
mod scenario;
mod servers;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};

use crate::load::{Mode, Target, Window};
use crate::scenario::{Outcome, Pids};
use crate::servers::{EMU_KEY, GATEWAY_MODEL, Server, Spinner, UPSTREAM_MODEL};

/// How long the gateway may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Load harness: the emulator directly and through the gateway"
)]
struct Args {
    /// Measured seconds per run [default: 5; --quick: 1].
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up seconds before each measured window [default: 2; --quick: 0.5].
    #[arg(long)]
    warmup: Option<f64>,
    /// Concurrent clients, comma-separated [default: 1,16,64,256; --quick: 1,64].
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Which modes to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "complete,stream")]
    modes: Vec<ModeArg>,
    /// Run the whole suite this many times and report, per scenario, the run with the median
    /// gateway throughput (and the range).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// A short smoke run; its report is printed but not written unless --write is given.
    #[arg(long)]
    quick: bool,
    /// Write the report even for a --quick run.
    #[arg(long)]
    write: bool,
    /// Do not write the report, only print it.
    #[arg(long, conflicts_with = "write")]
    no_write: bool,
    /// Words per emulator answer (one SSE event each when streaming).
    #[arg(long, default_value_t = 60)]
    chunks: usize,
    /// The core the gateway is pinned to.
    #[arg(long, default_value_t = 0)]
    gateway_core: usize,
    /// The core the emulator and the load generator share.
    #[arg(long, default_value_t = 1)]
    load_core: usize,
    /// Where the `gateway` and `emulator` binaries are [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The emulator binary [default: <bin-dir>/emulator].
    #[arg(long)]
    emulator_bin: Option<PathBuf>,
    /// The gateway binary [default: <bin-dir>/gateway].
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// Keep both cores from halting while idle (a SCHED_IDLE busy loop on each), so a VM's
    /// vCPU wake-up latency is not counted as gateway latency.
    #[arg(long)]
    keep_awake: bool,
    /// A line added to the report's setup section (e.g. what was patched for this run).
    #[arg(long)]
    note: Option<String>,
    /// Where the report goes [default: the bench crate's results/].
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// The file name's machine label [default: <nproc>core, plus -keep-awake if given].
    #[arg(long)]
    label: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Complete,
    Stream,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Complete => Mode::Complete,
            ModeArg::Stream => Mode::Stream,
        }
    }
}

/// The resolved run.
struct Plan {
    window: Window,
    repeat: usize,
    concurrency: Vec<usize>,
    modes: Vec<Mode>,
    settings: report::Settings,
    gateway_bin: PathBuf,
    emulator_bin: PathBuf,
    /// Where to write the report, if at all.
    results_dir: Option<PathBuf>,
    label: Option<String>,
}

impl Plan {
    fn from_args(a: Args) -> anyhow::Result<Plan> {
        let warmup = a.warmup.unwrap_or(if a.quick { 0.5 } else { 2.0 });
        let measure = a.duration.unwrap_or(if a.quick { 1.0 } else { 5.0 });
        if !(0.0..=600.0).contains(&warmup) || !(0.1..=600.0).contains(&measure) {
            bail!("--warmup must be within 0..600 s and --duration within 0.1..600 s");
        }
        let concurrency = a.concurrency.unwrap_or_else(|| {
            if a.quick {
                vec![1, 64]
            } else {
                vec![1, 16, 64, 256]
            }
        });
        if concurrency.iter().any(|c| !(1..=4096).contains(c)) {
            bail!("--concurrency values must be within 1..4096");
        }
        let bin_dir = match a.bin_dir {
            Some(d) => d,
            None => std::env::current_exe()?
                .parent()
                .map(Path::to_path_buf)
                .context("cannot tell where this binary is; pass --bin-dir")?,
        };
        let gateway_bin = a.gateway_bin.unwrap_or_else(|| bin_dir.join("gateway"));
        let emulator_bin = a.emulator_bin.unwrap_or_else(|| bin_dir.join("emulator"));
        for b in [&gateway_bin, &emulator_bin] {
            if !b.is_file() {
                bail!(
                    "{} not found: build it with `cargo build --release -p gateway -p testkit`",
                    b.display()
                );
            }
        }
        let write = !a.no_write && (!a.quick || a.write);
        let results_dir = write.then(|| {
            a.results_dir
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"))
        });
        if !(1..=20).contains(&a.repeat) {
            bail!("--repeat must be within 1..20");
        }
        Ok(Plan {
            repeat: a.repeat,
            window: Window {
                warmup: Duration::from_secs_f64(warmup),
                measure: Duration::from_secs_f64(measure),
            },
            concurrency,
            modes: a.modes.into_iter().map(Mode::from).collect(),
            settings: report::Settings {
                warmup_s: warmup,
                measure_s: measure,
                repeat: a.repeat,
                chunks: a.chunks,
                gateway_core: a.gateway_core,
                load_core: a.load_core,
                keep_awake: a.keep_awake,
                note: a.note,
                gateway_bin: gateway_bin.display().to_string(),
                emulator_bin: emulator_bin.display().to_string(),
            },
            gateway_bin,
            emulator_bin,
            results_dir,
            label: a.label,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let plan = Plan::from_args(Args::parse())?;
    // Before pinning: `nproc` counts the cores this process may use.
    let machine = report::Machine::describe();
    pin_self(plan.settings.load_core)?;
    // One thread: the load generator must fit on its core next to the emulator.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(plan, machine))
}

/// Pins this process (before any other thread exists) to `core`.
fn pin_self(core: usize) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset could not pin the harness to core {core}");
    }
    Ok(())
}

async fn run(plan: Plan, machine: report::Machine) -> anyhow::Result<()> {
    let ticks = procfs::clock_ticks();
    let emu = Server::emulator(
        &plan.emulator_bin,
        plan.settings.load_core,
        plan.settings.chunks,
    )?;
    let spinners = if plan.settings.keep_awake {
        let a = Spinner::start(plan.settings.gateway_core)?;
        let b = Spinner::start(plan.settings.load_core)?;
        Some((a, b))
    } else {
        None
    };
    let spinner_pids = spinners.as_ref().map(|(a, b)| (a.pid, b.pid));
    eprintln!(
        "emulator on {} (pid {}), core {}",
        emu.addr, emu.pid, plan.settings.load_core
    );
    let mut all = Vec::new();
    // Whole passes, so that the repeats of one scenario are spread over the run's time.
    for pass in 1..=plan.repeat {
        if plan.repeat > 1 {
            eprintln!("pass {pass} of {}", plan.repeat);
        }
        for &mode in &plan.modes {
            for &c in &plan.concurrency {
                let o = run_scenario(&plan, &emu, spinner_pids, mode, c, ticks).await?;
                progress(&o);
                all.push(o);
            }
        }
    }
    let outcomes = scenario::medians(all);
    let date = report::utc_date(SystemTime::now());
    let md = report::markdown(&machine, &plan.settings, &date, &outcomes);
    println!("{md}");
    if let Some(dir) = &plan.results_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let label = plan.label.clone().unwrap_or_else(|| {
            let awake = if plan.settings.keep_awake {
                "-keep-awake"
            } else {
                ""
            };
            format!("{}core{awake}", machine.cpus)
        });
        let path = dir.join(format!("{date}-{label}.md"));
        std::fs::write(&path, &md).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

/// One line per scenario on stderr while the run goes on.
fn progress(o: &Outcome) {
    let us = |r: &scenario::Run, cpu| {
        r.cpu_per_request_us(cpu)
            .map_or_else(|| "–".into(), |v| format!("{v:.0}"))
    };
    let (d, g) = (&o.direct, &o.gateway);
    eprintln!(
        "{:>13} c={:<4} direct {:>6.0}/s  gateway {:>6.0}/s  µs/req: gateway {}, emulator {}/{}, load {}/{}  errors {}/{}",
        o.mode.as_str(),
        o.concurrency,
        d.load.per_second(),
        g.load.per_second(),
        us(g, g.cpu.gateway),
        us(d, Some(d.cpu.emulator)),
        us(g, Some(g.cpu.emulator)),
        us(d, Some(d.cpu.harness)),
        us(g, Some(g.cpu.harness)),
        d.load.errors,
        g.load.errors,
    );
}

/// Direct, then through a gateway started for this scenario alone.
async fn run_scenario(
    plan: &Plan,
    emu: &Server,
    spinners: Option<(u32, u32)>,
    mode: Mode,
    concurrency: usize,
    ticks: u64,
) -> anyhow::Result<Outcome> {
    let harness = std::process::id();
    let direct_target = Target::chat(
        emu.addr,
        UPSTREAM_MODEL,
        Some(format!("Bearer {EMU_KEY}")),
        mode,
    );
    check(&direct_target).await.with_context(|| {
        format!(
            "the emulator's answer is wrong; its stderr:\n{}",
            emu.log_tail()
        )
    })?;
    let pids = Pids {
        emulator: emu.pid,
        gateway: None,
        harness,
        spinners,
    };
    let direct = scenario::run(&direct_target, concurrency, plan.window, pids, ticks).await?;

    let gw = Server::gateway(&plan.gateway_bin, plan.settings.gateway_core, emu.addr)?;
    load::wait_ready(gw.addr, "/readyz", READY_TIMEOUT)
        .await
        .with_context(|| format!("gateway stderr:\n{}", gw.log_tail()))?;
    let key = Server::issue_key(gw.admin_port.unwrap_or(0))
        .await
        .with_context(|| format!("gateway stderr:\n{}", gw.log_tail()))?;
    let gw_target = Target::chat(gw.addr, GATEWAY_MODEL, Some(format!("Bearer {key}")), mode);
    check(&gw_target).await.with_context(|| {
        format!(
            "the gateway's answer is wrong; its stderr:\n{}",
            gw.log_tail()
        )
    })?;
    let pids = Pids {
        gateway: Some(gw.pid),
        ..pids
    };
    let gateway = scenario::run(&gw_target, concurrency, plan.window, pids, ticks).await?;
    let gateway_peak_rss_kib = procfs::peak_rss_kib(gw.pid)?;
    if gateway.load.errors > 0 {
        eprintln!(
            "warning: {} failed requests through the gateway; its stderr ends with:\n{}",
            gateway.load.errors,
            gw.log_tail()
        );
    }
    drop(gw);
    Ok(Outcome {
        mode,
        concurrency,
        direct,
        gateway_rate_range: (gateway.load.per_second(), gateway.load.per_second()),
        gateway,
        gateway_peak_rss_kib,
        runs: 1,
    })
}

/// One request before the load: a 200 with the expected shape, or an error showing the body.
async fn check(target: &Target) -> anyhow::Result<()> {
    let (status, body) = load::probe(target).await?;
    let text = String::from_utf8_lossy(&body);
    let shaped = match target.mode {
        Mode::Complete => text.contains(r#""object":"chat.completion""#),
        Mode::Stream => {
            text.contains("chat.completion.chunk") && text.ends_with("data: [DONE]\n\n")
        }
    };
    if !status.is_success() || !shaped {
        let head: String = text.chars().take(600).collect();
        bail!(
            "POST {} on {} answered {status}: {head}",
            target.path,
            target.addr
        );
    }
    Ok(())
}
