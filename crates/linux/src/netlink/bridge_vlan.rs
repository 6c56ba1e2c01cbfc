//! Bridge VLAN filtering: turning filtering on or off for a bridge, and the
//! VLANs of a bridge port (or of the bridge device itself): adding one with
//! its PVID/untagged flags, removing one, and reading them back, over
//! `AF_BRIDGE` link messages carrying `IFLA_AF_SPEC` → `IFLA_BRIDGE_VLAN_INFO`
//! (what `bridge vlan add|del|show` sends).

use netlink_packet_route::link::{
    AfSpecBridge, BridgeFlag, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoData, InfoKind,
    LinkAttribute, LinkExtentMask, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{LinkKind, Netlink};
use crate::Error;

/// One VLAN of a bridge port or bridge device, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeVlan {
    /// VLAN ID (1-4094).
    pub vid: u16,
    /// Untagged ingress frames are put in this VLAN (port VLAN ID).
    pub pvid: bool,
    /// Frames of this VLAN leave the port untagged.
    pub untagged: bool,
}

/// A VLAN message for `index`: `self_` addresses the bridge device itself
/// (`BRIDGE_FLAGS_SELF`) rather than a port of it.
fn vlan_message(index: u32, self_: bool, info: BridgeVlanInfo) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.interface_family = AddressFamily::Bridge;
    message.header.index = index;
    let mut spec = Vec::with_capacity(2);
    if self_ {
        spec.push(AfSpecBridge::Flags(BridgeFlag::LowerDev));
    }
    spec.push(AfSpecBridge::VlanInfo(info));
    message.attributes.push(LinkAttribute::AfSpecBridge(spec));
    message
}

