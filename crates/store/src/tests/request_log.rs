use std::collections::BTreeMap;

use serde_json::json;

use super::{TestResult, backends};
use crate::request_log::{BUCKETS_MS, bucket, p95};
use crate::{LogFilter, LogRow, RollupBy};

const HOUR: i64 = 3_600_000;
/// (consumer or model, provider) → (requests, errors, prompt, completion, cost, histogram).
type Group = (String, Option<String>);
type Sums = (i64, i64, i64, i64, i64, Vec<i64>);
/// A fixed hour boundary so rows land in known rollup hours.
const T0: i64 = 1_780_000_000_000 / HOUR * HOUR;

/// Deterministic rows over three hours, two consumers, two models, a mix of statuses.
fn rows(n: usize) -> Vec<LogRow> {
    (0..n)
        .map(|i| {
            let status = match i % 10 {
                7 => 429,
                9 => 502,
                _ => 200,
            };
            LogRow {
                request_id: format!("req_{i:06}"),
                created_at: T0 + (i as i64 * 997) % (3 * HOUR),
                api: if i % 4 == 0 { "paid" } else { "default" }.into(),
                endpoint: "/v1/chat/completions".into(),
                consumer_id: (i % 3 != 0).then(|| format!("c{}", i % 2)),
                key_id: Some(format!("k{}", i % 5)),
                model_requested: Some("smart".into()),
                model: (status == 200).then(|| if i % 2 == 0 { "gpt-4o" } else { "claude" }.into()),
                provider: (status == 200)
                    .then(|| if i % 2 == 0 { "openai" } else { "anthropic" }.into()),
                attempts: json!([{"provider": "openai", "status": status}]),
                stream: i % 5 == 0,
                prompt_tokens: if status == 200 {
                    10 + (i as i64 % 7)
                } else {
                    0
                },
                completion_tokens: if status == 200 {
                    3 + (i as i64 % 11)
                } else {
                    0
                },
                cached_tokens: i as i64 % 2,
                estimated: i % 13 == 0,
                cost_picos: if status == 200 { 1_000 * i as i64 } else { 0 },
                latency_ms: (i as i64 * 37) % 4_000,
                ttft_ms: Some((i as i64 * 11) % 500),
                status,
                error: (status != 200).then(|| "rate_limit_exceeded".into()),
                moderation: None,
                rag_sources: None,
                hooks: None,
                cache_hit: false,
                request_body: None,
                response_body: None,
                charge_micros: None,
            }
        })
        .collect()
}

fn matches(r: &LogRow, f: &LogFilter) -> bool {
    f.consumer
        .as_ref()
        .is_none_or(|c| r.consumer_id.as_ref() == Some(c))
        && f.model.as_ref().is_none_or(|m| r.model.as_ref() == Some(m))
        && f.provider
            .as_ref()
            .is_none_or(|p| r.provider.as_ref() == Some(p))
        && f.api.as_ref().is_none_or(|a| &r.api == a)
        && f.status.as_deref().is_none_or(|s| match s {
            "error" => r.status >= 400,
            "5xx" => (500..600).contains(&r.status),
            "4xx" => (400..500).contains(&r.status),
            "2xx" => (200..300).contains(&r.status),
            exact => exact.parse() == Ok(r.status),
        })
        && f.from.is_none_or(|t| r.created_at >= t)
        && f.to.is_none_or(|t| r.created_at < t)
        && f.slower_than_ms.is_none_or(|t| r.latency_ms >= t)
}

