//! Prometheus metrics, counted from the same finished rows the request log gets (so the two
//! never disagree) plus gauges read at scrape time: queue depths, circuits, degraded mode.
//!
//! Labels are low-cardinality by design: the gateway API (operator-defined), status class,
//! provider, outcome, token kind. Consumers, keys and models requested by consumers never
//! become labels.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use store::LogRow;

use crate::state::Gateway;

/// Histogram bucket bounds, in seconds.
const BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BOUNDS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn add(&mut self, secs: f64) {
        self.count += 1;
        self.sum += secs;
        if let Some(i) = BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, n) in BOUNDS.iter().zip(self.buckets) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// api → requests per status class (2xx, 3xx, 4xx, 5xx).
    requests: BTreeMap<String, [u64; 4]>,
    latency: BTreeMap<String, Histogram>,
    ttft: BTreeMap<String, Histogram>,
    tokens: [u64; 3],
    cost_picos: u128,
    /// provider → outcome → upstream attempts.
    attempts: BTreeMap<String, BTreeMap<String, u64>>,
    rate_limited: u64,
    estimated: u64,
}

/// What `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            inner: Mutex::new(Inner::default()),
            started: Instant::now(),
        }
    }
}

const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

fn class(status: i64) -> usize {
    match status {
        200..=299 => 0,
        300..=399 => 1,
        400..=499 => 2,
        _ => 3,
    }
}

/// The entry for `key`, allocating the key only the first time (the hot path looks up).
fn slot<'a, V: Default>(m: &'a mut BTreeMap<String, V>, key: &str) -> &'a mut V {
    if !m.contains_key(key) {
        m.insert(key.to_string(), V::default());
    }
    match m.get_mut(key) {
        Some(v) => v,
        // Unreachable (inserted above); a leaked default keeps this free of a panic path.
        None => Box::leak(Box::default()),
    }
}