impl Netlink {
    /// Turns VLAN filtering of bridge `bridge` on or off
    /// (`IFLA_BR_VLAN_FILTERING`). With filtering on, every port starts in
    /// the default VLAN 1 (PVID, untagged) unless told otherwise.
    pub fn set_vlan_filtering(&mut self, bridge: &str, on: bool) -> Result<(), Error> {
        let link = self.require_link(bridge)?;
        let mut message = LinkMessage::default();
        message.header.index = link.index;
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(on)])),
        ]));
        self.change(
            RouteNetlinkMessage::NewLink(message),
            0,
            "set VLAN filtering of",
            &|| format!("bridge {bridge}"),
        )
    }

    /// Whether bridge `bridge` filters by VLAN.
    pub fn vlan_filtering(&mut self, bridge: &str) -> Result<bool, Error> {
        let mut request = LinkMessage::default();
        request
            .attributes
            .push(LinkAttribute::IfName(bridge.to_owned()));
        let replies = self.request(RouteNetlinkMessage::GetLink(request), "get", &|| {
            format!("bridge {bridge}")
        })?;
        let filtering = replies.iter().find_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(message) => {
                message
                    .attributes
                    .iter()
                    .find_map(|attribute| match attribute {
                        LinkAttribute::LinkInfo(infos) => {
                            infos.iter().find_map(|info| match info {
                                LinkInfo::Data(InfoData::Bridge(settings)) => {
                                    settings.iter().find_map(|setting| match setting {
                                        InfoBridge::VlanFiltering(on) => Some(*on),
                                        _ => None,
                                    })
                                }
                                _ => None,
                            })
                        }
                        _ => None,
                    })
            }
            _ => None,
        });
        filtering.ok_or_else(|| Error::NotFound {
            object: format!("bridge {bridge}"),
            ns: self.namespace().to_owned(),
        })
    }

    /// Ensures VLAN `vid` is on `dev`, a bridge port or a bridge itself,
    /// with exactly these flags: `pvid` puts untagged ingress frames in it,
    /// `untagged` strips the tag on egress. Adding a VLAN that exists
    /// updates its flags (a port has one PVID: a new PVID replaces the old).
    pub fn ensure_bridge_vlan(
        &mut self,
        dev: &str,
        vid: u16,
        pvid: bool,
        untagged: bool,
    ) -> Result<(), Error> {
        let link = self.require_link(dev)?;
        let mut flags = BridgeVlanInfoFlags::empty();
        if pvid {
            flags |= BridgeVlanInfoFlags::Pvid;
        }
        if untagged {
            flags |= BridgeVlanInfoFlags::Untagged;
        }
        let message = vlan_message(
            link.index,
            link.kind == LinkKind::Bridge,
            BridgeVlanInfo { flags, vid },
        );
        self.change(
            RouteNetlinkMessage::SetLink(message),
            0,
            "add VLAN to",
            &|| format!("VLAN {vid} of link {dev}"),
        )
    }

    /// Removes VLAN `vid` from `dev` (a bridge port or a bridge itself);
    /// returns `false` when it was not there.
    pub fn delete_bridge_vlan(&mut self, dev: &str, vid: u16) -> Result<bool, Error> {
        let Some(link) = self.link(dev)? else {
            return Ok(false);
        };
        let message = vlan_message(
            link.index,
            link.kind == LinkKind::Bridge,
            BridgeVlanInfo {
                flags: BridgeVlanInfoFlags::empty(),
                vid,
            },
        );
        match self.change(RouteNetlinkMessage::DelLink(message), 0, "delete", &|| {
            format!("VLAN {vid} of link {dev}")
        }) {
            Ok(()) => Ok(true),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The VLANs of `dev` (a bridge port or a bridge itself), by VLAN ID;
    /// empty when the bridge does not filter by VLAN.
    pub fn bridge_vlans(&mut self, dev: &str) -> Result<Vec<BridgeVlan>, Error> {
        let link = self.require_link(dev)?;
        // The kernel answers AF_BRIDGE link requests only as dumps.
        let mut request = LinkMessage::default();
        request.header.interface_family = AddressFamily::Bridge;
        request
            .attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::Brvlan]));
        let replies = self.dump(RouteNetlinkMessage::GetLink(request), "list bridge VLANs")?;
        let mut vlans: Vec<BridgeVlan> = replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(message) if message.header.index == link.index => {
                    Some(message)
                }
                _ => None,
            })
            .flat_map(|message| message.attributes.iter())
            .filter_map(|attribute| match attribute {
                LinkAttribute::AfSpecBridge(spec) => Some(spec),
                _ => None,
            })
            .flatten()
            .filter_map(|entry| match entry {
                AfSpecBridge::VlanInfo(info) => Some(BridgeVlan {
                    vid: info.vid,
                    pvid: info.flags.contains(BridgeVlanInfoFlags::Pvid),
                    untagged: info.flags.contains(BridgeVlanInfoFlags::Untagged),
                }),
                _ => None,
            })
            .collect();
        vlans.sort_by_key(|vlan| vlan.vid);
        vlans.dedup();
        Ok(vlans)
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable;

    use super::*;

    fn bytes(message: &LinkMessage) -> Vec<u8> {
        let mut buffer = vec![0; message.buffer_len()];
        message.emit(&mut buffer);
        buffer
    }

    /// What `bridge vlan add vid 10 dev port0 pvid untagged` sends (strace),
    /// after the netlink header: ifinfomsg for AF_BRIDGE, then IFLA_AF_SPEC
    /// holding one IFLA_BRIDGE_VLAN_INFO.
    #[test]
    fn port_vlan_request_is_what_iproute2_sends() {
        let message = vlan_message(
            4,
            false,
            BridgeVlanInfo {
                flags: BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged,
                vid: 10,
            },
        );
        let expected: Vec<u8> = [
            &[7, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[12, 0, 26, 0],
            &[8, 0, 2, 0, 6, 0, 10, 0],
        ]
        .concat();
        assert_eq!(bytes(&message), expected);
    }

    /// `bridge vlan add vid 10 dev br0 self`: IFLA_BRIDGE_FLAGS = SELF first.
    #[test]
    fn bridge_self_vlan_request_carries_the_self_flag() {
        let message = vlan_message(
            3,
            true,
            BridgeVlanInfo {
                flags: BridgeVlanInfoFlags::empty(),
                vid: 10,
            },
        );
        let expected: Vec<u8> = [
            &[7, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[20, 0, 26, 0],
            &[6, 0, 0, 0, 2, 0, 0, 0],
            &[8, 0, 2, 0, 0, 0, 10, 0],
        ]
        .concat();
        assert_eq!(bytes(&message), expected);
    }
}
