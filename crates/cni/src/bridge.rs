//! The bridge plugin: a Linux bridge in the node's namespace (the one the
//! plugin runs in), a veth pair per attachment with one end on the bridge and
//! the other in the container's namespace as `CNI_IFNAME`, addresses and
//! routes from the delegated IPAM plugin, and optionally the gateway address
//! on the bridge with forwarding enabled. It reads the reference plugin's
//! keys, so configs written for it work unchanged.
//!
//! The node-side veth is named `veth` + 8 hex digits derived from the
//! container ID and interface name, so a retried ADD finds its own veth and
//! DEL can remove it even after a crash. `ipMasq` installs masquerade rules
//! in weft's own nftables tables (see [`masq`]). `vlan` and `vlanTrunk` turn
//! bridge VLAN filtering on and make the node-side veth an access port (PVID,
//! untagged) or a trunk port (tagged) of those VLANs; with `isGateway` the
//! gateway of a VLAN is a veth `<bridge>.<vlan>` on that VLAN, as with the
//! reference plugin. `macspoofchk` drops frames from the container whose
//! source MAC is not its interface's (see [`spoofchk`]).

pub mod masq;
pub mod spoofchk;

use std::hash::Hasher;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use weft_linux::netlink::format_mac;
use weft_linux::{LinkKind, NetNs, Netlink, RouteSpec, VethSpec, sysctl};

use crate::kernel::{container_namespace, linux_error, netlink_in};
use crate::nat_rules::{self, Tag};
use crate::{
    CmdArgs, CniError, CniResult, Command, ErrorCode, Interface, IpConfig, NetConf, Plugin, Route,
    delegate,
};

/// The bridge plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bridge;

/// The reference plugin's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BridgeConf {
    /// Bridge device name.
    #[serde(default = "default_bridge")]
    bridge: String,
    /// Put the IPAM gateway address on the bridge.
    #[serde(default)]
    is_gateway: bool,
    /// Also make it the container's default route (implies `isGateway`).
    #[serde(default)]
    is_default_gateway: bool,
    /// Replace another address of the same subnet on the bridge.
    #[serde(default)]
    force_address: bool,
    /// Masquerade traffic leaving the pod subnet (needs nftables).
    #[serde(default)]
    ip_masq: bool,
    /// MTU of the bridge (when created) and of the veth pair.
    #[serde(default)]
    mtu: Option<u32>,
    /// Let frames leave the bridge port they came in by.
    #[serde(default)]
    hairpin_mode: bool,
    /// Put the bridge in promiscuous mode.
    #[serde(default)]
    promisc_mode: bool,
    /// VLAN of the port (access port: PVID, untagged); turns bridge VLAN
    /// filtering on.
    #[serde(default)]
    vlan: Option<i64>,
    /// VLANs the port carries tagged (trunk port); turns VLAN filtering on.
    #[serde(default)]
    vlan_trunk: Option<Vec<VlanTrunk>>,
    /// Keep the port in the default VLAN 1 beside `vlan`/`vlanTrunk`.
    #[serde(default = "default_true")]
    preserve_default_vlan: bool,
    /// Drop frames with another source MAC (needs nftables).
    #[serde(default)]
    macspoofchk: bool,
    /// weft's key, not the reference plugin's: the GSO/GRO max size (IPv4
    /// and IPv6) of both ends of the veth pair. Above 65536 it enables BIG
    /// TCP for the pod: its TCP sends fewer, larger packets through the
    /// node's bridge, forwarding and netfilter hooks. Kernel default when
    /// absent or 0.
    #[serde(default)]
    gso_max_size: Option<u32>,
}

fn default_bridge() -> String {
    "cni0".to_owned()
}

fn default_true() -> bool {
    true
}

/// One `vlanTrunk` entry: a single `id`, or `minID`..=`maxID`, or both.
#[derive(Debug, Clone, Deserialize)]
struct VlanTrunk {
    /// First VLAN of a range.
    #[serde(default, rename = "minID")]
    min_id: Option<i64>,
    /// Last VLAN of a range.
    #[serde(default, rename = "maxID")]
    max_id: Option<i64>,
    /// A single VLAN.
    #[serde(default)]
    id: Option<i64>,
}

