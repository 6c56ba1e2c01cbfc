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
    ] {
        assert_eq!(
            load(extra.clone()).unwrap_err().code,
            ErrorCode::InvalidNetworkConfig,
            "{extra}"
        );
    }
}

#[test]
fn macspoofchk_and_vlan_are_refused_with_error_2_but_ip_masq_is_accepted() {
    for extra in [json!({"macspoofchk": true}), json!({"vlan": 10})] {
        let keys = load(extra.clone()).unwrap();
        assert_eq!(
            keys.refuse_unsupported().unwrap_err().code,
            ErrorCode::UnsupportedField,
            "{extra}"
        );
    }
    for extra in [json!({"vlan": 0}), json!({"ipMasq": true})] {
        assert_eq!(load(extra).unwrap().refuse_unsupported(), Ok(()));
    }
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
