//! Plans, subscriptions, price overrides, wallets and usage records.
//!
//! The wallet is the part that must hold under concurrency across instances, so every change
//! to a balance is one conditional `UPDATE` (`… WHERE balance - reserved >= $amount`) inside
//! the transaction that appends its ledger row: two requests can never both take the last
//! dollar, on SQLite (one writer) or PostgreSQL (row lock, condition re-checked). A request's
//! reservation row is deleted by whichever of settle and release comes first; the other finds
//! nothing and does nothing, so a request is never charged twice.

use billing::{Plan, Price, WalletUnit};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::columns::{bool_column, json_column, json_text, new_id, now_ms};
use crate::{Store, StoreError};

pub(crate) fn unit_str(u: WalletUnit) -> &'static str {
    match u {
        WalletUnit::Usd => "usd",
        WalletUnit::Tokens => "tokens",
    }
}

pub(crate) fn unit_of(s: &str) -> Result<WalletUnit, StoreError> {
    match s {
        "usd" => Ok(WalletUnit::Usd),
        "tokens" => Ok(WalletUnit::Tokens),
        other => Err(StoreError::Invalid(format!("unknown wallet unit {other}"))),
    }
}

// --- plans -----------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanRecord {
    pub id: String,
    pub api: String,
    pub name: String,
    pub spec: Plan,
    pub created_at: i64,
    pub updated_at: i64,
}

