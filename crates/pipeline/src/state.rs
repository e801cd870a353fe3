//! The data plane's state: an immutable configuration snapshot, swapped whole after a validated
//! change so that no request sees a mix of old and new.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use providers::{Provider, ProviderSpec};
use router::{ProviderEntry, Route, RoutingTable};

/// Everything a request reads of the configuration.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub providers: HashMap<String, Arc<Provider>>,
    pub table: RoutingTable,
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
        }
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Room for a few base64 images; larger bodies are refused before parsing.
        Limits {
            max_body_bytes: 20 * 1024 * 1024,
        }
    }
}

pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    pub limits: Limits,
    ready: AtomicBool,
}

impl Gateway {
    pub fn new(limits: Limits) -> Arc<Gateway> {
        Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            limits,
            ready: AtomicBool::new(false),
        })
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the configuration at once and marks the gateway ready.
    pub fn swap(&self, s: Snapshot) {
        self.snapshot.store(Arc::new(s));
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
