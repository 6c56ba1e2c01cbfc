//! Ingress controller (`weft ingress`): serves networking.k8s.io/v1 Ingress
//! over HTTP/1.1, HTTP/2 and TLS, routing by host and path straight to the
//! ready endpoints of the backend Services.
//!
//! - [`routes`]: the routing table, a pure function of the cluster model
//!   (class selection, host and path matching, backends, certificates).
//! - [`tls`]: certificates from `kubernetes.io/tls` Secrets and SNI.
//! - [`proxy`]: one request: routing, forwarding headers, retries,
//!   timeouts, upgrades (the HTTP/2 path, through hyper).
//! - [`h1`]: the HTTP/1 path, the proxy's own: request and response heads
//!   parsed in place, bodies relayed, upstream connections pooled as plain
//!   streams.
//! - [`upstream`]: the keep-alive connection pool and balancing state.
//! - [`server`]: listeners, admission and connection limits, graceful
//!   shutdown.
//! - [`steer`]: which worker's listener the kernel gives new connections.
//! - [`source`]: rebuilds the table on cluster changes and writes Ingress
//!   status.
//! - [`ops`]: `/healthz`, `/ready`, `/metrics`.
//!
//! This crate changes no kernel state: it only opens its sockets.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use weft_cluster::{Cluster, Kind, KubernetesSource, Store};

pub mod conn_io;
pub mod h1;
pub mod ops;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod source;
pub mod steer;
pub mod tls;
pub mod upstream;

use ops::{MetricHandles, Metrics};
use proxy::{Balance, Proxy, ProxySettings};
use routes::{ClassSettings, RouteTable};
use server::ServerSettings;
use source::{Follower, FollowerParts, StatusWriter};
use steer::{AcceptPolicy, Steering, WorkerClock};
use upstream::{Pool, PoolSettings};

/// Parses durations written as `500ms`, `5s`, `2m` (or plain seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 5s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// A count that must be 1 or more (0 would refuse everything, or mean
/// nothing clear).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `weft ingress`: serve the cluster's Ingresses from the lab's embedded
/// store, or from the Kubernetes API when no store is given.
#[derive(Clone, Debug, clap::Args)]
pub struct IngressArgs {
    /// Plain HTTP address (HTTP/1.1 and h2c).
    #[arg(long, default_value = "0.0.0.0:80")]
    pub http_listen: SocketAddr,
    /// HTTPS address (TLS, ALPN h2 and http/1.1).
    #[arg(long, default_value = "0.0.0.0:443")]
    pub https_listen: SocketAddr,
    /// HTTP address of /healthz, /ready and /metrics.
    #[arg(long, default_value = "127.0.0.1:10254")]
    pub ops_listen: SocketAddr,
    /// Directory of the embedded store to read the cluster from (it must
    /// exist: `weft lab up` or `weft lab apply --store` makes it); without
    /// it, the Kubernetes API (in-cluster config or kubeconfig).
    #[arg(long, env = "WEFT_STORE")]
    pub store: Option<PathBuf>,
    /// Ingresses of this class name are served (also without an
    /// IngressClass object).
    #[arg(long, default_value = "weft")]
    pub ingress_class: String,
    /// IngressClasses with this `spec.controller` are served; one of them
    /// marked default makes class-less Ingresses ours.
    #[arg(long, default_value = routes::CONTROLLER_NAME)]
    pub controller_name: String,
    /// Address (IP or host name) written into served Ingresses'
    /// `status.loadBalancer.ingress` (repeatable; none: status untouched).
    #[arg(long = "publish-address", value_name = "ADDRESS")]
    pub publish_address: Vec<String>,
    /// Endpoint choice per request.
    #[arg(long, value_enum, default_value = "round-robin")]
    pub balance: Balance,
    /// Upstream connect timeout (an endpoint that does not connect in time
    /// is skipped for the next).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Time for an upstream to send response headers (then 504); on
    /// HTTP/1 also the longest a body read or write may make no progress.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub response_timeout: Duration,
    /// Time for a client to send request headers, and to start the next
    /// request on a keep-alive connection; also the TLS handshake timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Idle upstream connections older than this are not reused.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,
    /// Largest request head in bytes; more is answered 431 (HTTP/1) or
    /// refused by the header list limit (HTTP/2).
    #[arg(long, default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// Most request headers; more is answered 431.
    #[arg(long, value_parser = at_least_one, default_value_t = 100)]
    pub max_headers: usize,
    /// Open client connections at most.
    #[arg(long, value_parser = at_least_one, default_value_t = 10_000)]
    pub max_connections: usize,
    /// New connections per second accepted from one client address (0: no
    /// limit); bursts of twice the rate pass.
    #[arg(long, default_value_t = 0)]
    pub connection_rate: u32,
    /// Endpoints tried per request before answering 502/504.
    #[arg(long, value_parser = at_least_one, default_value_t = 3)]
    pub max_attempts: usize,
    /// Port in the Location of HTTP→HTTPS redirects (443 leaves it out).
    #[arg(long, default_value_t = 443)]
    pub https_redirect_port: u16,
    /// Worker threads, each a single-threaded event loop with its own
    /// listeners (`SO_REUSEPORT`) and upstream pool; default: one per CPU.
    #[arg(long, value_parser = at_least_one)]
    pub workers: Option<usize>,
    /// Which worker takes a new connection: `pack` gives it to the first
    /// worker that was idle more than half of the last 10 ms (a light load
    /// stays on few workers, as nginx's), spreading by hash only when all
    /// are busier; `hash` always spreads by a hash of its addresses.
    #[arg(long, value_enum, default_value_t = AcceptPolicy::Pack)]
    pub accept_policy: AcceptPolicy,
    /// How long SIGTERM waits for in-flight requests before exiting.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngressError {
    #[error("cannot open the cluster store")]
    Store(#[from] weft_cluster::store::StoreError),
    #[error("cannot connect to the Kubernetes API")]
    Kubernetes(#[from] kube::Error),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up TLS")]
    Tls(#[from] rustls::Error),
    /// Two listeners given one address: with `SO_REUSEPORT` both would
    /// bind it and share its connections.
    #[error("--{first} and --{second} overlap at {addr}: each needs its own address")]
    SameAddress {
        first: &'static str,
        second: &'static str,
        addr: SocketAddr,
    },
    #[error("cannot start the runtime or a thread")]
    Runtime(#[source] std::io::Error),
}

/// How long shutdown waits for the API to take the controller's addresses
/// out of the Ingresses' status.
const STATUS_WITHDRAW_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `weft ingress` until SIGINT or SIGTERM, then drains.
pub fn run(args: &IngressArgs) -> Result<(), IngressError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(IngressError::Runtime)?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(IngressError::Runtime)?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        serve_until(args, stop).await
    })
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, IngressError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| IngressError::Bind { addr, source })
}

