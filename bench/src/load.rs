//! The load generator: `concurrency` workers, each on its own HTTP/1.1 keep-alive connection,
//! sending the same small chat request back to back until the window closes.
//!
//! A window is a warm-up followed by the measured part. Only requests that *complete* inside the
//! measured part count (throughput, percentiles); every request is bounded by
//! [`REQUEST_TIMEOUT`], so a worker stops at most that long after the window closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Longest a single request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before reconnecting after a failed connection, so a dead server is not spun on.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// Non-streaming chat, or streaming chat (SSE, ended by `data: [DONE]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Complete,
    Stream,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Complete => "non-streaming",
            Mode::Stream => "streaming",
        }
    }
}

/// Where requests go and what they carry.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: &'static str,
    /// `Bearer …`: the emulator's key, or a gateway key issued for the run.
    pub authorization: Option<String>,
    pub body: Bytes,
    pub mode: Mode,
}

impl Target {
    /// A chat request for `model`: one short user message, no `max_tokens` (so the emulator
    /// answers with its configured number of words).
    pub fn chat(
        addr: SocketAddr,
        model: &str,
        authorization: Option<String>,
        mode: Mode,
    ) -> Target {
        let stream = if mode == Mode::Stream {
            r#","stream":true"#
        } else {
            ""
        };
        let body = format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"Say hello to the benchmark."}}]{stream}}}"#
        );
        Target {
            addr,
            path: "/v1/chat/completions",
            authorization,
            body: Bytes::from(body),
            mode,
        }
    }

    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut b = Request::post(self.path)
            .header(HOST, self.addr.to_string())
            .header(CONTENT_TYPE, "application/json");
        if let Some(a) = &self.authorization {
            b = b.header(AUTHORIZATION, a.as_str());
        }
        Ok(b.body(Full::new(self.body.clone()))?)
    }
}

/// Warm-up, then the measured part.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one scenario run measured. Latencies are in nanoseconds, sorted.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Requests completed successfully inside the measured part.
    pub ok: u64,
    /// Failed requests (status, transport, timeout, a stream without `[DONE]`) inside the window.
    pub errors: u64,
    /// The measured part's actual length.
    pub measured: Duration,
    /// Whole request: until the last body byte.
    pub total: Vec<u64>,
    /// Streaming only: until the first body byte.
    pub ttfb: Vec<u64>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        let s = self.measured.as_secs_f64();
        if s > 0.0 { self.ok as f64 / s } else { 0.0 }
    }
}

/// Nearest-rank percentile of sorted nanoseconds, in milliseconds.
pub fn percentile_ms(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted.get(idx).map(|ns| *ns as f64 / 1e6)
}

/// One request's timings.
struct Sample {
    end: Instant,
    total: Duration,
    ttfb: Option<Duration>,
}

/// Runs the load from `start` for the whole window and returns what completed in the measured
/// part.
pub async fn run(
    target: &Target,
    concurrency: usize,
    start: Instant,
    window: Window,
) -> anyhow::Result<LoadResult> {
    let from = start + window.warmup;
    let until = from + window.measure;
    let target = Arc::new(target.clone());
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let t = target.clone();
        workers.push(tokio::spawn(async move { worker(&t, from, until).await }));
    }
    let mut out = LoadResult {
        measured: window.measure,
        ..LoadResult::default()
    };
    for w in workers {
        let (samples, errors) = w.await.context("a load worker stopped abnormally")?;
        out.errors += errors;
        for s in samples
            .into_iter()
            .filter(|s| s.end >= from && s.end < until)
        {
            out.ok += 1;
            out.total.push(s.total.as_nanos() as u64);
            if let Some(t) = s.ttfb {
                out.ttfb.push(t.as_nanos() as u64);
            }
        }
    }
    out.total.sort_unstable();
    out.ttfb.sort_unstable();
    Ok(out)
}

/// One connection's loop: request after request until `until`, reconnecting after a failure.
/// Returns the samples and the number of errors in the window.
async fn worker(target: &Target, from: Instant, until: Instant) -> (Vec<Sample>, u64) {
    let mut samples = Vec::new();
    let mut errors = 0u64;
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    while Instant::now() < until {
        let send = match conn.as_mut() {
            Some(s) => s,
            None => match connect(target.addr).await {
                Ok(s) => conn.insert(s),
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, one(send, target)).await {
            Ok(Ok(s)) => samples.push(s),
            Ok(Err(_)) | Err(_) => {
                if Instant::now() >= from {
                    errors += 1;
                }
                // The connection's state is unknown after a failure: start a fresh one.
                conn = None;
            }
        }
    }
    (samples, errors)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        // Ends when the worker drops its sender or the server closes; either way nothing to do.
        let _ = conn.await;
    });
    Ok(send)
}

/// Sends one request and reads the whole response.
async fn one(send: &mut SendRequest<Full<Bytes>>, target: &Target) -> anyhow::Result<Sample> {
    let req = target.request()?;
    send.ready().await?;
    let began = Instant::now();
    let resp = send.send_request(req).await?;
    if resp.status() != StatusCode::OK {
        bail!("status {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut ttfb = None;
    // The last bytes seen, enough to recognise the stream terminator.
    let mut tail: Vec<u8> = Vec::with_capacity(32);
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if ttfb.is_none() {
            ttfb = Some(began.elapsed());
        }
        len += data.len();
        if target.mode == Mode::Stream {
            tail.extend_from_slice(&data);
            let keep = tail.len().saturating_sub(32);
            tail.drain(..keep);
        }
    }
    let end = Instant::now();
    if len == 0 {
        bail!("empty body");
    }
    if target.mode == Mode::Stream && !tail.ends_with(b"data: [DONE]\n\n") {
        bail!("stream ended without [DONE]");
    }
    let ttfb = if target.mode == Mode::Stream {
        ttfb
    } else {
        None
    };
    Ok(Sample {
        end,
        total: end - began,
        ttfb,
    })
}

/// One request, for checking the shapes before the load starts: the status and the body.
pub async fn probe(target: &Target) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut send = connect(target.addr).await?;
    let req = target.request()?;
    let fut = async {
        send.ready().await?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .context("probe request timed out")?
}

/// `GET path` until it answers 200, for at most `within`.
pub async fn wait_ready(addr: SocketAddr, path: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let attempt = async {
            let mut send = connect(addr).await?;
            let req = Request::get(path)
                .header(HOST, addr.to_string())
                .body(Full::new(Bytes::new()))?;
            send.ready().await?;
            anyhow::Ok(send.send_request(req).await?.status())
        };
        if let Ok(Ok(StatusCode::OK)) = tokio::time::timeout(Duration::from_secs(1), attempt).await
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("http://{addr}{path} did not answer 200 within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1_000_000).collect();
        assert_eq!(percentile_ms(&v, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&v, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&v, 100.0), Some(100.0));
        assert_eq!(percentile_ms(&[7_000_000], 50.0), Some(7.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }

    #[test]
    fn the_request_body_is_the_small_chat_request() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let t = Target::chat(addr, "m", None, Mode::Stream);
        assert_eq!(
            &t.body[..],
            br#"{"model":"m","messages":[{"role":"user","content":"Say hello to the benchmark."}],"stream":true}"#
        );
    }
}