fn plan_row(row: &AnyRow) -> Result<PlanRecord, StoreError> {
    Ok(PlanRecord {
        id: row.try_get("id")?,
        api: row.try_get("api")?,
        name: row.try_get("name")?,
        spec: json_column(row, "spec")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn check_plan(api: &str, name: &str, spec: &Plan) -> Result<(), StoreError> {
    if api.trim().is_empty() || name.trim().is_empty() || name.len() > 100 {
        return Err(StoreError::Invalid(
            "plan api and name must be non-empty (name ≤ 100 characters)".into(),
        ));
    }
    spec.validate()
        .map_err(|e| StoreError::Invalid(format!("plan: {e}")))
}

// --- subscriptions ---------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub id: String,
    pub consumer_id: String,
    pub api: String,
    pub plan_id: String,
    pub status: String,
    pub anchor_at: i64,
    pub plan_changed_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! sub_columns {
    () => {
        "id, consumer_id, api, plan_id, status, anchor_at, plan_changed_at, created_at, updated_at"
    };
}

fn sub_row(row: &AnyRow) -> Result<SubscriptionRecord, StoreError> {
    Ok(SubscriptionRecord {
        id: row.try_get("id")?,
        consumer_id: row.try_get("consumer_id")?,
        api: row.try_get("api")?,
        plan_id: row.try_get("plan_id")?,
        status: row.try_get("status")?,
        anchor_at: row.try_get("anchor_at")?,
        plan_changed_at: row.try_get("plan_changed_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A plan that was in force for part of a subscription's life.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlanSpan {
    pub plan_id: String,
    pub from: i64,
}

// --- wallets ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct WalletRecord {
    pub unit: WalletUnit,
    pub balance: i64,
    pub reserved: i64,
}

impl WalletRecord {
    pub fn available(&self) -> i64 {
        self.balance - self.reserved
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: String,
    pub consumer_id: String,
    pub unit: WalletUnit,
    pub kind: String,
    pub amount: i64,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub note: Option<String>,
    pub created_at: i64,
}

fn ledger_row(row: &AnyRow) -> Result<LedgerEntry, StoreError> {
    let unit: String = row.try_get("unit")?;
    Ok(LedgerEntry {
        id: row.try_get("id")?,
        consumer_id: row.try_get("consumer_id")?,
        unit: unit_of(&unit)?,
        kind: row.try_get("kind")?,
        amount: row.try_get("amount")?,
        request_id: row.try_get("request_id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
    })
}

macro_rules! ledger_columns {
    () => {
        "id, consumer_id, unit, kind, amount, request_id, idempotency_key, note, created_at"
    };
}

/// A credit (top-up or refund) and whether it was a replay of an earlier one with the same
/// idempotency key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Credit {
    pub entry: LedgerEntry,
    pub replayed: bool,
    pub wallet: WalletRecord,
}

/// How a settlement ended.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Settled {
    /// What the wallet was charged.
    pub charged: i64,
    /// Usage the wallet could not cover (a reservation smaller than the actual cost, and no
    /// available balance for the rest). Never taken from funds that were not there.
    pub shortfall: i64,
}

// --- usage -----------------------------------------------------------------------------------

/// One logical request, as settled.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct UsageInput {
    pub request_id: String,
    pub created_at: i64,
    pub consumer_id: Option<String>,
    pub key_id: Option<String>,
    pub api: String,
    /// The subscription and the start of its current period, when the consumer has one.
    pub subscription: Option<(String, i64)>,
    pub model_requested: String,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub estimated: bool,
    pub cost_picos: i64,
    pub status: i64,
    pub latency_ms: i64,
    pub attempts: Value,
    /// The plan the consumer is charged under (with `subscription`); the charge is computed
    /// from the period's running total inside the recording transaction, so concurrent
    /// requests are charged exactly what the period total says.
    pub plan: Option<Plan>,
    /// The wallet this request's hold is settled from: the charge for `usd`, the tokens for
    /// `tokens`. `None` releases any hold.
    pub wallet: Option<WalletUnit>,
    /// Write a `usage.settled` billing event with the record (a webhook is configured).
    pub event: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UsageRecord {
    pub request_id: String,
    pub created_at: i64,
    pub consumer_id: Option<String>,
    pub key_id: Option<String>,
    pub api: String,
    pub subscription_id: Option<String>,
    pub model_requested: String,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub estimated: bool,
    pub cost_picos: i64,
    pub charge_micros: i64,
    pub status: i64,
    pub latency_ms: i64,
    pub attempts: Value,
}

macro_rules! usage_columns {
    () => {
        "request_id, created_at, consumer_id, key_id, api, subscription_id, \
     model_requested, model, provider, prompt_tokens, completion_tokens, cached_tokens, \
     estimated, cost_picos, charge_micros, status, latency_ms, attempts"
    };
}

fn usage_row(row: &AnyRow) -> Result<UsageRecord, StoreError> {
    Ok(UsageRecord {
        request_id: row.try_get("request_id")?,
        created_at: row.try_get("created_at")?,
        consumer_id: row.try_get("consumer_id")?,
        key_id: row.try_get("key_id")?,
        api: row.try_get("api")?,
        subscription_id: row.try_get("subscription_id")?,
        model_requested: row.try_get("model_requested")?,
        model: row.try_get("model")?,
        provider: row.try_get("provider")?,
        prompt_tokens: row.try_get("prompt_tokens")?,
        completion_tokens: row.try_get("completion_tokens")?,
        cached_tokens: row.try_get("cached_tokens")?,
        estimated: bool_column(row, "estimated")?,
        cost_picos: row.try_get("cost_picos")?,
        charge_micros: row.try_get("charge_micros")?,
        status: row.try_get("status")?,
        latency_ms: row.try_get("latency_ms")?,
        attempts: json_column(row, "attempts")?,
    })
}

/// Whether a usage record was new or a duplicate of one already settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New(Billed),
    Duplicate,
}

/// What recording a request charged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Billed {
    /// The consumer charge under the plan, µUSD.
    pub charge_micros: i64,
    pub wallet: Settled,
}

/// Period totals of a subscription.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct PeriodUsage {
    pub tokens: i64,
    pub charge: i64,
    pub requests: i64,
}

/// Sums of usage rows over a time range, by model.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UsageLine {
    pub model: String,
    pub provider: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_picos: i64,
    pub charge_micros: i64,
}

impl Store {
    // --- plans -------------------------------------------------------------------------------

    pub async fn create_plan(
        &self,
        api: &str,
        name: &str,
        spec: &Plan,
    ) -> Result<PlanRecord, StoreError> {
        check_plan(api, name, spec)?;
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO plans (id, api, name, spec, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id, api, name, spec, created_at, updated_at",
        )
        .bind(new_id())
        .bind(api)
        .bind(name)
        .bind(json_text(spec)?)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        plan_row(&row)
    }

    pub async fn update_plan(&self, id: &str, spec: &Plan) -> Result<PlanRecord, StoreError> {
        spec.validate()
            .map_err(|e| StoreError::Invalid(format!("plan: {e}")))?;
        let row = sqlx::query(
            "UPDATE plans SET spec = $2, updated_at = $3 WHERE id = $1 \
             RETURNING id, api, name, spec, created_at, updated_at",
        )
        .bind(id)
        .bind(json_text(spec)?)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(plan_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("plan {id}")))
    }

    pub async fn get_plan(&self, id: &str) -> Result<Option<PlanRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, api, name, spec, created_at, updated_at FROM plans WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(plan_row).transpose()
    }

    pub async fn list_plans(&self, api: Option<&str>) -> Result<Vec<PlanRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, api, name, spec, created_at, updated_at FROM plans \
             WHERE (CAST($1 AS TEXT) IS NULL OR api = $1) ORDER BY api, name",
        )
        .bind(api)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(plan_row).collect()
    }

    /// Deletes a plan no subscription uses; [`StoreError::Conflict`] while one does.
    pub async fn delete_plan(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let used: i64 = sqlx::query("SELECT COUNT(*) AS n FROM subscriptions WHERE plan_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if used > 0 {
            return Err(StoreError::Conflict(format!(
                "plan {id} has {used} subscription(s); move them to another plan first"
            )));
        }
        let gone = sqlx::query("DELETE FROM plans WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(gone > 0)
    }

    // --- subscriptions -----------------------------------------------------------------------

    /// Subscribes a consumer to a plan of `api`, or moves an existing subscription to it (the
    /// change takes effect at once and is kept for pro-rating; the period anchor stays).
    pub async fn subscribe(
        &self,
        consumer_id: &str,
        plan_id: &str,
    ) -> Result<SubscriptionRecord, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let api: Option<String> = sqlx::query("SELECT api FROM plans WHERE id = $1")
            .bind(plan_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("api"))
            .transpose()?;
        let Some(api) = api else {
            return Err(StoreError::NotFound(format!("plan {plan_id}")));
        };
        let exists: i64 = sqlx::query("SELECT COUNT(*) AS n FROM consumers WHERE id = $1")
            .bind(consumer_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if exists == 0 {
            return Err(StoreError::NotFound(format!("consumer {consumer_id}")));
        }
        let row = sqlx::query(concat!("INSERT INTO subscriptions (id, consumer_id, api, plan_id, status, anchor_at, \
             plan_changed_at, created_at, updated_at) VALUES ($1, $2, $3, $4, 'active', $5, $5, $5, $5) \
             ON CONFLICT (consumer_id, api) DO UPDATE SET plan_id = excluded.plan_id, \
             status = 'active', plan_changed_at = excluded.plan_changed_at, \
             updated_at = excluded.updated_at RETURNING ", sub_columns!()))
        .bind(new_id())
        .bind(consumer_id)
        .bind(&api)
        .bind(plan_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let sub = sub_row(&row)?;
        sqlx::query(
            "INSERT INTO subscription_changes (id, subscription_id, plan_id, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(new_id())
        .bind(&sub.id)
        .bind(plan_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(sub)
    }

    pub async fn subscription(
        &self,
        consumer_id: &str,
        api: &str,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            sub_columns!(),
            " FROM subscriptions WHERE consumer_id = $1 AND api = $2"
        ))
        .bind(consumer_id)
        .bind(api)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sub_row).transpose()
    }

    pub async fn list_subscriptions(
        &self,
        consumer_id: &str,
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            sub_columns!(),
            " FROM subscriptions WHERE consumer_id = $1 ORDER BY api"
        ))
        .bind(consumer_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sub_row).collect()
    }

    pub async fn cancel_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE subscriptions SET status = 'canceled', updated_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// The plans a subscription had, oldest first.
    pub async fn plan_history(&self, subscription_id: &str) -> Result<Vec<PlanSpan>, StoreError> {
        let rows = sqlx::query(
            "SELECT plan_id, at FROM subscription_changes WHERE subscription_id = $1 ORDER BY at, id",
        )
        .bind(subscription_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PlanSpan {
                    plan_id: r.try_get("plan_id")?,
                    from: r.try_get("at")?,
                })
            })
            .collect()
    }

    pub async fn period_usage(
        &self,
        subscription_id: &str,
        period_start: i64,
    ) -> Result<PeriodUsage, StoreError> {
        let row = sqlx::query(
            "SELECT tokens, charge, requests FROM period_usage \
             WHERE subscription_id = $1 AND period_start = $2",
        )
        .bind(subscription_id)
        .bind(period_start)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(PeriodUsage {
                tokens: r.try_get("tokens")?,
                charge: r.try_get("charge")?,
                requests: r.try_get("requests")?,
            }),
            None => Ok(PeriodUsage::default()),
        }
    }

    // --- prices ------------------------------------------------------------------------------

    pub async fn set_price(&self, model: &str, price: &Price) -> Result<(), StoreError> {
        billing::prices::validate_model_key(model)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let as_i64 =
            |v: u64| i64::try_from(v).map_err(|_| StoreError::Invalid("price out of range".into()));
        sqlx::query(
            "INSERT INTO price_overrides (model, input, output, cached_input, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model) DO UPDATE SET input = excluded.input, \
             output = excluded.output, cached_input = excluded.cached_input, \
             updated_at = excluded.updated_at",
        )
        .bind(model)
        .bind(as_i64(price.input)?)
        .bind(as_i64(price.output)?)
        .bind(price.cached_input.map(as_i64).transpose()?)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_price(&self, model: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM price_overrides WHERE model = $1")
            .bind(model)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    pub async fn list_prices(&self) -> Result<Vec<(String, Price)>, StoreError> {
        let rows = sqlx::query(
            "SELECT model, input, output, cached_input FROM price_overrides ORDER BY model",
        )
        .fetch_all(&self.pool)
        .await?;
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("model")?,
                    Price {
                        input: u(r.try_get("input")?),
                        output: u(r.try_get("output")?),
                        cached_input: r.try_get::<Option<i64>, _>("cached_input")?.map(u),
                    },
                ))
            })
            .collect()
    }

    // --- wallets -----------------------------------------------------------------------------

    pub async fn wallet(
        &self,
        consumer_id: &str,
        unit: WalletUnit,
    ) -> Result<WalletRecord, StoreError> {
        let row = sqlx::query(
            "SELECT balance, reserved FROM wallets WHERE consumer_id = $1 AND unit = $2",
        )
        .bind(consumer_id)
        .bind(unit_str(unit))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => WalletRecord {
                unit,
                balance: r.try_get("balance")?,
                reserved: r.try_get("reserved")?,
            },
            None => WalletRecord {
                unit,
                balance: 0,
                reserved: 0,
            },
        })
    }

    /// Adds prepaid funds. The same idempotency key again returns the first credit unchanged
    /// (`replayed`); with a different amount or consumer it is a conflict.
    pub async fn top_up(
        &self,
        consumer_id: &str,
        unit: WalletUnit,
        amount: i64,
        idempotency_key: Option<&str>,
        note: Option<&str>,
    ) -> Result<Credit, StoreError> {
        self.credit("top_up", consumer_id, unit, amount, idempotency_key, note)
            .await
    }

    /// Gives money back (a goodwill credit or a charge reversed), idempotent like a top-up.
    pub async fn refund(
        &self,
        consumer_id: &str,
        unit: WalletUnit,
        amount: i64,
        idempotency_key: Option<&str>,
        note: Option<&str>,
    ) -> Result<Credit, StoreError> {
        self.credit("refund", consumer_id, unit, amount, idempotency_key, note)
            .await
    }

    async fn credit(
        &self,
        kind: &'static str,
        consumer_id: &str,
        unit: WalletUnit,
        amount: i64,
        idempotency_key: Option<&str>,
        note: Option<&str>,
    ) -> Result<Credit, StoreError> {
        if amount <= 0 || amount > 1_000_000_000_000_000 {
            return Err(StoreError::Invalid(
                "amount must be positive and at most 10⁹ units".into(),
            ));
        }
        if idempotency_key.is_some_and(|k| k.is_empty() || k.len() > 200) {
            return Err(StoreError::Invalid(
                "Idempotency-Key must be 1 to 200 characters".into(),
            ));
        }
        if let Some(k) = idempotency_key
            && let Some(prev) = self.ledger_by_idempotency(k).await?
        {
            return self.replay(prev, kind, consumer_id, unit, amount).await;
        }
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let exists: i64 = sqlx::query("SELECT COUNT(*) AS n FROM consumers WHERE id = $1")
            .bind(consumer_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if exists == 0 {
            return Err(StoreError::NotFound(format!("consumer {consumer_id}")));
        }
        let inserted = sqlx::query(concat!(
            "INSERT INTO wallet_ledger (",
            ledger_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8) \
             RETURNING ",
            ledger_columns!()
        ))
        .bind(new_id())
        .bind(consumer_id)
        .bind(unit_str(unit))
        .bind(kind)
        .bind(amount)
        .bind(idempotency_key)
        .bind(note)
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let entry = match inserted {
            Ok(row) => ledger_row(&row)?,
            Err(e) => {
                let e = StoreError::from(e);
                drop(tx);
                // A concurrent request with the same key got there first.
                if let (StoreError::Conflict(_), Some(k)) = (&e, idempotency_key)
                    && let Some(prev) = self.ledger_by_idempotency(k).await?
                {
                    return self.replay(prev, kind, consumer_id, unit, amount).await;
                }
                return Err(e);
            }
        };
        let row = sqlx::query(
            "INSERT INTO wallets (consumer_id, unit, balance, reserved, updated_at) \
             VALUES ($1, $2, $3, 0, $4) ON CONFLICT (consumer_id, unit) DO UPDATE SET \
             balance = wallets.balance + excluded.balance, updated_at = excluded.updated_at \
             RETURNING balance, reserved",
        )
        .bind(consumer_id)
        .bind(unit_str(unit))
        .bind(amount)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let wallet = WalletRecord {
            unit,
            balance: row.try_get("balance")?,
            reserved: row.try_get("reserved")?,
        };
        tx.commit().await?;
        Ok(Credit {
            entry,
            replayed: false,
            wallet,
        })
    }

    async fn ledger_by_idempotency(&self, key: &str) -> Result<Option<LedgerEntry>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            ledger_columns!(),
            " FROM wallet_ledger WHERE idempotency_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ledger_row).transpose()
    }

    async fn replay(
        &self,
        prev: LedgerEntry,
        kind: &str,
        consumer_id: &str,
        unit: WalletUnit,
        amount: i64,
    ) -> Result<Credit, StoreError> {
        if prev.kind != kind
            || prev.consumer_id != consumer_id
            || prev.unit != unit
            || prev.amount != amount
        {
            return Err(StoreError::Conflict(
                "this Idempotency-Key was already used for a different credit".into(),
            ));
        }
        Ok(Credit {
            wallet: self.wallet(consumer_id, unit).await?,
            entry: prev,
            replayed: true,
        })
    }

    /// Holds `amount` for a request if the wallet has it available; `false` (and nothing
    /// written) when it does not. A request id holds at most once.
    pub async fn reserve(
        &self,
        request_id: &str,
        consumer_id: &str,
        unit: WalletUnit,
        amount: i64,
    ) -> Result<bool, StoreError> {
        if amount <= 0 {
            return Err(StoreError::Invalid("a reservation must be positive".into()));
        }
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let held = sqlx::query(
            "UPDATE wallets SET reserved = reserved + $3, updated_at = $4 \
             WHERE consumer_id = $1 AND unit = $2 AND balance - reserved >= $3",
        )
        .bind(consumer_id)
        .bind(unit_str(unit))
        .bind(amount)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if held == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO wallet_reservations (request_id, consumer_id, unit, amount, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(request_id)
        .bind(consumer_id)
        .bind(unit_str(unit))
        .bind(amount)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_ledger(
            &mut tx,
            consumer_id,
            unit,
            "reserve",
            amount,
            request_id,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends a request's hold without a charge (the request failed or was never sent). `false`
    /// if there was no live hold.
    pub async fn release(&self, request_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let ended = end_hold(&mut tx, request_id, None, now_ms()).await?;
        tx.commit().await?;
        Ok(ended.is_some())
    }

    /// Settles a request's hold to `actual` outside a usage record (see [`Store::record_usage`]
    /// for the normal path). `None` if there was no live hold.
    pub async fn settle(
        &self,
        request_id: &str,
        actual: i64,
    ) -> Result<Option<Settled>, StoreError> {
        let mut tx = self.begin_write().await?;
        let ended = end_hold(&mut tx, request_id, Some(actual), now_ms()).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Releases holds older than `older_than_ms` (their requests vanished: a crash, a lost
    /// task). Returns how many were released.
    pub async fn sweep_reservations(&self, older_than_ms: i64) -> Result<usize, StoreError> {
        let rows = sqlx::query("SELECT request_id FROM wallet_reservations WHERE created_at < $1")
            .bind(older_than_ms)
            .fetch_all(&self.pool)
            .await?;
        let mut n = 0;
        for r in rows {
            let id: String = r.try_get("request_id")?;
            if self.release(&id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    pub async fn ledger(&self, consumer_id: &str) -> Result<Vec<LedgerEntry>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            ledger_columns!(),
            " FROM wallet_ledger WHERE consumer_id = $1 ORDER BY created_at, id"
        ))
        .bind(consumer_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ledger_row).collect()
    }

    /// Live holds, summed, for a consumer's wallet (for the ledger invariant).
    pub async fn reserved_total(
        &self,
        consumer_id: &str,
        unit: WalletUnit,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS n FROM wallet_reservations \
             WHERE consumer_id = $1 AND unit = $2",
        )
        .bind(consumer_id)
        .bind(unit_str(unit))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    // --- usage -------------------------------------------------------------------------------

    /// Writes a request's usage record, adds it to its subscription period and settles its
    /// wallet hold, all in one transaction: either everything is recorded or nothing is. A
    /// request id recorded before is a [`Recorded::Duplicate`] and changes nothing.
    pub async fn record_usage(&self, u: &UsageInput) -> Result<Recorded, StoreError> {
        let mut tx = self.begin_write().await?;
        let r = record_in(&mut tx, u).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Records many requests in one transaction (group commit: one disk sync for the batch),
    /// returning how many were new. Multi-row statements throughout: requests with nothing to
    /// settle in plain inserts, the others with one statement per period and per wallet
    /// touched (see [`crate::batch`]). If any fails, none is recorded and the error is
    /// returned; the caller retries them one by one.
    pub async fn record_usage_batch(&self, batch: &[UsageInput]) -> Result<usize, StoreError> {
        let (plain, settling): (Vec<&UsageInput>, Vec<&UsageInput>) = batch
            .iter()
            .partition(|u| u.subscription.is_none() && !u.event);
        let mut tx = self.begin_write().await?;
        let mut new = 0;
        for chunk in crate::batch::chunks(&plain) {
            new += insert_plain(&mut tx, self.backend(), chunk).await?;
        }
        new += crate::batch::settle_many(&mut tx, self.backend(), &settling).await?;
        tx.commit().await?;
        Ok(new)
    }

    pub async fn usage_record(&self, request_id: &str) -> Result<Option<UsageRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            usage_columns!(),
            " FROM usage_records WHERE request_id = $1"
        ))
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(usage_row).transpose()
    }

    pub async fn list_usage(
        &self,
        consumer_id: Option<&str>,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            usage_columns!(),
            " FROM usage_records WHERE (CAST($1 AS TEXT) IS NULL OR consumer_id = $1) \
             AND created_at >= $2 AND created_at < $3 ORDER BY created_at DESC, request_id LIMIT $4"
        ))
        .bind(consumer_id)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(usage_row).collect()
    }

    /// A consumer's usage in `[from, to)`, summed by model and provider.
    pub async fn usage_lines(
        &self,
        consumer_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<UsageLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT COALESCE(model, model_requested) AS m, COALESCE(provider, '') AS p, \
             COUNT(*) AS requests, CAST(SUM(prompt_tokens) AS BIGINT) AS pt, CAST(SUM(completion_tokens) AS BIGINT) AS ct, \
             CAST(SUM(cached_tokens) AS BIGINT) AS cached, CAST(SUM(cost_picos) AS BIGINT) AS cost, CAST(SUM(charge_micros) AS BIGINT) AS charge \
             FROM usage_records WHERE consumer_id = $1 AND created_at >= $2 AND created_at < $3 \
             GROUP BY COALESCE(model, model_requested), COALESCE(provider, '') ORDER BY m, p",
        )
        .bind(consumer_id)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageLine {
                    model: r.try_get("m")?,
                    provider: r.try_get("p")?,
                    requests: r.try_get("requests")?,
                    prompt_tokens: r.try_get("pt")?,
                    completion_tokens: r.try_get("ct")?,
                    cached_tokens: r.try_get("cached")?,
                    cost_picos: r.try_get("cost")?,
                    charge_micros: r.try_get("charge")?,
                })
            })
            .collect()
    }
}

