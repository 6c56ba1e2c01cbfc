//! Reading the pod network's view of the cluster out of Node objects: each
//! node's underlay address (`status.addresses`, InternalIP first) and pod
//! subnet (`spec.podCIDR`). Nodes without an address are left out with a
//! reason; a node without a subnet yet is kept (its peers skip it).

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use weft_podnet::NodeNet;

/// The pod network's view of one Node, or why it has none.
pub fn node_net(node: &Node) -> Result<NodeNet, String> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let addresses = node
        .status
        .as_ref()
        .and_then(|status| status.addresses.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let pick = |kind: &str| {
        addresses
            .iter()
            .filter(|address| address.type_ == kind)
            .find_map(|address| address.address.parse::<IpAddr>().ok())
    };
    let address = pick("InternalIP")
        .or_else(|| pick("ExternalIP"))
        .ok_or_else(|| format!("Node {name} has no InternalIP address"))?;
    let pod_cidr = match node.spec.as_ref().and_then(|spec| spec.pod_cidr.as_deref()) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<IpNet>()
                .map_err(|_| format!("Node {name} has an unparsable podCIDR {text:?}"))?,
        ),
    };
    Ok(NodeNet {
        name,
        address,
        pod_cidr,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(addresses: &[(&str, &str)], pod_cidr: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("node-1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: pod_cidr.map(str::to_owned),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(kind, address)| NodeAddress {
                            type_: (*kind).to_owned(),
                            address: (*address).to_owned(),
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
        }
    }

    #[test]
    fn the_internal_ip_and_pod_cidr_are_read() {
        let net = node_net(&node(
            &[("Hostname", "node-1"), ("InternalIP", "192.168.10.11")],
            Some("10.244.1.0/24"),
        ))
        .unwrap();
        assert_eq!(net.address, "192.168.10.11".parse::<IpAddr>().unwrap());
        assert_eq!(net.pod_cidr, Some("10.244.1.0/24".parse().unwrap()));
    }

    #[test]
    fn a_node_without_an_address_is_refused_with_a_reason() {
        let err = node_net(&node(&[("Hostname", "node-1")], None)).unwrap_err();
        assert_eq!(err, "Node node-1 has no InternalIP address");
    }

    #[test]
    fn a_node_without_a_subnet_yet_is_kept() {
        let net = node_net(&node(&[("InternalIP", "192.168.10.11")], None)).unwrap();
        assert_eq!(net.pod_cidr, None);
    }
}
