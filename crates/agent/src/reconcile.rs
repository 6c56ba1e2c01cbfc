//! One reconcile pass of the node agent: read the whole cluster model,
//! compute the pod network plan and the proxy's Service ports (pure),
//! release the model, then apply both to this node's namespace.
//! Level-triggered: a pass looks at what should be, not at events; errors
//! are collected and the next pass retries. The proxy half remembers each
//! Service's inputs by their resource versions (the Service's and its
//! EndpointSlices'), derives ports again only for Services whose versions
//! moved, and its syncers compile and commit only those.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use ipnet::IpNet;
use weft_cluster::Index;
use weft_linux::{NetNs, Netlink};
use weft_nft::{Conntrack, Family, Nft};
use weft_podnet::conflist::ConflistOptions;
use weft_proxy::{ProxyConfig, ServicePort, ServiceSyncer, SyncReport};

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
    /// The Services whose ports changed, and their ports now (`None`:
    /// proxy off).
    proxy: Option<ProxyChanges>,
    /// Skipped objects and health checks found while computing.
    report: PassReport,
}

/// Services (namespace, name) whose ports changed since the last pass, and
/// the ports they have now (none for a deleted Service).
#[derive(Debug)]
struct ProxyChanges {
    services: Vec<(String, String)>,
    ports: Vec<ServicePort>,
}

/// What the proxy derived from one Service and its EndpointSlices.
#[derive(Debug, Default)]
struct Derived {
    /// uid and resource version of the Service and of each of its slices
    /// (by name); `None` when an object has no resource version (then the
    /// Service is derived again on every pass).
    versions: Option<Vec<(String, String, String)>>,
    /// Why parts of it were skipped (reported on every pass).
    skipped: Vec<String>,
    /// Its health-check node ports.
    health_checks: Vec<(u16, HealthCheck)>,
}

