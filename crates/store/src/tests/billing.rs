use billing::{Plan, Price, WalletUnit};
use proptest::prelude::*;
use serde_json::json;

use super::{TestResult, backends};
use crate::{Cipher, ConsumerInput, Recorded, Store, StoreError, UsageInput};

fn plan(v: serde_json::Value) -> Plan {
    serde_json::from_value(v).unwrap()
}

async fn consumer(store: &Store, name: &str) -> TestResult<String> {
    Ok(store.create_consumer(&ConsumerInput::new(name)).await?.id)
}

/// The ledger invariant: balance = Σ credits − Σ settles, reserved = Σ live holds.
async fn assert_ledger_sums(store: &Store, consumer: &str, unit: WalletUnit) -> TestResult {
    let w = store.wallet(consumer, unit).await?;
    let mut expected = 0;
    for e in store
        .ledger(consumer)
        .await?
        .into_iter()
        .filter(|e| e.unit == unit)
    {
        match e.kind.as_str() {
            "top_up" | "refund" => expected += e.amount,
            "settle" => expected -= e.amount,
            _ => {}
        }
    }
    assert_eq!(
        w.balance,
        expected,
        "{:?}: balance vs ledger",
        store.backend()
    );
    assert_eq!(w.reserved, store.reserved_total(consumer, unit).await?);
    assert!(w.balance >= 0 && w.reserved <= w.balance);
    Ok(())
}

