//! A committed stream, watched: a silence longer than the idle timeout or the request's deadline
//! ends it with an error; an upstream that stops without its terminator after the answer was
//! finished is completed; an upstream that breaks mid-answer is resumed on the next target that
//! can take the partial answer (an assistant prefill where the catalogue says the model accepts
//! one, otherwise a continuation prompt). Whatever cannot be resumed ends with an error item,
//! which the egress turns into an error event: a truncated stream never looks like a success.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use providers::{ChunkStream, ErrorClass, ProviderError, StreamItem};
use router::{Health, Plan, Target};
use tokio::time::{Instant, Sleep};
use wire::openai::{ChatChunk, ChatRequest, Message, Role};

use super::{Ask, Opened, open_one, provider};
use crate::state::Snapshot;

/// What a continuation needs to know of its request.
pub struct Resume {
    pub snap: Arc<Snapshot>,
    pub health: Arc<Health>,
    pub req: Arc<ChatRequest>,
    pub ask: Arc<Ask>,
    pub deadline: Instant,
    pub idle: Duration,
    pub first_token: Duration,
}

/// Sent to a model that cannot take a prefill, after the partial answer.
const CONTINUE: &str = "Your previous answer was cut off. Continue it exactly where it stopped: \
do not repeat anything already written and do not add any preamble.";

/// The most continuations one stream may need.
const MAX_RESUMES: usize = 2;

/// What the consumer has been sent so far. Forwarded upstream JSON is only kept (a reference,
/// not a copy) and read if the stream breaks: the happy path parses nothing.
#[derive(Default)]
struct Progress {
    text: String,
    /// Tool calls and several choices cannot be stitched together from a partial answer.
    unresumable: bool,
    finished: bool,
    unread: Vec<Bytes>,
}

impl Progress {
    fn note(&mut self, item: &StreamItem) {
        match item {
            StreamItem::Raw { json, .. } => self.unread.push(json.clone()),
            StreamItem::Chunk(c) => {
                self.read();
                self.note_chunk(c);
            }
        }
    }

    /// Reads the kept JSON, in order.
    fn read(&mut self) {
        for json in std::mem::take(&mut self.unread) {
            // What the consumer got as garbage says nothing about the answer.
            if let Ok(c) = serde_json::from_slice::<ChatChunk>(&json) {
                self.note_chunk(&c);
            }
        }
    }

    fn note_chunk(&mut self, chunk: &ChatChunk) {
        for c in &chunk.choices {
            if c.index > 0 || c.delta.tool_calls.is_some() {
                self.unresumable = true;
            }
            if let Some(t) = &c.delta.content {
                self.text.push_str(t);
            }
            if c.finish_reason.is_some() {
                self.finished = true;
            }
        }
    }
}

/// One timer per stream for the idle and total limits, pushed back only when it fires: a new
/// timer per chunk would cost a timer-wheel insert and removal per chunk.
struct Watch {
    sleep: Pin<Box<Sleep>>,
    last: Instant,
    idle: Duration,
    deadline: Instant,
}

enum Next {
    Item(Option<Result<StreamItem, ProviderError>>),
    Stalled,
    PastDeadline,
}

impl Watch {
    fn new(idle: Duration, deadline: Instant) -> Self {
        let last = Instant::now();
        Watch {
            sleep: Box::pin(tokio::time::sleep_until((last + idle).min(deadline))),
            last,
            idle,
            deadline,
        }
    }

    async fn next(&mut self, rest: &mut ChunkStream) -> Next {
        let next = poll_fn(|cx| {
            if let Poll::Ready(item) = rest.poll_next_unpin(cx) {
                return Poll::Ready(Next::Item(item));
            }
            loop {
                if self.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let now = Instant::now();
                if now >= self.deadline {
                    return Poll::Ready(Next::PastDeadline);
                }
                let due = (self.last + self.idle).min(self.deadline);
                if now >= due {
                    return Poll::Ready(Next::Stalled);
                }
                self.sleep.as_mut().reset(due);
            }
        })
        .await;
        if let Next::Item(Some(_)) = next {
            self.last = Instant::now();
        }
        next
    }
}

pub fn guard(target: Target, first: &StreamItem, rest: ChunkStream, r: Resume) -> ChunkStream {
    let mut progress = Progress::default();
    progress.note(first);
    Box::pin(async_stream::stream! {
        let mut rest = rest;
        let mut target = target;
        let mut broken: Vec<Target> = Vec::new();
        let mut watch = Watch::new(r.idle, r.deadline);
        loop {
            let err = match watch.next(&mut rest).await {
                Next::Item(Some(Ok(item))) => {
                    progress.note(&item);
                    yield Ok(item);
                    continue;
                }
                Next::Item(None) => return,
                Next::Item(Some(Err(e))) => e,
                Next::PastDeadline => ProviderError::new(
                    &target.provider,
                    ErrorClass::Timeout,
                    "the stream did not finish within the request's deadline",
                ),
                Next::Stalled => ProviderError::new(
                    &target.provider,
                    ErrorClass::Timeout,
                    format!("the stream stalled for {} ms", r.idle.as_millis()),
                ),
            };
            progress.read();
            // Everything was said; only the terminator is missing.
            if progress.finished && err.class == ErrorClass::StreamBroken {
                return;
            }
            r.health.record(&target, Duration::ZERO, Some(err.class), Instant::now());
            tracing::warn!(provider = %target.provider, model = %target.model, error = %err.message, "stream broke mid-answer");
            broken.push(target.clone());
            if progress.unresumable || broken.len() > MAX_RESUMES || Instant::now() >= r.deadline {
                yield Err(err);
                return;
            }
            match resume(&r, &progress.text, &broken, err.class).await {
                Some((t, (first, s))) => {
                    tracing::info!(provider = %t.provider, model = %t.model, "stream resumed");
                    progress.note(&first);
                    target = t;
                    rest = s;
                    watch.last = Instant::now();
                    yield Ok(first);
                }
                None => {
                    yield Err(err);
                    return;
                }
            }
        }
    })
}

/// Opens a continuation on the next target that can serve it, or `None`.
async fn resume(
    r: &Resume,
    text: &str,
    broken: &[Target],
    class: ErrorClass,
) -> Option<(Target, Opened)> {
    let ctx = r.ask.context(&r.snap);
    let plan = Plan {
        skip: broken,
        after: Some(class),
        deadline: Some(r.deadline),
        ..r.ask.plan(&ctx)
    };
    let out = router::execute(&r.snap.table, &r.health, &plan, |t, _deadline, caps| {
        let p = provider(&r.snap, &t);
        let req = continuation(&r.req, text, caps.accepts_prefill());
        let first_token = r.first_token;
        async move { open_one(&*p?, &req, &t.model, first_token).await }
    })
    .await
    .ok()?;
    Some((out.target, out.value))
}

/// The request again, with the partial answer: as a prefill the model continues, or followed by
/// a prompt to continue.
fn continuation(req: &ChatRequest, text: &str, prefill: bool) -> ChatRequest {
    let mut r = req.clone();
    if !text.is_empty() {
        r.messages.push(Message::text(Role::Assistant, text));
        if !prefill {
            r.messages.push(Message::text(Role::User, CONTINUE));
        }
    }
    r
}
