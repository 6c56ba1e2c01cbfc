//! `ensure_*` calls: ensuring what exists is a no-op, a conflicting object
//! is a typed error naming it and its namespace, deleting twice is fine.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use weft_linux::{Error, LinkKind, NetNs, Netlink, RouteSpec, VethSpec, VxlanSpec, sysctl};
use weft_testhost::{TestNs, ip, net, require_root};

fn assert_conflict(result: Result<impl std::fmt::Debug, Error>, object: &str, ns: &TestNs) {
    match result {
        Err(err @ Error::Conflict { .. }) => {
            let message = err.to_string();
            assert!(
                message.contains(object),
                "{message:?} does not name {object}"
            );
            assert!(
                message.contains(ns.name()),
                "{message:?} does not name the namespace"
            );
        }
        other => panic!("expected a conflict on {object}, got {other:?}"),
    }
}

#[test]
fn ensuring_a_bridge_twice_is_a_no_op_and_a_different_kind_or_mtu_conflicts() {
    require_root!();
    let host = TestNs::new();
    let mut netlink = host.netlink();
    let first = netlink.ensure_bridge("br0", Some(1400)).unwrap();
    let second = netlink.ensure_bridge("br0", Some(1400)).unwrap();
    assert_eq!(first.index, second.index);
    assert_eq!(second.kind, LinkKind::Bridge);
    assert_eq!(second.mtu, 1400);

    assert_conflict(netlink.ensure_bridge("br0", Some(1500)), "link br0", &host);
    netlink
        .ensure_veth(&VethSpec {
            name: "veth0".into(),
            peer_name: "veth1".into(),
            ..VethSpec::default()
        })
        .unwrap();
    assert_conflict(netlink.ensure_bridge("veth0", None), "link veth0", &host);
}

#[test]
fn ensuring_a_veth_checks_its_peer_in_the_other_namespace() {
    require_root!();
    let node = TestNs::new();
    let pod = TestNs::new();
    let spec = VethSpec {
        name: "veth-pod".into(),
        peer_name: "eth0".into(),
        peer_namespace: Some(pod.ns().clone()),
        mtu: Some(1450),
        mac: None,
        peer_mac: Some([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x02]),
    };
    let mut netlink = node.netlink();
    let created = netlink.ensure_veth(&spec).unwrap();
    assert_eq!(netlink.ensure_veth(&spec).unwrap().index, created.index);

    let peer = pod.netlink().require_link("eth0").unwrap();
    assert_eq!(peer.kind, LinkKind::Veth);
    assert_eq!(peer.mtu, 1450);
    assert_eq!(peer.mac, spec.peer_mac);
    assert_eq!(peer.peer_index, Some(created.index));

    let wrong_peer = VethSpec {
        peer_name: "eth1".into(),
        ..spec.clone()
    };
    assert_conflict(netlink.ensure_veth(&wrong_peer), "link veth-pod", &node);

    assert!(netlink.delete_link("veth-pod").unwrap());
    assert!(!netlink.delete_link("veth-pod").unwrap());
    assert!(
        pod.netlink().link("eth0").unwrap().is_none(),
        "peer survived"
    );
}

#[test]
fn ensuring_an_address_twice_adds_it_once_and_another_prefix_conflicts() {
    require_root!();
    let host = TestNs::new();
    let mut netlink = host.netlink();
    netlink.ensure_bridge("br0", None).unwrap();
    assert!(netlink.ensure_address("br0", net("10.1.0.1/24")).unwrap());
    assert!(!netlink.ensure_address("br0", net("10.1.0.1/24")).unwrap());
    assert!(netlink.ensure_address("br0", net("fd00:1::1/64")).unwrap());
    let found: Vec<_> = netlink
        .addresses(Some("br0"))
        .unwrap()
        .into_iter()
        .map(|address| address.net)
        .collect();
    assert!(found.contains(&net("10.1.0.1/24")), "{found:?}");
    assert!(found.contains(&net("fd00:1::1/64")), "{found:?}");

    assert_conflict(
        netlink.ensure_address("br0", net("10.1.0.1/16")),
        "address 10.1.0.1 on link br0",
        &host,
    );
    assert!(netlink.delete_address("br0", net("10.1.0.1/24")).unwrap());
    assert!(!netlink.delete_address("br0", net("10.1.0.1/24")).unwrap());
}

