use std::collections::{BTreeMap, HashMap, HashSet};

use weft_nft::{Element, ElementData, Family, Op, Rule, Transaction, Values};

use super::*;
use crate::compile::{ProxyConfig, compile};
use crate::service::{Protocol, ServicePort};

fn config() -> ProxyConfig {
    crate::testing::node_1_config()
}

fn port(name: &str, protocol: Protocol, cluster_ip: &str, endpoints: &[&str]) -> ServicePort {
    crate::testing::cluster_ip_port(name, protocol, cluster_ip, endpoints, Some("node-1"))
}

fn tcp(name: &str, cluster_ip: &str, endpoints: &[&str]) -> ServicePort {
    port(name, Protocol::Tcp, cluster_ip, endpoints)
}

/// A kernel stand-in: applies a transaction to an in-memory table and
/// refuses what nf_tables refuses (an element deleted that is not there,
/// one added over an element with other data, a chain deleted that still
/// has rules or is still the target of a map element, a rule or element
/// naming a chain or set that does not exist).
#[derive(Debug, Clone, Default, PartialEq)]
struct Kernel {
    chains: BTreeMap<String, Vec<Rule>>,
    sets: BTreeMap<String, HashMap<Values, Element>>,
}

impl Kernel {
    fn apply(&mut self, tx: &Transaction) -> Result<(), String> {
        let mut next = self.clone();
        for op in tx.ops() {
            // Shared element lists are added like copied ones.
            let copied;
            let op = match op {
                Op::AddSharedElements {
                    table,
                    set,
                    elements,
                } => {
                    copied = Op::AddElements {
                        table: table.clone(),
                        set: set.clone(),
                        elements: elements.iter().cloned().collect(),
                    };
                    &copied
                }
                other => other,
            };
            match op {
                Op::AddTable(_) => {}
                Op::DeleteTable(_) => next = Kernel::default(),
                Op::AddChain(_, chain) => {
                    next.chains.entry(chain.name.clone()).or_default();
                }
                Op::FlushChain(_, name) => next
                    .chains
                    .get_mut(name)
                    .ok_or(format!("flush of missing chain {name}"))?
                    .clear(),
                Op::DeleteChain(_, name) => {
                    let rules = next
                        .chains
                        .remove(name)
                        .ok_or(format!("delete of missing chain {name}"))?;
                    if !rules.is_empty() {
                        return Err(format!("delete of chain {name} with rules"));
                    }
                    let target = weft_nft::Verdict::Goto(name.clone());
                    let jump = weft_nft::Verdict::Jump(name.clone());
                    let referenced = next.sets.values().flat_map(HashMap::values).any(|e| {
                        matches!(&e.data, Some(ElementData::Verdict(v)) if *v == target || *v == jump)
                    });
                    if referenced {
                        return Err(format!("delete of chain {name} still in a map"));
                    }
                }
                Op::AddSet(_, set) => {
                    next.sets.entry(set.name.clone()).or_default();
                }
                Op::DeleteSet(_, name) => {
                    next.sets
                        .remove(name)
                        .ok_or(format!("delete of missing set {name}"))?;
                }
                Op::AddElements { set, elements, .. } => {
                    let chains: HashSet<String> = next.chains.keys().cloned().collect();
                    let members = next
                        .sets
                        .get_mut(set)
                        .ok_or(format!("elements for missing set {set}"))?;
                    for element in elements {
                        if let Some(ElementData::Verdict(
                            weft_nft::Verdict::Goto(chain) | weft_nft::Verdict::Jump(chain),
                        )) = &element.data
                        {
                            if !chains.contains(chain) {
                                return Err(format!("element {element} names missing {chain}"));
                            }
                        }
                        match members.get(&element.key) {
                            Some(present) if present != element => {
                                return Err(format!("element {element} exists with other data"));
                            }
                            _ => {
                                members.insert(element.key.clone(), element.clone());
                            }
                        }
                    }
                }
                Op::DeleteElements { set, elements, .. } => {
                    let members = next
                        .sets
                        .get_mut(set)
                        .ok_or(format!("element delete in missing set {set}"))?;
                    for element in elements {
                        members
                            .remove(&element.key)
                            .ok_or(format!("delete of missing element {element} in {set}"))?;
                    }
                }
                Op::AddRule(_, rule) => next
                    .chains
                    .get_mut(&rule.chain)
                    .ok_or(format!("rule for missing chain {}", rule.chain))?
                    .push(rule.clone()),
                other => return Err(format!("unexpected operation {other:?}")),
            }
        }
        *self = next;
        Ok(())
    }
}

