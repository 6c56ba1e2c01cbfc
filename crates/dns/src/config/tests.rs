use std::net::SocketAddr;

use super::{Config, Policy, resolv_conf_nameservers};
use crate::records::PodMode;

#[test]
fn empty_file_gives_kubeadm_like_defaults() {
    let config = Config::parse("").expect("empty config");
    assert_eq!(config, Config::default());
    assert_eq!(config.zone, "cluster.local");
    assert_eq!(config.ttl, 30);
    assert_eq!(config.pods, PodMode::Insecure);
    assert_eq!(config.cache.max_positive_ttl, 30);
}

#[test]
fn keys_override_defaults() {
    let config = Config::parse(
        "listen = \"127.0.0.1:5353\"\nzone = \"corp.example\"\npods = \"verified\"\nupstreams = [\"192.0.2.1\", \"192.0.2.2:5300\"]\npolicy = \"random\"\n[cache]\nmax_entries = 5\n",
    )
    .expect("valid config");
    assert_eq!(
        config.listen,
        "127.0.0.1:5353".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(config.pods, PodMode::Verified);
    assert_eq!(config.policy, Policy::Random);
    assert_eq!(config.cache.max_entries, 5);
    assert_eq!(config.cache.max_negative_ttl, 30);
    let upstreams: Vec<String> = config
        .upstream_addrs()
        .expect("upstreams")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(upstreams, ["192.0.2.1:53", "192.0.2.2:5300"]);
}

#[test]
fn unknown_key_is_rejected() {
    let err = Config::parse("listne = \"127.0.0.1:53\"").expect_err("typo");
    assert!(err.to_string().contains("listne"), "{err}");
}

#[test]
fn resolv_conf_nameservers_are_port_53() {
    let text = "# comment\nsearch example.com\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\noptions ndots:5\n";
    let addrs: Vec<String> = resolv_conf_nameservers(text)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(addrs, ["192.0.2.53:53", "[fe80::1]:53"]);
}

#[test]
fn values_that_parse_but_cannot_work_are_refused_by_field() {
    let checked = |text: &str| {
        let mut config = Config::parse(text).expect("parses");
        config.check().map(|()| config.zone.clone())
    };
    assert_eq!(
        checked("zone = \"Cluster.Local.\""),
        Ok("cluster.local".to_owned())
    );
    assert_eq!(checked("zone = \"..bad..zone\"").unwrap_err().0, "zone");
    assert_eq!(
        checked("[limits]\nmax_udp_payload = 10").unwrap_err().0,
        "limits.max_udp_payload"
    );
    assert_eq!(
        checked("[limits]\ntcp_pipeline = 0").unwrap_err().0,
        "limits.tcp_pipeline"
    );
    assert_eq!(
        checked("[limits]\nmax_tcp_connections = 0").unwrap_err().0,
        "limits.max_tcp_connections"
    );
}
