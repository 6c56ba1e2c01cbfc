//! The seed notes' network scenarios, with real packets between throwaway
//! namespaces: a veth pair, a bridge, a router, a VXLAN overlay.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use weft_linux::sysctl;
use weft_linux::{RouteSpec, VxlanSpec};
use weft_testhost::{TestNs, connect, ip, net, plug, require_root};

#[test]
fn two_namespaces_over_one_veth_ping_each_other() {
    require_root!();
    let red = TestNs::new();
    let blue = TestNs::new();
    assert!(!red.ping(ip("192.168.15.2")), "reachable before any link");

    connect(
        &red,
        "veth-red",
        net("192.168.15.1/24"),
        &blue,
        "veth-blue",
        net("192.168.15.2/24"),
    );

    assert!(red.ping(ip("192.168.15.2")), "red cannot reach blue");
    assert!(blue.ping(ip("192.168.15.1")), "blue cannot reach red");
}

#[test]
fn three_namespaces_on_a_bridge_reach_each_other_and_the_bridge() {
    require_root!();
    let switch = TestNs::new();
    let hosts = [TestNs::new(), TestNs::new(), TestNs::new()];
    let mut netlink = switch.netlink();
    netlink.ensure_bridge("v-net-0", None).unwrap();
    netlink
        .ensure_address("v-net-0", net("192.168.15.5/24"))
        .unwrap();
    netlink.set_up("v-net-0").unwrap();
    for (i, host) in hosts.iter().enumerate() {
        plug(
            &switch,
            "v-net-0",
            &format!("veth-{i}-br"),
            host,
            "eth0",
            Some(net(&format!("192.168.15.{}/24", i + 1))),
        );
    }

    for (i, host) in hosts.iter().enumerate() {
        for j in 0..hosts.len() {
            if i != j {
                let peer = ip(&format!("192.168.15.{}", j + 1));
                assert!(host.ping(peer), "host {} cannot reach {peer}", i + 1);
            }
        }
        assert!(
            host.ping(ip("192.168.15.5")),
            "host {} cannot reach the bridge",
            i + 1
        );
    }
    assert!(
        switch.ping(ip("192.168.15.3")),
        "bridge cannot reach a host"
    );
}

#[test]
fn router_joins_two_subnets_only_after_routes_are_added() {
    require_root!();
    let left = TestNs::new();
    let router = TestNs::new();
    let right = TestNs::new();
    connect(
        &left,
        "eth0",
        net("192.168.1.10/24"),
        &router,
        "eth-left",
        net("192.168.1.1/24"),
    );
    connect(
        &right,
        "eth0",
        net("192.168.2.10/24"),
        &router,
        "eth-right",
        net("192.168.2.1/24"),
    );
    sysctl::ensure(router.ns(), sysctl::IPV4_FORWARD, "1").unwrap();

    assert!(
        !left.ping(ip("192.168.2.10")),
        "left reached right without a route"
    );

    left.netlink()
        .ensure_route(&RouteSpec::via(net("192.168.2.0/24"), ip("192.168.1.1")))
        .unwrap();
    assert!(
        !left.ping(ip("192.168.2.10")),
        "left reached right while right had no route back"
    );

    right
        .netlink()
        .ensure_route(&RouteSpec::default_via(ip("192.168.2.1")))
        .unwrap();
    assert!(left.ping(ip("192.168.2.10")), "left cannot reach right");
    assert!(right.ping(ip("192.168.1.10")), "right cannot reach left");

    sysctl::ensure(router.ns(), sysctl::IPV4_FORWARD, "0").unwrap();
    assert!(
        !left.ping(ip("192.168.2.10")),
        "router forwarded with ip_forward=0"
    );
}

/// Two nodes on an underlay link, each with a pod subnet behind a bridge;
/// the pod subnets reach each other only through a VXLAN device programmed
/// with a route, a permanent neighbour and an FDB entry per peer (flannel's
/// layout).
#[test]
fn vxlan_carries_traffic_between_two_inner_subnets() {
    require_root!();
    let node = [TestNs::new(), TestNs::new()];
    let pod = [TestNs::new(), TestNs::new()];
    connect(
        &node[0],
        "eth0",
        net("192.168.100.1/24"),
        &node[1],
        "eth0",
        net("192.168.100.2/24"),
    );
    let mut vxlan_macs = Vec::new();
    for i in 0..2 {
        let mut netlink = node[i].netlink();
        sysctl::ensure(node[i].ns(), sysctl::IPV4_FORWARD, "1").unwrap();
        netlink.ensure_bridge("cni0", None).unwrap();
        netlink
            .ensure_address("cni0", net(&format!("10.244.{i}.1/24")))
            .unwrap();
        netlink.set_up("cni0").unwrap();
        plug(
            &node[i],
            "cni0",
            "veth-pod",
            &pod[i],
            "eth0",
            Some(net(&format!("10.244.{i}.10/24"))),
        );
        pod[i]
            .netlink()
            .ensure_route(&RouteSpec::default_via(ip(&format!("10.244.{i}.1"))))
            .unwrap();
        let vxlan = netlink
            .ensure_vxlan(&VxlanSpec {
                name: "weft.vxlan".to_owned(),
                vni: 1,
                port: 8472,
                local: Some(ip(&format!("192.168.100.{}", i + 1))),
                underlay: Some("eth0".to_owned()),
                learning: false,
                mtu: Some(1450),
            })
            .unwrap();
        netlink
            .ensure_address("weft.vxlan", net(&format!("10.244.{i}.0/32")))
            .unwrap();
        netlink.set_up("weft.vxlan").unwrap();
        vxlan_macs.push(vxlan.mac.expect("vxlan device has a MAC"));
    }

    assert!(
        !pod[0].ping(ip("10.244.1.10")),
        "pods reached each other before the overlay was programmed"
    );

    for (i, this_node) in node.iter().enumerate() {
        let peer = 1 - i;
        let mut netlink = this_node.netlink();
        let peer_vtep = ip(&format!("10.244.{peer}.0"));
        netlink
            .ensure_neighbour("weft.vxlan", peer_vtep, vxlan_macs[peer])
            .unwrap();
        netlink
            .ensure_fdb(
                "weft.vxlan",
                vxlan_macs[peer],
                ip(&format!("192.168.100.{}", peer + 1)),
            )
            .unwrap();
        let mut route =
            RouteSpec::via(net(&format!("10.244.{peer}.0/24")), peer_vtep).with_dev("weft.vxlan");
        route.onlink = true;
        netlink.ensure_route(&route).unwrap();
    }

    assert!(pod[0].ping(ip("10.244.1.10")), "pod 0 cannot reach pod 1");
    assert!(pod[1].ping(ip("10.244.0.10")), "pod 1 cannot reach pod 0");
    // The underlay has no route to the pod subnets: only the tunnel carries them.
    let underlay_routes = node[0].netlink().routes(None).unwrap();
    let via_eth0 = node[0].netlink().require_link("eth0").unwrap().index;
    assert!(
        !underlay_routes
            .iter()
            .any(|route| route.dst == net("10.244.1.0/24") && route.oif == Some(via_eth0)),
        "pod subnet routed over the underlay directly"
    );
}
