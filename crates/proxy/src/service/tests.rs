use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, ServicePort as K8sServicePort, ServiceSpec,
    ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint as K8sEndpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

pub(crate) fn mk_service(
    namespace: &str,
    name: &str,
    cluster_ip: &str,
    ports: &[(&str, i32, &str)],
) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(port_name, port, protocol)| K8sServicePort {
                        name: (!port_name.is_empty()).then(|| port_name.to_string()),
                        port: *port,
                        protocol: Some(protocol.to_string()),
                        ..K8sServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// (ip, ready, serving, terminating, node)
pub(crate) type Ep<'a> = (&'a str, bool, bool, bool, &'a str);

pub(crate) fn mk_slice(
    namespace: &str,
    service: &str,
    ports: &[(&str, i32, &str)],
    endpoints: &[Ep],
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(format!("{service}-abc")),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_owned(),
                service.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: endpoints
            .iter()
            .map(|(ip, ready, serving, terminating, node)| K8sEndpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    serving: Some(*serving),
                    terminating: Some(*terminating),
                }),
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..K8sEndpoint::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(name, port, protocol)| EndpointPort {
                    name: (!name.is_empty()).then(|| name.to_string()),
                    port: Some(*port),
                    protocol: Some(protocol.to_string()),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    }
}

#[test]
fn named_target_ports_resolve_per_slice() {
    let service = mk_service(
        "default",
        "web",
        "10.96.0.20",
        &[("http", 80, "TCP"), ("dns", 53, "UDP")],
    );
    let slices = [
        mk_slice(
            "default",
            "web",
            &[("http", 8080, "TCP"), ("dns", 5353, "UDP")],
            &[("10.244.1.5", true, true, false, "node-1")],
        ),
        mk_slice(
            "default",
            "web",
            &[("http", 9090, "TCP")],
            &[("10.244.2.5", true, true, false, "node-2")],
        ),
    ];
    let (ports, skipped) = service_ports(&[service], &slices);
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(ports.len(), 2);
    let http = ports.iter().find(|p| p.name.port == "http").unwrap();
    let targets: Vec<(String, u16)> = http
        .endpoints
        .iter()
        .map(|e| (e.ip.to_string(), e.port))
        .collect();
    assert_eq!(
        targets,
        [
            ("10.244.1.5".to_owned(), 8080),
            ("10.244.2.5".to_owned(), 9090)
        ]
    );
    let dns = ports.iter().find(|p| p.name.port == "dns").unwrap();
    assert_eq!(dns.name.protocol, Protocol::Udp);
    assert_eq!(dns.endpoints.len(), 1);
    assert_eq!(dns.endpoints[0].port, 5353);
    assert_eq!(dns.name.to_string(), "default/web:dns/udp");
}

#[test]
fn terminating_endpoints_serve_only_when_none_is_ready_and_not_ready_never() {
    let service = mk_service("default", "web", "10.96.0.20", &[("", 80, "TCP")]);
    let slice = |eps: &[Ep]| mk_slice("default", "web", &[("", 8080, "TCP")], eps);
    let (ports, _) = service_ports(
        std::slice::from_ref(&service),
        &[slice(&[
            ("10.244.1.1", true, true, false, "n1"),
            ("10.244.1.2", false, true, true, "n1"),
            ("10.244.1.3", false, false, false, "n1"),
        ])],
    );
    let usable: Vec<String> = ports[0]
        .usable_endpoints(None)
        .iter()
        .map(|e| e.ip.to_string())
        .collect();
    assert_eq!(usable, ["10.244.1.1"]);

    let (ports, _) = service_ports(
        std::slice::from_ref(&service),
        &[slice(&[
            ("10.244.1.2", false, true, true, "n1"),
            ("10.244.1.3", false, false, false, "n1"),
        ])],
    );
    let usable: Vec<String> = ports[0]
        .usable_endpoints(None)
        .iter()
        .map(|e| e.ip.to_string())
        .collect();
    assert_eq!(usable, ["10.244.1.2"]);

    let (ports, _) = service_ports(
        &[service],
        &[slice(&[("10.244.1.3", false, false, false, "n1")])],
    );
    assert!(ports[0].usable_endpoints(None).is_empty());
}

