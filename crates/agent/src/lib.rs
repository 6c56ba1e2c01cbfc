//! `weft agent`: the per-node agent. It keeps a cluster model current from
//! a source (the lab's embedded store, or the Kubernetes API), and on every
//! change — and every resync period, to repair drift — computes this node's
//! whole desired state and applies it: the pod network (bridge, cross-node
//! routes or VXLAN, CNI config, egress masquerade) and the Service proxy
//! (`ip weft`/`ip6 weft` tables). It serves `/healthz`, `/metrics` and
//! `/synced` (with the embedded store: the store generation the last
//! error-free pass applied) on a local address and the
//! `healthCheckNodePort`s of Local-policy Services.
//!
//! The same code runs in a lab node namespace and on a real node: the
//! agent acts on the namespace it runs in.

#![forbid(unsafe_code)]

pub mod nodes;
pub mod reconcile;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use weft_cluster::{Cluster, Store, store::WATCH_INTERVAL};
use weft_linux::NetNs;
use weft_podnet::conflist::ConflistOptions;

pub use reconcile::{PassReport, PodnetSettings, Reconciler};

/// Flags of `weft agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// This node's name; defaults to $WEFT_NODE_NAME, then the host name.
    #[arg(long, env = "WEFT_NODE_NAME")]
    pub node: Option<String>,
    /// Read the cluster from the lab's embedded store in DIR instead of the
    /// Kubernetes API; DIR must exist (`weft lab up` or `weft lab apply
    /// --store` makes it).
    #[arg(long, value_name = "DIR", conflicts_with = "kubeconfig")]
    pub store: Option<PathBuf>,
    /// Kubeconfig file; in-cluster config or $KUBECONFIG when not given.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Cross-node pod network: host-gw or vxlan.
    #[arg(long, default_value = "host-gw")]
    pub mode: weft_podnet::Mode,
    /// The cluster CIDR node pod subnets are carved from.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: IpNet,
    /// The node's uplink device (holds its InternalIP).
    #[arg(long, default_value = "eth0")]
    pub uplink: String,
    /// Where to write the node's CNI config.
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// Prefix of the plugin names in the CNI config ("" for bridge,
    /// host-local…; "weft-" for weft-bridge…).
    #[arg(long, default_value = "")]
    pub cni_plugin_prefix: String,
    /// host-local data dir written into the CNI config.
    #[arg(long, value_name = "DIR")]
    pub ipam_data_dir: Option<PathBuf>,
    /// Address of /healthz, /metrics and /synced.
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub metrics_address: SocketAddr,
    /// Leave the pod network alone (proxy only).
    #[arg(long)]
    pub no_pod_network: bool,
    /// Leave Services alone (pod network only).
    #[arg(long)]
    pub no_proxy: bool,
    /// Full reconcile at least this often, changes or not (seconds).
    #[arg(long, default_value = "30")]
    pub resync_seconds: u64,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The embedded store could not be read.
    #[error("reading the embedded store")]
    Store(#[from] weft_cluster::store::StoreError),
    /// The Kubernetes client could not be set up.
    #[error("connecting to the Kubernetes API: {0}")]
    Kubernetes(String),
    /// nftables could not be opened in this namespace.
    #[error("opening nftables")]
    Nft(#[from] weft_nft::Error),
    /// The status server could not start.
    #[error("starting /healthz and /metrics on {address}")]
    Status {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn node_name(args: &AgentArgs) -> String {
    args.node
        .clone()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Keeps the chosen source feeding `cluster`; the returned value must live
/// as long as the agent.
enum SourceHandle {
    Store(weft_cluster::store::StoreWatcher),
    Kubernetes(weft_cluster::Health),
}

impl SourceHandle {
    /// The store generation the model holds (read it under the model's
    /// read lock to get the one of the state being read); `None` for the
    /// Kubernetes source.
    fn store_generation(&self) -> Option<u64> {
        match self {
            SourceHandle::Store(watcher) => Some(watcher.generation()),
            SourceHandle::Kubernetes(_) => None,
        }
    }

    fn problems(&self) -> Vec<String> {
        match self {
            SourceHandle::Store(_) => Vec::new(),
            SourceHandle::Kubernetes(health) => {
                let report = health.report();
                let mut problems = Vec::new();
                if !report.failing.is_empty() {
                    problems.push(format!(
                        "Kubernetes API unreachable for {:?} (serving the last known state): {}",
                        report.failing,
                        report.last_error.unwrap_or_default()
                    ));
                }
                problems
            }
        }
    }
}

fn start_source(
    args: &AgentArgs,
    node: &str,
    cluster: &Cluster,
) -> Result<SourceHandle, AgentError> {
    if let Some(dir) = &args.store {
        let store = Store::open_existing(dir)?;
        return Ok(SourceHandle::Store(store.watch(cluster, WATCH_INTERVAL)?));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|err| AgentError::Kubernetes(err.to_string()))?;
    let kubeconfig = args.kubeconfig.clone();
    let client = runtime
        .block_on(async move {
            match kubeconfig {
                Some(path) => {
                    let kubeconfig = kube::config::Kubeconfig::read_from(&path)?;
                    let config = kube::Config::from_custom_kubeconfig(
                        kubeconfig,
                        &kube::config::KubeConfigOptions::default(),
                    )
                    .await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(kube::Client::try_from(
                        config,
                    )?)
                }
                None => Ok(kube::Client::try_default().await?),
            }
        })
        .map_err(|err| AgentError::Kubernetes(err.to_string()))?;
    let source = weft_cluster::KubernetesSource::new(client).pods_on_node(node);
    let health = source.health();
    let cluster = cluster.clone();
    std::thread::Builder::new()
        .name("weft-kubernetes-source".to_owned())
        .spawn(move || runtime.block_on(source.run(cluster)))
        .map_err(|err| AgentError::Kubernetes(err.to_string()))?;
    Ok(SourceHandle::Kubernetes(health))
}

/// Runs the agent until the process is stopped.
pub fn run(args: &AgentArgs) -> Result<(), AgentError> {
    let node = node_name(args);
    let cluster = Cluster::new();
    let mut changes = cluster.subscribe();
    let source = start_source(args, &node, &cluster)?;
    let status = status::start(args.metrics_address).map_err(|source| AgentError::Status {
        address: args.metrics_address,
        source,
    })?;

    let podnet = (!args.no_pod_network).then(|| PodnetSettings {
        config: weft_podnet::Config {
            cluster_cidr: args.cluster_cidr,
            mode: args.mode,
            uplink: args.uplink.clone(),
            ..weft_podnet::Config::default()
        },
        conflist_dir: args.cni_conf_dir.clone(),
        conflist: ConflistOptions {
            plugin_prefix: args.cni_plugin_prefix.clone(),
            ipam_data_dir: args.ipam_data_dir.clone(),
            ..ConflistOptions::default()
        },
    });
    let proxy = (!args.no_proxy).then(|| vec![args.cluster_cidr]);
    let mut reconciler = Reconciler::new(NetNs::current(), node.clone(), podnet, proxy)?;
    tracing::info!(
        node,
        "agent started; waiting for the first full sync of the cluster"
    );
    while !cluster.is_synced() {
        changes.wait_timeout(Duration::from_secs(1));
    }

    let resync = Duration::from_secs(args.resync_seconds.max(1));
    loop {
        let started = Instant::now();
        let (desired, generation) = {
            let index = cluster.read();
            (reconciler.compute(&index), source.store_generation())
        };
        let report = reconciler.apply(desired);
        log_pass(&report, started.elapsed());
        status.record(&report, source.problems(), generation);
        if !report.errors.is_empty() {
            // Rewrite the proxy tables from scratch next time.
            reconciler.force_full_resync();
        }
        changes.wait_timeout(resync);
    }
}

fn log_pass(report: &PassReport, elapsed: Duration) {
    for skipped in &report.skipped {
        tracing::warn!("{skipped}");
    }
    for error in &report.errors {
        tracing::error!("{error}");
    }
    for change in &report.podnet_changes {
        tracing::info!(change, "pod network");
    }
    for (family, sync) in &report.proxy {
        if sync.operations > 0 {
            tracing::info!(
                table = %format!("{family} weft"),
                full = sync.full,
                operations = sync.operations,
                // Milliseconds to the microsecond: `0.768`, not `0.76799999`.
                duration_ms = (sync.duration.as_secs_f64() * 1e6).round() / 1e3,
                conntrack_flushed = sync.conntrack_flushed,
                "proxy sync"
            );
        }
    }
    tracing::debug!(
        elapsed_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
        "reconcile pass"
    );
}