/// The VLAN IDs of `vlanTrunk`, sorted and without duplicates, validated
/// as the reference plugin does (pure).
fn trunk_vlans(trunk: &[VlanTrunk]) -> Result<Vec<u16>, String> {
    let valid = |id: i64, what: &str| {
        u16::try_from(id)
            .ok()
            .filter(|id| (1..=4094).contains(id))
            .ok_or_else(|| format!("incorrect trunk {what} parameter"))
    };
    let mut vlans = Vec::new();
    for item in trunk {
        match (item.min_id, item.max_id) {
            (Some(min), Some(max)) => {
                let (min, max) = (valid(min, "minID")?, valid(max, "maxID")?);
                if max < min {
                    return Err("minID is greater than maxID in trunk parameter".to_owned());
                }
                vlans.extend(min..=max);
            }
            (None, Some(_)) => {
                return Err(
                    "minID and maxID should be configured simultaneously, minID is missing"
                        .to_owned(),
                );
            }
            (Some(_), None) => {
                return Err(
                    "minID and maxID should be configured simultaneously, maxID is missing"
                        .to_owned(),
                );
            }
            (None, None) => {}
        }
        if let Some(id) = item.id {
            vlans.push(valid(id, "id")?);
        }
    }
    vlans.sort_unstable();
    vlans.dedup();
    Ok(vlans)
}

impl BridgeConf {
    fn load(conf: &NetConf) -> Result<BridgeConf, CniError> {
        let mut keys: BridgeConf = conf.plugin_keys()?;
        if keys.is_default_gateway {
            keys.is_gateway = true;
        }
        let invalid = |msg: String| CniError::new(ErrorCode::InvalidNetworkConfig, msg);
        if keys.bridge.is_empty()
            || keys.bridge.len() > 15
            || keys
                .bridge
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(invalid(format!("invalid bridge name {:?}", keys.bridge)));
        }
        if keys.hairpin_mode && keys.promisc_mode {
            return Err(invalid(
                "cannot set hairpin mode and promiscuous mode at the same time".to_owned(),
            ));
        }
        if let Some(vlan) = keys.vlan {
            if !(0..=4094).contains(&vlan) {
                return Err(invalid(format!(
                    "invalid VLAN ID {vlan} (must be between 0 and 4094)"
                )));
            }
        }
        let trunk = trunk_vlans(keys.vlan_trunk.as_deref().unwrap_or_default()).map_err(invalid)?;
        if keys.access_vlan().is_some() && !trunk.is_empty() {
            return Err(invalid(
                "cannot set vlan and vlanTrunk at the same time".to_owned(),
            ));
        }
        if keys.is_gateway {
            if let Some(vid) = keys.access_vlan() {
                let name = vlan_gateway_name(&keys.bridge, vid);
                if name.len() > 15 {
                    return Err(invalid(format!(
                        "VLAN gateway interface name {name:?} is longer than 15 bytes"
                    )));
                }
            }
        }
        if keys.mtu == Some(0) {
            keys.mtu = None;
        }
        // Ethernet's smallest IPv4 MTU to a veth's largest.
        if let Some(mtu) = keys.mtu.filter(|mtu| !(68..=65535).contains(mtu)) {
            return Err(invalid(format!("mtu {mtu} is outside 68-65535")));
        }
        if keys.gso_max_size == Some(0) {
            keys.gso_max_size = None;
        }
        Ok(keys)
    }

    /// The access VLAN (`vlan`, 0 meaning none).
    fn access_vlan(&self) -> Option<u16> {
        self.vlan
            .and_then(|vlan| u16::try_from(vlan).ok())
            .filter(|vlan| *vlan != 0)
    }

    /// The trunk VLANs (validated by [`BridgeConf::load`]).
    fn trunk(&self) -> Vec<u16> {
        trunk_vlans(self.vlan_trunk.as_deref().unwrap_or_default()).unwrap_or_default()
    }

    /// Whether the bridge must filter by VLAN (as the reference: `vlan` set
    /// or `vlanTrunk` present).
    fn vlan_filtering(&self) -> bool {
        self.access_vlan().is_some() || self.vlan_trunk.is_some()
    }
}

/// The node-side veth name of an attachment: stable across retries, unique
/// per (container, interface) in practice (32-bit FNV-1a).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut hash = Fnv1a::default();
    hash.write(container_id.as_bytes());
    hash.write(b"\0");
    hash.write(ifname.as_bytes());
    format!("veth{:08x}", hash.finish() as u32)
}

/// FNV-1a, 64-bit (std's hashers are randomly keyed or unstable across releases).
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn node_netlink() -> Result<Netlink, CniError> {
    Netlink::current().map_err(|err| linux_error("opening netlink in the node namespace", &err))
}

