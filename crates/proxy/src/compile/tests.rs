use std::net::IpAddr;

use weft_nft::expr::Expr;
use weft_nft::{ElementData, Family, Value, Verdict};

use super::*;
use crate::service::{Endpoint, PortName, Protocol, ServicePort};

fn ep(ip: &str, port: u16, node: &str) -> Endpoint {
    Endpoint::ready(ip.parse().unwrap(), port, Some(node.to_owned()))
}

fn web(endpoints: Vec<Endpoint>) -> ServicePort {
    let name = PortName::new("default", "web", "http", Protocol::Tcp);
    ServicePort::new(name, 80, vec!["10.96.0.20".parse().unwrap()], endpoints)
}

fn config() -> ProxyConfig {
    ProxyConfig {
        node_name: "node-1".into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
    }
}

fn verdict_of(rs: &Ruleset, set: &str, key: &[Value]) -> Option<Verdict> {
    rs.elements[set]
        .iter()
        .find(|element| element.key == key)
        .and_then(|element| match &element.data {
            Some(ElementData::Verdict(verdict)) => Some(verdict.clone()),
            _ => None,
        })
}

/// The endpoints the rules of `chain` DNAT to (one rule per endpoint), from
/// their address and port immediates.
fn endpoints_of(rs: &Ruleset, chain: &str) -> Vec<(IpAddr, u16)> {
    rs.rules[chain]
        .iter()
        .filter(|rule| rule.exprs.iter().any(|e| matches!(e, Expr::Nat { .. })))
        .map(|rule| {
            let immediates: Vec<&Vec<u8>> = rule
                .exprs
                .iter()
                .filter_map(|expr| match expr {
                    Expr::Immediate { data, .. } => Some(data),
                    _ => None,
                })
                .collect();
            let addr = match immediates[0].len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(immediates[0].as_slice()).unwrap()),
                _ => IpAddr::from(<[u8; 16]>::try_from(immediates[0].as_slice()).unwrap()),
            };
            let port = u16::from_be_bytes(immediates[1][..2].try_into().unwrap());
            (addr, port)
        })
        .collect()
}

