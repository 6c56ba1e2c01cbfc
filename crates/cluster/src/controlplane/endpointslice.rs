//! The EndpointSlice controller's rules as one pure function: from a Service
//! and the Pods of its namespace, the slices Kubernetes would hold.
//!
//! Rules followed (kube-controller-manager's `endpointslice` controller):
//! - only Services with a non-empty selector get managed slices, and never
//!   `ExternalName` Services;
//! - a Pod is an endpoint if its labels match the selector, it has an IP and
//!   it has not finished (phase `Succeeded`/`Failed`); terminating Pods stay;
//! - `serving` = the Pod is Ready (or the Service publishes not-ready
//!   addresses); `terminating` = the Pod has a `deletionTimestamp`; `ready` =
//!   serving and not terminating (or publishing not-ready addresses);
//! - each Service port maps to the Pod's port: a number as is, a name looked
//!   up among the Pod's container ports with the same protocol; a Pod missing
//!   a named port simply lacks that port, so Pods with different port sets
//!   land in different slices;
//! - at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints per slice, one address
//!   type per slice, labels `kubernetes.io/service-name`,
//!   `endpointslice.kubernetes.io/managed-by` (and
//!   `service.kubernetes.io/headless` for headless Services) on top of the
//!   Service's own labels, an owner reference to the Service;
//! - a selected Service without any endpoint gets one empty placeholder slice.
//!
//! Differences: slices are named `<service>-<n>` rather than with a random
//! suffix, and endpoints carry no zone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{
    ENDPOINTSLICE_CONTROLLER, EndpointSlice, MANAGED_BY_LABEL, Pod, SERVICE_NAME_LABEL, Service,
    pod_is_ready, pod_is_terminal,
};

/// The most endpoints the controller puts in one slice.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// Label set on the slices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Whether the label set matches a Service selector (every key with the same
/// value; an empty selector matches nothing, as for Services).
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The port a Service port reaches on this Pod, or `None` when the Pod has
/// no container port of that name and protocol.
pub fn resolve_target_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None | Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .map(|p| p.container_port),
    }
}

fn address_type(ip: &str) -> Option<&'static str> {
    match ip.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(_) => Some("IPv4"),
        std::net::IpAddr::V6(_) => Some("IPv6"),
    }
}

fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .collect();
    if let Some(ip) = &status.pod_ip {
        if !ips.contains(ip) {
            ips.insert(0, ip.clone());
        }
    }
    ips
}

/// The EndpointSlices Kubernetes would hold for `service`, given every Pod
/// of the cluster (Pods of other namespaces are ignored). Empty when the
/// Service has no selector or is `ExternalName`.
pub fn derive_endpoint_slices<'a>(
    service: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<EndpointSlice> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let selector = spec.selector.clone().unwrap_or_default();
    if selector.is_empty() || spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let service_name = service.metadata.name.clone().unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let families: Vec<String> = spec
        .ip_families
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| vec!["IPv4".to_owned()]);
    let service_ports = spec.ports.clone().unwrap_or_default();

    let mut selected: Vec<&Pod> = pods
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref().unwrap_or("default") == namespace)
        .filter(|p| selector_matches(&selector, p.metadata.labels.as_ref()))
        .filter(|p| !pod_is_terminal(p))
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    // (address type, ports) -> endpoints, in pod-name order.
    let mut groups: BTreeMap<(String, String), (Vec<EndpointPort>, Vec<Endpoint>)> =
        BTreeMap::new();
    for pod in selected {
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(resolve_target_port(pod, sp)?),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".to_owned())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let ports_key = serde_json::to_string(&ports).unwrap_or_default();
        let serving = publish_not_ready || pod_is_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ready = publish_not_ready || (serving && !terminating);
        let pod_spec = pod.spec.as_ref();
        let hostname = pod_spec
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty())
            .filter(|_| {
                pod_spec.and_then(|s| s.subdomain.as_deref()) == Some(service_name.as_str())
            });
        for ip in pod_ips(pod) {
            let Some(family) = address_type(&ip) else {
                continue;
            };
            if !families.iter().any(|f| f == family) {
                continue;
            }
            let endpoint = Endpoint {
                addresses: vec![ip],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                hostname: hostname.clone(),
                node_name: pod_spec.and_then(|s| s.node_name.clone()),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".to_owned()),
                    namespace: Some(namespace.clone()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                    ..ObjectReference::default()
                }),
                ..Endpoint::default()
            };
            groups
                .entry((family.to_owned(), ports_key.clone()))
                .or_insert_with(|| (ports.clone(), Vec::new()))
                .1
                .push(endpoint);
        }
    }

    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.to_owned(), service_name.clone());
    labels.insert(
        MANAGED_BY_LABEL.to_owned(),
        ENDPOINTSLICE_CONTROLLER.to_owned(),
    );
    if headless {
        labels.insert(HEADLESS_LABEL.to_owned(), String::new());
    }
    let owner = OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Service".to_owned(),
        name: service_name.clone(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let slice = |n: usize, address_type: String, ports: Option<Vec<EndpointPort>>, endpoints| {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{service_name}-{n}")),
                namespace: Some(namespace.clone()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner.clone()]),
                ..ObjectMeta::default()
            },
            address_type,
            endpoints,
            ports,
        }
    };

    let mut slices = Vec::new();
    for ((family, _), (ports, endpoints)) in groups {
        for chunk in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE) {
            let ports = (!ports.is_empty()).then(|| ports.clone());
            slices.push(slice(slices.len(), family.clone(), ports, chunk.to_vec()));
        }
    }
    if slices.is_empty() {
        let family = families
            .first()
            .cloned()
            .unwrap_or_else(|| "IPv4".to_owned());
        slices.push(slice(0, family, None, Vec::new()));
    }
    slices
}

#[cfg(test)]
mod tests;