#[test]
fn local_endpoints_are_those_on_this_node() {
    let service = mk_service("default", "web", "10.96.0.20", &[("", 80, "TCP")]);
    let slice = mk_slice(
        "default",
        "web",
        &[("", 8080, "TCP")],
        &[
            ("10.244.1.1", true, true, false, "node-1"),
            ("10.244.2.1", true, true, false, "node-2"),
        ],
    );
    let (ports, _) = service_ports(&[service], &[slice]);
    let local: Vec<String> = ports[0]
        .usable_endpoints(Some("node-2"))
        .iter()
        .map(|e| e.ip.to_string())
        .collect();
    assert_eq!(local, ["10.244.2.1"]);
}

#[test]
fn headless_external_name_and_foreign_proxy_services_are_ignored() {
    let headless = mk_service("default", "db", "None", &[("", 5432, "TCP")]);
    let mut external = mk_service("default", "ext", "", &[("", 80, "TCP")]);
    external.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    let mut foreign = mk_service("default", "other", "10.96.0.30", &[("", 80, "TCP")]);
    foreign.metadata.labels = Some(BTreeMap::from([(
        SERVICE_PROXY_NAME_LABEL.to_owned(),
        "x".to_owned(),
    )]));
    let (ports, skipped) = service_ports(&[headless, external, foreign], &[]);
    assert!(ports.is_empty(), "{ports:?}");
    assert!(skipped.is_empty());
}

#[test]
fn malformed_ports_are_skipped_with_a_reason_naming_the_service() {
    let service = mk_service(
        "shop",
        "cart",
        "10.96.0.40",
        &[
            ("bad-proto", 80, "ICMP"),
            ("bad-port", 70000, "TCP"),
            ("ok", 81, "TCP"),
        ],
    );
    let (ports, skipped) = service_ports(&[service], &[]);
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.port, "ok");
    let reasons: Vec<String> = skipped.iter().map(ToString::to_string).collect();
    assert_eq!(
        reasons,
        [
            "Service shop/cart port bad-proto skipped: unknown protocol \"ICMP\"",
            "Service shop/cart port bad-port skipped: port 70000 is outside 1-65535",
        ]
    );
}

#[test]
fn external_frontends_affinity_and_policies_are_read() {
    let mut service = mk_service("default", "web", "10.96.0.20", &[("", 80, "TCP")]);
    let spec = service.spec.as_mut().unwrap();
    spec.type_ = Some("LoadBalancer".into());
    spec.ports.as_mut().unwrap()[0].node_port = Some(30080);
    spec.external_ips = Some(vec!["192.168.1.200".into()]);
    spec.load_balancer_source_ranges = Some(vec!["192.168.1.0/24".into(), "bogus".into()]);
    spec.session_affinity = Some("ClientIP".into());
    spec.external_traffic_policy = Some("Local".into());
    spec.internal_traffic_policy = Some("Local".into());
    spec.health_check_node_port = Some(32000);
    service.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("192.168.1.250".into()),
                ..LoadBalancerIngress::default()
            }]),
        }),
        ..ServiceStatus::default()
    });
    let (ports, skipped) = service_ports(&[service], &[]);
    let port = &ports[0];
    assert_eq!(port.node_port, Some(30080));
    assert_eq!(
        port.external_ips,
        ["192.168.1.200".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        port.load_balancer_ips,
        ["192.168.1.250".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        port.source_ranges,
        ["192.168.1.0/24".parse::<IpNet>().unwrap()]
    );
    assert_eq!(port.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
    assert!(port.external_local && port.internal_local);
    assert_eq!(port.health_check_node_port, Some(32000));
    assert!(port.has_external());
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].reason.contains("bogus"));
}