/// The kernel content a fresh full sync of `ports` leaves.
fn fresh(ports: &[ServicePort]) -> Kernel {
    let mut state = ServiceTable::new(Family::Ip, config());
    state.update(ports, &config(), false);
    let mut kernel = Kernel::default();
    kernel.apply(&state.full_transaction()).unwrap();
    kernel
}

/// What each operation of `tx` names: chains, sets and element keys.
fn touched(tx: &Transaction) -> Vec<String> {
    let mut names: Vec<String> = tx
        .ops()
        .iter()
        .flat_map(|op| match op {
            Op::AddChain(_, chain) => vec![format!("add chain {}", chain.name)],
            Op::FlushChain(_, chain) => vec![format!("flush chain {chain}")],
            Op::DeleteChain(_, chain) => vec![format!("delete chain {chain}")],
            Op::AddSet(_, set) => vec![format!("add set {}", set.name)],
            Op::DeleteSet(_, set) => vec![format!("delete set {set}")],
            Op::AddElements { set, elements, .. } => elements
                .iter()
                .map(|element| format!("add {set} {element}"))
                .collect(),
            Op::AddSharedElements { set, elements, .. } => elements
                .iter()
                .map(|element| format!("add {set} {element}"))
                .collect(),
            Op::DeleteElements { set, elements, .. } => elements
                .iter()
                .map(|element| format!("delete {set} {element}"))
                .collect(),
            Op::AddRule(_, rule) => vec![format!("rule {}", rule.chain)],
            other => vec![format!("{other:?}")],
        })
        .collect();
    names.sort();
    names
}

#[test]
fn an_endpoint_change_yields_exactly_that_services_delta() {
    let before = [
        tcp("a", "10.96.0.1", &["10.244.1.1", "10.244.1.2"]),
        tcp("b", "10.96.0.2", &["10.244.2.1"]),
        tcp("c", "10.96.0.3", &["10.244.3.1"]),
    ];
    let mut state = ServiceTable::new(Family::Ip, config());
    state.update(&before, &config(), false);
    let mut after = before.clone();
    after[0] = tcp("a", "10.96.0.1", &["10.244.1.1", "10.244.1.3"]);

    let delta = state.update(&after, &config(), true);
    assert_eq!(delta.ports_changed, 1);
    let tx = delta.into_transaction(state.table());
    // Map elements only: a's second endpoint, and @hairpin.
    assert_eq!(
        touched(&tx),
        [
            "add endpoints 10.96.0.1 . tcp . 80 . 0x1 : 10.244.1.3 . 8080",
            "add hairpin 10.244.1.3 . 10.244.1.3",
            "delete endpoints 10.96.0.1 . tcp . 80 . 0x1 : 10.244.1.2 . 8080",
            "delete hairpin 10.244.1.2 . 10.244.1.2",
        ]
    );
    // One endpoint fewer: the group's size changes, still no rule.
    after[0] = tcp("a", "10.96.0.1", &["10.244.1.1"]);
    let delta = state.update(&after, &config(), true);
    let tx = delta.into_transaction(state.table());
    assert_eq!(
        touched(&tx),
        [
            "add endpoint-counts 10.96.0.1 . tcp . 80 : 0x1",
            "delete endpoint-counts 10.96.0.1 . tcp . 80 : 0x2",
            "delete endpoints 10.96.0.1 . tcp . 80 . 0x1 : 10.244.1.3 . 8080",
            "delete hairpin 10.244.1.3 . 10.244.1.3",
        ]
    );
    // The same input again: nothing.
    let delta = state.update(&after, &config(), true);
    assert_eq!(delta.ports_changed, 0);
    assert!(delta.into_transaction(state.table()).is_empty());
}