#[tokio::test]
async fn rows_round_trip_and_filters_select_exactly_the_matching_rows() -> TestResult {
    let b = backends().await?;
    let all = rows(300);
    for store in b.iter() {
        assert_eq!(store.insert_logs(&all).await?, 300);
        // A retried batch writes nothing twice.
        assert_eq!(store.insert_logs(&all[..50]).await?, 0);
        let one = store.get_log("req_000042").await?.ok_or("row missing")?;
        assert_eq!(one, all[42], "{:?}", store.backend());

        let filters = [
            LogFilter::default(),
            LogFilter {
                consumer: Some("c1".into()),
                ..Default::default()
            },
            LogFilter {
                model: Some("gpt-4o".into()),
                provider: Some("openai".into()),
                ..Default::default()
            },
            LogFilter {
                api: Some("paid".into()),
                status: Some("2xx".into()),
                ..Default::default()
            },
            LogFilter {
                status: Some("error".into()),
                ..Default::default()
            },
            LogFilter {
                status: Some("429".into()),
                from: Some(T0 + HOUR),
                to: Some(T0 + 2 * HOUR),
                ..Default::default()
            },
            LogFilter {
                slower_than_ms: Some(2_000),
                consumer: Some("c0".into()),
                ..Default::default()
            },
        ];
        for f in &filters {
            // The in-memory filter (the live tail's) decides as the query does.
            for r in &all {
                assert_eq!(f.matches(r)?, matches(r, f), "{f:?} on {}", r.request_id);
            }
            let got = store.query_logs(f, 10_000).await?;
            let mut want: Vec<&LogRow> = all.iter().filter(|r| matches(r, f)).collect();
            want.sort_by(|a, b| (b.created_at, &b.request_id).cmp(&(a.created_at, &a.request_id)));
            let got_ids: Vec<&str> = got.iter().map(|r| r.request_id.as_str()).collect();
            let want_ids: Vec<&str> = want.iter().map(|r| r.request_id.as_str()).collect();
            assert_eq!(got_ids, want_ids, "{f:?} on {:?}", store.backend());

            let s = store.log_stats(f).await?;
            let n = want.len() as i64;
            assert_eq!(s.requests, n, "{f:?}");
            assert_eq!(
                s.errors,
                want.iter().filter(|r| r.status >= 400).count() as i64
            );
            assert_eq!(
                s.prompt_tokens,
                want.iter().map(|r| r.prompt_tokens).sum::<i64>()
            );
            assert_eq!(s.cost_picos, want.iter().map(|r| r.cost_picos).sum::<i64>());
            let mut lat: Vec<i64> = want.iter().map(|r| r.latency_ms).collect();
            lat.sort();
            if n > 0 {
                let rank = ((n * 95 + 99) / 100 - 1) as usize;
                assert_eq!(s.p95_latency_ms, lat[rank], "{f:?}");
                let avg = lat.iter().sum::<i64>() as f64 / n as f64;
                assert!((s.avg_latency_ms - avg).abs() < 1e-9);
            } else {
                assert_eq!(s.p95_latency_ms, 0);
            }
        }
        assert_eq!(store.query_logs(&LogFilter::default(), 5).await?.len(), 5);
        assert!(
            store
                .log_stats(&LogFilter {
                    status: Some("teapot".into()),
                    ..Default::default()
                })
                .await
                .is_err()
        );
    }
    b.finish().await
}

#[tokio::test]
async fn rollups_equal_a_recomputation_from_the_raw_rows() -> TestResult {
    let b = backends().await?;
    let all = rows(500);
    for store in b.iter() {
        // In uneven batches, with one batch repeated: rollups count each row once.
        for chunk in all[..450].chunks(77) {
            store.insert_logs(chunk).await?;
        }
        assert_eq!(store.insert_logs(&all[100..177]).await?, 0);
        // A retry that mixes logged rows, new rows and a row repeated within the batch.
        let mut mixed = all[400..500].to_vec();
        mixed.push(all[480].clone());
        assert_eq!(store.insert_logs(&mixed).await?, 50);
        for by in [RollupBy::Consumer, RollupBy::Model] {
            let got = store.usage_rollups(by, T0, T0 + 3 * HOUR).await?;
            let mut want: BTreeMap<Group, Sums> = BTreeMap::new();
            for r in &all {
                let key = match by {
                    RollupBy::Consumer => (r.consumer_id.clone().unwrap_or_default(), None),
                    RollupBy::Model => (
                        r.model
                            .clone()
                            .or(r.model_requested.clone())
                            .unwrap_or_default(),
                        Some(r.provider.clone().unwrap_or_default()),
                    ),
                };
                let e = want.entry(key).or_insert((0, 0, 0, 0, 0, vec![0; 12]));
                e.0 += 1;
                e.1 += i64::from(r.status >= 400);
                e.2 += r.prompt_tokens;
                e.3 += r.completion_tokens;
                e.4 += r.cost_picos;
                e.5[bucket(r.latency_ms)] += 1;
            }
            assert_eq!(got.len(), want.len(), "{by:?} on {:?}", store.backend());
            for g in &got {
                let w = want
                    .get(&(g.key.clone(), g.provider.clone()))
                    .ok_or("unexpected group")?;
                assert_eq!(
                    (
                        g.requests,
                        g.errors,
                        g.prompt_tokens,
                        g.completion_tokens,
                        g.cost_picos
                    ),
                    (w.0, w.1, w.2, w.3, w.4),
                    "{by:?} {}",
                    g.key
                );
                assert_eq!(g.histogram, w.5);
                assert_eq!(g.p95_latency_ms, p95(&w.5));
            }
        }
        // A window of the middle hour only.
        let mid: i64 = store
            .usage_rollups(RollupBy::Consumer, T0 + HOUR, T0 + 2 * HOUR)
            .await?
            .iter()
            .map(|g| g.requests)
            .sum();
        let want = all
            .iter()
            .filter(|r| r.created_at >= T0 + HOUR && r.created_at < T0 + 2 * HOUR)
            .count() as i64;
        assert_eq!(mid, want);
    }
    b.finish().await
}

