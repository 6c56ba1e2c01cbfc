//! Address and port allocation as the API server does it: ClusterIPs from the
//! service CIDR, NodePorts from the NodePort range, and a pod subnet per Node
//! from the cluster CIDR.
//!
//! Unlike the API server, which picks at random, every allocator here takes
//! the lowest free value, so a lab applied twice gets the same addresses.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use super::ClusterConfig;

/// An allocator ran out of values.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocError {
    /// Every address of the service CIDR is taken.
    #[error("no free ClusterIP left in the service CIDR {0}")]
    ServiceCidrFull(Ipv4Net),
    /// Every port of the NodePort range is taken.
    #[error("no free NodePort left in {first}-{last}")]
    NodePortsFull { first: u16, last: u16 },
    /// Every node subnet of the cluster CIDR is taken.
    #[error("no free /{prefix} pod subnet left in the cluster CIDR {cidr}")]
    ClusterCidrFull { cidr: Ipv4Net, prefix: u8 },
}

/// The ClusterIP of Service `default/kubernetes`: the first address of the
/// service CIDR (10.96.0.1 by default).
pub fn kubernetes_service_ip(config: &ClusterConfig) -> Ipv4Addr {
    let net = u32::from(config.service_cidr.network());
    Ipv4Addr::from(net.saturating_add(1))
}

/// A ClusterIP for Service `namespace/name`, not in `used`.
///
/// `default/kubernetes` gets [`kubernetes_service_ip`] and
/// `kube-system/kube-dns` gets the cluster DNS address; no other Service is
/// given either of them unless it asks for it by name in its spec.
pub fn allocate_cluster_ip(
    config: &ClusterConfig,
    namespace: &str,
    name: &str,
    used: &BTreeSet<IpAddr>,
) -> Result<Ipv4Addr, AllocError> {
    let kubernetes = kubernetes_service_ip(config);
    let wanted = match (namespace, name) {
        ("default", "kubernetes") => Some(kubernetes),
        ("kube-system", "kube-dns") => Some(config.dns_ip),
        _ => None,
    };
    if let Some(ip) = wanted.filter(|ip| !used.contains(&IpAddr::V4(*ip))) {
        return Ok(ip);
    }
    config
        .service_cidr
        .hosts()
        .find(|ip| *ip != kubernetes && *ip != config.dns_ip && !used.contains(&IpAddr::V4(*ip)))
        .ok_or(AllocError::ServiceCidrFull(config.service_cidr))
}

/// The lowest NodePort of the range not in `used`.
pub fn allocate_node_port(config: &ClusterConfig, used: &BTreeSet<u16>) -> Result<u16, AllocError> {
    config
        .node_ports
        .clone()
        .find(|p| !used.contains(p))
        .ok_or(AllocError::NodePortsFull {
            first: *config.node_ports.start(),
            last: *config.node_ports.end(),
        })
}

/// The lowest node subnet of the cluster CIDR that overlaps none of `used`.
pub fn allocate_pod_cidr(config: &ClusterConfig, used: &[Ipv4Net]) -> Result<Ipv4Net, AllocError> {
    let full = AllocError::ClusterCidrFull {
        cidr: config.cluster_cidr,
        prefix: config.node_cidr_prefix,
    };
    let mut subnets = config
        .cluster_cidr
        .subnets(config.node_cidr_prefix)
        .map_err(|_| full.clone())?;
    subnets
        .find(|s| !used.iter().any(|u| u.contains(s) || s.contains(u)))
        .ok_or(full)
}

#[cfg(test)]
mod tests;
