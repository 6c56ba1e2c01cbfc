//! What the agent tells the outside: `/healthz`, Prometheus `/metrics` and
//! `/synced` (the embedded store generation the node's kernel state fully
//! reflects, which `weft lab up` waits for) on a local address, and one
//! HTTP server per `healthCheckNodePort`
//! (Services with `externalTrafficPolicy: Local`) answering 200 with the
//! number of local endpoints, or 503 when there is none, as kube-proxy does
//! for cloud load balancers.
//!
//! Runs on its own thread with a current-thread tokio runtime; the
//! reconcile loop publishes through [`Status`] and never waits on HTTP.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::reconcile::{HealthCheck, PassReport};

/// The agent's metrics.
#[derive(Debug)]
struct Metrics {
    registry: Registry,
    sync_duration: Histogram,
    syncs: Counter,
    sync_errors: Counter,
    rules: Gauge,
    elements: Gauge,
    last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    podnet_changes: Counter,
    source_up: Gauge,
    applied_generation: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("weft_agent");
        let sync_duration = Histogram::new([0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]);
        let syncs = Counter::default();
        let sync_errors = Counter::default();
        let rules = Gauge::default();
        let elements = Gauge::default();
        let last_sync = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let podnet_changes = Counter::default();
        let source_up = Gauge::default();
        let applied_generation = Gauge::default();
        registry.register(
            "applied_store_generation",
            "The embedded store generation the last error-free pass applied in full (0 before one, or with the Kubernetes source)",
            applied_generation.clone(),
        );
        registry.register(
            "source_up",
            "1 while the cluster source delivers, 0 during an outage (the last known state is served)",
            source_up.clone(),
        );
        registry.register(
            "proxy_sync_duration_seconds",
            "Time to build and commit one proxy table sync",
            sync_duration.clone(),
        );
        registry.register("proxy_syncs", "Proxy table syncs committed", syncs.clone());
        registry.register(
            "sync_errors",
            "Reconcile steps that failed",
            sync_errors.clone(),
        );
        registry.register(
            "proxy_rules",
            "nftables rules installed by the proxy",
            rules.clone(),
        );
        registry.register(
            "proxy_elements",
            "nftables set and map elements installed by the proxy",
            elements.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last completed reconcile pass",
            last_sync.clone(),
        );
        registry.register(
            "podnet_changes",
            "Kernel changes made by the pod network",
            podnet_changes.clone(),
        );
        Metrics {
            registry,
            sync_duration,
            syncs,
            sync_errors,
            rules,
            elements,
            last_sync,
            podnet_changes,
            source_up,
            applied_generation,
        }
    }
}

/// Shared between the reconcile loop and the HTTP servers.
#[derive(Debug)]
struct Shared {
    metrics: Metrics,
    /// Ready: the source delivered a full state and a pass completed.
    ready: bool,
    /// Last pass's errors and the source's own health, for `/healthz`.
    problems: Vec<String>,
    /// The store generation the last error-free pass applied, for
    /// `/synced`; `None` before one, or when the source is not a store.
    synced: Option<u64>,
}

/// The reconcile loop's handle on the status servers.
#[derive(Debug, Clone)]
pub struct Status {
    shared: Arc<Mutex<Shared>>,
    health_checks: watch::Sender<BTreeMap<u16, HealthCheck>>,
}

impl Status {
    /// Records one pass. `store_generation` is the embedded store
    /// generation of the model the pass computed from (`None` with the
    /// Kubernetes source); it becomes `/synced` if the pass had no error.
    pub fn record(
        &self,
        report: &PassReport,
        source_problems: Vec<String>,
        store_generation: Option<u64>,
    ) {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, sync) in &report.proxy {
            shared
                .metrics
                .sync_duration
                .observe(sync.duration.as_secs_f64());
            if sync.operations > 0 {
                shared.metrics.syncs.inc();
            }
        }
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        shared.metrics.rules.set(count(report.proxy_rules));
        shared.metrics.elements.set(count(report.proxy_elements));
        shared
            .metrics
            .podnet_changes
            .inc_by(u64::try_from(report.podnet_changes.len()).unwrap_or(u64::MAX));
        shared
            .metrics
            .sync_errors
            .inc_by(u64::try_from(report.errors.len()).unwrap_or(u64::MAX));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs_f64())
            .unwrap_or_default();
        shared.metrics.last_sync.set(now);
        shared
            .metrics
            .source_up
            .set(i64::from(source_problems.is_empty()));
        shared.ready = true;
        if let Some(generation) = store_generation.filter(|_| report.errors.is_empty()) {
            shared.synced = Some(generation);
            shared
                .metrics
                .applied_generation
                .set(i64::try_from(generation).unwrap_or(i64::MAX));
        }
        shared.problems = report
            .errors
            .iter()
            .cloned()
            .chain(source_problems)
            .collect();
        drop(shared);
        self.health_checks.send_if_modified(|current| {
            if *current == report.health_checks {
                return false;
            }
            current.clone_from(&report.health_checks);
            true
        });
    }
}

/// Starts the servers: `/healthz` and `/metrics` on `address`, health-check
/// ports on every address of the node. Returns once `address` is bound.
pub fn start(address: SocketAddr) -> std::io::Result<Status> {
    let (health_checks, receiver) = watch::channel(BTreeMap::new());
    let shared = Arc::new(Mutex::new(Shared {
        metrics: Metrics::new(),
        ready: false,
        problems: Vec::new(),
        synced: None,
    }));
    let status = Status {
        shared: Arc::clone(&shared),
        health_checks,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(TcpListener::bind(address))?;
    std::thread::Builder::new()
        .name("weft-agent-status".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(serve_health_checks(receiver));
                serve_status(listener, shared).await;
            });
        })?;
    Ok(status)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

