use weft_nft::Family;
use weft_nft::Op;

use super::*;
use crate::compile::{ProxyConfig, compile};
use crate::service::{Endpoint, PortName, Protocol, ServicePort};

fn port(name: &str, cluster_ip: &str, endpoints: &[&str]) -> ServicePort {
    ServicePort {
        name: PortName {
            namespace: "default".into(),
            name: name.into(),
            port: String::new(),
            protocol: Protocol::Tcp,
        },
        port: 80,
        cluster_ips: vec![cluster_ip.parse().unwrap()],
        node_port: None,
        external_ips: vec![],
        load_balancer_ips: vec![],
        source_ranges: vec![],
        affinity_timeout: None,
        external_local: false,
        internal_local: false,
        health_check_node_port: None,
        endpoints: endpoints
            .iter()
            .map(|ip| Endpoint {
                ip: ip.parse().unwrap(),
                port: 8080,
                node: None,
                ready: true,
                serving: true,
                terminating: false,
            })
            .collect(),
    }
}

fn rules(ports: &[ServicePort]) -> Ruleset {
    let config = ProxyConfig {
        node_name: "node-1".into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
    };
    compile(Family::Ip, ports, &config)
}

#[test]
fn the_first_sync_recreates_the_table() {
    let tx = diff(None, &rules(&[port("a", "10.96.0.1", &["10.244.1.1"])]));
    assert!(
        matches!(tx.ops()[0], Op::AddTable(_)),
        "{:?}",
        &tx.ops()[..2]
    );
    assert!(tx.ops().iter().any(|op| matches!(op, Op::DeleteTable(_))));
}

#[test]
fn the_same_state_again_commits_nothing() {
    let state = rules(&[port("a", "10.96.0.1", &["10.244.1.1"])]);
    assert!(diff(Some(&state), &state).is_empty());
}

#[test]
fn an_endpoint_change_touches_only_that_service() {
    let before = rules(&[
        port("a", "10.96.0.1", &["10.244.1.1", "10.244.1.2"]),
        port("b", "10.96.0.2", &["10.244.2.1"]),
    ]);
    let after = rules(&[
        port("a", "10.96.0.1", &["10.244.1.1", "10.244.1.3"]),
        port("b", "10.96.0.2", &["10.244.2.1"]),
    ]);
    let tx = diff(Some(&before), &after);
    for op in tx.ops() {
        let touches_a = match op {
            Op::AddElements { set, .. } | Op::DeleteElements { set, .. } => {
                set.contains("default/a/") || set == "hairpin"
            }
            Op::FlushChain(_, chain) => chain.contains("default/a/"),
            Op::AddRule(_, rule) => rule.chain.contains("default/a/"),
            _ => false,
        };
        assert!(touches_a, "unexpected operation {op:?}");
    }
    assert!(!tx.is_empty());
}

#[test]
fn a_removed_service_loses_its_elements_before_its_chain_and_map_go() {
    let before = rules(&[port("a", "10.96.0.1", &["10.244.1.1"])]);
    let after = rules(&[]);
    let tx = diff(Some(&before), &after);
    let position = |wanted: &dyn Fn(&Op) -> bool| tx.ops().iter().position(wanted).unwrap();
    let element_gone =
        position(&|op| matches!(op, Op::DeleteElements { set, .. } if set == "service-ips"));
    let chain_gone =
        position(&|op| matches!(op, Op::DeleteChain(_, chain) if chain == "svc-default/a/tcp/80"));
    let map_gone =
        position(&|op| matches!(op, Op::DeleteSet(_, set) if set == "eps-default/a/tcp/80"));
    let chain_flushed =
        position(&|op| matches!(op, Op::FlushChain(_, chain) if chain == "svc-default/a/tcp/80"));
    assert!(
        element_gone < chain_gone,
        "a vmap element still points at the chain"
    );
    assert!(chain_flushed < map_gone, "a rule still uses the map");
}
