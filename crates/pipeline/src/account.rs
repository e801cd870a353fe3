//! Plans and wallets around the LLM call.
//!
//! **Admission** ([`admit`]), after the edge and before any upstream call: the consumer's
//! subscription to this API (canceled → 403), the plan's model allow-list (403), its token
//! cap for the period (429 `token_cap_reached`), and — when the plan draws on a prepaid wallet —
//! a hold for the request's worst case (prompt counted with the tokenizer + the requested
//! maximum output) that fails with 402 when the balance cannot cover it. A request that is
//! never charged ([`Wants::free`]: `/v1/moderations`) gets the subscription check and the
//! request limits (RPM of the key, the consumer, the plan and the API) only.
//!
//! **Settlement** ([`Account::settle`]): the provider's usage (or, for a stream cut or
//! abandoned without it, the tokenizer's prompt count plus the chunks delivered, flagged as
//! estimated) priced with the snapshot's price table, and a usage record queued for the
//! [`Writer`], which writes batches in one transaction each: the record, the period total, the
//! plan charge computed from that total, and the wallet settlement. A request that failed is
//! recorded with no tokens and its hold released: upstream errors are never charged. An
//! account dropped without settling (the consumer left before the answer) releases its hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use billing::{Picos, Plan, PriceTable, TokenCounts, WalletUnit};
use limits::Limiter as _;
use router::AttemptRecord;
use store::{Recorded, Store, UsageInput};
use tokio::sync::{mpsc, oneshot};
use wire::openai::{Content, ContentPart, Usage};

use crate::edge::Caller;
use crate::error::GatewayError;
use crate::state::Gateway;

/// Subscriptions and period totals are trusted this long on one instance; a change made through
/// this instance's admin API applies at once (the snapshot swap forgets them).
const MEMO_TTL: Duration = Duration::from_secs(1);
/// The worst-case output of a request that names no maximum.
pub const DEFAULT_MAX_OUTPUT: u64 = 4096;
/// Usage records waiting for the writer; past this a record waits in a task of its own.
const QUEUE: usize = 16_384;
const BATCH: usize = 512;
/// How long the usage writer waits for a fuller batch. Settlement never delays a response, and
/// period totals and limits are corrected in memory at once; what waits is the record and the
/// end of its wallet hold (a flush ends the wait).
const LINGER: Duration = Duration::from_millis(25);

#[derive(Clone)]
struct Sub {
    id: String,
    active: bool,
    anchor_at: i64,
    plan: Arc<Plan>,
}

/// (consumer, API) → the consumer's subscription to it, if any.
type SubMemo = HashMap<(String, String), Memo<Option<Sub>>>;

struct Memo<V> {
    until: Instant,
    value: V,
}

enum Job {
    Record(Box<UsageInput>),
    Flush(oneshot::Sender<()>),
}

/// A wallet hold waiting for the next group commit.
struct HoldJob {
    hold: store::Hold,
    done: oneshot::Sender<Result<bool, store::StoreError>>,
}

/// What the account stage remembers across requests.
#[derive(Default)]
pub struct Accounts {
    subs: Mutex<SubMemo>,
    /// (subscription, period start) → tokens used, as of the last look plus local settlements.
    periods: Mutex<HashMap<(String, i64), Memo<i64>>>,
    writer: OnceLock<mpsc::Sender<Job>>,
    /// Records waiting for room in a full writer queue.
    overflow: Arc<AtomicUsize>,
    holds: OnceLock<mpsc::Sender<HoldJob>>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

impl Accounts {
    /// Drops every memo (after a configuration change).
    pub fn forget(&self) {
        if let Ok(mut m) = self.subs.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.periods.lock() {
            m.clear();
        }
    }

    /// Waits until every usage record settled so far is written (shutdown, tests), including
    /// those still waiting for room in the queue.
    pub async fn flush(&self) {
        let Some(tx) = self.writer.get() else { return };
        // An overflowing record leaves the count once it is in the queue, so a flush sent
        // after the count reaches zero is behind every one of them.
        while self.overflow.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (done, wait) = oneshot::channel();
        if tx.send(Job::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Usage records waiting for the writer.
    pub fn queued(&self) -> usize {
        self.writer
            .get()
            .map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }

    fn writer(&self, store: &Store) -> &mpsc::Sender<Job> {
        self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(write_loop(store.clone(), rx));
            tx
        })
    }

