//! Cluster DNS (`weft dns`): the Kubernetes DNS-Based Service Discovery
//! records (schema 1.1.0) served over UDP and TCP, everything else answered
//! from a hosts file or forwarded upstream through a cache.
//!
//! - [`records`]: the answer index, a pure function of Services,
//!   EndpointSlices and Pods, and the authoritative answers it gives.
//! - [`hosts`]: the hosts file, answered before forwarding.
//! - [`forward`]: upstreams, failover, loop refusal and the cache.
//! - [`server`]: wire format, UDP/TCP serving, limits, truncation.
//! - [`source`]: rebuilds the index off the query path on cluster changes.
//! - [`ops`]: `/healthz`, `/ready`, `/metrics`.
//! - [`wire`]: reading common queries and writing records without hickory.
//! - [`config`]: the TOML configuration and its defaults.
//!
//! This crate changes no kernel state: it only opens its sockets.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use weft_cluster::{Cluster, KubernetesSource};

pub mod config;
pub mod forward;
pub mod hosts;
pub mod ops;
pub mod records;
pub mod server;
pub mod source;
pub mod wire;

pub use config::Config;
use forward::Forwarder;
use forward::cache::Cache;
use hosts::Hosts;
use ops::Metrics;
use records::Index;
use server::{Bound, Handler};
use source::{Follower, StoreFollower};

/// `weft dns`: serve the cluster zone from the lab's embedded store, or
/// from the Kubernetes API when no store is given.
#[derive(Clone, Debug, clap::Args)]
pub struct DnsArgs {
    /// TOML configuration file; every key has a default (docs/dns.md).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// UDP and TCP address to serve DNS on (overrides `listen`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// HTTP address of /healthz, /ready and /metrics (overrides `ops_listen`).
    #[arg(long)]
    pub ops_listen: Option<SocketAddr>,
    /// Directory of the embedded store to read the cluster from (it must
    /// exist: `weft lab up` or `weft lab apply --store` makes it); without
    /// it, the Kubernetes API (in-cluster config or kubeconfig).
    #[arg(long, env = "WEFT_STORE")]
    pub store: Option<PathBuf>,
}

/// Why the DNS server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    #[error("invalid configuration")]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Loop(#[from] forward::LoopError),
    #[error("cannot open the cluster store")]
    Store(#[from] weft_cluster::store::StoreError),
    #[error("cannot read the cluster store")]
    Source(#[from] source::SourceError),
    #[error("cannot connect to the Kubernetes API")]
    Kubernetes(#[from] kube::Error),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the runtime or a thread")]
    Runtime(#[source] std::io::Error),
}

/// A bound, not yet serving, DNS server.
#[derive(Debug)]
pub struct Server {
    handler: Arc<Handler>,
    sockets: (
        tokio::net::UdpSocket,
        tokio::net::TcpListener,
        tokio::net::TcpListener,
    ),
    bound: Bound,
}

impl Server {
    /// Reads the hosts file, checks the upstreams for loops and binds the
    /// sockets. Must run inside a tokio runtime.
    pub async fn bind(config: &Config) -> Result<Server, DnsError> {
        let (udp, tcp, ops, bound) = server::bind(config.listen, config.ops_listen)
            .await
            .map_err(|(addr, source)| DnsError::Bind { addr, source })?;
        let hosts = match &config.hosts_file {
            None => None,
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| config::ConfigError::Read {
                        path: path.clone(),
                        source,
                    })?;
                Some(Hosts::parse(&text, config.hosts_ttl))
            }
        };
        let upstreams = config.upstream_addrs()?;
        let forwarder = Forwarder::new(
            &upstreams,
            &[config.listen, bound.dns],
            config.policy,
            config.upstream_timeout(),
            Cache::new(config.cache.clone()),
        )?
        .with_health_checks(config.health_check_interval());
        let handler = Arc::new(Handler {
            index: ArcSwap::from_pointee(Index::empty(&config.zone_settings())),
            hosts,
            forwarder: Some(forwarder),
            metrics: Arc::new(Metrics::new()),
            limits: config.limits.clone(),
        });
        Ok(Server {
            handler,
            sockets: (udp, tcp, ops),
            bound,
        })
    }

    /// The DNS (UDP and TCP) and ops addresses actually bound.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Shared state: the swapped index, metrics.
    pub fn handler(&self) -> Arc<Handler> {
        self.handler.clone()
    }

    /// Serves until the future is dropped.
    pub async fn serve(self) {
        let (udp, tcp, ops) = self.sockets;
        server::serve(udp, tcp, ops, self.handler).await;
    }
}

/// Runs `weft dns` until SIGINT or SIGTERM.
pub fn run(args: &DnsArgs) -> Result<(), DnsError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DnsError::Runtime)?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(DnsError::Runtime)?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        serve_until(args, stop).await
    })
}

/// Runs `weft dns` inside a tokio runtime until `stop` completes: reads the
/// configuration, binds, follows the cluster source and serves.
pub async fn serve_until(args: &DnsArgs, stop: impl Future<Output = ()>) -> Result<(), DnsError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(ops) = args.ops_listen {
        config.ops_listen = ops;
    }
    let server = Server::bind(&config).await?;
    let settings = config.zone_settings();
    // Keeps the zone current while it lives.
    let _source: Box<dyn std::any::Any> = match &args.store {
        Some(dir) => Box::new(StoreFollower::start(
            dir.clone(),
            settings,
            server.handler(),
            weft_cluster::store::WATCH_INTERVAL,
        )?),
        None => {
            let client = kube::Client::try_default().await?;
            let cluster = Cluster::new();
            let source = KubernetesSource::new(client).kinds(source::kinds(&settings));
            tokio::spawn(source.run(cluster.clone()));
            Box::new(
                Follower::start(cluster, settings, server.handler()).map_err(DnsError::Runtime)?,
            )
        }
    };
    tracing::info!(dns = %server.bound().dns, ops = %server.bound().ops, zone = %config.zone, "serving cluster DNS");
    tokio::select! {
        () = server.serve() => {}
        () = stop => {}
    }
    Ok(())
}