#[tokio::test]
async fn retention_deletes_old_hours_only() -> TestResult {
    let b = backends().await?;
    let all = rows(200);
    for store in b.iter() {
        store.insert_logs(&all).await?;
        let cutoff = T0 + HOUR + HOUR / 2;
        let old = all.iter().filter(|r| r.created_at < cutoff).count() as u64;
        assert_eq!(store.prune_logs(cutoff).await?, old);
        let left = store.query_logs(&LogFilter::default(), 10_000).await?;
        assert_eq!(left.len() as u64, 200 - old);
        assert!(left.iter().all(|r| r.created_at >= cutoff));
        assert_eq!(store.prune_logs(cutoff).await?, 0);
    }
    b.finish().await
}

#[test]
fn p95_reads_the_bucket_bound() {
    assert_eq!(p95(&[0; 12]), 0);
    let mut h = vec![0; 12];
    h[0] = 94;
    h[3] = 6;
    assert_eq!(p95(&h), BUCKETS_MS[3]);
    h[0] = 95;
    h[3] = 5;
    assert_eq!(p95(&h), BUCKETS_MS[0]);
    assert_eq!(bucket(0), 0);
    assert_eq!(bucket(50), 0);
    assert_eq!(bucket(51), 1);
    assert_eq!(bucket(10_000_000), 11);
}

#[tokio::test]
async fn windows_over_several_days_add_whole_days_and_edge_hours_exactly() -> TestResult {
    let b = backends().await?;
    const DAY: i64 = 24 * HOUR;
    let day0 = T0 / DAY * DAY;
    let mut all = rows(400);
    for (i, r) in all.iter_mut().enumerate() {
        // Spread over four days, at odd minutes so hour and day edges both get rows.
        r.created_at = day0 + (i as i64 * 853_117) % (4 * DAY);
    }
    for store in b.iter() {
        store.insert_logs(&all).await?;
        for (from, to) in [
            (day0 + 5 * HOUR + 123, day0 + 2 * DAY + 7 * HOUR),
            (day0, day0 + 4 * DAY),
            (day0 + DAY - HOUR, day0 + DAY + HOUR),
            (day0 + 3 * DAY + 30 * 60_000, day0 + 3 * DAY + 20 * HOUR),
        ] {
            let got: i64 = store
                .usage_rollups(RollupBy::Model, from, to)
                .await?
                .iter()
                .map(|g| g.requests)
                .sum();
            // Hours that start inside the window.
            let from_hour = from / HOUR * HOUR;
            let want = all
                .iter()
                .filter(|r| r.created_at >= from_hour && r.created_at / HOUR * HOUR < to)
                .count() as i64;
            assert_eq!(got, want, "[{from}, {to}) on {:?}", store.backend());
            let by_consumer: i64 = store
                .usage_rollups(RollupBy::Consumer, from, to)
                .await?
                .iter()
                .map(|g| g.requests)
                .sum();
            assert_eq!(by_consumer, want);
        }
    }
    b.finish().await
}

