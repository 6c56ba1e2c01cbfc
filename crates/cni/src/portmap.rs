//! The portmap plugin (chained after bridge): the `portMappings` capability
//! from `runtimeConfig` (`hostPort`, `containerPort`, `protocol`, `hostIP`)
//! becomes DNAT rules to the container's addresses from `prevResult`, in
//! weft's tables `ip weft-portmap` / `ip6 weft-portmap` of the node's
//! namespace:
//!
//! - `prerouting` and `output` (dstnat): traffic to the host port on
//!   `hostIP`, or on any local address of the node when `hostIP` is absent,
//!   from other hosts, from the node itself and from containers;
//! - `postrouting` (srcnat), with `snat` (default on): masquerade for hairpin
//!   traffic (a container reaching itself through the host port) and for
//!   traffic from localhost, for which `route_localnet` is enabled on the node
//!   interface facing the container; with `masqAll`, every mapped connection.
//!
//! Rules are tagged `weft-portmap <network> <containerID> <ifname>` (see
//! [`crate::nat_rules`]); DEL and GC remove them. Stale UDP conntrack entries
//! for the mapped ports are flushed on ADD and DEL. The result is
//! `prevResult`, unchanged.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use weft_linux::{NetNs, Netlink, sysctl};
use weft_nft::expr::{NatFlags, ct_status, matches};
use weft_nft::{Conntrack, Expr, Family, Hook, Reg, Rule};

use crate::kernel::linux_error;
use crate::nat_rules::{self, Tables, Tag};
use crate::{CmdArgs, CniError, CniResult, ErrorCode, NetConf, Plugin};

/// The portmap plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct Portmap;

/// weft's portmap tables and their NAT chains.
pub const TABLES: Tables = Tables {
    name: "weft-portmap",
    families: &[Family::Ip, Family::Ip6],
    kind: weft_nft::ChainType::Nat,
    chains: &[
        ("prerouting", Hook::Prerouting, -100),
        ("output", Hook::Output, -100),
        ("postrouting", Hook::Postrouting, 100),
    ],
};

/// One entry of the `portMappings` capability.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the node.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (default `tcp`).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Node address to map; all local addresses when absent or unspecified.
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

fn default_protocol() -> String {
    "tcp".to_owned()
}

/// The plugin's own keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortmapConf {
    /// Masquerade hairpin and localhost traffic (reference default: on).
    #[serde(default)]
    snat: Option<bool>,
    /// Masquerade every mapped connection.
    #[serde(default)]
    masq_all: bool,
    /// iptables match conditions of the reference plugin's iptables backend.
    #[serde(default)]
    conditions_v4: Option<Vec<String>>,
    /// Same, IPv6.
    #[serde(default)]
    conditions_v6: Option<Vec<String>>,
}

/// A mapping resolved for one container address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// IP protocol number.
    pub proto: u8,
    /// Node port.
    pub host_port: u16,
    /// Node address, when restricted to one.
    pub host_ip: Option<IpAddr>,
    /// Container address.
    pub container_ip: IpAddr,
    /// Container port.
    pub container_port: u16,
}

fn invalid(msg: String) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, msg)
}

/// The mappings of `runtimeConfig.portMappings`, each paired with the
/// container's address of the same family (pure).
pub fn resolve(conf: &NetConf, prev: &CniResult) -> Result<Vec<Mapping>, CniError> {
    let Some(raw) = conf.runtime_config.get("portMappings") else {
        return Ok(Vec::new());
    };
    let wanted: Vec<PortMapping> =
        Vec::deserialize(raw).map_err(|err| invalid(format!("invalid portMappings: {err}")))?;
    let container_ips: Vec<IpAddr> = prev
        .ips
        .iter()
        .filter(|ip| {
            ip.interface
                .is_none_or(|i| prev.interfaces.get(i).is_some_and(|f| f.sandbox.is_some()))
        })
        .map(|ip| ip.address.addr())
        .collect();
    let mut mappings: Vec<Mapping> = Vec::new();
    for entry in wanted {
        let proto = match entry.protocol.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            other => return Err(invalid(format!("unknown portMappings protocol {other:?}"))),
        };
        if entry.host_port == 0 || entry.container_port == 0 {
            return Err(invalid(
                "portMappings ports must be between 1 and 65535".to_owned(),
            ));
        }
        let host_ip = match entry.host_ip.as_deref().filter(|t| !t.is_empty()) {
            Some(text) => Some(
                text.parse::<IpAddr>()
                    .map_err(|_| invalid(format!("invalid hostIP {text:?}")))?,
            )
            .filter(|ip| !ip.is_unspecified()),
            None => None,
        };
        let host_family = entry
            .host_ip
            .as_deref()
            .and_then(|t| t.parse::<IpAddr>().ok())
            .map(|ip| ip.is_ipv4());
        // One host port, protocol and address can lead to one place only:
        // a second DNAT for it would never match.
        let taken = mappings.iter().any(|m| {
            m.proto == proto
                && m.host_port == entry.host_port
                && (m.host_ip == host_ip || m.host_ip.is_none() || host_ip.is_none())
        });
        if taken {
            return Err(invalid(format!(
                "portMappings map host port {}/{} twice",
                entry.host_port,
                entry.protocol.to_ascii_lowercase()
            )));
        }
        for container_ip in &container_ips {
            if host_family.is_some_and(|v4| v4 != container_ip.is_ipv4()) {
                continue;
            }
            mappings.push(Mapping {
                proto,
                host_port: entry.host_port,
                host_ip,
                container_ip: *container_ip,
                container_port: entry.container_port,
            });
        }
    }
    Ok(mappings)
}

