//! Outbound HTTP shared by every adapter: one lean hyper client (no redirects, no proxies, no
//! retries of its own, bounded connects), the per-provider request parts built once, and error
//! mapping from transport failures and upstream error answers.
//!
//! Why not a general-purpose client: on the data plane a request is one POST to a URL known when
//! the configuration snapshot is built. Parsing that URL, cloning default headers and walking
//! retry/redirect/proxy layers on every request cost about a quarter of the gateway's CPU per
//! request (bench/results/2026-11-22-2core.md); here the `Uri` and the header values are built
//! once per provider and a request is a `Full<Bytes>` body handed to the connection pool.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::egress::{EgressPolicy, GuardedConnector, Refusal};
use crate::error::{ErrorClass, ProviderError, retry_after};

/// The body of every upstream request.
pub type Body = Full<Bytes>;
/// An upstream response whose body is still to be read.
pub type Response = http::Response<Incoming>;

/// How long a TCP (and TLS) connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept.
pub const POOL_IDLE: Duration = Duration::from_secs(90);

const USER_AGENT_VALUE: &str = concat!("ai-gateway/", env!("CARGO_PKG_VERSION"));
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// The connection pool every provider shares (cheap to clone). It follows no redirects (a
/// provider key goes only to its configured host), consults no proxy, and retries nothing
/// itself: the router is the one place that retries. The only exception is hyper's own resend
/// of a request that was never written because a pooled connection had just closed.
#[derive(Clone)]
pub struct Client {
    inner: legacy::Client<HttpsConnector<GuardedConnector>, Body>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("http::Client")
    }
}

/// Why a small GET ([`Client::get_limited`]) failed; never names a credential.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("bad URL")]
    Url,
    #[error("{0}")]
    Refused(Refusal),
    #[error("could not connect")]
    Connect,
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {0} (redirects are never followed)")]
    Status(u16),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("the answer broke off")]
    Body,
}

