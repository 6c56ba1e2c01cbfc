//! One reconcile pass of the node agent: read the whole cluster model,
//! compute the pod network plan and the proxy rulesets (pure), release the
//! model, then apply both to this node's namespace. Level-triggered: a pass
//! never looks at what changed, only at what should be; errors are
//! collected and the next pass retries.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ipnet::IpNet;
use weft_cluster::Index;
use weft_linux::{NetNs, Netlink};
use weft_nft::{Conntrack, Family, Nft};
use weft_podnet::conflist::ConflistOptions;
use weft_proxy::{ProxyConfig, Ruleset, SyncReport, Syncer};

use crate::nodes::node_net;

/// What the pod network half needs besides the cluster model.
#[derive(Debug, Clone)]
pub struct PodnetSettings {
    /// Cluster CIDR, mode, bridge and uplink names (the uplink MTU is read
    /// from the kernel on every pass).
    pub config: weft_podnet::Config,
    /// Where the node's CNI config goes.
    pub conflist_dir: PathBuf,
    /// Plugin names and IPAM data dir written into it.
    pub conflist: ConflistOptions,
}

/// A `healthCheckNodePort` to serve: which Service, how many local endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `namespace/name` of the Service.
    pub service: String,
    /// Ready endpoints on this node.
    pub local_endpoints: usize,
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct PassReport {
    /// Pod network changes (empty when nothing changed).
    pub podnet_changes: Vec<String>,
    /// Whether the CNI config files were rewritten.
    pub conflist_written: bool,
    /// Whether the egress masquerade table was (re)written.
    pub masquerade_written: bool,
    /// One report per synced table.
    pub proxy: Vec<(Family, SyncReport)>,
    /// Rules and elements now installed by the proxy (metrics).
    pub proxy_rules: usize,
    /// Map and set elements now installed by the proxy (metrics).
    pub proxy_elements: usize,
    /// Objects left out, with the reason.
    pub skipped: Vec<String>,
    /// Failures; the pass went on with the rest.
    pub errors: Vec<String>,
    /// Health-check ports wanted now.
    pub health_checks: BTreeMap<u16, HealthCheck>,
}

/// Everything one node should hold, computed from the cluster model.
#[derive(Debug)]
pub struct Desired {
    nodes: Vec<weft_podnet::NodeNet>,
    rulesets: Vec<(Family, Ruleset)>,
    /// Skipped objects and health checks found while computing.
    report: PassReport,
}

/// The proxy half's state: one syncer per family.
struct ProxyState {
    config: ProxyConfig,
    syncers: Vec<(Family, Syncer)>,
}

/// Reconciles one node.
pub struct Reconciler {
    ns: NetNs,
    node: String,
    podnet: Option<PodnetSettings>,
    proxy: Option<ProxyState>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("ns", &self.ns.name())
            .field("node", &self.node)
            .finish()
    }
}

impl Reconciler {
    /// A reconciler for node `node` acting on namespace `ns`. `podnet` and
    /// `proxy_cidrs` (the cluster CIDRs the proxy masquerades outside of)
    /// switch the two halves on.
    pub fn new(
        ns: NetNs,
        node: String,
        podnet: Option<PodnetSettings>,
        proxy_cidrs: Option<Vec<IpNet>>,
    ) -> Result<Reconciler, weft_nft::Error> {
        let proxy = match proxy_cidrs {
            Some(cluster_cidrs) => {
                let mut syncers = Vec::new();
                for family in [Family::Ip, Family::Ip6] {
                    let syncer = Syncer::new(Nft::open_in(&ns)?, Some(Conntrack::open_in(&ns)?));
                    syncers.push((family, syncer));
                }
                Some(ProxyState {
                    config: ProxyConfig {
                        node_name: node.clone(),
                        cluster_cidrs,
                    },
                    syncers,
                })
            }
            None => None,
        };
        Ok(Reconciler {
            ns,
            node,
            podnet,
            proxy,
        })
    }

    /// Forgets what the proxy applied: the next pass rewrites its tables.
    pub fn force_full_resync(&mut self) {
        if let Some(proxy) = &mut self.proxy {
            for (_, syncer) in &mut proxy.syncers {
                syncer.force_full_resync();
            }
        }
    }

