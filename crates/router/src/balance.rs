//! The order in which one route's targets are tried.
//!
//! [`order`] returns indices into the route's targets: the ones whose circuit would admit a
//! request come first, arranged by the [`Strategy`]; the ones whose circuit rejects follow in
//! configured order (the caller skips them through [`Health::admit`], but they stay in the list
//! so a caller that must try something still can).
//!
//! It is on the hot path: up to [`INLINE`] targets it allocates nothing, takes the health read
//! lock once, and with a single target it neither looks at health nor draws a random number.

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::health::{Health, View};
use crate::table::Target;

/// Routes with up to this many targets are ordered without allocating.
pub const INLINE: usize = 8;

/// How a route spreads its traffic over its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// As configured (highest weight first): the first target takes all traffic while it is
    /// healthy.
    #[default]
    Priority,
    /// Random by weight: the first pick in proportion to the weights, the rest by weight
    /// without replacement.
    Weighted,
    /// Power of two choices over the latency estimate: two distinct random targets, the faster
    /// goes first (a target without data counts as fastest, so it gets explored); the rest
    /// follow fastest first.
    Latency,
}

/// Indices into a route's targets, in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order(Repr);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    Inline { idx: [usize; INLINE], len: usize },
    Heap(Vec<usize>),
}

impl Order {
    pub fn as_slice(&self) -> &[usize] {
        match &self.0 {
            Repr::Inline { idx, len } => &idx[..*len],
            Repr::Heap(v) => v,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    pub fn iter(&self) -> std::iter::Copied<std::slice::Iter<'_, usize>> {
        self.as_slice().iter().copied()
    }

    /// The targets themselves, in order (`targets` must be the slice that was ordered).
    pub fn targets<'a>(&'a self, targets: &'a [Target]) -> impl Iterator<Item = &'a Target> {
        self.iter().filter_map(|i| targets.get(i))
    }
}

impl<'a> IntoIterator for &'a Order {
    type Item = usize;
    type IntoIter = std::iter::Copied<std::slice::Iter<'a, usize>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Orders `targets` for one request.
pub fn order<R: Rng + ?Sized>(
    strategy: Strategy,
    targets: &[Target],
    health: &Health,
    now: Instant,
    rng: &mut R,
) -> Order {
    let n = targets.len();
    if n <= 1 {
        return Order(Repr::Inline {
            idx: [0; INLINE],
            len: n,
        });
    }
    if n <= INLINE {
        let mut views = [View::default(); INLINE];
        let mut idx = [0; INLINE];
        health.views(targets, now, &mut views[..n]);
        arrange(strategy, targets, &views[..n], &mut idx[..n], rng);
        Order(Repr::Inline { idx, len: n })
    } else {
        let mut views = vec![View::default(); n];
        let mut idx = vec![0; n];
        health.views(targets, now, &mut views);
        arrange(strategy, targets, &views, &mut idx, rng);
        Order(Repr::Heap(idx))
    }
}

fn arrange<R: Rng + ?Sized>(
    strategy: Strategy,
    targets: &[Target],
    views: &[View],
    out: &mut [usize],
    rng: &mut R,
) {
    // Admitting targets first, then rejecting ones, each in configured order.
    let mut k = 0;
    for admitting in [true, false] {
        for (i, v) in views.iter().enumerate() {
            if v.rejecting != admitting {
                out[k] = i;
                k += 1;
            }
        }
        if admitting {
            let healthy = &mut out[..k];
            match strategy {
                Strategy::Priority => {}
                Strategy::Weighted => by_weight(healthy, targets, rng),
                Strategy::Latency => by_latency(healthy, views, rng),
            }
        }
    }
}

/// A weighted shuffle: each position drawn in proportion to the weights still left. Targets of
/// weight 0 come last, in configured order.
fn by_weight<R: Rng + ?Sized>(out: &mut [usize], targets: &[Target], rng: &mut R) {
    let weight = |i: usize| u64::from(targets[i].weight);
    for pos in 0..out.len().saturating_sub(1) {
        let total: u64 = out[pos..].iter().map(|&i| weight(i)).sum();
        if total == 0 {
            return;
        }
        let mut r = rng.gen_range(0..total);
        let mut pick = pos;
        for (j, &i) in out.iter().enumerate().skip(pos) {
            if r < weight(i) {
                pick = j;
                break;
            }
            r -= weight(i);
        }
        // Keeps the others' relative order, so zero weights stay in configured order.
        out[pos..=pick].rotate_right(1);
    }
}

/// Power of two choices for the first; the rest by estimate, unknown first.
fn by_latency<R: Rng + ?Sized>(out: &mut [usize], views: &[View], rng: &mut R) {
    let k = out.len();
    if k < 2 {
        return;
    }
    let key = |i: usize| views[i].score.unwrap_or(f64::NEG_INFINITY);
    let a = rng.gen_range(0..k);
    let mut b = rng.gen_range(0..k - 1);
    if b >= a {
        b += 1;
    }
    let first = if key(out[b]) < key(out[a]) { b } else { a };
    out[..=first].rotate_right(1);
    out[1..].sort_by(|&x, &y| key(x).total_cmp(&key(y)));
}

#[cfg(test)]
mod tests;