#[test]
fn deleting_a_service_removes_exactly_its_objects_and_keeps_shared_elements() {
    // b shares the endpoint 10.244.1.1 with a.
    let before = [
        tcp("a", "10.96.0.1", &["10.244.1.1", "10.244.1.2"]),
        tcp("b", "10.96.0.2", &["10.244.1.1"]),
    ];
    let mut state = ServiceTable::new(Family::Ip, config());
    state.update(&before, &config(), false);
    let delta = state.update(&before[1..], &config(), true);
    let tx = delta.into_transaction(state.table());
    assert_eq!(
        touched(&tx),
        [
            "delete cluster-ips 10.96.0.1",
            "delete endpoint-counts 10.96.0.1 . tcp . 80 : 0x2",
            "delete endpoints 10.96.0.1 . tcp . 80 . 0x0 : 10.244.1.1 . 8080",
            "delete endpoints 10.96.0.1 . tcp . 80 . 0x1 : 10.244.1.2 . 8080",
            "delete hairpin 10.244.1.2 . 10.244.1.2",
        ]
    );
    let mut kernel = fresh(&before);
    kernel.apply(&tx).unwrap();
    assert_eq!(kernel, fresh(&before[1..]));
}

#[test]
fn only_udp_endpoints_that_no_udp_port_keeps_are_gone() {
    let udp = |name: &str, ip: &str, endpoints: &[&str]| port(name, Protocol::Udp, ip, endpoints);
    let before = [
        udp("dns", "10.96.0.10", &["10.244.1.1", "10.244.1.2"]),
        udp("other", "10.96.0.11", &["10.244.1.2"]),
        tcp("web", "10.96.0.12", &["10.244.1.3"]),
    ];
    let mut state = ServiceTable::new(Family::Ip, config());
    state.update(&before, &config(), false);
    let after = [
        udp("dns", "10.96.0.10", &[]),
        udp("other", "10.96.0.11", &["10.244.1.2"]),
        tcp("web", "10.96.0.12", &[]),
    ];
    let delta = state.update(&after, &config(), true);
    // 10.244.1.2 is still behind "other"; 10.244.1.3 served TCP only.
    assert_eq!(
        delta.gone_udp_endpoints,
        ["10.244.1.1".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn incremental_updates_end_where_a_fresh_full_sync_starts() {
    let steps: Vec<Vec<ServicePort>> = vec![
        vec![
            tcp("a", "10.96.0.1", &["10.244.1.1", "10.244.1.2"]),
            tcp("b", "10.96.0.2", &["10.244.1.1"]),
        ],
        // a loses an endpoint, c appears sharing one, b's ClusterIP moves.
        vec![
            tcp("a", "10.96.0.1", &["10.244.1.1"]),
            tcp("b", "10.96.0.9", &["10.244.1.1"]),
            tcp("c", "10.96.0.3", &["10.244.1.2", "10.244.1.1"]),
        ],
        // a has no endpoint (rejected), c gets affinity, d is a NodePort.
        vec![
            tcp("a", "10.96.0.1", &[]),
            tcp("b", "10.96.0.9", &["10.244.1.1"]),
            ServicePort {
                affinity_timeout: Some(60),
                ..tcp("c", "10.96.0.3", &["10.244.1.2", "10.244.1.1"])
            },
            ServicePort {
                node_port: Some(30080),
                external_local: true,
                ..tcp("d", "10.96.0.4", &["10.244.1.4"])
            },
        ],
        // c drops one endpoint; d loses its only one; a comes back.
        vec![
            tcp("a", "10.96.0.1", &["10.244.1.5"]),
            tcp("b", "10.96.0.9", &["10.244.1.1"]),
            ServicePort {
                affinity_timeout: Some(60),
                ..tcp("c", "10.96.0.3", &["10.244.1.1"])
            },
            ServicePort {
                node_port: Some(30080),
                external_local: true,
                ..tcp("d", "10.96.0.4", &[])
            },
        ],
        vec![],
    ];
    let mut state = ServiceTable::new(Family::Ip, config());
    state.update(&steps[0], &config(), false);
    let mut kernel = Kernel::default();
    kernel.apply(&state.full_transaction()).unwrap();
    for (index, ports) in steps.iter().enumerate().skip(1) {
        let delta = state.update(ports, &config(), true);
        assert!(!delta.incompatible);
        kernel
            .apply(&delta.into_transaction(state.table()))
            .unwrap_or_else(|err| panic!("step {index}: {err}"));
        assert_eq!(kernel, fresh(ports), "step {index}");
        // What the state would write in full is the same again.
        let mut full = Kernel::default();
        full.apply(&state.full_transaction()).unwrap();
        assert_eq!(full, kernel, "step {index}: full rewrite");
        // And the same as the whole-ruleset compiler.
        let whole = compile(Family::Ip, ports, &config());
        let mut compiled = Kernel::default();
        compiled.apply(&crate::sync::diff(None, &whole)).unwrap();
        assert_eq!(compiled, kernel, "step {index}: compile()");
        assert_eq!(state.rule_count(), whole.rule_count(), "step {index}");
        assert_eq!(state.element_count(), whole.element_count(), "step {index}");
    }
}

#[test]
fn a_config_change_recompiles_every_port() {
    let ports = [
        tcp("a", "10.96.0.1", &["10.244.1.1"]),
        tcp("b", "10.96.0.2", &["10.244.1.2"]),
    ];
    let mut state = ServiceTable::new(Family::Ip, config());
    state.update(&ports, &config(), false);
    let other = ProxyConfig {
        cluster_cidrs: vec!["10.200.0.0/16".parse().unwrap()],
        ..config()
    };
    let delta = state.update(&ports, &other, true);
    assert_eq!(delta.ports_changed, 2);
    let mut kernel = fresh(&ports);
    kernel
        .apply(&delta.into_transaction(state.table()))
        .unwrap();
    let mut expected = Kernel::default();
    expected
        .apply(&crate::sync::diff(
            None,
            &compile(Family::Ip, &ports, &other),
        ))
        .unwrap();
    assert_eq!(kernel, expected);
}

#[test]
fn set_sizes_leave_a_quarter_of_headroom_and_fill_the_kernels_hash_table() {
    assert_eq!(set_size(0), 384);
    assert_eq!(set_size(300), 384);
    assert_eq!(set_size(308), 768);
    for count in [0, 1, 1000, 30_000, 150_000, 150_001, 1_000_000] {
        let size = set_size(count) as usize;
        assert!(size >= count + count / 4, "{count} → {size}");
        // nf_tables: roundup_pow_of_two(size * 4 / 3) buckets, and this is
        // the largest size with that many.
        let buckets = (size * 4 / 3).next_power_of_two();
        assert_eq!(buckets, size * 4 / 3, "{count} → {size}");
        assert!(
            size <= (count + count / 4).max(256) * 8 / 3,
            "{count} → {size}"
        );
    }
    assert_eq!(set_size(150_000), 196_608);
}

#[test]
fn an_update_that_would_overfill_a_shared_set_asks_for_a_full_write() {
    let small: Vec<ServicePort> = (0..10)
        .map(|i| tcp(&format!("s{i}"), &format!("10.96.0.{i}"), &["10.244.1.1"]))
        .collect();
    let mut state = ServiceTable::new(Family::Ip, config());
    state.update(&small, &config(), false);
    state.written_in_full();
    assert_eq!(state.set_size(HAIRPIN), Some(set_size(1)));
    assert_eq!(state.set_size(ENDPOINTS), Some(set_size(10)));

    let mut within = small.clone();
    within.push(tcp("more", "10.96.1.1", &["10.244.1.2"]));
    let delta = state.update(&within, &config(), true);
    assert!(!delta.outgrown);

    let over = set_size(10) as usize;
    let large: Vec<ServicePort> = (0..=over)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(u32::from_be_bytes([10, 96, 0, 0]) + i as u32);
            tcp(&format!("s{i}"), &ip.to_string(), &["10.244.1.1"])
        })
        .collect();
    let delta = state.update(&large, &config(), true);
    assert!(delta.outgrown, "{} ports", large.len());
    // After the full write the new sizes hold.
    state.written_in_full();
    assert_eq!(state.set_size(ENDPOINTS), Some(set_size(over + 1)));
    assert_eq!(state.set_size(HAIRPIN), Some(set_size(1)));
}
