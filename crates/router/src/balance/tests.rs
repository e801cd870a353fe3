use std::time::Duration;

use providers::ErrorClass;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::{Instant, advance};

use super::*;

fn target(p: &str, weight: u32) -> Target {
    Target {
        provider: p.into(),
        model: "m".into(),
        weight,
    }
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(42)
}

fn open(h: &Health, t: &Target) {
    for _ in 0..5 {
        h.record(
            t,
            Duration::from_millis(5),
            Some(ErrorClass::Server),
            Instant::now(),
        );
    }
}

fn latency(h: &Health, t: &Target, ms: u64) {
    h.record(t, Duration::from_millis(ms), None, Instant::now());
}

fn is_permutation(o: &Order, n: usize) -> bool {
    let mut v = o.as_slice().to_vec();
    v.sort_unstable();
    v == (0..n).collect::<Vec<_>>()
}

/// How often each target came first over `draws` orderings.
fn first_shares(
    s: Strategy,
    targets: &[Target],
    h: &Health,
    draws: usize,
    rng: &mut StdRng,
) -> Vec<f64> {
    let mut firsts = vec![0usize; targets.len()];
    for _ in 0..draws {
        let o = order(s, targets, h, Instant::now(), rng);
        assert!(is_permutation(&o, targets.len()), "{o:?}");
        firsts[o.as_slice()[0]] += 1;
    }
    firsts.iter().map(|&n| n as f64 / draws as f64).collect()
}

/// Panics when asked for randomness.
struct NoRng;

impl rand::RngCore for NoRng {
    fn next_u32(&mut self) -> u32 {
        panic!("no randomness expected")
    }
    fn next_u64(&mut self) -> u64 {
        panic!("no randomness expected")
    }
    fn fill_bytes(&mut self, _: &mut [u8]) {
        panic!("no randomness expected")
    }
    fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), rand::Error> {
        panic!("no randomness expected")
    }
}

