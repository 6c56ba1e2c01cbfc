//! [`ServiceSyncer`] against the kernel: a run of incremental syncs, a full
//! resync after them, and a fresh full sync of the same Services in another
//! namespace leave the same `ip weft` table, read back over netlink.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;

use weft_nft::{Conntrack, Family, Nft, TableRef};
use weft_proxy::{Protocol, ProxyConfig, ServicePort, ServiceSyncer};
use weft_testhost::{TestNs, require_root};

fn config() -> ProxyConfig {
    weft_proxy::testing::node_1_config()
}

fn port(name: &str, protocol: Protocol, cluster_ip: &str, endpoints: &[&str]) -> ServicePort {
    weft_proxy::testing::cluster_ip_port(name, protocol, cluster_ip, endpoints, Some("node-1"))
}

/// Everything the kernel holds in `ip weft`, without handles and in name
/// order: chains with their hooks and rules (in order), sets with their
/// definitions and elements (sorted).
fn snapshot(ns: &TestNs) -> BTreeMap<String, String> {
    let table = TableRef::new(Family::Ip, "weft");
    let mut nft = Nft::open_in(ns.ns()).unwrap();
    let mut state = BTreeMap::new();
    for chain in nft.chains(&table).unwrap() {
        state.insert(format!("chain {}", chain.name), format!("{:?}", chain.base));
    }
    for rule in nft.rules(&table, None).unwrap() {
        let entry = state.entry(format!("rules {}", rule.chain)).or_default();
        entry.push_str(&format!("{:?} {:?}\n", rule.decoded, rule.comment));
    }
    for set in nft.sets(&table).unwrap() {
        let mut elements: Vec<String> = nft
            .elements(&table, &set.name)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        elements.sort();
        state.insert(
            format!("set {}", set.name),
            format!(
                "{:?} {:?} {:?} {:?} {:?}\n{}",
                set.flags,
                set.key,
                set.data,
                set.timeout,
                set.key_len,
                elements.join("\n")
            ),
        );
    }
    state
}

fn syncer(ns: &TestNs) -> ServiceSyncer {
    ServiceSyncer::new(
        Nft::open_in(ns.ns()).unwrap(),
        Some(Conntrack::open_in(ns.ns()).unwrap()),
        Family::Ip,
        config(),
    )
}

#[test]
fn a_full_resync_after_incremental_syncs_leaves_what_a_fresh_full_sync_does() {
    require_root!();
    let tcp = |name: &str, ip: &str, endpoints: &[&str]| port(name, Protocol::Tcp, ip, endpoints);
    let steps: Vec<Vec<ServicePort>> = vec![
        vec![
            tcp("a", "10.96.0.1", &["10.244.1.1", "10.244.1.2"]),
            tcp("b", "10.96.0.2", &["10.244.1.1"]),
            port("dns", Protocol::Udp, "10.96.0.10", &["10.244.1.3"]),
        ],
        vec![
            tcp(
                "a",
                "10.96.0.1",
                &["10.244.1.1", "10.244.1.5", "10.244.1.6"],
            ),
            ServicePort {
                node_port: Some(30080),
                ..tcp("b", "10.96.0.2", &["10.244.1.1"])
            },
            port("dns", Protocol::Udp, "10.96.0.10", &["10.244.1.4"]),
            ServicePort {
                affinity_timeout: Some(60),
                ..tcp("c", "10.96.0.3", &["10.244.1.2", "10.244.1.7"])
            },
        ],
        vec![
            tcp("a", "10.96.0.1", &[]),
            ServicePort {
                node_port: Some(30080),
                external_local: true,
                ..tcp("b", "10.96.0.2", &["10.244.1.1", "10.244.1.8"])
            },
            port("dns", Protocol::Udp, "10.96.0.10", &["10.244.1.4"]),
            ServicePort {
                affinity_timeout: Some(60),
                ..tcp("c", "10.96.0.3", &["10.244.1.7"])
            },
            tcp("d", "10.96.0.4", &["10.244.1.9"]),
        ],
    ];
    let Some(last) = steps.last() else {
        return;
    };

    let incremental = TestNs::new();
    let mut syncer = syncer(&incremental);
    for (index, ports) in steps.iter().enumerate() {
        let report = syncer.sync(ports, &config()).unwrap();
        assert_eq!(report.full, index == 0, "step {index}: {report:?}");
        assert!(report.operations > 0, "step {index}");
    }
    let after_increments = snapshot(&incremental);
    syncer.force_full_resync();
    assert!(syncer.sync(last, &config()).unwrap().full);
    let after_resync = snapshot(&incremental);
    let again = syncer.sync(last, &config()).unwrap();
    assert_eq!(again.operations, 0, "the same state again commits nothing");

    let fresh = TestNs::new();
    syncer_sync_once(&fresh, last);
    let from_scratch = snapshot(&fresh);
    assert!(
        from_scratch.contains_key("set endpoints"),
        "{from_scratch:?}"
    );
    assert_eq!(after_increments, from_scratch);
    assert_eq!(after_resync, from_scratch);
}

fn syncer_sync_once(ns: &TestNs, ports: &[ServicePort]) {
    let report = syncer(ns).sync(ports, &config()).unwrap();
    assert!(report.full);
}

#[test]
fn syncing_only_the_changed_service_commits_its_map_elements() {
    require_root!();
    let ns = TestNs::new();
    let mut syncer = syncer(&ns);
    let services: Vec<ServicePort> = (0..50)
        .map(|i| {
            port(
                &format!("s{i}"),
                Protocol::Tcp,
                &format!("10.96.1.{i}"),
                &[&format!("10.244.2.{i}"), &format!("10.244.3.{i}")],
            )
        })
        .collect();
    syncer.sync(&services, &config()).unwrap();
    let named = vec![("default".to_owned(), "s7".to_owned())];
    let changed = [port(
        "s7",
        Protocol::Tcp,
        "10.96.1.7",
        &["10.244.2.7", "10.244.3.7", "10.244.4.7"],
    )];
    let report = syncer.sync_services(&named, &changed, &config()).unwrap();
    assert!(!report.full);
    assert_eq!(report.ports_changed, Some(1));
    // count out and in, one endpoint and its @hairpin element in.
    assert_eq!(report.operations, 4, "{report:?}");

    let mut all = services.clone();
    all[7] = changed[0].clone();
    let fresh = TestNs::new();
    syncer_sync_once(&fresh, &all);
    assert_eq!(snapshot(&ns), snapshot(&fresh));

    // The Service gone: its elements go, nothing else.
    let report = syncer.sync_services(&named, &[], &config()).unwrap();
    assert_eq!(report.ports_changed, Some(1));
    all.remove(7);
    let fresh = TestNs::new();
    syncer_sync_once(&fresh, &all);
    assert_eq!(snapshot(&ns), snapshot(&fresh));
}
