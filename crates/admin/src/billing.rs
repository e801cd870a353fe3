//! Plans, subscriptions, wallets, prices, usage and invoices. Every change is audited and
//! reloads the data plane, so a plan or price change applies from the next request. Money in
//! bodies is decimal dollars (`"5.00"`); stored amounts are integer µUSD.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use billing::money::{format_micros, micros_from_json};
use billing::{Picos, Plan, Price, PriceTable, WalletUnit};
use serde::Deserialize;
use serde_json::{Value, json};
use store::{ConsumerRecord, PlanRecord};

use crate::api::{Shared, audit, body, reload};
use crate::error::AdminError;

pub(crate) async fn consumer(s: &Shared, id_or_name: &str) -> Result<ConsumerRecord, AdminError> {
    if let Some(c) = s.store.get_consumer(id_or_name).await? {
        return Ok(c);
    }
    s.store
        .get_consumer_by_name(id_or_name)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("consumer '{id_or_name}'")))
}

fn plan_view(p: &PlanRecord) -> Value {
    json!({
        "id": p.id, "api": p.api, "name": p.name, "plan": p.spec,
        "price_usd": format_micros(p.spec.period_price()),
        "created_at": p.created_at, "updated_at": p.updated_at,
    })
}

// --- plans -----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanDef {
    api: String,
    name: String,
    plan: Value,
}

fn parse_plan(v: Value) -> Result<Plan, AdminError> {
    let plan: Plan =
        serde_json::from_value(v).map_err(|e| AdminError::BadBody(format!("plan: {e}")))?;
    plan.validate()
        .map_err(|e| AdminError::BadBody(format!("plan: {e}")))?;
    Ok(plan)
}

pub async fn create_plan(
    State(s): State<Shared>,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let def: PlanDef = body(&raw)?;
    let plan = parse_plan(def.plan)?;
    let rec = s.store.create_plan(&def.api, &def.name, &plan).await?;
    audit(
        &s,
        "plan.create",
        &rec.id,
        json!({"api": rec.api, "name": rec.name}),
    )
    .await;
    reload(&s).await?;
    Ok((StatusCode::CREATED, Json(plan_view(&rec))).into_response())
}

#[derive(Deserialize)]
pub struct PlanFilter {
    api: Option<String>,
}

pub async fn list_plans(
    State(s): State<Shared>,
    Query(f): Query<PlanFilter>,
) -> Result<Json<Vec<Value>>, AdminError> {
    let plans = s.store.list_plans(f.api.as_deref()).await?;
    Ok(Json(plans.iter().map(plan_view).collect()))
}

pub async fn get_plan(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let p = s
        .store
        .get_plan(&id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("plan '{id}'")))?;
    Ok(Json(plan_view(&p)))
}

