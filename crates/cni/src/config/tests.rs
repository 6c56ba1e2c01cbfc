//! Parsing a plugin's stdin: well-known keys, plugin keys, error codes.

use serde::Deserialize;
use serde_json::{Value, json};

use super::*;

fn parse(value: Value) -> Result<NetConf, CniError> {
    NetConf::parse(value.to_string().as_bytes())
}

#[test]
fn well_known_keys_are_parsed_and_plugin_keys_kept() {
    let conf = parse(json!({
        "cniVersion": "1.1.0", "name": "pods", "type": "bridge",
        "bridge": "cni0", "isGateway": true,
        "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"},
        "runtimeConfig": {"portMappings": []},
        "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.2/24"}]},
        "dns": {"nameservers": ["10.96.0.10"]}
    }))
    .unwrap();
    assert_eq!(conf.cni_version, Version::V1_1_0);
    assert_eq!(conf.name, "pods");
    assert_eq!(conf.plugin_type, "bridge");
    assert_eq!(conf.ipam_type(), Some("host-local"));
    assert!(conf.runtime_config.contains_key("portMappings"));
    assert_eq!(conf.dns.nameservers, vec!["10.96.0.10".to_owned()]);
    let prev = conf.prev_result.as_ref().unwrap();
    assert_eq!(prev.ips[0].address.to_string(), "10.1.0.2/24");

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Keys {
        bridge: String,
        is_gateway: bool,
    }
    let keys: Keys = conf.plugin_keys().unwrap();
    assert_eq!((keys.bridge.as_str(), keys.is_gateway), ("cni0", true));
}

#[test]
fn malformed_json_is_error_6() {
    let err = NetConf::parse(b"{\"cniVersion\": \"1.0.0\",").unwrap_err();
    assert_eq!(err.code, ErrorCode::Decode);
}

#[test]
fn unsupported_or_missing_version_is_error_1() {
    for conf in [
        json!({"cniVersion": "0.2.0", "name": "n"}),
        json!({"cniVersion": "9.9.9", "name": "n"}),
        json!({"name": "n"}),
    ] {
        assert_eq!(
            parse(conf).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );
    }
    let number = parse(json!({"cniVersion": 1.0, "name": "n"})).unwrap_err();
    assert_eq!(number.code, ErrorCode::IncompatibleVersion);
    assert!(number.details.contains("must be a string"), "{number:?}");
}

#[test]
fn missing_or_unsafe_network_name_is_error_7() {
    for conf in [
        json!({"cniVersion": "1.0.0"}),
        json!({"cniVersion": "1.0.0", "name": "../etc"}),
        json!({"cniVersion": "1.0.0", "name": ""}),
    ] {
        assert_eq!(
            parse(conf).unwrap_err().code,
            ErrorCode::InvalidNetworkConfig
        );
    }
}

#[test]
fn gc_attachments_are_read_from_the_current_and_the_older_key() {
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        let conf = parse(json!({
            "cniVersion": "1.1.0", "name": "n",
            key: [{"containerID": "c1", "ifname": "eth0"}]
        }))
        .unwrap();
        assert_eq!(
            conf.valid_attachments,
            vec![Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }],
            "{key}"
        );
    }
}