#[tokio::test]
async fn plans_are_validated_and_not_deleted_while_used() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let p = store
            .create_plan(
                "support",
                "starter",
                &plan(json!({"kind": "free", "allowance_tokens": 1000})),
            )
            .await?;
        assert_eq!(store.get_plan(&p.id).await?.as_ref(), Some(&p));
        let dup = store
            .create_plan(
                "support",
                "starter",
                &plan(json!({"kind": "free", "allowance_tokens": 5})),
            )
            .await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        let bad = store
            .create_plan("support", "x", &plan(json!({"kind": "metered"})))
            .await;
        assert!(
            matches!(&bad, Err(StoreError::Invalid(m)) if m.contains("overage")),
            "{bad:?}"
        );
        assert_eq!(store.list_plans(Some("support")).await?.len(), 1);
        assert_eq!(store.list_plans(Some("other")).await?.len(), 0);
        assert_eq!(store.list_plans(None).await?.len(), 1);

        let pro = store
            .create_plan(
                "support",
                "pro",
                &plan(
                    json!({"kind": "flat", "allowance_tokens": 100000, "price_micros": 20000000}),
                ),
            )
            .await?;
        let c = consumer(store, "acme").await?;
        let s1 = store.subscribe(&c, &p.id).await?;
        assert_eq!(
            (s1.api.as_str(), s1.plan_id.as_str()),
            ("support", p.id.as_str())
        );
        // Changing plan keeps the subscription and its anchor, records the change.
        let s2 = store.subscribe(&c, &pro.id).await?;
        assert_eq!(
            (s2.id.as_str(), s2.anchor_at),
            (s1.id.as_str(), s1.anchor_at)
        );
        assert_eq!(s2.plan_id, pro.id);
        let history = store.plan_history(&s2.id).await?;
        assert_eq!(
            history
                .iter()
                .map(|h| h.plan_id.as_str())
                .collect::<Vec<_>>(),
            vec![p.id.as_str(), pro.id.as_str()]
        );
        assert!(matches!(
            store.delete_plan(&pro.id).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(store.delete_plan(&p.id).await?);
        assert!(matches!(
            store.subscribe("nobody", &pro.id).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.subscribe(&c, "no-plan").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(store.cancel_subscription(&s2.id).await?);
        assert_eq!(
            store.subscription(&c, "support").await?.map(|s| s.status),
            Some("canceled".into())
        );
    }
    b.finish().await
}

#[tokio::test]
async fn price_overrides_round_trip() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let p = Price::from_usd_per_million(2.5, 10.0, Some(1.25))?;
        store.set_price("gpt-4o", &p).await?;
        store
            .set_price(
                "azure/gpt-4o",
                &Price::from_usd_per_million(3.0, 12.0, None)?,
            )
            .await?;
        store.set_price("gpt-4o", &p).await?;
        let all = store.list_prices().await?;
        assert_eq!(all.len(), 2);
        assert!(all.contains(&("gpt-4o".to_string(), p)));
        assert!(matches!(
            store.set_price("bad name", &p).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(store.delete_price("gpt-4o").await?);
        assert!(!store.delete_price("gpt-4o").await?);
    }
    b.finish().await
}

#[tokio::test]
async fn credits_are_idempotent_and_holds_end_once() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let c = consumer(store, "acme").await?;
        let usd = WalletUnit::Usd;
        let first = store
            .top_up(&c, usd, 5_000_000, Some("topup-1"), Some("card"))
            .await?;
        assert!(!first.replayed);
        assert_eq!(first.wallet.balance, 5_000_000);
        let again = store
            .top_up(&c, usd, 5_000_000, Some("topup-1"), Some("card"))
            .await?;
        assert!(again.replayed);
        assert_eq!(again.entry.id, first.entry.id);
        assert_eq!(
            store.wallet(&c, usd).await?.balance,
            5_000_000,
            "no double credit"
        );
        assert!(matches!(
            store.top_up(&c, usd, 1, Some("topup-1"), None).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.top_up(&c, usd, 0, None, None).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.top_up("ghost", usd, 1, None, None).await,
            Err(StoreError::NotFound(_))
        ));

        assert!(store.reserve("r1", &c, usd, 4_000_000).await?);
        assert!(
            !store.reserve("r2", &c, usd, 1_500_000).await?,
            "only 1.0 available"
        );
        assert!(store.reserve("r3", &c, usd, 1_000_000).await?);
        assert_eq!(store.wallet(&c, usd).await?.available(), 0);
        let s = store.settle("r1", 600_000).await?;
        assert_eq!(s.map(|s| s.charged), Some(600_000));
        assert_eq!(store.settle("r1", 600_000).await?, None, "settled once");
        assert!(!store.release("r1").await?);
        assert!(store.release("r3").await?);
        assert_eq!(
            store.settle("r3", 1).await?,
            None,
            "released holds are not charged"
        );
        let w = store.wallet(&c, usd).await?;
        assert_eq!((w.balance, w.reserved), (4_400_000, 0));

        // Actual above the hold: the rest is taken only from what is available.
        assert!(store.reserve("r4", &c, usd, 100).await?);
        assert_eq!(
            store
                .settle("r4", 250)
                .await?
                .map(|s| (s.charged, s.shortfall)),
            Some((250, 0))
        );
        let tokens = WalletUnit::Tokens;
        store.top_up(&c, tokens, 1000, None, None).await?;
        assert!(store.reserve("t1", &c, tokens, 900).await?);
        assert!(store.reserve("t2", &c, tokens, 100).await?);
        let s = store.settle("t1", 1200).await?;
        assert_eq!(s.map(|s| (s.charged, s.shortfall)), Some((900, 300)));

        store
            .refund(&c, usd, 250, Some("refund-1"), Some("goodwill"))
            .await?;
        assert!(store.reserve("old", &c, usd, 10).await?);
        assert_eq!(
            store
                .sweep_reservations(crate::columns::now_ms() + 1)
                .await?,
            2
        );
        assert_ledger_sums(store, &c, usd).await?;
        assert_ledger_sums(store, &c, tokens).await?;
    }
    b.finish().await
}

