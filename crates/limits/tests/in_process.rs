//! The in-process backend on a manual clock: agreement with an exact reference model and the
//! GCRA bound under random checks and settlements, no burst at period boundaries, TPM
//! reservation and correction, and (ignored by default) the cost of one check.
#![expect(
    clippy::panic,
    reason = "test code: a failed setup must fail the test loudly"
)]

use std::time::{Duration, Instant};

use limits::{Check, InProcess, InProcessConfig, ManualClock, Rate};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rate(limit: u64, period_ms: u64) -> Rate {
    Rate::new(limit, Duration::from_millis(period_ms)).unwrap_or_else(|e| panic!("{e}"))
}

fn limiter() -> (InProcess<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let limiter = InProcess::with_clock(InProcessConfig::default(), clock.clone());
    (limiter, clock)
}

/// Exact GCRA: times in units of 1/limit ns, so the interval is exactly `period_ns` units.
#[derive(Clone, Copy)]
struct Exact {
    tat: u128,
}

struct Spec {
    key: &'static str,
    rate: Rate,
}

impl Spec {
    fn units(&self, ns: u64) -> u128 {
        u128::from(ns) * u128::from(self.rate.limit())
    }
    fn interval(&self) -> u128 {
        self.rate.period().as_nanos()
    }
    fn period(&self) -> u128 {
        self.rate.period().as_nanos() * u128::from(self.rate.limit())
    }
    fn remaining(&self, lag: u128) -> u64 {
        let free = self.period().saturating_sub(lag) / self.interval();
        u64::try_from(free)
            .unwrap_or(u64::MAX)
            .min(self.rate.limit())
    }
}

const SPECS: [Spec; 3] = {
    // Const-constructed through the validated constructor's rules: 10/s, 25/2s, 3/s (an
    // interval that is not a whole number of nanoseconds).
    [
        Spec {
            key: "a",
            rate: match Rate::new(10, Duration::from_secs(1)) {
                Ok(r) => r,
                Err(_) => panic!("valid"),
            },
        },
        Spec {
            key: "b",
            rate: match Rate::new(25, Duration::from_secs(2)) {
                Ok(r) => r,
                Err(_) => panic!("valid"),
            },
        },
        Spec {
            key: "c",
            rate: match Rate::new(3, Duration::from_secs(1)) {
                Ok(r) => r,
                Err(_) => panic!("valid"),
            },
        },
    ]
};

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Check(Vec<(usize, u64)>),
    Settle(usize, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..400).prop_map(Op::Advance),
        proptest::collection::vec((0usize..3, 0u64..14), 1..4).prop_map(Op::Check),
        (0usize..3, -20i64..20).prop_map(|(k, d)| Op::Settle(k, d)),
    ]
}

/// One key's history: admissions and refunds, at ns times.
#[derive(Default)]
struct History {
    admitted: Vec<(u64, u64)>,
    refunded: Vec<(u64, u64)>,
}

