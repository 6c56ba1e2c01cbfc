//! ClusterIP, NodePort and pod CIDR allocation, reservations and exhaustion.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::*;

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().expect("test IP")).collect()
}

#[test]
fn cluster_ips_start_after_the_reserved_kubernetes_address() {
    let cfg = ClusterConfig::default();
    assert_eq!(
        allocate_cluster_ip(&cfg, "default", "web", &ips(&[])),
        Ok(Ipv4Addr::new(10, 96, 0, 2))
    );
    assert_eq!(
        allocate_cluster_ip(&cfg, "default", "web", &ips(&["10.96.0.2", "10.96.0.3"])),
        Ok(Ipv4Addr::new(10, 96, 0, 4))
    );
}

#[test]
fn kubernetes_and_dns_services_get_their_reserved_addresses() {
    let cfg = ClusterConfig::default();
    assert_eq!(
        allocate_cluster_ip(&cfg, "default", "kubernetes", &ips(&[])),
        Ok(Ipv4Addr::new(10, 96, 0, 1))
    );
    assert_eq!(
        allocate_cluster_ip(&cfg, "kube-system", "kube-dns", &ips(&[])),
        Ok(Ipv4Addr::new(10, 96, 0, 10))
    );
}

#[test]
fn ordinary_services_never_get_the_dns_address() {
    let cfg = ClusterConfig::default();
    let used: BTreeSet<IpAddr> = (2..=9).map(|i| IpAddr::from([10, 96, 0, i])).collect();
    assert_eq!(
        allocate_cluster_ip(&cfg, "default", "web", &used),
        Ok(Ipv4Addr::new(10, 96, 0, 11))
    );
}

#[test]
fn a_full_service_cidr_is_an_error_naming_the_cidr() {
    let cfg = ClusterConfig {
        service_cidr: "10.96.0.0/30".parse().expect("cidr"),
        ..ClusterConfig::default()
    };
    let err = allocate_cluster_ip(&cfg, "default", "web", &ips(&["10.96.0.2"])).expect_err("full");
    assert_eq!(
        err.to_string(),
        "no free ClusterIP left in the service CIDR 10.96.0.0/30"
    );
}

#[test]
fn node_ports_are_the_lowest_free_in_range() {
    let cfg = ClusterConfig::default();
    assert_eq!(allocate_node_port(&cfg, &BTreeSet::new()), Ok(30000));
    assert_eq!(allocate_node_port(&cfg, &[30000, 30001].into()), Ok(30002));
    let all: BTreeSet<u16> = (30000..=32767).collect();
    let err = allocate_node_port(&cfg, &all).expect_err("full");
    assert_eq!(err.to_string(), "no free NodePort left in 30000-32767");
}

#[test]
fn node_subnets_are_24s_of_the_cluster_cidr_skipping_used_ones() {
    let cfg = ClusterConfig::default();
    let net = |s: &str| -> Ipv4Net { s.parse().expect("cidr") };
    assert_eq!(allocate_pod_cidr(&cfg, &[]), Ok(net("10.244.0.0/24")));
    assert_eq!(
        allocate_pod_cidr(&cfg, &[net("10.244.0.0/24"), net("10.244.2.0/24")]),
        Ok(net("10.244.1.0/24"))
    );
    // A larger subnet taken by hand blocks every /24 inside it.
    assert_eq!(
        allocate_pod_cidr(&cfg, &[net("10.244.0.0/23")]),
        Ok(net("10.244.2.0/24"))
    );
}

#[test]
fn an_exhausted_cluster_cidr_is_an_error() {
    let cfg = ClusterConfig {
        cluster_cidr: "10.244.0.0/23".parse().expect("cidr"),
        ..ClusterConfig::default()
    };
    let used: Vec<Ipv4Net> = vec![
        "10.244.0.0/24".parse().expect("cidr"),
        "10.244.1.0/24".parse().expect("cidr"),
    ];
    let err = allocate_pod_cidr(&cfg, &used).expect_err("full");
    assert_eq!(
        err.to_string(),
        "no free /24 pod subnet left in the cluster CIDR 10.244.0.0/23"
    );
}
