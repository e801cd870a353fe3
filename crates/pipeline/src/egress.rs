//! Stream egress: chunk streams re-encoded for the consumer's format, one event at a time (a
//! stream is never buffered whole). A stream that breaks ends with an error event and without
//! the success terminator, so no SDK presents it as a success.

use std::convert::Infallible;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use providers::{ChunkStream, ProviderError, StreamItem};
use wire::anthropic::{ChunksToStream, encode_event};
use wire::openai::Usage;
use wire::sse;

use crate::error::GatewayError;

/// Called once when a stream ends: the usage seen (if any) and whether it completed.
pub type OnEnd = Box<dyn FnOnce(Option<Usage>, bool) + Send>;

struct State {
    first: Option<StreamItem>,
    rest: ChunkStream,
    usage: Option<Usage>,
    done: bool,
    on_end: Option<OnEnd>,
}

impl State {
    fn new(first: StreamItem, rest: ChunkStream, on_end: OnEnd) -> Self {
        State {
            first: Some(first),
            rest,
            usage: None,
            done: false,
            on_end: Some(on_end),
        }
    }

    async fn next(&mut self) -> Option<Result<StreamItem, ProviderError>> {
        if let Some(f) = self.first.take() {
            return Some(Ok(f));
        }
        self.rest.next().await
    }

    fn end(&mut self, ok: bool) {
        self.done = true;
        if let Some(f) = self.on_end.take() {
            f(self.usage, ok);
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // The consumer went away mid-stream: what was delivered is still accounted for.
        if let Some(f) = self.on_end.take() {
            f(self.usage, false);
        }
    }
}

/// OpenAI `chat.completion.chunk` events, then `data: [DONE]`.
pub fn openai(
    first: StreamItem,
    rest: ChunkStream,
    want_usage: bool,
    on_end: OnEnd,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    futures::stream::unfold(State::new(first, rest, on_end), move |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            match st.next().await {
                None => {
                    st.end(true);
                    return Some((Ok(Bytes::from_static(sse::DONE)), st));
                }
                Some(Err(e)) => {
                    st.end(false);
                    let body = GatewayError::Upstream(e).body();
                    let json = serde_json::to_vec(&body).unwrap_or_default();
                    return Some((Ok(sse::data_event(&json)), st));
                }
                Some(Ok(item)) => {
                    if let Some(u) = item.chunk.usage {
                        st.usage = Some(u);
                    }
                    let usage_only = item.chunk.choices.is_empty() && item.chunk.usage.is_some();
                    if usage_only && !want_usage {
                        continue;
                    }
                    let bytes = match item.raw {
                        Some(raw) => sse::data_event(&raw),
                        None => {
                            sse::data_event(&serde_json::to_vec(&item.chunk).unwrap_or_default())
                        }
                    };
                    return Some((Ok(bytes), st));
                }
            }
        }
    })
}

/// Anthropic Messages events (`message_start` … `message_stop`).
pub fn anthropic(
    first: StreamItem,
    rest: ChunkStream,
    model: &str,
    on_end: OnEnd,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + use<> {
    let conv = ChunksToStream::new(model);
    futures::stream::unfold(
        (State::new(first, rest, on_end), conv),
        |(mut st, mut conv)| async move {
            loop {
                if st.done {
                    return None;
                }
                match st.next().await {
                    None => {
                        st.end(true);
                        let out = join(conv.finish().iter().map(encode_event));
                        return Some((Ok(out), (st, conv)));
                    }
                    Some(Err(e)) => {
                        st.end(false);
                        let err = GatewayError::Upstream(e);
                        let (status, _, _) = err.parts();
                        let body = wire::anthropic::error_response(status.as_u16(), &err.message());
                        let json = serde_json::to_vec(&body).unwrap_or_default();
                        return Some((Ok(sse::named_event("error", &json)), (st, conv)));
                    }
                    Some(Ok(item)) => {
                        if let Some(u) = item.chunk.usage {
                            st.usage = Some(u);
                        }
                        let events = conv.on_chunk(&item.chunk);
                        if events.is_empty() {
                            continue;
                        }
                        return Some((Ok(join(events.iter().map(encode_event))), (st, conv)));
                    }
                }
            }
        },
    )
}

fn join(parts: impl Iterator<Item = Bytes>) -> Bytes {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&p);
    }
    Bytes::from(out)
}
