//! The event loop every translating adapter shares: SSE events in, canonical chunks out, with
//! one rule for how a stream may end (its vendor's terminator, or an error).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::Stream;
use wire::openai::ChatChunk;
use wire::sse::SseEvent;

use crate::error::ProviderError;
use crate::events::Events;
use crate::http::Response;
use crate::openai::STREAM_IDLE;
use crate::provider::{ChunkStream, StreamItem};

/// What an adapter does with its vendor's events.
pub trait Translate: Send + Unpin + 'static {
    /// The chunks one event gives, or the failure it reports.
    fn event(&mut self, provider: &str, ev: SseEvent) -> Result<Vec<ChatChunk>, ProviderError>;
    /// The vendor's terminator was seen: stop reading.
    fn finished(&self) -> bool;
    /// The events ran out before `finished`: the last chunks, or why the stream is broken.
    fn end(&mut self, provider: &str) -> Result<Vec<ChatChunk>, ProviderError>;
}

pub fn stream<T: Translate>(provider: String, resp: Response, t: T) -> ChunkStream {
    Box::pin(Translated {
        events: Events::new(provider, resp, STREAM_IDLE),
        t,
        pending: VecDeque::new(),
        done: false,
    })
}

struct Translated<T> {
    events: Events,
    t: T,
    pending: VecDeque<ChatChunk>,
    done: bool,
}

impl<T: Translate> Stream for Translated<T> {
    type Item = Result<StreamItem, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let st = self.get_mut();
        loop {
            if let Some(chunk) = st.pending.pop_front() {
                return Poll::Ready(Some(Ok(StreamItem::Chunk(chunk))));
            }
            if st.done {
                return Poll::Ready(None);
            }
            let step = match ready!(st.events.poll_event(cx)) {
                None => {
                    st.done = true;
                    st.t.end(st.events.provider())
                }
                Some(Err(e)) => Err(e),
                Some(Ok(ev)) => {
                    let r = st.t.event(st.events.provider(), ev);
                    st.done = st.t.finished();
                    if st.done {
                        st.events.release(cx);
                    }
                    r
                }
            };
            match step {
                Ok(chunks) => st.pending.extend(chunks),
                Err(e) => {
                    st.done = true;
                    st.pending.clear();
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}
