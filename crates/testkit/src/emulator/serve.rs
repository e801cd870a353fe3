//! The accept loop: one hyper HTTP/1 connection per accepted socket, serving the router.
//!
//! Not `axum::serve`, because a handler must be able to end its connection without answering
//! (`Fault::Reset`): it returns a response marked [`DropConnection`], and the service turns that
//! into an error, on which hyper closes the socket without writing a byte.

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use futures::future::Map;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Marks a response that must not be sent: its connection is closed instead.
#[derive(Debug, Clone, Copy)]
pub struct DropConnection;

/// A response that makes the server close the connection without answering.
pub fn drop_connection() -> Response {
    let mut resp = ().into_response();
    resp.extensions_mut().insert(DropConnection);
    resp
}

/// Serves `router` on every connection `listener` accepts, until the task is aborted (which also
/// aborts the connections still open, hanging ones included).
pub async fn run(listener: TcpListener, router: Router) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            // Reap finished connections so the set does not grow with them.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Streams go out in several small writes: without NODELAY, Nagle holds the last one
        // until the client's delayed ACK (~40 ms a stream).
        let _ = stream.set_nodelay(true);
        let service = Service {
            router: router.clone(),
        };
        conns.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The router as a hyper service, failing the requests whose response says [`DropConnection`].
#[derive(Clone)]
struct Service {
    router: Router,
}

type Answered = fn(Result<Response, Infallible>) -> Result<Response, std::io::Error>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response;
    type Error = std::io::Error;
    type Future = Map<axum::routing::future::RouteFuture<Infallible>, Answered>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // A `Router` clone is one reference count.
        let mut router = self.router.clone();
        tower::Service::call(&mut router, req.map(Body::new)).map(answered as Answered)
    }
}

fn answered(r: Result<Response, Infallible>) -> Result<Response, std::io::Error> {
    let resp = r.unwrap_or_else(|never| match never {});
    if resp.extensions().get::<DropConnection>().is_some() {
        return Err(std::io::Error::other(
            "emulator: connection reset on purpose",
        ));
    }
    Ok(resp)
}
