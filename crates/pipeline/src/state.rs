//! The data plane's state: an immutable configuration snapshot, swapped whole after a validated
//! change so that no request sees a mix of old and new.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use access::api::{Api, AuthMode, DEFAULT_API};
use arc_swap::ArcSwap;
use ipnet::IpNet;
use providers::{Provider, ProviderSpec};
use store::Store;

use crate::edge::key_cache::KeyCache;
use router::{CircuitPolicy, Health, ProviderEntry, Route, RoutingTable};

/// Everything a request reads of the configuration.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub providers: HashMap<String, Arc<Provider>>,
    pub table: RoutingTable,
    /// Spend so far this month against the monthly budget, for routing rules (set through the
    /// admin API until budgets exist).
    pub monthly_spend_pct: Option<f64>,
    /// Applied to the gateway's health when the snapshot goes live.
    pub circuit: CircuitPolicy,
    /// Gateway APIs by slug; `default` serves the bare `/v1/...` paths.
    pub apis: HashMap<String, Arc<Api>>,
    /// Proxies whose `X-Forwarded-For` entries are believed (empty: the socket peer is the client).
    pub trusted_proxies: Vec<IpNet>,
    /// Built-in prices with the operator's overrides.
    pub prices: Arc<billing::PriceTable>,
    /// Gateway APIs that have plans: only their consumers' subscriptions are looked up, so an
    /// API without plans never waits on (or fails with) the store for billing.
    pub plan_apis: std::collections::HashSet<String>,
    /// A billing webhook is configured: usage records carry an outbound event.
    pub billing_events: bool,
    /// Operators' functions by name (hooks and function backends).
    pub functions: HashMap<String, Arc<crate::functions::Function>>,
}

impl Snapshot {
    pub fn build(
        specs: Vec<ProviderSpec>,
        routes: Vec<Route>,
        http: &providers::http::Client,
    ) -> Snapshot {
        let entries = specs
            .iter()
            .map(|s| ProviderEntry {
                name: s.name.clone(),
                kind: s.kind,
                models: s.models.clone(),
                priority: s.priority,
            })
            .collect();
        let providers = specs
            .into_iter()
            .map(|s| (s.name.clone(), Arc::new(Provider::new(s, http.clone()))))
            .collect();
        Snapshot {
            providers,
            table: RoutingTable::new(entries, routes),
            monthly_spend_pct: None,
            circuit: CircuitPolicy::default(),
            apis: HashMap::from([(
                DEFAULT_API.to_string(),
                Arc::new(Api::new(DEFAULT_API, AuthMode::Keys)),
            )]),
            trusted_proxies: Vec::new(),
            prices: Arc::default(),
            plan_apis: Default::default(),
            billing_events: false,
            functions: HashMap::new(),
        }
    }

    /// Publishes (or replaces) a gateway API.
    pub fn publish(&mut self, api: Api) {
        self.apis.insert(api.slug.clone(), Arc::new(api));
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// A stream whose first token takes longer than this is committed (200, SSE) and kept
    /// alive with comments at this interval until it arrives, so proxies and clients with
    /// read timeouts do not give up.
    pub sse_keepalive: Duration,
    /// How JWKS of bring-your-own-JWT APIs are fetched and refreshed.
    pub jwks: access::jwks::CacheOptions,
    /// Request-log rows that may wait for the writer; past this, rows are dropped and counted.
    pub log_queue: usize,
    /// Keep a request log at all (tail, rows, metrics); off only for measurement or when an
    /// operator wants none.
    pub request_log: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Room for a few base64 images; larger bodies are refused before parsing.
            max_body_bytes: 20 * 1024 * 1024,
            sse_keepalive: Duration::from_secs(5),
            jwks: access::jwks::CacheOptions::default(),
            log_queue: 65_536,
            request_log: true,
        }
    }
}

pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    pub limits: Limits,
    /// Gateway keys seen recently (filled from the store).
    pub keys: Arc<KeyCache>,
    /// JWKS and verified tokens of bring-your-own-JWT APIs.
    pub jwt: crate::edge::jwt::JwtEdge,
    /// Subscriptions and period totals seen recently (plans, caps, wallet holds).
    pub accounts: crate::account::Accounts,
    /// RPM/TPM limits: in process, or on Redis when several instances share them.
    limiter: ArcSwap<limits::Backend>,
    /// Where consumers and keys live; `None` in tests of public APIs only.
    pub store: Option<Store>,
    /// Health and circuit breakers per target: outlive configuration swaps.
    pub health: Arc<Health>,
    /// The request log: tail, queue and writer.
    pub log: Arc<crate::log::RequestLog>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    ready: AtomicBool,
    draining: AtomicBool,
    /// Stage failures (classifiers, hooks, functions), for metrics.
    pub counters: StageCounters,
    /// Metadata post-hooks returned, most recent last (bounded).
    pub hook_metadata: crate::functions::MetadataRing,
    /// Knowledge bases: retrieval and ingestion (set once at start where a store exists).
    knowledge: std::sync::OnceLock<Arc<crate::rag::Knowledge>>,
}

/// Counts of stage failures that did not fail the request (or did, when fail-closed).
#[derive(Debug, Default)]
pub struct StageCounters {
    moderation_failures: AtomicU64,
    hook_failures: AtomicU64,
    rag_failures: AtomicU64,
}

impl StageCounters {
    pub fn note_moderation_failure(&self) {
        self.moderation_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn note_rag_failure(&self) {
        self.rag_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rag_failures(&self) -> u64 {
        self.rag_failures.load(Ordering::Relaxed)
    }

    pub fn moderation_failures(&self) -> u64 {
        self.moderation_failures.load(Ordering::Relaxed)
    }

    pub fn note_hook_failure(&self) {
        self.hook_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn hook_failures(&self) -> u64 {
        self.hook_failures.load(Ordering::Relaxed)
    }
}

impl Gateway {
    pub fn new(limits: Limits) -> Arc<Gateway> {
        Self::with_health(limits, Arc::new(Health::default()))
    }

    pub fn with_health(limits: Limits, health: Arc<Health>) -> Arc<Gateway> {
        Self::build(limits, health, None)
    }

    /// A gateway whose consumers and keys live in `store`.
    pub fn with_store(limits: Limits, store: Store) -> Arc<Gateway> {
        Self::build(limits, Arc::new(Health::default()), Some(store))
    }

    fn build(limits: Limits, health: Arc<Health>, store: Option<Store>) -> Arc<Gateway> {
        let jwks = limits.jwks;
        let log = Arc::new(crate::log::RequestLog::new(store.clone(), limits.log_queue));
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let m = metrics.clone();
        log.observe(move |row| m.observe(row));
        Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            limits,
            keys: Arc::new(KeyCache::new(store.clone())),
            jwt: crate::edge::jwt::JwtEdge::new(jwks),
            accounts: crate::account::Accounts::default(),
            limiter: ArcSwap::from_pointee(limits::Backend::InProcess(Default::default())),
            store,
            health,
            log,
            metrics,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            counters: StageCounters::default(),
            hook_metadata: Default::default(),
            knowledge: std::sync::OnceLock::new(),
        })
    }

    /// The knowledge-base services, once [`crate::rag::start`] ran.
    pub fn knowledge(&self) -> Option<&Arc<crate::rag::Knowledge>> {
        self.knowledge.get()
    }

    pub(crate) fn set_knowledge(
        &self,
        k: Arc<crate::rag::Knowledge>,
    ) -> Arc<crate::rag::Knowledge> {
        self.knowledge.get_or_init(|| k).clone()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the configuration at once and marks the gateway ready.
    pub fn swap(&self, s: Snapshot) {
        self.health.set_policy(s.circuit);
        // Forget targets no longer configured (aliases' targets and `provider/…` names).
        self.health
            .retain(|provider, _| s.providers.contains_key(provider));
        self.snapshot.store(Arc::new(s));
        // A configuration change (plans, subscriptions, prices) applies from the next request.
        self.accounts.forget();
        self.ready.store(true, Ordering::Release);
    }

    /// Replaces the rate-limit backend (Redis at start when configured).
    pub fn set_limiter(&self, backend: limits::Backend) {
        self.limiter.store(Arc::new(backend));
    }

    pub fn limiter(&self) -> Arc<limits::Backend> {
        self.limiter.load_full()
    }

    /// Shutdown has begun: `/readyz` turns off so load balancers stop sending, while requests
    /// that still arrive (kept-alive connections) are served.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