impl Plugin for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }

    /// The IPAM plugin runs while the links are set up: the same steps with
    /// the same outcome as one after the other, in less wall time (except
    /// on a node without the bridge yet, below).
    fn add(&self, args: &CmdArgs, conf: &NetConf) -> Result<CniResult, CniError> {
        let keys = BridgeConf::load(conf)?;
        let container = container_namespace(args.require_netns()?)?;
        let mut node = node_netlink()?;
        let ipam = conf.ipam_type();
        // Fails before anything is created when the IPAM plugin is missing.
        let mut pending = ipam
            .map(|ipam| delegate::start(ipam, Command::Add, args, &conf.bytes))
            .transpose()?;
        // A bridge is made only for an ADD its IPAM plugin accepts: the
        // node's first ADD waits for the allocation before making it, so a
        // refusal leaves nothing behind (removing the bridge afterwards
        // could pull it from under another ADD that just found it).
        let bridge_missing = node
            .link(&keys.bridge)
            .map_err(|err| linux_error("reading the bridge", &err))?
            .is_none();
        let allocated_first = if bridge_missing {
            Some(
                pending
                    .take()
                    .map(delegate::Running::wait_result)
                    .transpose()?,
            )
        } else {
            None
        };
        let host_name = host_veth_name(&args.container_id, &args.ifname);
        let mut attached = Attached {
            node: &mut node,
            host_name: &host_name,
            ipam: None,
            ip_masq: keys.ip_masq,
            macspoofchk: keys.macspoofchk,
            args,
            conf,
            made_veth: false,
        };
        let links = set_up_links(&mut attached, &keys, &container);
        // The allocation is collected whatever happened to the links, so a
        // failure can release it.
        let allocated = match allocated_first {
            Some(allocated) => Ok(allocated),
            None => pending.map(delegate::Running::wait_result).transpose(),
        };
        if allocated.is_ok() {
            attached.ipam = ipam.map(str::to_owned);
        }
        let outcome = links.and_then(|(bridge, mut inside)| {
            attach(
                &mut attached,
                &keys,
                &container,
                &mut inside,
                &bridge,
                allocated?,
            )
        });
        match outcome {
            Ok(result) => Ok(result),
            Err(err) => {
                attached.undo();
                Err(err)
            }
        }
    }

    /// Every step runs even when an earlier one fails (teardown removes as
    /// much as it can); the first failure is reported.
    fn del(&self, args: &CmdArgs, conf: &NetConf) -> Result<(), CniError> {
        let keys = BridgeConf::load(conf)?;
        let mut failures: Vec<CniError> = Vec::new();
        // The IPAM plugin releases the addresses while the links go.
        let pending = conf
            .ipam_type()
            .map(|ipam| delegate::start(ipam, Command::Del, args, &conf.bytes));
        if keys.ip_masq {
            failures.extend(nat_rules::remove_attachment(&masq::TABLES, &owner(args, conf)).err());
        }
        if keys.macspoofchk {
            failures
                .extend(nat_rules::remove_attachment(&spoofchk::TABLES, &owner(args, conf)).err());
        }
        // Deleting weft's node-side veth deletes the pair, container interface
        // included, without a thread joining the container's namespace.
        let host_veth = node_netlink().and_then(|mut node| {
            node.delete_link(&host_veth_name(&args.container_id, &args.ifname))
                .map_err(|err| linux_error("deleting the node-side veth", &err))
        });
        let pair_deleted = matches!(host_veth, Ok(true));
        failures.extend(host_veth.err());
        // Otherwise (an interface another plugin made, a failed lookup), the
        // container interface is deleted from inside; a namespace that is
        // gone took it with it.
        if !pair_deleted {
            if let Some(Ok(container)) = args.netns.as_deref().map(container_namespace) {
                let deleted = netlink_in(&container).and_then(|mut netlink| {
                    netlink
                        .delete_link(&args.ifname)
                        .map_err(|err| linux_error("deleting the container interface", &err))
                });
                failures.extend(
                    deleted
                        .err()
                        .filter(|err| err.code != ErrorCode::UnknownContainer),
                );
            }
        }
        if let Some(released) = pending.map(|started| started.and_then(delegate::Running::wait)) {
            failures.extend(released.err());
        }
        match failures.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    fn check(&self, args: &CmdArgs, conf: &NetConf) -> Result<(), CniError> {
        let keys = BridgeConf::load(conf)?;
        if let Some(ipam) = conf.ipam_type() {
            delegate::run(ipam, Command::Check, args, &conf.bytes)?;
        }
        let prev = conf.prev_result.as_ref().ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "bridge: required prevResult missing",
            )
        })?;
        let checked = check_attachment(&keys, args, prev)?;
        let mut expected = Vec::new();
        if keys.ip_masq {
            let rules: Vec<_> = prev.ips.iter().map(masq::rule_for).collect();
            expected.push(("masquerade", &masq::TABLES, rules));
        }
        if keys.macspoofchk {
            let (Some(host_veth), Some(mac)) = (&checked.host_veth, checked.mac) else {
                return Err(CniError::internal(
                    "bridge CHECK: prevResult names no node-side veth, or the container interface has no MAC: the MAC spoof-check rule cannot be checked",
                ));
            };
            expected.push((
                "MAC spoof-check",
                &spoofchk::TABLES,
                vec![spoofchk::rule_for(host_veth, mac)],
            ));
        }
        for (what, tables, rules) in expected {
            if let Some(problem) = nat_rules::mismatch(tables, &owner(args, conf), &rules)? {
                return Err(CniError::internal(format!(
                    "bridge CHECK: {what} rules: {problem}"
                )));
            }
        }
        Ok(())
    }

    fn status(&self, args: &CmdArgs, conf: &NetConf) -> Result<(), CniError> {
        BridgeConf::load(conf)?;
        match conf.ipam_type() {
            Some(ipam) => delegate::run(ipam, Command::Status, args, &conf.bytes),
            None => Ok(()),
        }
    }

    fn gc(&self, args: &CmdArgs, conf: &NetConf) -> Result<(), CniError> {
        let keys = BridgeConf::load(conf)?;
        // Both halves run even when one fails: GC removes as much as it can.
        let ipam = match conf.ipam_type() {
            Some(ipam) => delegate::run(ipam, Command::Gc, args, &conf.bytes),
            None => Ok(()),
        };
        let valid: std::collections::HashSet<(&str, &str)> = conf
            .valid_attachments
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let masq_rules = if keys.ip_masq {
            nat_rules::gc(&masq::TABLES, "bridge", &conf.name, &valid).map(|_| ())
        } else {
            Ok(())
        };
        let spoof_rules = if keys.macspoofchk {
            nat_rules::gc(&spoofchk::TABLES, "bridge", &conf.name, &valid).map(|_| ())
        } else {
            Ok(())
        };
        ipam.and(masq_rules).and(spoof_rules)
    }
}