/// The `hooks` column as the pipeline writes it: a pre-hook outcome on some rows, the
/// post-hook's outcome and returned metadata on others, in every value type.
fn with_metadata(mut all: Vec<LogRow>) -> Vec<LogRow> {
    for (i, r) in all.iter_mut().enumerate() {
        let pre =
            json!({"stage": "pre_hook", "function": "guard", "outcome": "ok", "latency_ms": 3});
        let meta = match i % 6 {
            0 => None,
            1 => Some(json!({"tier": "gold", "score": 7, "vip": true})),
            2 => Some(json!({"tier": "silver", "score": 7, "vip": false})),
            3 => Some(json!({"tier": "gold", "score": 1.5, "nested": {"tier": "gold"}})),
            4 => Some(json!({"tier": null, "team": "a b&c=d"})),
            _ => Some(json!({})),
        };
        r.hooks = match (i % 4, meta) {
            (0, _) => None,
            (1, None) => Some(json!([pre]).to_string()),
            (_, None) => None,
            (_, Some(m)) => {
                let post = json!({"stage": "post_hook", "function": "scorer", "outcome": "ok",
                                  "latency_ms": 9, "metadata": m});
                Some(
                    if i % 2 == 0 {
                        json!([pre, post])
                    } else {
                        json!([post])
                    }
                    .to_string(),
                )
            }
        };
    }
    all
}