fn exact(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Matches `daddr` of `ip`'s family in `net` (or not, with `negate`).
fn daddr_in(net: IpNet, negate: bool) -> Vec<Expr> {
    match net {
        IpNet::V4(net) => matches::ip_daddr_in(net, negate, Reg::R0),
        IpNet::V6(net) => matches::ip6_daddr_in(net, negate, Reg::R0),
    }
}

fn saddr_in(net: IpNet) -> Vec<Expr> {
    match net {
        IpNet::V4(net) => matches::ip_saddr_in(net, false, Reg::R0),
        IpNet::V6(net) => matches::ip6_saddr_in(net, false, Reg::R0),
    }
}

fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::Ip
    } else {
        Family::Ip6
    }
}

/// 127.0.0.0/8.
const LOCALHOST_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);

/// The loopback network of `ip`'s family.
fn localhost(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(_) => IpNet::V4(LOCALHOST_V4),
        IpAddr::V6(_) => IpNet::V6(Ipv6Net::from(Ipv6Addr::LOCALHOST)),
    }
}

/// The rules for the mappings (pure): DNAT in `prerouting` and `output`,
/// masquerade in `postrouting` for hairpin and localhost traffic (`snat`) or
/// for everything mapped (`masq_all`).
pub fn rules(mappings: &[Mapping], snat: bool, masq_all: bool) -> Vec<(Family, Rule)> {
    let mut out = Vec::new();
    for m in mappings {
        let family = family_of(m.container_ip);
        let to_host = match m.host_ip {
            Some(ip) => daddr_in(exact(ip), false),
            None => matches::daddr_is_local(Reg::R0),
        };
        let (addr_reg, port_reg) = match m.container_ip {
            IpAddr::V4(_) => (Reg::R1, Reg::R2),
            IpAddr::V6(_) => (Reg::R4, Reg::R8),
        };
        let addr_bytes = match m.container_ip {
            IpAddr::V4(ip) => ip.octets().to_vec(),
            IpAddr::V6(ip) => ip.octets().to_vec(),
        };
        let dnat = match m.container_ip {
            IpAddr::V4(_) => Expr::dnat_ipv4(addr_reg, Some(port_reg)),
            IpAddr::V6(_) => Expr::dnat_ipv6(addr_reg, Some(port_reg)),
        };
        for chain in ["prerouting", "output"] {
            let rule = Rule::new(chain)
                .extend(to_host.clone())
                .extend(matches::l4proto(m.proto, Reg::R0))
                .extend(matches::dport(m.host_port, Reg::R0))
                .push(Expr::Immediate {
                    dreg: addr_reg,
                    data: addr_bytes.clone(),
                })
                .push(Expr::Immediate {
                    dreg: port_reg,
                    data: m.container_port.to_be_bytes().to_vec(),
                })
                .push(dnat.clone());
            out.push((family, rule));
        }
        let to_container = |extra: Vec<Expr>| {
            Rule::new("postrouting")
                .extend(extra)
                .extend(daddr_in(exact(m.container_ip), false))
                .extend(matches::l4proto(m.proto, Reg::R0))
                .extend(matches::dport(m.container_port, Reg::R0))
                .push(Expr::Masquerade(NatFlags::default()))
        };
        if masq_all {
            out.push((
                family,
                to_container(matches::ct_status(ct_status::DNAT, Reg::R0)),
            ));
        } else if snat {
            out.push((family, to_container(saddr_in(exact(m.container_ip)))));
            out.push((family, to_container(saddr_in(localhost(m.container_ip)))));
        }
    }
    out
}

fn tag<'a>(args: &'a CmdArgs, conf: &'a NetConf) -> Tag<'a> {
    Tag {
        plugin: "portmap",
        network: &conf.name,
        container_id: &args.container_id,
        ifname: &args.ifname,
    }
}

fn load(conf: &NetConf) -> Result<PortmapConf, CniError> {
    let keys: PortmapConf = conf.plugin_keys()?;
    let has_conditions = |c: &Option<Vec<String>>| c.as_ref().is_some_and(|c| !c.is_empty());
    if has_conditions(&keys.conditions_v4) || has_conditions(&keys.conditions_v6) {
        return Err(CniError::new(
            ErrorCode::UnsupportedField,
            "portmap: conditionsV4/conditionsV6 (iptables match expressions) are not supported",
        ));
    }
    Ok(keys)
}

