//! What a Kubernetes control plane (API server defaulting and allocation,
//! the EndpointSlice and node-IPAM controllers) would do to the objects of a
//! cluster, as pure functions over the whole object set. The embedded store
//! runs [`reconcile`] on every write; on a real cluster Kubernetes does it
//! and none of this runs.

pub mod endpointslice;
pub mod ipam;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{NamespaceStatus, PodStatus, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{
    ENDPOINTSLICE_CONTROLLER, Kind, MANAGED_BY_LABEL, Namespace, Object, ObjectKey, Pod,
};

pub use endpointslice::derive_endpoint_slices;
pub use ipam::AllocError;

/// The cluster-wide address plan, Kubernetes' defaults unless set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Where ClusterIPs come from (10.96.0.0/12).
    pub service_cidr: Ipv4Net,
    /// Where node pod subnets come from (10.244.0.0/16).
    pub cluster_cidr: Ipv4Net,
    /// Prefix length of each node's pod subnet (24).
    pub node_cidr_prefix: u8,
    /// Where NodePorts come from (30000-32767).
    pub node_ports: RangeInclusive<u16>,
    /// The ClusterIP kept for `kube-system/kube-dns` (10.96.0.10).
    pub dns_ip: Ipv4Addr,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            service_cidr: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default(),
            cluster_cidr: Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
            node_cidr_prefix: 24,
            node_ports: 30000..=32767,
            dns_ip: Ipv4Addr::new(10, 96, 0, 10),
        }
    }
}

/// Namespaces an API server creates at start.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Namespaces an API server never deletes (its NamespaceLifecycle
/// admission).
pub const UNDELETABLE_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// Brings the whole object set to what an API server and its controllers
/// would hold: system namespaces exist, Namespaces are `Active`, new Pods are
/// `Pending`, Services are defaulted and have their ClusterIP and NodePorts,
/// every Node has a pod CIDR, and managed EndpointSlices match the Pods.
///
/// Guarantees: values already set are kept; running it twice changes nothing
/// the second time.
pub fn reconcile(
    objects: &mut BTreeMap<ObjectKey, Object>,
    config: &ClusterConfig,
) -> Result<(), AllocError> {
    default_namespaces(objects);
    default_pods(objects);
    allocate_services(objects, config)?;
    allocate_node_cidrs(objects, config)?;
    sync_endpoint_slices(objects);
    Ok(())
}

fn default_namespaces(objects: &mut BTreeMap<ObjectKey, Object>) {
    for name in SYSTEM_NAMESPACES {
        let key = ObjectKey::new(Kind::Namespace, "", name);
        objects.entry(key).or_insert_with(|| {
            Object::Namespace(Namespace {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            })
        });
    }
    for obj in objects.values_mut() {
        if let Object::Namespace(ns) = obj {
            let status = ns.status.get_or_insert_with(NamespaceStatus::default);
            status.phase.get_or_insert_with(|| "Active".to_owned());
        }
    }
}

fn default_pods(objects: &mut BTreeMap<ObjectKey, Object>) {
    for obj in objects.values_mut() {
        if let Object::Pod(pod) = obj {
            let status = pod.status.get_or_insert_with(PodStatus::default);
            status.phase.get_or_insert_with(|| "Pending".to_owned());
        }
    }
}

fn is_node_port_type(spec: &ServiceSpec) -> bool {
    matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
}