/// $5.00, each request holds $0.10 and costs $0.06, 1,000 requests at once through three
/// pools on one database (three gateway instances): never a cent more than was there.
#[tokio::test]
async fn concurrent_requests_through_three_instances_never_overspend() -> TestResult {
    let b = backends().await?;
    for (store, url) in &b.stores {
        let c = consumer(store, "acme").await?;
        // $0.06 per 1k tokens; each request uses 1,000.
        let p = store
            .create_plan(
                "default",
                "metered",
                &plan(json!({"kind": "metered", "overage_per_1k_micros": 60000, "wallet": "usd"})),
            )
            .await?;
        let sub = store.subscribe(&c, &p.id).await?;
        store
            .top_up(&c, WalletUnit::Usd, 5_000_000, None, None)
            .await?;
        let mut instances = vec![store.clone()];
        for _ in 0..2 {
            instances.push(Store::connect(url, Cipher::generate().0).await?);
        }
        let mut tasks = tokio::task::JoinSet::new();
        let record = |id: String, c: String, sub: (String, i64), spec: Plan| UsageInput {
            request_id: id,
            api: "default".into(),
            consumer_id: Some(c),
            model_requested: "gpt-4o".into(),
            status: 200,
            attempts: json!([]),
            prompt_tokens: 1000,
            subscription: Some(sub),
            plan: Some(spec),
            wallet: Some(WalletUnit::Usd),
            ..UsageInput::default()
        };
        // Half one request at a time, half group-committed in batches of ten.
        for i in 0..500 {
            let s = instances[i % 3].clone();
            let c = c.clone();
            let (sub, spec) = ((sub.id.clone(), sub.anchor_at), p.spec.clone());
            tasks.spawn(async move {
                let id = format!("req-{i}");
                if s.reserve(&id, &c, WalletUnit::Usd, 100_000).await? {
                    tokio::task::yield_now().await;
                    return match s.record_usage(&record(id, c, sub, spec)).await? {
                        Recorded::New(b) => {
                            assert_eq!(b.charge_micros, 60_000);
                            Ok::<_, StoreError>(1)
                        }
                        Recorded::Duplicate => Ok(0),
                    };
                }
                Ok(0)
            });
        }
        for t in 0..50 {
            let s = instances[t % 3].clone();
            let c = c.clone();
            let (sub, spec) = ((sub.id.clone(), sub.anchor_at), p.spec.clone());
            tasks.spawn(async move {
                let holds: Vec<crate::Hold> = (0..10)
                    .map(|k| crate::Hold {
                        request_id: format!("batch-{t}-{k}"),
                        consumer_id: c.clone(),
                        unit: WalletUnit::Usd,
                        amount: 100_000,
                    })
                    .collect();
                let got = s.reserve_batch(&holds).await?;
                tokio::task::yield_now().await;
                let batch: Vec<UsageInput> = holds
                    .into_iter()
                    .zip(got)
                    .filter(|(_, ok)| *ok)
                    .map(|(h, _)| record(h.request_id, c.clone(), sub.clone(), spec.clone()))
                    .collect();
                Ok(i64::try_from(s.record_usage_batch(&batch).await?).unwrap_or(0))
            });
        }
        let mut admitted = 0i64;
        while let Some(r) = tasks.join_next().await {
            admitted += r??;
        }
        let w = store.wallet(&c, WalletUnit::Usd).await?;
        assert!(
            admitted >= 50,
            "{:?}: only {admitted} admitted",
            store.backend()
        );
        assert_eq!(
            w.balance,
            5_000_000 - admitted * 60_000,
            "{:?}",
            store.backend()
        );
        assert!(w.balance >= 0 && w.reserved == 0);
        assert_ledger_sums(store, &c, WalletUnit::Usd).await?;
        for s in &instances[1..] {
            s.close().await;
        }
    }
    b.finish().await
}