impl Client {
    /// One GET for a small document (a JWKS): no redirects followed (a 3xx is an error), the
    /// whole exchange within `timeout`, the body refused once it passes `max_bytes` (reading
    /// stops there), anything but 2xx an error.
    pub async fn get_limited(
        &self,
        url: &str,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Bytes, FetchError> {
        self.exchange(Method::GET, url, &[], Bytes::new(), timeout, max_bytes)
            .await
    }

    /// One JSON POST to an operator's endpoint (a webhook, a hook): the same rules as
    /// [`Client::get_limited`], with the caller's headers (signatures).
    pub async fn post_limited(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Bytes, FetchError> {
        self.exchange(Method::POST, url, headers, body, timeout, max_bytes)
            .await
    }

    /// One POST whose answer is handed back once its head has arrived (within `timeout`):
    /// the caller reads the body (a function's event stream) under its own limits. Redirects
    /// are not followed; the status is the caller's to judge.
    pub async fn post_open(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, FetchError> {
        let uri = Uri::try_from(url).map_err(|_| FetchError::Url)?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(FetchError::Url);
        }
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(http::header::CONTENT_TYPE, JSON);
        for (k, v) in headers {
            builder = builder.header(*k, v.as_str());
        }
        let req = builder
            .body(Body::from(body))
            .map_err(|_| FetchError::Url)?;
        let call = self.inner.request(req);
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(FetchError::Timeout(timeout)),
            Ok(Err(e)) => Err(match find::<Refusal>(Some(&e)) {
                Some(r) => FetchError::Refused(r.clone()),
                None => FetchError::Connect,
            }),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Bytes, FetchError> {
        let uri = Uri::try_from(url).map_err(|_| FetchError::Url)?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(FetchError::Url);
        }
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(ACCEPT, JSON);
        if !body.is_empty() {
            builder = builder.header(http::header::CONTENT_TYPE, JSON);
        }
        for (k, v) in headers {
            builder = builder.header(*k, v.as_str());
        }
        let req = builder
            .body(Body::from(body))
            .map_err(|_| FetchError::Url)?;
        let call = async {
            let resp =
                self.inner
                    .request(req)
                    .await
                    .map_err(|e| match find::<Refusal>(Some(&e)) {
                        Some(r) => FetchError::Refused(r.clone()),
                        None => FetchError::Connect,
                    })?;
            let status = resp.status();
            if !status.is_success() {
                return Err(FetchError::Status(status.as_u16()));
            }
            let mut body = resp.into_body();
            let mut out = bytes::BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| FetchError::Body)?;
                if let Some(data) = frame.data_ref() {
                    if out.len() + data.len() > max_bytes {
                        return Err(FetchError::TooLarge(max_bytes));
                    }
                    out.extend_from_slice(data);
                }
            }
            Ok(out.freeze())
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot set up TLS certificate verification: {0}")]
    Tls(#[from] rustls::Error),
}

/// Builds the client: HTTP/1.1 over TCP (`TCP_NODELAY`) or TLS (rustls, the process's crypto
/// provider or ring, certificates checked against the platform's roots), connecting only where
/// `policy` allows (see [`crate::egress`]).
pub fn client(policy: EgressPolicy) -> Result<Client, BuildError> {
    let crypto = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let verifier = rustls_platform_verifier::Verifier::new(crypto.clone())?;
    let tls = rustls::ClientConfig::builder_with_provider(crypto)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let tcp = GuardedConnector::new(policy, |tcp| {
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    });
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    let inner = legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .build(connector);
    Ok(Client { inner })
}

/// What every request to one provider is built from, made once when the snapshot is built:
/// the client and the fixed headers (the credential marked sensitive, the user agent, the
/// vendor's own).
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client,
    /// `Err` when the key cannot travel in a header (a control character): every call fails.
    headers: Result<HeaderMap, String>,
}

impl Upstream {
    /// `base_url` is where every request of this provider goes (its `Host` header is built
    /// here, once); `credential` is the header carrying the key and its full value; `fixed`
    /// are headers every request carries.
    pub fn new(
        client: Client,
        base_url: &str,
        credential: Option<(HeaderName, String)>,
        fixed: &[(HeaderName, HeaderValue)],
    ) -> Upstream {
        let mut headers = HeaderMap::with_capacity(5 + fixed.len());
        if let Some(host) = host_header(base_url) {
            headers.insert(HOST, host);
        }
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        for (k, v) in fixed {
            headers.insert(k.clone(), v.clone());
        }
        let headers = match credential {
            None => Ok(headers),
            Some((name, value)) => match HeaderValue::try_from(value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.insert(name, v);
                    Ok(headers)
                }
                Err(_) => Err("the provider's key cannot be sent in an HTTP header".to_string()),
            },
        };
        Upstream { client, headers }
    }

    fn request(
        &self,
        provider: &str,
        method: Method,
        uri: Uri,
        body: Body,
    ) -> Result<Request<Body>, ProviderError> {
        let headers = self
            .headers
            .as_ref()
            .map_err(|m| ProviderError::new(provider, ErrorClass::Auth, m.clone()))?;
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers.clone();
        Ok(req)
    }

    /// A JSON POST; `stream` asks for an event stream.
    pub fn post(
        &self,
        provider: &str,
        uri: Uri,
        json: Vec<u8>,
        stream: bool,
    ) -> Result<Request<Body>, ProviderError> {
        let mut req = self.request(provider, Method::POST, uri, Full::new(Bytes::from(json)))?;
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, JSON);
        if stream {
            h.insert(ACCEPT, EVENT_STREAM);
        }
        Ok(req)
    }

    pub fn get(&self, provider: &str, uri: Uri) -> Result<Request<Body>, ProviderError> {
        self.request(provider, Method::GET, uri, Full::default())
    }

