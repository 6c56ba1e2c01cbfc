//! Three nodes on one underlay LAN, one pod per node: pods reach pods on
//! other nodes without NAT in both modes; a departed node leaves nothing
//! behind on its peers; re-applying the same plan changes nothing.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::IpAddr;
use std::process::Command;

use weft_linux::{VethSpec, netlink::route::MAIN_TABLE};
use weft_podnet::{Config, Mode, NodeNet, apply, plan};
use weft_testhost::{TestNs, ip, net, plug, require_root};

struct Cluster {
    _lan: TestNs,
    nodes: Vec<TestNs>,
    pods: Vec<TestNs>,
    node_nets: Vec<NodeNet>,
}

fn node_net(i: usize) -> NodeNet {
    NodeNet {
        name: format!("node-{}", i + 1),
        address: ip(&format!("192.168.10.{}", 11 + i)),
        pod_cidr: Some(net(&format!("10.244.{}.0/24", i + 1))),
    }
}

fn pod_ip(i: usize) -> IpAddr {
    ip(&format!("10.244.{}.10", i + 1))
}

/// The LAN and the node namespaces, nothing of the pod network yet.
fn underlay(count: usize) -> Cluster {
    let lan = TestNs::new();
    let mut netlink = lan.netlink();
    netlink.ensure_bridge("lan0", None).unwrap();
    netlink.set_up("lan0").unwrap();
    let nodes: Vec<TestNs> = (0..count).map(|_| TestNs::new()).collect();
    for (i, node) in nodes.iter().enumerate() {
        let address = net(&format!("192.168.10.{}/24", 11 + i));
        plug(
            &lan,
            "lan0",
            &format!("port{i}"),
            node,
            "eth0",
            Some(address),
        );
    }
    Cluster {
        _lan: lan,
        pods: (0..count).map(|_| TestNs::new()).collect(),
        nodes,
        node_nets: (0..count).map(node_net).collect(),
    }
}

fn config(mode: Mode) -> Config {
    Config {
        mode,
        ..Config::default()
    }
}

fn apply_all(cluster: &Cluster, config: &Config, members: &[usize]) -> Vec<Vec<String>> {
    let nodes: Vec<NodeNet> = members
        .iter()
        .map(|&i| cluster.node_nets[i].clone())
        .collect();
    members
        .iter()
        .map(|&i| {
            let plan = plan(config, &cluster.node_nets[i].name, &nodes).unwrap();
            apply(cluster.nodes[i].ns(), &plan).unwrap().0
        })
        .collect()
}

/// Plugs each pod into its node's cni0 the way the bridge CNI plugin does.
fn attach_pods(cluster: &Cluster, mtu: u32) {
    for (i, (node, pod)) in cluster.nodes.iter().zip(&cluster.pods).enumerate() {
        let mut netlink = node.netlink();
        netlink
            .ensure_veth(&VethSpec {
                name: "veth-pod".into(),
                peer_name: "eth0".into(),
                peer_namespace: Some(pod.ns().clone()),
                mtu: Some(mtu),
                ..VethSpec::default()
            })
            .unwrap();
        netlink.set_master("veth-pod", Some("cni0")).unwrap();
        netlink.set_up("veth-pod").unwrap();
        let mut pod_netlink = pod.netlink();
        pod_netlink
            .ensure_address("eth0", net(&format!("10.244.{}.10/24", i + 1)))
            .unwrap();
        pod_netlink.set_up("eth0").unwrap();
        pod_netlink
            .ensure_route(&weft_linux::RouteSpec::default_via(ip(&format!(
                "10.244.{}.1",
                i + 1
            ))))
            .unwrap();
    }
}

