//! Bridge VLAN filtering in a throwaway namespace: the flags written are the
//! flags read back, and a port's VLAN decides which other ports it reaches.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use weft_linux::netlink::BridgeVlan;
use weft_testhost::{TestNs, ip, net, plug, require_root};

/// Turns VLAN filtering on for `bridge`, or returns `false` (after saying
/// so) when this kernel is built without `CONFIG_BRIDGE_VLAN_FILTERING`.
fn vlan_filtering_on(netlink: &mut weft_linux::Netlink, bridge: &str) -> bool {
    match netlink.set_vlan_filtering(bridge, true) {
        Ok(()) => true,
        Err(weft_linux::Error::Netlink { source, .. })
            if source.raw_os_error() == Some(libc_eopnotsupp()) =>
        {
            println!("skipped: kernel without bridge VLAN filtering");
            false
        }
        Err(err) => panic!("turning VLAN filtering on: {err}"),
    }
}

/// EOPNOTSUPP on Linux.
fn libc_eopnotsupp() -> i32 {
    95
}

fn vlan(vid: u16, pvid: bool, untagged: bool) -> BridgeVlan {
    BridgeVlan {
        vid,
        pvid,
        untagged,
    }
}

#[test]
fn vlan_filtering_and_port_vlans_read_back_as_set_and_deleting_twice_is_fine() {
    require_root!();
    let host = TestNs::new();
    let mut netlink = host.netlink();
    netlink.ensure_bridge("br0", None).unwrap();
    assert!(!netlink.vlan_filtering("br0").unwrap());
    if !vlan_filtering_on(&mut netlink, "br0") {
        return;
    }
    assert!(netlink.vlan_filtering("br0").unwrap());

    netlink
        .ensure_veth(&weft_linux::VethSpec {
            name: "port0".into(),
            peer_name: "peer0".into(),
            ..Default::default()
        })
        .unwrap();
    netlink.set_master("port0", Some("br0")).unwrap();
    // With filtering on, a new port starts in the default VLAN.
    assert_eq!(
        netlink.bridge_vlans("port0").unwrap(),
        vec![vlan(1, true, true)]
    );

    netlink.ensure_bridge_vlan("port0", 10, true, true).unwrap();
    netlink
        .ensure_bridge_vlan("port0", 20, false, false)
        .unwrap();
    // A port has one PVID: VLAN 10 took it from VLAN 1.
    assert_eq!(
        netlink.bridge_vlans("port0").unwrap(),
        vec![
            vlan(1, false, true),
            vlan(10, true, true),
            vlan(20, false, false)
        ]
    );

    assert!(netlink.delete_bridge_vlan("port0", 1).unwrap());
    assert!(!netlink.delete_bridge_vlan("port0", 1).unwrap());
    assert!(!netlink.delete_bridge_vlan("no-such-port", 1).unwrap());
    assert_eq!(
        netlink.bridge_vlans("port0").unwrap(),
        vec![vlan(10, true, true), vlan(20, false, false)]
    );

    // The bridge device itself (`self`) has VLANs of its own.
    netlink.ensure_bridge_vlan("br0", 10, false, false).unwrap();
    assert!(
        netlink
            .bridge_vlans("br0")
            .unwrap()
            .contains(&vlan(10, false, false))
    );
    assert!(netlink.delete_bridge_vlan("br0", 10).unwrap());
    assert!(
        !netlink
            .bridge_vlans("br0")
            .unwrap()
            .iter()
            .any(|v| v.vid == 10)
    );
}

#[test]
fn ports_reach_each_other_only_within_their_vlan() {
    require_root!();
    let host = TestNs::new();
    let (a, b, c) = (TestNs::new(), TestNs::new(), TestNs::new());
    let mut netlink = host.netlink();
    netlink.ensure_bridge("br0", None).unwrap();
    if !vlan_filtering_on(&mut netlink, "br0") {
        return;
    }
    netlink.set_up("br0").unwrap();
    for (n, (container, vid)) in [(&a, 10), (&b, 10), (&c, 20)].into_iter().enumerate() {
        let port = format!("port{n}");
        plug(
            &host,
            "br0",
            &port,
            container,
            "eth0",
            Some(net(&format!("10.77.0.{}/24", n + 1))),
        );
        netlink.ensure_bridge_vlan(&port, vid, true, true).unwrap();
    }
    assert!(a.ping(ip("10.77.0.2")), "a and b share VLAN 10");
    assert!(!a.ping(ip("10.77.0.3")), "c is on VLAN 20");
}