    /// Places a wallet hold with the holds of every other request admitted meanwhile, in one
    /// transaction: the request waits for the commit (its hold is durable before any upstream
    /// call) but the disk write is shared.
    async fn hold(&self, store: &Store, hold: store::Hold) -> Result<bool, store::StoreError> {
        let tx = self.holds.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(hold_loop(store.clone(), rx));
            tx
        });
        let (done, wait) = oneshot::channel();
        if tx.send(HoldJob { hold, done }).await.is_err() {
            return Err(store::StoreError::Invalid("the hold writer stopped".into()));
        }
        wait.await
            .unwrap_or_else(|_| Err(store::StoreError::Invalid("the hold writer stopped".into())))
    }

    fn period_tokens_local(&self, key: &(String, i64), add: i64) {
        if let Ok(mut m) = self.periods.lock()
            && let Some(e) = m.get_mut(key)
        {
            e.value += add;
        }
    }
}

/// Writes queued usage records in batches, one transaction per batch; a batch that fails is
/// retried record by record so one bad record cannot take the others with it.
async fn write_loop(store: Store, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(BATCH);
    let flush = |j: &Job| matches!(j, Job::Flush(_));
    while crate::batch::fill(&mut rx, &mut jobs, BATCH, LINGER, flush).await > 0 {
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        for j in jobs.drain(..) {
            match j {
                Job::Record(u) => batch.push(*u),
                Job::Flush(done) => flushes.push(done),
            }
        }
        if !batch.is_empty() && store.record_usage_batch(&batch).await.is_err() {
            for u in &batch {
                record_with_retry(&store, u).await;
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

/// Places queued holds in batches; a batch that fails is retried hold by hold so one bad hold
/// cannot refuse the others. A hold whose request left while waiting is released at once.
async fn hold_loop(store: Store, mut rx: mpsc::Receiver<HoldJob>) {
    let mut jobs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let holds: Vec<store::Hold> = jobs.iter().map(|j| j.hold.clone()).collect();
        let results: Vec<Result<bool, store::StoreError>> = match store.reserve_batch(&holds).await
        {
            Ok(held) => held.into_iter().map(Ok).collect(),
            Err(_) => {
                let mut one = Vec::with_capacity(holds.len());
                for h in &holds {
                    one.push(
                        store
                            .reserve(&h.request_id, &h.consumer_id, h.unit, h.amount)
                            .await,
                    );
                }
                one
            }
        };
        for (job, r) in jobs.drain(..).zip(results) {
            if let Err(Ok(true)) = job.done.send(r)
                && let Err(e) = store.release(&job.hold.request_id).await
            {
                tracing::warn!(error = %e, "abandoned wallet hold not released; the sweeper will");
            }
        }
    }
}

async fn record_with_retry(store: &Store, u: &UsageInput) -> Option<Recorded> {
    for wait in [100, 1000, 5000] {
        match store.record_usage(u).await {
            Ok(r) => return Some(r),
            Err(e) => {
                tracing::warn!(error = %e, request_id = %u.request_id, "usage record not written; retrying");
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    }
    tracing::error!(request_id = %u.request_id, "usage record dropped; its wallet hold is left to the sweeper");
    None
}

/// One request's account, from admission to settlement.
pub struct Account {
    pub request_id: String,
    store: Option<Store>,
    consumer_id: Option<String>,
    key_id: Option<String>,
    api: String,
    model_requested: String,
    sub: Option<(String, i64)>,
    /// The plan charges are computed under (`None` without a subscription or in the trial).
    charge_plan: Option<Plan>,
    held: Option<WalletUnit>,
    prompt_estimate: u64,
    /// Token limits this request reserved `reserved_tokens` against, corrected at settlement.
    token_limits: Vec<(String, limits::Rate)>,
    reserved_tokens: u64,
    /// The `x-ratelimit-*` headers for the response.
    pub rate_headers: HeaderMap,
    limiter: Option<Arc<limits::Backend>>,
    /// Usage records carry a billing event.
    event: bool,
    started: Instant,
    created_at: i64,
    settled: bool,
    /// The request's log row, given what settlement learns.
    pub trace: Option<crate::log::Trace>,
}

/// What the request asks for, for admission.
pub struct Wants<'a> {
    pub model: &'a str,
    /// Counts the prompt's tokens; called only when a limit or a wallet needs the number.
    pub prompt_tokens: &'a (dyn Fn() -> u64 + Sync),
    pub max_output: Option<u64>,
    /// Streams need the prompt count in case the provider never reports usage.
    pub stream: bool,
    /// Nothing is charged for it: no model allow-list, token limit, token cap or wallet hold
    /// applies, only the subscription's status and the request limits. Such an account is
    /// never settled (no usage record); the request log still has its row.
    pub free: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn subscription(
    gw: &Gateway,
    store: &Store,
    consumer: &str,
    api: &str,
) -> Result<Option<Sub>, GatewayError> {
    let key = (consumer.to_string(), api.to_string());
    let now = Instant::now();
    if let Some(hit) = gw.accounts.subs.lock().ok().and_then(|m| {
        m.get(&key)
            .filter(|e| now < e.until)
            .map(|e| e.value.clone())
    }) {
        return Ok(hit);
    }
    let unavailable = |e: store::StoreError| {
        tracing::warn!(error = %e, "subscription lookup failed");
        GatewayError::BillingUnavailable
    };
    let sub = match store
        .subscription(consumer, api)
        .await
        .map_err(unavailable)?
    {
        Some(s) => store
            .get_plan(&s.plan_id)
            .await
            .map_err(unavailable)?
            .map(|p| Sub {
                active: s.status == "active",
                id: s.id,
                anchor_at: s.anchor_at,
                plan: Arc::new(p.spec),
            }),
        None => None,
    };
    if let Ok(mut m) = gw.accounts.subs.lock() {
        m.insert(
            key,
            Memo {
                until: now + MEMO_TTL,
                value: sub.clone(),
            },
        );
    }
    Ok(sub)
}

async fn period_tokens(
    gw: &Gateway,
    store: &Store,
    key: &(String, i64),
) -> Result<i64, GatewayError> {
    let now = Instant::now();
    if let Some(hit) = gw
        .accounts
        .periods
        .lock()
        .ok()
        .and_then(|m| m.get(key).filter(|e| now < e.until).map(|e| e.value))
    {
        return Ok(hit);
    }
    let used = store
        .period_usage(&key.0, key.1)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "period usage lookup failed");
            GatewayError::BillingUnavailable
        })?
        .tokens;
    if let Ok(mut m) = gw.accounts.periods.lock() {
        m.insert(
            key.clone(),
            Memo {
                until: now + MEMO_TTL,
                value: used,
            },
        );
    }
    Ok(used)
}

/// Admission: the plan's checks, the rate limits and the wallet hold, before any upstream call.
pub async fn admit(
    gw: &Gateway,
    snap: &crate::Snapshot,
    caller: &Caller,
    request_id: &str,
    ask: &Wants<'_>,
) -> Result<Account, GatewayError> {
    let mut account = Account {
        request_id: request_id.to_string(),
        store: gw.store.clone(),
        consumer_id: caller.consumer_id.clone(),
        key_id: caller.key.as_ref().map(|k| k.id.clone()),
        api: caller.api.slug.clone(),
        model_requested: ask.model.to_string(),
        sub: None,
        charge_plan: None,
        held: None,
        prompt_estimate: 0,
        token_limits: Vec::new(),
        reserved_tokens: 0,
        rate_headers: HeaderMap::new(),
        limiter: None,
        event: snap.billing_events,
        started: Instant::now(),
        created_at: now_ms(),
        settled: false,
        trace: None,
    };
    let sub = match (&gw.store, &caller.consumer_id) {
        (Some(store), Some(consumer)) if snap.plan_apis.contains(&caller.api.slug) => {
            subscription(gw, store, consumer, &caller.api.slug).await?
        }
        _ => None,
    };
    let plan = sub.as_ref().map(|s| s.plan.clone());
    if let Some(sub) = &sub {
        if !sub.active {
            return Err(GatewayError::Forbidden {
                code: "subscription_inactive",
                message: "The consumer's subscription to this API is canceled.".into(),
            });
        }
        if !ask.free && !sub.plan.allows_model(ask.model) {
            return Err(GatewayError::Forbidden {
                code: "model_not_allowed",
                message: format!(
                    "The consumer's plan does not include the model `{}`.",
                    ask.model
                ),
            });
        }
    }

    // Every limit that applies, decided at once: the key's own RPM, the consumer's across its
    // keys, the subscriber's plan, the API as a whole.
    let mut requests: Vec<(String, u64)> = Vec::new();
    let mut tokens: Vec<(String, u64)> = Vec::new();
    if let Some(rpm) = caller.key.as_ref().and_then(|k| k.rpm) {
        requests.push((
            format!("rpm:key:{}", account.key_id.as_deref().unwrap_or("")),
            u64::try_from(rpm).unwrap_or(1),
        ));
    }
    if let Some(consumer) = &caller.consumer_id {
        let limits = caller.consumer_limits;
        if let Some(rpm) = limits.rpm {
            requests.push((
                format!("rpm:consumer:{consumer}"),
                u64::try_from(rpm).unwrap_or(1),
            ));
        }
        if let Some(tpm) = limits.tpm {
            tokens.push((
                format!("tpm:consumer:{consumer}"),
                u64::try_from(tpm).unwrap_or(1),
            ));
        }
    }
    if let (Some(sub), Some(plan)) = (&sub, &plan) {
        if let Some(rpm) = plan.rpm {
            requests.push((format!("rpm:sub:{}", sub.id), rpm));
        }
        if let Some(tpm) = plan.tpm {
            tokens.push((format!("tpm:sub:{}", sub.id), tpm));
        }
    }
    let api_limits = caller.api.settings.limits;
    if let Some(rpm) = api_limits.rpm {
        requests.push((format!("rpm:api:{}", caller.api.slug), rpm));
    }
    if let Some(tpm) = api_limits.tpm {
        tokens.push((format!("tpm:api:{}", caller.api.slug), tpm));
    }
    if ask.free {
        tokens.clear();
    }

    let needs_count = !ask.free
        && (ask.stream
            || !tokens.is_empty()
            || plan
                .as_ref()
                .is_some_and(|p| p.token_cap().is_some() || p.wallet.is_some()));
    if needs_count {
        account.prompt_estimate = (ask.prompt_tokens)();
    }
    let worst = account
        .prompt_estimate
        .saturating_add(ask.max_output.unwrap_or(DEFAULT_MAX_OUTPUT));
    if !requests.is_empty() || !tokens.is_empty() {
        let per_minute = |n: u64| limits::Rate::per_minute(n).map_err(|_| GatewayError::Internal);
        let mut checks = Vec::with_capacity(requests.len() + tokens.len());
        for (key, n) in &requests {
            checks.push(limits::Check::requests(key.clone(), per_minute(*n)?));
        }
        for (key, n) in &tokens {
            let rate = per_minute(*n)?;
            checks.push(limits::Check::tokens(key.clone(), rate, worst));
            account.token_limits.push((key.clone(), rate));
        }
        let limiter = gw.limiter();
        let decision = limiter.check(&checks).await;
        account.limiter = Some(limiter);
        account.rate_headers = rate_headers(&decision);
        if let Some(d) = &decision.denied {
            account.token_limits.clear();
            return Err(limited(d, account.rate_headers.clone()));
        }
        account.reserved_tokens = if account.token_limits.is_empty() {
            0
        } else {
            worst
        };
    }

    let (Some(sub), Some(plan), Some(store), Some(consumer)) =
        (sub, plan, &gw.store, &caller.consumer_id)
    else {
        return Ok(account);
    };
    if ask.free {
        return Ok(account);
    }
    let now = account.created_at;
    let period = (
        sub.id.clone(),
        billing::plans::period_start(sub.anchor_at, now),
    );
    account.sub = Some(period.clone());
    let in_trial = plan.in_trial(sub.anchor_at, now);
    if !in_trial {
        account.charge_plan = Some(plan.as_ref().clone());
    }
    let used = if plan.token_cap().is_some() || plan.wallet == Some(WalletUnit::Usd) {
        u64::try_from(period_tokens(gw, store, &period).await?).unwrap_or(0)
    } else {
        0
    };
    if let Some(cap) = plan.token_cap()
        && used.saturating_add(account.prompt_estimate) >= cap
    {
        return Err(GatewayError::Limited {
            code: "token_cap_reached",
            message: format!(
                "The plan's {cap} tokens for this billing period are used up; the allowance renews with the next period."
            ),
            retry_after: None,
            headers: Box::default(),
        });
    }
    if let Some(unit) = plan.wallet {
        let amount = match unit {
            WalletUnit::Usd if in_trial => 0,
            WalletUnit::Usd => plan.request_charge(used, worst),
            WalletUnit::Tokens => i64::try_from(worst).unwrap_or(i64::MAX),
        };
        if amount > 0 {
            let hold = store::Hold {
                request_id: request_id.to_string(),
                consumer_id: consumer.clone(),
                unit,
                amount,
            };
            let held = gw.accounts.hold(store, hold).await.map_err(|e| {
                tracing::warn!(error = %e, "wallet hold failed");
                GatewayError::BillingUnavailable
            })?;
            if !held {
                let need = match unit {
                    WalletUnit::Usd => format!("${}", billing::money::format_micros(amount)),
                    WalletUnit::Tokens => format!("{amount} tokens"),
                };
                return Err(GatewayError::PaymentRequired(format!(
                    "Insufficient balance: this request may cost up to {need} and the consumer's prepaid balance cannot cover it. Top up the wallet or lower `max_tokens`."
                )));
            }
            account.held = Some(unit);
        }
    }
    Ok(account)
}

/// OpenAI's reset format: `1s`, `250ms`, `6m0s`.
fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}s", (ms as f64 / 1000.0 * 1000.0).round() / 1000.0)
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` of the tightest limits.
fn rate_headers(d: &limits::Decision) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (kind, q) in [("requests", d.requests), ("tokens", d.tokens)] {
        let Some(q) = q else { continue };
        for (name, value) in [
            ("limit", q.limit.to_string()),
            ("remaining", q.remaining.to_string()),
            ("reset", reset_text(q.reset)),
        ] {
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(format!("x-ratelimit-{name}-{kind}")),
                HeaderValue::from_str(&value),
            ) {
                h.insert(n, v);
            }
        }
    }
    h
}

fn limited(d: &limits::Denial, headers: HeaderMap) -> GatewayError {
    let whose = if d.key.starts_with("rpm:key:") {
        "this gateway key"
    } else if d.key.contains(":consumer:") {
        "this consumer"
    } else if d.key.contains(":sub:") {
        "the consumer's plan"
    } else {
        "this API"
    };
    let unit = match d.kind {
        limits::Kind::Requests => "requests",
        limits::Kind::Tokens => "tokens",
    };
    let secs = d.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let message = if d.exceeds_limit {
        format!(
            "This request needs more {unit} than {whose} allows per minute ({}); lower `max_tokens` or raise the limit.",
            d.limit
        )
    } else {
        format!(
            "Rate limit reached for {whose}: {} {unit} per minute. Retry after {secs} s.",
            d.limit
        )
    };
    GatewayError::Limited {
        code: "rate_limit_exceeded",
        message,
        retry_after: (!d.exceeds_limit).then_some(secs),
        headers: Box::new(headers),
    }
}

/// How the request ended.
pub struct Outcome<'a> {
    pub status: u16,
    pub provider: Option<&'a str>,
    pub model: Option<&'a str>,
    pub usage: Option<Usage>,
    /// Chunks delivered when the provider's usage is missing (about a token each).
    pub delivered_chunks: u64,
    pub attempts: &'a [AttemptRecord],
}

impl Account {
    /// Corrects the token limits' reservation to what was used.
    fn correct_tokens(&mut self, actual: u64) {
        let Some(limiter) = self.limiter.take() else {
            return;
        };
        let limits = std::mem::take(&mut self.token_limits);
        if limits.is_empty() {
            return;
        }
        let delta = i64::try_from(actual).unwrap_or(i64::MAX)
            - i64::try_from(self.reserved_tokens).unwrap_or(i64::MAX);
        if delta == 0 {
            return;
        }
        match &*limiter {
            limits::Backend::InProcess(l) => {
                for (key, rate) in &limits {
                    l.settle(key, *rate, delta);
                }
            }
            limits::Backend::Redis(_) => {
                tokio::spawn(async move {
                    for (key, rate) in &limits {
                        limiter.adjust(key, *rate, delta).await;
                    }
                });
            }
        }
    }

    /// Settles the request: returns its provider cost (for `x-gateway-cost-usd`) and queues
    /// its usage record. Never blocks on the store.
    pub fn settle(mut self, gw: &Gateway, prices: &PriceTable, o: Outcome<'_>) -> Picos {
        self.settled = true;
        let ok = (200..300).contains(&o.status);
        let (tokens, estimated) = match (ok, o.usage) {
            (false, _) => (TokenCounts::default(), false),
            (true, Some(u)) => (
                TokenCounts {
                    prompt: u.prompt_tokens,
                    completion: u.completion_tokens,
                    cached: u.cached_tokens(),
                },
                false,
            ),
            (true, None) => (
                TokenCounts {
                    prompt: self.prompt_estimate,
                    completion: o.delivered_chunks,
                    cached: 0,
                },
                true,
            ),
        };
        self.correct_tokens(tokens.total());
        let cost = match (o.provider, o.model) {
            (Some(p), Some(m)) if ok => prices
                .lookup(p, m)
                .map(|price| price.cost(tokens))
                .unwrap_or_default(),
            _ => Picos(0),
        };
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        // Serialised once for the log row and the usage record.
        let attempts = serde_json::to_value(o.attempts).unwrap_or_default();
        if let Some(t) = self.trace.take() {
            t.set(|r| {
                r.status = i64::from(o.status);
                r.provider = o.provider.map(str::to_string);
                r.model = o.model.map(str::to_string);
                r.prompt_tokens = as_i64(tokens.prompt);
                r.completion_tokens = as_i64(tokens.completion);
                r.cached_tokens = as_i64(tokens.cached);
                r.estimated = estimated;
                r.cost_picos = i64::try_from(cost.0).unwrap_or(i64::MAX);
                if !o.attempts.is_empty() {
                    r.attempts = attempts.clone();
                }
            });
        }
        let Some(store) = self.store.take() else {
            return cost;
        };
        let u = UsageInput {
            request_id: self.request_id.clone(),
            created_at: self.created_at,
            consumer_id: self.consumer_id.take(),
            key_id: self.key_id.take(),
            api: std::mem::take(&mut self.api),
            subscription: self.sub.clone(),
            model_requested: std::mem::take(&mut self.model_requested),
            model: o.model.map(str::to_string),
            provider: o.provider.map(str::to_string),
            prompt_tokens: as_i64(tokens.prompt),
            completion_tokens: as_i64(tokens.completion),
            cached_tokens: as_i64(tokens.cached),
            estimated,
            cost_picos: i64::try_from(cost.0).unwrap_or(i64::MAX),
            status: i64::from(o.status),
            latency_ms: i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
            attempts,
            plan: if ok { self.charge_plan.take() } else { None },
            wallet: if ok { self.held } else { None },
            event: self.event && ok,
        };
        if let Some(key) = &self.sub {
            gw.accounts.period_tokens_local(key, as_i64(tokens.total()));
        }
        let writer = gw.accounts.writer(&store);
        if let Err(mpsc::error::TrySendError::Full(job)) = writer.try_send(Job::Record(Box::new(u)))
        {
            // The writer is behind: this record waits for room in its task. Writing it alone
            // would take a transaction per record from the writer's batches, which are the only
            // way to catch up.
            let (writer, overflow) = (writer.clone(), gw.accounts.overflow.clone());
            overflow.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(async move {
                if let Err(mpsc::error::SendError(Job::Record(u))) = writer.send(job).await {
                    record_with_retry(&store, &u).await;
                }
                overflow.fetch_sub(1, Ordering::AcqRel);
            });
        }
        cost
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.correct_tokens(0);
        if self.held.is_none() {
            return;
        }
        // The consumer left before the answer: nothing was delivered, the hold goes back.
        if let Some(store) = self.store.take() {
            let id = std::mem::take(&mut self.request_id);
            tokio::spawn(async move {
                if let Err(e) = store.release(&id).await {
                    tracing::warn!(error = %e, "wallet hold not released; the sweeper will");
                }
            });
        }
    }
}

/// Prompt tokens of a chat request, as the tokenizer counts them (text parts; a fixed cost per
/// message and per image, as OpenAI documents for its own counting).
pub fn chat_prompt_tokens(req: &wire::openai::ChatRequest) -> u64 {
    let mut n = 3;
    for m in &req.messages {
        n += 4;
        match &m.content {
            Some(Content::Text(t)) => n += billing::tokens::count(t),
            Some(Content::Parts(parts)) => {
                for p in parts {
                    n += match p {
                        ContentPart::Text { text } => billing::tokens::count(text),
                        _ => 85,
                    };
                }
            }
            None => {}
        }
    }
    n
}
