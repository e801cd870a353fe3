//! The in-process backend: one TAT per (kind, key) in a sharded hash map.
//!
//! A key's hash is computed once and picks both its shard and its bucket. A request's checks
//! lock their shards in ascending order (so two requests never deadlock), are all evaluated,
//! and are all committed or none is: the locks are what makes the decision all-or-nothing.
//! With 64 shards by default, two requests contend only when they share a shard.
//!
//! Memory is bounded by `max_keys`: an idle key (TAT in the past) is the same as an absent one,
//! so a full shard first drops its idle keys; if it is still nearly full (more live keys than
//! capacity), it drops an arbitrary eighth of them. Those limits restart from a full burst:
//! under a flood of distinct live keys the map stays bounded at the price of some precision.

use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hashbrown::{DefaultHashBuilder, HashTable};
use smallvec::SmallVec;

use crate::clock::{Clock, MonotonicClock};
use crate::gcra::{self, Fp, Params, Step};
use crate::rate::{Check, Decision, Denial, Kind, Rate};

/// Sizing of the in-process map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InProcessConfig {
    /// Number of independently locked shards (rounded up to a power of two).
    pub shards: usize,
    /// Keys kept at most, over all shards.
    pub max_keys: usize,
}

impl Default for InProcessConfig {
    fn default() -> Self {
        InProcessConfig {
            shards: 64,
            max_keys: 1 << 20,
        }
    }
}

struct Entry {
    kind: Kind,
    key: Box<str>,
    tat: Fp,
}

#[derive(Default)]
struct Shard {
    table: HashTable<Entry>,
}

/// GCRA limits held in this process. Exact: a burst is exactly the limit.
pub struct InProcess<C: Clock = MonotonicClock> {
    clock: C,
    hasher: DefaultHashBuilder,
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

type Guards<'a> = SmallVec<[(usize, MutexGuard<'a, Shard>); 8]>;

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // No code panics while holding a shard, so a poisoned one is still consistent.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InProcess<MonotonicClock> {
    pub fn new(config: InProcessConfig) -> Self {
        Self::with_clock(config, MonotonicClock::new())
    }
}

impl Default for InProcess<MonotonicClock> {
    fn default() -> Self {
        Self::new(InProcessConfig::default())
    }
}

impl<C: Clock> InProcess<C> {
    pub fn with_clock(config: InProcessConfig, clock: C) -> Self {
        let shards = config.shards.clamp(1, 1 << 16).next_power_of_two();
        let per_shard = (config.max_keys / shards).max(1);
        InProcess {
            clock,
            hasher: DefaultHashBuilder::default(),
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            per_shard,
        }
    }

    fn hash(&self, kind: Kind, key: &str) -> u64 {
        self.hasher.hash_one((kind, key))
    }

    fn shard_of(&self, hash: u64) -> usize {
        // The table uses the low bits (bucket) and the top 7 (tag); the shard takes others.
        usize::try_from(hash >> 32).unwrap_or(0) & (self.shards.len() - 1)
    }

    fn now(&self) -> Fp {
        gcra::from_nanos(self.clock.now_nanos())
    }

