//! `gateway start`: open the store, settle the secrets, apply the config file, build the first
//! snapshot, then serve the data and admin planes until a signal, draining in-flight requests.

use std::collections::HashSet;
use std::sync::Arc;

use admin::AdminState;
use admin::auth::{self, TokenSetup};
use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use pipeline::{Gateway, Limits};
use store::{Cipher, Keyring, Store};

use crate::config_file;
use crate::settings::Settings;

/// Where the encryption keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `GATEWAY_ENCRYPTION_KEY` (and `GATEWAY_ENCRYPTION_KEY_PREVIOUS`).
    Env,
    /// `encryption.key` in this data directory.
    File(std::path::PathBuf),
}

fn cipher(hex: &str, var: &str) -> anyhow::Result<Cipher> {
    Cipher::from_hex(hex).with_context(|| format!("{var} must be 64 hex characters (32 bytes)"))
}

/// Opens (and migrates) the store with the right encryption keys.
pub async fn open_store(s: &Settings) -> anyhow::Result<Store> {
    Ok(open_store_with_source(s).await?.0)
}

pub async fn open_store_with_source(s: &Settings) -> anyhow::Result<(Store, KeySource)> {
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("cannot create data dir {}", s.data_dir.display()))?;
    let env = |name: &str| std::env::var(name).ok().filter(|k| !k.trim().is_empty());
    let previous: Vec<Cipher> = env("GATEWAY_ENCRYPTION_KEY_PREVIOUS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| cipher(k, "every key in GATEWAY_ENCRYPTION_KEY_PREVIOUS"))
        .collect::<anyhow::Result<_>>()?;
    let (ring, source) = match env("GATEWAY_ENCRYPTION_KEY") {
        Some(k) => (
            Keyring::new(cipher(k.trim(), "GATEWAY_ENCRYPTION_KEY")?, previous),
            KeySource::Env,
        ),
        None => {
            let file = store::crypto::key_file::key_file_path(&s.data_dir);
            if s.is_postgres() && !file.exists() {
                bail!(
                    "GATEWAY_ENCRYPTION_KEY must be set when the store is PostgreSQL: every instance sharing it needs the same key"
                );
            }
            let keys = store::load_or_create_key_file(&s.data_dir)
                .context("cannot load or create the encryption key file")?;
            let mut ciphers = keys
                .iter()
                .map(|k| cipher(k, "every line of encryption.key"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let primary = ciphers.remove(0);
            ciphers.extend(previous);
            (
                Keyring::new(primary, ciphers),
                KeySource::File(s.data_dir.clone()),
            )
        }
    };
    let store = Store::connect(&s.database_url, ring)
        .await
        .context("cannot open the store")?;
    store.migrate().await.context("migrations failed")?;
    Ok((store, source))
}

/// Applies `GATEWAY_CONFIG` to the store: providers and models are created or replaced.
pub async fn apply_config_file(
    store: &Store,
    path: &std::path::Path,
) -> anyhow::Result<(usize, usize)> {
    let existing: HashSet<String> = store
        .list_providers()
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect();
    let cfg = config_file::load(path, &existing)?;
    for p in &cfg.providers {
        store.upsert_provider(&p.to_input()).await?;
    }
    for m in &cfg.models {
        store.upsert_model(&m.to_input()).await?;
    }
    if let Some(r) = &cfg.router {
        r.save(store).await?;
    }
    for f in &cfg.functions {
        store.put_function(&f.to_input()).await?;
    }
    for (i, kb) in cfg.knowledge_bases.iter().enumerate() {
        let input = kb.to_input();
        let saved = match store.get_kb(&kb.name).await? {
            None => store.create_kb(&input).await.map(|_| ()),
            Some(_) => {
                let patch = store::knowledge::KbPatch {
                    embedding_model: Some(input.embedding_model),
                    chunk_tokens: Some(input.chunk_tokens),
                    overlap_tokens: Some(input.overlap_tokens),
                };
                store.update_kb(&kb.name, &patch).await.map(|_| ())
            }
        };
        saved.with_context(|| format!("{}: knowledge_bases[{i}] ({})", path.display(), kb.name))?;
    }
    for a in &cfg.apis {
        store.upsert_api(&a.to_input()?).await?;
    }
    Ok((cfg.providers.len(), cfg.models.len()))
}

/// The upstream client the data plane shares.
pub fn http_client(
    egress: &providers::egress::EgressPolicy,
) -> anyhow::Result<providers::http::Client> {
    install_tls_provider();
    providers::http::client(egress.clone()).context("cannot build the HTTP client")
}

/// One TLS provider for the process (ring); ignore "already installed" in tests.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub async fn start(s: Settings) -> anyhow::Result<()> {
    let env_token = std::env::var("GATEWAY_ADMIN_TOKEN").ok();
    if let Some(why) = env_token.as_deref().and_then(auth::weakness) {
        bail!("GATEWAY_ADMIN_TOKEN {why}");
    }
    let (store, key_source) = open_store_with_source(&s).await?;
    let token = auth::setup(&store, env_token.as_deref()).await?;
    if let TokenSetup::Generated { token, .. } = &token {
        // Shown once: only its hash is kept.
        eprintln!(
            "\n  Admin token (shown once, store it now): {token}\n  Use it as: export GATEWAY_ADMIN_TOKEN={token}\n"
        );
    }
    if let Some(path) = &s.config_file {
        let (p, m) = apply_config_file(&store, path).await?;
        tracing::info!(file = %path.display(), providers = p, models = m, "config file applied");
    }
    let http = http_client(&s.egress)?;
    let gateway = Gateway::with_store(
        Limits {
            max_body_bytes: s.max_body_bytes,
            sse_keepalive: s.sse_keepalive,
            log_queue: s.log_queue,
            request_log: s.request_log,
            ..Limits::default()
        },
        store.clone(),
    );
    let admin_state = Arc::new(AdminState {
        store: store.clone(),
        gateway: gateway.clone(),
        http,
        token_hash: token.hash(),
        key_prefix: s.key_prefix.clone(),
        key_file_dir: match &key_source {
            KeySource::File(dir) => Some(dir.clone()),
            KeySource::Env => None,
        },
        edge: admin::catalog::EdgeSettings {
            trusted_proxies: s.trusted_proxies.clone(),
            open_default: s.dev,
            local_models: s.local_models.then(|| s.models_dir.clone()),
        },
    });
    let first = admin::catalog::snapshot_from_store(&store, &admin_state.http, &admin_state.edge)
        .await
        .map_err(|e| match e {
            admin::catalog::CatalogError::Store(store::StoreError::Crypto(what)) => anyhow::anyhow!(
                "cannot decrypt the stored provider keys ({what}): GATEWAY_ENCRYPTION_KEY (or the data dir's encryption.key) is not the key they were written with"
            ),
            other => anyhow::anyhow!("cannot load the configuration from the store: {other}"),
        })?;
    gateway.swap(first);
    if s.local_models && s.models_auto_pull {
        tokio::spawn(pull_default_chat_model(
            admin_state.clone(),
            s.models_dir.clone(),
        ));
    }
    gateway.jwt.set_http(admin_state.http.clone());
    // Revoked and rotated keys leave this instance's cache within a second.
    let key_watch = gateway.keys.watch();
    let sweeper = tokio::spawn(sweep_holds(store.clone(), s.hold_timeout));
    let pruner = tokio::spawn(prune_logs(store.clone(), s.log_retention_days));
    // Spans for every request to an OpenTelemetry collector, when one is configured.
    let exporter = match crate::otel::OtlpConfig::from_env()? {
        Some(cfg) => {
            tracing::info!(endpoint = %cfg.endpoint, "exporting request spans (OTLP/HTTP JSON)");
            Some(crate::otel::spawn(gateway.log.clone(), cfg)?.0)
        }
        None => None,
    };
    let deliverer = tokio::spawn(pipeline::events::deliver_loop(
        store.clone(),
        admin_state.http.clone(),
    ));
    // Rate limits shared by every instance through Redis when GATEWAY_REDIS_URL is set.
    let limiter =
        limits::Backend::from_env().map_err(|e| anyhow::anyhow!("GATEWAY_REDIS_URL: {e}"))?;
    let mut fanin = Vec::new();
    if matches!(limiter, limits::Backend::Redis(_))
        && let Some(cfg) = limits::RedisConfig::from_env()
    {
        tracing::info!("rate limits and the live tail on Redis");
        // Every instance's rows in every instance's tail.
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| anyhow::anyhow!("GATEWAY_REDIS_URL: {e}"))?;
        fanin = crate::tail_fanin::spawn(
            gateway.log.clone(),
            client,
            crate::tail_fanin::channel(&cfg.prefix),
        )
        .0;
    }
    gateway.set_limiter(limiter);
    // Knowledge bases: retrieval, and background indexing of uploads (resumed from the queue).
    let kb_limits = knowledge::extract::Limits {
        max_bytes: s.kb_max_upload_bytes,
        ..Default::default()
    };
    let _ = pipeline::rag::start(
        &gateway,
        crate::kb_cli::extractor(),
        kb_limits,
        s.kb_workers,
    );
    // The tokenizer's tables load here, not on the first request that needs a token count.
    tokio::task::spawn_blocking(billing::tokens::warm);

    let data = tokio::net::TcpListener::bind((s.bind.as_str(), s.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", s.bind, s.port))?;
    let adm = tokio::net::TcpListener::bind((s.bind.as_str(), s.admin_port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", s.bind, s.admin_port))?;
    let (data_addr, admin_addr) = (data.local_addr()?, adm.local_addr()?);
    tracing::info!(%data_addr, %admin_addr, store = ?store.backend(), "gateway listening");
    println!(
        "gateway listening: data plane http://{data_addr}/v1  admin http://{admin_addr}/admin"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let data_srv = axum::serve(
        data.tap_io(|t| {
            let _ = t.set_nodelay(true);
        }),
        pipeline::app(gateway.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(wait(stop_rx.clone()));
    let admin_srv = axum::serve(
        adm.tap_io(|t| {
            let _ = t.set_nodelay(true);
        }),
        admin::app(admin_state),
    )
    .with_graceful_shutdown(wait(stop_rx));
    // First signal: stop accepting and drain. A second signal, or the drain deadline, ends the
    // process without waiting any longer.
    let grace = s.shutdown_grace;
    let gw_signal = gateway.clone();
    let signal = async move {
        shutdown_signal().await;
        // Load balancers stop sending first; in-flight requests and streams then drain.
        gw_signal.set_draining();
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: draining in-flight requests"
        );
        let _ = stop_tx.send(true);
        tokio::select! {
            () = shutdown_signal() => tracing::warn!("second signal: exiting without draining"),
            () = tokio::time::sleep(grace) => tracing::warn!("drain deadline passed: exiting with requests in flight"),
        }
    };
    let servers = async { tokio::join!(data_srv.into_future(), admin_srv.into_future()) };
    tokio::select! {
        (a, b) = servers => {
            a?;
            b?;
            key_watch.abort();
            sweeper.abort();
            pruner.abort();
            for t in &fanin {
                t.abort();
            }
            if let Some(e) = &exporter {
                e.abort();
            }
            deliverer.abort();
            // Usage records and log rows of every answered request are written before the
            // store closes.
            gateway.accounts.flush().await;
            gateway.log.flush().await;
            gateway.keys.close().await;
            store.close().await;
            Ok(())
        }
        () = signal => anyhow::bail!("shutdown did not finish draining"),
    }
}

/// Deletes request-log rows past retention, hourly, an hour of rows per statement; rollups are
/// kept for a year (analytics windows reach 30 days, invoices read the usage records).
async fn prune_logs(store: store::Store, days: u32) {
    const HOUR_MS: i64 = 3_600_000;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let now = jiff::Timestamp::now().as_millisecond();
        let cutoff = now - i64::from(days) * 24 * HOUR_MS;
        match store.prune_logs(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, days, "request log pruned"),
            Err(e) => tracing::warn!(error = %e, "request log prune failed"),
        }
        if let Err(e) = store.prune_rollups(now - 366 * 24 * HOUR_MS).await {
            tracing::warn!(error = %e, "rollup prune failed");
        }
    }
}

/// Releases wallet holds older than `stale` (their requests vanished: a crash, a lost task; no
/// request runs that long, streams included). Runs on every instance: a hold is released once.
async fn sweep_holds(store: store::Store, stale: std::time::Duration) {
    let every = (stale / 4).clamp(
        std::time::Duration::from_millis(250),
        std::time::Duration::from_secs(60),
    );
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let cutoff = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.saturating_sub(stale).as_millis())
            .unwrap_or(0);
        match store
            .sweep_reservations(i64::try_from(cutoff).unwrap_or(0))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(released = n, "released wallet holds of vanished requests"),
            Err(e) => tracing::warn!(error = %e, "wallet hold sweep failed"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// A gateway with no provider answers with its local chat model: fetch it in the background on
/// the first start, so a new user gets a reply without a manual step.
async fn pull_default_chat_model(admin: Arc<AdminState>, models_dir: std::path::PathBuf) {
    let snap = admin.gateway.snapshot();
    let only_local = snap
        .table
        .providers()
        .iter()
        .all(|p| p.kind == providers::ProviderKind::Local);
    let Some(known) = models::catalog::find(models::catalog::DEFAULT_CHAT) else {
        return;
    };
    if !only_local || known.installed(&models_dir) {
        return;
    }
    tracing::info!(
        model = known.name,
        dir = %models_dir.display(),
        "no provider is configured: downloading the local chat model so the gateway can answer \
         (GATEWAY_MODELS_AUTO_PULL=off skips this)"
    );
    let sources = crate::models_cli::Sources::from_env();
    let mut quiet = crate::models_cli::Progress::quiet();
    match crate::models_cli::pull(known, &models_dir, &sources, &mut quiet).await {
        Ok(()) => {
            tracing::info!(model = known.name, "local chat model installed");
            if let Err(e) = admin::api::reload(&admin).await {
                tracing::warn!(error = %e, "cannot reload the configuration");
            }
        }
        Err(e) => tracing::warn!(
            model = known.name,
            error = format!("{e:#}"),
            "cannot download the local chat model: add a provider, or run `gateway models pull {}`",
            known.name
        ),
    }
}