    /// The pure half of a pass: everything this node should hold, computed
    /// from `index`. Drop the read guard before [`Reconciler::apply`].
    pub fn compute(&self, index: &Index) -> Desired {
        let mut report = PassReport::default();
        // Compute everything while holding the model …
        let nodes: Vec<weft_podnet::NodeNet> = index
            .nodes()
            .filter_map(|node| match node_net(node) {
                Ok(net) => Some(net),
                Err(reason) => {
                    report.skipped.push(reason);
                    None
                }
            })
            .collect();
        let rulesets: Vec<(Family, Ruleset)> = match &self.proxy {
            Some(proxy) => {
                let services: Vec<_> = index.services().cloned().collect();
                let slices: Vec<_> = index.endpoint_slices().cloned().collect();
                let (ports, skipped) = weft_proxy::service_ports(&services, &slices);
                report
                    .skipped
                    .extend(skipped.iter().map(ToString::to_string));
                for port in ports.iter().filter(|port| port.external_local) {
                    if let Some(health_port) = port.health_check_node_port {
                        let local = port.usable_endpoints(Some(&self.node)).len();
                        report.health_checks.insert(
                            health_port,
                            HealthCheck {
                                service: format!("{}/{}", port.name.namespace, port.name.name),
                                local_endpoints: local,
                            },
                        );
                    }
                }
                proxy
                    .syncers
                    .iter()
                    .map(|(family, _)| {
                        (*family, weft_proxy::compile(*family, &ports, &proxy.config))
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        Desired {
            nodes,
            rulesets,
            report,
        }
    }

    /// The I/O half of a pass: makes the kernel hold `desired`.
    pub fn apply(&mut self, desired: Desired) -> PassReport {
        let Desired {
            nodes,
            rulesets,
            mut report,
        } = desired;
        self.apply_podnet(&nodes, &mut report);
        self.apply_proxy(rulesets, &mut report);
        report
    }

    fn apply_podnet(&mut self, nodes: &[weft_podnet::NodeNet], report: &mut PassReport) {
        let Some(settings) = &self.podnet else {
            return;
        };
        let mut config = settings.config.clone();
        match Netlink::in_namespace(&self.ns)
            .and_then(|mut netlink| netlink.require_link(&config.uplink))
        {
            Ok(uplink) => config.uplink_mtu = uplink.mtu,
            Err(err) => {
                report
                    .errors
                    .push(format!("reading uplink {}: {err}", config.uplink));
                return;
            }
        }
        let plan = match weft_podnet::plan(&config, &self.node, nodes) {
            Ok(plan) => plan,
            Err(err) => {
                report.errors.push(format!("pod network: {err}"));
                return;
            }
        };
        report.skipped.extend(
            plan.skipped
                .iter()
                .map(|(node, why)| format!("peer {node}: {why}")),
        );
        match weft_podnet::apply(&self.ns, &plan) {
            Ok(changes) => report.podnet_changes = changes.0,
            Err(err) => report.errors.push(format!("{err}: {}", source_text(&err))),
        }
        match weft_podnet::conflist::write(&settings.conflist_dir, &plan, &settings.conflist) {
            Ok(written) => report.conflist_written = written,
            Err(err) => report.errors.push(format!(
                "writing the CNI config into {}: {err}",
                settings.conflist_dir.display()
            )),
        }
        match weft_podnet::masquerade::ensure(&self.ns, config.cluster_cidr) {
            Ok(written) => report.masquerade_written = written,
            Err(err) => report.errors.push(format!("egress masquerade: {err}")),
        }
    }

    fn apply_proxy(&mut self, rulesets: Vec<(Family, Ruleset)>, report: &mut PassReport) {
        let Some(proxy) = &mut self.proxy else {
            return;
        };
        for ((family, syncer), (_, ruleset)) in proxy.syncers.iter_mut().zip(rulesets) {
            report.proxy_rules += ruleset.rule_count();
            report.proxy_elements += ruleset.element_count();
            match syncer.sync(ruleset) {
                Ok(sync) => report.proxy.push((*family, sync)),
                Err(err) => report.errors.push(format!("{err}: {}", source_text(&err))),
            }
        }
    }
}

/// The whole cause chain of an error, for one log line.
fn source_text(err: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cause = err.source();
    while let Some(inner) = cause {
        parts.push(inner.to_string());
        cause = inner.source();
    }
    parts.join(": ")
}