/// The attachment an ipMasq rule belongs to.
fn owner<'a>(args: &'a CmdArgs, conf: &'a NetConf) -> Tag<'a> {
    Tag {
        plugin: "bridge",
        network: &conf.name,
        container_id: &args.container_id,
        ifname: &args.ifname,
    }
}

/// What an ADD has set up so far, to undo on failure.
struct Attached<'a> {
    /// Node-namespace handle.
    node: &'a mut Netlink,
    /// Node-side veth (deleting it deletes the pair).
    host_name: &'a str,
    /// IPAM plugin holding an allocation.
    ipam: Option<String>,
    /// Whether masquerade rules may have been installed.
    ip_masq: bool,
    /// Whether spoof-check rules may have been installed.
    macspoofchk: bool,
    /// The call.
    args: &'a CmdArgs,
    /// The configuration.
    conf: &'a NetConf,
    /// Whether this ADD made the veth pair: a repeated ADD that fails must
    /// leave the attachment that is there, and its rules, alone.
    made_veth: bool,
}

impl Attached<'_> {
    /// Best-effort teardown after a failed ADD: the ADD's error is what the
    /// runtime needs to see, and it will call DEL anyway.
    fn undo(&mut self) {
        if self.made_veth {
            let _ = self.node.delete_link(self.host_name);
            if self.ip_masq {
                let _ = nat_rules::remove_attachment(&masq::TABLES, &owner(self.args, self.conf));
            }
            if self.macspoofchk {
                let _ =
                    nat_rules::remove_attachment(&spoofchk::TABLES, &owner(self.args, self.conf));
            }
        }
        if let Some(ipam) = &self.ipam {
            let _ = delegate::run(ipam, Command::Del, self.args, &self.conf.bytes);
        }
    }
}

fn ensure_bridge(node: &mut Netlink, keys: &BridgeConf) -> Result<weft_linux::Link, CniError> {
    let mut made = false;
    let bridge = match node
        .link(&keys.bridge)
        .map_err(|err| linux_error("reading the bridge", &err))?
    {
        // An existing bridge keeps its MTU, as with the reference plugin.
        Some(link) if link.kind == LinkKind::Bridge => link,
        Some(link) => {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!(
                    "{} already exists but is not a bridge ({})",
                    link.name, link.kind
                ),
            ));
        }
        // Created exclusively: only the ADD whose create succeeds made it.
        None => match node.create_bridge(&keys.bridge, keys.mtu) {
            Ok(link) => {
                made = true;
                link
            }
            // A concurrent ADD may have created it between our look and our create.
            Err(err) => node
                .link(&keys.bridge)
                .ok()
                .flatten()
                .filter(|link| link.kind == LinkKind::Bridge)
                .ok_or_else(|| linux_error("creating the bridge", &err))?,
        },
    };
    match configure_bridge(node, keys) {
        Ok(()) => Ok(bridge),
        Err(err) => {
            // A bridge this call made and could not set up (a kernel
            // without VLAN filtering) goes again: nothing is on it yet.
            if made {
                let _ = node.delete_link(&keys.bridge);
            }
            Err(err)
        }
    }
}

