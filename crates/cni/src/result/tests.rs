//! Results emitted in each spec version and parsed back.

use serde_json::json;

use super::*;

fn sample() -> CniResult {
    CniResult {
        interfaces: vec![Interface {
            name: "eth0".into(),
            mac: Some("aa:bb:cc:dd:ee:ff".into()),
            mtu: Some(1450),
            sandbox: Some("/run/netns/blue".into()),
            ..Interface::default()
        }],
        ips: vec![
            IpConfig {
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: Some(0),
            },
            IpConfig {
                address: "fd00::5/64".parse().unwrap(),
                gateway: None,
                interface: Some(0),
            },
        ],
        routes: vec![Route {
            priority: Some(100),
            ..Route::new("0.0.0.0/0".parse().unwrap(), None)
        }],
        dns: Dns::default(),
    }
}

#[test]
fn results_for_0_4_0_carry_the_ip_family_in_each_ip_entry() {
    let out = sample().to_json(Version::V0_4_0);
    assert_eq!(out["cniVersion"], "0.4.0");
    assert_eq!(out["ips"][0]["version"], "4");
    assert_eq!(out["ips"][1]["version"], "6");
    assert_eq!(out["ips"][0]["address"], "10.1.0.5/24");
    assert_eq!(out["ips"][0]["gateway"], "10.1.0.1");
}

#[test]
fn results_for_1_0_0_have_no_ip_version_and_no_1_1_attributes() {
    let out = sample().to_json(Version::V1_0_0);
    assert!(out["ips"][0].get("version").is_none());
    assert!(out["interfaces"][0].get("mtu").is_none());
    assert_eq!(out["routes"][0], json!({"dst": "0.0.0.0/0"}));
}

#[test]
fn results_for_1_1_0_carry_interface_mtu_and_route_priority() {
    let out = sample().to_json(Version::V1_1_0);
    assert_eq!(out["interfaces"][0]["mtu"], 1450);
    assert_eq!(out["interfaces"][0]["sandbox"], "/run/netns/blue");
    assert_eq!(out["routes"][0]["priority"], 100);
    assert_eq!(out["ips"][1]["interface"], 0);
}

#[test]
fn results_of_every_version_parse_back_to_the_same_result() {
    for version in crate::SUPPORTED_VERSIONS {
        let parsed = CniResult::from_value(&sample().to_json(version)).unwrap();
        assert_eq!(parsed.ips, sample().ips, "{version}");
    }
}

#[test]
fn a_result_with_a_bad_address_is_a_decode_error() {
    let err = CniResult::from_value(&json!({"ips": [{"address": "10.1.0.300/24"}]})).unwrap_err();
    assert_eq!(err.code, ErrorCode::Decode);
}
