//! Links: listing, idempotent creation of veth pairs, bridges and VXLAN
//! devices, and per-link settings (up/down, MTU, MAC, master, bridge-port
//! hairpin and isolation, promiscuous mode, namespace moves, renames).

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, InfoVxlan,
    LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};

use super::{Netlink, format_mac};
use crate::{Error, NetNs};

/// What kind of device a link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// The loopback device.
    Loopback,
    /// One end of a veth pair.
    Veth,
    /// A Linux bridge.
    Bridge,
    /// A VXLAN tunnel device.
    Vxlan,
    /// A device without a `kind` (physical or virtual NIC).
    Device,
    /// Any other kind, by its kernel name.
    Other(String),
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkKind::Loopback => f.write_str("loopback"),
            LinkKind::Veth => f.write_str("veth"),
            LinkKind::Bridge => f.write_str("bridge"),
            LinkKind::Vxlan => f.write_str("vxlan"),
            LinkKind::Device => f.write_str("device"),
            LinkKind::Other(kind) => f.write_str(kind),
        }
    }
}

/// VXLAN settings as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanInfo {
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Local (source) underlay address.
    pub local: Option<IpAddr>,
    /// Index of the underlay device.
    pub underlay: Option<u32>,
    /// Whether the device learns remote MACs from traffic.
    pub learning: bool,
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Device kind.
    pub kind: LinkKind,
    /// MTU in bytes.
    pub mtu: u32,
    /// Hardware address, for Ethernet-like links.
    pub mac: Option<[u8; 6]>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Promiscuous mode (`IFF_PROMISC`).
    pub promisc: bool,
    /// Index of the master (bridge) device.
    pub master: Option<u32>,
    /// For a veth: index of the peer (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// Largest IPv4 GSO packet the stack builds for the link
    /// (`gso_ipv4_max_size`; 65536 unless raised for BIG TCP).
    pub gso_ipv4_max_size: Option<u32>,
    /// For a bridge port: hairpin mode.
    pub hairpin: Option<bool>,
    /// For a bridge port: port isolation.
    pub isolated: Option<bool>,
    /// For a VXLAN device: its settings.
    pub vxlan: Option<VxlanInfo>,
}