fn allocate_services(
    objects: &mut BTreeMap<ObjectKey, Object>,
    config: &ClusterConfig,
) -> Result<(), AllocError> {
    let mut used_ips: BTreeSet<IpAddr> = BTreeSet::new();
    let mut used_ports: BTreeSet<u16> = BTreeSet::new();
    for obj in objects.values() {
        let Object::Service(svc) = obj else { continue };
        let Some(spec) = &svc.spec else { continue };
        let ips = spec
            .cluster_ip
            .iter()
            .chain(spec.cluster_ips.iter().flatten());
        used_ips.extend(ips.filter_map(|ip| ip.parse::<IpAddr>().ok()));
        let ports = spec.ports.iter().flatten().filter_map(|p| p.node_port);
        let ports = ports.chain(spec.health_check_node_port);
        used_ports.extend(ports.filter_map(|p| u16::try_from(p).ok()));
    }
    for (key, obj) in objects.iter_mut() {
        let Object::Service(svc) = obj else { continue };
        let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
        let kind = spec
            .type_
            .get_or_insert_with(|| "ClusterIP".to_owned())
            .clone();
        spec.session_affinity
            .get_or_insert_with(|| "None".to_owned());
        for port in spec.ports.iter_mut().flatten() {
            port.protocol.get_or_insert_with(|| "TCP".to_owned());
            if matches!(port.target_port, None | Some(IntOrString::Int(0))) {
                port.target_port = Some(IntOrString::Int(port.port));
            }
        }
        if kind == "ExternalName" {
            continue;
        }
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".to_owned());
        // `clusterIP` follows `clusterIPs[0]` when only the list is given.
        if spec.cluster_ip.as_deref().is_none_or(str::is_empty) {
            if let Some(first) = spec.cluster_ips.as_ref().and_then(|ips| ips.first()) {
                spec.cluster_ip = Some(first.clone());
            }
        }
        let ip = match spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty()) {
            Some(ip) => ip.to_owned(),
            None => {
                let ip = ipam::allocate_cluster_ip(config, &key.namespace, &key.name, &used_ips)?;
                used_ips.insert(IpAddr::V4(ip));
                ip.to_string()
            }
        };
        spec.cluster_ip = Some(ip.clone());
        if spec.cluster_ips.as_ref().is_none_or(Vec::is_empty) {
            spec.cluster_ips = Some(vec![ip]);
        }
        spec.ip_families
            .get_or_insert_with(|| vec!["IPv4".to_owned()]);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".to_owned());
        if is_node_port_type(spec) {
            spec.external_traffic_policy
                .get_or_insert_with(|| "Cluster".to_owned());
            for port in spec.ports.iter_mut().flatten() {
                if port.node_port.is_none_or(|p| p == 0) {
                    let p = ipam::allocate_node_port(config, &used_ports)?;
                    used_ports.insert(p);
                    port.node_port = Some(i32::from(p));
                }
            }
            // Where load balancers ask a node whether it has local
            // endpoints, from the NodePort range like kube-apiserver's.
            if crate::model::uses_health_check_node_port(spec)
                && spec.health_check_node_port.is_none_or(|p| p == 0)
            {
                let p = ipam::allocate_node_port(config, &used_ports)?;
                used_ports.insert(p);
                spec.health_check_node_port = Some(i32::from(p));
            }
        }
    }
    Ok(())
}

fn allocate_node_cidrs(
    objects: &mut BTreeMap<ObjectKey, Object>,
    config: &ClusterConfig,
) -> Result<(), AllocError> {
    let mut used: Vec<Ipv4Net> = objects
        .values()
        .filter_map(|o| match o {
            Object::Node(n) => n.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok(),
            _ => None,
        })
        .collect();
    for obj in objects.values_mut() {
        let Object::Node(node) = obj else { continue };
        let spec = node.spec.get_or_insert_with(Default::default);
        let cidr = match spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
            Some(cidr) => cidr.to_owned(),
            None => {
                let cidr = ipam::allocate_pod_cidr(config, &used)?;
                used.push(cidr);
                cidr.to_string()
            }
        };
        spec.pod_cidr = Some(cidr.clone());
        if spec.pod_cidrs.as_ref().is_none_or(Vec::is_empty) {
            spec.pod_cidrs = Some(vec![cidr]);
        }
    }
    Ok(())
}

fn is_managed_slice(obj: &Object) -> bool {
    match obj {
        Object::EndpointSlice(s) => s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .is_some_and(|v| v == ENDPOINTSLICE_CONTROLLER),
        _ => false,
    }
}

fn sync_endpoint_slices(objects: &mut BTreeMap<ObjectKey, Object>) {
    let mut pods_by_ns: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for (key, obj) in objects.iter() {
        if let Object::Pod(pod) = obj {
            pods_by_ns
                .entry(key.namespace.as_str())
                .or_default()
                .push(pod);
        }
    }
    let mut desired: BTreeMap<ObjectKey, Object> = BTreeMap::new();
    for (key, obj) in objects.iter() {
        let Object::Service(svc) = obj else { continue };
        let pods = pods_by_ns
            .get(key.namespace.as_str())
            .into_iter()
            .flatten()
            .copied();
        for slice in derive_endpoint_slices(svc, pods) {
            let obj = Object::EndpointSlice(slice);
            desired.insert(obj.key(), obj);
        }
    }
    objects.retain(|key, obj| !is_managed_slice(obj) || desired.contains_key(key));
    for (key, slice) in desired {
        match objects.get_mut(&key) {
            // Keep what the store recorded (uid, resourceVersion) and replace
            // what the controller owns.
            Some(Object::EndpointSlice(old)) => {
                if let Object::EndpointSlice(new) = slice {
                    old.metadata.labels = new.metadata.labels;
                    old.metadata.owner_references = new.metadata.owner_references;
                    old.address_type = new.address_type;
                    old.endpoints = new.endpoints;
                    old.ports = new.ports;
                }
            }
            _ => {
                objects.insert(key, slice);
            }
        }
    }
}

#[cfg(test)]
mod tests;
