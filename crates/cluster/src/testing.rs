//! Builders for objects in tests, here and in every crate that reconciles
//! from a [`crate::Index`]: `mk_pod`, `mk_service`, … give the minimal valid
//! object, and the `set_*` helpers change the one thing a test is about.
//! Not for product code: the objects carry no uid or resourceVersion.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, NodeSpec, PodCondition, PodIP, PodSpec, PodStatus, ServicePort,
    ServiceSpec,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{Ingress, Namespace, Node, Pod, Secret, Service};

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    })
}

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
        ..ObjectMeta::default()
    }
}

/// A running, ready Pod with these labels and IP (none if `ip` is empty)
/// and one container `main` without ports.
pub fn mk_pod(namespace: &str, name: &str, pod_labels: &[(&str, &str)], ip: &str) -> Pod {
    let mut pod = Pod {
        metadata: ObjectMeta {
            labels: labels(pod_labels),
            ..meta(namespace, name)
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".to_owned(),
                image: Some("weft/serve".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: (!ip.is_empty()).then(|| ip.to_owned()),
            pod_ips: (!ip.is_empty()).then(|| vec![PodIP { ip: ip.to_owned() }]),
            ..PodStatus::default()
        }),
    };
    set_ready(&mut pod, true);
    pod
}

/// Sets the Pod's `Ready` condition.
pub fn set_ready(pod: &mut Pod, ready: bool) {
    let status = pod.status.get_or_insert_with(PodStatus::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != "Ready");
    conditions.push(PodCondition {
        type_: "Ready".to_owned(),
        status: if ready { "True" } else { "False" }.to_owned(),
        ..PodCondition::default()
    });
}

/// Marks the Pod as being deleted (a `deletionTimestamp`), as the API server
/// does during its grace period.
pub fn set_terminating(pod: &mut Pod) {
    pod.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
}

/// Sets the Pod's phase, e.g. `Succeeded`.
pub fn set_phase(pod: &mut Pod, phase: &str) {
    pod.status.get_or_insert_with(PodStatus::default).phase = Some(phase.to_owned());
}

/// Schedules the Pod on a node.
pub fn set_node(pod: &mut Pod, node: &str) {
    pod.spec.get_or_insert_with(PodSpec::default).node_name = Some(node.to_owned());
}

/// Adds a named container port to the Pod's first container.
pub fn add_container_port(pod: &mut Pod, name: &str, port: i32, protocol: &str) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    if spec.containers.is_empty() {
        spec.containers.push(Container {
            name: "main".to_owned(),
            ..Container::default()
        });
    }
    if let Some(container) = spec.containers.first_mut() {
        container
            .ports
            .get_or_insert_with(Vec::new)
            .push(ContainerPort {
                name: (!name.is_empty()).then(|| name.to_owned()),
                container_port: port,
                protocol: Some(protocol.to_owned()),
                ..ContainerPort::default()
            });
    }
}

/// A ClusterIP Service selecting `selector` (no selector if empty) with
/// ports given as `(name, port, target)`; a numeric `target` is a number,
/// anything else a port name, "" means the same as `port`.
pub fn mk_service(
    namespace: &str,
    name: &str,
    selector: &[(&str, &str)],
    ports: &[(&str, i32, &str)],
) -> Service {
    let ports = ports
        .iter()
        .map(|(port_name, port, target)| ServicePort {
            name: (!port_name.is_empty()).then(|| (*port_name).to_owned()),
            port: *port,
            protocol: Some("TCP".to_owned()),
            target_port: Some(match target.parse::<i32>() {
                Ok(n) => IntOrString::Int(n),
                Err(_) if target.is_empty() => IntOrString::Int(*port),
                Err(_) => IntOrString::String((*target).to_owned()),
            }),
            ..ServicePort::default()
        })
        .collect();
    Service {
        metadata: meta(namespace, name),
        spec: Some(ServiceSpec {
            selector: labels(selector),
            ports: Some(ports),
            type_: Some("ClusterIP".to_owned()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Sets the Service's cluster IP (`None` makes it headless).
pub fn set_cluster_ip(svc: &mut Service, ip: &str) {
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    spec.cluster_ip = Some(ip.to_owned());
    spec.cluster_ips = Some(vec![ip.to_owned()]);
}

/// A Node with this pod CIDR (none if empty).
pub fn mk_node(name: &str, pod_cidr: &str) -> Node {
    Node {
        metadata: meta("", name),
        spec: Some(NodeSpec {
            pod_cidr: (!pod_cidr.is_empty()).then(|| pod_cidr.to_owned()),
            pod_cidrs: (!pod_cidr.is_empty()).then(|| vec![pod_cidr.to_owned()]),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

/// A Namespace.
pub fn mk_namespace(name: &str) -> Namespace {
    Namespace {
        metadata: meta("", name),
        ..Namespace::default()
    }
}

/// An Ingress with one rule: `host` (any host if empty), a `Prefix` path,
/// to `service`:`port`.
pub fn mk_ingress(
    namespace: &str,
    name: &str,
    host: &str,
    path: &str,
    service: &str,
    port: i32,
) -> Ingress {
    Ingress {
        metadata: meta(namespace, name),
        spec: Some(IngressSpec {
            rules: Some(vec![IngressRule {
                host: (!host.is_empty()).then(|| host.to_owned()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(path.to_owned()),
                        path_type: "Prefix".to_owned(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: service.to_owned(),
                                port: Some(ServiceBackendPort {
                                    number: Some(port),
                                    name: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        status: None,
    }
}

/// A `kubernetes.io/tls` Secret with this certificate and key (PEM).
pub fn mk_tls_secret(namespace: &str, name: &str, cert: &str, key: &str) -> Secret {
    let data = [("tls.crt", cert), ("tls.key", key)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
    Secret {
        metadata: meta(namespace, name),
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}
