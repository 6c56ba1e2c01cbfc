//! The pure half of the pod network: from the cluster's nodes (name,
//! underlay address, pod subnet) and this node's name, compute everything
//! this node's kernel must hold — the pod bridge and its gateway address,
//! and per peer node either one route (`host-gw`) or a route, a permanent
//! neighbour and an FDB entry on the VXLAN device (`vxlan`).
//!
//! No I/O here: [`plan`] is unit-tested against expected plans, and
//! [`crate::apply`] turns a plan into kernel state.

use std::net::IpAddr;

use ipnet::IpNet;

/// How pod traffic crosses between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A route to each peer's pod subnet via the peer's underlay address;
    /// needs the nodes on one L2 segment.
    #[default]
    HostGw,
    /// A VXLAN overlay (one device per node, VNI 1, UDP 8472); works across
    /// routed underlays at the cost of 50 bytes of MTU.
    Vxlan,
}

impl std::str::FromStr for Mode {
    type Err = PlanError;
    fn from_str(text: &str) -> Result<Mode, PlanError> {
        match text {
            "host-gw" => Ok(Mode::HostGw),
            "vxlan" => Ok(Mode::Vxlan),
            other => Err(PlanError::UnknownMode(other.to_owned())),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::HostGw => "host-gw",
            Mode::Vxlan => "vxlan",
        })
    }
}

/// What the pod network needs to know about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    /// Node name.
    pub name: String,
    /// The node's underlay (InternalIP) address.
    pub address: IpAddr,
    /// The node's pod subnet (`Node.spec.podCIDR`), once allocated.
    pub pod_cidr: Option<IpNet>,
}

/// Cluster-wide pod network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The cluster CIDR every node subnet is carved from.
    pub cluster_cidr: IpNet,
    /// Cross-node mode.
    pub mode: Mode,
    /// Name of the pod bridge on every node.
    pub bridge: String,
    /// Name of the VXLAN device.
    pub vxlan_device: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// VXLAN UDP port.
    pub vxlan_port: u16,
    /// The node's uplink device (the one holding its underlay address).
    pub uplink: String,
    /// MTU of the uplink.
    pub uplink_mtu: u32,
    /// Largest IPv4 GSO packet of the uplink (`gso_ipv4_max_size`, 65536
    /// unless the uplink has BIG TCP on). In host-gw mode the bridge and the
    /// pods follow it, as they follow its MTU.
    pub uplink_gso_max_size: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            cluster_cidr: IpNet::V4(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(10, 244, 0, 0),
                16,
            )),
            mode: Mode::HostGw,
            bridge: "cni0".to_owned(),
            vxlan_device: "weft.vxlan".to_owned(),
            vni: 1,
            vxlan_port: 8472,
            uplink: "eth0".to_owned(),
            uplink_mtu: 1500,
            uplink_gso_max_size: LEGACY_GSO_MAX_SIZE,
        }
    }
}

/// The kernel's GSO/GRO max size without BIG TCP (`GSO_LEGACY_MAX_SIZE`).
pub const LEGACY_GSO_MAX_SIZE: u32 = 65_536;

/// VXLAN overhead: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The VXLAN device of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vtep {
    /// Device name.
    pub device: String,
    /// VNI.
    pub vni: u32,
    /// UDP port.
    pub port: u16,
    /// Outer source address (the node's underlay address).
    pub local: IpAddr,
    /// Underlay device.
    pub underlay: String,
    /// Device MTU.
    pub mtu: u32,
    /// Device MAC, derived from the node address (see [`vtep_mac`]).
    pub mac: [u8; 6],
    /// The VTEP's own address: the pod subnet's network address, /32 or /128.
    pub address: IpNet,
}

/// One peer node as programmed on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Peer node name.
    pub name: String,
    /// Peer's pod subnet.
    pub pod_cidr: IpNet,
    /// Next hop for the subnet: the peer's underlay address (`host-gw`) or
    /// its VTEP address (`vxlan`).
    pub gateway: IpAddr,
    /// For `vxlan`: the peer's VTEP MAC (neighbour entry for `gateway`, FDB
    /// entry towards `underlay`).
    pub vtep_mac: Option<[u8; 6]>,
    /// The peer's underlay address.
    pub underlay: IpAddr,
}

/// Everything this node's kernel must hold for the pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Settings the plan was made with.
    pub config: Config,
    /// This node's pod subnet.
    pub pod_cidr: IpNet,
    /// Address of the pod bridge: the first host of the pod subnet, with the
    /// subnet's prefix (pods' default gateway).
    pub gateway: IpNet,
    /// MTU of the bridge and of every pod interface.
    pub mtu: u32,
    /// GSO/GRO max size of the bridge and of both ends of every pod's veth
    /// pair: the uplink's, in host-gw mode, when it is above the legacy
    /// 65536 (BIG TCP); `None` (kernel default) otherwise. A pod's TCP then
    /// sends packets as large as the uplink takes, so every hop on the way
    /// (veth, bridge, forwarding, conntrack and nftables hooks) is paid for
    /// fewer times per byte. Not in vxlan mode: the VXLAN device's
    /// `tso_max_size` stays 65536, so a larger packet could not leave by it.
    pub gso_max_size: Option<u32>,
    /// The VXLAN device (`vxlan` mode only).
    pub vtep: Option<Vtep>,
    /// Peer nodes with a pod subnet.
    pub peers: Vec<Peer>,
    /// Nodes left out, with the reason (no pod subnet yet, other family…).
    pub skipped: Vec<(String, String)>,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// This node is not among the nodes.
    #[error("node {0} is not in the cluster")]
    UnknownNode(String),
    /// This node has no pod subnet yet.
    #[error("node {0} has no pod CIDR yet")]
    NoPodCidr(String),
    /// A pod subnet outside the cluster CIDR.
    #[error("pod CIDR {pod_cidr} of node {node} is outside the cluster CIDR {cluster_cidr}")]
    OutsideCluster {
        /// Node name.
        node: String,
        /// Its pod subnet.
        pod_cidr: IpNet,
        /// The cluster CIDR.
        cluster_cidr: IpNet,
    },
    /// A pod subnet too small to hold a gateway.
    #[error("pod CIDR {pod_cidr} of node {node} has no room for a gateway address")]
    SubnetTooSmall {
        /// Node name.
        node: String,
        /// Its pod subnet.
        pod_cidr: IpNet,
    },
    /// MTU too small for the overlay.
    #[error("uplink MTU {0} leaves no room for VXLAN's {VXLAN_OVERHEAD} bytes")]
    MtuTooSmall(u32),
    /// Mode name not `host-gw` or `vxlan`.
    #[error("unknown pod network mode {0:?} (expected host-gw or vxlan)")]
    UnknownMode(String),
}

