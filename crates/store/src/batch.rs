//! Group commit for the data plane: many requests' wallet holds, or many usage records with
//! their period totals and wallet settlements, in one transaction with a few statements per
//! batch — one per wallet or period touched and one multi-row insert per table — instead of
//! several per request. The money rules are the ones of [`Store::reserve`] and
//! [`Store::record_usage`]: a wallet row is changed only under its lock, by a conditional
//! update that cannot take more than is available.

use std::collections::{HashMap, HashSet};

use billing::WalletUnit;
use sqlx::Row;

use crate::billing::{UsageInput, unit_of, unit_str};
use crate::columns::{json_text, new_id, now_ms};
use crate::db::Backend;
use crate::{Store, StoreError};

/// One request's wallet hold, as admission asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub request_id: String,
    pub consumer_id: String,
    pub unit: WalletUnit,
    pub amount: i64,
}

/// Rows per multi-row statement: far below both backends' parameter limits.
pub(crate) const ROWS: usize = 100;

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// `items` in chunks of at most `ROWS` rows whose sizes come from a short fixed list: 100, the
/// tens below it, then 1 to 9. Every multi-row statement's text is one of 19 per table, so
/// each connection's statement cache stays small (a prepared 100-row insert is large; with a
/// statement per batch size the gateway's memory grew with load), and a batch of fewer than
/// 100 rows takes at most two statements (powers of two took up to seven: the wallet path
/// paid for it).
pub(crate) fn chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = match rest.len() {
            n if n >= ROWS => ROWS,
            n if n >= 10 => n / 10 * 10,
            n => n,
        };
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// `($1, $2, …), ($n+1, …)` for `rows` rows of `width` parameters; anonymous `?` on SQLite,
/// whose lookup of a numbered parameter scans every name before it (quadratic in a
/// multi-row statement: it was a third of the data plane's CPU).
pub(crate) fn placeholders(backend: Backend, rows: usize, width: usize) -> String {
    let mut s = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..width {
            if c > 0 {
                s.push_str(", ");
            }
            match backend {
                Backend::Sqlite => s.push('?'),
                Backend::Postgres => {
                    s.push('$');
                    s.push_str(&(r * width + c + 1).to_string());
                }
            }
        }
        s.push(')');
    }
    s
}