impl History {
    /// The GCRA bound: in every interval [a, b] between admissions, admitted ≤ limit +
    /// (b − a)·limit/period + refunds in [a, b].
    fn holds(&self, rate: Rate) -> Result<(), String> {
        let limit = rate.limit() as f64;
        let per_ns = limit / rate.period().as_nanos() as f64;
        for (i, &(a, _)) in self.admitted.iter().enumerate() {
            let mut sum = 0u64;
            for &(b, cost) in &self.admitted[i..] {
                sum += cost;
                let refunds: u64 = self
                    .refunded
                    .iter()
                    .filter(|(t, _)| (a..=b).contains(t))
                    .map(|(_, r)| r)
                    .sum();
                let bound = limit + (b - a) as f64 * per_ns + refunds as f64 + 1e-6;
                if sum as f64 > bound {
                    return Err(format!("{sum} admitted in [{a}, {b}] ns, bound {bound}"));
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn matches_exact_gcra_and_never_exceeds_the_bound(ops in proptest::collection::vec(op(), 1..120)) {
        let (limiter, clock) = limiter();
        let mut model = [Exact { tat: 0 }; 3];
        let mut history: [History; 3] = Default::default();
        for op in ops {
            let now = u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
            match op {
                Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Op::Settle(k, delta) => {
                    limiter.settle(SPECS[k].key, SPECS[k].rate, delta);
                    let s = &SPECS[k];
                    let base = model[k].tat.max(s.units(now));
                    let span = u128::from(delta.unsigned_abs()) * s.interval();
                    model[k].tat = if delta >= 0 { base + span } else { base.saturating_sub(span).max(s.units(now)) };
                    if delta < 0 {
                        history[k].refunded.push((now, delta.unsigned_abs()));
                    }
                }
                Op::Check(picks) => {
                    let checks: Vec<Check> = picks
                        .iter()
                        .map(|&(k, cost)| Check::tokens(SPECS[k].key, SPECS[k].rate, cost))
                        .collect();
                    let got = limiter.decide(&checks);

                    // The reference: sequential tentative spending, then all or nothing.
                    let mut tentative = model;
                    // Denying checks with their wait in ns (exact: units / limit).
                    let mut waits: Vec<(usize, f64)> = Vec::new();
                    for (i, &(k, cost)) in picks.iter().enumerate() {
                        let s = &SPECS[k];
                        let lag = tentative[k].tat.saturating_sub(s.units(now));
                        let after = lag + u128::from(cost) * s.interval();
                        if after <= s.period() {
                            tentative[k].tat = s.units(now) + after;
                        } else {
                            waits.push((i, (after - s.period()) as f64 / s.rate.limit() as f64));
                        }
                    }
                    let longest = waits.iter().map(|&(_, w)| w).fold(None, |m: Option<f64>, w| Some(m.map_or(w, |m| m.max(w))));
                    let worst = longest.is_some();
                    let shown = if worst { model } else { tentative };
                    let mut tightest: Option<u64> = None;
                    for &(k, _) in &picks {
                        let s = &SPECS[k];
                        let rem = s.remaining(shown[k].tat.saturating_sub(s.units(now)));
                        tightest = Some(tightest.map_or(rem, |t| t.min(rem)));
                    }
                    prop_assert_eq!(got.is_allowed(), !worst);
                    prop_assert_eq!(got.tokens.map(|q| q.remaining), tightest);
                    if let (Some(d), Some(longest)) = (&got.denied, longest) {
                        // The denial names the longest wait (ties within a nanosecond are
                        // rounding: either may be named), reported to the nanosecond.
                        let named = waits.iter().find(|&&(i, _)| i == d.index);
                        prop_assert!(named.is_some_and(|&(_, w)| w >= longest - 1.0), "{:?} named, waits {:?}", d, waits);
                        let reported = d.retry_after.as_nanos() as f64;
                        prop_assert!(d.exceeds_limit || (reported - longest).abs() <= 1.0, "{} vs {}", reported, longest);
                    }
                    let q = got.tokens.unwrap_or_else(|| panic!("a token quota"));
                    prop_assert!(q.remaining <= q.limit);
                    if got.is_allowed() {
                        model = tentative;
                        for &(k, cost) in &picks {
                            if cost > 0 {
                                history[k].admitted.push((now, cost));
                            }
                        }
                    }
                }
            }
        }
        for (k, h) in history.iter().enumerate() {
            if let Err(e) = h.holds(SPECS[k].rate) {
                prop_assert!(false, "{}: {}", SPECS[k].key, e);
            }
        }
    }
}

#[test]
fn after_a_full_burst_admissions_follow_the_steady_rate() {
    let (limiter, clock) = limiter();
    let rps = rate(20, 2_000); // one per 100 ms
    let check = [Check::requests("k", rps)];
    let burst = (0..100)
        .filter(|_| limiter.decide(&check).is_allowed())
        .count();
    assert_eq!(burst, 20);
    // Poll every 5 ms for four periods: one admission per interval, none extra at the
    // boundaries (a fixed window would admit another 20 at t = 2 s).
    let mut admitted_at = Vec::new();
    for step in 1..=1_600u64 {
        clock.advance(Duration::from_millis(5));
        while limiter.decide(&check).is_allowed() {
            admitted_at.push(step * 5);
        }
    }
    let expected: Vec<u64> = (1..=80).map(|i| i * 100).collect();
    assert_eq!(admitted_at, expected);
}

#[test]
fn an_idle_key_gets_one_burst_not_more() {
    let (limiter, clock) = limiter();
    let r = rate(5, 1_000);
    let check = [Check::requests("k", r)];
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        (0..20)
            .filter(|_| limiter.decide(&check).is_allowed())
            .count(),
        5
    );
    assert_eq!(
        limiter.decide(&check).denied.map(|d| d.retry_after),
        Some(Duration::from_millis(200))
    );
}

/// Requests reserve an estimate, wait a random latency, and settle to a random actual. After
/// the first period (which holds GCRA's initial burst on top of the steady rate), every window
/// of one period admits actual tokens within 5 % of the limit.
#[test]
fn tpm_reservations_settle_to_the_limit() {
    let (limiter, clock) = limiter();
    let tpm = rate(50_000, 1_000);
    let mut rng = StdRng::seed_from_u64(7);
    const ESTIMATE: u64 = 500;
    // (admitted at ms, actual tokens) and the settlements still pending (due ms, delta).
    let mut admitted: Vec<(u64, u64)> = Vec::new();
    let mut pending: Vec<(u64, i64)> = Vec::new();
    let workers = 16;
    let mut busy_until = vec![0u64; workers];
    for ms in 0..6_000u64 {
        pending.retain(|&(due, delta)| {
            if due <= ms {
                limiter.settle("t", tpm, delta);
                false
            } else {
                true
            }
        });
        for until in busy_until.iter_mut() {
            if *until > ms {
                continue;
            }
            let d = limiter.decide(&[Check::tokens("t", tpm, ESTIMATE)]);
            if d.is_allowed() {
                let actual = rng.gen_range(50..=ESTIMATE);
                let latency = rng.gen_range(5..60);
                admitted.push((ms, actual));
                pending.push((ms + latency, actual as i64 - ESTIMATE as i64));
                *until = ms + latency;
            }
        }
        clock.advance(Duration::from_millis(1));
    }
    let window = |from: u64| -> u64 {
        admitted
            .iter()
            .filter(|(t, _)| (from..from + 1_000).contains(t))
            .map(|(_, a)| a)
            .sum()
    };
    assert!(
        window(0) <= 2 * 50_000 + 2_500,
        "first window {}",
        window(0)
    );
    let mut worst = 0.0f64;
    for from in (1_000..=5_000).step_by(10) {
        let sum = window(from) as f64;
        worst = worst.max((sum - 50_000.0).abs() / 50_000.0);
        assert!(
            (sum - 50_000.0).abs() <= 2_500.0,
            "window at {from} ms admitted {sum} actual tokens"
        );
    }
    eprintln!(
        "worst one-period window: {:.2} % off the limit",
        worst * 100.0
    );
}

/// `cargo test --release -p limits --test in_process -- --ignored --nocapture timing`
#[test]
#[ignore = "timing: run in release by hand"]
fn timing_of_one_check() {
    let limiter = InProcess::default();
    let rpm = rate(1_000_000, 60_000);
    let tpm = rate(10_000_000, 60_000);
    let keys: Vec<String> = (0..10_000).map(|i| format!("consumer:{i}")).collect();
    let one: Vec<[Check; 1]> = keys
        .iter()
        .map(|k| [Check::requests(k.as_str(), rpm)])
        .collect();
    let four: Vec<[Check; 4]> = keys
        .iter()
        .map(|k| {
            [
                Check::requests(format!("key:{k}"), rpm),
                Check::requests(k.as_str(), rpm),
                Check::tokens(k.as_str(), tpm, 50),
                Check::tokens("api:default", tpm, 0),
            ]
        })
        .collect();
    time("1 check", |i| {
        limiter.decide(&one[i % one.len()]).is_allowed()
    });
    time("4 checks", |i| {
        limiter.decide(&four[i % four.len()]).is_allowed()
    });
}

fn time(name: &str, mut run: impl FnMut(usize) -> bool) {
    for i in 0..20_000 {
        run(i); // warm: every key present (cache hit)
    }
    let n = 2_000_000;
    let start = Instant::now();
    let mut allowed = 0;
    for i in 0..n {
        allowed += usize::from(run(i));
    }
    let per = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{name}: {per:.0} ns per decision ({allowed} allowed)");
}