#[tokio::test(start_paused = true)]
async fn one_target_needs_no_health_and_no_randomness() {
    let h = Health::default();
    let t = [target("a", 1)];
    open(&h, &t[0]);
    for s in [Strategy::Priority, Strategy::Weighted, Strategy::Latency] {
        assert_eq!(order(s, &t, &h, Instant::now(), &mut NoRng).as_slice(), [0]);
        assert!(order(s, &[], &h, Instant::now(), &mut NoRng).is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn priority_keeps_the_configured_order_without_randomness() {
    let h = Health::default();
    let t = [target("a", 5), target("b", 3), target("c", 1)];
    let o = order(Strategy::Priority, &t, &h, Instant::now(), &mut NoRng);
    assert_eq!(o.as_slice(), [0, 1, 2]);
    let names: Vec<_> = o.targets(&t).map(|t| t.provider.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn open_circuits_go_last_under_every_strategy() {
    let h = Health::default();
    let t = [target("a", 5), target("b", 3), target("c", 1)];
    open(&h, &t[0]);
    latency(&h, &t[1], 100);
    let mut rng = rng();
    for s in [Strategy::Priority, Strategy::Weighted, Strategy::Latency] {
        for _ in 0..200 {
            let o = order(s, &t, &h, Instant::now(), &mut rng);
            assert!(is_permutation(&o, 3));
            assert_eq!(o.as_slice()[2], 0, "{s:?}: {o:?}");
        }
    }
    // Once the circuit would admit a probe, the target takes its place again.
    advance(Duration::from_secs(10)).await;
    let o = order(Strategy::Priority, &t, &h, Instant::now(), &mut rng);
    assert_eq!(o.as_slice(), [0, 1, 2]);
    // While the probe is out, it goes last again.
    let probe = h.admit(&t[0], Instant::now());
    assert!(matches!(probe, crate::Admission::Probe(_)));
    let o = order(Strategy::Priority, &t, &h, Instant::now(), &mut rng);
    assert_eq!(o.as_slice(), [1, 2, 0]);
}

#[tokio::test(start_paused = true)]
async fn weighted_first_pick_follows_the_weights() {
    let h = Health::default();
    let t = [target("a", 3), target("b", 1)];
    let shares = first_shares(Strategy::Weighted, &t, &h, 10_000, &mut rng());
    assert!((shares[0] - 0.75).abs() < 0.02, "{shares:?}");
}

#[tokio::test(start_paused = true)]
async fn weighted_draws_the_rest_without_replacement() {
    let h = Health::default();
    let t = [target("a", 2), target("b", 1), target("c", 1)];
    let mut rng = rng();
    let shares = first_shares(Strategy::Weighted, &t, &h, 10_000, &mut rng);
    for (got, want) in shares.iter().zip([0.5, 0.25, 0.25]) {
        assert!((got - want).abs() < 0.02, "{shares:?}");
    }
    // After `b` first, `a` (2) should come second twice as often as `c` (1).
    let (mut after_b, mut a_second) = (0, 0);
    for _ in 0..10_000 {
        let o = order(Strategy::Weighted, &t, &h, Instant::now(), &mut rng);
        if o.as_slice()[0] == 1 {
            after_b += 1;
            a_second += usize::from(o.as_slice()[1] == 0);
        }
    }
    let share = a_second as f64 / after_b as f64;
    assert!((share - 2.0 / 3.0).abs() < 0.04, "{share}");
}

#[tokio::test(start_paused = true)]
async fn weight_zero_comes_last_in_configured_order() {
    let h = Health::default();
    let mut rng = rng();
    let t = [
        target("a", 0),
        target("b", 1),
        target("c", 0),
        target("d", 1),
    ];
    for _ in 0..200 {
        let o = order(Strategy::Weighted, &t, &h, Instant::now(), &mut rng);
        assert_eq!(&o.as_slice()[2..], [0, 2], "{o:?}");
    }
    let zeros = [target("a", 0), target("b", 0)];
    let o = order(Strategy::Weighted, &zeros, &h, Instant::now(), &mut rng);
    assert_eq!(o.as_slice(), [0, 1]);
}

#[tokio::test(start_paused = true)]
async fn latency_prefers_the_faster_but_still_spreads() {
    let h = Health::default();
    let t = [target("slow", 1), target("mid", 1), target("fast", 1)];
    latency(&h, &t[0], 400);
    latency(&h, &t[1], 200);
    latency(&h, &t[2], 100);
    let mut rng = rng();
    // Power of two choices: the fastest wins both its pairs, the middle one the pair without
    // the fastest, the slowest never goes first.
    let shares = first_shares(Strategy::Latency, &t, &h, 10_000, &mut rng);
    assert!((shares[2] - 2.0 / 3.0).abs() < 0.02, "{shares:?}");
    assert!((shares[1] - 1.0 / 3.0).abs() < 0.02, "{shares:?}");
    assert_eq!(shares[0], 0.0);
    // The rest follow fastest first.
    for _ in 0..100 {
        let o = order(Strategy::Latency, &t, &h, Instant::now(), &mut rng);
        assert!(matches!(o.as_slice(), [2, 1, 0] | [1, 2, 0]), "{o:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn latency_explores_targets_without_data() {
    let h = Health::default();
    let t = [target("fast", 1), target("new", 1), target("slow", 1)];
    latency(&h, &t[0], 100);
    latency(&h, &t[2], 300);
    let shares = first_shares(Strategy::Latency, &t, &h, 10_000, &mut rng());
    assert!((shares[1] - 2.0 / 3.0).abs() < 0.02, "{shares:?}");
    assert!((shares[0] - 1.0 / 3.0).abs() < 0.02, "{shares:?}");
    let two = [target("fast", 1), target("new", 1)];
    let o = order(Strategy::Latency, &two, &h, Instant::now(), &mut rng());
    assert_eq!(o.as_slice(), [1, 0]);
}

#[tokio::test(start_paused = true)]
async fn latency_comes_back_to_an_idle_slow_target() {
    let h = Health::default();
    let t = [target("fast", 1), target("slow", 1)];
    latency(&h, &t[1], 400);
    let mut rng = rng();
    let mut first_slow = None;
    for s in 1..=60 {
        advance(Duration::from_secs(1)).await;
        let o = order(Strategy::Latency, &t, &h, Instant::now(), &mut rng);
        let first = &t[o.as_slice()[0]];
        if first.provider == "slow" {
            first_slow = Some(s);
            break;
        }
        latency(&h, first, 100);
    }
    // Both estimates halve every 10 s without samples; the fast one is refreshed every second,
    // so the slow one (4× slower: two half-lives) wins once it has been idle for 20 s and more.
    assert!(matches!(first_slow, Some(21..=22)), "{first_slow:?}");
}

#[tokio::test(start_paused = true)]
async fn many_targets_spill_to_the_heap_and_still_work() {
    let h = Health::default();
    let t: Vec<_> = (0..12u32)
        .map(|i| target(&format!("p{i}"), i + 1))
        .collect();
    open(&h, &t[11]);
    let mut rng = rng();
    for s in [Strategy::Priority, Strategy::Weighted, Strategy::Latency] {
        let o = order(s, &t, &h, Instant::now(), &mut rng);
        assert!(is_permutation(&o, 12), "{o:?}");
        assert_eq!(o.iter().last(), Some(11));
        assert_eq!(o.len(), 12);
    }
}

#[test]
fn strategy_reads_snake_case_and_defaults_to_priority() {
    assert_eq!(Strategy::default(), Strategy::Priority);
    for (text, s) in [
        ("\"priority\"", Strategy::Priority),
        ("\"weighted\"", Strategy::Weighted),
        ("\"latency\"", Strategy::Latency),
    ] {
        assert_eq!(serde_json::from_str::<Strategy>(text).unwrap(), s);
        assert_eq!(serde_json::to_string(&s).unwrap(), text);
    }
    assert!(serde_json::from_str::<Strategy>("\"fastest\"").is_err());
}
