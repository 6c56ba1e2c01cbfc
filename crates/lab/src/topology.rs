//! The lab's machines and wires: the LAN namespace with its bridge and
//! gateway address, the external host, and the node namespaces plugged into
//! the LAN, each with a default route to the gateway. Every step is an
//! idempotent `ensure_*`, so building twice changes nothing and building
//! after a crash repairs. Links are only ever created inside the lab's own
//! namespaces (the LAN side creates each veth with its peer placed directly
//! into the host it plugs in).

use ipnet::{IpNet, Ipv4Net};
use weft_linux::{NetNs, Netlink, RouteSpec, VethSpec, sysctl};

use crate::LabError;
use crate::layout::{EXTERNAL_IP, LAN, LAN_BRIDGE, LAN_GATEWAY, Layout};

/// GSO/GRO max size of the LAN's wires (both ends of every veth plugged
/// into `lan0`, and `lan0` itself once it has a port): the lab's NICs have BIG TCP on, as a
/// node's NIC can (`ip link set eth0 gso_ipv4_max_size 196608 ...`), so the
/// agents, which make the pod bridge and pods follow their uplink, give the
/// pods BIG TCP in host-gw mode. 192 KiB, the size Cilium uses for BIG TCP.
pub const LAN_GSO_MAX_SIZE: u32 = 196_608;

/// Turns BIG TCP on for one of the LAN's wires where the kernel can (Linux
/// 6.3 and later take sizes above 64 KiB for IPv4): an optimization only,
/// so a kernel that refuses it leaves the wire at its default size and the
/// lab works the same, a little slower.
fn try_big_tcp(netlink: &mut Netlink, link: &str) {
    if let Err(e) = netlink.set_gso_max_size(link, LAN_GSO_MAX_SIZE) {
        tracing::debug!(link, error = %e, "BIG TCP not available on this kernel; default GSO size kept");
    }
}

fn lan_address(ip: std::net::Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(ip, LAN.prefix_len()))
}

/// Creates (or opens) a namespace with `lo` up.
fn host(name: &str) -> Result<NetNs, LabError> {
    let ns = NetNs::ensure(name)?;
    Netlink::in_namespace(&ns)?.set_up("lo")?;
    Ok(ns)
}

/// Plugs `host_ns` into the LAN bridge as `eth0` with `ip`, through port
/// `port` on the LAN side.
fn plug(lan: &NetNs, port: &str, host_ns: &NetNs, ip: std::net::Ipv4Addr) -> Result<(), LabError> {
    let mut lan_netlink = Netlink::in_namespace(lan)?;
    lan_netlink.ensure_veth(&VethSpec {
        name: port.to_owned(),
        peer_name: "eth0".to_owned(),
        peer_namespace: Some(host_ns.clone()),
        ..VethSpec::default()
    })?;
    lan_netlink.set_master(port, Some(LAN_BRIDGE))?;
    try_big_tcp(&mut lan_netlink, port);
    // A bridge may take a size only up to its ports' TSO limit, known once
    // it has a port.
    try_big_tcp(&mut lan_netlink, LAN_BRIDGE);
    lan_netlink.set_up(port)?;
    let mut host_netlink = Netlink::in_namespace(host_ns)?;
    try_big_tcp(&mut host_netlink, "eth0");
    host_netlink.ensure_address("eth0", lan_address(ip))?;
    host_netlink.set_up("eth0")?;
    Ok(())
}

/// The LAN namespace and its bridge; returns the namespace.
pub fn ensure_lan(layout: &Layout) -> Result<NetNs, LabError> {
    let lan = host(&layout.lan_ns())?;
    let mut netlink = Netlink::in_namespace(&lan)?;
    netlink.ensure_bridge(LAN_BRIDGE, None)?;
    netlink.ensure_address(LAN_BRIDGE, lan_address(LAN_GATEWAY))?;
    netlink.set_up(LAN_BRIDGE)?;
    // The LAN is a plain switch: frames crossing it need no trip through
    // netfilter (br_netfilter defaults to on in every new namespace).
    for family in ["iptables", "ip6tables", "arptables"] {
        sysctl::ensure(&lan, &format!("net.bridge.bridge-nf-call-{family}"), "0")?;
    }
    Ok(lan)
}

/// The external host on the LAN.
pub fn ensure_external(layout: &Layout, lan: &NetNs) -> Result<NetNs, LabError> {
    let external = host(&layout.external_ns())?;
    plug(lan, "external", &external, EXTERNAL_IP)?;
    Ok(external)
}

/// Node `index` on the LAN, with a default route via the LAN gateway.
pub fn ensure_node(layout: &Layout, lan: &NetNs, index: u8) -> Result<NetNs, LabError> {
    let node = host(&layout.node_ns(index))?;
    plug(
        lan,
        &Layout::node_name(index),
        &node,
        Layout::node_ip(index),
    )?;
    Netlink::in_namespace(&node)?.ensure_route(&RouteSpec::default_via(LAN_GATEWAY.into()))?;
    Ok(node)
}

/// Every namespace whose name starts with the lab's prefix.
pub fn lab_namespaces(layout: &Layout) -> Result<Vec<String>, LabError> {
    let prefix = layout.prefix();
    Ok(NetNs::list()?
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect())
}
