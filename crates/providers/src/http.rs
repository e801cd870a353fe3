//! Outbound HTTP shared by every adapter: one client (no redirects, bounded timeouts), error
//! mapping from upstream responses, and the SSE event stream.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use wire::sse::{SseEvent, SseParser};

use crate::error::{ErrorClass, ProviderError, retry_after};

/// The client every provider shares. Redirects are never followed: a provider key goes only to
/// its configured host.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        // One retry layer in the gateway (the router), none in the client; no proxy lookups.
        .retry(reqwest::retry::never())
        .no_proxy()
        .user_agent(concat!("ai-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Sends a request and turns transport failures and non-2xx answers into `ProviderError`.
/// `vendor_message` extracts the message from the vendor's error body.
pub async fn send(
    provider: &str,
    rb: reqwest::RequestBuilder,
    vendor_message: fn(&[u8]) -> Option<ErrorParts>,
) -> Result<reqwest::Response, ProviderError> {
    let resp = rb
        .send()
        .await
        .map_err(|e| ProviderError::from_reqwest(provider, &e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    if status.is_redirection() {
        return Err(ProviderError::new(
            provider,
            ErrorClass::Server,
            format!(
                "upstream answered {} (a redirect, which the gateway never follows)",
                status.as_u16()
            ),
        ));
    }
    let ra = retry_after(resp.headers());
    let body = resp.bytes().await.unwrap_or_default();
    let parts = vendor_message(&body).unwrap_or_else(|| ErrorParts {
        message: format!("upstream answered HTTP {}", status.as_u16()),
        code: None,
        param: None,
    });
    let mut err = ProviderError::from_status(provider, status.as_u16(), parts.message);
    if let Some(class) = parts.code.as_deref().and_then(ErrorClass::from_code) {
        err.class = class;
    }
    if err.class != ErrorClass::Auth {
        err.code = parts.code;
        err.param = parts.param;
    }
    Err(err.with_retry_after(ra))
}

/// [`send`] bounded by `deadline` for the response head: a stream's time to first byte.
pub async fn send_within(
    provider: &str,
    rb: reqwest::RequestBuilder,
    deadline: Duration,
    vendor_message: fn(&[u8]) -> Option<ErrorParts>,
) -> Result<reqwest::Response, ProviderError> {
    tokio::time::timeout(deadline, send(provider, rb, vendor_message))
        .await
        .map_err(|_| {
            ProviderError::new(
                provider,
                ErrorClass::Timeout,
                "no response from upstream in time",
            )
        })?
}

/// What an error body says, in OpenAI's terms.
#[derive(Debug, Default)]
pub struct ErrorParts {
    pub message: String,
    pub code: Option<String>,
    pub param: Option<String>,
}

/// Reads the whole body, bounded by the provider deadline already on the request.
pub async fn body(provider: &str, resp: reqwest::Response) -> Result<Bytes, ProviderError> {
    resp.bytes()
        .await
        .map_err(|e| ProviderError::from_reqwest(provider, &e))
}

/// The SSE events of a response body as they arrive. A transport error ends the stream with
/// `StreamBroken`; the caller decides whether a clean end without a terminator is broken too.
/// `idle` bounds the gap between two reads. Dropping the stream drops the response, which
/// cancels the upstream call.
pub fn sse_events(
    provider: String,
    resp: reqwest::Response,
    idle: Duration,
) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send {
    struct State<S> {
        bytes: S,
        parser: SseParser,
        pending: VecDeque<SseEvent>,
        provider: String,
        done: bool,
    }
    let state = State {
        bytes: resp.bytes_stream(),
        parser: SseParser::new(),
        pending: VecDeque::new(),
        provider,
        done: false,
    };
    futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            let next = match tokio::time::timeout(idle, st.bytes.next()).await {
                Ok(n) => n,
                Err(_) => {
                    st.done = true;
                    let e = ProviderError::new(
                        &st.provider,
                        ErrorClass::Timeout,
                        "upstream stream stalled",
                    );
                    return Some((Err(e), st));
                }
            };
            match next {
                None => return None,
                Some(Err(e)) => {
                    st.done = true;
                    let mut err = ProviderError::from_reqwest(&st.provider, &e);
                    err.class = ErrorClass::StreamBroken;
                    return Some((Err(err), st));
                }
                Some(Ok(chunk)) => match st.parser.push(&chunk) {
                    Ok(events) => st.pending.extend(events),
                    Err(e) => {
                        st.done = true;
                        let err = ProviderError::new(
                            &st.provider,
                            ErrorClass::StreamBroken,
                            e.to_string(),
                        );
                        return Some((Err(err), st));
                    }
                },
            }
        }
    })
}