#[tokio::test]
async fn a_usage_record_is_written_once_with_its_period_and_settlement() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let c = consumer(store, "acme").await?;
        let p = store
            .create_plan(
                "default",
                "metered",
                &plan(json!({"kind": "metered", "overage_per_1k_micros": 1000, "wallet": "usd"})),
            )
            .await?;
        let sub = store.subscribe(&c, &p.id).await?;
        store
            .top_up(&c, WalletUnit::Usd, 1_000_000, None, None)
            .await?;
        assert!(store.reserve("q1", &c, WalletUnit::Usd, 5_000).await?);
        let u = UsageInput {
            request_id: "q1".into(),
            created_at: 1_000,
            consumer_id: Some(c.clone()),
            key_id: Some("k1".into()),
            api: "default".into(),
            subscription: Some((sub.id.clone(), sub.anchor_at)),
            model_requested: "smart".into(),
            model: Some("gpt-4o".into()),
            provider: Some("openai".into()),
            prompt_tokens: 1200,
            completion_tokens: 800,
            cached_tokens: 200,
            estimated: true,
            cost_picos: 9_250_000_000,
            status: 200,
            latency_ms: 42,
            attempts: json!([{"provider": "openai", "status": 200}]),
            plan: Some(p.spec.clone()),
            wallet: Some(WalletUnit::Usd),
            event: true,
        };
        assert_eq!(
            store.record_usage(&u).await?,
            Recorded::New(crate::Billed {
                charge_micros: 2_000,
                wallet: crate::Settled {
                    charged: 2_000,
                    shortfall: 0
                }
            })
        );
        assert_eq!(store.record_usage(&u).await?, Recorded::Duplicate);
        let period = store.period_usage(&sub.id, sub.anchor_at).await?;
        assert_eq!(
            (period.tokens, period.charge, period.requests),
            (2000, 2000, 1)
        );
        let rec = store.usage_record("q1").await?.ok_or("record")?;
        assert!(rec.estimated);
        assert_eq!(rec.attempts, u.attempts);
        assert_eq!(rec.cost_picos, 9_250_000_000);
        assert_eq!(store.wallet(&c, WalletUnit::Usd).await?.balance, 998_000);

        let mut u2 = u.clone();
        u2.request_id = "q2".into();
        u2.created_at = 2_000;
        u2.wallet = None;
        u2.event = false;
        store.record_usage(&u2).await?;
        let lines = store.usage_lines(&c, 0, 10_000).await?;
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (
                lines[0].requests,
                lines[0].prompt_tokens,
                lines[0].charge_micros
            ),
            (2, 2400, 4000)
        );
        assert_eq!(store.list_usage(Some(&c), 0, 1_500, 10).await?.len(), 1);
        assert_eq!(store.list_usage(None, 0, 2_500, 10).await?.len(), 2);
        assert_ledger_sums(store, &c, WalletUnit::Usd).await?;

        // A batch: plain records in multi-row inserts (a duplicate skipped), settling ones
        // one by one, all in one transaction.
        let plain = |id: &str| UsageInput {
            request_id: id.into(),
            created_at: 3_000,
            api: "default".into(),
            model_requested: "m".into(),
            prompt_tokens: 5,
            status: 200,
            attempts: json!([]),
            ..UsageInput::default()
        };
        let mut batch: Vec<UsageInput> = (0..250).map(|i| plain(&format!("b{i}"))).collect();
        batch.push(plain("q1"));
        let mut settling = u.clone();
        settling.request_id = "q3".into();
        settling.wallet = None;
        settling.event = false;
        batch.push(settling);
        assert_eq!(
            store.record_usage_batch(&batch).await?,
            251,
            "250 plain + q3; q1 was there"
        );
        let rec = store.usage_record("b249").await?.ok_or("b249")?;
        assert_eq!(
            (rec.prompt_tokens, rec.status, rec.charge_micros),
            (5, 200, 0)
        );
        assert_eq!(
            store.usage_record("q3").await?.map(|r| r.charge_micros),
            Some(2000)
        );

        // The event was written with the record (q2 had none), and is claimed once.
        let events = store.list_events(10).await?;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].payload["request_id"], "q1");
        assert_eq!(events[0].payload["charge_micros"], 2000);
        let claimed = store.claim_events(10, 60_000).await?;
        assert_eq!(claimed.len(), 1);
        assert!(store.claim_events(10, 60_000).await?.is_empty(), "leased");
        store.event_failed(&claimed[0].id, "503", Some(0)).await?;
        let again = store.claim_events(10, 60_000).await?;
        assert_eq!(again.first().map(|e| e.attempts), Some(1));
        store.event_delivered(&again[0].id).await?;
        assert!(store.claim_events(10, 0).await?.is_empty());
        assert!(store.list_events(10).await?[0].delivered_at.is_some());

        // The webhook secret is sealed bound to its row and survives key rotation.
        let secret = wire::secret::Secret::new("whsec_0123456789abcdef");
        assert!(store.set_billing_webhook("ftp://x", &secret).await.is_err());
        store
            .set_billing_webhook("https://billing.example.com/hook", &secret)
            .await?;
        let (url, got) = store.billing_webhook().await?.ok_or("webhook")?;
        assert_eq!(
            (url.as_str(), got.expose()),
            ("https://billing.example.com/hook", secret.expose())
        );
    }
    b.finish().await
}

