//! The HTTP limits a public server needs below the routes: how many connections may be open,
//! how long a client may take to send a request's head and its body.
//!
//! [`serve`] is the accept loop (it replaces `axum::serve`, which sets no header timeout and
//! no connection cap): a connection is accepted only with one of `max_connections` permits,
//! so excess connections wait in the kernel's listen backlog instead of costing a task and
//! buffers each; every connection speaks HTTP/1.1 with hyper's header read timeout, which
//! also closes keep-alive connections idle for that long. [`body_deadline`] (a layer of
//! [`crate::app`]) gives every request's body a deadline counted from the end of its head;
//! the body reader answers 408 when it passes ([`read_error`]).
//!
//! Invariants: a permit lives exactly as long as its connection's task, so on shutdown
//! taking back every permit means every connection has finished; a client sending a byte a
//! second holds a connection at most the header timeout plus the body deadline.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::BoxError;
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::ApiError;

/// Limits of the connection layer (the body deadline is [`crate::ServerConfig`]'s, since
/// the router applies it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpLimits {
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// Time a client has to send a request's head (method, path, headers), counted from
    /// when the server starts waiting for it: a new connection, or the end of the previous
    /// response on a kept-alive one.
    pub header_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { max_connections: 1024, header_read_timeout: Duration::from_secs(15) }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the requests in flight
/// finish (idle connections close at once) and returns when every connection has closed.
pub async fn serve(listener: TcpListener, app: axum::Router, limits: HttpLimits, shutdown: impl Future<Output = ()>) {
    // acquire_many takes a u32.
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS).min(u32::MAX as usize) as u32;
    let permits = Arc::new(Semaphore::new(max as usize));
    let (closing, closed) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            // The semaphore is never closed.
            Ok(p) = permits.clone().acquire_owned() => p,
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, app.clone(), permit, closed.clone(), limits.header_read_timeout));
            }
            // Out of descriptors (or another resource): give connections time to close
            // rather than spin. A connection reset before it was accepted needs no pause.
            Err(e) if !matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => {}
        }
    }
    drop(listener);
    let _ = closing.send(true);
    // Every permit back: every connection's task has ended.
    let _ = permits.acquire_many(max).await;
}

async fn connection(stream: TcpStream, app: axum::Router, _permit: OwnedSemaphorePermit, mut closing: watch::Receiver<bool>, header_timeout: Duration) {
    // Streamed tokens are small writes that should leave at once.
    let _ = stream.set_nodelay(true);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app)));
    tokio::select! {
        // A failed connection (reset, timed out) has nobody left to tell.
        _ = conn.as_mut() => return,
        _ = closing.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// The body did not arrive within the deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s (ingot api --body-read-timeout)", .0.as_secs_f64())]
pub struct BodyTimeout(Duration);

/// Middleware: the request's body fails with [`BodyTimeout`] once `limit` has passed.
pub(crate) async fn body_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = Body::new(Deadline { inner: body, sleep: Box::pin(tokio::time::sleep(limit)), limit });
    next.run(Request::from_parts(parts, body)).await
}

struct Deadline {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    limit: Duration,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a body that could not be read: 408 past its deadline, else 400.
pub(crate) fn read_error(e: axum::Error) -> ApiError {
    let inner = e.into_inner();
    match inner.downcast_ref::<BodyTimeout>() {
        Some(t) => ApiError::new(StatusCode::REQUEST_TIMEOUT, t.to_string()),
        None => ApiError::new(StatusCode::BAD_REQUEST, format!("reading the body: {inner}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use tokio_stream::StreamExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_body_past_its_deadline_is_a_408() {
        let app = axum::Router::new()
            .route("/", post(|req: Request| async move {
                let mut body = req.into_body().into_data_stream();
                while let Some(chunk) = body.next().await {
                    if let Err(e) = chunk {
                        let e = read_error(e);
                        return (e.status, e.message);
                    }
                }
                (StatusCode::OK, String::new())
            }))
            .layer(axum::middleware::from_fn_with_state(Duration::from_millis(50), body_deadline));
        // A body that never ends.
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let resp = app.clone().oneshot(Request::post("/").body(body).expect("request")).await.expect("response");
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        let text = axum::body::to_bytes(resp.into_body(), 1 << 10).await.expect("body");
        assert!(String::from_utf8_lossy(&text).contains("--body-read-timeout"));
        let resp = app.oneshot(Request::post("/").body(Body::from("done")).expect("request")).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
