//! Index lookups, relists and change notifications, fed with `testing`
//! builders.

use std::net::IpAddr;
use std::thread;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::testing::{
    mk_ingress, mk_node, mk_pod, mk_service, mk_tls_secret, set_cluster_ip, set_phase,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn slice(ns: &str, name: &str, service: &str) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            labels: Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".to_owned(),
        endpoints: vec![],
        ports: None,
    }
}

fn names<'a, T: 'a + k8s_openapi::Metadata<Ty = ObjectMeta>>(
    items: impl Iterator<Item = &'a T>,
) -> Vec<String> {
    items
        .map(|o| o.metadata().name.clone().unwrap_or_default())
        .collect()
}

#[test]
fn services_are_found_by_cluster_ip_until_the_ip_changes() {
    let mut index = Index::new();
    let mut svc = mk_service("default", "web", &[("app", "web")], &[("", 80, "8080")]);
    set_cluster_ip(&mut svc, "10.96.0.20");
    index.upsert(svc.clone().into());
    let found = index
        .service_by_cluster_ip(ip("10.96.0.20"))
        .expect("service by ip");
    assert_eq!(found.metadata.name.as_deref(), Some("web"));

    set_cluster_ip(&mut svc, "10.96.0.21");
    index.upsert(svc.into());
    assert!(index.service_by_cluster_ip(ip("10.96.0.20")).is_none());
    assert!(index.service_by_cluster_ip(ip("10.96.0.21")).is_some());
}

#[test]
fn pods_are_found_by_ip_preferring_the_live_one() {
    let mut index = Index::new();
    let mut old = mk_pod("default", "old", &[], "10.244.1.5");
    set_phase(&mut old, "Succeeded");
    index.upsert(old.into());
    index.upsert(mk_pod("default", "new", &[], "10.244.1.5").into());
    let pod = index.pod_by_ip(ip("10.244.1.5")).expect("pod by ip");
    assert_eq!(pod.metadata.name.as_deref(), Some("new"));
    assert!(index.pod_by_ip(ip("10.244.1.6")).is_none());
}

#[test]
fn endpoint_slices_are_found_by_their_service_label() {
    let mut index = Index::new();
    index.upsert(slice("default", "web-0", "web").into());
    index.upsert(slice("default", "web-1", "web").into());
    index.upsert(slice("default", "api-0", "api").into());
    index.upsert(slice("other", "web-0", "web").into());
    assert_eq!(
        names(index.endpoint_slices_for("default", "web")),
        ["web-0", "web-1"]
    );
    index.remove(&ObjectKey::new(Kind::EndpointSlice, "default", "web-0"));
    assert_eq!(
        names(index.endpoint_slices_for("default", "web")),
        ["web-1"]
    );
}

#[test]
fn ingress_rules_match_exact_host_then_wildcard_then_any_host() {
    let mut index = Index::new();
    index.upsert(mk_ingress("default", "any", "", "/", "fallback", 80).into());
    index.upsert(mk_ingress("default", "wild", "*.example.com", "/", "wild", 80).into());
    index.upsert(mk_ingress("default", "exact", "shop.example.com", "/", "shop", 80).into());
    let services = |host: &str| -> Vec<String> {
        index
            .ingress_rules_for_host(host)
            .iter()
            .map(|r| r.ingress.metadata.name.clone().unwrap_or_default())
            .collect()
    };
    assert_eq!(services("shop.example.com"), ["exact", "wild", "any"]);
    assert_eq!(services("Blog.Example.com"), ["wild", "any"]);
    assert_eq!(services("a.b.example.com"), ["any"]);
}

#[test]
fn nodes_and_secrets_are_found_by_name() {
    let mut index = Index::new();
    index.upsert(mk_node("node-1", "10.244.1.0/24").into());
    index.upsert(mk_tls_secret("default", "tls", "CERT", "KEY").into());
    let node = index.node("node-1").expect("node");
    assert_eq!(
        node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
        Some("10.244.1.0/24")
    );
    assert!(index.secret("default", "tls").is_some());
    assert!(index.secret("other", "tls").is_none());
    assert_eq!(names(index.nodes()), ["node-1"]);
}

#[test]
fn a_relist_removes_objects_that_are_gone_and_keeps_other_kinds() {
    let mut index = Index::new();
    index.upsert(mk_pod("default", "a", &[], "10.244.1.1").into());
    index.upsert(mk_pod("default", "b", &[], "10.244.1.2").into());
    index.upsert(mk_node("node-1", "").into());
    let changed = index.replace_kind(
        Kind::Pod,
        vec![mk_pod("default", "b", &[], "10.244.1.2").into()],
    );
    assert!(changed);
    assert_eq!(names(index.pods()), ["b"]);
    assert!(index.pod_by_ip(ip("10.244.1.1")).is_none());
    assert!(index.node("node-1").is_some());
    assert!(!index.replace_kind(
        Kind::Pod,
        vec![mk_pod("default", "b", &[], "10.244.1.2").into()]
    ));
}

#[test]
fn writing_the_same_object_again_wakes_nobody() {
    let cluster = Cluster::new();
    let pod: Object = mk_pod("default", "a", &[], "10.244.1.1").into();
    cluster.update(|ix| ix.upsert(pod.clone()));
    let sub = cluster.subscribe();
    assert!(!cluster.update(|ix| ix.upsert(pod.clone())));
    assert!(!sub.has_changed());
}

#[test]
fn ten_thousand_writes_in_one_batch_wake_a_reconciler_once() {
    let cluster = Cluster::new();
    let mut sub = cluster.subscribe();
    cluster.update(|ix| {
        let mut changed = false;
        for i in 0..10_000u32 {
            let ip = format!("10.244.{}.{}", i / 250, i % 250 + 1);
            changed |= ix.upsert(mk_pod("default", &format!("p{i}"), &[], &ip).into());
        }
        changed
    });
    assert_eq!(sub.wait_timeout(Duration::from_millis(10)), Some(1));
    assert_eq!(sub.wait_timeout(Duration::from_millis(10)), None);
    assert_eq!(cluster.read().pods().count(), 10_000);
}

#[test]
fn a_reconciler_thread_sees_the_last_state_after_a_burst() {
    let cluster = Cluster::new();
    let mut sub = cluster.subscribe();
    let reader = {
        let cluster = cluster.clone();
        thread::spawn(move || {
            let mut recomputes = 0;
            loop {
                if sub.wait_timeout(Duration::from_secs(5)).is_none() {
                    return (recomputes, usize::MAX);
                }
                recomputes += 1;
                let pods = cluster.read().pods().count();
                thread::sleep(Duration::from_millis(10));
                if pods == 10_000 {
                    return (recomputes, pods);
                }
            }
        })
    };
    for i in 0..10_000u32 {
        cluster.update(|ix| ix.upsert(mk_pod("default", &format!("p{i}"), &[], "").into()));
    }
    let (recomputes, pods) = reader.join().expect("reader thread");
    assert_eq!(pods, 10_000);
    assert!(recomputes < 100, "{recomputes} recomputes for 10000 writes");
}