#[derive(Debug, Clone)]
enum Op {
    TopUp(i64),
    Refund(i64),
    Reserve(usize, i64),
    Settle(usize, i64),
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1i64..1_000).prop_map(Op::TopUp),
        (1i64..100).prop_map(Op::Refund),
        (0usize..8, 1i64..500).prop_map(|(r, a)| Op::Reserve(r, a)),
        (0usize..8, 0i64..700).prop_map(|(r, a)| Op::Settle(r, a)),
        (0usize..8).prop_map(Op::Release),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Random interleavings of every wallet operation: the balance is never negative, a hold
    /// never exceeds what was available, and the ledger always sums.
    #[test]
    fn wallet_operations_keep_the_ledger_summing(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("p.db").display());
            let store = Store::connect(&url, Cipher::generate().0).await.unwrap();
            store.migrate().await.unwrap();
            let c = consumer(&store, "p").await.unwrap();
            let usd = WalletUnit::Usd;
            // A tiny model of the wallet to compare against.
            let mut balance = 0i64;
            let mut holds: Vec<Option<(String, i64)>> = vec![None; 8];
            let held = |h: &Vec<Option<(String, i64)>>| h.iter().flatten().map(|x| x.1).sum::<i64>();
            for (round, op) in ops.into_iter().enumerate() {
                match op {
                    Op::TopUp(a) => { store.top_up(&c, usd, a, None, None).await.unwrap(); balance += a; }
                    Op::Refund(a) => { store.refund(&c, usd, a, None, None).await.unwrap(); balance += a; }
                    Op::Reserve(r, a) => {
                        if holds[r].is_some() { continue; }
                        let available = balance - held(&holds);
                        let id = format!("r{r}-{round}");
                        let ok = store.reserve(&id, &c, usd, a).await.unwrap();
                        assert_eq!(ok, a <= available);
                        if ok {
                            holds[r] = Some((id, a));
                        }
                    }
                    Op::Settle(r, actual) => {
                        if let Some((id, hold)) = holds[r].take() {
                            let available_after = balance - held(&holds) - hold;
                            let s = store.settle(&id, actual).await.unwrap().unwrap();
                            let extra = (actual - hold).max(0);
                            let expect = if extra <= available_after { actual } else { hold };
                            assert_eq!(s.charged, expect);
                            balance -= s.charged;
                        }
                    }
                    Op::Release(r) => {
                        if let Some((id, _)) = holds[r].take() {
                            assert!(store.release(&id).await.unwrap());
                        }
                    }
                }
                let w = store.wallet(&c, usd).await.unwrap();
                assert!(w.balance >= 0);
                assert_eq!(w.balance, balance);
                assert_eq!(w.reserved, held(&holds));
            }
            assert_ledger_sums(&store, &c, usd).await.unwrap();
            store.close().await;
        });
    }
}

