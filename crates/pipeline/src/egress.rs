//! Stream egress: chunk streams re-encoded for the consumer's format as they arrive (a stream is
//! never buffered whole; chunks already received are written together). A stream that breaks ends with an error event and without
//! the success terminator, so no SDK presents it as a success.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use providers::{ChunkStream, ProviderError, StreamItem};
use wire::anthropic::{ChunksToStream, encode_event};
use wire::openai::Usage;
use wire::sse;

use crate::error::GatewayError;

/// Called once when a stream ends: the usage seen (if any) and whether it completed. What it
/// returns is written before the stream's terminator (an SSE comment carrying the cost); when
/// the consumer has gone there is nobody to write to and it is dropped.
pub type OnEnd = Box<dyn FnOnce(StreamEnd) -> Option<Bytes> + Send>;

/// How a stream ended, for billing.
#[derive(Debug, Clone, Copy)]
pub struct StreamEnd {
    /// The provider's usage, when a chunk carried it.
    pub usage: Option<Usage>,
    /// Ended with the provider's terminator (not cut, not abandoned).
    pub complete: bool,
    /// The consumer went away before the end (as opposed to the upstream stream breaking).
    pub abandoned: bool,
    /// Chunks with choices that were delivered: about one token each, the estimate when the
    /// provider's usage never came.
    pub chunks: u64,
}

struct State {
    first: Option<StreamItem>,
    rest: ChunkStream,
    usage: Option<Usage>,
    chunks: u64,
    done: bool,
    /// Something was written already (the first write is never delayed).
    written: bool,
    on_end: Option<OnEnd>,
}

impl State {
    fn new(first: StreamItem, rest: ChunkStream, on_end: OnEnd) -> Self {
        State {
            first: Some(first),
            rest,
            usage: None,
            chunks: 0,
            done: false,
            written: false,
            on_end: Some(on_end),
        }
    }

    async fn next(&mut self) -> Option<Result<StreamItem, ProviderError>> {
        if let Some(f) = self.first.take() {
            return Some(Ok(f));
        }
        self.rest.next().await
    }

    fn summary(&self, complete: bool, abandoned: bool) -> StreamEnd {
        StreamEnd {
            usage: self.usage,
            complete,
            abandoned,
            chunks: self.chunks,
        }
    }

    /// Ends the stream, writing the end hook's trailer.
    fn end(&mut self, ok: bool, out: &mut BytesMut) {
        self.done = true;
        if let Some(f) = self.on_end.take()
            && let Some(trailer) = f(self.summary(ok, false))
        {
            out.extend_from_slice(&trailer);
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // The consumer went away mid-stream: what was delivered is still accounted for.
        if let Some(f) = self.on_end.take() {
            let _ = f(self.summary(false, true));
        }
    }
}

/// Coalesced writes stop growing at this size.
const MAX_BATCH: usize = 64 * 1024;

/// How one consumer format writes a stream.
trait Encode: Send + 'static {
    /// Fails when the chunk cannot be read in the consumer's format: the stream ends there.
    fn chunk(&mut self, item: StreamItem, out: &mut BytesMut) -> Result<(), ProviderError>;
    fn finish(&mut self, out: &mut BytesMut);
    fn error(&mut self, e: ProviderError, out: &mut BytesMut);
}

/// Drives a chunk stream through an encoder. Chunks that have already arrived are written
/// together (one write instead of one per chunk); the driver never waits for more than one.
fn drive<E: Encode>(
    first: StreamItem,
    rest: ChunkStream,
    on_end: OnEnd,
    enc: E,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    futures::stream::unfold(
        (State::new(first, rest, on_end), enc),
        |(mut st, mut enc)| async move {
            let mut out = BytesMut::new();
            while out.is_empty() {
                if st.done {
                    return None;
                }
                let mut next = st.next().await;
                loop {
                    match next {
                        None => {
                            st.end(true, &mut out);
                            enc.finish(&mut out);
                            break;
                        }
                        Some(Err(e)) => {
                            st.end(false, &mut out);
                            enc.error(e, &mut out);
                            break;
                        }
                        Some(Ok(item)) => {
                            if let Some(u) = item.usage() {
                                st.usage = Some(u);
                            }
                            if !item.is_usage_only() {
                                st.chunks += 1;
                            }
                            if let Err(e) = enc.chunk(item, &mut out) {
                                st.end(false, &mut out);
                                enc.error(e, &mut out);
                                break;
                            }
                        }
                    }
                    // Let the upstream connection task run once, so that chunks already on
                    // the socket join this write. Not before the first write: that would delay
                    // the first byte.
                    if out.len() >= MAX_BATCH {
                        break;
                    }
                    if st.written {
                        tokio::task::yield_now().await;
                    }
                    match st.rest.next().now_or_never() {
                        Some(n) => next = n,
                        None => break,
                    }
                }
            }
            st.written = true;
            Some((Ok(out.freeze()), (st, enc)))
        },
    )
}