    /// Checks a request against all its limits: all consume their cost, or none does.
    pub fn decide(&self, checks: &[Check]) -> Decision {
        let mut decision = Decision::empty(false);
        if checks.is_empty() {
            return decision;
        }
        let hashes: SmallVec<[u64; 8]> = checks.iter().map(|c| self.hash(c.kind, &c.key)).collect();
        let mut ids: SmallVec<[usize; 8]> = hashes.iter().map(|&h| self.shard_of(h)).collect();
        ids.sort_unstable();
        ids.dedup();
        // Taken after the locks: a request never sees a time older than a commit it waited for.
        let mut guards: Guards<'_> = ids
            .iter()
            .filter_map(|&id| self.shards.get(id).map(|s| (id, lock(s))))
            .collect();
        let now = self.now();

        let mut stored: SmallVec<[Fp; 8]> = SmallVec::new();
        let mut after: SmallVec<[Fp; 8]> = SmallVec::new();
        let mut worst: Option<(usize, Fp)> = None;
        for (i, check) in checks.iter().enumerate() {
            let params = Params::new(check.rate);
            // The same limit twice in one request: the second sees the first's spending.
            let earlier = checks[..i]
                .iter()
                .rposition(|c| c.kind == check.kind && c.key == check.key);
            let (current, kept) = match earlier {
                Some(j) => (after[j], stored[j]),
                None => {
                    let tat = guard(&mut guards, self.shard_of(hashes[i]))
                        .and_then(|shard| {
                            shard
                                .table
                                .find(hashes[i], |e| e.kind == check.kind && *e.key == *check.key)
                                .map(|e| e.tat)
                        })
                        .unwrap_or(now);
                    (tat, tat)
                }
            };
            stored.push(kept);
            match gcra::step(&params, current, now, check.cost) {
                Step::Fits { tat } => after.push(tat),
                Step::Waits { wait } => {
                    after.push(current);
                    if worst.is_none_or(|(_, w)| wait > w) {
                        worst = Some((i, wait));
                    }
                }
            }
        }

        if let Some((index, wait)) = worst {
            for (i, check) in checks.iter().enumerate() {
                let params = Params::new(check.rate);
                decision.observe(check.kind, params.quota(gcra::lag(stored[i], now)));
            }
            decision.denied = Some(denial(checks, index, gcra::to_duration(wait)));
            return decision;
        }
        for (i, check) in checks.iter().enumerate() {
            let params = Params::new(check.rate);
            decision.observe(check.kind, params.quota(gcra::lag(after[i], now)));
            if check.cost > 0
                && let Some(shard) = guard(&mut guards, self.shard_of(hashes[i]))
            {
                self.store(shard, hashes[i], check.kind, &check.key, after[i], now);
            }
        }
        decision
    }

    /// Settles a token reservation: `delta` = actual − reserved tokens. A refund gives capacity
    /// back (the TAT never moves before now); extra usage is charged without a ceiling.
    pub fn settle(&self, key: &str, rate: Rate, delta: i64) {
        if delta == 0 {
            return;
        }
        let hash = self.hash(Kind::Tokens, key);
        let Some(shard) = self.shards.get(self.shard_of(hash)) else {
            return;
        };
        let mut shard = lock(shard);
        let now = self.now();
        let tat = shard
            .table
            .find(hash, |e| e.kind == Kind::Tokens && *e.key == *key)
            .map_or(now, |e| e.tat);
        let tat = gcra::adjust(&Params::new(rate), tat, now, delta);
        self.store(&mut shard, hash, Kind::Tokens, key, tat, now);
    }

    fn store(&self, shard: &mut Shard, hash: u64, kind: Kind, key: &str, tat: Fp, now: Fp) {
        if let Some(entry) = shard
            .table
            .find_mut(hash, |e| e.kind == kind && *e.key == *key)
        {
            entry.tat = tat;
            return;
        }
        if tat <= now {
            return; // idle is the same as absent
        }
        if shard.table.len() >= self.per_shard {
            self.evict(shard, now);
        }
        let hasher = &self.hasher;
        shard.table.insert_unique(
            hash,
            Entry {
                kind,
                key: key.into(),
                tat,
            },
            |e| hasher.hash_one((e.kind, &*e.key)),
        );
    }

    fn evict(&self, shard: &mut Shard, now: Fp) {
        shard.table.retain(|e| e.tat > now);
        if shard.table.len() >= self.per_shard - self.per_shard / 8 {
            let mut n = 0usize;
            shard.table.retain(|_| {
                n += 1;
                !n.is_multiple_of(8)
            });
        }
    }

    /// Drops every idle key (TAT in the past); returns how many. The map also does this by
    /// itself when a shard fills up; a periodic sweep just returns the memory sooner.
    pub fn sweep(&self) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let now = self.now();
            let before = shard.table.len();
            shard.table.retain(|e| e.tat > now);
            removed += before - shard.table.len();
        }
        removed
    }

    /// Keys currently held (idle ones included until swept or evicted).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).table.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn guard<'g, 'a>(guards: &'g mut Guards<'a>, id: usize) -> Option<&'g mut Shard> {
    guards
        .iter_mut()
        .find(|(i, _)| *i == id)
        .map(|(_, g)| &mut **g)
}

pub(crate) fn denial(checks: &[Check], index: usize, wait: std::time::Duration) -> Denial {
    let check = &checks[index.min(checks.len() - 1)];
    let exceeds_limit = check.cost > check.rate.limit();
    Denial {
        index,
        key: check.key.clone(),
        kind: check.kind,
        limit: check.rate.limit(),
        retry_after: if exceeds_limit {
            check.rate.period()
        } else {
            wait
        },
        exceeds_limit,
    }
}

#[cfg(test)]
mod tests;
