use super::*;

fn node(name: &str, address: &str, pod_cidr: Option<&str>) -> NodeNet {
    NodeNet {
        name: name.to_owned(),
        address: address.parse().unwrap(),
        pod_cidr: pod_cidr.map(|cidr| cidr.parse().unwrap()),
    }
}

fn three_nodes() -> Vec<NodeNet> {
    vec![
        node("node-1", "192.168.10.11", Some("10.244.1.0/24")),
        node("node-2", "192.168.10.12", Some("10.244.2.0/24")),
        node("node-3", "192.168.10.13", Some("10.244.3.0/24")),
    ]
}

#[test]
fn host_gw_routes_each_peer_subnet_via_the_peer_node() {
    let plan = plan(&Config::default(), "node-1", &three_nodes()).unwrap();
    assert_eq!(plan.pod_cidr, "10.244.1.0/24".parse().unwrap());
    assert_eq!(plan.gateway, "10.244.1.1/24".parse().unwrap());
    assert_eq!(plan.mtu, 1500);
    assert_eq!(plan.vtep, None);
    let routes: Vec<(String, String)> = plan
        .peers
        .iter()
        .map(|peer| (peer.pod_cidr.to_string(), peer.gateway.to_string()))
        .collect();
    assert_eq!(
        routes,
        [
            ("10.244.2.0/24".to_owned(), "192.168.10.12".to_owned()),
            ("10.244.3.0/24".to_owned(), "192.168.10.13".to_owned()),
        ]
    );
}

#[test]
fn vxlan_uses_vtep_addresses_derived_macs_and_a_smaller_mtu() {
    let config = Config {
        mode: Mode::Vxlan,
        ..Config::default()
    };
    let plan = plan(&config, "node-2", &three_nodes()).unwrap();
    assert_eq!(plan.mtu, 1450);
    let vtep = plan.vtep.as_ref().unwrap();
    assert_eq!(vtep.device, "weft.vxlan");
    assert_eq!((vtep.vni, vtep.port, vtep.mtu), (1, 8472, 1450));
    assert_eq!(vtep.address, "10.244.2.0/32".parse().unwrap());
    assert_eq!(vtep.mac, [0x0e, 0x57, 192, 168, 10, 12]);
    assert_eq!(vtep.local, "192.168.10.12".parse::<IpAddr>().unwrap());
    let first = &plan.peers[0];
    assert_eq!(first.name, "node-1");
    assert_eq!(first.gateway, "10.244.1.0".parse::<IpAddr>().unwrap());
    assert_eq!(first.vtep_mac, Some([0x0e, 0x57, 192, 168, 10, 11]));
    assert_eq!(first.underlay, "192.168.10.11".parse::<IpAddr>().unwrap());
}

#[test]
fn peers_without_a_pod_cidr_are_skipped_with_a_reason() {
    let mut nodes = three_nodes();
    nodes[2].pod_cidr = None;
    let plan = plan(&Config::default(), "node-1", &nodes).unwrap();
    assert_eq!(plan.peers.len(), 1);
    assert_eq!(
        plan.skipped,
        [("node-3".to_owned(), "no pod CIDR yet".to_owned())]
    );
}

#[test]
fn this_node_must_exist_have_a_subnet_inside_the_cluster_cidr() {
    let mut nodes = three_nodes();
    assert_eq!(
        plan(&Config::default(), "node-9", &nodes),
        Err(PlanError::UnknownNode("node-9".to_owned()))
    );
    nodes[0].pod_cidr = None;
    assert_eq!(
        plan(&Config::default(), "node-1", &nodes),
        Err(PlanError::NoPodCidr("node-1".to_owned()))
    );
    nodes[0].pod_cidr = Some("10.99.0.0/24".parse().unwrap());
    assert!(matches!(
        plan(&Config::default(), "node-1", &nodes),
        Err(PlanError::OutsideCluster { .. })
    ));
    nodes[0].pod_cidr = Some("10.244.1.0/32".parse().unwrap());
    assert!(matches!(
        plan(&Config::default(), "node-1", &nodes),
        Err(PlanError::SubnetTooSmall { .. })
    ));
}

#[test]
fn a_pod_cidr_given_with_host_bits_is_normalised() {
    let mut nodes = three_nodes();
    nodes[0].pod_cidr = Some("10.244.1.7/24".parse().unwrap());
    let plan = plan(&Config::default(), "node-1", &nodes).unwrap();
    assert_eq!(plan.pod_cidr, "10.244.1.0/24".parse().unwrap());
}

#[test]
fn modes_parse_from_their_cli_names() {
    assert_eq!("host-gw".parse::<Mode>(), Ok(Mode::HostGw));
    assert_eq!("vxlan".parse::<Mode>(), Ok(Mode::Vxlan));
    assert!("flannel".parse::<Mode>().is_err());
    assert_eq!(Mode::Vxlan.to_string(), "vxlan");
}

#[test]
fn an_uplink_mtu_too_small_for_vxlan_is_refused() {
    let config = Config {
        mode: Mode::Vxlan,
        uplink_mtu: 600,
        ..Config::default()
    };
    assert_eq!(
        plan(&config, "node-1", &three_nodes()),
        Err(PlanError::MtuTooSmall(600))
    );
}

#[test]
fn pods_follow_an_uplink_with_big_tcp_in_host_gw_mode_only() {
    let big = Config {
        uplink_gso_max_size: 196_608,
        ..Config::default()
    };
    let plan_of = |config: &Config| plan(config, "node-1", &three_nodes()).unwrap();
    assert_eq!(plan_of(&big).gso_max_size, Some(196_608));
    assert_eq!(plan_of(&Config::default()).gso_max_size, None);
    let vxlan = Config {
        mode: Mode::Vxlan,
        ..big
    };
    assert_eq!(plan_of(&vxlan).gso_max_size, None);
}