/// A label value with `\`, `"` and newlines escaped, as the exposition format asks.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts one finished request.
    pub fn observe(&self, row: &LogRow) {
        let Ok(mut m) = self.inner.lock() else { return };
        slot(&mut m.requests, &row.api)[class(row.status)] += 1;
        slot(&mut m.latency, &row.api).add(row.latency_ms as f64 / 1000.0);
        if let Some(t) = row.ttft_ms.filter(|_| row.stream) {
            slot(&mut m.ttft, &row.api).add(t as f64 / 1000.0);
        }
        let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        m.tokens[0] += as_u64(row.prompt_tokens);
        m.tokens[1] += as_u64(row.completion_tokens);
        m.tokens[2] += as_u64(row.cached_tokens);
        m.cost_picos += u128::from(as_u64(row.cost_picos));
        if row.status == 429 {
            m.rate_limited += 1;
        }
        if row.estimated {
            m.estimated += 1;
        }
        if let Some(list) = row.attempts.as_array() {
            for a in list {
                let provider = a.get("provider").and_then(|v| v.as_str()).unwrap_or("");
                let skipped;
                let outcome = if let Some(s) = a.get("skipped").and_then(|v| v.as_str()) {
                    skipped = format!("skipped_{s}");
                    skipped.as_str()
                } else {
                    a.get("error").and_then(|v| v.as_str()).unwrap_or("ok")
                };
                *slot(slot(&mut m.attempts, provider), outcome) += 1;
            }
        }
    }

    /// The exposition text.
    pub fn render(&self, gw: &Gateway) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let help = |out: &mut String, name: &str, kind: &str, text: &str| {
            let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
        };
        if let Ok(m) = self.inner.lock() {
            help(
                &mut out,
                "gateway_requests_total",
                "counter",
                "Data-plane requests by gateway API and status class.",
            );
            for (api, counts) in &m.requests {
                for (class, n) in CLASSES.iter().zip(counts).filter(|(_, n)| **n > 0) {
                    let _ = writeln!(
                        out,
                        "gateway_requests_total{{api=\"{}\",status=\"{class}\"}} {n}",
                        esc(api)
                    );
                }
            }
            help(
                &mut out,
                "gateway_request_duration_seconds",
                "histogram",
                "Time from arrival to the end of the response (streams: the last byte).",
            );
            for (api, h) in &m.latency {
                h.render(
                    &mut out,
                    "gateway_request_duration_seconds",
                    &format!("api=\"{}\"", esc(api)),
                );
            }
            help(
                &mut out,
                "gateway_time_to_first_token_seconds",
                "histogram",
                "Streams: time from arrival to the first token.",
            );
            for (api, h) in &m.ttft {
                h.render(
                    &mut out,
                    "gateway_time_to_first_token_seconds",
                    &format!("api=\"{}\"", esc(api)),
                );
            }
            help(
                &mut out,
                "gateway_tokens_total",
                "counter",
                "Tokens billed, by kind.",
            );
            for (kind, n) in ["prompt", "completion", "cached"].iter().zip(m.tokens) {
                let _ = writeln!(out, "gateway_tokens_total{{kind=\"{kind}\"}} {n}");
            }
            help(
                &mut out,
                "gateway_tokens_estimated_requests_total",
                "counter",
                "Requests whose tokens are the tokenizer's estimate.",
            );
            let _ = writeln!(
                out,
                "gateway_tokens_estimated_requests_total {}",
                m.estimated
            );
            help(
                &mut out,
                "gateway_cost_usd_total",
                "counter",
                "Provider cost of answered requests, USD.",
            );
            let _ = writeln!(out, "gateway_cost_usd_total {}", m.cost_picos as f64 / 1e12);
            help(
                &mut out,
                "gateway_upstream_attempts_total",
                "counter",
                "Upstream attempts by provider and outcome.",
            );
            for (p, outcomes) in &m.attempts {
                for (o, n) in outcomes {
                    let _ = writeln!(
                        out,
                        "gateway_upstream_attempts_total{{provider=\"{}\",outcome=\"{}\"}} {n}",
                        esc(p),
                        esc(o)
                    );
                }
            }
            help(
                &mut out,
                "gateway_rate_limited_total",
                "counter",
                "Requests refused with 429.",
            );
            let _ = writeln!(out, "gateway_rate_limited_total {}", m.rate_limited);
        }
        let now = tokio::time::Instant::now();
        help(
            &mut out,
            "gateway_circuit_state",
            "gauge",
            "Circuit per target: 0 closed, 1 half-open, 2 open.",
        );
        for t in gw.health.report(now) {
            let v = match t.state {
                router::CircuitState::Closed => 0,
                router::CircuitState::HalfOpen => 1,
                router::CircuitState::Open => 2,
            };
            let _ = writeln!(
                out,
                "gateway_circuit_state{{provider=\"{}\",model=\"{}\"}} {v}",
                esc(&t.provider),
                esc(&t.model)
            );
        }
        let c = &gw.log.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        help(
            &mut out,
            "gateway_log_queue_depth",
            "gauge",
            "Request-log rows waiting for the writer.",
        );
        let _ = writeln!(out, "gateway_log_queue_depth {}", load(&c.queued));
        help(
            &mut out,
            "gateway_log_rows_written_total",
            "counter",
            "Request-log rows written.",
        );
        let _ = writeln!(out, "gateway_log_rows_written_total {}", load(&c.written));
        help(
            &mut out,
            "gateway_log_rows_dropped_total",
            "counter",
            "Request-log rows dropped because the queue was full.",
        );
        let _ = writeln!(out, "gateway_log_rows_dropped_total {}", load(&c.dropped));
        help(
            &mut out,
            "gateway_log_batches_failed_total",
            "counter",
            "Request-log batches the store refused (each is retried).",
        );
        let _ = writeln!(
            out,
            "gateway_log_batches_failed_total {}",
            load(&c.failed_batches)
        );
        help(
            &mut out,
            "gateway_usage_queue_depth",
            "gauge",
            "Usage records waiting for the settlement writer.",
        );
        let _ = writeln!(out, "gateway_usage_queue_depth {}", gw.accounts.queued());
        if let limits::Backend::Redis(r) = &*gw.limiter() {
            help(
                &mut out,
                "gateway_ratelimit_degraded",
                "gauge",
                "1 while Redis is unreachable and limits run per instance.",
            );
            let _ = writeln!(
                out,
                "gateway_ratelimit_degraded {}",
                u8::from(r.is_degraded())
            );
            help(
                &mut out,
                "gateway_ratelimit_degraded_decisions_total",
                "counter",
                "Rate-limit decisions taken in degraded mode.",
            );
            let _ = writeln!(
                out,
                "gateway_ratelimit_degraded_decisions_total {}",
                r.degraded_decisions()
            );
        }
        help(
            &mut out,
            "gateway_moderation_failures_total",
            "counter",
            "Moderation classifier calls that failed or timed out (the request went on unless fail-closed).",
        );
        let _ = writeln!(
            out,
            "gateway_moderation_failures_total {}",
            gw.counters.moderation_failures()
        );
        help(
            &mut out,
            "gateway_hook_failures_total",
            "counter",
            "Pre/post-hook and function calls that failed (deadline, status, body, egress).",
        );
        let _ = writeln!(
            out,
            "gateway_hook_failures_total {}",
            gw.counters.hook_failures()
        );
        help(
            &mut out,
            "gateway_rag_failures_total",
            "counter",
            "Knowledge-base retrievals that failed (the request went on without context unless fail-closed).",
        );
        let _ = writeln!(
            out,
            "gateway_rag_failures_total {}",
            gw.counters.rag_failures()
        );
        help(
            &mut out,
            "gateway_ready",
            "gauge",
            "1 while the gateway accepts traffic.",
        );
        let _ = writeln!(out, "gateway_ready {}", u8::from(gw.is_ready()));
        help(
            &mut out,
            "gateway_uptime_seconds",
            "gauge",
            "Seconds since start.",
        );
        let _ = writeln!(
            out,
            "gateway_uptime_seconds {}",
            self.started.elapsed().as_secs()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let mut h = Histogram::default();
        for s in [0.001, 0.02, 0.02, 3.0, 500.0] {
            h.add(s);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "api=\"a\"");
        assert!(out.contains("x_bucket{api=\"a\",le=\"0.005\"} 1\n"));
        assert!(out.contains("x_bucket{api=\"a\",le=\"0.025\"} 3\n"));
        assert!(out.contains("x_bucket{api=\"a\",le=\"5\"} 4\n"));
        assert!(out.contains("x_bucket{api=\"a\",le=\"+Inf\"} 5\n"));
        assert!(out.contains("x_count{api=\"a\"} 5\n"));
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
