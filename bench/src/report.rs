//! The results as Markdown: the machine, the settings, one table per mode, and the targets with
//! a verdict each. The same text is printed and written to `bench/results/`.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::load::{Mode, percentile_ms};
use crate::scenario::Outcome;

/// What the numbers were measured on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
    pub rustc: String,
    pub commit: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, m)| m.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or_else(
                || "unknown".to_string(),
                |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0),
            );
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |k| k.trim().to_string());
        let commit = match (
            command(&["git", "rev-parse", "--short", "HEAD"]),
            command(&["git", "status", "--porcelain"]),
        ) {
            (Some(c), Some(s)) if !s.is_empty() => format!("{c} (with uncommitted changes)"),
            (Some(c), _) => c,
            (None, _) => "unknown".into(),
        };
        Machine {
            cpus: command(&["nproc"])
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            cpu_model,
            memory,
            kernel,
            rustc: command(&["rustc", "--version"]).unwrap_or_else(|| "unknown".into()),
            commit,
        }
    }
}

fn command(argv: &[&str]) -> Option<String> {
    let (prog, args) = argv.split_first()?;
    let out = Command::new(prog).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// How the run was set up, for the report's header.
#[derive(Debug, Clone)]
pub struct Settings {
    pub warmup_s: f64,
    pub measure_s: f64,
    pub repeat: usize,
    pub chunks: usize,
    pub gateway_core: usize,
    pub load_core: usize,
    pub keep_awake: bool,
    pub note: Option<String>,
    pub gateway_bin: String,
    pub emulator_bin: String,
}

/// `YYYY-MM-DD` (UTC) for a time since the Unix epoch.
pub fn utc_date(now: SystemTime) -> String {
    let days = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.3}"))
}

fn pair(a: Option<f64>, b: Option<f64>) -> String {
    format!("{} / {}", ms(a), ms(b))
}

fn pct(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// The whole report.
pub fn markdown(
    machine: &Machine,
    settings: &Settings,
    date: &str,
    outcomes: &[Outcome],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# ai-gateway benchmark, {date}\n");
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "- CPUs: {} × {}", machine.cpus, machine.cpu_model);
    let _ = writeln!(s, "- Memory: {}", machine.memory);
    let _ = writeln!(s, "- Kernel: {}", machine.kernel);
    let _ = writeln!(s, "- Compiler: {}", machine.rustc);
    let _ = writeln!(s, "- Commit: {}\n", machine.commit);
    let _ = writeln!(s, "## Setup\n");
    let _ = writeln!(
        s,
        "- Gateway (release) pinned to core {}; emulator (release, 1 thread, recording off, {}-word answers) and the load generator (one thread) share core {}.",
        settings.gateway_core, settings.chunks, settings.load_core
    );
    let _ = writeln!(
        s,
        "- Per scenario: {:.1} s warm-up, then {:.1} s measured; one HTTP/1.1 keep-alive connection per concurrent client; `direct` = straight to the emulator, `gateway` = through the gateway. A fresh gateway process per scenario, so its peak RSS (`VmHWM`) is that scenario's.",
        settings.warmup_s, settings.measure_s
    );
    if settings.repeat > 1 {
        let _ = writeln!(
            s,
            "- The suite ran {} times; each row is the run with the median gateway throughput (the range of all runs is in brackets).",
            settings.repeat
        );
    }
    let _ = writeln!(
        s,
        "- Binaries: `{}`, `{}`.",
        settings.gateway_bin, settings.emulator_bin
    );
    if settings.keep_awake {
        let _ = writeln!(
            s,
            "- `--keep-awake`: a SCHED_IDLE busy loop on each core kept the vCPUs from halting, so wake-up latency of an idle (virtual) CPU is not in the latencies; its CPU time is not in any column."
        );
    }
    if let Some(note) = &settings.note {
        let _ = writeln!(s, "- Note: {note}");
    }
    let _ = writeln!(
        s,
        "- Added = gateway − direct at the same percentile. Latencies in ms.\n"
    );
    for mode in [Mode::Complete, Mode::Stream] {
        let rows: Vec<&Outcome> = outcomes.iter().filter(|o| o.mode == mode).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(s, "## {}\n", heading(mode));
        table(&mut s, mode, &rows);
        s.push('\n');
    }
    if !outcomes.is_empty() {
        let _ = writeln!(s, "## Load core (emulator + load generator)\n");
        load_core_table(&mut s, outcomes);
        s.push('\n');
    }
    let _ = writeln!(s, "## Targets\n");
    for v in verdicts(outcomes) {
        let _ = writeln!(s, "- {v}");
    }
    s
}

fn heading(mode: Mode) -> &'static str {
    match mode {
        Mode::Complete => "Non-streaming chat",
        Mode::Stream => "Streaming chat",
    }
}