    /// Sends a request and turns transport failures and non-2xx answers into `ProviderError`;
    /// an error answer's body is read for the vendor's message (`vendor_message`).
    pub async fn send(
        &self,
        provider: &str,
        req: Request<Body>,
        vendor_message: fn(&[u8]) -> Option<ErrorParts>,
    ) -> Result<Response, ProviderError> {
        let resp = self
            .client
            .inner
            .request(req)
            .await
            .map_err(|e| request_error(provider, &e))?;
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
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
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

    /// [`Upstream::send`] bounded by `deadline` for the response head: a stream's time to first
    /// byte.
    pub async fn send_within(
        &self,
        provider: &str,
        req: Request<Body>,
        deadline: Duration,
        vendor_message: fn(&[u8]) -> Option<ErrorParts>,
    ) -> Result<Response, ProviderError> {
        tokio::time::timeout(deadline, self.send(provider, req, vendor_message))
            .await
            .map_err(|_| timed_out(provider))?
    }

    /// Sends a request and reads the whole answer, both within `deadline`.
    pub async fn fetch(
        &self,
        provider: &str,
        req: Request<Body>,
        deadline: Duration,
        vendor_message: fn(&[u8]) -> Option<ErrorParts>,
    ) -> Result<Bytes, ProviderError> {
        let call = async {
            let resp = self.send(provider, req, vendor_message).await?;
            match resp.into_body().collect().await {
                Ok(b) => Ok(b.to_bytes()),
                Err(e) => Err(body_error(provider, &e)),
            }
        };
        tokio::time::timeout(deadline, call)
            .await
            .map_err(|_| timed_out(provider))?
    }
}

/// `Host` as hyper would write it: the host, and the port unless it is the scheme's default.
fn host_header(base_url: &str) -> Option<HeaderValue> {
    let uri = Uri::try_from(base_url).ok()?;
    let host = uri.host()?;
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let value = match uri.port_u16() {
        Some(p) if p != default_port => format!("{host}:{p}"),
        _ => host.to_string(),
    };
    HeaderValue::try_from(value).ok()
}

/// A URL built for one request (one whose path names the model).
pub fn uri(provider: &str, url: String) -> Result<Uri, ProviderError> {
    Uri::try_from(url).map_err(|e| {
        ProviderError::new(
            provider,
            ErrorClass::BadRequest,
            format!("bad upstream URL: {e}"),
        )
    })
}

/// What an error body says, in OpenAI's terms.
#[derive(Debug, Default)]
pub struct ErrorParts {
    pub message: String,
    pub code: Option<String>,
    pub param: Option<String>,
}

fn timed_out(provider: &str) -> ProviderError {
    ProviderError::new(
        provider,
        ErrorClass::Timeout,
        "no response from upstream in time",
    )
}

/// The first error of `kind` in a source chain.
fn find<'a, E: StdError + 'static>(mut e: Option<&'a (dyn StdError + 'static)>) -> Option<&'a E> {
    while let Some(err) = e {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        e = err.source();
    }
    None
}

/// A failure before any response head: connect errors and connections that closed or reset
/// before answering are `Connect` (another attempt may succeed); a connect that timed out is
/// `Timeout`. Messages name the kind only (no URL, no address).
fn request_error(provider: &str, e: &legacy::Error) -> ProviderError {
    if find::<Refusal>(Some(e)).is_some() {
        // The address is in the operator's log (egress module), not in what the consumer sees.
        return ProviderError::new(
            provider,
            ErrorClass::Connect,
            "the upstream address is not allowed by the gateway's egress policy",
        );
    }
    let io = find::<std::io::Error>(Some(e));
    if io.is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
        return ProviderError::new(provider, ErrorClass::Timeout, "upstream connect timed out");
    }
    let message = if e.is_connect() {
        match io {
            Some(io) => format!("could not connect to upstream ({})", io.kind()),
            None => "could not connect to upstream".to_string(),
        }
    } else {
        match find::<hyper::Error>(Some(e)) {
            Some(h) if h.is_incomplete_message() || h.is_canceled() || h.is_closed() => {
                "upstream closed the connection before answering".to_string()
            }
            Some(h) if h.is_parse() => "upstream sent an invalid HTTP response".to_string(),
            _ => match io {
                Some(io) => format!(
                    "upstream connection failed before answering ({})",
                    io.kind()
                ),
                None => "upstream connection failed before answering".to_string(),
            },
        }
    };
    ProviderError::new(provider, ErrorClass::Connect, message)
}

/// A failure while reading a response body.
pub(crate) fn body_error(provider: &str, _e: &hyper::Error) -> ProviderError {
    ProviderError::new(
        provider,
        ErrorClass::StreamBroken,
        "upstream connection broke while reading the response",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_leaves_out_default_ports_only() {
        let host = |u: &str| host_header(u).map(|v| v.to_str().unwrap_or_default().to_string());
        assert_eq!(
            host("https://api.openai.com/v1").as_deref(),
            Some("api.openai.com")
        );
        assert_eq!(host("https://h:443/v1").as_deref(), Some("h"));
        assert_eq!(host("http://h:80").as_deref(), Some("h"));
        assert_eq!(host("http://h:443").as_deref(), Some("h:443"));
        assert_eq!(
            host("http://127.0.0.1:8080/v1").as_deref(),
            Some("127.0.0.1:8080")
        );
    }
}
