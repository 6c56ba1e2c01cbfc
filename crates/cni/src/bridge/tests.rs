//! The bridge plugin's pure parts: keys, veth names, default routes, rules.

use serde_json::json;

use super::*;

fn load(extra: serde_json::Value) -> Result<BridgeConf, CniError> {
    let mut raw = json!({"cniVersion": "1.0.0", "name": "pods", "type": "bridge"});
    for (key, value) in extra.as_object().unwrap() {
        raw[key] = value.clone();
    }
    BridgeConf::load(&NetConf::parse(raw.to_string().as_bytes()).unwrap())
}

#[test]
fn defaults_match_the_reference_plugin() {
    let keys = load(json!({})).unwrap();
    assert_eq!(keys.bridge, "cni0");
    assert!(!keys.is_gateway && !keys.ip_masq && !keys.hairpin_mode);
    assert_eq!(keys.mtu, None);
}

#[test]
fn is_default_gateway_implies_is_gateway() {
    assert!(load(json!({"isDefaultGateway": true})).unwrap().is_gateway);
}

#[test]
fn hairpin_with_promiscuous_mode_or_a_bad_vlan_is_error_7() {
    for extra in [
        json!({"hairpinMode": true, "promiscMode": true}),
        json!({"vlan": 5000}),
        json!({"bridge": "a-bridge-name-too-long"}),
        json!({"mtu": "big"}),
        json!({"mtu": 100_000}),
        json!({"mtu": 20}),
    ] {
        assert_eq!(
            load(extra.clone()).unwrap_err().code,
            ErrorCode::InvalidNetworkConfig,
            "{extra}"
        );
    }
}

#[test]
fn macspoofchk_rule_drops_other_source_macs_from_the_attachments_veth_only() {
    let (family, rule) = spoofchk::rule_for("veth0a1b2c3d", [2, 0, 0, 0, 0, 1]);
    assert_eq!(family, weft_nft::Family::Bridge);
    assert_eq!(rule.chain, "prerouting");
    let text = format!("{:?}", rule.exprs);
    assert!(
        text.contains("IifName") && text.contains("LinkLayer"),
        "{text}"
    );
    assert!(text.contains("Neq") && text.contains("Drop"), "{text}");
}

#[test]
fn vlan_turns_filtering_on_and_zero_means_no_vlan() {
    let keys = load(json!({"vlan": 10})).unwrap();
    assert_eq!(keys.access_vlan(), Some(10));
    assert!(keys.vlan_filtering());
    assert!(keys.preserve_default_vlan);
    let keys = load(json!({"vlan": 0})).unwrap();
    assert_eq!(keys.access_vlan(), None);
    assert!(!keys.vlan_filtering());
}

#[test]
fn vlan_trunk_expands_ranges_and_single_ids_sorted_without_duplicates() {
    let keys = load(json!({"vlanTrunk": [
        {"minID": 100, "maxID": 103}, {"id": 5}, {"id": 101}
    ]}))
    .unwrap();
    assert_eq!(keys.trunk(), vec![5, 100, 101, 102, 103]);
    assert!(keys.vlan_filtering());
}

#[test]
fn bad_vlan_trunks_and_vlan_with_trunk_are_error_7_like_the_reference() {
    for extra in [
        json!({"vlanTrunk": [{"minID": 0, "maxID": 10}]}),
        json!({"vlanTrunk": [{"minID": 10, "maxID": 4095}]}),
        json!({"vlanTrunk": [{"minID": 20, "maxID": 10}]}),
        json!({"vlanTrunk": [{"minID": 20}]}),
        json!({"vlanTrunk": [{"maxID": 20}]}),
        json!({"vlanTrunk": [{"id": 5000}]}),
        json!({"vlan": 10, "vlanTrunk": [{"id": 20}]}),
        json!({"vlan": 10, "isGateway": true, "bridge": "fifteen-chars-x"}),
    ] {
        let err = load(extra.clone()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidNetworkConfig, "{extra}");
    }
}

#[test]
fn vlan_gateway_is_named_after_the_bridge_and_the_vlan() {
    assert_eq!(vlan_gateway_name("cni0", 100), "cni0.100");
}

#[test]
fn host_veth_names_are_stable_distinct_and_valid_interface_names() {
    let a = host_veth_name("c1", "eth0");
    assert_eq!(a, host_veth_name("c1", "eth0"));
    assert_ne!(a, host_veth_name("c1", "net1"));
    assert_ne!(a, host_veth_name("c2", "eth0"));
    assert!(a.starts_with("veth") && a.len() == 12, "{a}");
}

#[test]
fn default_gateway_routes_are_added_per_family_unless_ipam_routes_the_default_already() {
    let mut result = CniResult {
        ips: vec![
            IpConfig {
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: None,
            },
            IpConfig {
                address: "fd00::5/64".parse().unwrap(),
                gateway: Some("fd00::1".parse().unwrap()),
                interface: None,
            },
        ],
        routes: vec![Route::new("::/0".parse().unwrap(), None)],
        ..CniResult::default()
    };
    add_default_routes(&mut result).unwrap();
    assert_eq!(
        result.routes,
        vec![
            Route::new("::/0".parse().unwrap(), None),
            Route::new(
                "0.0.0.0/0".parse().unwrap(),
                Some("10.1.0.1".parse().unwrap())
            ),
        ]
    );
    result.routes = vec![Route::new(
        "0.0.0.0/0".parse().unwrap(),
        Some("10.1.0.254".parse().unwrap()),
    )];
    assert_eq!(
        add_default_routes(&mut result).unwrap_err().code,
        ErrorCode::InvalidNetworkConfig
    );
}

#[test]
fn masquerade_rule_matches_the_pod_address_and_ends_in_masquerade() {
    let ip = IpConfig {
        address: "10.1.0.5/24".parse().unwrap(),
        gateway: None,
        interface: Some(2),
    };
    let (family, rule) = masq::rule_for(&ip);
    assert_eq!(family, weft_nft::Family::Ip);
    assert_eq!(rule.chain, masq::CHAIN);
    assert!(matches!(
        rule.exprs.last(),
        Some(weft_nft::Expr::Masquerade(_))
    ));
    let owner = Tag {
        plugin: "bridge",
        network: "pods",
        container_id: "c1",
        ifname: "eth0",
    };
    assert_eq!(owner.comment(), "weft-bridge pods c1 eth0");
}

#[test]
fn gso_max_size_is_read_and_zero_means_the_kernel_default() {
    assert_eq!(load(json!({})).unwrap().gso_max_size, None);
    assert_eq!(load(json!({"gsoMaxSize": 0})).unwrap().gso_max_size, None);
    assert_eq!(
        load(json!({"gsoMaxSize": 196_608})).unwrap().gso_max_size,
        Some(196_608)
    );
}