/// The address a TCP server in pod `to` sees for a connection from pod `from`.
fn source_seen_by(cluster: &Cluster, from: usize, to: usize) -> String {
    cluster.pods[to].spawn(Command::new("socat").args([
        "TCP-LISTEN:8080,reuseaddr,fork",
        "SYSTEM:echo $SOCAT_PEERADDR",
    ]));
    let target = format!("TCP:{}:8080,retry=20,interval=0.1", pod_ip(to));
    let output = cluster.pods[from].exec("socat", &["-T", "2", "-", &target]);
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn assert_all_pods_reach_each_other(cluster: &Cluster, members: &[usize]) {
    for &from in members {
        for &to in members {
            if from != to {
                assert!(
                    cluster.pods[from].ping(pod_ip(to)),
                    "pod on node {} cannot reach pod on node {}",
                    from + 1,
                    to + 1
                );
            }
        }
    }
}

fn routes_to(node: &TestNs, subnet: &str) -> usize {
    let subnet = net(subnet);
    node.netlink()
        .routes(Some(MAIN_TABLE))
        .unwrap()
        .iter()
        .filter(|route| route.dst == subnet)
        .count()
}

fn cross_node_scenario(mode: Mode) {
    let cluster = underlay(3);
    let config = config(mode);
    let first = apply_all(&cluster, &config, &[0, 1, 2]);
    assert!(first.iter().all(|changes| !changes.is_empty()));
    let expected_mtu = if mode == Mode::Vxlan { 1450 } else { 1500 };
    assert_eq!(
        cluster.nodes[0].netlink().require_link("cni0").unwrap().mtu,
        expected_mtu
    );
    attach_pods(&cluster, expected_mtu);

    assert_all_pods_reach_each_other(&cluster, &[0, 1, 2]);
    assert_eq!(
        source_seen_by(&cluster, 0, 1),
        pod_ip(0).to_string(),
        "traffic between pods was NATed"
    );

    let again = apply_all(&cluster, &config, &[0, 1, 2]);
    assert!(
        again.iter().all(Vec::is_empty),
        "re-apply changed: {again:?}"
    );

    // node-3 leaves: its peers forget it.
    apply_all(&cluster, &config, &[0, 1]);
    for node in &cluster.nodes[..2] {
        assert_eq!(
            routes_to(node, "10.244.3.0/24"),
            0,
            "route to departed node kept"
        );
    }
    if mode == Mode::Vxlan {
        let mut netlink = cluster.nodes[0].netlink();
        let departed_mac = weft_podnet::vtep_mac(ip("192.168.10.13"));
        assert!(
            !netlink
                .fdb_entries("weft.vxlan")
                .unwrap()
                .iter()
                .any(|entry| entry.mac == departed_mac),
            "FDB entry of departed node kept"
        );
        assert!(
            !netlink
                .neighbours("weft.vxlan")
                .unwrap()
                .iter()
                .any(|n| n.ip == ip("10.244.3.0")),
            "neighbour of departed node kept"
        );
    }
    assert!(
        !cluster.pods[0].ping(pod_ip(2)),
        "departed node still reachable"
    );
    assert_all_pods_reach_each_other(&cluster, &[0, 1]);
}

#[test]
fn host_gw_pods_reach_pods_on_other_nodes_without_nat() {
    require_root!();
    cross_node_scenario(Mode::HostGw);
}

#[test]
fn vxlan_pods_reach_pods_on_other_nodes_without_nat() {
    require_root!();
    cross_node_scenario(Mode::Vxlan);
}

#[test]
fn switching_from_vxlan_to_host_gw_removes_the_overlay() {
    require_root!();
    let cluster = underlay(2);
    apply_all(&cluster, &config(Mode::Vxlan), &[0, 1]);
    assert!(
        cluster.nodes[0]
            .netlink()
            .link("weft.vxlan")
            .unwrap()
            .is_some()
    );

    let changes = apply_all(&cluster, &config(Mode::HostGw), &[0, 1]);
    assert!(
        changes[0]
            .iter()
            .any(|change| change.contains("weft.vxlan removed")),
        "{changes:?}"
    );
    let mut netlink = cluster.nodes[0].netlink();
    assert!(netlink.link("weft.vxlan").unwrap().is_none());
    assert_eq!(netlink.require_link("cni0").unwrap().mtu, 1500);
    let routes = netlink.routes(Some(MAIN_TABLE)).unwrap();
    let to_peer: Vec<_> = routes
        .iter()
        .filter(|r| r.dst == net("10.244.2.0/24"))
        .collect();
    assert_eq!(to_peer.len(), 1, "{to_peer:?}");
    assert_eq!(to_peer[0].gateway, Some(ip("192.168.10.12")));
    attach_pods(&cluster, 1500);
    assert_all_pods_reach_each_other(&cluster, &[0, 1]);
}