/// VLAN filtering, promiscuous mode and up, as the keys ask.
fn configure_bridge(node: &mut Netlink, keys: &BridgeConf) -> Result<(), CniError> {
    if keys.vlan_filtering() {
        node.set_vlan_filtering(&keys.bridge, true).map_err(|err| {
            linux_error(
                "turning VLAN filtering on for the bridge (a kernel without \
                 CONFIG_BRIDGE_VLAN_FILTERING refuses it)",
                &err,
            )
        })?;
    }
    if keys.promisc_mode {
        node.set_promisc(&keys.bridge, true)
            .map_err(|err| linux_error("setting the bridge promiscuous", &err))?;
    }
    node.set_up(&keys.bridge)
        .map_err(|err| linux_error("bringing the bridge up", &err))
}

/// The node side of an attachment: bridge, veth pair, port settings and
/// spoof check. Returns the bridge name and a handle inside the container.
fn set_up_links(
    state: &mut Attached<'_>,
    keys: &BridgeConf,
    container: &NetNs,
) -> Result<(String, Netlink), CniError> {
    let args = state.args;
    let host_name = state.host_name;
    let node = &mut *state.node;
    let bridge = ensure_bridge(node, keys)?.name;
    let existed = node
        .link(host_name)
        .map_err(|err| linux_error("reading the node-side veth", &err))?
        .is_some();
    state.made_veth = !existed;
    node.ensure_veth(&VethSpec {
        name: host_name.to_owned(),
        peer_name: args.ifname.clone(),
        peer_namespace: Some(container.clone()),
        mtu: keys.mtu,
        ..VethSpec::default()
    })
    .map_err(|err| linux_error("creating the veth pair", &err))?;
    node.set_master(host_name, Some(&bridge))
        .map_err(|err| linux_error("attaching the veth to the bridge", &err))?;
    if keys.hairpin_mode {
        node.set_hairpin(host_name, true)
            .map_err(|err| linux_error("setting hairpin mode", &err))?;
    }
    configure_port_vlans(node, keys, host_name)?;
    node.set_up(host_name)
        .map_err(|err| linux_error("bringing the node-side veth up", &err))?;
    let mut inside = netlink_in(container)?;
    if let Some(size) = keys.gso_max_size {
        node.set_gso_max_size(host_name, size)
            .map_err(|err| linux_error("setting the node-side veth's GSO max size", &err))?;
        inside
            .set_gso_max_size(&args.ifname, size)
            .map_err(|err| linux_error("setting the container veth's GSO max size", &err))?;
        // The bridge too (traffic routed to the pod leaves by it); it may
        // take the size only now that it has a port whose TSO limit allows it.
        let current = node
            .require_link(&bridge)
            .map_err(|err| linux_error("reading the bridge", &err))?
            .gso_ipv4_max_size;
        if current != Some(size) {
            node.set_gso_max_size(&bridge, size)
                .map_err(|err| linux_error("setting the bridge's GSO max size", &err))?;
        }
    }
    if keys.macspoofchk {
        let mac = inside
            .require_link(&args.ifname)
            .map_err(|err| linux_error("reading the container interface", &err))?
            .mac
            .ok_or_else(|| CniError::internal("the container interface has no MAC address"))?;
        nat_rules::replace(
            &spoofchk::TABLES,
            &owner(args, state.conf),
            vec![spoofchk::rule_for(host_name, mac)],
        )?;
    }
    Ok((bridge, inside))
}