pub async fn put_plan(
    State(s): State<Shared>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, AdminError> {
    let v: Value = body(&raw)?;
    let plan = parse_plan(v.get("plan").cloned().unwrap_or(v))?;
    let rec = s.store.update_plan(&id, &plan).await?;
    audit(&s, "plan.update", &rec.id, json!({"name": rec.name})).await;
    reload(&s).await?;
    Ok(Json(plan_view(&rec)))
}

pub async fn delete_plan(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    if !s.store.delete_plan(&id).await? {
        return Err(AdminError::NotFound(format!("plan '{id}'")));
    }
    audit(&s, "plan.delete", &id, Value::Null).await;
    reload(&s).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- subscriptions ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeDef {
    plan_id: String,
}

pub async fn subscribe(
    State(s): State<Shared>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let def: SubscribeDef = body(&raw)?;
    let c = consumer(&s, &id).await?;
    let sub = s.store.subscribe(&c.id, &def.plan_id).await?;
    audit(
        &s,
        "subscription.set",
        &sub.id,
        json!({"consumer": c.id, "plan_id": sub.plan_id}),
    )
    .await;
    reload(&s).await?;
    Ok((StatusCode::CREATED, Json(sub)).into_response())
}

pub async fn list_subscriptions(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Vec<store::SubscriptionRecord>>, AdminError> {
    let c = consumer(&s, &id).await?;
    Ok(Json(s.store.list_subscriptions(&c.id).await?))
}

pub async fn cancel_subscription(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    if !s.store.cancel_subscription(&id).await? {
        return Err(AdminError::NotFound(format!("subscription '{id}'")));
    }
    audit(&s, "subscription.cancel", &id, Value::Null).await;
    reload(&s).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- wallets ---------------------------------------------------------------------------------

fn wallet_view(w: &store::WalletRecord) -> Value {
    match w.unit {
        WalletUnit::Usd => json!({
            "unit": "usd", "balance_usd": format_micros(w.balance),
            "reserved_usd": format_micros(w.reserved), "available_usd": format_micros(w.available()),
            "balance_micros": w.balance, "reserved_micros": w.reserved,
        }),
        WalletUnit::Tokens => json!({
            "unit": "tokens", "balance": w.balance, "reserved": w.reserved, "available": w.available(),
        }),
    }
}

pub async fn get_wallet(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let c = consumer(&s, &id).await?;
    let usd = s.store.wallet(&c.id, WalletUnit::Usd).await?;
    let tokens = s.store.wallet(&c.id, WalletUnit::Tokens).await?;
    Ok(Json(
        json!({"consumer": c.id, "usd": wallet_view(&usd), "tokens": wallet_view(&tokens)}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditDef {
    #[serde(default)]
    amount_usd: Option<Value>,
    #[serde(default)]
    tokens: Option<i64>,
    #[serde(default)]
    note: Option<String>,
}

fn credit_amount(def: &CreditDef) -> Result<(WalletUnit, i64), AdminError> {
    match (&def.amount_usd, def.tokens) {
        (Some(v), None) => micros_from_json(v)
            .filter(|m| *m > 0)
            .map(|m| (WalletUnit::Usd, m))
            .ok_or_else(|| {
                AdminError::BadBody(
                    "amount_usd: a positive amount of dollars with at most six decimals".into(),
                )
            }),
        (None, Some(t)) if t > 0 => Ok((WalletUnit::Tokens, t)),
        (None, Some(_)) => Err(AdminError::BadBody("tokens: must be positive".into())),
        _ => Err(AdminError::BadBody(
            "give exactly one of amount_usd and tokens".into(),
        )),
    }
}

async fn credit(
    s: Shared,
    id: String,
    headers: HeaderMap,
    raw: axum::body::Bytes,
    refund: bool,
) -> Result<Response, AdminError> {
    let def: CreditDef = body(&raw)?;
    let (unit, amount) = credit_amount(&def)?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| AdminError::BadBody("Idempotency-Key: must be text".into()))?
                .to_string(),
        ),
        None => None,
    };
    let c = consumer(&s, &id).await?;
    let done = if refund {
        s.store
            .refund(&c.id, unit, amount, key.as_deref(), def.note.as_deref())
            .await?
    } else {
        s.store
            .top_up(&c.id, unit, amount, key.as_deref(), def.note.as_deref())
            .await?
    };
    if !done.replayed {
        let action = if refund {
            "wallet.refund"
        } else {
            "wallet.top_up"
        };
        audit(
            &s,
            action,
            &c.id,
            json!({"unit": done.entry.unit, "amount": amount, "entry": done.entry.id}),
        )
        .await;
    }
    let status = if done.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let out = json!({"entry": done.entry, "replayed": done.replayed, "wallet": wallet_view(&done.wallet)});
    Ok((status, Json(out)).into_response())
}

pub async fn top_up(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    credit(s, id, headers, raw, false).await
}

pub async fn refund(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    credit(s, id, headers, raw, true).await
}

pub async fn ledger(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Vec<store::LedgerEntry>>, AdminError> {
    let c = consumer(&s, &id).await?;
    Ok(Json(s.store.ledger(&c.id).await?))
}

// --- prices ----------------------------------------------------------------------------------

fn price_view(model: &str, p: &Price, source: &str) -> Value {
    let (i, o, c) = p.as_usd_per_million();
    json!({"model": model, "input": i, "output": o, "cached_input": c, "source": source,
           "unit": "USD per million tokens"})
}

pub async fn list_prices(State(s): State<Shared>) -> Result<Json<Vec<Value>>, AdminError> {
    let overrides = s.store.list_prices().await?;
    let mut out: Vec<Value> = overrides
        .iter()
        .map(|(m, p)| price_view(m, p, "override"))
        .collect();
    let mut builtin: Vec<_> = PriceTable::builtin()
        .iter()
        .filter(|(m, _)| !overrides.iter().any(|(o, _)| o == *m))
        .collect();
    builtin.sort_by(|a, b| a.0.cmp(b.0));
    out.extend(builtin.iter().map(|(m, p)| price_view(m, p, "builtin")));
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceDef {
    input: f64,
    output: f64,
    #[serde(default)]
    cached_input: Option<f64>,
}

pub async fn put_price(
    State(s): State<Shared>,
    Path(model): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, AdminError> {
    let def: PriceDef = body(&raw)?;
    let price = Price::from_usd_per_million(def.input, def.output, def.cached_input)
        .map_err(|e| AdminError::BadBody(e.to_string()))?;
    s.store.set_price(&model, &price).await?;
    audit(
        &s,
        "price.set",
        &model,
        json!({"input": def.input, "output": def.output}),
    )
    .await;
    reload(&s).await?;
    Ok(Json(price_view(&model, &price, "override")))
}

pub async fn delete_price(
    State(s): State<Shared>,
    Path(model): Path<String>,
) -> Result<StatusCode, AdminError> {
    if !s.store.delete_price(&model).await? {
        return Err(AdminError::NotFound(format!("price override '{model}'")));
    }
    audit(&s, "price.delete", &model, Value::Null).await;
    reload(&s).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- usage and invoices ----------------------------------------------------------------------

#[derive(Deserialize)]
pub struct UsageQuery {
    consumer: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
}

/// Unix milliseconds or RFC 3339.
pub(crate) fn time_param(field: &str, v: Option<&str>, default: i64) -> Result<i64, AdminError> {
    let Some(v) = v else { return Ok(default) };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    v.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| AdminError::BadBody(format!("{field}: unix milliseconds or RFC 3339")))
}

pub async fn list_usage(
    State(s): State<Shared>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<Vec<store::UsageRecord>>, AdminError> {
    let consumer_id = match q.consumer.as_deref() {
        Some(c) => Some(consumer(&s, c).await?.id),
        None => None,
    };
    let from = time_param("from", q.from.as_deref(), 0)?;
    let to = time_param("to", q.to.as_deref(), i64::MAX)?;
    let rows = s
        .store
        .list_usage(consumer_id.as_deref(), from, to, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(rows))
}

#[derive(Deserialize)]
pub struct InvoiceQuery {
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A consumer's invoice: plan fees pro-rated over the plans in force during the period
/// (nothing during a trial), usage charges by model from the usage records, provider cost.
pub async fn invoice(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<InvoiceQuery>,
) -> Result<Response, AdminError> {
    let c = consumer(&s, &id).await?;
    let subs = s.store.list_subscriptions(&c.id).await?;
    let now = now_ms();
    let anchor = subs.iter().map(|x| x.anchor_at).min().unwrap_or(now);
    let current = billing::plans::period_start(anchor, now);
    let (from, to) = match (q.period.as_deref(), &q.from) {
        (_, Some(_)) => (
            time_param("from", q.from.as_deref(), 0)?,
            time_param("to", q.to.as_deref(), now)?,
        ),
        (None | Some("current"), None) => (current, current + billing::plans::PERIOD_MS),
        (Some("previous"), None) => (current - billing::plans::PERIOD_MS, current),
        (Some(_), None) => {
            return Err(AdminError::BadBody(
                "period: `current` or `previous` (or give from/to)".into(),
            ));
        }
    };
    if to <= from {
        return Err(AdminError::BadBody("to: must be after from".into()));
    }
    let mut lines = Vec::new();
    let mut total: i64 = 0;
    for sub in &subs {
        let history = s.store.plan_history(&sub.id).await?;
        for (i, span) in history.iter().enumerate() {
            let end = history.get(i + 1).map_or(to, |n| n.from).min(to);
            let start = span.from.max(from);
            if end <= start {
                continue;
            }
            let Some(plan) = s.store.get_plan(&span.plan_id).await? else {
                continue;
            };
            // The trial is free: the fee covers only the part after it.
            let trial_end = sub
                .anchor_at
                .saturating_add(i64::from(plan.spec.trial_days) * 86_400_000);
            let billable = end - start.max(trial_end).min(end);
            let fee = billing::plans::prorate(plan.spec.period_price(), billable);
            total += fee;
            lines.push(
                json!({"kind": "plan_fee", "api": sub.api, "plan": plan.name,
                "from": start, "to": end, "amount_usd": format_micros(fee), "amount_micros": fee}),
            );
        }
    }
    let mut cost = Picos(0);
    for u in s.store.usage_lines(&c.id, from, to).await? {
        total += u.charge_micros;
        cost = cost.saturating_add(Picos(u128::try_from(u.cost_picos).unwrap_or(0)));
        lines.push(
            json!({"kind": "usage", "model": u.model, "provider": u.provider,
            "requests": u.requests, "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens, "cached_tokens": u.cached_tokens,
            "amount_usd": format_micros(u.charge_micros), "amount_micros": u.charge_micros,
            "provider_cost_usd": Picos(u128::try_from(u.cost_picos).unwrap_or(0)).to_string()}),
        );
    }
    let invoice = json!({"consumer": c.id, "consumer_name": c.name, "from": from, "to": to,
        "lines": lines, "total_usd": format_micros(total), "total_micros": total,
        "provider_cost_usd": cost.to_string()});
    if q.format.as_deref() == Some("csv") {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            invoice_csv(&invoice),
        )
            .into_response());
    }
    Ok(Json(invoice).into_response())
}

pub(crate) fn csv_field(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn invoice_csv(inv: &Value) -> String {
    let cols = [
        "kind",
        "api",
        "plan",
        "model",
        "provider",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "amount_usd",
        "provider_cost_usd",
    ];
    let mut out = cols.join(",");
    out.push('\n');
    for l in inv["lines"].as_array().into_iter().flatten() {
        let row: Vec<String> = cols.iter().map(|c| csv_field(&l[*c])).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out.push_str(&format!(
        "total,,,,,,,,{},{}\n",
        csv_field(&inv["total_usd"]),
        csv_field(&inv["provider_cost_usd"])
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field(&json!("a,b")), "\"a,b\"");
        assert_eq!(csv_field(&json!("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field(&json!(3)), "3");
        let inv = json!({"lines": [{"kind": "usage", "model": "m,1", "amount_usd": "0.5"}],
                         "total_usd": "0.5", "provider_cost_usd": "0.1"});
        let csv = invoice_csv(&inv);
        assert!(csv.contains("usage,,,\"m,1\""), "{csv}");
        assert!(csv.ends_with("total,,,,,,,,0.5,0.1\n"), "{csv}");
    }
}

// --- billing webhook -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookDef {
    url: String,
    secret: String,
}

/// Sets the billing webhook. The secret is write-only: no answer or listing shows it.
pub async fn put_webhook(
    State(s): State<Shared>,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, AdminError> {
    let def: WebhookDef = body(&raw)?;
    s.store
        .set_billing_webhook(&def.url, &wire::secret::Secret::new(def.secret))
        .await?;
    audit(
        &s,
        "billing_webhook.set",
        "billing",
        json!({"url": def.url}),
    )
    .await;
    reload(&s).await?;
    Ok(Json(json!({"url": def.url, "secret": "[REDACTED]"})))
}

pub async fn get_webhook(State(s): State<Shared>) -> Result<Json<Value>, AdminError> {
    match s.store.billing_webhook().await? {
        Some((url, _)) => Ok(Json(json!({"url": url, "secret": "[REDACTED]"}))),
        None => Err(AdminError::NotFound("billing webhook".into())),
    }
}

pub async fn delete_webhook(State(s): State<Shared>) -> Result<StatusCode, AdminError> {
    if !s.store.delete_billing_webhook().await? {
        return Err(AdminError::NotFound("billing webhook".into()));
    }
    audit(&s, "billing_webhook.delete", "billing", Value::Null).await;
    reload(&s).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct EventQuery {
    limit: Option<i64>,
}

pub async fn list_events(
    State(s): State<Shared>,
    Query(q): Query<EventQuery>,
) -> Result<Json<Vec<store::EventRecord>>, AdminError> {
    Ok(Json(s.store.list_events(q.limit.unwrap_or(100)).await?))
}