/// The proxy half's state: one syncer per family, each keeping the
/// compiled ruleset per Service port so that a pass recompiles and commits
/// only the ports that changed, and what each Service was derived from.
struct ProxyState {
    config: ProxyConfig,
    syncers: Vec<(Family, ServiceSyncer)>,
    /// By namespace, then name.
    derived: HashMap<String, HashMap<String, Derived>>,
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
                let config = ProxyConfig {
                    node_name: node.clone(),
                    cluster_cidrs,
                };
                let mut syncers = Vec::new();
                for family in [Family::Ip, Family::Ip6] {
                    let syncer = ServiceSyncer::new(
                        Nft::open_in(&ns)?,
                        Some(Conntrack::open_in(&ns)?),
                        family,
                        config.clone(),
                    );
                    syncers.push((family, syncer));
                }
                Some(ProxyState {
                    config,
                    syncers,
                    derived: HashMap::new(),
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
    /// from `index` (for the proxy: what changed since the last pass, which
    /// it remembers). Drop the read guard before [`Reconciler::apply`].
    pub fn compute(&mut self, index: &Index) -> Desired {
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
        let node = self.node.clone();
        let proxy = self
            .proxy
            .as_mut()
            .map(|proxy| proxy_changes(&mut proxy.derived, index, &node, &mut report));
        Desired {
            nodes,
            proxy,
            report,
        }
    }

    /// The I/O half of a pass: makes the kernel hold `desired`.
    pub fn apply(&mut self, desired: Desired) -> PassReport {
        let Desired {
            nodes,
            proxy,
            mut report,
        } = desired;
        self.apply_podnet(&nodes, &mut report);
        if let Some(changes) = proxy {
            self.apply_proxy(&changes, &mut report);
        }
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
            Ok(uplink) => {
                config.uplink_mtu = uplink.mtu;
                config.uplink_gso_max_size = uplink
                    .gso_ipv4_max_size
                    .unwrap_or(weft_podnet::LEGACY_GSO_MAX_SIZE);
            }
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

    /// Compiles the Service ports that changed and commits both families'
    /// tables (whole, when a syncer is not in sync).
    fn apply_proxy(&mut self, changes: &ProxyChanges, report: &mut PassReport) {
        let Some(proxy) = &mut self.proxy else {
            return;
        };
        for (family, syncer) in &mut proxy.syncers {
            let result = syncer.sync_services(&changes.services, &changes.ports, &proxy.config);
            report.proxy_rules += syncer.state().rule_count();
            report.proxy_elements += syncer.state().element_count();
            match result {
                Ok(sync) => report.proxy.push((*family, sync)),
                Err(err) => report.errors.push(format!("{err}: {}", source_text(&err))),
            }
        }
    }
}

/// The Services whose inputs changed since the last pass, with their ports
/// now; `derived` remembers what each Service was derived from. Skipped
/// objects and health checks of every Service go into `report`.
fn proxy_changes(
    derived: &mut HashMap<String, HashMap<String, Derived>>,
    index: &Index,
    node: &str,
    report: &mut PassReport,
) -> ProxyChanges {
    let mut changes = ProxyChanges {
        services: Vec::new(),
        ports: Vec::new(),
    };
    let mut seen: HashMap<&str, Vec<&str>> = HashMap::new();
    for service in index.services() {
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let name = service.metadata.name.as_deref().unwrap_or_default();
        seen.entry(namespace).or_default().push(name);
        let slices: Vec<_> = index.endpoint_slices_for(namespace, name).collect();
        let held = derived.get(namespace).and_then(|by_name| by_name.get(name));
        if held.is_some_and(|held| same_versions(held.versions.as_deref(), service, &slices)) {
            continue;
        }
        let (ports, skipped) = weft_proxy::service_ports_of([service], slices.iter().copied());
        let health_checks = ports
            .iter()
            .filter(|port| port.external_local)
            .filter_map(|port| {
                let health_port = port.health_check_node_port?;
                Some((
                    health_port,
                    HealthCheck {
                        service: format!("{}/{}", port.name.namespace, port.name.name),
                        local_endpoints: port.usable_endpoints(Some(node)).len(),
                    },
                ))
            })
            .collect();
        derived.entry(namespace.to_owned()).or_default().insert(
            name.to_owned(),
            Derived {
                versions: versions(service, &slices),
                skipped: skipped.iter().map(ToString::to_string).collect(),
                health_checks,
            },
        );
        changes
            .services
            .push((namespace.to_owned(), name.to_owned()));
        changes.ports.extend(ports);
    }
    // Services gone since the last pass.
    for (namespace, by_name) in derived.iter_mut() {
        let present = seen.get(namespace.as_str());
        by_name.retain(|name, _| {
            let kept = present.is_some_and(|names| names.contains(&name.as_str()));
            if !kept {
                changes.services.push((namespace.clone(), name.clone()));
            }
            kept
        });
    }
    derived.retain(|_, by_name| !by_name.is_empty());
    // Every Service's skipped parts and health checks, in name order.
    let mut ordered: Vec<(&String, &String, &Derived)> = derived
        .iter()
        .flat_map(|(namespace, by_name)| {
            by_name
                .iter()
                .map(move |(name, derived)| (namespace, name, derived))
        })
        .filter(|(_, _, derived)| !derived.skipped.is_empty() || !derived.health_checks.is_empty())
        .collect();
    ordered.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (_, _, derived) in ordered {
        report.skipped.extend(derived.skipped.iter().cloned());
        report
            .health_checks
            .extend(derived.health_checks.iter().cloned());
    }
    changes
}

/// uid and resource version of `service` and its slices, or `None` when
/// one has no resource version.
fn versions(
    service: &k8s_openapi::api::core::v1::Service,
    slices: &[&k8s_openapi::api::discovery::v1::EndpointSlice],
) -> Option<Vec<(String, String, String)>> {
    let identity = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        Some((
            meta.name.clone().unwrap_or_default(),
            meta.uid.clone().unwrap_or_default(),
            meta.resource_version.clone()?,
        ))
    };
    let mut versions = vec![identity(&service.metadata)?];
    let mut of_slices = slices
        .iter()
        .map(|slice| identity(&slice.metadata))
        .collect::<Option<Vec<_>>>()?;
    of_slices.sort();
    versions.extend(of_slices);
    Some(versions)
}

/// Whether `service` and `slices` are what `held` was derived from
/// (compared in place: this runs for every Service on every pass).
fn same_versions(
    held: Option<&[(String, String, String)]>,
    service: &k8s_openapi::api::core::v1::Service,
    slices: &[&k8s_openapi::api::discovery::v1::EndpointSlice],
) -> bool {
    let Some((held_service, held_slices)) = held.and_then(<[_]>::split_first) else {
        return false;
    };
    let is = |entry: &(String, String, String),
              meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.resource_version.as_deref() == Some(entry.2.as_str())
            && meta.name.as_deref().unwrap_or_default() == entry.0
            && meta.uid.as_deref().unwrap_or_default() == entry.1
    };
    held_slices.len() == slices.len()
        && is(held_service, &service.metadata)
        && slices
            .iter()
            .all(|slice| held_slices.iter().any(|entry| is(entry, &slice.metadata)))
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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use weft_cluster::Object;
    use weft_cluster::testing::{mk_service, set_cluster_ip};

    use super::*;

    fn service(name: &str, ip: &str, version: Option<&str>) -> Object {
        let mut service = mk_service("default", name, &[("app", name)], &[("", 80, "8080")]);
        set_cluster_ip(&mut service, ip);
        service.metadata.uid = Some(format!("uid-{name}"));
        service.metadata.resource_version = version.map(str::to_owned);
        Object::Service(service)
    }

    fn slice(service: &str, version: &str, addresses: &[&str]) -> Object {
        Object::EndpointSlice(EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(format!("{service}-1")),
                uid: Some(format!("uid-{service}-1")),
                resource_version: Some(version.into()),
                labels: Some(
                    [(
                        weft_proxy::service::SERVICE_NAME_LABEL.to_owned(),
                        service.to_owned(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: addresses
                .iter()
                .map(|address| Endpoint {
                    addresses: vec![(*address).to_owned()],
                    ..Endpoint::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..EndpointPort::default()
            }]),
        })
    }

    fn names(changes: &ProxyChanges) -> Vec<&str> {
        let mut names: Vec<&str> = changes
            .services
            .iter()
            .map(|(_, name)| name.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn only_services_whose_versions_moved_are_derived_again() {
        let mut index = Index::new();
        index.upsert(service("a", "10.96.0.1", Some("1")));
        index.upsert(slice("a", "1", &["10.244.1.1"]));
        index.upsert(service("b", "10.96.0.2", Some("1")));
        index.upsert(slice("b", "1", &["10.244.2.1"]));
        let mut derived = HashMap::new();
        let mut report = PassReport::default();

        let first = proxy_changes(&mut derived, &index, "node-1", &mut report);
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(first.ports.len(), 2);

        let again = proxy_changes(&mut derived, &index, "node-1", &mut report);
        assert!(again.services.is_empty() && again.ports.is_empty());

        // a's slice moves: only a, with its new endpoints.
        index.upsert(slice("a", "2", &["10.244.1.1", "10.244.1.2"]));
        let moved = proxy_changes(&mut derived, &index, "node-1", &mut report);
        assert_eq!(names(&moved), ["a"]);
        assert_eq!(moved.ports.len(), 1);
        assert_eq!(moved.ports[0].endpoints.len(), 2);

        // b goes: named, without ports.
        index.remove(&weft_cluster::ObjectKey::new(
            weft_cluster::Kind::Service,
            "default",
            "b",
        ));
        let gone = proxy_changes(&mut derived, &index, "node-1", &mut report);
        assert_eq!(names(&gone), ["b"]);
        assert!(gone.ports.is_empty());
        assert!(
            proxy_changes(&mut derived, &index, "node-1", &mut report)
                .services
                .is_empty()
        );
    }

    #[test]
    fn a_service_without_a_resource_version_is_derived_on_every_pass() {
        let mut index = Index::new();
        index.upsert(service("a", "10.96.0.1", None));
        let mut derived = HashMap::new();
        let mut report = PassReport::default();
        for _ in 0..2 {
            let changes = proxy_changes(&mut derived, &index, "node-1", &mut report);
            assert_eq!(names(&changes), ["a"]);
        }
    }
}