/// The rest of an ADD once the links exist and IPAM has answered.
fn attach(
    state: &mut Attached<'_>,
    keys: &BridgeConf,
    container: &NetNs,
    inside: &mut Netlink,
    bridge: &str,
    allocated: Option<CniResult>,
) -> Result<CniResult, CniError> {
    let args = state.args;
    let host_name = state.host_name;
    let mut result = CniResult::default();
    if let Some(allocated) = allocated {
        if allocated.ips.is_empty() {
            return Err(CniError::internal("IPAM plugin returned missing IP config"));
        }
        result = allocated;
    }
    if !state.conf.dns.is_empty() {
        result.dns = state.conf.dns.clone();
    }
    for ip in &mut result.ips {
        ip.interface = Some(2);
        if keys.is_gateway && ip.gateway.is_none() {
            ip.gateway = Some(first_host(ip.address));
        }
    }
    if keys.is_default_gateway {
        add_default_routes(&mut result)?;
    }

    configure_container(container, inside, &args.ifname, &result)?;
    let node = &mut *state.node;
    let mut vlan_gateway = None;
    if keys.is_gateway {
        // With a VLAN, the gateway lives on a veth `<bridge>.<vlan>` whose
        // peer is an access port of that VLAN, as with the reference plugin.
        let gateway_dev = match keys.access_vlan() {
            Some(vid) => {
                let name = ensure_vlan_gateway(node, keys, bridge, vid)?;
                vlan_gateway = Some(name.clone());
                name
            }
            None => bridge.to_owned(),
        };
        configure_gateway(node, keys, &gateway_dev, &result.ips)?;
    }
    if keys.ip_masq {
        let rules = result.ips.iter().map(masq::rule_for).collect();
        nat_rules::replace(&masq::TABLES, &owner(args, state.conf), rules)?;
    }

    let mac_of = |netlink: &mut Netlink, name: &str| -> Result<Option<String>, CniError> {
        Ok(netlink
            .link(name)
            .map_err(|err| linux_error("reading a link", &err))?
            .and_then(|link| link.mac)
            .map(|mac| format_mac(&mac)))
    };
    let bridge_mac = mac_of(node, bridge)?;
    let host_mac = mac_of(node, host_name)?;
    let container_mac = mac_of(inside, &args.ifname)?;
    result.interfaces = vec![
        Interface {
            name: bridge.to_owned(),
            mac: bridge_mac,
            ..Interface::default()
        },
        Interface {
            name: host_name.to_owned(),
            mac: host_mac,
            ..Interface::default()
        },
        Interface {
            name: args.ifname.clone(),
            mac: container_mac,
            mtu: keys.mtu,
            sandbox: Some(container.path().display().to_string()),
            ..Interface::default()
        },
    ];
    if let Some(name) = vlan_gateway {
        let mac = mac_of(node, &name)?;
        result.interfaces.push(Interface {
            name,
            mac,
            ..Interface::default()
        });
    }
    Ok(result)
}

/// The VLANs of a bridge port: `vlan` as PVID and untagged (access port),
/// or each `vlanTrunk` VLAN tagged (trunk port); without
/// `preserveDefaultVlan`, the port leaves the default VLAN first.
fn configure_port_vlans(node: &mut Netlink, keys: &BridgeConf, port: &str) -> Result<(), CniError> {
    let access = keys.access_vlan();
    let trunk = keys.trunk();
    if access.is_none() && trunk.is_empty() {
        return Ok(());
    }
    let vlan_error =
        |err: weft_linux::Error| linux_error("setting the VLANs of the bridge port", &err);
    if !keys.preserve_default_vlan {
        for vlan in node.bridge_vlans(port).map_err(vlan_error)? {
            node.delete_bridge_vlan(port, vlan.vid)
                .map_err(vlan_error)?;
        }
    }
    if let Some(vid) = access {
        node.ensure_bridge_vlan(port, vid, true, true)
            .map_err(vlan_error)?;
    }
    for vid in trunk {
        node.ensure_bridge_vlan(port, vid, false, false)
            .map_err(vlan_error)?;
    }
    Ok(())
}

/// The gateway interface of VLAN `vid` on `bridge` (pure).
fn vlan_gateway_name(bridge: &str, vid: u16) -> String {
    format!("{bridge}.{vid}")
}

