//! The I/O half of the pod network: makes one node's kernel hold a
//! [`Plan`] — bridge, forwarding, VXLAN device, per-peer routes, neighbours
//! and FDB entries — and removes what an older plan left (peers that left
//! the cluster, a VXLAN device after a switch to `host-gw`).
//!
//! Every step is an idempotent `ensure_*`; applying the same plan twice
//! changes nothing and reports no change.

use std::net::IpAddr;

use weft_linux::{Error as LinuxError, NetNs, Netlink, RouteSpec, VxlanSpec, sysctl};

use crate::plan::{Plan, Vtep};

/// A failed apply; the node keeps whatever was applied before the failure,
/// and the next apply resumes from there.
#[derive(Debug, thiserror::Error)]
#[error("applying the pod network of node namespace {ns}")]
pub struct ApplyError {
    /// Namespace of the node.
    ns: String,
    /// What failed.
    #[source]
    source: LinuxError,
}

/// What an apply changed, one human-readable line per change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes(pub Vec<String>);

impl Changes {
    fn note(&mut self, changed: bool, what: impl FnOnce() -> String) {
        if changed {
            self.0.push(what());
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Applies `plan` to the node namespace `ns` (the agent's own namespace on a
/// real node: [`NetNs::current`]).
pub fn apply(ns: &NetNs, plan: &Plan) -> Result<Changes, ApplyError> {
    apply_inner(ns, plan).map_err(|source| ApplyError {
        ns: ns.name().to_owned(),
        source,
    })
}

fn apply_inner(ns: &NetNs, plan: &Plan) -> Result<Changes, LinuxError> {
    let mut changes = Changes::default();
    let mut netlink = Netlink::in_namespace(ns)?;
    let config = &plan.config;

    let forward = sysctl::ensure(ns, sysctl::IPV4_FORWARD, "1")?;
    changes.note(forward, || "net.ipv4.ip_forward=1".to_owned());
    if plan.pod_cidr.addr().is_ipv6() {
        let forward6 = sysctl::ensure(ns, sysctl::IPV6_FORWARD, "1")?;
        changes.note(forward6, || "net.ipv6.conf.all.forwarding=1".to_owned());
    }

    let bridge = netlink.link(&config.bridge)?;
    if bridge.is_none() {
        netlink.ensure_bridge(&config.bridge, Some(plan.mtu))?;
        changes.0.push(format!("bridge {} created", config.bridge));
    } else if let Some(bridge) = bridge.filter(|bridge| bridge.mtu != plan.mtu) {
        netlink.set_mtu(&bridge.name, plan.mtu)?;
        changes
            .0
            .push(format!("bridge {} MTU {}", bridge.name, plan.mtu));
    }
    let added = netlink.ensure_address(&config.bridge, plan.gateway)?;
    changes.note(added, || {
        format!("address {} on {}", plan.gateway, config.bridge)
    });
    ensure_up(&mut netlink, &config.bridge, &mut changes)?;

    match &plan.vtep {
        Some(vtep) => ensure_vtep(&mut netlink, vtep, &mut changes)?,
        None => {
            let removed = netlink.delete_link(&config.vxlan_device)?;
            changes.note(removed, || format!("{} removed", config.vxlan_device));
        }
    }

    for peer in &plan.peers {
        let mut route = RouteSpec::via(peer.pod_cidr, peer.gateway);
        if let (Some(vtep), Some(mac)) = (&plan.vtep, peer.vtep_mac) {
            route = route.with_dev(&vtep.device);
            route.onlink = true;
            let neighbour = match netlink.ensure_neighbour(&vtep.device, peer.gateway, mac) {
                // The peer was re-addressed: its entry points elsewhere.
                Err(LinuxError::Conflict { .. }) => {
                    netlink.delete_neighbour(&vtep.device, peer.gateway)?;
                    netlink.ensure_neighbour(&vtep.device, peer.gateway, mac)?
                }
                other => other?,
            };
            changes.note(neighbour, || {
                format!("neighbour {} for {}", peer.gateway, peer.name)
            });
            let fdb = match netlink.ensure_fdb(&vtep.device, mac, peer.underlay) {
                Err(LinuxError::Conflict { .. }) => {
                    netlink.delete_fdb(&vtep.device, mac, None)?;
                    netlink.ensure_fdb(&vtep.device, mac, peer.underlay)?
                }
                other => other?,
            };
            changes.note(fdb, || {
                format!("FDB entry for {} -> {}", peer.name, peer.underlay)
            });
        } else {
            route = route.with_dev(&config.uplink);
        }
        let routed = match netlink.ensure_route(&route) {
            Err(LinuxError::Conflict { .. }) => {
                netlink.replace_route(&route)?;
                true
            }
            other => other?,
        };
        changes.note(routed, || {
            format!(
                "route {} via {} ({})",
                peer.pod_cidr, peer.gateway, peer.name
            )
        });
    }

    remove_stale(&mut netlink, plan, &mut changes)?;
    Ok(changes)
}

fn ensure_up(netlink: &mut Netlink, name: &str, changes: &mut Changes) -> Result<(), LinuxError> {
    if !netlink.require_link(name)?.up {
        netlink.set_up(name)?;
        changes.0.push(format!("{name} up"));
    }
    Ok(())
}

fn ensure_vtep(
    netlink: &mut Netlink,
    vtep: &Vtep,
    changes: &mut Changes,
) -> Result<(), LinuxError> {
    let spec = VxlanSpec {
        name: vtep.device.clone(),
        vni: vtep.vni,
        port: vtep.port,
        local: Some(vtep.local),
        underlay: Some(vtep.underlay.clone()),
        learning: false,
        mtu: None,
    };
    let existed = netlink.link(&vtep.device)?.is_some();
    let link = match netlink.ensure_vxlan(&spec) {
        Ok(link) => link,
        Err(LinuxError::Conflict { .. }) => {
            // Settings changed (node re-addressed, VNI or port changed):
            // recreate; peers' FDB entries are re-added below.
            netlink.delete_link(&vtep.device)?;
            changes
                .0
                .push(format!("{} recreated with new settings", vtep.device));
            netlink.ensure_vxlan(&spec)?
        }
        Err(err) => return Err(err),
    };
    changes.note(!existed, || {
        format!("{} created (vni {})", vtep.device, vtep.vni)
    });
    if link.mtu != vtep.mtu {
        netlink.set_mtu(&vtep.device, vtep.mtu)?;
        changes.0.push(format!("{} MTU {}", vtep.device, vtep.mtu));
    }
    if link.mac != Some(vtep.mac) {
        netlink.set_mac(&vtep.device, vtep.mac)?;
        changes.0.push(format!("{} MAC set", vtep.device));
    }
    let added = netlink.ensure_address(&vtep.device, vtep.address)?;
    changes.note(added, || {
        format!("address {} on {}", vtep.address, vtep.device)
    });
    ensure_up(netlink, &vtep.device, changes)
}

/// Removes routes into the cluster CIDR that no peer accounts for, and, on
/// the VXLAN device, permanent neighbours and FDB entries of departed peers.
fn remove_stale(
    netlink: &mut Netlink,
    plan: &Plan,
    changes: &mut Changes,
) -> Result<(), LinuxError> {
    let config = &plan.config;
    let wanted_subnets: Vec<_> = plan.peers.iter().map(|peer| peer.pod_cidr).collect();
    for route in netlink.routes(Some(weft_linux::netlink::route::MAIN_TABLE))? {
        let Some(gateway) = route.gateway else {
            continue; // connected routes (our own pod subnet) have no gateway
        };
        let ours = config.cluster_cidr.contains(&route.dst)
            && route.dst != plan.pod_cidr
            && !wanted_subnets.contains(&route.dst);
        if ours {
            let mut stale = RouteSpec::via(route.dst, gateway);
            stale.metric = Some(route.metric);
            if netlink.delete_route(&stale)? {
                changes.0.push(format!("stale route {} removed", route.dst));
            }
        }
    }
    let Some(vtep) = &plan.vtep else {
        return Ok(());
    };
    let wanted_gateways: Vec<IpAddr> = plan.peers.iter().map(|peer| peer.gateway).collect();
    for neighbour in netlink.neighbours(&vtep.device)? {
        if neighbour.permanent && !wanted_gateways.contains(&neighbour.ip) {
            netlink.delete_neighbour(&vtep.device, neighbour.ip)?;
            changes
                .0
                .push(format!("stale neighbour {} removed", neighbour.ip));
        }
    }
    let wanted_macs: Vec<[u8; 6]> = plan.peers.iter().filter_map(|peer| peer.vtep_mac).collect();
    for entry in netlink.fdb_entries(&vtep.device)? {
        let stale = entry.permanent && entry.dst.is_some() && !wanted_macs.contains(&entry.mac);
        if stale {
            netlink.delete_fdb(&vtep.device, entry.mac, entry.dst)?;
            changes.0.push(format!(
                "stale FDB entry {} removed",
                weft_linux::netlink::format_mac(&entry.mac)
            ));
        }
    }
    Ok(())
}
