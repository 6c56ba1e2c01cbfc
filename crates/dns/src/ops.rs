//! Operations: the Prometheus metrics the server records (queries by type
//! and rcode, latency, cache hits and misses, upstream errors) and the HTTP
//! endpoint serving `/healthz`, `/ready` (true after the first cluster sync)
//! and `/metrics` on its own port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

type Labels = Vec<(String, String)>;

/// Every metric, registered once; shared by the servers and the forwarder.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    queries: Family<Labels, Counter>,
    latency: Histogram,
    cache_hits: Counter,
    cache_misses: Counter,
    upstream_errors: Family<Labels, Counter>,
    /// Set once the cluster source delivered its first complete state.
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("weft_dns");
        let queries = Family::<Labels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.000_025, 2.0, 18));
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let upstream_errors = Family::<Labels, Counter>::default();
        registry.register(
            "queries",
            "Queries answered, by query type, transport and rcode",
            queries.clone(),
        );
        registry.register(
            "query_duration_seconds",
            "Time to answer a query",
            latency.clone(),
        );
        registry.register(
            "cache_hits",
            "Forwarded questions answered from the cache",
            cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Forwarded questions not in the cache",
            cache_misses.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream queries that failed, by upstream",
            upstream_errors.clone(),
        );
        Metrics {
            registry,
            queries,
            latency,
            cache_hits,
            cache_misses,
            upstream_errors,
            ready: AtomicBool::new(false),
        }
    }

    pub fn query(&self, qtype: &str, transport: &str, rcode: &str, took: Duration) {
        self.queries
            .get_or_create(&vec![
                ("type".to_owned(), qtype.to_owned()),
                ("transport".to_owned(), transport.to_owned()),
                ("rcode".to_owned(), rcode.to_owned()),
            ])
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub fn upstream_error(&self, upstream: SocketAddr) {
        self.upstream_errors
            .get_or_create(&vec![("upstream".to_owned(), upstream.to_string())])
            .inc();
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn respond(metrics: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let (status, body, content_type) = match path {
        "/healthz" => (StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        "/ready" if metrics.is_ready() => (StatusCode::OK, "ready\n".to_owned(), "text/plain"),
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first cluster sync\n".to_owned(),
            "text/plain",
        ),
        "/metrics" => (
            StatusCode::OK,
            metrics.render(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_owned(),
            "text/plain",
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

/// Serves the ops endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = respond(&metrics, req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
