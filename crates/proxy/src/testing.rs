//! Builders for proxy inputs in tests, benches and examples of this crate
//! (unit and integration tests alike): the minimal ClusterIP Service port.
//! Not for product code: addresses are parsed with `expect`.

use crate::compile::ProxyConfig;
use crate::service::{Endpoint, PortName, Protocol, ServicePort};

/// Node `node-1` in cluster CIDR 10.244.0.0/16.
pub fn node_1_config() -> ProxyConfig {
    ProxyConfig {
        node_name: "node-1".into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().expect("a CIDR")],
    }
}

/// Port 80 of ClusterIP Service `default/<name>` at `cluster_ip`, with
/// ready endpoints `endpoints` on port 8080 of node `node`.
pub fn cluster_ip_port(
    name: &str,
    protocol: Protocol,
    cluster_ip: &str,
    endpoints: &[&str],
    node: Option<&str>,
) -> ServicePort {
    let name = PortName::new("default", name, "", protocol);
    let endpoints = endpoints
        .iter()
        .map(|ip| {
            Endpoint::ready(
                ip.parse().expect("an endpoint IP"),
                8080,
                node.map(str::to_owned),
            )
        })
        .collect();
    ServicePort::new(
        name,
        80,
        vec![cluster_ip.parse().expect("a cluster IP")],
        endpoints,
    )
}