impl Link {
    fn from_message(message: &LinkMessage) -> Option<Link> {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            kind: if message.header.link_layer_type == LinkLayerType::Loopback {
                LinkKind::Loopback
            } else {
                LinkKind::Device
            },
            mtu: 0,
            mac: None,
            up: message.header.flags.contains(LinkFlags::Up),
            promisc: message.header.flags.contains(LinkFlags::Promisc),
            master: None,
            peer_index: None,
            gso_ipv4_max_size: None,
            hairpin: None,
            isolated: None,
            vxlan: None,
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Address(bytes) => link.mac = bytes.as_slice().try_into().ok(),
                LinkAttribute::Controller(index) if *index != 0 => link.master = Some(*index),
                LinkAttribute::Link(index) if *index != 0 => link.peer_index = Some(*index),
                LinkAttribute::LinkInfo(infos) => link.read_info(infos),
                LinkAttribute::GsoIpv4MaxSize(size) => link.gso_ipv4_max_size = Some(*size),
                _ => {}
            }
        }
        (!link.name.is_empty()).then_some(link)
    }

    fn read_info(&mut self, infos: &[LinkInfo]) {
        for info in infos {
            match info {
                LinkInfo::Kind(kind) => {
                    self.kind = match kind {
                        InfoKind::Veth => LinkKind::Veth,
                        InfoKind::Bridge => LinkKind::Bridge,
                        InfoKind::Vxlan => LinkKind::Vxlan,
                        other => LinkKind::Other(other.to_string()),
                    }
                }
                LinkInfo::Data(InfoData::Vxlan(settings)) => {
                    let mut vxlan = VxlanInfo {
                        vni: 0,
                        port: 0,
                        local: None,
                        underlay: None,
                        learning: false,
                    };
                    for setting in settings {
                        match setting {
                            InfoVxlan::Id(vni) => vxlan.vni = *vni,
                            InfoVxlan::Port(port) => vxlan.port = *port,
                            InfoVxlan::Local(ip) => vxlan.local = Some(IpAddr::V4(*ip)),
                            InfoVxlan::Local6(ip) => vxlan.local = Some(IpAddr::V6(*ip)),
                            InfoVxlan::Link(index) if *index != 0 => vxlan.underlay = Some(*index),
                            InfoVxlan::Learning(on) => vxlan.learning = *on,
                            _ => {}
                        }
                    }
                    self.vxlan = Some(vxlan);
                }
                LinkInfo::PortData(InfoPortData::BridgePort(settings)) => {
                    for setting in settings {
                        match setting {
                            InfoBridgePort::HairpinMode(on) => self.hairpin = Some(*on),
                            InfoBridgePort::Isolated(on) => self.isolated = Some(*on),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// A veth pair to ensure: `name` in the handle's namespace, `peer_name` in
/// `peer_namespace` (or beside it when `None`).
#[derive(Debug, Clone, Default)]
pub struct VethSpec {
    /// Name of the end in the handle's namespace.
    pub name: String,
    /// Name of the other end.
    pub peer_name: String,
    /// Namespace of the other end; `None` for the handle's own namespace.
    pub peer_namespace: Option<NetNs>,
    /// MTU of both ends; kernel default when `None`.
    pub mtu: Option<u32>,
    /// MAC of the local end; random when `None`.
    pub mac: Option<[u8; 6]>,
    /// MAC of the peer end; random when `None`.
    pub peer_mac: Option<[u8; 6]>,
}

/// A VXLAN device to ensure.
#[derive(Debug, Clone)]
pub struct VxlanSpec {
    /// Device name (e.g. `weft.vxlan`).
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP destination port (8472 is the Linux/flannel default, 4789 IANA's).
    pub port: u16,
    /// Local underlay address used as the outer source.
    pub local: Option<IpAddr>,
    /// Name of the underlay device.
    pub underlay: Option<String>,
    /// Learn remote MACs from traffic (off when FDB entries are programmed).
    pub learning: bool,
    /// MTU; kernel default (underlay MTU - 50) when `None`.
    pub mtu: Option<u32>,
}

fn link_object(name: &str) -> String {
    format!("link {name}")
}

fn open_namespace_file(ns: &NetNs) -> Result<File, Error> {
    File::open(ns.path()).map_err(|err| ns.io_error("open", err))
}

impl Netlink {
    /// All links in the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, Error> {
        let replies = self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            "list links",
        )?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(message) => Link::from_message(message),
                _ => None,
            })
            .collect())
    }

    /// The link called `name`, if it exists.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, Error> {
        let mut request = LinkMessage::default();
        request
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        self.get_link(request, &|| link_object(name))
    }

    /// The link with interface index `index`, if it exists.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, Error> {
        let mut request = LinkMessage::default();
        request.header.index = index;
        self.get_link(request, &|| format!("link #{index}"))
    }

    fn get_link(
        &mut self,
        request: LinkMessage,
        object: &dyn Fn() -> String,
    ) -> Result<Option<Link>, Error> {
        match self.request(RouteNetlinkMessage::GetLink(request), "get", object) {
            Ok(replies) => Ok(replies.iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(message) => Link::from_message(message),
                _ => None,
            })),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The link called `name`, or [`Error::NotFound`].
    pub fn require_link(&mut self, name: &str) -> Result<Link, Error> {
        self.link(name)?.ok_or_else(|| Error::NotFound {
            object: link_object(name),
            ns: self.ns.clone(),
        })
    }

    fn conflict(&self, name: &str, detail: String) -> Error {
        Error::Conflict {
            object: link_object(name),
            ns: self.ns.clone(),
            detail,
        }
    }

    fn check_kind_and_mtu(
        &self,
        link: &Link,
        kind: LinkKind,
        mtu: Option<u32>,
    ) -> Result<(), Error> {
        if link.kind != kind {
            return Err(self.conflict(
                &link.name,
                format!("it is a {} device, not a {kind} device", link.kind),
            ));
        }
        if let Some(mtu) = mtu.filter(|mtu| *mtu != link.mtu) {
            return Err(self.conflict(&link.name, format!("its MTU is {}, not {mtu}", link.mtu)));
        }
        Ok(())
    }

    /// Ensures the veth pair exists. Creates both ends at once, the peer
    /// directly inside its namespace. An existing `name` must be a veth whose
    /// peer is `peer_name` in the peer namespace, with the asked MTU.
    pub fn ensure_veth(&mut self, spec: &VethSpec) -> Result<Link, Error> {
        if let Some(existing) = self.link(&spec.name)? {
            self.check_kind_and_mtu(&existing, LinkKind::Veth, spec.mtu)?;
            let peer = match &spec.peer_namespace {
                Some(ns) => Netlink::in_namespace(ns)?.link(&spec.peer_name)?,
                None => self.link(&spec.peer_name)?,
            };
            let paired = peer.as_ref().is_some_and(|peer| {
                peer.kind == LinkKind::Veth
                    && peer.peer_index == Some(existing.index)
                    && existing.peer_index == Some(peer.index)
            });
            if !paired {
                return Err(self.conflict(
                    &spec.name,
                    format!("its peer is not veth {}", spec.peer_name),
                ));
            }
            return Ok(existing);
        }

        let peer_ns_file = spec
            .peer_namespace
            .as_ref()
            .map(open_namespace_file)
            .transpose()?;
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(spec.peer_name.clone()));
        if let Some(file) = &peer_ns_file {
            peer.attributes
                .push(LinkAttribute::NetNsFd(file.as_raw_fd()));
        }
        if let Some(mtu) = spec.mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = spec.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(spec.name.clone()));
        if let Some(mtu) = spec.mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = spec.mac {
            message
                .attributes
                .push(LinkAttribute::Address(mac.to_vec()));
        }
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.change(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
            "create",
            &|| format!("veth {} (peer {})", spec.name, spec.peer_name),
        )?;
        drop(peer_ns_file);
        self.require_link(&spec.name)
    }

    /// Ensures a bridge called `name` exists (with `mtu` when given).
    pub fn ensure_bridge(&mut self, name: &str, mtu: Option<u32>) -> Result<Link, Error> {
        if let Some(existing) = self.link(name)? {
            self.check_kind_and_mtu(&existing, LinkKind::Bridge, mtu)?;
            return Ok(existing);
        }
        self.create_bridge(name, mtu)
    }

    /// Creates a bridge called `name` (with `mtu` when given); fails if a
    /// link of that name exists, so a caller that gets it made it.
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>) -> Result<Link, Error> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        if let Some(mtu) = mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        message
            .attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.change(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
            "create",
            &|| format!("bridge {name}"),
        )?;
        self.require_link(name)
    }

    /// Ensures a VXLAN device with these settings exists.
    pub fn ensure_vxlan(&mut self, spec: &VxlanSpec) -> Result<Link, Error> {
        let underlay = match &spec.underlay {
            Some(name) => Some(self.require_link(name)?.index),
            None => None,
        };
        if let Some(existing) = self.link(&spec.name)? {
            self.check_kind_and_mtu(&existing, LinkKind::Vxlan, spec.mtu)?;
            let wanted = VxlanInfo {
                vni: spec.vni,
                port: spec.port,
                local: spec.local,
                underlay,
                learning: spec.learning,
            };
            if existing.vxlan.as_ref() != Some(&wanted) {
                return Err(self.conflict(
                    &spec.name,
                    format!("it has {:?}, wanted {wanted:?}", existing.vxlan),
                ));
            }
            return Ok(existing);
        }
        let mut settings = vec![
            InfoVxlan::Id(spec.vni),
            InfoVxlan::Port(spec.port),
            InfoVxlan::Learning(spec.learning),
        ];
        match spec.local {
            Some(IpAddr::V4(ip)) => settings.push(InfoVxlan::Local(ip)),
            Some(IpAddr::V6(ip)) => settings.push(InfoVxlan::Local6(ip)),
            None => {}
        }
        if let Some(index) = underlay {
            settings.push(InfoVxlan::Link(index));
        }
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(spec.name.clone()));
        if let Some(mtu) = spec.mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(settings)),
        ]));
        self.change(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
            "create",
            &|| format!("vxlan {} (vni {})", spec.name, spec.vni),
        )?;
        self.require_link(&spec.name)
    }

    /// Deletes the link; returns `false` when it did not exist. Deleting one
    /// end of a veth pair deletes both.
    pub fn delete_link(&mut self, name: &str) -> Result<bool, Error> {
        let Some(link) = self.link(name)? else {
            return Ok(false);
        };
        let mut message = LinkMessage::default();
        message.header.index = link.index;
        match self.change(RouteNetlinkMessage::DelLink(message), 0, "delete", &|| {
            link_object(name)
        }) {
            Ok(()) => Ok(true),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn set_link(
        &mut self,
        name: &str,
        op: &'static str,
        edit: impl FnOnce(&mut LinkMessage),
    ) -> Result<(), Error> {
        let link = self.require_link(name)?;
        let mut message = LinkMessage::default();
        message.header.index = link.index;
        edit(&mut message);
        // RTM_NEWLINK without NLM_F_CREATE changes an existing link and, unlike
        // RTM_SETLINK, also accepts bridge-port (slave) settings.
        self.change(RouteNetlinkMessage::NewLink(message), 0, op, &|| {
            link_object(name)
        })
    }

    fn set_flag(&mut self, name: &str, flag: LinkFlags, on: bool) -> Result<(), Error> {
        self.set_link(name, "set flags of", |message| {
            message.header.change_mask = flag;
            if on {
                message.header.flags = flag;
            }
        })
    }

    /// Brings the link up.
    pub fn set_up(&mut self, name: &str) -> Result<(), Error> {
        self.set_flag(name, LinkFlags::Up, true)
    }

    /// Brings the link down.
    pub fn set_down(&mut self, name: &str) -> Result<(), Error> {
        self.set_flag(name, LinkFlags::Up, false)
    }

    /// Turns promiscuous mode on or off.
    pub fn set_promisc(&mut self, name: &str, on: bool) -> Result<(), Error> {
        self.set_flag(name, LinkFlags::Promisc, on)
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<(), Error> {
        self.set_link(name, "set MTU of", |message| {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        })
    }

    /// Sets the largest GSO packet the stack builds for the link and the
    /// largest packet GRO assembles on it, for IPv6 and IPv4 alike (`ip link
    /// set DEV gso_max_size N gro_max_size N gso_ipv4_max_size N
    /// gro_ipv4_max_size N`). Above 65536 this is BIG TCP: a TCP sender
    /// behind the link hands the stack fewer, larger packets, so each hop a
    /// packet crosses (veth, bridge, forwarding, netfilter) is paid for fewer
    /// times per byte. The kernel refuses sizes above the device's
    /// `tso_max_size` (512 KiB for veth and bridge devices) with `EINVAL`.
    pub fn set_gso_max_size(&mut self, name: &str, size: u32) -> Result<(), Error> {
        self.set_link(name, "set GSO/GRO max size of", |message| {
            message.attributes.extend([
                LinkAttribute::GsoMaxSize(size),
                LinkAttribute::GroMaxSize(size),
                LinkAttribute::GsoIpv4MaxSize(size),
                LinkAttribute::GroIpv4MaxSize(size),
            ]);
        })
    }

    /// Sets the hardware address.
    pub fn set_mac(&mut self, name: &str, mac: [u8; 6]) -> Result<(), Error> {
        self.set_link(name, "set MAC of", |message| {
            message
                .attributes
                .push(LinkAttribute::Address(mac.to_vec()));
        })
        .map_err(|err| match err {
            Error::Netlink { source, ns, .. } => Error::Netlink {
                op: "set MAC",
                object: format!("{} to {}", link_object(name), format_mac(&mac)),
                ns,
                source,
            },
            other => other,
        })
    }

    /// Enslaves the link to bridge `master`, or releases it with `None`.
    pub fn set_master(&mut self, name: &str, master: Option<&str>) -> Result<(), Error> {
        let index = match master {
            Some(master) => self.require_link(master)?.index,
            None => 0,
        };
        self.set_link(name, "set master of", |message| {
            message.attributes.push(LinkAttribute::Controller(index));
        })
    }

    fn set_bridge_port(&mut self, name: &str, setting: InfoBridgePort) -> Result<(), Error> {
        self.set_link(name, "set bridge-port option of", |message| {
            message.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![setting])),
            ]));
        })
    }

    /// Hairpin mode of a bridge port: frames may leave by the port they
    /// came in (needed for a pod reaching itself through its Service).
    pub fn set_hairpin(&mut self, name: &str, on: bool) -> Result<(), Error> {
        self.set_bridge_port(name, InfoBridgePort::HairpinMode(on))
    }

    /// Isolation of a bridge port: isolated ports cannot talk to each other.
    pub fn set_isolated(&mut self, name: &str, on: bool) -> Result<(), Error> {
        self.set_bridge_port(name, InfoBridgePort::Isolated(on))
    }

    /// Renames the link (the kernel requires most links to be down).
    pub fn rename(&mut self, name: &str, new_name: &str) -> Result<(), Error> {
        self.set_link(name, "rename", |message| {
            message
                .attributes
                .push(LinkAttribute::IfName(new_name.to_owned()));
        })
    }

    /// Moves the link into namespace `ns` (it keeps its name there).
    pub fn move_to_namespace(&mut self, name: &str, ns: &NetNs) -> Result<(), Error> {
        let file = open_namespace_file(ns)?;
        self.set_link(name, "move to another namespace", |message| {
            message
                .attributes
                .push(LinkAttribute::NetNsFd(file.as_raw_fd()));
        })
    }
}
