//! IPv4 and IPv6 interface addresses: listing, idempotent adding, deleting.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::Netlink;
use crate::Error;

/// An address assigned to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Interface index of the link.
    pub index: u32,
    /// Address with its prefix length (e.g. `10.244.1.1/24`).
    pub net: IpNet,
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn message_for(index: u32, net: IpNet) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = family_of(net.addr());
    message.header.prefix_len = net.prefix_len();
    message.header.index = index;
    message.attributes.push(AddressAttribute::Local(net.addr()));
    message
        .attributes
        .push(AddressAttribute::Address(net.addr()));
    if net.addr().is_ipv6() {
        // Duplicate address detection would leave the address unusable
        // ("tentative") for seconds; addresses here are allocated, not guessed.
        message
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    message
}

fn address_from(message: &AddressMessage) -> Option<Address> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
    // point-to-point links, and equal to IFA_LOCAL otherwise (IPv6 sends only it).
    let ip = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            message
                .attributes
                .iter()
                .find_map(|attribute| match attribute {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
        })?;
    Some(Address {
        index: message.header.index,
        net: IpNet::new(ip, message.header.prefix_len).ok()?,
    })
}

impl Netlink {
    /// Addresses of every link, or of the link called `link` when given.
    pub fn addresses(&mut self, link: Option<&str>) -> Result<Vec<Address>, Error> {
        let index = match link {
            Some(name) => Some(self.require_link(name)?.index),
            None => None,
        };
        let replies = self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            "list addresses",
        )?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(message) => address_from(message),
                _ => None,
            })
            .filter(|address| index.is_none_or(|index| address.index == index))
            .collect())
    }

    /// Ensures `net` is assigned to `link`; returns whether it was added.
    /// The same address with another prefix length is a conflict.
    pub fn ensure_address(&mut self, link: &str, net: IpNet) -> Result<bool, Error> {
        let existing = self.addresses(Some(link))?;
        if let Some(found) = existing
            .iter()
            .find(|address| address.net.addr() == net.addr())
        {
            if found.net == net {
                return Ok(false);
            }
            return Err(Error::Conflict {
                object: format!("address {} on link {link}", net.addr()),
                ns: self.ns.clone(),
                detail: format!("it is assigned as {}, not {net}", found.net),
            });
        }
        let index = self.require_link(link)?.index;
        self.change(
            RouteNetlinkMessage::NewAddress(message_for(index, net)),
            NLM_F_CREATE | NLM_F_EXCL,
            "add",
            &|| format!("address {net} on link {link}"),
        )?;
        Ok(true)
    }

    /// Removes `net` from `link`; returns `false` when it was not there.
    pub fn delete_address(&mut self, link: &str, net: IpNet) -> Result<bool, Error> {
        let Some(found) = self.link(link)? else {
            return Ok(false);
        };
        let present = self
            .addresses(Some(link))?
            .iter()
            .any(|address| address.net == net);
        if !present {
            return Ok(false);
        }
        match self.change(
            RouteNetlinkMessage::DelAddress(message_for(found.index, net)),
            0,
            "delete",
            &|| format!("address {net} on link {link}"),
        ) {
            Ok(()) => Ok(true),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(err),
        }
    }
}
