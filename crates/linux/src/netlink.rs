//! A synchronous rtnetlink handle bound to one network namespace, and the
//! request/acknowledge plumbing every object module builds on.
//!
//! A [`Netlink`] owns one `NETLINK_ROUTE` socket. The socket is created inside
//! the target namespace (see [`Netlink::in_namespace`]) and keeps talking to
//! that namespace from whichever thread uses it, so no thread ever has to
//! switch namespace to change links, addresses, routes or neighbours there.
//! The object-specific calls live in the submodules: [`link`], [`address`],
//! [`route`], [`neighbour`] and [`bridge_vlan`].

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::{Error, NetNs};

pub mod address;
pub mod bridge_vlan;
pub mod link;
pub mod neighbour;
pub mod route;

pub use address::Address;
pub use bridge_vlan::BridgeVlan;
pub use link::{Link, LinkKind, VethSpec, VxlanSpec};
pub use neighbour::{FdbEntry, Neighbour};
pub use route::{Route, RouteSpec};

/// A synchronous rtnetlink handle for one network namespace.
pub struct Netlink {
    /// Socket opened inside the namespace this handle acts on.
    socket: Socket,
    /// Sequence number of the last request, to match replies.
    sequence: u32,
    /// Namespace name, for error messages.
    ns: String,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("ns", &self.ns).finish()
    }
}

impl Netlink {
    /// A handle on the calling thread's namespace.
    pub fn current() -> Result<Netlink, Error> {
        Self::open("current")
    }

    /// A handle on `ns`: the socket is created by a thread inside `ns`.
    pub fn in_namespace(ns: &NetNs) -> Result<Netlink, Error> {
        let name = ns.name();
        ns.run(|| Self::open(name))?
    }

    fn open(ns: &str) -> Result<Netlink, Error> {
        let socket_error = |source| Error::Netlink {
            op: "open",
            object: "rtnetlink socket".to_owned(),
            ns: ns.to_owned(),
            source,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(socket_error)?;
        socket.bind_auto().map_err(socket_error)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(socket_error)?;
        // Extended acks only improve error messages; old kernels lack them.
        let _ = socket.set_ext_ack(true);
        Ok(Netlink {
            socket,
            sequence: 0,
            ns: ns.to_owned(),
        })
    }

    /// Name of the namespace this handle acts on.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Sends a request that changes state and waits for the kernel's ack.
    pub(crate) fn change(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: &'static str,
        object: &dyn Fn() -> String,
    ) -> Result<(), Error> {
        self.exchange(message, NLM_F_ACK | flags, op, object)
            .map(|_| ())
    }

    /// Sends a get request for one object and returns the kernel's replies.
    pub(crate) fn request(
        &mut self,
        message: RouteNetlinkMessage,
        op: &'static str,
        object: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        self.exchange(message, NLM_F_ACK, op, object)
    }

    /// Sends a dump request and collects every reply message.
    pub(crate) fn dump(
        &mut self,
        message: RouteNetlinkMessage,
        op: &'static str,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        self.exchange(message, NLM_F_DUMP, op, &|| "table".to_owned())
    }

    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: &'static str,
        object: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        let io_error = |source| Error::Netlink {
            op,
            object: object(),
            ns: self.ns.clone(),
            source,
        };
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = sequence;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(io_error)?;

        let is_dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(io_error)?;
            let mut offset = 0;
            while offset < datagram.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
                    .map_err(|err| Error::Decode {
                        op,
                        ns: self.ns.clone(),
                        detail: err.to_string(),
                    })?;
                let length = reply.header.length as usize;
                offset += length.max(1).next_multiple_of(4);
                if reply.header.sequence_number != sequence {
                    continue; // a late reply to an earlier, abandoned request
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Error(error) if error.code.is_some() => {
                        return Err(io_error(error.to_io()));
                    }
                    // An ack (error code 0) ends a change; DONE ends a dump.
                    NetlinkPayload::Error(_) if !is_dump => return Ok(replies),
                    NetlinkPayload::Done(_) => return Ok(replies),
                    _ => {}
                }
                if length == 0 {
                    break;
                }
            }
        }
    }
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (case-insensitive).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_text() {
        let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0xff];
        assert_eq!(format_mac(&mac), "0a:58:0a:f4:00:ff");
        assert_eq!(parse_mac("0A:58:0a:f4:00:ff"), Some(mac));
    }

    #[test]
    fn malformed_macs_are_rejected() {
        for text in [
            "",
            "0a:58:0a:f4:00",
            "0a:58:0a:f4:00:ff:01",
            "0a:58:0a:f4:00:fg",
            "a:58:0a:f4:00:ff",
        ] {
            assert_eq!(parse_mac(text), None, "{text} accepted");
        }
    }
}
