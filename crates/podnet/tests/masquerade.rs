//! Pod egress leaving the cluster CIDR is masqueraded to the node's
//! address; ensuring the rule again changes nothing.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

use weft_linux::{RouteSpec, VethSpec, sysctl};
use weft_testhost::{TestNs, connect, ip, net, require_root};

#[test]
fn pod_egress_leaves_with_the_node_address_only_once_masquerade_is_ensured() {
    require_root!();
    let node = TestNs::new();
    let pod = TestNs::new();
    let external = TestNs::new();
    sysctl::ensure(node.ns(), sysctl::IPV4_FORWARD, "1").unwrap();
    connect(
        &node,
        "eth0",
        net("192.168.10.11/24"),
        &external,
        "eth0",
        net("192.168.10.100/24"),
    );
    let mut netlink = node.netlink();
    netlink
        .ensure_veth(&VethSpec {
            name: "veth-pod".into(),
            peer_name: "eth0".into(),
            peer_namespace: Some(pod.ns().clone()),
            ..VethSpec::default()
        })
        .unwrap();
    netlink
        .ensure_address("veth-pod", net("10.244.1.1/24"))
        .unwrap();
    netlink.set_up("veth-pod").unwrap();
    let mut pod_netlink = pod.netlink();
    pod_netlink
        .ensure_address("eth0", net("10.244.1.10/24"))
        .unwrap();
    pod_netlink.set_up("eth0").unwrap();
    pod_netlink
        .ensure_route(&RouteSpec::default_via(ip("10.244.1.1")))
        .unwrap();
    external.spawn(Command::new("socat").args([
        "TCP-LISTEN:8080,reuseaddr,fork",
        "SYSTEM:echo $SOCAT_PEERADDR",
    ]));
    let source_seen = |retries: u32| {
        let target =
            format!("TCP:192.168.10.100:8080,connect-timeout=1,retry={retries},interval=0.1");
        let output = pod.exec("socat", &["-T", "2", "-", &target]);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    // The external host has no route to the pod network: no answer at all.
    assert_eq!(source_seen(0), "");

    let cluster_cidr = net("10.244.0.0/16");
    assert!(weft_podnet::masquerade::ensure(node.ns(), cluster_cidr).unwrap());
    assert!(!weft_podnet::masquerade::ensure(node.ns(), cluster_cidr).unwrap());
    assert_eq!(source_seen(20), "192.168.10.11");

    assert!(weft_podnet::masquerade::remove(node.ns(), cluster_cidr).unwrap());
    assert!(!weft_podnet::masquerade::remove(node.ns(), cluster_cidr).unwrap());
}
