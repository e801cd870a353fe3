//! Gateway keys as the data plane sees them: a map from SHA-256 digest to what the key may do,
//! filled from the store on a miss and trusted for a minute.
//!
//! Why a minute is safe: every instance polls the store twice a second for keys changed since it
//! last looked (revoked, rotated, created, their consumer suspended) and drops those entries, so a
//! revocation reaches every instance within a second while a key in steady use never costs a
//! query. Digests that are not keys are remembered too (bounded), so a client retrying a wrong
//! key cannot turn each request into a database lookup; a key created later evicts that entry
//! through the same poll. `last_used_at` is an atomic per entry, written back in batches.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use store::{KeyRecord, Store};

/// How long an entry is trusted without asking the store.
pub const TTL: Duration = Duration::from_secs(60);
/// How often the store is asked which keys changed.
pub const POLL: Duration = Duration::from_millis(500);
/// How often `last_used_at` is written back.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);
/// Entries kept at most; past it, remembered non-keys are forgotten first.
const MAX_ENTRIES: usize = 200_000;
/// Clock differences between instances that a change's `updated_at` may carry.
const POLL_OVERLAP_MS: i64 = 2_000;

/// Requests and tokens per minute across all of a consumer's keys and credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerLimits {
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
}

impl ConsumerLimits {
    pub fn of(c: &store::ConsumerRecord) -> ConsumerLimits {
        ConsumerLimits {
            rpm: c.rpm,
            tpm: c.tpm,
        }
    }
}

/// What a key may do, as stored.
#[derive(Debug)]
pub struct Grant {
    pub id: String,
    pub consumer_id: Option<String>,
    /// Gateway APIs the key is valid for; empty means all.
    pub apis: Vec<String>,
    /// Models the key may call; empty means all.
    pub models: Vec<String>,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    /// The consumer exists and is active (keys without a consumer count as active).
    pub consumer_active: bool,
    pub rpm: Option<i64>,
    /// The consumer's own limits, shared by all its keys.
    pub consumer_limits: ConsumerLimits,
    last_used: AtomicI64,
    flushed: AtomicI64,
}

impl Grant {
    pub fn from_record(
        k: &KeyRecord,
        consumer_active: bool,
        consumer_limits: ConsumerLimits,
    ) -> Grant {
        let list = |field: &str| -> Vec<String> {
            k.scopes
                .get(field)
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let used = k.last_used_at.unwrap_or(0);
        Grant {
            id: k.id.clone(),
            consumer_id: k.consumer_id.clone(),
            apis: list("apis"),
            models: list("models"),
            expires_at: k.expires_at,
            revoked: k.revoked_at.is_some(),
            consumer_active,
            rpm: k.rpm,
            consumer_limits,
            last_used: AtomicI64::new(used),
            flushed: AtomicI64::new(used),
        }
    }

    pub fn allows_api(&self, slug: &str) -> bool {
        self.apis.is_empty() || self.apis.iter().any(|a| a == slug)
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }

    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= now_ms)
    }

    pub fn mark_used(&self, now_ms: i64) {
        self.last_used.fetch_max(now_ms, Ordering::Relaxed);
    }
}

enum Slot {
    Known { grant: Arc<Grant>, at: Instant },
    Unknown { at: Instant },
}

impl Slot {
    fn fresh(&self, now: Instant) -> bool {
        let at = match self {
            Slot::Known { at, .. } | Slot::Unknown { at } => *at,
        };
        now.duration_since(at) < TTL
    }
}

/// SHA-256 digests are uniformly random already: their first eight bytes are the hash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (i * 8);
        }
    }
}

type Slots = HashMap<[u8; 32], Slot, BuildHasherDefault<DigestHasher>>;

#[derive(Debug, thiserror::Error)]
#[error("the key store cannot be reached: {0}")]
pub struct Unavailable(#[from] store::StoreError);

pub struct KeyCache {
    slots: RwLock<Slots>,
    store: Option<Store>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").finish_non_exhaustive()
    }
}

impl KeyCache {
    /// A cache over `store`; without one, no key exists (tests of public APIs).
    pub fn new(store: Option<Store>) -> KeyCache {
        KeyCache {
            slots: RwLock::new(Slots::default()),
            store,
        }
    }

