//! The proxy's view of the cluster: one [`ServicePort`] per (Service, port)
//! with its frontends (ClusterIPs, NodePort, external and load-balancer IPs)
//! and its endpoints resolved from EndpointSlices (named target ports
//! resolved per slice), built from Kubernetes objects by [`service_ports`].
//!
//! Objects the proxy must not or cannot handle are skipped with a
//! [`Skipped`] reason naming the object: headless and ExternalName
//! Services, Services another proxy owns
//! (`service.kubernetes.io/service-proxy-name`), bad ports, unknown
//! protocols, unparsable addresses. The rest still compiles.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label with which a Service asks for another proxy.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// Transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// IANA protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    fn parse(text: Option<&str>) -> Option<Protocol> {
        match text.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// Names one port of one Service: `namespace/name:port-name/protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortName {
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The port's name (empty for a single unnamed port).
    pub port: String,
    /// Protocol.
    pub protocol: Protocol,
}

impl PortName {
    /// `namespace/name:port/protocol`; `port` is empty for a single
    /// unnamed port.
    pub fn new(namespace: &str, name: &str, port: &str, protocol: Protocol) -> PortName {
        PortName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port: port.to_owned(),
            protocol,
        }
    }
}

impl fmt::Display for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        write!(f, "/{}", self.protocol)
    }
}

/// One backend of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Pod (or other backend) address.
    pub ip: IpAddr,
    /// Target port, resolved from the slice's ports.
    pub port: u16,
    /// Node hosting the endpoint, if known.
    pub node: Option<String>,
    /// Ready to receive traffic.
    pub ready: bool,
    /// Serving (may be true while terminating).
    pub serving: bool,
    /// Being deleted.
    pub terminating: bool,
}

impl Endpoint {
    /// An endpoint that is ready and serving, not terminating.
    pub fn ready(ip: IpAddr, port: u16, node: Option<String>) -> Endpoint {
        Endpoint {
            ip,
            port,
            node,
            ready: true,
            serving: true,
            terminating: false,
        }
    }
}

/// Everything the proxy needs about one Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Which port of which Service.
    pub name: PortName,
    /// The Service port number (what clients connect to).
    pub port: u16,
    /// ClusterIPs (one per family).
    pub cluster_ips: Vec<IpAddr>,
    /// NodePort, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges` (empty: everyone).
    pub source_ranges: Vec<IpNet>,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `healthCheckNodePort` (LoadBalancer with Local policy).
    pub health_check_node_port: Option<u16>,
    /// Every endpoint from the Service's slices, sorted, without duplicates.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// A port reached only on its ClusterIPs, with Kubernetes' defaults for
    /// the rest (no NodePort, external or load-balancer IPs, no affinity,
    /// Cluster traffic policies): what a test or benchmark starts from,
    /// setting other fields with struct update syntax.
    pub fn new(
        name: PortName,
        port: u16,
        cluster_ips: Vec<IpAddr>,
        endpoints: Vec<Endpoint>,
    ) -> ServicePort {
        ServicePort {
            name,
            port,
            cluster_ips,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            source_ranges: Vec::new(),
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
            health_check_node_port: None,
            endpoints,
        }
    }

    /// Endpoints that take traffic, by Kubernetes' rules: the ready ones; if
    /// none is ready, the serving-and-terminating ones; never the others.
    /// With `only_node`, only endpoints on that node count.
    pub fn usable_endpoints(&self, only_node: Option<&str>) -> Vec<&Endpoint> {
        let candidates = || {
            self.endpoints.iter().filter(move |endpoint| {
                only_node.is_none_or(|node| endpoint.node.as_deref() == Some(node))
            })
        };
        if candidates().any(|endpoint| endpoint.ready) {
            candidates().filter(|endpoint| endpoint.ready).collect()
        } else {
            candidates()
                .filter(|endpoint| endpoint.serving && endpoint.terminating)
                .collect()
        }
    }

    /// Whether the port has external frontends (NodePort, external or LB IPs).
    pub fn has_external(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }
}

/// An object (or part of one) left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `Service ns/name`, `EndpointSlice ns/name`, or a port of one.
    pub object: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} skipped: {}", self.object, self.reason)
    }
}

fn parse_ips(
    texts: impl IntoIterator<Item = String>,
    object: &str,
    field: &str,
    skipped: &mut Vec<Skipped>,
) -> Vec<IpAddr> {
    texts
        .into_iter()
        .filter_map(|text| match text.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                skipped.push(Skipped {
                    object: object.to_owned(),
                    reason: format!("{field} {text:?} is not an IP address"),
                });
                None
            }
        })
        .collect()
}

fn port_number(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|port| *port != 0)
}

/// The Service ports the proxy programs, from all Services and
/// EndpointSlices of the cluster, plus what it skipped. Sorted by name.
pub fn service_ports(
    services: &[Service],
    slices: &[EndpointSlice],
) -> (Vec<ServicePort>, Vec<Skipped>) {
    service_ports_of(services, slices)
}