/// The group-committed path (holds and usage records in batches) charges, holds and ledgers
/// exactly what the one-request-at-a-time path does, on both backends: the same requests, in
/// the same order, for two consumers subscribed to the same metered plan with an allowance,
/// whose wallets run dry part way (refused holds, usage beyond a hold partly uncovered,
/// failed requests released, duplicates).
#[tokio::test]
async fn batched_holds_and_settlements_equal_one_by_one() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let spec = plan(json!({"kind": "metered", "allowance_tokens": 3000,
            "overage_per_1k_micros": 50000, "wallet": "usd"}));
        let p = store.create_plan("default", "metered", &spec).await?;
        let (one, many) = (
            consumer(store, "one").await?,
            consumer(store, "many").await?,
        );
        let mut subs = Vec::new();
        for c in [&one, &many] {
            let s = store.subscribe(c, &p.id).await?;
            subs.push((s.id, s.anchor_at));
            store
                .top_up(c, WalletUnit::Usd, 1_000_000, None, None)
                .await?;
        }
        // A fixed-seed generator: holds of 10k–60k µUSD, usage of 0–2,000 tokens.
        let mut seed = 0x2545_f491_u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let reqs: Vec<(i64, i64, bool)> = (0..120)
            .map(|_| {
                let hold = 10_000 + i64::try_from(next(50_000)).unwrap_or(0);
                let tokens = i64::try_from(next(2_000)).unwrap_or(0);
                (hold, tokens, next(10) != 0)
            })
            .collect();
        let usage = |c: &str, sub: &(String, i64), i: usize, tokens: i64, ok: bool| UsageInput {
            request_id: format!("{c}-{i}"),
            api: "default".into(),
            consumer_id: Some(c.to_string()),
            model_requested: "gpt-4o".into(),
            status: if ok { 200 } else { 502 },
            attempts: json!([]),
            prompt_tokens: if ok { tokens } else { 0 },
            subscription: Some(sub.clone()),
            plan: ok.then(|| spec.clone()),
            wallet: ok.then_some(WalletUnit::Usd),
            event: ok,
            ..UsageInput::default()
        };
        // The same batches both ways: all holds of a batch, then all its records (requests
        // in flight together), one call at a time or group-committed.
        let mut bounds = Vec::new();
        let mut i = 0;
        while i < reqs.len() {
            let end = (i + 1 + usize::try_from(next(17)).unwrap_or(0)).min(reqs.len());
            bounds.push(i..end);
            i = end;
        }
        let mut held_one = Vec::new();
        for r in &bounds {
            let mut held = Vec::new();
            for j in r.clone() {
                let id = format!("{one}-{j}");
                held.push(store.reserve(&id, &one, WalletUnit::Usd, reqs[j].0).await?);
            }
            for (j, h) in r.clone().zip(&held) {
                if *h {
                    store
                        .record_usage(&usage(&one, &subs[0], j, reqs[j].1, reqs[j].2))
                        .await?;
                }
            }
            held_one.extend(held);
        }
        let mut held_many = Vec::new();
        for r in &bounds {
            let holds: Vec<crate::Hold> = r
                .clone()
                .map(|j| crate::Hold {
                    request_id: format!("{many}-{j}"),
                    consumer_id: many.clone(),
                    unit: WalletUnit::Usd,
                    amount: reqs[j].0,
                })
                .collect();
            let got = store.reserve_batch(&holds).await?;
            let mut batch: Vec<UsageInput> = r
                .clone()
                .zip(&got)
                .filter(|(_, h)| **h)
                .map(|(j, _)| usage(&many, &subs[1], j, reqs[j].1, reqs[j].2))
                .collect();
            // A retried record (already written) and a repeat inside the batch change nothing.
            if let Some(first) = batch.first().cloned() {
                batch.push(first);
            }
            if let Some(j) = held_many.iter().position(|h| *h) {
                batch.push(usage(&many, &subs[1], j, reqs[j].1, reqs[j].2));
            }
            store.record_usage_batch(&batch).await?;
            held_many.extend(got);
        }
        assert_eq!(
            held_one,
            held_many,
            "{:?}: the same holds admitted",
            store.backend()
        );
        assert!(
            held_one.iter().any(|h| !h),
            "the wallet ran dry in the scenario"
        );
        let (w1, w2) = (
            store.wallet(&one, WalletUnit::Usd).await?,
            store.wallet(&many, WalletUnit::Usd).await?,
        );
        assert_eq!(
            (w1.balance, w1.reserved),
            (w2.balance, w2.reserved),
            "{:?}",
            store.backend()
        );
        let (p1, p2) = (
            store.period_usage(&subs[0].0, subs[0].1).await?,
            store.period_usage(&subs[1].0, subs[1].1).await?,
        );
        assert_eq!(p1, p2);
        assert!(p1.charge > 0);
        for (i, _) in reqs.iter().enumerate() {
            let a = store.usage_record(&format!("{one}-{i}")).await?;
            let b = store.usage_record(&format!("{many}-{i}")).await?;
            assert_eq!(
                a.map(|r| (r.charge_micros, r.prompt_tokens, r.status)),
                b.map(|r| (r.charge_micros, r.prompt_tokens, r.status)),
                "request {i}"
            );
        }
        let settles = |c: String| async move {
            let mut v: Vec<(String, String, i64)> = store
                .ledger(&c)
                .await?
                .into_iter()
                .map(|e| {
                    let rid = e.request_id.unwrap_or_default();
                    let n = rid.rsplit('-').next().unwrap_or("").to_string();
                    (n, e.kind, e.amount)
                })
                .collect();
            v.sort();
            Ok::<_, StoreError>(v)
        };
        assert_eq!(settles(one.clone()).await?, settles(many.clone()).await?);
        let events = store.list_events(1000).await?;
        let count = |c: &str| {
            events
                .iter()
                .filter(|e| e.payload["consumer_id"] == c)
                .count()
        };
        assert_eq!(count(&one), count(&many));
        assert_ledger_sums(store, &one, WalletUnit::Usd).await?;
        assert_ledger_sums(store, &many, WalletUnit::Usd).await?;
    }
    b.finish().await
}