#[test]
fn ensuring_a_route_twice_adds_it_once_and_another_next_hop_conflicts() {
    require_root!();
    let host = TestNs::new();
    let mut netlink = host.netlink();
    netlink.ensure_bridge("br0", None).unwrap();
    netlink.ensure_address("br0", net("10.1.0.1/24")).unwrap();
    netlink.set_up("br0").unwrap();

    let route = RouteSpec::via(net("10.2.0.0/16"), ip("10.1.0.254"));
    assert!(netlink.ensure_route(&route).unwrap());
    assert!(!netlink.ensure_route(&route).unwrap());
    let other = RouteSpec::via(net("10.2.0.0/16"), ip("10.1.0.253"));
    assert_conflict(netlink.ensure_route(&other), "route 10.2.0.0/16", &host);

    netlink.replace_route(&other).unwrap();
    let routes = netlink.routes(None).unwrap();
    let installed: Vec<_> = routes
        .iter()
        .filter(|found| found.dst == net("10.2.0.0/16"))
        .collect();
    assert_eq!(installed.len(), 1, "{installed:?}");
    assert_eq!(installed[0].gateway, Some(ip("10.1.0.253")));

    let in_table = RouteSpec::dev(net("10.3.0.0/16"), "br0").in_table(100);
    assert!(netlink.ensure_route(&in_table).unwrap());
    assert!(
        netlink
            .routes(Some(100))
            .unwrap()
            .iter()
            .any(|found| found.dst == net("10.3.0.0/16"))
    );
    assert!(
        !netlink
            .routes(Some(254))
            .unwrap()
            .iter()
            .any(|found| found.dst == net("10.3.0.0/16"))
    );

    assert!(netlink.delete_route(&other).unwrap());
    assert!(!netlink.delete_route(&other).unwrap());
    assert!(netlink.delete_route(&in_table).unwrap());
}

#[test]
fn neighbours_and_fdb_entries_are_idempotent_and_conflicts_name_the_entry() {
    require_root!();
    let host = TestNs::new();
    let mut netlink = host.netlink();
    netlink
        .ensure_veth(&VethSpec {
            name: "eth0".into(),
            peer_name: "eth0-peer".into(),
            ..VethSpec::default()
        })
        .unwrap();
    netlink
        .ensure_address("eth0", net("192.168.50.1/24"))
        .unwrap();
    netlink
        .ensure_vxlan(&VxlanSpec {
            name: "weft.vxlan".into(),
            vni: 1,
            port: 8472,
            local: Some(ip("192.168.50.1")),
            underlay: Some("eth0".into()),
            learning: false,
            mtu: None,
        })
        .unwrap();
    let mac = [0x02, 0, 0, 0, 0, 0x01];
    let other_mac = [0x02, 0, 0, 0, 0, 0x02];

    assert!(
        netlink
            .ensure_neighbour("weft.vxlan", ip("10.244.1.0"), mac)
            .unwrap()
    );
    assert!(
        !netlink
            .ensure_neighbour("weft.vxlan", ip("10.244.1.0"), mac)
            .unwrap()
    );
    assert_conflict(
        netlink.ensure_neighbour("weft.vxlan", ip("10.244.1.0"), other_mac),
        "neighbour 10.244.1.0 on link weft.vxlan",
        &host,
    );
    let neighbours = netlink.neighbours("weft.vxlan").unwrap();
    assert!(
        neighbours
            .iter()
            .any(|found| found.ip == ip("10.244.1.0") && found.mac == Some(mac) && found.permanent)
    );

    assert!(
        netlink
            .ensure_fdb("weft.vxlan", mac, ip("192.168.50.2"))
            .unwrap()
    );
    assert!(
        !netlink
            .ensure_fdb("weft.vxlan", mac, ip("192.168.50.2"))
            .unwrap()
    );
    assert_conflict(
        netlink.ensure_fdb("weft.vxlan", mac, ip("192.168.50.3")),
        "FDB entry 02:00:00:00:00:01 on link weft.vxlan",
        &host,
    );
    let entries = netlink.fdb_entries("weft.vxlan").unwrap();
    assert!(
        entries
            .iter()
            .any(|entry| entry.mac == mac && entry.dst == Some(ip("192.168.50.2")))
    );

    assert!(
        netlink
            .delete_fdb("weft.vxlan", mac, Some(ip("192.168.50.2")))
            .unwrap()
    );
    assert!(
        !netlink
            .delete_fdb("weft.vxlan", mac, Some(ip("192.168.50.2")))
            .unwrap()
    );
    assert!(
        netlink
            .delete_neighbour("weft.vxlan", ip("10.244.1.0"))
            .unwrap()
    );
    assert!(
        !netlink
            .delete_neighbour("weft.vxlan", ip("10.244.1.0"))
            .unwrap()
    );
}

