//! Operations: the Prometheus metrics the controller records (requests by
//! Ingress and status, upstream response latency by backend, connections,
//! rejections, TLS handshake failures, routing table size) and the HTTP
//! endpoint serving `/healthz`, `/ready` (after the first cluster sync) and
//! `/metrics` on its own port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

type Labels = Vec<(&'static str, String)>;

/// Every metric, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    upstream_latency: Family<Labels, Histogram>,
    connections: Gauge,
    rejected: Family<Labels, Counter>,
    tls_failures: Counter,
    hosts: Gauge,
    certificates: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("weft_ingress");
        let requests = Family::<Labels, Counter>::default();
        let upstream_latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
        });
        let connections = Gauge::default();
        let rejected = Family::<Labels, Counter>::default();
        let tls_failures = Counter::default();
        let hosts = Gauge::default();
        let certificates = Gauge::default();
        registry.register(
            "requests",
            "Requests answered, by Ingress (empty when none matched) and status",
            requests.clone(),
        );
        registry.register(
            "upstream_response_seconds",
            "Time from sending a request upstream to its response headers, by backend",
            upstream_latency.clone(),
        );
        registry.register(
            "connections",
            "Client connections open",
            connections.clone(),
        );
        registry.register(
            "connections_rejected",
            "Client connections closed at accept, by reason",
            rejected.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls_failures.clone(),
        );
        registry.register(
            "hosts",
            "Hosts with routing rules in the current table",
            hosts.clone(),
        );
        registry.register(
            "certificates",
            "Server names with a certificate in the current table",
            certificates.clone(),
        );
        Metrics {
            registry,
            requests,
            upstream_latency,
            connections,
            rejected,
            tls_failures,
            hosts,
            certificates,
            ready: AtomicBool::new(false),
        }
    }

    pub fn request(&self, ingress: &str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("ingress", ingress.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    pub fn upstream(&self, backend: &str, seconds: f64) {
        self.upstream_latency
            .get_or_create(&vec![("backend", backend.to_owned())])
            .observe(seconds);
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejected
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    pub fn tls_failure(&self) {
        self.tls_failures.inc();
    }

    pub fn table(&self, hosts: usize, certificates: usize) {
        self.hosts.set(i64::try_from(hosts).unwrap_or(i64::MAX));
        self.certificates
            .set(i64::try_from(certificates).unwrap_or(i64::MAX));
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

/// Serves `/healthz`, `/ready` and `/metrics` on `listener` until the task
/// is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    weft_ops::serve(listener, move |path| {
        weft_ops::standard_page(
            path,
            metrics.is_ready(),
            "waiting for the first cluster sync",
            || metrics.render(),
        )
    })
    .await;
}
