//! Permanent neighbour entries (ARP for IPv4, NDP for IPv6) and bridge or
//! VXLAN forwarding-database (FDB) entries: what a VXLAN overlay programs
//! per peer node instead of learning by flooding.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, format_mac};
use crate::Error;

/// A neighbour (ARP/NDP) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface index.
    pub index: u32,
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its link-layer address, when resolved.
    pub mac: Option<[u8; 6]>,
    /// Whether the entry is permanent (never expires or gets re-probed).
    pub permanent: bool,
}

/// A forwarding-database entry of a bridge port or VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    /// Interface index of the port or VXLAN device.
    pub index: u32,
    /// Destination MAC address.
    pub mac: [u8; 6],
    /// For VXLAN: the remote underlay address frames for `mac` are sent to.
    pub dst: Option<IpAddr>,
    /// Whether the entry is permanent (static).
    pub permanent: bool,
}

fn ip_of(address: &NeighbourAddress) -> Option<IpAddr> {
    match address {
        NeighbourAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        NeighbourAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        // In AF_BRIDGE (FDB) messages the decoder cannot tell the family of
        // NDA_DST and hands over raw bytes.
        NeighbourAddress::Other(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(bytes.as_slice())
                .ok()
                .map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

fn fields(message: &NeighbourMessage) -> (Option<IpAddr>, Option<[u8; 6]>) {
    let mut ip = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(address) => ip = ip_of(address),
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = bytes.as_slice().try_into().ok(),
            _ => {}
        }
    }
    (ip, mac)
}

fn neighbour_message(index: u32, ip: IpAddr, mac: Option<[u8; 6]>) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    message.header.ifindex = index;
    message.header.state = NeighbourState::Permanent;
    message
        .attributes
        .push(NeighbourAttribute::Destination(ip.into()));
    if let Some(mac) = mac {
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    message
}

fn fdb_message(index: u32, mac: [u8; 6], dst: Option<IpAddr>) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Bridge;
    message.header.ifindex = index;
    message.header.state = NeighbourState::Permanent;
    // NTF_SELF: the entry belongs to the device itself (the VXLAN device's own
    // table), not to the bridge it may be a port of.
    message.header.flags = NeighbourFlags::Own;
    message
        .attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    if let Some(dst) = dst {
        message
            .attributes
            .push(NeighbourAttribute::Destination(dst.into()));
    }
    message
}

impl Netlink {
    /// Neighbour entries (both families) on the link called `dev`.
    pub fn neighbours(&mut self, dev: &str) -> Result<Vec<Neighbour>, Error> {
        let index = self.require_link(dev)?.index;
        let mut found = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = NeighbourMessage::default();
            request.header.family = family;
            let replies = self.dump(
                RouteNetlinkMessage::GetNeighbour(request),
                "list neighbours",
            )?;
            found.extend(replies.iter().filter_map(|reply| match reply {
                RouteNetlinkMessage::NewNeighbour(message) if message.header.ifindex == index => {
                    let (ip, mac) = fields(message);
                    Some(Neighbour {
                        index,
                        ip: ip?,
                        mac,
                        permanent: message.header.state == NeighbourState::Permanent,
                    })
                }
                _ => None,
            }));
        }
        Ok(found)
    }

    /// Ensures a permanent entry `ip` → `mac` on `dev`; returns whether it
    /// was added. A permanent entry for `ip` with another MAC is a conflict;
    /// a learned (non-permanent) one is replaced.
    pub fn ensure_neighbour(&mut self, dev: &str, ip: IpAddr, mac: [u8; 6]) -> Result<bool, Error> {
        let index = self.require_link(dev)?.index;
        let object = || format!("neighbour {ip} on link {dev}");
        let existing = self
            .neighbours(dev)?
            .into_iter()
            .find(|neighbour| neighbour.ip == ip);
        let mut flags = NLM_F_CREATE | NLM_F_EXCL;
        if let Some(existing) = existing {
            match (existing.permanent, existing.mac) {
                (true, Some(found)) if found == mac => return Ok(false),
                (true, found) => {
                    return Err(Error::Conflict {
                        object: object(),
                        ns: self.ns.clone(),
                        detail: format!(
                            "it is permanently {}, not {}",
                            found.map(|mac| format_mac(&mac)).unwrap_or_default(),
                            format_mac(&mac)
                        ),
                    });
                }
                (false, _) => flags = NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE,
            }
        }
        self.change(
            RouteNetlinkMessage::NewNeighbour(neighbour_message(index, ip, Some(mac))),
            flags,
            "add",
            &object,
        )?;
        Ok(true)
    }

    /// Deletes the neighbour entry for `ip` on `dev`; returns `false` when
    /// there was none (or the link is gone).
    pub fn delete_neighbour(&mut self, dev: &str, ip: IpAddr) -> Result<bool, Error> {
        let Some(link) = self.link(dev)? else {
            return Ok(false);
        };
        match self.change(
            RouteNetlinkMessage::DelNeighbour(neighbour_message(link.index, ip, None)),
            0,
            "delete",
            &|| format!("neighbour {ip} on link {dev}"),
        ) {
            Ok(()) => Ok(true),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// FDB entries of the port or VXLAN device called `dev`.
    pub fn fdb_entries(&mut self, dev: &str) -> Result<Vec<FdbEntry>, Error> {
        let index = self.require_link(dev)?.index;
        let mut request = NeighbourMessage::default();
        request.header.family = AddressFamily::Bridge;
        let replies = self.dump(RouteNetlinkMessage::GetNeighbour(request), "list FDB")?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewNeighbour(message) if message.header.ifindex == index => {
                    let (dst, mac) = fields(message);
                    Some(FdbEntry {
                        index,
                        mac: mac?,
                        dst,
                        permanent: message.header.state == NeighbourState::Permanent,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Ensures a permanent FDB entry `mac` → `dst` on `dev` (for VXLAN: send
    /// frames for `mac` to underlay address `dst`); returns whether it was
    /// added. An entry for `mac` towards another destination is a conflict.
    pub fn ensure_fdb(&mut self, dev: &str, mac: [u8; 6], dst: IpAddr) -> Result<bool, Error> {
        let index = self.require_link(dev)?.index;
        let object = || format!("FDB entry {} on link {dev}", format_mac(&mac));
        if let Some(existing) = self
            .fdb_entries(dev)?
            .into_iter()
            .find(|entry| entry.mac == mac)
        {
            if existing.dst == Some(dst) {
                return Ok(false);
            }
            return Err(Error::Conflict {
                object: object(),
                ns: self.ns.clone(),
                detail: format!("it points to {:?}, not {dst}", existing.dst),
            });
        }
        self.change(
            RouteNetlinkMessage::NewNeighbour(fdb_message(index, mac, Some(dst))),
            NLM_F_CREATE | NLM_F_EXCL,
            "add",
            &object,
        )?;
        Ok(true)
    }

    /// Deletes the FDB entry `mac` (→ `dst`) on `dev`; returns `false` when
    /// there was none (or the link is gone).
    pub fn delete_fdb(
        &mut self,
        dev: &str,
        mac: [u8; 6],
        dst: Option<IpAddr>,
    ) -> Result<bool, Error> {
        let Some(link) = self.link(dev)? else {
            return Ok(false);
        };
        match self.change(
            RouteNetlinkMessage::DelNeighbour(fdb_message(link.index, mac, dst)),
            0,
            "delete",
            &|| format!("FDB entry {} on link {dev}", format_mac(&mac)),
        ) {
            Ok(()) => Ok(true),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(err),
        }
    }
}
