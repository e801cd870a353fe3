//! The SSE events of an upstream response body as they arrive, polled directly by the adapters'
//! chunk streams (one stream layer, no per-read timer).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::Future;
use hyper::body::{Body as _, Incoming};
use tokio::time::{Instant, Sleep};
use wire::sse::{SseEvent, SseParser};

use crate::error::{ErrorClass, ProviderError};
use crate::http::{self, Response};

/// Reads a response body into SSE events. A transport error ends the events with
/// `StreamBroken`; a clean end is `None` (the caller decides whether that is broken too).
/// `idle` bounds each wait for the upstream; one timer serves the whole stream and is only
/// re-armed when it fires. Dropping this drops the body, which cancels the upstream call.
pub struct Events {
    body: Incoming,
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
            body: resp.into_body(),
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
            match Pin::new(&mut self.body).poll_frame(cx) {
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