/// Ensures the gateway veth `<bridge>.<vid>` exists in the node namespace,
/// its peer an access port of VLAN `vid` on the bridge; returns its name.
/// It is shared by every attachment of the VLAN and outlives them, like the
/// bridge (and like the reference plugin's).
fn ensure_vlan_gateway(
    node: &mut Netlink,
    keys: &BridgeConf,
    bridge: &str,
    vid: u16,
) -> Result<String, CniError> {
    let name = vlan_gateway_name(bridge, vid);
    let exists = |node: &mut Netlink| {
        node.link(&name)
            .map_err(|err| linux_error("reading the VLAN gateway interface", &err))
            .map(|link| link.is_some())
    };
    if exists(node)? {
        return Ok(name);
    }
    let port = host_veth_name(&name, "");
    if let Err(err) = node.ensure_veth(&VethSpec {
        name: name.clone(),
        peer_name: port.clone(),
        mtu: keys.mtu,
        ..VethSpec::default()
    }) {
        // A concurrent ADD of the same VLAN may have made it first.
        if exists(node)? {
            return Ok(name);
        }
        return Err(linux_error("creating the VLAN gateway interface", &err));
    }
    node.set_master(&port, Some(bridge))
        .map_err(|err| linux_error("attaching the VLAN gateway to the bridge", &err))?;
    let access_only = BridgeConf {
        vlan_trunk: None,
        ..keys.clone()
    };
    configure_port_vlans(node, &access_only, &port)?;
    for dev in [&port, &name] {
        node.set_up(dev)
            .map_err(|err| linux_error("bringing the VLAN gateway up", &err))?;
    }
    Ok(name)
}

/// The subnet's first host address (the reference's default gateway).
fn first_host(address: IpNet) -> IpAddr {
    crate::host_local::range::next_ip(address.network())
}

fn default_net(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
        IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
    }
}

/// `isDefaultGateway`: a default route via each family's gateway, unless
/// IPAM already routes the default the same way (another next hop is code 7).
fn add_default_routes(result: &mut CniResult) -> Result<(), CniError> {
    let gateways: Vec<IpAddr> = result.ips.iter().filter_map(|ip| ip.gateway).collect();
    for gateway in gateways {
        let dst = default_net(gateway);
        match result.routes.iter().find(|route| route.dst == dst) {
            Some(route) if route.gw.is_some_and(|gw| gw != gateway) => {
                return Err(CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    format!(
                        "isDefaultGateway ineffective because IPAM sets default route via {:?}",
                        route.gw
                    ),
                ));
            }
            Some(_) => {}
            None => result.routes.push(Route::new(dst, Some(gateway))),
        }
    }
    Ok(())
}

/// Addresses, link up and routes inside the container.
fn configure_container(
    container: &NetNs,
    netlink: &mut Netlink,
    ifname: &str,
    result: &CniResult,
) -> Result<(), CniError> {
    let has_v6 = result.ips.iter().any(|ip| ip.address.addr().is_ipv6());
    if has_v6 {
        // Addresses must be usable at once, not after duplicate address detection.
        for (key, value) in [("disable_ipv6", "0"), ("accept_dad", "0")] {
            sysctl::ensure(container, &sysctl::iface_key("ipv6", ifname, key), value)
                .map_err(|err| linux_error("enabling IPv6 on the container interface", &err))?;
        }
    }
    for ip in &result.ips {
        netlink
            .ensure_address(ifname, ip.address)
            .map_err(|err| linux_error("adding an address to the container interface", &err))?;
    }
    netlink
        .set_up(ifname)
        .map_err(|err| linux_error("bringing the container interface up", &err))?;
    for route in &result.routes {
        let gateway = route.gw.or_else(|| {
            result
                .ips
                .iter()
                .filter(|ip| ip.address.addr().is_ipv4() == route.dst.addr().is_ipv4())
                .find_map(|ip| ip.gateway)
        });
        let spec = RouteSpec {
            dst: route.dst.trunc(),
            gateway,
            dev: Some(ifname.to_owned()),
            table: route.table,
            src: None,
            metric: route.priority,
            onlink: false,
        };
        netlink
            .ensure_route(&spec)
            .map_err(|err| linux_error("adding a route in the container", &err))?;
    }
    Ok(())
}

/// Gateway addresses on the bridge, and forwarding in the node namespace.
fn configure_gateway(
    node: &mut Netlink,
    keys: &BridgeConf,
    bridge: &str,
    ips: &[IpConfig],
) -> Result<(), CniError> {
    for ip in ips {
        let Some(gateway) = ip.gateway else { continue };
        let wanted = IpNet::new(gateway, ip.address.prefix_len()).map_err(|_| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("gateway {gateway} does not fit {}", ip.address),
            )
        })?;
        let existing = node
            .addresses(Some(bridge))
            .map_err(|err| linux_error("reading the bridge addresses", &err))?;
        for other in existing
            .iter()
            .filter(|a| a.net.trunc() == wanted.trunc() && a.net != wanted)
        {
            if !keys.force_address {
                return Err(CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    format!("{bridge} already has an IP address different from {wanted}"),
                )
                .with_details(format!(
                    "it has {}; set forceAddress to replace it",
                    other.net
                )));
            }
            node.delete_address(bridge, other.net)
                .map_err(|err| linux_error("removing an old bridge address", &err))?;
        }
        if let Err(err) = node.ensure_address(bridge, wanted) {
            // A concurrent ADD may have added it between our look and our add.
            let added = node
                .addresses(Some(bridge))
                .is_ok_and(|now| now.iter().any(|a| a.net == wanted));
            if !added {
                return Err(linux_error(
                    "adding the gateway address to the bridge",
                    &err,
                ));
            }
        }
        let key = if gateway.is_ipv4() {
            sysctl::IPV4_FORWARD
        } else {
            sysctl::IPV6_FORWARD
        };
        // The plugin runs in the node's namespace: no thread needs to join it.
        sysctl::ensure_here(key, "1").map_err(|err| linux_error("enabling forwarding", &err))?;
    }
    Ok(())
}