/// The value a row's post-hook returned for `key`, computed here independently of the store.
fn meta_of(r: &LogRow, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(r.hooks.as_deref()?).ok()?;
    let post = v.as_array()?.iter().find(|e| e["stage"] == "post_hook")?;
    match &post["metadata"][key] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[tokio::test]
async fn metadata_filters_select_the_rows_whose_post_hook_returned_the_value() -> TestResult {
    use crate::MetaMatch;
    let b = backends().await?;
    let all = with_metadata(rows(240));
    for store in b.iter() {
        store.insert_logs(&all).await?;
        let cases: Vec<Vec<MetaMatch>> = vec![
            vec![MetaMatch::new("tier", "gold")],
            vec![MetaMatch::new("score", "7")],
            vec![MetaMatch::new("score", "1.5")],
            vec![MetaMatch::new("vip", "true")],
            vec![MetaMatch::new("vip", "false")],
            vec![MetaMatch::new("team", "a b&c=d")],
            vec![MetaMatch::new("tier", "gold"), MetaMatch::new("score", "7")],
            // `null`, objects and absent keys never match.
            vec![MetaMatch::new("tier", "null")],
            vec![MetaMatch::new("nested", "{\"tier\":\"gold\"}")],
            vec![MetaMatch::new("stage", "post_hook")],
            vec![MetaMatch::new("missing", "x")],
        ];
        for meta in cases {
            let f = LogFilter {
                meta: meta.clone(),
                status: Some("2xx".into()),
                ..Default::default()
            };
            let want: Vec<&LogRow> = all
                .iter()
                .filter(|r| matches(r, &f))
                .filter(|r| {
                    meta.iter()
                        .all(|m| meta_of(r, &m.key).as_deref() == Some(m.value.as_str()))
                })
                .collect();
            let never = ["null", "{\"tier\":\"gold\"}", "post_hook", "x"];
            assert_eq!(
                want.is_empty(),
                never.contains(&meta[0].value.as_str()),
                "{meta:?} selects {} rows",
                want.len()
            );
            for r in &all {
                assert_eq!(
                    f.matches(r)?,
                    want.iter().any(|w| w.request_id == r.request_id),
                    "{meta:?} on {}",
                    r.request_id
                );
            }
            let mut want_ids: Vec<&str> = want.iter().map(|r| r.request_id.as_str()).collect();
            want_ids.sort();
            let mut got: Vec<String> = store
                .query_logs(&f, 10_000)
                .await?
                .into_iter()
                .map(|r| r.request_id)
                .collect();
            got.sort();
            assert_eq!(got, want_ids, "{meta:?} on {:?}", store.backend());
            let s = store.log_stats(&f).await?;
            assert_eq!(s.requests, want.len() as i64, "{meta:?}");
            assert_eq!(s.cost_picos, want.iter().map(|r| r.cost_picos).sum::<i64>());
            assert_eq!(s.truncated, Some(false));
        }
        // The bound: only the newest rows the other conditions select are searched.
        let newest = LogFilter {
            meta: vec![MetaMatch::new("tier", "gold")],
            api: Some("default".into()),
            meta_scan_rows: Some(40),
            ..Default::default()
        };
        let mut selected: Vec<&LogRow> = all.iter().filter(|r| r.api == "default").collect();
        selected.sort_by(|a, b| (b.created_at, &b.request_id).cmp(&(a.created_at, &a.request_id)));
        let want = selected[..40]
            .iter()
            .filter(|r| meta_of(r, "tier").as_deref() == Some("gold"))
            .count();
        assert!(want > 0);
        assert_eq!(store.query_logs(&newest, 1_000).await?.len(), want);
        let s = store.log_stats(&newest).await?;
        assert_eq!((s.requests, s.truncated), (want as i64, Some(true)));
        assert_eq!(
            store.log_stats(&LogFilter::default()).await?.truncated,
            None
        );
        // Too many conditions, or an empty key, are refused rather than run.
        let five = LogFilter {
            meta: (0..5)
                .map(|i| MetaMatch::new(format!("k{i}"), "v"))
                .collect(),
            ..Default::default()
        };
        assert!(store.query_logs(&five, 10).await.is_err());
        let empty = LogFilter {
            meta: vec![MetaMatch::new("", "v")],
            ..Default::default()
        };
        assert!(store.log_stats(&empty).await.is_err());
    }
    b.finish().await
}

#[tokio::test]
async fn usage_by_metadata_equals_a_recomputation_and_says_when_it_was_cut() -> TestResult {
    let b = backends().await?;
    let all = with_metadata(rows(360));
    for store in b.iter() {
        store.insert_logs(&all).await?;
        for key in ["tier", "score", "vip", "nested", "missing"] {
            let got = store
                .usage_by_metadata(key, T0, T0 + 3 * HOUR, 1_000)
                .await?;
            let mut want: BTreeMap<String, Sums> = BTreeMap::new();
            for r in &all {
                if let Some(v) = meta_of(r, key) {
                    let e = want.entry(v).or_insert((0, 0, 0, 0, 0, vec![0; 12]));
                    e.0 += 1;
                    e.1 += i64::from(r.status >= 400);
                    e.2 += r.prompt_tokens;
                    e.3 += r.completion_tokens;
                    e.4 += r.cost_picos;
                    e.5[bucket(r.latency_ms)] += 1;
                }
            }
            assert_eq!(got.scanned, all.len() as i64);
            assert!(!got.truncated);
            assert_eq!(
                got.values,
                want.len() as i64,
                "{key} on {:?}",
                store.backend()
            );
            assert_eq!(got.matched, want.values().map(|w| w.0).sum::<i64>());
            for g in &got.groups {
                let w = want.get(&g.key).ok_or("unexpected group")?;
                assert_eq!(
                    (
                        g.requests,
                        g.errors,
                        g.prompt_tokens,
                        g.completion_tokens,
                        g.cost_picos
                    ),
                    (w.0, w.1, w.2, w.3, w.4),
                    "{key}={} on {:?}",
                    g.key,
                    store.backend()
                );
                assert_eq!(g.histogram, w.5);
                assert_eq!(g.p95_latency_ms, p95(&w.5));
            }
            // Most requests first.
            assert!(
                got.groups
                    .windows(2)
                    .all(|p| p[0].requests >= p[1].requests)
            );
        }
        // The bound: only the newest rows of the window are read, and the answer says so.
        let cut = store
            .usage_by_metadata("tier", T0, T0 + 3 * HOUR, 50)
            .await?;
        assert_eq!(cut.scanned, 50);
        assert!(cut.truncated);
        // Exactly as many rows as the limit is not a cut.
        let whole = store
            .usage_by_metadata("tier", T0, T0 + 3 * HOUR, all.len() as i64)
            .await?;
        assert_eq!(whole.scanned, all.len() as i64);
        assert!(!whole.truncated);
        let mut newest: Vec<&LogRow> = all.iter().collect();
        newest.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        let want = newest[..50]
            .iter()
            .filter(|r| meta_of(r, "tier").is_some())
            .count() as i64;
        assert_eq!(cut.matched, want);
        // A window with no rows, and a key that cannot be asked for.
        let none = store.usage_by_metadata("tier", 0, 1, 1_000).await?;
        assert_eq!((none.scanned, none.groups.len()), (0, 0));
        assert!(
            store
                .usage_by_metadata("", T0, T0 + HOUR, 10)
                .await
                .is_err()
        );
    }
    b.finish().await
}