/// [`service_ports`] from borrowed objects (a cluster index's iterators),
/// so a caller need not clone every Service and EndpointSlice first.
pub fn service_ports_of<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> (Vec<ServicePort>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut slices_by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(SERVICE_NAME_LABEL));
        if let Some(service) = service {
            slices_by_service
                .entry((namespace, service.clone()))
                .or_default()
                .push(slice);
        }
    }

    let mut ports = Vec::new();
    for service in services {
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let object = format!("Service {namespace}/{name}");
        let Some(spec) = &service.spec else {
            continue;
        };
        let proxied_elsewhere = service
            .metadata
            .labels
            .as_ref()
            .is_some_and(|labels| labels.contains_key(SERVICE_PROXY_NAME_LABEL));
        if proxied_elsewhere || spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let mut cluster_ip_texts: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
        if cluster_ip_texts.is_empty() {
            cluster_ip_texts.extend(spec.cluster_ip.clone());
        }
        if cluster_ip_texts.iter().any(|ip| ip == "None") {
            continue; // headless: DNS only
        }
        let cluster_ips = parse_ips(cluster_ip_texts, &object, "clusterIP", &mut skipped);
        let external_ips = parse_ips(
            spec.external_ips.clone().unwrap_or_default(),
            &object,
            "externalIP",
            &mut skipped,
        );
        let load_balancer_ips = parse_ips(
            service
                .status
                .as_ref()
                .and_then(|status| status.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .map(|ingress| {
                    ingress
                        .iter()
                        .filter_map(|entry| entry.ip.clone())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
            &object,
            "load-balancer ingress IP",
            &mut skipped,
        );
        let source_ranges = spec
            .load_balancer_source_ranges
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|text| match text.trim().parse::<IpNet>() {
                Ok(net) => Some(net.trunc()),
                Err(_) => {
                    skipped.push(Skipped {
                        object: object.clone(),
                        reason: format!("loadBalancerSourceRange {text:?} is not a CIDR"),
                    });
                    None
                }
            })
            .collect();
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|config| config.client_ip.as_ref())
                .and_then(|client| client.timeout_seconds)
                .and_then(|seconds| u32::try_from(seconds).ok())
                .filter(|seconds| *seconds > 0)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let health_check_node_port = spec.health_check_node_port.and_then(port_number);
        let service_slices = slices_by_service
            .get(&(namespace.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();

        for service_port in spec.ports.iter().flatten() {
            let port_label = service_port.name.clone().unwrap_or_default();
            let port_object = format!(
                "{object} port {}",
                if port_label.is_empty() {
                    service_port.port.to_string()
                } else {
                    port_label.clone()
                }
            );
            let Some(protocol) = Protocol::parse(service_port.protocol.as_deref()) else {
                skipped.push(Skipped {
                    object: port_object,
                    reason: format!(
                        "unknown protocol {:?}",
                        service_port.protocol.as_deref().unwrap_or_default()
                    ),
                });
                continue;
            };
            let Some(port) = port_number(service_port.port) else {
                skipped.push(Skipped {
                    object: port_object,
                    reason: format!("port {} is outside 1-65535", service_port.port),
                });
                continue;
            };
            let node_port = match service_port.node_port {
                None | Some(0) => None,
                Some(value) => match port_number(value) {
                    Some(node_port) => Some(node_port),
                    None => {
                        skipped.push(Skipped {
                            object: port_object,
                            reason: format!("nodePort {value} is outside 1-65535"),
                        });
                        continue;
                    }
                },
            };
            let name = PortName::new(&namespace, &name, &port_label, protocol);
            let endpoints = endpoints_for(&port_label, protocol, service_slices, &mut skipped);
            ports.push(ServicePort {
                name,
                port,
                cluster_ips: cluster_ips.clone(),
                node_port,
                external_ips: external_ips.clone(),
                load_balancer_ips: load_balancer_ips.clone(),
                source_ranges: Vec::clone(&source_ranges),
                affinity_timeout,
                external_local,
                internal_local,
                health_check_node_port,
                endpoints,
            });
        }
    }
    ports.sort_by(|a, b| a.name.cmp(&b.name));
    (ports, skipped)
}

/// Endpoints of one Service port: each slice resolves the port by name
/// and protocol to its own target port number.
fn endpoints_for(
    port_name: &str,
    protocol: Protocol,
    slices: &[&EndpointSlice],
    skipped: &mut Vec<Skipped>,
) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let slice_port = slice.ports.iter().flatten().find(|candidate| {
            candidate.name.as_deref().unwrap_or_default() == port_name
                && Protocol::parse(candidate.protocol.as_deref()) == Some(protocol)
        });
        let Some(target) = slice_port
            .and_then(|found| found.port)
            .and_then(port_number)
        else {
            continue;
        };
        let object = format!(
            "EndpointSlice {}/{}",
            slice.metadata.namespace.as_deref().unwrap_or_default(),
            slice.metadata.name.as_deref().unwrap_or_default()
        );
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            // Unknown readiness counts as ready; serving defaults to ready.
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            for ip in parse_ips(
                endpoint.addresses.iter().cloned(),
                &object,
                "address",
                skipped,
            ) {
                endpoints.push(Endpoint {
                    ip,
                    port: target,
                    node: endpoint.node_name.clone(),
                    ready,
                    serving,
                    terminating,
                });
            }
        }
    }
    endpoints.sort();
    endpoints.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
    endpoints
}

#[cfg(test)]
mod tests;
