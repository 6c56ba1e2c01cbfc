//! The whole control plane over an object set: allocation, node CIDRs,
//! EndpointSlices following Pods, idempotence.

use std::collections::BTreeMap;

use super::*;
use crate::model::{EndpointSlice, Service};
use crate::testing::{mk_node, mk_pod, mk_service, set_cluster_ip};

fn objects(list: Vec<Object>) -> BTreeMap<ObjectKey, Object> {
    list.into_iter().map(|o| (o.key(), o)).collect()
}

fn service<'a>(objs: &'a BTreeMap<ObjectKey, Object>, ns: &str, name: &str) -> &'a Service {
    match objs.get(&ObjectKey::new(Kind::Service, ns, name)) {
        Some(Object::Service(s)) => s,
        other => panic!("no service {ns}/{name}: {other:?}"),
    }
}

fn slice_ips(objs: &BTreeMap<ObjectKey, Object>, ns: &str, svc: &str) -> Vec<String> {
    objs.values()
        .filter_map(|o| match o {
            Object::EndpointSlice(s) => Some(s),
            _ => None,
        })
        .filter(|s: &&EndpointSlice| {
            s.metadata.namespace.as_deref() == Some(ns)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(crate::model::SERVICE_NAME_LABEL))
                    .map(String::as_str)
                    == Some(svc)
        })
        .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.clone()))
        .collect()
}

fn cluster_ip(svc: &Service) -> Option<&str> {
    svc.spec.as_ref()?.cluster_ip.as_deref()
}

fn node_ports(svc: &Service) -> Vec<i32> {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| p.node_port)
        .collect()
}

#[test]
fn services_get_cluster_ips_and_dns_gets_its_reserved_one() {
    let mut objs = objects(vec![
        mk_service("default", "web", &[("app", "web")], &[("", 80, "")]).into(),
        mk_service(
            "kube-system",
            "kube-dns",
            &[("k8s-app", "kube-dns")],
            &[("dns", 53, "")],
        )
        .into(),
    ]);
    reconcile(&mut objs, &ClusterConfig::default()).expect("reconcile");
    assert_eq!(
        cluster_ip(service(&objs, "default", "web")),
        Some("10.96.0.2")
    );
    assert_eq!(
        cluster_ip(service(&objs, "kube-system", "kube-dns")),
        Some("10.96.0.10")
    );
    let web = service(&objs, "default", "web");
    let spec = web.spec.clone().unwrap_or_default();
    assert_eq!(spec.cluster_ips, Some(vec!["10.96.0.2".to_owned()]));
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(node_ports(web).is_empty());
}

#[test]
fn node_port_services_get_node_ports_and_keep_given_ones() {
    let mut web = mk_service(
        "default",
        "web",
        &[("app", "web")],
        &[("http", 80, ""), ("https", 443, "")],
    );
    if let Some(spec) = web.spec.as_mut() {
        spec.type_ = Some("NodePort".to_owned());
        if let Some(p) = spec.ports.as_mut().and_then(|p| p.get_mut(1)) {
            p.node_port = Some(30000);
        }
    }
    let mut objs = objects(vec![web.into()]);
    reconcile(&mut objs, &ClusterConfig::default()).expect("reconcile");
    assert_eq!(node_ports(service(&objs, "default", "web")), [30001, 30000]);
}

#[test]
fn headless_services_keep_cluster_ip_none() {
    let mut db = mk_service("default", "db", &[("app", "db")], &[("", 5432, "")]);
    set_cluster_ip(&mut db, "None");
    let mut objs = objects(vec![db.into()]);
    reconcile(&mut objs, &ClusterConfig::default()).expect("reconcile");
    assert_eq!(cluster_ip(service(&objs, "default", "db")), Some("None"));
}

#[test]
fn nodes_without_pod_cidr_get_the_next_free_subnet() {
    let mut objs = objects(vec![
        mk_node("node-a", "10.244.0.0/24").into(),
        mk_node("node-b", "").into(),
        mk_node("node-c", "").into(),
    ]);
    reconcile(&mut objs, &ClusterConfig::default()).expect("reconcile");
    let cidr = |name: &str| match objs.get(&ObjectKey::new(Kind::Node, "", name)) {
        Some(Object::Node(n)) => n.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
        _ => None,
    };
    assert_eq!(cidr("node-a").as_deref(), Some("10.244.0.0/24"));
    assert_eq!(cidr("node-b").as_deref(), Some("10.244.1.0/24"));
    assert_eq!(cidr("node-c").as_deref(), Some("10.244.2.0/24"));
}

#[test]
fn endpoint_slices_follow_pods_and_go_with_their_service() {
    let web = mk_service("default", "web", &[("app", "web")], &[("", 80, "")]);
    let mut objs = objects(vec![
        web.into(),
        mk_pod("default", "a", &[("app", "web")], "10.244.0.2").into(),
        mk_pod("default", "b", &[("app", "web")], "10.244.0.3").into(),
    ]);
    let cfg = ClusterConfig::default();
    reconcile(&mut objs, &cfg).expect("reconcile");
    assert_eq!(
        slice_ips(&objs, "default", "web"),
        ["10.244.0.2", "10.244.0.3"]
    );

    objs.remove(&ObjectKey::new(Kind::Pod, "default", "a"));
    reconcile(&mut objs, &cfg).expect("reconcile");
    assert_eq!(slice_ips(&objs, "default", "web"), ["10.244.0.3"]);

    objs.remove(&ObjectKey::new(Kind::Service, "default", "web"));
    reconcile(&mut objs, &cfg).expect("reconcile");
    assert!(!objs.keys().any(|k| k.kind == Kind::EndpointSlice));
}

#[test]
fn hand_written_endpoint_slices_are_left_alone() {
    let mut slice = EndpointSlice {
        address_type: "IPv4".to_owned(),
        ..EndpointSlice::default()
    };
    slice.metadata.name = Some("external-db-1".to_owned());
    slice.metadata.namespace = Some("default".to_owned());
    let mut objs = objects(vec![slice.clone().into()]);
    reconcile(&mut objs, &ClusterConfig::default()).expect("reconcile");
    assert_eq!(
        objs.get(&ObjectKey::new(
            Kind::EndpointSlice,
            "default",
            "external-db-1"
        )),
        Some(&Object::EndpointSlice(slice))
    );
}

#[test]
fn reconciling_twice_changes_nothing_the_second_time() {
    let mut objs = objects(vec![
        mk_service("default", "web", &[("app", "web")], &[("", 80, "")]).into(),
        mk_pod("default", "a", &[("app", "web")], "10.244.0.2").into(),
        mk_node("node-a", "").into(),
    ]);
    let cfg = ClusterConfig::default();
    reconcile(&mut objs, &cfg).expect("reconcile");
    let once = objs.clone();
    reconcile(&mut objs, &cfg).expect("reconcile");
    assert_eq!(objs, once);
    assert!(objs.contains_key(&ObjectKey::new(Kind::Namespace, "", "kube-system")));
}
