//! The portmap plugin's pure parts: mapping resolution and the rules built.

use serde_json::json;

use super::*;

fn conf_with(mappings: serde_json::Value) -> NetConf {
    let raw = json!({
        "cniVersion": "1.1.0", "name": "pods", "type": "portmap",
        "runtimeConfig": {"portMappings": mappings}
    });
    NetConf::parse(raw.to_string().as_bytes()).unwrap()
}

fn prev() -> CniResult {
    CniResult::from_value(&json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [
            {"address": "10.1.0.5/24", "interface": 2},
            {"address": "fd00::5/64", "interface": 2}
        ]
    }))
    .unwrap()
}

#[test]
fn each_mapping_targets_every_container_address_unless_host_ip_picks_a_family() {
    let conf = conf_with(json!([
        {"hostPort": 8080, "containerPort": 80},
        {"hostPort": 5353, "containerPort": 53, "protocol": "UDP", "hostIP": "192.0.2.10"}
    ]));
    let mappings = resolve(&conf, &prev()).unwrap();
    let summary: Vec<(u8, u16, Option<String>, String)> = mappings
        .iter()
        .map(|m| {
            (
                m.proto,
                m.host_port,
                m.host_ip.map(|ip| ip.to_string()),
                m.container_ip.to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (6, 8080, None, "10.1.0.5".to_owned()),
            (6, 8080, None, "fd00::5".to_owned()),
            (
                17,
                5353,
                Some("192.0.2.10".to_owned()),
                "10.1.0.5".to_owned()
            ),
        ]
    );
}

#[test]
fn unknown_protocol_or_port_zero_is_error_7() {
    for bad in [
        json!([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]),
        json!([{"hostPort": 0, "containerPort": 80}]),
        json!([{"hostPort": 80}]),
        json!([{"hostPort": 80, "containerPort": 80}, {"hostPort": 80, "containerPort": 81}]),
        json!([
            {"hostPort": 80, "containerPort": 80, "hostIP": "192.0.2.1"},
            {"hostPort": 80, "containerPort": 81}
        ]),
    ] {
        let err = resolve(&conf_with(bad.clone()), &prev()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidNetworkConfig, "{bad}");
    }
}

#[test]
fn one_host_port_on_two_host_addresses_or_protocols_is_fine() {
    let both = json!([
        {"hostPort": 80, "containerPort": 80, "hostIP": "192.0.2.1"},
        {"hostPort": 80, "containerPort": 81, "hostIP": "192.0.2.2"},
        {"hostPort": 80, "containerPort": 82, "protocol": "udp"}
    ]);
    assert!(resolve(&conf_with(both), &prev()).is_ok());
}

#[test]
fn without_port_mappings_there_is_nothing_to_do() {
    let raw = json!({"cniVersion": "1.1.0", "name": "pods", "type": "portmap"});
    let conf = NetConf::parse(raw.to_string().as_bytes()).unwrap();
    assert!(resolve(&conf, &prev()).unwrap().is_empty());
}

#[test]
fn snat_adds_hairpin_and_localhost_masquerade_and_masq_all_one_catch_all() {
    let mappings = resolve(
        &conf_with(json!([{"hostPort": 8080, "containerPort": 80}])),
        &prev(),
    )
    .unwrap();
    let chains = |rules: Vec<(Family, Rule)>| -> Vec<String> {
        rules.into_iter().map(|(_, r)| r.chain).collect()
    };
    assert_eq!(
        chains(rules(&mappings[..1], true, false)),
        ["prerouting", "output", "postrouting", "postrouting"]
    );
    assert_eq!(
        chains(rules(&mappings[..1], true, true)),
        ["prerouting", "output", "postrouting"]
    );
    assert_eq!(
        chains(rules(&mappings[..1], false, false)),
        ["prerouting", "output"]
    );
    let (family, dnat) = &rules(&mappings[1..], false, false)[0];
    assert_eq!(*family, Family::Ip6);
    assert!(matches!(dnat.exprs.last(), Some(Expr::Nat { .. })));
}

#[test]
fn iptables_conditions_are_refused_with_error_2() {
    let raw = json!({"cniVersion": "1.1.0", "name": "pods", "type": "portmap",
                     "conditionsV4": ["-s", "1.2.3.4"]});
    let conf = NetConf::parse(raw.to_string().as_bytes()).unwrap();
    assert_eq!(load(&conf).unwrap_err().code, ErrorCode::UnsupportedField);
}