fn local_addr(listener: &tokio::net::TcpListener, addr: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(addr)
}

/// The addresses a [`Controller`] actually bound.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub ops: SocketAddr,
}

/// A bound controller following a cluster, not yet serving.
#[derive(Debug)]
pub struct Controller {
    table: Arc<ArcSwap<RouteTable>>,
    metrics: Arc<Metrics>,
    /// One (HTTP, HTTPS) listener pair per worker, all on the same
    /// addresses with `SO_REUSEPORT`.
    workers: Vec<(std::net::TcpListener, std::net::TcpListener)>,
    accept_policy: AcceptPolicy,
    ops: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    pool: PoolSettings,
    proxy: ProxySettings,
    settings: ServerSettings,
    bound: Bound,
    follower: Follower,
}

impl Controller {
    /// Binds the listeners and starts following `cluster` (the routing
    /// table is built before this returns). Must run inside a tokio
    /// runtime.
    pub async fn bind(
        args: &IngressArgs,
        cluster: Cluster,
        status: StatusWriter,
    ) -> Result<Controller, IngressError> {
        let listeners = [
            ("http-listen", args.http_listen),
            ("https-listen", args.https_listen),
            ("ops-listen", args.ops_listen),
        ];
        for (i, (first, addr)) in listeners.iter().enumerate() {
            // Port 0 asks for any free port: never the same one twice. An
            // unspecified address (0.0.0.0, ::) overlaps every other.
            let overlaps = |other: &SocketAddr| {
                addr.port() != 0
                    && other.port() == addr.port()
                    && (other.ip() == addr.ip()
                        || other.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            };
            if let Some((second, _)) = listeners[i + 1..].iter().find(|(_, other)| overlaps(other))
            {
                return Err(IngressError::SameAddress {
                    first,
                    second,
                    addr: *addr,
                });
            }
        }
        let reuseport = |addr: SocketAddr| {
            server::reuseport_listener(addr).map_err(|source| IngressError::Bind { addr, source })
        };
        let first = (reuseport(args.http_listen)?, reuseport(args.https_listen)?);
        let ops = bind(args.ops_listen).await?;
        let bound = Bound {
            http: first.0.local_addr().unwrap_or(args.http_listen),
            https: first.1.local_addr().unwrap_or(args.https_listen),
            ops: local_addr(&ops, args.ops_listen),
        };
        let count = args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let mut workers = vec![first];
        for _ in 1..count {
            workers.push((reuseport(bound.http)?, reuseport(bound.https)?));
        }
        let table = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
        let metrics = Arc::new(Metrics::new());
        let status = if args.publish_address.is_empty() {
            StatusWriter::Off
        } else {
            status
        };
        let follower = Follower::start(
            cluster,
            FollowerParts {
                classes: ClassSettings {
                    class: args.ingress_class.clone(),
                    controller: args.controller_name.clone(),
                },
                table: table.clone(),
                metrics: metrics.clone(),
                status,
                publish: args.publish_address.clone(),
            },
        )
        .map_err(IngressError::Runtime)?;
        let tls = tls::server_config(table.clone())?;
        Ok(Controller {
            table,
            metrics,
            workers,
            accept_policy: args.accept_policy,
            ops,
            tls,
            pool: PoolSettings {
                connect_timeout: args.connect_timeout,
                max_idle_per_endpoint: 64,
                idle_timeout: args.upstream_idle_timeout,
            },
            proxy: ProxySettings {
                balance: args.balance,
                response_timeout: args.response_timeout,
                max_attempts: args.max_attempts,
                https_redirect_port: args.https_redirect_port,
            },
            settings: ServerSettings {
                header_timeout: args.header_timeout,
                max_header_bytes: args.max_header_bytes,
                max_headers: args.max_headers,
                max_connections: args.max_connections,
                connection_rate: args.connection_rate,
                drain_timeout: args.drain_timeout,
            },
            bound,
            follower,
        })
    }

    /// The addresses bound.
    pub fn bound(&self) -> Bound {
        self.bound
    }

    /// The metrics, shared with the ops endpoint.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The current routing table.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Serves until `stop` completes, then stops accepting and drains: one
    /// worker thread per listener pair, each a single-threaded runtime
    /// with its own upstream pool; the ops endpoint on the caller's
    /// runtime.
    pub async fn serve(self, stop: impl Future<Output = ()>) -> Result<(), IngressError> {
        let ops_task = tokio::spawn(ops::serve(self.ops, self.metrics.clone()));
        let admission = Arc::new(server::Admission::new(&self.settings));
        let (stop_all, stopped) = tokio::sync::watch::channel(false);
        let origin = std::time::Instant::now();
        let clocks: Vec<Arc<WorkerClock>> = self
            .workers
            .iter()
            .map(|_| Arc::new(WorkerClock::new(origin)))
            .collect();
        let mut steering = start_steering(self.accept_policy, &self.workers, &clocks);
        let mut finished = Vec::new();
        for ((index, (http, https)), clock) in self.workers.into_iter().enumerate().zip(clocks) {
            let proxy = Arc::new(Proxy {
                table: self.table.clone(),
                pool: Pool::new(self.pool.clone()),
                metrics: self.metrics.clone(),
                handles: MetricHandles::for_worker(&self.metrics, index),
                settings: self.proxy.clone(),
            });
            let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
            let settings = self.settings.clone();
            let admission = admission.clone();
            let mut stopped = stopped.clone();
            let (done, finish) = tokio::sync::oneshot::channel::<()>();
            // Made before the thread: a worker whose thread never starts
            // counts as ended too.
            let ended = clock.until_ended();
            let worker = move || {
                let _ended = ended;
                let parks = clock.clone();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .on_thread_park(move || parks.parks())
                    .on_thread_unpark(move || clock.woke())
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::error!(%error, "cannot start an ingress worker runtime");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listeners = tokio::net::TcpListener::from_std(http)
                        .and_then(|http| Ok((http, tokio::net::TcpListener::from_std(https)?)));
                    let (http, https) = match listeners {
                        Ok(listeners) => listeners,
                        Err(error) => {
                            tracing::error!(%error, "ingress worker cannot use its listeners");
                            return;
                        }
                    };
                    let stop = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    server::serve(
                        proxy,
                        Some(http),
                        Some((https, acceptor)),
                        settings,
                        admission,
                        stop,
                    )
                    .await;
                });
                let _ = done.send(());
            };
            std::thread::Builder::new()
                .name(format!("weft-ingress-{index}"))
                .spawn(worker)
                .map_err(IngressError::Runtime)?;
            finished.push(finish);
        }
        stop.await;
        tracing::info!(
            workers = finished.len(),
            "stopped accepting; draining open connections"
        );
        // Its listener descriptors go with it, before the workers close
        // theirs.
        steering.shutdown().await;
        let _ = stop_all.send(true);
        // Load balancers and clients stop being pointed here before the
        // drain, which may take up to --drain-timeout.
        self.follower.withdraw(STATUS_WITHDRAW_TIMEOUT).await;
        for finish in finished {
            let _ = finish.await;
        }
        ops_task.abort();
        Ok(())
    }
}

