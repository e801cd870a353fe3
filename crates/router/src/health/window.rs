//! The rolling one-minute window of one target: six 10-second buckets of counts and a latency
//! histogram each.
//!
//! A bucket belongs to a 10-second tick since the [`super::Health`]'s origin; writing to a slot
//! whose tick is old clears it first, and reading ignores buckets six or more ticks old. So a
//! sample counts for 50–60 s, and the window never needs a timer.

/// Buckets in the window.
pub(super) const BUCKETS: u64 = 6;
/// Seconds per bucket: the window is `BUCKETS × BUCKET_SECS` = one minute.
pub(super) const BUCKET_SECS: u64 = 10;

/// Histogram bins per octave (a power of two): bins are 14–25 % wide, so a reported percentile
/// is within about 12 % of the true one.
const SUB_BITS: u32 = 2;
const SUB: u32 = 1 << SUB_BITS;
/// Values below 2^7 µs (128 µs) share bin 0.
const MIN_SHIFT: u32 = 7;
/// Octaves tracked: up to 2^28 µs (about 268 s); anything longer shares the last bin.
const OCTAVES: u32 = 21;
/// Bin 0 (below 128 µs), `OCTAVES × SUB` log bins, and one overflow bin.
pub(super) const BINS: usize = 2 + (OCTAVES * SUB) as usize;

/// How one recorded request counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Success,
    /// A failure of the target (counts for the circuit); `throttled` for a 429.
    Failure {
        throttled: bool,
    },
    /// The provider refused the request itself (bad request, context length, content filter,
    /// unknown model): a request, but not the target's failure.
    ClientError,
}

/// Counts over the live buckets (or in one bucket).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub requests: u32,
    /// Failures that count for the circuit (including throttled ones).
    pub failures: u32,
    pub throttled: u32,
    pub client_errors: u32,
    /// Requests and failures the circuit judges by: cleared when a probe closes the circuit,
    /// so failures from before the outage do not reopen it at once.
    pub circuit_requests: u32,
    pub circuit_failures: u32,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.requests = self.requests.saturating_add(o.requests);
        self.failures = self.failures.saturating_add(o.failures);
        self.throttled = self.throttled.saturating_add(o.throttled);
        self.client_errors = self.client_errors.saturating_add(o.client_errors);
        self.circuit_requests = self.circuit_requests.saturating_add(o.circuit_requests);
        self.circuit_failures = self.circuit_failures.saturating_add(o.circuit_failures);
    }
}

#[derive(Clone)]
struct Bucket {
    tick: u64,
    counts: Counts,
    /// Latencies of successful requests, by [`bin`].
    latency: [u32; BINS],
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        tick: 0,
        counts: Counts {
            requests: 0,
            failures: 0,
            throttled: 0,
            client_errors: 0,
            circuit_requests: 0,
            circuit_failures: 0,
        },
        latency: [0; BINS],
    };
}

pub(super) struct Window {
    buckets: [Bucket; BUCKETS as usize],
    /// The newest tick written: an older `now` (a racing thread) is counted in it instead of
    /// clearing a newer bucket.
    latest: u64,
}

impl Window {
    pub(super) fn new() -> Window {
        Window {
            buckets: [const { Bucket::EMPTY }; BUCKETS as usize],
            latest: 0,
        }
    }

    pub(super) fn add(&mut self, tick: u64, outcome: Outcome, latency_us: u64) {
        let tick = tick.max(self.latest);
        self.latest = tick;
        let b = &mut self.buckets[(tick % BUCKETS) as usize];
        if b.tick != tick {
            *b = Bucket {
                tick,
                ..Bucket::EMPTY
            };
        }
        let c = &mut b.counts;
        c.requests = c.requests.saturating_add(1);
        match outcome {
            Outcome::Success => {
                c.circuit_requests = c.circuit_requests.saturating_add(1);
                let n = &mut b.latency[bin(latency_us)];
                *n = n.saturating_add(1);
            }
            Outcome::Failure { throttled } => {
                c.failures = c.failures.saturating_add(1);
                c.circuit_requests = c.circuit_requests.saturating_add(1);
                c.circuit_failures = c.circuit_failures.saturating_add(1);
                if throttled {
                    c.throttled = c.throttled.saturating_add(1);
                }
            }
            Outcome::ClientError => c.client_errors = c.client_errors.saturating_add(1),
        }
    }

    fn live(&self, tick: u64) -> impl Iterator<Item = &Bucket> {
        let tick = tick.max(self.latest);
        self.buckets
            .iter()
            .filter(move |b| b.tick <= tick && tick - b.tick < BUCKETS)
    }

    pub(super) fn totals(&self, tick: u64) -> Counts {
        let mut sum = Counts::default();
        for b in self.live(tick) {
            sum.add(&b.counts);
        }
        sum
    }

    /// Forgets what the circuit judges by; the reported counts stay.
    pub(super) fn reset_circuit(&mut self) {
        for b in &mut self.buckets {
            b.counts.circuit_requests = 0;
            b.counts.circuit_failures = 0;
        }
    }

    /// Latency percentiles (`q` in 0..=1) of the successful requests in the window, in ms.
    pub(super) fn percentiles<const N: usize>(&self, tick: u64, qs: [f64; N]) -> [Option<f64>; N] {
        let mut merged = [0u64; BINS];
        for b in self.live(tick) {
            for (m, n) in merged.iter_mut().zip(&b.latency) {
                *m += u64::from(*n);
            }
        }
        let total: u64 = merged.iter().sum();
        qs.map(|q| {
            if total == 0 {
                return None;
            }
            // The smallest bin whose cumulative count reaches rank ⌈q·total⌉.
            let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            merged
                .iter()
                .position(|n| {
                    seen += n;
                    seen >= rank
                })
                .map(|i| representative_us(i) as f64 / 1000.0)
        })
    }
}

/// The histogram bin of a latency in µs: log-linear, `SUB` bins per power of two.
pub(super) fn bin(us: u64) -> usize {
    if us < 1 << MIN_SHIFT {
        return 0;
    }
    let msb = 63 - us.leading_zeros();
    let octave = msb - MIN_SHIFT;
    if octave >= OCTAVES {
        return BINS - 1;
    }
    let sub = ((us >> (msb - SUB_BITS)) as u32) & (SUB - 1);
    1 + (octave * SUB + sub) as usize
}

/// The value a bin stands for: the middle of its range (µs).
pub(super) fn representative_us(bin: usize) -> u64 {
    if bin == 0 {
        return (1 << MIN_SHIFT) / 2;
    }
    if bin >= BINS - 1 {
        return 1 << (MIN_SHIFT + OCTAVES);
    }
    let i = (bin - 1) as u32;
    let (octave, sub) = (i / SUB, i % SUB);
    let shift = octave + MIN_SHIFT - SUB_BITS;
    let lo = u64::from(SUB + sub) << shift;
    let hi = u64::from(SUB + sub + 1) << shift;
    (lo + hi) / 2
}