fn table(s: &mut String, mode: Mode, rows: &[&Outcome]) {
    let (head, align) = match mode {
        Mode::Complete => (
            "| clients | direct req/s | gateway req/s | direct p50 / p99 | gateway p50 / p99 | added p50 | added p99 | gateway CPU µs/req | gateway core busy | gateway peak RSS MB | errors direct / gateway |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ),
        Mode::Stream => (
            "| clients | direct streams/s | gateway streams/s | direct TTFB p50 / p99 | gateway TTFB p50 / p99 | added TTFB p50 | added TTFB p99 | direct total p50 / p99 | gateway total p50 / p99 | added total p50 | gateway CPU µs/stream | gateway core busy | gateway peak RSS MB | errors direct / gateway |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ),
    };
    let _ = writeln!(s, "{head}\n{align}");
    for o in rows {
        let (d, g) = (&o.direct, &o.gateway);
        let p = |v: &[u64]| pair(percentile_ms(v, 50.0), percentile_ms(v, 99.0));
        let mut cells = vec![
            o.concurrency.to_string(),
            format!("{:.0}", d.load.per_second()),
            if o.runs > 1 {
                let (lo, hi) = o.gateway_rate_range;
                format!("{:.0} ({lo:.0}–{hi:.0})", g.load.per_second())
            } else {
                format!("{:.0}", g.load.per_second())
            },
        ];
        match mode {
            Mode::Complete => cells.extend([
                p(&d.load.total),
                p(&g.load.total),
                ms(o.added_ms(50.0, false)),
                ms(o.added_ms(99.0, false)),
            ]),
            Mode::Stream => cells.extend([
                p(&d.load.ttfb),
                p(&g.load.ttfb),
                ms(o.added_ms(50.0, true)),
                ms(o.added_ms(99.0, true)),
                p(&d.load.total),
                p(&g.load.total),
                ms(o.added_ms(50.0, false)),
            ]),
        }
        cells.extend([
            us(g.cpu_per_request_us(g.cpu.gateway)),
            g.gateway_core_share().map_or_else(|| "–".into(), pct),
            format!("{:.1}", mb(o.gateway_peak_rss_kib)),
            format!("{} / {}", d.load.errors, g.load.errors),
        ]);
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
}

/// The core the emulator and the load generator share: if it is saturated, the throughput
/// measured through the gateway is a lower bound on what the gateway can do.
fn load_core_table(s: &mut String, outcomes: &[Outcome]) {
    let _ = writeln!(
        s,
        "| mode | clients | load core busy direct / gateway | emulator µs/req direct / gateway | load generator µs/req direct / gateway | other processes' CPU direct / gateway |\n|---|---:|---:|---:|---:|---:|"
    );
    for o in outcomes {
        let (d, g) = (&o.direct, &o.gateway);
        let both = |f: &dyn Fn(&crate::scenario::Run) -> String| format!("{} / {}", f(d), f(g));
        let cells = [
            o.mode.as_str().to_string(),
            o.concurrency.to_string(),
            both(&|r| pct(r.cpu.load_core_share())),
            both(&|r| us(r.cpu_per_request_us(Some(r.cpu.emulator)))),
            both(&|r| us(r.cpu_per_request_us(Some(r.cpu.harness)))),
            both(&|r| pct(r.cpu.foreign_share())),
        ];
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
}

fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

/// One line per target of the issue: the measured value and whether it is met.
pub fn verdicts(outcomes: &[Outcome]) -> Vec<String> {
    let find = |mode, c| {
        outcomes
            .iter()
            .find(|o| o.mode == mode && o.concurrency == c)
    };
    let line = |what: &str, value: Option<(f64, bool)>, unit: &str| match value {
        Some((v, ok)) => {
            let digits = match unit {
                " ms" => 3,
                " req/s" => 0,
                _ => 1,
            };
            format!(
                "{} {what}: {v:.digits$}{unit}",
                if ok { "PASS" } else { "MISS" }
            )
        }
        None => format!("n/a  {what}: not measured in this run"),
    };
    let c64 = find(Mode::Complete, 64);
    let c1 = find(Mode::Complete, 1);
    let s1 = find(Mode::Stream, 1);
    vec![
        line(
            "non-streaming, 64 clients, gateway ≥ 15,000 req/s",
            c64.map(|o| o.gateway.load.per_second())
                .map(|v| (v, v >= 15_000.0)),
            " req/s",
        ),
        line(
            "non-streaming, 64 clients, gateway CPU ≤ 60 µs/request",
            c64.and_then(|o| o.gateway.cpu_per_request_us(o.gateway.cpu.gateway))
                .map(|v| (v, v <= 60.0)),
            " µs",
        ),
        line(
            "non-streaming, 64 clients, gateway peak RSS ≤ 40 MB",
            c64.map(|o| mb(o.gateway_peak_rss_kib))
                .map(|v| (v, v <= 40.0)),
            " MB",
        ),
        line(
            "non-streaming, 1 client, added p50 ≤ 0.15 ms",
            c1.and_then(|o| o.added_ms(50.0, false))
                .map(|v| (v, v <= 0.15)),
            " ms",
        ),
        line(
            "streaming (60 chunks), 1 client, added TTFB p50 ≤ 0.2 ms",
            s1.and_then(|o| o.added_ms(50.0, true))
                .map(|v| (v, v <= 0.2)),
            " ms",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn utc_dates_follow_the_civil_calendar() {
        let at = |secs| utc_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01");
        assert_eq!(at(951_782_400), "2000-02-29");
        assert_eq!(at(1_763_769_600), "2025-11-22");
    }

    #[test]
    fn targets_not_run_are_reported_as_such() {
        let v = verdicts(&[]);
        assert_eq!(v.len(), 5);
        assert!(v.iter().all(|l| l.starts_with("n/a")));
    }
}