struct OpenAiSse {
    want_usage: bool,
}

impl Encode for OpenAiSse {
    fn chunk(&mut self, item: StreamItem, out: &mut BytesMut) -> Result<(), ProviderError> {
        if item.is_usage_only() && !self.want_usage {
            return Ok(());
        }
        out.extend_from_slice(b"data: ");
        match item {
            StreamItem::Raw { json, .. } => out.extend_from_slice(&json),
            StreamItem::Chunk(c) => {
                out.extend_from_slice(&serde_json::to_vec(&c).unwrap_or_default())
            }
        }
        out.extend_from_slice(b"\n\n");
        Ok(())
    }

    fn finish(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(sse::DONE);
    }

    fn error(&mut self, e: ProviderError, out: &mut BytesMut) {
        out.extend_from_slice(&openai_error(&GatewayError::Upstream(e)));
    }
}

/// An OpenAI-format error event (SDKs raise it as an API error).
pub fn openai_error(e: &GatewayError) -> Bytes {
    sse::data_event(&serde_json::to_vec(&e.body()).unwrap_or_default())
}

/// An Anthropic-format `error` event.
pub fn anthropic_error(e: &GatewayError) -> Bytes {
    let (status, _, _) = e.parts();
    let body = wire::anthropic::error_response(status.as_u16(), &e.message());
    let json = serde_json::to_vec(&body).unwrap_or_default();
    sse::named_event("error", &json)
}

pub type Bytestream = BoxStream<'static, Result<Bytes, Infallible>>;
pub type Opening<T> = Pin<Box<dyn Future<Output = Result<T, GatewayError>> + Send>>;

/// A stream committed before its upstream answered: SSE comments every `every` until
/// `opening` resolves, then what `render` makes of it, or one error event.
pub fn late<T: Send + 'static>(
    opening: Opening<T>,
    every: Duration,
    render: impl FnOnce(T) -> Bytestream + Send + 'static,
    error: fn(&GatewayError) -> Bytes,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    async_stream::stream! {
        let mut opening = opening;
        let mut tick = tokio::time::interval(every);
        let opened = loop {
            tokio::select! {
                r = &mut opening => break r,
                _ = tick.tick() => yield Ok(Bytes::from_static(b": keep-alive\n\n")),
            }
        };
        match opened {
            Ok(v) => {
                let mut body = render(v);
                while let Some(b) = body.next().await {
                    yield b;
                }
            }
            Err(e) => yield Ok(error(&e)),
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
    drive(first, rest, on_end, OpenAiSse { want_usage })
}

struct AnthropicSse {
    to_stream: ChunksToStream,
    /// Who serves the stream, for the error a chunk that does not parse gives.
    provider: String,
}

impl Encode for AnthropicSse {
    fn chunk(&mut self, item: StreamItem, out: &mut BytesMut) -> Result<(), ProviderError> {
        let chunk = item.into_chunk(&self.provider)?;
        for ev in self.to_stream.on_chunk(&chunk) {
            out.extend_from_slice(&encode_event(&ev));
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut BytesMut) {
        for ev in self.to_stream.finish() {
            out.extend_from_slice(&encode_event(&ev));
        }
    }

    fn error(&mut self, e: ProviderError, out: &mut BytesMut) {
        out.extend_from_slice(&anthropic_error(&GatewayError::Upstream(e)));
    }
}

/// Anthropic Messages events (`message_start` … `message_stop`).
/// `provider` serves the stream (an OpenAI-shaped upstream's chunks are parsed here).
pub fn anthropic(
    first: StreamItem,
    rest: ChunkStream,
    model: &str,
    provider: &str,
    on_end: OnEnd,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + use<> {
    let enc = AnthropicSse {
        to_stream: ChunksToStream::new(model),
        provider: provider.to_string(),
    };
    drive(first, rest, on_end, enc)
}
