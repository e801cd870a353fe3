//! The SSE events of an upstream response body as they arrive, polled directly by the adapters'
//! chunk streams (one stream layer, no per-read timer).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::Future;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use tokio::time::{Instant, Sleep};
use wire::sse::{SseEvent, SseParser};

use crate::error::{ErrorClass, ProviderError};
use crate::http::{self, Response};

/// At most this many bytes are read after a stream's terminator to keep its connection.
pub const DRAIN_LIMIT: usize = 64 * 1024;
/// At most this long is waited after a stream's terminator for the end of its body.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads a response body into SSE events. A transport error ends the events with
/// `StreamBroken`; a clean end is `None` (the caller decides whether that is broken too).
/// `idle` bounds each wait for the upstream; one timer serves the whole stream and is only
/// re-armed when it fires. Dropping this drops the body, which cancels the upstream call.
pub struct Events {
    /// `None` once released after the stream's terminator.
    body: Option<Incoming>,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    provider: String,
    idle: Duration,
    /// When the current wait for the upstream began (`None`: not waiting).
    waiting_since: Option<Instant>,
    stall: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl Events {
    pub fn new(provider: String, resp: Response, idle: Duration) -> Events {
        Events {
            body: Some(resp.into_body()),
            parser: SseParser::new(),
            pending: VecDeque::new(),
            provider,
            idle,
            waiting_since: None,
            stall: None,
            done: false,
        }
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<SseEvent, ProviderError>>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(ev)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.waiting_since = None;
                    // Trailers carry nothing an adapter reads.
                    if let Ok(data) = frame.into_data()
                        && let Err(e) = self.parser.push_into(&data, &mut self.pending)
                    {
                        return Poll::Ready(Some(Err(
                            self.fail(ErrorClass::StreamBroken, e.to_string())
                        )));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(http::body_error(&self.provider, &e))));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    ready!(self.poll_stall(cx));
                    return Poll::Ready(Some(Err(
                        self.fail(ErrorClass::Timeout, "upstream stream stalled".into())
                    )));
                }
            }
        }
    }

    /// The stream's terminator was read: nothing more is wanted, but the body is read to its
    /// end (normally only the chunked encoding's last chunk is left) so that the connection goes
    /// back to the pool instead of being closed, which would cost the next call a new connect.
    /// What has not arrived yet is read by a detached task, bounded by [`DRAIN_LIMIT`] and
    /// [`DRAIN_TIME`]; anything sent after the terminator is ignored.
    pub fn release(&mut self, cx: &mut Context<'_>) {
        self.done = true;
        self.pending.clear();
        let Some(mut body) = self.body.take() else {
            return;
        };
        let mut left = DRAIN_LIMIT;
        loop {
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let n = frame.data_ref().map_or(0, |d| d.len());
                    match left.checked_sub(n) {
                        Some(l) => left = l,
                        None => return,
                    }
                }
                Poll::Ready(Some(Err(_)) | None) => return,
                Poll::Pending => break,
            }
        }
        tokio::spawn(async move {
            let drain = async {
                while let Some(Ok(frame)) = body.frame().await {
                    let n = frame.data_ref().map_or(0, |d| d.len());
                    match left.checked_sub(n) {
                        Some(l) => left = l,
                        None => return,
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }

    /// Ready once the current wait has lasted `idle`.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let due = since + self.idle;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        loop {
            ready!(stall.as_mut().poll(cx));
            if Instant::now() >= due {
                return Poll::Ready(());
            }
            // Armed for an earlier wait: re-arm for this one.
            stall.as_mut().reset(due);
        }
    }

    fn fail(&mut self, class: ErrorClass, message: String) -> ProviderError {
        self.done = true;
        self.pending.clear();
        ProviderError::new(&self.provider, class, message)
    }
}