/// CHECK: the bridge, both veth ends, the addresses and routes of `prev`.
/// What CHECK found of the attachment's links, for checking its rules.
struct CheckedLinks {
    /// The node-side veth the result names.
    host_veth: Option<String>,
    /// The container interface's MAC address.
    mac: Option<[u8; 6]>,
}

/// Checks the bridge, the container interface (MAC, addresses), its
/// routes and the node-side veth against the previous result.
fn check_attachment(
    keys: &BridgeConf,
    args: &CmdArgs,
    prev: &CniResult,
) -> Result<CheckedLinks, CniError> {
    let failed = |msg: String| CniError::internal(format!("bridge CHECK: {msg}"));
    let mut node = node_netlink()?;
    let bridge = node
        .link(&keys.bridge)
        .map_err(|err| linux_error("reading the bridge", &err))?
        .filter(|link| link.kind == LinkKind::Bridge)
        .ok_or_else(|| failed(format!("bridge {} not found", keys.bridge)))?;
    let container = container_namespace(args.require_netns()?)?;
    let mut inside = netlink_in(&container)?;
    let iface = inside
        .link(&args.ifname)
        .map_err(|err| linux_error("reading the container interface", &err))?
        .ok_or_else(|| {
            failed(format!(
                "interface {} not found in the container",
                args.ifname
            ))
        })?;
    let index = prev
        .interfaces
        .iter()
        .position(|i| i.name == args.ifname && i.sandbox.is_some());
    if let Some(expected) = index.and_then(|i| prev.interfaces[i].mac.as_ref()) {
        let actual = iface.mac.map(|mac| format_mac(&mac)).unwrap_or_default();
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(failed(format!(
                "{} has MAC {actual}, expected {expected}",
                args.ifname
            )));
        }
    }
    let addresses = inside
        .addresses(Some(&args.ifname))
        .map_err(|err| linux_error("reading the container addresses", &err))?;
    for ip in prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none() || ip.interface == index)
    {
        if !addresses.iter().any(|a| a.net == ip.address) {
            return Err(failed(format!(
                "address {} missing on {}",
                ip.address, args.ifname
            )));
        }
    }
    let routes = inside
        .routes(None)
        .map_err(|err| linux_error("reading the container routes", &err))?;
    for route in &prev.routes {
        let present = routes
            .iter()
            .any(|r| r.dst == route.dst.trunc() && route.gw.is_none_or(|gw| r.gateway == Some(gw)));
        if !present {
            return Err(failed(format!(
                "route to {} missing in the container",
                route.dst
            )));
        }
    }
    let vlan_gateway = keys
        .access_vlan()
        .map(|vid| vlan_gateway_name(&keys.bridge, vid));
    let mut checked = CheckedLinks {
        host_veth: None,
        mac: iface.mac,
    };
    for host in prev.interfaces.iter().filter(|i| {
        i.sandbox.is_none() && i.name != keys.bridge && Some(&i.name) != vlan_gateway.as_ref()
    }) {
        checked.host_veth.get_or_insert_with(|| host.name.clone());
        let link = node
            .link(&host.name)
            .map_err(|err| linux_error("reading the node-side veth", &err))?
            .ok_or_else(|| failed(format!("node-side veth {} not found", host.name)))?;
        if link.master != Some(bridge.index) {
            return Err(failed(format!(
                "{} is not attached to {}",
                host.name, keys.bridge
            )));
        }
        if let Some(vid) = keys.access_vlan() {
            let vlans = node
                .bridge_vlans(&host.name)
                .map_err(|err| linux_error("reading the VLANs of the node-side veth", &err))?;
            if !vlans
                .iter()
                .any(|vlan| vlan.vid == vid && vlan.pvid && vlan.untagged)
            {
                return Err(failed(format!(
                    "{} is not an access port of VLAN {vid}",
                    host.name
                )));
            }
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests;
