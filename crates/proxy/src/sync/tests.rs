use weft_nft::Family;
use weft_nft::Op;

use super::*;
use crate::compile::{BALANCE_BY_RULES_UP_TO, ProxyConfig, compile};
use crate::service::{Protocol, ServicePort};

fn port(name: &str, cluster_ip: &str, endpoints: &[&str]) -> ServicePort {
    crate::testing::cluster_ip_port(name, Protocol::Tcp, cluster_ip, endpoints, None)
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
    let a_ip = Value::Ipv4("10.96.0.1".parse().unwrap());
    for op in tx.ops() {
        let touches_a = match op {
            Op::AddElements { set, elements, .. } | Op::DeleteElements { set, elements, .. } => {
                set.contains("default/a/")
                    || set == "hairpin"
                    || (set.starts_with("endpoint")
                        && elements.iter().all(|e| e.key.first() == Some(&a_ip)))
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
    // Enough endpoints for a map of its own.
    let endpoints: Vec<String> = (0..=BALANCE_BY_RULES_UP_TO)
        .map(|i| format!("10.244.1.{}", 10 + i))
        .collect();
    let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let before = rules(&[port("a", "10.96.0.1", &endpoints)]);
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

fn keys(values: &[u32]) -> Vec<Element> {
    values
        .iter()
        .map(|value| Element::key(vec![Value::Integer(*value)]))
        .collect()
}

#[test]
fn element_changes_are_the_set_differences_whatever_moved() {
    // (old, new, stale, fresh)
    type Case = (
        &'static [u32],
        &'static [u32],
        &'static [u32],
        &'static [u32],
    );
    let cases: [Case; 6] = [
        (&[1, 2, 3, 4, 5], &[1, 2, 9, 4, 5], &[3], &[9]),
        (&[1, 2, 3], &[1, 2, 3], &[], &[]),
        (&[1, 2, 3], &[3, 2, 1], &[], &[]),
        (&[1, 2, 3], &[], &[1, 2, 3], &[]),
        (&[], &[4, 5], &[], &[4, 5]),
        (&[1, 2, 3, 4], &[1, 4, 5, 2], &[3], &[5]),
    ];
    for (old, new, stale, fresh) in cases {
        assert_eq!(
            changes(&keys(old), &keys(new)),
            (keys(stale), keys(fresh)),
            "{old:?} -> {new:?}"
        );
    }
}

#[test]
fn a_removed_endpoint_is_reported_gone_and_a_moved_one_is_not() {
    let before = rules(&[
        port("a", "10.96.0.1", &["10.244.1.1", "10.244.1.2"]),
        port("b", "10.96.0.2", &["10.244.2.1"]),
    ]);
    let after = rules(&[
        port("a", "10.96.0.1", &["10.244.1.1"]),
        port("b", "10.96.0.2", &["10.244.1.2", "10.244.2.1"]),
        port("c", "10.96.0.3", &["10.244.3.1"]),
    ]);
    assert_eq!(gone_endpoints(&before, &after), Vec::<IpAddr>::new());
    let after = rules(&[port("b", "10.96.0.2", &["10.244.2.1"])]);
    assert_eq!(
        gone_endpoints(&before, &after),
        [
            "10.244.1.1".parse::<IpAddr>().unwrap(),
            "10.244.1.2".parse().unwrap()
        ]
    );
}