/// Usage records with nothing to settle, in one statement.
async fn insert_plain(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: crate::Backend,
    rows: &[&UsageInput],
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        concat!(
            "INSERT INTO usage_records (",
            usage_columns!(),
            ") VALUES {} ON CONFLICT (request_id) DO NOTHING"
        ),
        crate::batch::placeholders(backend, rows.len(), 18)
    );
    // Only placeholders are interpolated; every value is bound.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for u in rows {
        q = q
            .bind(u.request_id.clone())
            .bind(u.created_at)
            .bind(u.consumer_id.clone())
            .bind(u.key_id.clone())
            .bind(u.api.clone())
            .bind(Option::<String>::None)
            .bind(u.model_requested.clone())
            .bind(u.model.clone())
            .bind(u.provider.clone())
            .bind(u.prompt_tokens)
            .bind(u.completion_tokens)
            .bind(u.cached_tokens)
            .bind(u.estimated)
            .bind(u.cost_picos)
            .bind(0_i64)
            .bind(u.status)
            .bind(u.latency_ms)
            .bind(json_text(&u.attempts)?);
    }
    let n = q.execute(&mut **tx).await?.rows_affected();
    Ok(usize::try_from(n).unwrap_or(0))
}

/// One usage record with its period total and wallet settlement, inside `tx`.
async fn record_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    u: &UsageInput,
) -> Result<Recorded, StoreError> {
    let inserted = sqlx::query(concat!(
        "INSERT INTO usage_records (",
        usage_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
         $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) ON CONFLICT (request_id) DO NOTHING"
    ))
    .bind(&u.request_id)
    .bind(u.created_at)
    .bind(&u.consumer_id)
    .bind(&u.key_id)
    .bind(&u.api)
    .bind(u.subscription.as_ref().map(|s| s.0.clone()))
    .bind(&u.model_requested)
    .bind(&u.model)
    .bind(&u.provider)
    .bind(u.prompt_tokens)
    .bind(u.completion_tokens)
    .bind(u.cached_tokens)
    .bind(u.estimated)
    .bind(u.cost_picos)
    .bind(0_i64)
    .bind(u.status)
    .bind(u.latency_ms)
    .bind(json_text(&u.attempts)?)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(Recorded::Duplicate);
    }
    let tokens = u.prompt_tokens.saturating_add(u.completion_tokens).max(0);
    let mut charge = 0;
    if let Some((sub, start)) = &u.subscription {
        // The upsert locks the period row (PostgreSQL) or runs under the write lock
        // (SQLite), so `after` is this request's exact place in the period.
        let after: i64 = sqlx::query(
            "INSERT INTO period_usage (subscription_id, period_start, tokens, charge, requests) \
             VALUES ($1, $2, $3, 0, 1) ON CONFLICT (subscription_id, period_start) DO UPDATE SET \
             tokens = period_usage.tokens + excluded.tokens, \
             requests = period_usage.requests + 1 RETURNING tokens",
        )
        .bind(sub)
        .bind(start)
        .bind(tokens)
        .fetch_one(&mut **tx)
        .await?
        .try_get("tokens")?;
        if let Some(plan) = &u.plan {
            let t = u64::try_from(tokens).unwrap_or(0);
            let before = u64::try_from(after - tokens).unwrap_or(0);
            charge = plan.request_charge(before, t);
        }
        if charge > 0 {
            sqlx::query(
                "UPDATE period_usage SET charge = charge + $3 \
                 WHERE subscription_id = $1 AND period_start = $2",
            )
            .bind(sub)
            .bind(start)
            .bind(charge)
            .execute(&mut **tx)
            .await?;
            sqlx::query("UPDATE usage_records SET charge_micros = $2 WHERE request_id = $1")
                .bind(&u.request_id)
                .bind(charge)
                .execute(&mut **tx)
                .await?;
        }
    }
    let now = now_ms();
    let draw = match u.wallet {
        Some(WalletUnit::Usd) => Some(charge),
        Some(WalletUnit::Tokens) => Some(tokens),
        None => None,
    };
    let settled = end_hold(tx, &u.request_id, draw, now)
        .await?
        .unwrap_or_default();
    if u.event {
        let payload = settled_event(u, charge, settled.charged);
        crate::events::enqueue(tx, "usage.settled", &payload).await?;
    }
    Ok(Recorded::New(Billed {
        charge_micros: charge,
        wallet: settled,
    }))
}