    /// The grant for a key digest: from memory when seen within [`TTL`], else from the store.
    pub async fn lookup(&self, digest: &[u8; 32]) -> Result<Option<Arc<Grant>>, Unavailable> {
        let now = Instant::now();
        if let Ok(slots) = self.slots.read()
            && let Some(slot) = slots.get(digest)
            && slot.fresh(now)
        {
            return Ok(match slot {
                Slot::Known { grant, .. } => Some(grant.clone()),
                Slot::Unknown { .. } => None,
            });
        }
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let found = store.find_key_by_hash(&hex::encode(digest)).await?;
        let grant = match found {
            None => None,
            Some(k) => {
                let (active, limits) = match &k.consumer_id {
                    None => (true, ConsumerLimits::default()),
                    Some(id) => match store.get_consumer(id).await? {
                        Some(c) => (c.status == "active", ConsumerLimits::of(&c)),
                        None => (false, ConsumerLimits::default()),
                    },
                };
                Some(Arc::new(Grant::from_record(&k, active, limits)))
            }
        };
        let slot = match &grant {
            Some(g) => Slot::Known {
                grant: g.clone(),
                at: now,
            },
            None => Slot::Unknown { at: now },
        };
        if let Ok(mut slots) = self.slots.write() {
            if slots.len() >= MAX_ENTRIES {
                slots.retain(|_, s| matches!(s, Slot::Known { .. }) && s.fresh(now));
            }
            slots.insert(*digest, slot);
        }
        Ok(grant)
    }

    /// Forgets a key (hex digest) so the next request reads the store.
    pub fn evict_hex(&self, hash_hex: &str) {
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(hash_hex, &mut digest).is_ok()
            && let Ok(mut slots) = self.slots.write()
        {
            slots.remove(&digest);
        }
    }

    /// Forgets every key of a consumer (suspended, deleted).
    pub fn evict_consumer(&self, consumer_id: &str) {
        if let Ok(mut slots) = self.slots.write() {
            slots.retain(|_, s| match s {
                Slot::Known { grant, .. } => grant.consumer_id.as_deref() != Some(consumer_id),
                Slot::Unknown { .. } => true,
            });
        }
    }

    /// One poll: evicts keys changed at or after `since_ms` (minus clock overlap) and returns
    /// the next watermark.
    pub async fn poll_changes(&self, since_ms: i64) -> Result<i64, Unavailable> {
        let Some(store) = &self.store else {
            return Ok(since_ms);
        };
        let changed = store
            .keys_changed_since(since_ms.saturating_sub(POLL_OVERLAP_MS))
            .await?;
        let mut next = since_ms;
        for k in &changed {
            self.evict_hex(&k.hash);
            next = next.max(k.updated_at);
        }
        Ok(next)
    }

    /// Writes back `last_used_at` of keys used since the last flush.
    pub async fn flush_last_used(&self) -> Result<usize, Unavailable> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let used: Vec<(String, i64)> = match self.slots.read() {
            Ok(slots) => slots
                .values()
                .filter_map(|s| match s {
                    Slot::Known { grant, .. } => {
                        let at = grant.last_used.load(Ordering::Relaxed);
                        let prev = grant.flushed.swap(at, Ordering::Relaxed);
                        (at > prev).then(|| (grant.id.clone(), at))
                    }
                    Slot::Unknown { .. } => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        if !used.is_empty() {
            store.touch_keys(&used).await?;
        }
        Ok(used.len())
    }

    /// Runs the revocation poll and the `last_used_at` flush until the cache is dropped.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut since = now_ms();
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_flush = Instant::now();
            loop {
                tick.tick().await;
                let Some(cache) = weak.upgrade() else { return };
                match cache.poll_changes(since).await {
                    Ok(next) => since = next,
                    Err(e) => tracing::warn!(error = %e, "key revocation poll failed"),
                }
                if last_flush.elapsed() >= FLUSH_EVERY {
                    last_flush = Instant::now();
                    if let Err(e) = cache.flush_last_used().await {
                        tracing::warn!(error = %e, "writing last_used_at failed");
                    }
                }
            }
        })
    }

    /// Flushes what is pending (at shutdown).
    pub async fn close(&self) {
        if let Err(e) = self.flush_last_used().await {
            tracing::warn!(error = %e, "writing last_used_at at shutdown failed");
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
