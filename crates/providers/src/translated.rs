//! The event loop every translating adapter shares: SSE events in, canonical chunks out, with
//! one rule for how a stream may end (its vendor's terminator, or an error).

use std::collections::VecDeque;

use futures::StreamExt;
use wire::openai::ChatChunk;
use wire::sse::SseEvent;

use crate::error::ProviderError;
use crate::http;
use crate::openai::STREAM_IDLE;
use crate::provider::{ChunkStream, StreamItem};

/// What an adapter does with its vendor's events.
pub trait Translate: Send + 'static {
    /// The chunks one event gives, or the failure it reports.
    fn event(&mut self, provider: &str, ev: SseEvent) -> Result<Vec<ChatChunk>, ProviderError>;
    /// The vendor's terminator was seen: stop reading.
    fn finished(&self) -> bool;
    /// The events ran out before `finished`: the last chunks, or why the stream is broken.
    fn end(&mut self, provider: &str) -> Result<Vec<ChatChunk>, ProviderError>;
}

pub fn stream<T: Translate>(provider: String, resp: reqwest::Response, t: T) -> ChunkStream {
    struct State<T> {
        events:
            std::pin::Pin<Box<dyn futures::Stream<Item = Result<SseEvent, ProviderError>> + Send>>,
        t: T,
        pending: VecDeque<ChatChunk>,
        done: bool,
        provider: String,
    }
    let state = State {
        events: Box::pin(http::sse_events(provider.clone(), resp, STREAM_IDLE)),
        t,
        pending: VecDeque::new(),
        done: false,
        provider,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(chunk) = st.pending.pop_front() {
                return Some((Ok(StreamItem { chunk, raw: None }), st));
            }
            if st.done {
                return None;
            }
            let step = match st.events.next().await {
                None => {
                    st.done = true;
                    st.t.end(&st.provider)
                }
                Some(Err(e)) => Err(e),
                Some(Ok(ev)) => {
                    let r = st.t.event(&st.provider, ev);
                    st.done = st.t.finished();
                    r
                }
            };
            match step {
                Ok(chunks) => st.pending.extend(chunks),
                Err(e) => {
                    st.done = true;
                    st.pending.clear();
                    return Some((Err(e), st));
                }
            }
        }
    }))
}
