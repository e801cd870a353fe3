//! The request log: each vendor request as it arrived, when, and how its answer ended.
//!
//! A handler gets an [`Attempt`] when it records the request and hands it its response with
//! [`Attempt::track`]. The attempt lives in the handler future and then in the response body, so
//! whoever drops it early (hyper, when the client goes away) marks the request `cancelled`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes, HttpBody};
use axum::response::Response;
use futures::Stream;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Shared, Vendor, serve::DropConnection};

/// How many requests the log keeps; older ones are forgotten.
const LOG_CAP: usize = 10_000;

/// How a recorded request ended, as far as the emulator could see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still being answered.
    InFlight,
    /// The whole response, streamed body included, was produced.
    Completed,
    /// The client went away first: the handler or its body was dropped before the end.
    Cancelled,
    /// A fault ended it on purpose (`Reset`, `CutMidStream`).
    Faulted,
}

/// A request as the emulator saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub vendor: Vendor,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    /// When it arrived, in milliseconds since the emulator started (tokio time).
    pub at_ms: u64,
    /// When its outcome was settled, on the same clock.
    pub ended_ms: Option<u64>,
    pub outcome: Outcome,
    /// Finds the entry again after older ones were evicted.
    #[serde(skip)]
    seq: u64,
}

/// The recorded requests, oldest first, and a signal for each settled outcome.
pub(super) struct RequestLog {
    started: Instant,
    entries: Mutex<Log>,
    pub(super) changed: Notify,
}

#[derive(Default)]
struct Log {
    next_seq: u64,
    entries: VecDeque<Recorded>,
}

impl RequestLog {
    pub(super) fn new() -> Self {
        RequestLog {
            started: Instant::now(),
            entries: Mutex::new(Log::default()),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Appends an in-flight entry; returns its sequence number.
    pub(super) fn push(
        &self,
        vendor: Vendor,
        path: String,
        headers: Vec<(String, String)>,
        body: serde_json::Value,
    ) -> Option<u64> {
        let at_ms = self.now_ms();
        let mut log = self.entries.lock().ok()?;
        let seq = log.next_seq;
        log.next_seq += 1;
        if log.entries.len() >= LOG_CAP {
            log.entries.pop_front();
        }
        log.entries.push_back(Recorded {
            vendor,
            path,
            headers,
            body,
            at_ms,
            ended_ms: None,
            outcome: Outcome::InFlight,
            seq,
        });
        drop(log);
        self.changed.notify_waiters();
        Some(seq)
    }

    fn settle(&self, seq: u64, outcome: Outcome) {
        let ended = self.now_ms();
        if let Ok(mut log) = self.entries.lock()
            && let Ok(i) = log.entries.binary_search_by_key(&seq, |r| r.seq)
            && let Some(r) = log.entries.get_mut(i)
        {
            r.outcome = outcome;
            r.ended_ms = Some(ended);
        }
        self.changed.notify_waiters();
    }

    pub(super) fn snapshot(&self) -> Vec<Recorded> {
        self.entries
            .lock()
            .map(|l| l.entries.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn last(&self) -> Option<Recorded> {
        self.entries
            .lock()
            .ok()
            .and_then(|l| l.entries.back().cloned())
    }

    pub(super) fn clear(&self) {
        if let Ok(mut l) = self.entries.lock() {
            l.entries.clear();
        }
    }
}

/// One recorded request until its outcome is settled; dropping it unsettled means the client
/// went away. Empty (and free) when recording is off.
#[must_use = "hand the response to `track`, or the request is logged as cancelled"]
pub struct Attempt {
    entry: Option<(Shared, u64)>,
}

impl Attempt {
    pub(super) fn new(state: Shared, seq: Option<u64>) -> Self {
        Attempt {
            entry: seq.map(|seq| (state, seq)),
        }
    }

    pub(super) fn untracked() -> Self {
        Attempt { entry: None }
    }

    fn settle(&mut self, outcome: Outcome) {
        if let Some((state, seq)) = self.entry.take() {
            state.log.settle(seq, outcome);
        }
    }

    /// Settles the attempt with `resp`: a reset is `faulted`, a whole body `completed` now; a
    /// streamed body carries the attempt and settles it when it ends or is dropped.
    pub fn track(mut self, resp: Response) -> Response {
        if self.entry.is_none() {
            return resp;
        }
        if resp.extensions().get::<DropConnection>().is_some() {
            self.settle(Outcome::Faulted);
            return resp;
        }
        if resp.body().size_hint().exact().is_some() {
            self.settle(Outcome::Completed);
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let tracked = Tracked {
            inner: body.into_data_stream(),
            attempt: self,
        };
        Response::from_parts(parts, Body::from_stream(tracked))
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.settle(Outcome::Cancelled);
    }
}

/// A streamed body that settles its attempt: `completed` at its end, `faulted` at an error
/// (a scripted cut), `cancelled` when hyper drops it first.
struct Tracked {
    inner: BodyDataStream,
    attempt: Attempt,
}

impl Stream for Tracked {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        match &item {
            None => self.attempt.settle(Outcome::Completed),
            Some(Err(_)) => self.attempt.settle(Outcome::Faulted),
            Some(Ok(_)) => {}
        }
        Poll::Ready(item)
    }
}
