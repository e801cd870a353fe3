//! One scenario: a mode and a concurrency, run once straight at the emulator (`direct`) and
//! once through the gateway, with the CPU time of every process sampled over the measured part.

use std::time::{Duration, Instant};

use crate::load::{self, LoadResult, Mode, Target, Window};
use crate::procfs;

/// The processes whose CPU is sampled during a run.
#[derive(Debug, Clone, Copy)]
pub struct Pids {
    pub emulator: u32,
    /// Absent for a direct run.
    pub gateway: Option<u32>,
    /// The harness itself (the load generator).
    pub harness: u32,
    /// The `--keep-awake` idle spinners, whose CPU is not "other" load.
    pub spinners: Option<(u32, u32)>,
}

/// CPU time used during the measured part (from the sampling instants, which the timer may
/// place slightly after the window edges: hence the sampled `wall`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub wall: Duration,
    pub emulator: Duration,
    pub gateway: Option<Duration>,
    pub harness: Duration,
    /// The idle spinners' CPU (they only run when a core would otherwise idle).
    pub spinners: Duration,
    /// Every core's busy time, whoever used it.
    pub machine: Duration,
}

impl CpuUse {
    /// Busy share of one core: `cpu / wall`.
    pub fn share(&self, cpu: Duration) -> f64 {
        let w = self.wall.as_secs_f64();
        if w > 0.0 { cpu.as_secs_f64() / w } else { 0.0 }
    }

    /// The emulator and the load generator share one core: how busy it was.
    pub fn load_core_share(&self) -> f64 {
        self.share(self.emulator + self.harness)
    }

    /// CPU used by anything but the three processes under test (other builds, the kernel's
    /// own threads), in cores: well above zero means the numbers are disturbed.
    pub fn foreign_share(&self) -> f64 {
        let ours = self.emulator + self.harness + self.spinners + self.gateway.unwrap_or_default();
        self.share(self.machine.saturating_sub(ours))
    }
}

#[derive(Debug, Clone)]
pub struct Run {
    pub load: LoadResult,
    pub cpu: CpuUse,
}

impl Run {
    /// `cpu` (one process's share of the measured window) per completed request, in µs.
    pub fn cpu_per_request_us(&self, cpu: Option<Duration>) -> Option<f64> {
        let per_sec = self.load.per_second();
        let cpu = cpu?;
        (per_sec > 0.0).then(|| self.cpu.share(cpu) / per_sec * 1e6)
    }

    pub fn gateway_core_share(&self) -> Option<f64> {
        self.cpu.gateway.map(|g| self.cpu.share(g))
    }
}

/// Everything measured for one mode and concurrency.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub mode: Mode,
    pub concurrency: usize,
    pub direct: Run,
    pub gateway: Run,
    /// `VmHWM` of a gateway process started for this scenario alone.
    pub gateway_peak_rss_kib: u64,
    /// With `--repeat`: how many runs this is the median of, and their gateway throughput range.
    pub runs: usize,
    pub gateway_rate_range: (f64, f64),
}

/// Groups repeated runs of each scenario (in first-run order) and keeps the one with the median
/// gateway throughput, recording how many there were and their range.
pub fn medians(all: Vec<Outcome>) -> Vec<Outcome> {
    let mut groups: Vec<Vec<Outcome>> = Vec::new();
    for o in all {
        match groups.iter_mut().find(|g| {
            g.first()
                .is_some_and(|f| f.mode == o.mode && f.concurrency == o.concurrency)
        }) {
            Some(g) => g.push(o),
            None => groups.push(vec![o]),
        }
    }
    groups
        .into_iter()
        .filter_map(|mut g| {
            g.sort_by(|a, b| {
                a.gateway
                    .load
                    .per_second()
                    .total_cmp(&b.gateway.load.per_second())
            });
            let lo = g.first()?.gateway.load.per_second();
            let hi = g.last()?.gateway.load.per_second();
            let runs = g.len();
            let mut m = g.swap_remove(runs / 2);
            m.runs = runs;
            m.gateway_rate_range = (lo, hi);
            Some(m)
        })
        .collect()
}

impl Outcome {
    /// Gateway minus direct, at percentile `p`, of the whole request (`ttfb == false`) or of the
    /// first byte.
    pub fn added_ms(&self, p: f64, ttfb: bool) -> Option<f64> {
        let pick = |r: &Run| {
            if ttfb {
                load::percentile_ms(&r.load.ttfb, p)
            } else {
                load::percentile_ms(&r.load.total, p)
            }
        };
        Some(pick(&self.gateway)? - pick(&self.direct)?)
    }
}

/// Runs the load and samples CPU at the edges of the measured part.
pub async fn run(
    target: &Target,
    concurrency: usize,
    window: Window,
    pids: Pids,
    ticks: u64,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let sampler = async {
        tokio::time::sleep_until((start + window.warmup).into()).await;
        let before = sample(pids, ticks)?;
        tokio::time::sleep_until((start + window.warmup + window.measure).into()).await;
        let after = sample(pids, ticks)?;
        anyhow::Ok(CpuUse {
            wall: after.0 - before.0,
            emulator: after.1.emulator.saturating_sub(before.1.emulator),
            gateway: after
                .1
                .gateway
                .zip(before.1.gateway)
                .map(|(a, b)| a.saturating_sub(b)),
            harness: after.1.harness.saturating_sub(before.1.harness),
            spinners: after.1.spinners.saturating_sub(before.1.spinners),
            machine: after.1.machine.saturating_sub(before.1.machine),
        })
    };
    let (load, cpu) = tokio::join!(load::run(target, concurrency, start, window), sampler);
    Ok(Run {
        load: load?,
        cpu: cpu?,
    })
}

fn sample(pids: Pids, ticks: u64) -> anyhow::Result<(Instant, CpuUse)> {
    let cpu = CpuUse {
        wall: Duration::ZERO,
        emulator: procfs::cpu_time(pids.emulator, ticks)?,
        gateway: pids
            .gateway
            .map(|g| procfs::cpu_time(g, ticks))
            .transpose()?,
        harness: procfs::cpu_time(pids.harness, ticks)?,
        spinners: match pids.spinners {
            Some((a, b)) => procfs::cpu_time(a, ticks)? + procfs::cpu_time(b, ticks)?,
            None => Duration::ZERO,
        },
        machine: procfs::machine_busy(ticks)?,
    };
    Ok((Instant::now(), cpu))
}