/// The MAC of a node's VXLAN device, derived from its underlay address so
/// that every peer can compute it without publishing it: `0e:57` (locally
/// administered, unicast) followed by the address's last four bytes.
pub fn vtep_mac(address: IpAddr) -> [u8; 6] {
    let tail = match address {
        IpAddr::V4(ip) => ip.octets(),
        IpAddr::V6(ip) => {
            let octets = ip.octets();
            [octets[12], octets[13], octets[14], octets[15]]
        }
    };
    [0x0e, 0x57, tail[0], tail[1], tail[2], tail[3]]
}

fn first_host(subnet: IpNet) -> Option<IpAddr> {
    subnet
        .hosts()
        .next()
        .filter(|host| *host != subnet.network())
}

/// Computes this node's plan.
pub fn plan(config: &Config, this: &str, nodes: &[NodeNet]) -> Result<Plan, PlanError> {
    let me = nodes
        .iter()
        .find(|node| node.name == this)
        .ok_or_else(|| PlanError::UnknownNode(this.to_owned()))?;
    let pod_cidr = me
        .pod_cidr
        .ok_or_else(|| PlanError::NoPodCidr(this.to_owned()))?
        .trunc();
    if !config.cluster_cidr.contains(&pod_cidr) {
        return Err(PlanError::OutsideCluster {
            node: this.to_owned(),
            pod_cidr,
            cluster_cidr: config.cluster_cidr,
        });
    }
    let gateway_ip = first_host(pod_cidr).ok_or_else(|| PlanError::SubnetTooSmall {
        node: this.to_owned(),
        pod_cidr,
    })?;
    let gateway =
        IpNet::new(gateway_ip, pod_cidr.prefix_len()).map_err(|_| PlanError::SubnetTooSmall {
            node: this.to_owned(),
            pod_cidr,
        })?;

    let (mtu, vtep) = match config.mode {
        Mode::HostGw => (config.uplink_mtu, None),
        Mode::Vxlan => {
            let mtu = config
                .uplink_mtu
                .checked_sub(VXLAN_OVERHEAD)
                .filter(|mtu| *mtu >= 576)
                .ok_or(PlanError::MtuTooSmall(config.uplink_mtu))?;
            let host_prefix = if pod_cidr.addr().is_ipv4() { 32 } else { 128 };
            let address = IpNet::new(pod_cidr.network(), host_prefix).map_err(|_| {
                PlanError::SubnetTooSmall {
                    node: this.to_owned(),
                    pod_cidr,
                }
            })?;
            let vtep = Vtep {
                device: config.vxlan_device.clone(),
                vni: config.vni,
                port: config.vxlan_port,
                local: me.address,
                underlay: config.uplink.clone(),
                mtu,
                mac: vtep_mac(me.address),
                address,
            };
            (mtu, Some(vtep))
        }
    };

    let mut peers = Vec::new();
    let mut skipped = Vec::new();
    for node in nodes.iter().filter(|node| node.name != this) {
        let Some(peer_cidr) = node.pod_cidr.map(|cidr| cidr.trunc()) else {
            skipped.push((node.name.clone(), "no pod CIDR yet".to_owned()));
            continue;
        };
        if !config.cluster_cidr.contains(&peer_cidr) || peer_cidr == pod_cidr {
            skipped.push((
                node.name.clone(),
                format!("pod CIDR {peer_cidr} is outside the cluster CIDR or overlaps ours"),
            ));
            continue;
        }
        if node.address.is_ipv4() != me.address.is_ipv4() {
            skipped.push((
                node.name.clone(),
                format!("underlay address {} is of another family", node.address),
            ));
            continue;
        }
        let peer = match config.mode {
            Mode::HostGw => Peer {
                name: node.name.clone(),
                pod_cidr: peer_cidr,
                gateway: node.address,
                vtep_mac: None,
                underlay: node.address,
            },
            Mode::Vxlan => Peer {
                name: node.name.clone(),
                pod_cidr: peer_cidr,
                gateway: peer_cidr.network(),
                vtep_mac: Some(vtep_mac(node.address)),
                underlay: node.address,
            },
        };
        peers.push(peer);
    }
    peers.sort_by(|a, b| a.name.cmp(&b.name));

    let gso_max_size = (config.mode == Mode::HostGw
        && config.uplink_gso_max_size > LEGACY_GSO_MAX_SIZE)
        .then_some(config.uplink_gso_max_size);

    Ok(Plan {
        config: config.clone(),
        pod_cidr,
        gateway,
        mtu,
        gso_max_size,
        vtep,
        peers,
        skipped,
    })
}

#[cfg(test)]
mod tests;