/// `$1, $2, …, $n` (`?, ?, …` on SQLite).
pub(crate) fn list(backend: Backend, n: usize) -> String {
    (1..=n)
        .map(|i| match backend {
            Backend::Sqlite => "?".to_string(),
            Backend::Postgres => format!("${i}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Indices of `items` grouped by `key`, groups in order of first appearance.
fn groups<'a, T, K: std::hash::Hash + Eq + Clone>(
    items: impl Iterator<Item = (usize, &'a T)>,
    key: impl Fn(&'a T) -> K,
) -> Vec<(K, Vec<usize>)>
where
    T: 'a,
{
    let mut out: Vec<(K, Vec<usize>)> = Vec::new();
    let mut at: HashMap<K, usize> = HashMap::new();
    for (i, item) in items {
        let k = key(item);
        match at.get(&k) {
            Some(&g) => out[g].1.push(i),
            None => {
                at.insert(k.clone(), out.len());
                out.push((k, vec![i]));
            }
        }
    }
    out
}

/// A ledger row for a multi-row insert.
struct Entry<'a> {
    consumer_id: &'a str,
    unit: &'a str,
    kind: &'static str,
    amount: i64,
    request_id: &'a str,
}

async fn insert_ledger_rows(
    tx: &mut Tx,
    backend: Backend,
    rows: &[Entry<'_>],
    now: i64,
) -> Result<(), StoreError> {
    for chunk in chunks(rows) {
        let sql = format!(
            "INSERT INTO wallet_ledger (id, consumer_id, unit, kind, amount, request_id, created_at) VALUES {}",
            placeholders(backend, chunk.len(), 7)
        );
        // Only placeholders are interpolated; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            q = q
                .bind(new_id())
                .bind(e.consumer_id.to_string())
                .bind(e.unit)
                .bind(e.kind)
                .bind(e.amount)
                .bind(e.request_id.to_string())
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Locks a wallet row and returns what is available on it (`None`: no such wallet).
async fn lock_available(
    tx: &mut Tx,
    consumer_id: &str,
    unit: &str,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query(
        "UPDATE wallets SET updated_at = $3 WHERE consumer_id = $1 AND unit = $2 \
         RETURNING balance - reserved AS available",
    )
    .bind(consumer_id)
    .bind(unit)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| r.try_get("available"))
        .transpose()
        .map_err(Into::into)
}

/// Adds `amount` to a wallet's holds if its available balance covers it.
async fn hold_if_available(
    tx: &mut Tx,
    consumer_id: &str,
    unit: &str,
    amount: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE wallets SET reserved = reserved + $3, updated_at = $4 \
         WHERE consumer_id = $1 AND unit = $2 AND balance - reserved >= $3",
    )
    .bind(consumer_id)
    .bind(unit)
    .bind(amount)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

impl Store {
    /// Places many holds at once; `true` for each one the wallet covered, in order of the
    /// requests (an earlier request of the batch is served first). If anything fails nothing
    /// is held and the error is returned: the caller retries the holds one by one.
    ///
    /// On PostgreSQL a single hold is one statement (the conditional update, the reservation
    /// and its ledger row in one data-modifying `WITH`): one round trip.
    pub async fn reserve_batch(&self, holds: &[Hold]) -> Result<Vec<bool>, StoreError> {
        let mut out = vec![false; holds.len()];
        if holds.iter().any(|h| h.amount <= 0) {
            return Err(StoreError::Invalid("a reservation must be positive".into()));
        }
        let now = now_ms();
        if let ([h], Backend::Postgres) = (holds, self.backend()) {
            let n = sqlx::query(
                "WITH w AS (UPDATE wallets SET reserved = reserved + $3, updated_at = $5 \
                   WHERE consumer_id = $1 AND unit = $2 AND balance - reserved >= $3 RETURNING consumer_id), \
                 r AS (INSERT INTO wallet_reservations (request_id, consumer_id, unit, amount, created_at) \
                   SELECT $4, consumer_id, $2, $3, $5 FROM w RETURNING request_id) \
                 INSERT INTO wallet_ledger (id, consumer_id, unit, kind, amount, request_id, created_at) \
                   SELECT $6, $1, $2, 'reserve', $3, request_id, $5 FROM r",
            )
            .bind(&h.consumer_id)
            .bind(unit_str(h.unit))
            .bind(h.amount)
            .bind(&h.request_id)
            .bind(now)
            .bind(new_id())
            .execute(&self.pool)
            .await?
            .rows_affected();
            out[0] = n == 1;
            return Ok(out);
        }
        let backend = self.backend();
        let mut tx = self.begin_write().await?;
        for ((consumer, unit), idx) in groups(holds.iter().enumerate(), |h| {
            (h.consumer_id.as_str(), unit_str(h.unit))
        }) {
            let sum = idx
                .iter()
                .fold(0_i64, |s, &i| s.saturating_add(holds[i].amount));
            if hold_if_available(&mut tx, consumer, unit, sum, now).await? {
                for i in idx {
                    out[i] = true;
                }
                continue;
            }
            // Not all of them fit: serve them in order from what the locked row has.
            let Some(mut available) = lock_available(&mut tx, consumer, unit, now).await? else {
                continue;
            };
            let mut admitted = 0_i64;
            for i in idx {
                if holds[i].amount <= available {
                    available -= holds[i].amount;
                    admitted += holds[i].amount;
                    out[i] = true;
                }
            }
            if admitted > 0 && !hold_if_available(&mut tx, consumer, unit, admitted, now).await? {
                return Err(StoreError::Invalid(
                    "a locked wallet changed under its hold".into(),
                ));
            }
        }
        let held: Vec<&Hold> = holds
            .iter()
            .zip(&out)
            .filter_map(|(h, ok)| ok.then_some(h))
            .collect();
        for chunk in chunks(&held) {
            let sql = format!(
                "INSERT INTO wallet_reservations (request_id, consumer_id, unit, amount, created_at) VALUES {}",
                placeholders(backend, chunk.len(), 5)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for h in chunk {
                q = q
                    .bind(h.request_id.clone())
                    .bind(h.consumer_id.clone())
                    .bind(unit_str(h.unit))
                    .bind(h.amount)
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        let entries: Vec<Entry<'_>> = held
            .iter()
            .map(|h| Entry {
                consumer_id: &h.consumer_id,
                unit: unit_str(h.unit),
                kind: "reserve",
                amount: h.amount,
                request_id: &h.request_id,
            })
            .collect();
        insert_ledger_rows(&mut tx, backend, &entries, now).await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// Records usage rows that settle something (a subscription period, a wallet hold, a billing
/// event) inside `tx`, with a few statements for the whole batch. Rows whose request id is
/// already recorded (or repeated in the batch) change nothing. Returns how many were new.
pub(crate) async fn settle_many(
    tx: &mut Tx,
    backend: Backend,
    rows: &[&UsageInput],
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let now = now_ms();
    // Duplicates first: a retried record must not count twice in its period.
    let mut seen: HashSet<&str> = HashSet::new();
    for chunk in chunks(rows) {
        let sql = format!(
            "SELECT request_id FROM usage_records WHERE request_id IN ({})",
            list(backend, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for u in chunk {
            q = q.bind(u.request_id.clone());
        }
        for r in q.fetch_all(&mut **tx).await? {
            let id: String = r.try_get("request_id")?;
            if let Some(u) = chunk.iter().find(|u| u.request_id == id) {
                seen.insert(u.request_id.as_str());
            }
        }
    }
    let rows: Vec<&UsageInput> = rows
        .iter()
        .copied()
        .filter(|u| seen.insert(u.request_id.as_str()))
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    let tokens_of = |u: &UsageInput| u.prompt_tokens.saturating_add(u.completion_tokens).max(0);

    // Period totals: one upsert per period; each row's charge from its place in the period.
    let mut charges = vec![0_i64; rows.len()];
    for (period, idx) in groups(
        rows.iter()
            .enumerate()
            .filter(|(_, u)| u.subscription.is_some()),
        |u| u.subscription.clone(),
    ) {
        let Some((sub, start)) = period else { continue };
        let sum = idx
            .iter()
            .fold(0_i64, |s, &i| s.saturating_add(tokens_of(rows[i])));
        let after: i64 = sqlx::query(
            "INSERT INTO period_usage (subscription_id, period_start, tokens, charge, requests) \
             VALUES ($1, $2, $3, 0, $4) ON CONFLICT (subscription_id, period_start) DO UPDATE SET \
             tokens = period_usage.tokens + excluded.tokens, \
             requests = period_usage.requests + excluded.requests RETURNING tokens",
        )
        .bind(&sub)
        .bind(start)
        .bind(sum)
        .bind(i64::try_from(idx.len()).unwrap_or(i64::MAX))
        .fetch_one(&mut **tx)
        .await?
        .try_get("tokens")?;
        let mut before = u64::try_from(after - sum).unwrap_or(0);
        let mut total = 0_i64;
        for &i in &idx {
            let t = u64::try_from(tokens_of(rows[i])).unwrap_or(0);
            if let Some(plan) = &rows[i].plan {
                charges[i] = plan.request_charge(before, t);
                total = total.saturating_add(charges[i]);
            }
            before = before.saturating_add(t);
        }
        if total > 0 {
            sqlx::query(
                "UPDATE period_usage SET charge = charge + $3 \
                 WHERE subscription_id = $1 AND period_start = $2",
            )
            .bind(&sub)
            .bind(start)
            .bind(total)
            .execute(&mut **tx)
            .await?;
        }
    }

    let mut offset = 0;
    for chunk in chunks(&rows) {
        let sql = format!(
            concat!(
                "INSERT INTO usage_records (",
                usage_columns!(),
                ") VALUES {} ON CONFLICT (request_id) DO NOTHING"
            ),
            placeholders(backend, chunk.len(), 18)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (j, u) in chunk.iter().enumerate() {
            q = q
                .bind(u.request_id.clone())
                .bind(u.created_at)
                .bind(u.consumer_id.clone())
                .bind(u.key_id.clone())
                .bind(u.api.clone())
                .bind(u.subscription.as_ref().map(|s| s.0.clone()))
                .bind(u.model_requested.clone())
                .bind(u.model.clone())
                .bind(u.provider.clone())
                .bind(u.prompt_tokens)
                .bind(u.completion_tokens)
                .bind(u.cached_tokens)
                .bind(u.estimated)
                .bind(u.cost_picos)
                .bind(charges[offset + j])
                .bind(u.status)
                .bind(u.latency_ms)
                .bind(json_text(&u.attempts)?);
        }
        let n = q.execute(&mut **tx).await?.rows_affected();
        if usize::try_from(n).unwrap_or(0) != chunk.len() {
            // Another writer recorded one of these since the check: let the caller go one by one.
            return Err(StoreError::Invalid(
                "a usage record was written concurrently".into(),
            ));
        }
        offset += chunk.len();
    }

    // Wallet holds: all ended in one statement per chunk, then one update per wallet.
    let mut holds: HashMap<String, (String, String, i64)> = HashMap::new();
    let with_sub: Vec<&UsageInput> = rows
        .iter()
        .copied()
        .filter(|u| u.subscription.is_some())
        .collect();
    for chunk in chunks(&with_sub) {
        let sql = format!(
            "DELETE FROM wallet_reservations WHERE request_id IN ({}) \
             RETURNING request_id, consumer_id, unit, amount",
            list(backend, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for u in chunk {
            q = q.bind(u.request_id.clone());
        }
        for r in q.fetch_all(&mut **tx).await? {
            holds.insert(
                r.try_get("request_id")?,
                (
                    r.try_get("consumer_id")?,
                    r.try_get("unit")?,
                    r.try_get("amount")?,
                ),
            );
        }
    }
    let mut wallet_charged = vec![0_i64; rows.len()];
    let mut entries: Vec<Entry<'_>> = Vec::new();
    let held_rows: Vec<(usize, &(String, String, i64))> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, u)| holds.get(&u.request_id).map(|h| (i, h)))
        .collect();
    for ((consumer, unit), idx) in groups(held_rows.iter().map(|(i, h)| (*i, *h)), |h| {
        (h.0.clone(), h.1.clone())
    }) {
        let unit_kind = unit_of(&unit)?;
        // Replays the one-by-one settlement in order on the locked row: each hold goes back,
        // its usage is taken up to the hold, and usage beyond it only from what is then
        // available. One update writes the result.
        let Some(mut available) = lock_available(tx, &consumer, &unit, now).await? else {
            return Err(StoreError::Invalid("a hold without its wallet".into()));
        };
        let (mut held_sum, mut charged_sum) = (0_i64, 0_i64);
        for &i in &idx {
            let u = rows[i];
            let Some((owner, _, held)) = holds.get(&u.request_id) else {
                continue;
            };
            held_sum = held_sum.saturating_add(*held);
            available = available.saturating_add(*held);
            let draw = match u.wallet {
                Some(WalletUnit::Usd) => Some(charges[i]),
                Some(WalletUnit::Tokens) => Some(tokens_of(u)),
                None => None,
            };
            let Some(actual) = draw.map(|d| d.max(0)) else {
                entries.push(Entry {
                    consumer_id: owner,
                    unit: unit_str(unit_kind),
                    kind: "release",
                    amount: *held,
                    request_id: &u.request_id,
                });
                continue;
            };
            let within = actual.min(*held);
            let mut charged = within;
            available -= within;
            let excess = actual - within;
            if excess > 0 && excess <= available {
                available -= excess;
                charged += excess;
            }
            charged_sum = charged_sum.saturating_add(charged);
            wallet_charged[i] = charged;
            entries.push(Entry {
                consumer_id: owner,
                unit: unit_str(unit_kind),
                kind: "settle",
                amount: charged,
                request_id: &u.request_id,
            });
        }
        let n = sqlx::query(
            "UPDATE wallets SET reserved = reserved - $3, balance = balance - $4, updated_at = $5 \
             WHERE consumer_id = $1 AND unit = $2 AND balance - $4 >= reserved - $3",
        )
        .bind(&consumer)
        .bind(&unit)
        .bind(held_sum)
        .bind(charged_sum)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(StoreError::Invalid(
                "a locked wallet changed under its settlement".into(),
            ));
        }
    }
    insert_ledger_rows(tx, backend, &entries, now).await?;

    let events: Vec<serde_json::Value> = rows
        .iter()
        .enumerate()
        .filter(|(_, u)| u.event)
        .map(|(i, u)| crate::billing::settled_event(u, charges[i], wallet_charged[i]))
        .collect();
    crate::events::enqueue_many(tx, backend, "usage.settled", &events).await?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_everything_in_order_in_fixed_sizes() {
        for n in 0..450 {
            let items: Vec<usize> = (0..n).collect();
            let parts: Vec<&[usize]> = chunks(&items).collect();
            assert_eq!(parts.concat(), items);
            let sizes: Vec<usize> = (1..10).chain((10..=ROWS).step_by(10)).collect();
            assert!(parts.iter().all(|p| sizes.contains(&p.len())), "{n}");
            // What is left after the 100-row chunks takes at most two statements.
            assert!(parts.iter().filter(|p| p.len() < ROWS).count() <= 2, "{n}");
        }
    }
}
