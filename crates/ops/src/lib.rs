//! The operations endpoint of a weft daemon (`weft dns`, `weft ingress`):
//! an HTTP/1 and h2 server on its own listener that answers each request
//! from its path alone, with a plain page built by the daemon (health,
//! readiness, Prometheus metrics).

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Content type of the Prometheus text exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A response with `body` and `content_type`.
pub fn page(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The usual pages: `/healthz` (always ok), `/ready` (503 with
/// `not_ready` until `ready`), `/metrics` (`metrics()`), else 404.
pub fn standard_page(
    path: &str,
    ready: bool,
    not_ready: &str,
    metrics: impl FnOnce() -> String,
) -> Response<Full<Bytes>> {
    match path {
        "/healthz" => page(StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        "/ready" if ready => page(StatusCode::OK, "ready\n".to_owned(), "text/plain"),
        "/ready" => page(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{not_ready}\n"),
            "text/plain",
        ),
        "/metrics" => page(StatusCode::OK, metrics(), OPENMETRICS),
        _ => page(
            StatusCode::NOT_FOUND,
            "not found\n".to_owned(),
            "text/plain",
        ),
    }
}

/// Serves `respond(path)` on `listener` until the task is dropped.
/// What a daemon reports on its operations endpoint.
pub trait Health: Send + Sync + 'static {
    /// Whether `/ready` answers 200.
    fn is_ready(&self) -> bool;
    /// The Prometheus text of `/metrics`.
    fn render(&self) -> String;
}

/// Serves [`standard_page`] from `health` on `listener` until the task is
/// dropped; `/ready` answers `not_ready` until `health` is ready.
pub async fn serve_standard<H: Health>(
    listener: TcpListener,
    health: Arc<H>,
    not_ready: &'static str,
) {
    serve(listener, move |path| {
        standard_page(path, health.is_ready(), not_ready, || health.render())
    })
    .await;
}

pub async fn serve<F>(listener: TcpListener, respond: F)
where
    F: Fn(&str) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let respond = Arc::new(respond);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off, do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = respond(req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