/// The `usage.settled` billing event of a recorded request.
pub(crate) fn settled_event(u: &UsageInput, charge: i64, wallet_charged: i64) -> Value {
    serde_json::json!({
        "type": "usage.settled", "request_id": u.request_id, "created_at": u.created_at,
        "consumer_id": u.consumer_id, "key_id": u.key_id, "api": u.api,
        "subscription_id": u.subscription.as_ref().map(|s| &s.0),
        "model": u.model.as_deref().unwrap_or(&u.model_requested), "provider": u.provider,
        "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
        "cached_tokens": u.cached_tokens, "estimated": u.estimated, "status": u.status,
        "charge_micros": charge, "wallet_charged": wallet_charged,
        "cost_usd": billing::Picos(u128::try_from(u.cost_picos).unwrap_or(0)).to_string(),
    })
}

async fn insert_ledger(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    consumer_id: &str,
    unit: WalletUnit,
    kind: &str,
    amount: i64,
    request_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO wallet_ledger (",
        ledger_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7)"
    ))
    .bind(new_id())
    .bind(consumer_id)
    .bind(unit_str(unit))
    .bind(kind)
    .bind(amount)
    .bind(request_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Ends a request's hold: settles it to `actual` (charging at most what the hold and the
/// available balance cover) or, with `None`, releases it. `None` back if no hold was live.
async fn end_hold(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    request_id: &str,
    actual: Option<i64>,
    now: i64,
) -> Result<Option<Settled>, StoreError> {
    let row = sqlx::query(
        "DELETE FROM wallet_reservations WHERE request_id = $1 RETURNING consumer_id, unit, amount",
    )
    .bind(request_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let consumer_id: String = row.try_get("consumer_id")?;
    let unit_text: String = row.try_get("unit")?;
    let unit = unit_of(&unit_text)?;
    let held: i64 = row.try_get("amount")?;
    let Some(actual) = actual.map(|a| a.max(0)) else {
        sqlx::query(
            "UPDATE wallets SET reserved = reserved - $3, updated_at = $4 \
             WHERE consumer_id = $1 AND unit = $2",
        )
        .bind(&consumer_id)
        .bind(&unit_text)
        .bind(held)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        insert_ledger(tx, &consumer_id, unit, "release", held, request_id, now).await?;
        return Ok(Some(Settled::default()));
    };
    let within = actual.min(held);
    sqlx::query(
        "UPDATE wallets SET reserved = reserved - $3, balance = balance - $4, updated_at = $5 \
         WHERE consumer_id = $1 AND unit = $2",
    )
    .bind(&consumer_id)
    .bind(&unit_text)
    .bind(held)
    .bind(within)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    // Usage beyond the hold: taken only if it is available right now, else recorded as short.
    let excess = actual - within;
    let mut charged = within;
    let mut shortfall = 0;
    if excess > 0 {
        let took = sqlx::query(
            "UPDATE wallets SET balance = balance - $3, updated_at = $4 \
             WHERE consumer_id = $1 AND unit = $2 AND balance - reserved >= $3",
        )
        .bind(&consumer_id)
        .bind(&unit_text)
        .bind(excess)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if took > 0 {
            charged += excess;
        } else {
            shortfall = excess;
        }
    }
    insert_ledger(tx, &consumer_id, unit, "settle", charged, request_id, now).await?;
    Ok(Some(Settled { charged, shortfall }))
}
