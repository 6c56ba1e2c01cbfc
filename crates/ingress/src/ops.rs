//! Operations: the Prometheus metrics the controller records (requests by
//! Ingress and status, upstream response latency by backend, open
//! connections in all and by worker, rejections, TLS handshake failures,
//! routing table size) and the HTTP endpoint serving `/healthz`, `/ready`
//! (after the first cluster sync) and `/metrics` on its own port.
//!
//! [`MetricHandles`] keeps one worker's handles to the per-request series,
//! so that a request neither builds a label set nor takes a family's lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::routes::IngressName;

type Labels = Vec<(&'static str, String)>;

/// Every metric, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    upstream_latency: Family<Labels, Histogram>,
    connections: Gauge,
    worker_connections: Family<Labels, Gauge>,
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
        let worker_connections = Family::<Labels, Gauge>::default();
        let rejected = Family::<Labels, Counter>::default();
        // Every reason at 0 from the start, so rates and alerts see the
        // series before the first refusal.
        for reason in crate::server::REFUSAL_REASONS {
            drop(rejected.get_or_create(&vec![("reason", reason.to_owned())]));
        }
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
            "worker_connections",
            "Client connections open, by worker",
            worker_connections.clone(),
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
            worker_connections,
            rejected,
            tls_failures,
            hosts,
            certificates,
            ready: AtomicBool::new(false),
        }
    }

    pub fn request(&self, ingress: &str, status: u16) {
        self.request_counter(ingress, status).inc();
    }

    fn request_counter(&self, ingress: &str, status: u16) -> Counter {
        self.requests
            .get_or_create(&vec![
                ("ingress", ingress.to_owned()),
                ("status", status.to_string()),
            ])
            .clone()
    }

    pub fn upstream(&self, backend: &str, seconds: f64) {
        self.upstream_histogram(backend).observe(seconds);
    }

    fn upstream_histogram(&self, backend: &str) -> Histogram {
        self.upstream_latency
            .get_or_create(&vec![("backend", backend.to_owned())])
            .clone()
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

/// More cached series than this (Ingresses × statuses, or backends) and a
/// cache starts over.
const MAX_CACHED: usize = 10_000;

/// One worker's handles to the series of [`Metrics::request`] and
/// [`Metrics::upstream`]: the same counters and histograms (a handle shares
/// its series), looked up by borrowed keys; and to its open connections.
#[derive(Debug)]
pub struct MetricHandles {
    requests: Mutex<RequestHandles>,
    upstream: Mutex<HashMap<String, Histogram>>,
    /// This worker's series of the open connections by worker.
    connections: Gauge,
}

#[derive(Debug, Default)]
struct RequestHandles {
    /// By status, for requests no rule matched.
    unmatched: Vec<(u16, Counter)>,
    /// By Ingress, then status.
    by_ingress: HashMap<IngressName, Vec<(u16, Counter)>>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Maps of handles stay usable after a panic elsewhere.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn by_status(
    handles: &mut Vec<(u16, Counter)>,
    status: u16,
    make: impl FnOnce() -> Counter,
) -> &Counter {
    let at = match handles.iter().position(|(s, _)| *s == status) {
        Some(at) => at,
        None => {
            handles.push((status, make()));
            handles.len() - 1
        }
    };
    &handles[at].1
}

impl MetricHandles {
    /// Handles for worker number `worker`.
    pub fn for_worker(metrics: &Metrics, worker: usize) -> MetricHandles {
        MetricHandles {
            requests: Mutex::default(),
            upstream: Mutex::default(),
            connections: metrics
                .worker_connections
                .get_or_create(&vec![("worker", worker.to_string())])
                .clone(),
        }
    }

    /// Counts a client connection opened on this worker.
    pub fn connection_opened(&self, metrics: &Metrics) {
        metrics.connections.inc();
        self.connections.inc();
    }

    /// Counts a client connection of this worker closed.
    pub fn connection_closed(&self, metrics: &Metrics) {
        metrics.connections.dec();
        self.connections.dec();
    }

    /// Counts a request answered with `status` for `ingress` (`None`: no
    /// rule matched), as [`Metrics::request`] does.
    pub fn request(&self, metrics: &Metrics, ingress: Option<&IngressName>, status: u16) {
        let mut handles = locked(&self.requests);
        let RequestHandles {
            unmatched,
            by_ingress,
        } = &mut *handles;
        match ingress {
            None => {
                by_status(unmatched, status, || metrics.request_counter("", status)).inc();
            }
            Some(name) => {
                if !by_ingress.contains_key(name) {
                    if by_ingress.len() >= MAX_CACHED {
                        by_ingress.clear();
                    }
                    by_ingress.insert(name.clone(), Vec::new());
                }
                if let Some(statuses) = by_ingress.get_mut(name) {
                    by_status(statuses, status, || {
                        metrics.request_counter(&name.to_string(), status)
                    })
                    .inc();
                }
            }
        }
    }

    /// Records an upstream response time for `backend`, as
    /// [`Metrics::upstream`] does.
    pub fn upstream(&self, metrics: &Metrics, backend: &str, seconds: f64) {
        let mut handles = locked(&self.upstream);
        if let Some(histogram) = handles.get(backend) {
            histogram.observe(seconds);
            return;
        }
        if handles.len() >= MAX_CACHED {
            handles.clear();
        }
        let histogram = metrics.upstream_histogram(backend);
        histogram.observe(seconds);
        handles.insert(backend.to_owned(), histogram);
    }
}

/// Serves `/healthz`, `/ready` and `/metrics` on `listener` until the task
/// is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    weft_ops::serve_standard(listener, metrics, "waiting for the first cluster sync").await;
}

impl weft_ops::Health for Metrics {
    fn is_ready(&self) -> bool {
        Metrics::is_ready(self)
    }

    fn render(&self) -> String {
        Metrics::render(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_handles_count_into_the_shared_series() {
        let metrics = Metrics::new();
        let one = MetricHandles::for_worker(&metrics, 0);
        let two = MetricHandles::for_worker(&metrics, 1);
        let shop = IngressName {
            namespace: "default".to_owned(),
            name: "shop".to_owned(),
        };
        one.request(&metrics, Some(&shop), 200);
        one.request(&metrics, Some(&shop), 200);
        two.request(&metrics, Some(&shop), 200);
        metrics.request("default/shop", 200);
        one.request(&metrics, Some(&shop), 502);
        one.request(&metrics, None, 404);
        one.upstream(&metrics, "default/web:80", 0.001);
        two.upstream(&metrics, "default/web:80", 0.002);
        let page = metrics.render();
        assert!(
            page.contains(r#"weft_ingress_requests_total{ingress="default/shop",status="200"} 4"#),
            "{page}"
        );
        assert!(
            page.contains(r#"weft_ingress_requests_total{ingress="default/shop",status="502"} 1"#)
        );
        assert!(page.contains(r#"weft_ingress_requests_total{ingress="",status="404"} 1"#));
        assert!(page.contains(
            r#"weft_ingress_upstream_response_seconds_count{backend="default/web:80"} 2"#
        ));
    }

    #[test]
    fn connections_count_in_all_and_by_worker() {
        let metrics = Metrics::new();
        let one = MetricHandles::for_worker(&metrics, 0);
        let two = MetricHandles::for_worker(&metrics, 1);
        one.connection_opened(&metrics);
        one.connection_opened(&metrics);
        two.connection_opened(&metrics);
        one.connection_closed(&metrics);
        let page = metrics.render();
        for series in [
            "weft_ingress_connections 2",
            r#"weft_ingress_worker_connections{worker="0"} 1"#,
            r#"weft_ingress_worker_connections{worker="1"} 1"#,
        ] {
            assert!(page.lines().any(|line| line == series), "{series}: {page}");
        }
    }
}