/// Lets packets from 127.0.0.0/8, DNATed to a container, leave through the
/// node interface that holds an address in the container's subnet.
fn enable_localnet_routing(mappings: &[Mapping]) -> Result<(), CniError> {
    let v4: Vec<IpAddr> = mappings
        .iter()
        .map(|m| m.container_ip)
        .filter(IpAddr::is_ipv4)
        .collect();
    if v4.is_empty() {
        return Ok(());
    }
    let mut node = Netlink::current()
        .map_err(|err| linux_error("opening netlink in the node namespace", &err))?;
    let addresses = node
        .addresses(None)
        .map_err(|err| linux_error("reading node addresses", &err))?;
    let links = node
        .links()
        .map_err(|err| linux_error("reading node links", &err))?;
    let facing: HashSet<String> = addresses
        .iter()
        .filter(|a| v4.iter().any(|ip| a.net.trunc().contains(ip)))
        .filter_map(|a| links.iter().find(|l| l.index == a.index))
        .map(|l| l.name.clone())
        .collect();
    for name in facing {
        sysctl::ensure(
            &NetNs::current(),
            &sysctl::iface_key("ipv4", &name, "route_localnet"),
            "1",
        )
        .map_err(|err| linux_error("enabling route_localnet", &err))?;
    }
    Ok(())
}

/// Deletes UDP conntrack entries to the mapped host ports, so clients that
/// kept sending do not stay attached to an old NAT decision.
fn flush_udp(mappings: &[Mapping]) -> Result<(), CniError> {
    let udp: Vec<&Mapping> = mappings.iter().filter(|m| m.proto == 17).collect();
    if udp.is_empty() {
        return Ok(());
    }
    let mut conntrack = Conntrack::open().map_err(|err| {
        CniError::new(ErrorCode::Io, "portmap: opening conntrack")
            .with_details(crate::error::error_chain(&err))
    })?;
    for family in [Family::Ip, Family::Ip6] {
        conntrack
            .delete_matching(family, |entry| {
                entry.original.proto == 17
                    && udp.iter().any(|m| {
                        entry.original.dst_port == m.host_port
                            && m.host_ip.is_none_or(|ip| ip == entry.original.dst)
                    })
            })
            .map_err(|err| {
                CniError::new(ErrorCode::Io, "portmap: flushing UDP conntrack entries")
                    .with_details(crate::error::error_chain(&err))
            })?;
    }
    Ok(())
}

impl Plugin for Portmap {
    fn name(&self) -> &'static str {
        "portmap"
    }

    fn add(&self, args: &CmdArgs, conf: &NetConf) -> Result<CniResult, CniError> {
        let keys = load(conf)?;
        let prev = conf.prev_result.clone().ok_or_else(|| {
            invalid("portmap: must be called as a chained plugin (prevResult missing)".to_owned())
        })?;
        let mappings = resolve(conf, &prev)?;
        if mappings.is_empty() {
            return Ok(prev);
        }
        let snat = keys.snat.unwrap_or(true);
        if snat {
            enable_localnet_routing(&mappings)?;
        }
        nat_rules::replace(
            &TABLES,
            &tag(args, conf),
            rules(&mappings, snat, keys.masq_all),
        )?;
        flush_udp(&mappings)?;
        Ok(prev)
    }

    fn del(&self, args: &CmdArgs, conf: &NetConf) -> Result<(), CniError> {
        load(conf)?;
        nat_rules::remove_attachment(&TABLES, &tag(args, conf))?;
        if let Some(prev) = &conf.prev_result {
            // Best effort: the rules are gone, which is what DEL promises.
            if let Ok(mappings) = resolve(conf, prev) {
                let _ = flush_udp(&mappings);
            }
        }
        Ok(())
    }

    fn check(&self, args: &CmdArgs, conf: &NetConf) -> Result<(), CniError> {
        let keys = load(conf)?;
        let prev = conf
            .prev_result
            .as_ref()
            .ok_or_else(|| invalid("portmap: required prevResult missing".to_owned()))?;
        let mappings = resolve(conf, prev)?;
        let expected = rules(&mappings, keys.snat.unwrap_or(true), keys.masq_all);
        match nat_rules::mismatch(&TABLES, &tag(args, conf), &expected)? {
            Some(problem) => Err(CniError::internal(format!("portmap CHECK: {problem}"))),
            None => Ok(()),
        }
    }

    fn gc(&self, _args: &CmdArgs, conf: &NetConf) -> Result<(), CniError> {
        load(conf)?;
        let valid: HashSet<(&str, &str)> = conf
            .valid_attachments
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        nat_rules::gc(&TABLES, "portmap", &conf.name, &valid).map(|_| ())
    }
}

#[cfg(test)]
mod tests;