#[test]
fn ensuring_a_vxlan_with_another_vni_conflicts() {
    require_root!();
    let host = TestNs::new();
    let mut netlink = host.netlink();
    let spec = VxlanSpec {
        name: "weft.vxlan".into(),
        vni: 1,
        port: 8472,
        local: None,
        underlay: None,
        learning: false,
        mtu: Some(1450),
    };
    let created = netlink.ensure_vxlan(&spec).unwrap();
    let info = created.vxlan.clone().expect("vxlan settings read back");
    assert_eq!((info.vni, info.port, info.learning), (1, 8472, false));
    assert_eq!(netlink.ensure_vxlan(&spec).unwrap().index, created.index);
    let other = VxlanSpec { vni: 2, ..spec };
    assert_conflict(netlink.ensure_vxlan(&other), "link weft.vxlan", &host);
}

#[test]
fn link_settings_read_back_as_set() {
    require_root!();
    let host = TestNs::new();
    let other = TestNs::new();
    let mut netlink = host.netlink();
    netlink.ensure_bridge("br0", None).unwrap();
    netlink
        .ensure_veth(&VethSpec {
            name: "port0".into(),
            peer_name: "port0-peer".into(),
            ..VethSpec::default()
        })
        .unwrap();
    netlink.set_master("port0", Some("br0")).unwrap();
    netlink.set_hairpin("port0", true).unwrap();
    netlink.set_isolated("port0", true).unwrap();
    netlink.set_mtu("port0", 1300).unwrap();
    netlink
        .set_mac("port0", [0x0a, 0x58, 0, 0, 0, 0x09])
        .unwrap();
    netlink.set_promisc("port0", true).unwrap();
    netlink.set_gso_max_size("port0", 196_608).unwrap();
    netlink.set_up("port0").unwrap();

    let bridge = netlink.require_link("br0").unwrap();
    let port = netlink.require_link("port0").unwrap();
    assert_eq!(port.master, Some(bridge.index));
    assert_eq!(port.hairpin, Some(true));
    assert_eq!(port.isolated, Some(true));
    assert_eq!(port.mtu, 1300);
    assert_eq!(port.mac, Some([0x0a, 0x58, 0, 0, 0, 0x09]));
    assert!(port.promisc);
    assert_eq!(port.gso_ipv4_max_size, Some(196_608));
    assert!(port.up);

    netlink.set_master("port0", None).unwrap();
    netlink.set_down("port0").unwrap();
    let port = netlink.require_link("port0").unwrap();
    assert_eq!(port.master, None);
    assert!(!port.up);

    netlink.rename("port0-peer", "renamed").unwrap();
    netlink.move_to_namespace("renamed", other.ns()).unwrap();
    assert!(netlink.link("renamed").unwrap().is_none());
    assert!(other.netlink().link("renamed").unwrap().is_some());
}

#[test]
fn missing_links_are_typed_errors_naming_link_and_namespace() {
    require_root!();
    let host = TestNs::new();
    let mut netlink = host.netlink();
    let err = netlink.set_up("nope0").unwrap_err();
    assert!(err.is_not_found());
    let message = err.to_string();
    assert!(
        message.contains("link nope0") && message.contains(host.name()),
        "{message}"
    );
    assert!(!netlink.delete_link("nope0").unwrap());
}

#[test]
fn sysctls_change_only_inside_the_namespace() {
    require_root!();
    let host = TestNs::new();
    let outside = sysctl::read(&NetNs::current(), sysctl::IPV4_FORWARD).unwrap();
    let before = sysctl::read(host.ns(), sysctl::IPV4_FORWARD).unwrap();
    assert_eq!(before, "0", "a new namespace starts without forwarding");

    assert!(sysctl::ensure(host.ns(), sysctl::IPV4_FORWARD, "1").unwrap());
    assert!(!sysctl::ensure(host.ns(), sysctl::IPV4_FORWARD, "1").unwrap());
    assert_eq!(sysctl::read(host.ns(), sysctl::IPV4_FORWARD).unwrap(), "1");
    assert_eq!(
        sysctl::read(&NetNs::current(), sysctl::IPV4_FORWARD).unwrap(),
        outside,
        "the test's own namespace changed"
    );

    let mut netlink: Netlink = host.netlink();
    netlink.ensure_bridge("weft.br", None).unwrap();
    let key = sysctl::iface_key("ipv4", "weft.br", "route_localnet");
    assert!(sysctl::ensure(host.ns(), &key, "1").unwrap());
    assert_eq!(sysctl::read(host.ns(), &key).unwrap(), "1");
    assert!(sysctl::ensure(host.ns(), sysctl::IPV6_FORWARD, "1").unwrap());

    let err = sysctl::ensure(host.ns(), "kernel.hostname", "x").unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
}