async fn serve_status(listener: TcpListener, shared: Arc<Mutex<Shared>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(status_answer(request.uri().path(), &shared)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn status_answer(path: &str, shared: &Mutex<Shared>) -> Response<Full<Bytes>> {
    let shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
    match path {
        "/healthz" => {
            if !shared.ready {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for the first full sync\n".into(),
                )
            } else if shared.problems.is_empty() {
                text(StatusCode::OK, "ok\n".into())
            } else {
                // Serving on the last good state: healthy, with the details.
                text(
                    StatusCode::OK,
                    format!("ok, degraded:\n{}\n", shared.problems.join("\n")),
                )
            }
        }
        "/metrics" => {
            let mut body = String::new();
            match encode(&mut body, &shared.metrics.registry) {
                Ok(()) => text(StatusCode::OK, body),
                Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
            }
        }
        "/synced" => match shared.synced {
            Some(generation) => text(StatusCode::OK, format!("{generation}\n")),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no embedded store generation applied yet\n".into(),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "try /healthz, /metrics or /synced\n".into(),
        ),
    }
}

/// Keeps one listener per wanted health-check port.
async fn serve_health_checks(mut wanted: watch::Receiver<BTreeMap<u16, HealthCheck>>) {
    let mut running: BTreeMap<u16, (JoinHandle<()>, watch::Sender<HealthCheck>)> = BTreeMap::new();
    loop {
        let current = wanted.borrow_and_update().clone();
        running.retain(|port, (task, _)| {
            let keep = current.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for (port, check) in current {
            match running.get(&port) {
                Some((_, sender)) => {
                    sender.send_if_modified(|old| {
                        let changed = *old != check;
                        *old = check.clone();
                        changed
                    });
                }
                None => {
                    let address = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
                    let listener = match TcpListener::bind(address).await {
                        Ok(listener) => listener,
                        Err(_) => {
                            match TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await {
                                Ok(listener) => listener,
                                Err(err) => {
                                    tracing::warn!("healthCheckNodePort {port}: {err}");
                                    continue;
                                }
                            }
                        }
                    };
                    let (sender, receiver) = watch::channel(check);
                    running.insert(
                        port,
                        (tokio::spawn(serve_health_check(listener, receiver)), sender),
                    );
                }
            }
        }
        if wanted.changed().await.is_err() {
            return;
        }
        // Let a burst of changes settle into one reconcile of listeners.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn serve_health_check(listener: TcpListener, check: watch::Receiver<HealthCheck>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let check = check.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request: Request<hyper::body::Incoming>| {
                let current = check.borrow().clone();
                async move { Ok::<_, Infallible>(health_answer(&current)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// kube-proxy's answer shape: 200 with local endpoints, 503 without.
fn health_answer(check: &HealthCheck) -> Response<Full<Bytes>> {
    let (namespace, name) = check
        .service
        .split_once('/')
        .unwrap_or(("", &check.service));
    let body = format!(
        "{{\"service\":{{\"namespace\":\"{namespace}\",\"name\":\"{name}\"}},\"localEndpoints\":{},\"serviceProxyHealthy\":true}}\n",
        check.local_endpoints
    );
    let status = if check.local_endpoints > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_check_answers_200_with_local_endpoints_and_503_without() {
        let mut check = HealthCheck {
            service: "default/web".into(),
            local_endpoints: 2,
        };
        let ok = health_answer(&check);
        assert_eq!(ok.status(), StatusCode::OK);
        check.local_endpoints = 0;
        assert_eq!(
            health_answer(&check).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn healthz_waits_for_the_first_sync_and_metrics_are_prometheus_text() {
        let shared = Mutex::new(Shared {
            metrics: Metrics::new(),
            ready: false,
            problems: Vec::new(),
            synced: None,
        });
        assert_eq!(
            status_answer("/healthz", &shared).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        shared.lock().unwrap().ready = true;
        assert_eq!(status_answer("/healthz", &shared).status(), StatusCode::OK);
        let metrics = status_answer("/metrics", &shared);
        assert_eq!(metrics.status(), StatusCode::OK);
    }

    fn body(response: Response<Full<Bytes>>) -> String {
        use http_body_util::BodyExt;
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn status_for_test() -> (Status, Arc<Mutex<Shared>>) {
        let shared = Arc::new(Mutex::new(Shared {
            metrics: Metrics::new(),
            ready: false,
            problems: Vec::new(),
            synced: None,
        }));
        let (health_checks, _receiver) = watch::channel(BTreeMap::new());
        let status = Status {
            shared: Arc::clone(&shared),
            health_checks,
        };
        (status, shared)
    }

    #[test]
    fn synced_reports_the_store_generation_of_the_last_error_free_pass() {
        let (status, shared) = status_for_test();
        assert_eq!(
            status_answer("/synced", &shared).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        status.record(&PassReport::default(), Vec::new(), Some(7));
        let answer = status_answer("/synced", &shared);
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(body(answer), "7\n");
        // A pass with an error does not claim its generation.
        let failed = PassReport {
            errors: vec!["nft: no".into()],
            ..PassReport::default()
        };
        status.record(&failed, Vec::new(), Some(9));
        assert_eq!(body(status_answer("/synced", &shared)), "7\n");
        let metrics = body(status_answer("/metrics", &shared));
        assert!(
            metrics.contains("weft_agent_applied_store_generation 7"),
            "{metrics}"
        );
        status.record(&PassReport::default(), Vec::new(), Some(9));
        assert_eq!(body(status_answer("/synced", &shared)), "9\n");
    }

    #[test]
    fn synced_stays_unavailable_without_a_store() {
        let (status, shared) = status_for_test();
        status.record(&PassReport::default(), Vec::new(), None);
        assert_eq!(
            status_answer("/synced", &shared).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