/// Starts steering new connections to the workers (`--accept-policy pack`
/// with more than one worker; otherwise the set stays empty and the kernel
/// hashes). Dropping the set ends the steering, also on an early return.
fn start_steering(
    policy: AcceptPolicy,
    workers: &[(std::net::TcpListener, std::net::TcpListener)],
    clocks: &[Arc<WorkerClock>],
) -> tokio::task::JoinSet<()> {
    let mut steering = tokio::task::JoinSet::new();
    let [(http, https), _, ..] = workers else {
        return steering;
    };
    if policy != AcceptPolicy::Pack {
        return steering;
    }
    let started = http
        .try_clone()
        .and_then(|http| Ok(vec![http, https.try_clone()?]))
        .and_then(|groups| Steering::start(clocks.to_vec(), groups));
    match started {
        Ok(started) => {
            steering.spawn(started.run());
        }
        Err(error) => {
            tracing::warn!(%error, "cannot steer new connections; the kernel spreads them by hash");
        }
    }
    steering
}

/// Runs `weft ingress` inside a tokio runtime until `stop` completes:
/// follows the cluster source, binds, serves, then drains.
pub async fn serve_until(
    args: &IngressArgs,
    stop: impl Future<Output = ()>,
) -> Result<(), IngressError> {
    let cluster = Cluster::new();
    let (_watcher, status) = match &args.store {
        Some(dir) => {
            let store = Store::open_existing(dir)?;
            let watcher = store.watch(&cluster, weft_cluster::store::WATCH_INTERVAL)?;
            (Some(watcher), StatusWriter::Store(store))
        }
        None => {
            let client = kube::Client::try_default().await?;
            let source = KubernetesSource::new(client.clone()).kinds(&[
                Kind::Service,
                Kind::EndpointSlice,
                Kind::Ingress,
                Kind::IngressClass,
                Kind::Secret,
            ]);
            tokio::spawn(source.run(cluster.clone()));
            let writer = StatusWriter::Kubernetes {
                client,
                runtime: tokio::runtime::Handle::current(),
            };
            (None, writer)
        }
    };
    let controller = Controller::bind(args, cluster, status).await?;
    let bound = controller.bound();
    tracing::info!(
        http = %bound.http,
        https = %bound.https,
        ops = %bound.ops,
        class = %args.ingress_class,
        "serving Ingresses"
    );
    controller.serve(stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: IngressArgs,
    }

    #[test]
    fn counts_of_zero_are_refused() {
        use clap::Parser;
        for flag in [
            "--workers",
            "--max-connections",
            "--max-headers",
            "--max-attempts",
        ] {
            assert!(
                Cli::try_parse_from(["ingress", flag, "0"]).is_err(),
                "{flag} 0"
            );
            assert!(
                Cli::try_parse_from(["ingress", flag, "2"]).is_ok(),
                "{flag} 2"
            );
        }
    }

    #[test]
    fn two_listeners_on_one_address_are_refused_before_binding() {
        use clap::Parser;
        let args = Cli::parse_from([
            "ingress",
            "--http-listen",
            "127.0.0.1:7080",
            "--https-listen",
            "127.0.0.1:7080",
        ])
        .args;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let result = runtime.block_on(Controller::bind(&args, Cluster::new(), StatusWriter::Off));
        let Err(err) = result else {
            panic!("bound both listeners to one address");
        };
        assert_eq!(
            err.to_string(),
            "--http-listen and --https-listen overlap at 127.0.0.1:7080: each needs its own address"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