/// The endpoints traffic to `cluster_ip`:80/TCP reaches: from the shared
/// maps when the ClusterIP is balanced by them (checking the count), else
/// from the chain `@service-ips` sends it to.
fn endpoints_for(rs: &Ruleset, cluster_ip: &str) -> Vec<(IpAddr, u16)> {
    let key = vec![ip(cluster_ip), Value::TCP, Value::Port(80)];
    let count = rs.elements[ENDPOINT_COUNTS]
        .iter()
        .find(|element| element.key == key)
        .map(|element| element.data.clone());
    let Some(count) = count else {
        return match verdict_of(rs, "service-ips", &key) {
            Some(Verdict::Goto(chain)) => endpoints_of(rs, &chain),
            other => panic!("{cluster_ip} dispatches to {other:?}"),
        };
    };
    let mut found: Vec<(u32, (IpAddr, u16))> = rs.elements[ENDPOINTS]
        .iter()
        .filter(|element| element.key[..3] == key[..])
        .map(|element| match (&element.key[3], &element.data) {
            (Value::Mark(index), Some(ElementData::Value(value))) => {
                let endpoint = match value.as_slice() {
                    [Value::Ipv4(ip), Value::Port(port)] => (IpAddr::V4(*ip), *port),
                    [Value::Ipv6(ip), Value::Port(port)] => (IpAddr::V6(*ip), *port),
                    other => panic!("{other:?}"),
                };
                (*index, endpoint)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    found.sort();
    let indexes: Vec<u32> = found.iter().map(|(index, _)| *index).collect();
    assert_eq!(indexes, (0..indexes.len() as u32).collect::<Vec<_>>());
    assert_eq!(
        count,
        Some(ElementData::Value(
            vec![Value::Mark(found.len() as u32)].into()
        ))
    );
    found.into_iter().map(|(_, endpoint)| endpoint).collect()
}

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn ip(text: &str) -> Value {
    match text.parse::<IpAddr>().unwrap() {
        IpAddr::V4(ip) => Value::Ipv4(ip),
        IpAddr::V6(ip) => Value::Ipv6(ip),
    }
}

const SVC: &str = "svc-default/web/tcp/http";
const EXT: &str = "ext-default/web/tcp/http";
const EPS: &str = "eps-default/web/tcp/http";

#[test]
fn cluster_ip_dispatches_by_one_map_lookup_and_draws_from_the_shared_endpoint_maps() {
    let rs = compile(
        Family::Ip,
        &[web(vec![
            ep("10.244.1.5", 8080, "node-1"),
            ep("10.244.2.5", 8080, "node-2"),
        ])],
        &config(),
    );
    assert_eq!(rs.table.to_string(), "table ip weft");
    assert_eq!(
        endpoints_for(&rs, "10.96.0.20"),
        [(addr("10.244.1.5"), 8080), (addr("10.244.2.5"), 8080)]
    );
    assert!(
        verdict_of(
            &rs,
            "service-ips",
            &[ip("10.96.0.20"), Value::TCP, Value::Port(80)]
        )
        .is_none(),
        "found by its @endpoint-counts lookup"
    );
    assert!(
        !rs.chains.contains_key(SVC),
        "no chain or rule per Service: an endpoint change is a map change"
    );
    assert!(
        rs.sets.keys().all(|name| !name.starts_with("eps-")),
        "no set per Service: the kernel finds sets by a linear walk"
    );
    let rules = &rs.rules[BALANCE_CHAIN];
    assert!(rules[0].exprs.contains(&Expr::jump(MARK_FOR_MASQUERADE)));
    assert!(
        rules.iter().any(|rule| {
            rule.exprs
                .contains(&Expr::cmp_eq(Reg::R4, 2u32.to_ne_bytes()))
                && rule
                    .exprs
                    .iter()
                    .any(|e| matches!(e, Expr::Numgen { modulus: 2, .. }))
        }),
        "two endpoints: each takes 1 in 2"
    );
    assert!(
        rs.elements["cluster-ips"]
            .iter()
            .any(|e| e.key == [ip("10.96.0.20")])
    );
    assert_eq!(rs.elements["hairpin"].len(), 2);
    assert!(rs.elements["no-endpoint-services"].is_empty());
}

#[test]
fn a_service_with_external_frontends_picks_with_a_rule_per_endpoint() {
    let mut port = web(vec![
        ep("10.244.1.5", 8080, "node-1"),
        ep("10.244.2.5", 8080, "node-2"),
    ]);
    port.node_port = Some(30080);
    let rs = compile(Family::Ip, &[port], &config());
    assert_eq!(
        verdict_of(
            &rs,
            "service-ips",
            &[ip("10.96.0.20"), Value::TCP, Value::Port(80)]
        ),
        Some(Verdict::Goto(SVC.into()))
    );
    assert!(rs.elements[ENDPOINT_COUNTS].is_empty());
    assert_eq!(
        endpoints_of(&rs, SVC),
        [(addr("10.244.1.5"), 8080), (addr("10.244.2.5"), 8080)]
    );
    let rules = &rs.rules[SVC];
    assert_eq!(rules.len(), 3, "masquerade check + one rule per endpoint");
    assert!(rules[0].exprs.contains(&Expr::jump(MARK_FOR_MASQUERADE)));
    assert!(
        rules[1]
            .exprs
            .iter()
            .any(|e| matches!(e, Expr::Numgen { modulus: 2, .. })),
        "the first endpoint takes 1 in 2"
    );
    assert!(
        !rules[2]
            .exprs
            .iter()
            .any(|e| matches!(e, Expr::Numgen { .. })),
        "the last endpoint takes the rest"
    );
}

#[test]
fn a_service_without_endpoints_is_rejected_not_dispatched() {
    let rs = compile(Family::Ip, &[web(vec![])], &config());
    assert_eq!(
        verdict_of(
            &rs,
            "no-endpoint-services",
            &[ip("10.96.0.20"), Value::TCP, Value::Port(80)]
        ),
        Some(Verdict::Goto(REJECT_CHAIN.into()))
    );
    assert!(rs.elements["service-ips"].is_empty());
    assert!(!rs.chains.contains_key(SVC));
}

#[test]
fn rejected_tcp_gets_a_reset_and_everything_else_port_unreachable_in_both_families() {
    // An ICMP error reaching a connecting TCP socket while its owner holds
    // the lock is a soft error: an IPv6 client on the node waited for its
    // SYN retransmission (1 s) instead of being refused at once.
    for family in [Family::Ip, Family::Ip6] {
        let rs = compile(family, &[], &config());
        let rules: Vec<&Vec<Expr>> = rs.rules[REJECT_CHAIN].iter().map(|r| &r.exprs).collect();
        assert_eq!(
            rules,
            [
                &vec![
                    Expr::l4proto(Reg::R0),
                    Expr::cmp_eq(Reg::R0, [6u8]),
                    Expr::Reject(RejectKind::TcpReset),
                ],
                &vec![Expr::Reject(RejectKind::PortUnreachable)],
            ],
            "{family:?}"
        );
        // Unknown ports of a ClusterIP are refused the same way.
        let unknown = &rs.rules["cluster-ips-check"][0].exprs;
        assert_eq!(
            unknown.last(),
            Some(&Expr::goto(REJECT_CHAIN)),
            "{family:?}"
        );
    }
}

#[test]
fn nodeport_with_cluster_policy_masquerades_then_joins_the_service_chain() {
    let mut port = web(vec![ep("10.244.2.5", 8080, "node-2")]);
    port.node_port = Some(30080);
    port.external_ips = vec!["192.168.1.200".parse().unwrap()];
    let rs = compile(Family::Ip, &[port], &config());
    assert_eq!(
        verdict_of(&rs, "service-nodeports", &[Value::TCP, Value::Port(30080)]),
        Some(Verdict::Goto(EXT.into()))
    );
    assert_eq!(
        verdict_of(
            &rs,
            "service-ips",
            &[ip("192.168.1.200"), Value::TCP, Value::Port(80)]
        ),
        Some(Verdict::Goto(EXT.into()))
    );
    let rules = &rs.rules[EXT];
    assert_eq!(rules[0].exprs, vec![Expr::jump(MARK_FOR_MASQUERADE)]);
    assert_eq!(rules[1].exprs, vec![Expr::goto(SVC)]);
}

#[test]
fn local_external_policy_uses_only_local_endpoints_and_keeps_the_source() {
    let mut port = web(vec![
        ep("10.244.1.5", 8080, "node-1"),
        ep("10.244.2.5", 8080, "node-2"),
    ]);
    port.node_port = Some(30080);
    port.external_local = true;
    let rs = compile(Family::Ip, &[port.clone()], &config());
    let rules = &rs.rules[EXT];
    // Only this node's own traffic is masqueraded, never an external client.
    for rule in rules {
        if rule.exprs.contains(&Expr::jump(MARK_FOR_MASQUERADE)) {
            assert!(
                rule.exprs.contains(&Expr::FibSaddrType { dreg: Reg::R0 }),
                "Local policy masquerades external clients: {rule:?}"
            );
        }
    }
    assert_eq!(endpoints_of(&rs, EXT), [(addr("10.244.1.5"), 8080)]);

    // On a node without local endpoints, external traffic is dropped (after
    // the ext chain let pods and the node itself through).
    let other = ProxyConfig {
        node_name: "node-3".into(),
        ..config()
    };
    let rs = compile(Family::Ip, &[port], &other);
    assert_eq!(
        verdict_of(
            &rs,
            "no-endpoint-nodeports",
            &[Value::TCP, Value::Port(30080)]
        ),
        Some(Verdict::Drop)
    );
    assert_eq!(
        verdict_of(&rs, "service-nodeports", &[Value::TCP, Value::Port(30080)]),
        Some(Verdict::Goto(EXT.into()))
    );
    assert!(endpoints_of(&rs, EXT).is_empty());
    assert_eq!(
        verdict_of(
            &rs,
            "service-ips",
            &[ip("10.96.0.20"), Value::TCP, Value::Port(80)]
        ),
        Some(Verdict::Goto(SVC.into())),
        "internal traffic still reaches every endpoint"
    );
}

#[test]
fn local_external_policy_never_passes_external_clients_through_the_masquerading_service_chain() {
    // All endpoints local: the external and internal endpoint sets are equal.
    let mut port = web(vec![ep("10.244.1.5", 8080, "node-1")]);
    port.node_port = Some(30080);
    port.external_local = true;
    let rs = compile(Family::Ip, &[port], &config());
    let rules = &rs.rules[EXT];
    // Pods (the cluster CIDR) and the node itself (fib saddr type local)
    // short-circuit to the service chain, as kube-proxy does; every rule
    // that goes there or masquerades names such a source.
    let pods = matches::ip_saddr_in("10.244.0.0/16".parse().unwrap(), false, Reg::R0);
    assert_eq!(rules[0].exprs, [pods, vec![Expr::goto(SVC)]].concat());
    for rule in rules {
        if rule.exprs.contains(&Expr::goto(SVC))
            || rule.exprs.contains(&Expr::jump(MARK_FOR_MASQUERADE))
        {
            assert!(rule.exprs.len() > 1, "unconditional: {rule:?}");
        }
    }
    assert_eq!(endpoints_of(&rs, EXT), [(addr("10.244.1.5"), 8080)]);
}

#[test]
fn local_external_policy_short_circuits_to_every_endpoint_when_internal_is_local_too() {
    let mut port = web(vec![
        ep("10.244.1.5", 8080, "node-1"),
        ep("10.244.2.5", 8080, "node-2"),
    ]);
    port.node_port = Some(30080);
    port.external_local = true;
    port.internal_local = true;
    let rs = compile(Family::Ip, &[port], &config());
    let cluster = format!("{SVC}__cluster");
    assert!(
        rs.rules[EXT]
            .iter()
            .any(|rule| rule.exprs.contains(&Expr::goto(&cluster))),
        "{:?}",
        rs.rules[EXT]
    );
    assert_eq!(
        endpoints_of(&rs, &cluster),
        [(addr("10.244.1.5"), 8080), (addr("10.244.2.5"), 8080)]
    );
}

#[test]
fn local_internal_policy_without_local_endpoints_rejects_cluster_ip_traffic() {
    let mut port = web(vec![ep("10.244.2.5", 8080, "node-2")]);
    port.internal_local = true;
    let rs = compile(Family::Ip, &[port], &config());
    assert_eq!(
        verdict_of(
            &rs,
            "no-endpoint-services",
            &[ip("10.96.0.20"), Value::TCP, Value::Port(80)]
        ),
        Some(Verdict::Goto(REJECT_CHAIN.into()))
    );
}

#[test]
fn session_affinity_uses_a_timed_client_set_and_chain_per_endpoint() {
    let mut port = web(vec![
        ep("10.244.1.5", 8080, "node-1"),
        ep("10.244.2.5", 8080, "node-2"),
    ]);
    port.affinity_timeout = Some(60);
    let rs = compile(Family::Ip, &[port], &config());
    let clients = format!("{EPS}-10.244.1.5-8080-clients");
    assert_eq!(rs.sets[&clients].timeout, Some(Duration::from_secs(60)));
    assert!(rs.sets[&clients].dynamic);
    assert!(rs.chains.contains_key(&format!("{EPS}-10.244.1.5-8080")));
    assert_eq!(
        verdict_of(&rs, &format!("{EPS}-pick"), &[Value::Integer(1)]),
        Some(Verdict::Goto(format!("{EPS}-10.244.2.5-8080")))
    );
    // masquerade check, two affinity lookups, then the random pick
    assert_eq!(rs.rules[SVC].len(), 4);
}

#[test]
fn each_family_gets_only_its_own_frontends_and_endpoints() {
    let mut port = web(vec![
        ep("10.244.1.5", 8080, "node-1"),
        ep("fd00:10:244:1::5", 8080, "node-1"),
    ]);
    port.cluster_ips.push("fd00:10:96::20".parse().unwrap());
    let v6 = compile(Family::Ip6, std::slice::from_ref(&port), &config());
    assert_eq!(v6.table.to_string(), "table ip6 weft");
    assert_eq!(
        endpoints_for(&v6, "fd00:10:96::20"),
        [(addr("fd00:10:244:1::5"), 8080)]
    );
    let v4 = compile(Family::Ip, &[port], &config());
    assert_eq!(
        endpoints_for(&v4, "10.96.0.20"),
        [(addr("10.244.1.5"), 8080)]
    );
    assert_eq!(v4.elements[ENDPOINT_COUNTS].len(), 1);
    assert_eq!(v4.elements[ENDPOINTS].len(), 1);
}

#[test]
fn load_balancer_source_ranges_drop_other_sources_before_dnat() {
    let mut port = web(vec![ep("10.244.1.5", 8080, "node-1")]);
    port.load_balancer_ips = vec!["192.168.1.250".parse().unwrap()];
    port.source_ranges = vec!["192.168.1.0/28".parse().unwrap()];
    let rs = compile(Family::Ip, &[port], &config());
    let chain = "fw-default/web/tcp/http";
    assert_eq!(
        verdict_of(
            &rs,
            "firewall-ips",
            &[ip("192.168.1.250"), Value::TCP, Value::Port(80)]
        ),
        Some(Verdict::Jump(chain.into()))
    );
    let rules = &rs.rules[chain];
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].exprs.last(), Some(&Expr::ret()));
    assert_eq!(rules[1].exprs, vec![Expr::drop()]);
}

#[test]
fn the_skeleton_is_the_same_with_or_without_services() {
    let empty = compile(Family::Ip, &[], &config());
    assert!(empty.chains.contains_key("nat-prerouting"));
    assert!(empty.chains.contains_key("filter-output"));
    assert_eq!(empty.element_count(), 0);
    let one = compile(Family::Ip, &[web(vec![])], &config());
    assert_eq!(one.rules["services"], empty.rules["services"]);
}

#[test]
fn a_service_with_many_endpoints_balances_over_a_map_of_its_own() {
    let endpoints: Vec<Endpoint> = (0..=BALANCE_BY_RULES_UP_TO)
        .map(|i| ep(&format!("10.244.1.{}", 10 + i), 8080, "node-1"))
        .collect();
    let rs = compile(Family::Ip, &[web(endpoints)], &config());
    let elements = &rs.elements[EPS];
    assert_eq!(elements.len(), BALANCE_BY_RULES_UP_TO + 1);
    assert_eq!(
        elements[0].data,
        Some(ElementData::Value(
            vec![ip("10.244.1.10"), Value::Port(8080)].into()
        ))
    );
    let rules = &rs.rules[SVC];
    assert_eq!(rules.len(), 2, "masquerade check + one balancer");
    assert!(rules[1].exprs.iter().any(|e| matches!(
        e,
        Expr::Numgen { modulus, .. } if *modulus as usize == BALANCE_BY_RULES_UP_TO + 1
    )));
}
