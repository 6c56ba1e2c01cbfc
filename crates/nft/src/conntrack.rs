//! [`Conntrack`]: listing and deleting connection tracking entries over
//! ctnetlink, for "flush stale UDP conntrack entries" after a NAT mapping
//! changes (a removed Service endpoint, a removed hostPort). UDP has no
//! connection teardown, so without this a client keeps sending into a NAT
//! mapping to an endpoint that is gone.
//!
//! Entries are dumped and filtered here, then deleted one by one by their
//! original tuple: that works on every kernel, and stale entries are few.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::Error;
use crate::model::Family;
use crate::socket::NfSocket;
use crate::sys;
use crate::wire::{Attr, Writer};

/// IP protocol number of UDP.
pub(crate) const IPPROTO_UDP: u8 = 17;

/// One direction of a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port (0 for protocols without ports).
    pub src_port: u16,
    /// Destination port (0 for protocols without ports).
    pub dst_port: u16,
}

/// A conntrack entry: what the client sent (`original`) and what the
/// answer looks like after NAT (`reply`; its source is the real endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtEntry {
    /// The tuple of the first packet.
    pub original: CtTuple,
    /// The tuple expected for answers.
    pub reply: CtTuple,
    /// Conntrack zone.
    pub zone: u16,
}

/// A ctnetlink client bound to one network namespace.
#[derive(Debug)]
pub struct Conntrack {
    sock: NfSocket,
}

impl Conntrack {
    /// A client for the calling thread's namespace.
    pub fn open() -> Result<Conntrack, Error> {
        Ok(Conntrack {
            sock: NfSocket::open("current".to_owned())?,
        })
    }

    /// A client for `ns`.
    pub fn open_in(ns: &weft_linux::NetNs) -> Result<Conntrack, Error> {
        Ok(Conntrack {
            sock: NfSocket::open_in(ns)?,
        })
    }

    /// All entries of one address family (`Ip` or `Ip6`).
    pub fn entries(&mut self, family: Family) -> Result<Vec<CtEntry>, Error> {
        let nfproto = family.nfproto();
        let msgs = self.sock.dump("list conntrack entries", |seq| {
            let mut w = Writer::with_capacity(32);
            let m = w.begin_msg(
                (sys::NFNL_SUBSYS_CTNETLINK << 8) | sys::IPCTNL_MSG_CT_GET,
                sys::NLM_F_REQUEST | sys::NLM_F_DUMP,
                seq,
                nfproto,
                0,
            );
            w.end_msg(m);
            w.buf
        })?;
        Ok(msgs.iter().filter_map(|m| parse_entry(m.attrs())).collect())
    }

    /// Deletes one entry; `false` when it was already gone.
    pub fn delete(&mut self, entry: &CtEntry) -> Result<bool, Error> {
        let seq = self.sock.reserve_seq(1);
        let bytes = encode_delete(entry, seq);
        match self.sock.request(&bytes, seq)? {
            0 => Ok(true),
            libc::ENOENT => Ok(false),
            errno => Err(Error::Request {
                ns: self.sock.ns.clone(),
                op: format!("delete conntrack entry {entry:?}"),
                source: std::io::Error::from_raw_os_error(errno),
            }),
        }
    }

    /// Deletes every entry `filter` selects; returns how many were deleted.
    pub fn delete_matching(
        &mut self,
        family: Family,
        filter: impl Fn(&CtEntry) -> bool,
    ) -> Result<usize, Error> {
        let mut deleted = 0;
        for entry in self.entries(family)?.iter().filter(|e| filter(e)) {
            if self.delete(entry)? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes UDP entries whose original destination is `ip:port` (a
    /// Service IP and port, a node port): clients get a fresh NAT decision.
    pub fn delete_udp_to(&mut self, ip: IpAddr, port: u16) -> Result<usize, Error> {
        self.delete_matching(family_of(ip), |e| {
            e.original.proto == IPPROTO_UDP && e.original.dst == ip && e.original.dst_port == port
        })
    }

    /// Deletes UDP entries answered by `ip` (a removed endpoint: the reply
    /// source of a DNATed connection is the endpoint).
    pub fn delete_udp_from_endpoint(&mut self, ip: IpAddr) -> Result<usize, Error> {
        self.delete_matching(family_of(ip), |e| {
            e.reply.proto == IPPROTO_UDP && e.reply.src == ip
        })
    }
}

fn family_of(ip: IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::Ip,
        IpAddr::V6(_) => Family::Ip6,
    }
}

pub(crate) fn encode_delete(entry: &CtEntry, seq: u32) -> Vec<u8> {
    let mut w = Writer::with_capacity(96);
    let family = match entry.original.src {
        IpAddr::V4(_) => sys::NFPROTO_IPV4,
        IpAddr::V6(_) => sys::NFPROTO_IPV6,
    };
    let m = w.begin_msg(
        (sys::NFNL_SUBSYS_CTNETLINK << 8) | sys::IPCTNL_MSG_CT_DELETE,
        sys::NLM_F_REQUEST | sys::NLM_F_ACK,
        seq,
        family,
        0,
    );
    let tuple = w.begin_nest(sys::CTA_TUPLE_ORIG);
    let ip = w.begin_nest(sys::CTA_TUPLE_IP);
    match (entry.original.src, entry.original.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            w.attr(sys::CTA_IP_V4_SRC, &src.octets());
            w.attr(sys::CTA_IP_V4_DST, &dst.octets());
        }
        (src, dst) => {
            w.attr(sys::CTA_IP_V6_SRC, &to_v6(src).octets());
            w.attr(sys::CTA_IP_V6_DST, &to_v6(dst).octets());
        }
    }
    w.end_nest(ip);
    let proto = w.begin_nest(sys::CTA_TUPLE_PROTO);
    w.attr_u8(sys::CTA_PROTO_NUM, entry.original.proto);
    w.attr_be16(sys::CTA_PROTO_SRC_PORT, entry.original.src_port);
    w.attr_be16(sys::CTA_PROTO_DST_PORT, entry.original.dst_port);
    w.end_nest(proto);
    w.end_nest(tuple);
    if entry.zone != 0 {
        w.attr_be16(sys::CTA_ZONE, entry.zone);
    }
    w.end_msg(m);
    w.buf
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

pub(crate) fn parse_entry<'a>(attrs: impl Iterator<Item = Attr<'a>>) -> Option<CtEntry> {
    let mut original = None;
    let mut reply = None;
    let mut zone = 0;
    for attr in attrs {
        match attr.ty {
            sys::CTA_TUPLE_ORIG => original = parse_tuple(attr),
            sys::CTA_TUPLE_REPLY => reply = parse_tuple(attr),
            sys::CTA_ZONE => zone = attr.be16().unwrap_or(0),
            _ => {}
        }
    }
    Some(CtEntry {
        original: original?,
        reply: reply?,
        zone,
    })
}

fn parse_tuple(tuple: Attr<'_>) -> Option<CtTuple> {
    let mut src = None;
    let mut dst = None;
    let mut proto = None;
    let mut src_port = 0;
    let mut dst_port = 0;
    for attr in tuple.nested() {
        match attr.ty {
            sys::CTA_TUPLE_IP => {
                for ip in attr.nested() {
                    let v4 = || -> Option<IpAddr> {
                        Some(IpAddr::V4(Ipv4Addr::from(
                            <[u8; 4]>::try_from(ip.payload).ok()?,
                        )))
                    };
                    let v6 = || -> Option<IpAddr> {
                        Some(IpAddr::V6(Ipv6Addr::from(
                            <[u8; 16]>::try_from(ip.payload).ok()?,
                        )))
                    };
                    match ip.ty {
                        sys::CTA_IP_V4_SRC => src = v4(),
                        sys::CTA_IP_V4_DST => dst = v4(),
                        sys::CTA_IP_V6_SRC => src = v6(),
                        sys::CTA_IP_V6_DST => dst = v6(),
                        _ => {}
                    }
                }
            }
            sys::CTA_TUPLE_PROTO => {
                for p in attr.nested() {
                    match p.ty {
                        sys::CTA_PROTO_NUM => proto = p.u8(),
                        sys::CTA_PROTO_SRC_PORT => src_port = p.be16().unwrap_or(0),
                        sys::CTA_PROTO_DST_PORT => dst_port = p.be16().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(CtTuple {
        src: src?,
        dst: dst?,
        proto: proto?,
        src_port,
        dst_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Msgs;

    fn entry() -> CtEntry {
        CtEntry {
            original: CtTuple {
                src: "10.0.0.5".parse().expect("ip"),
                dst: "10.96.0.10".parse().expect("ip"),
                proto: IPPROTO_UDP,
                src_port: 40000,
                dst_port: 53,
            },
            reply: CtTuple {
                src: "10.244.1.7".parse().expect("ip"),
                dst: "10.0.0.5".parse().expect("ip"),
                proto: IPPROTO_UDP,
                src_port: 53,
                dst_port: 40000,
            },
            zone: 0,
        }
    }

    #[test]
    fn delete_request_carries_the_original_tuple_in_ctnetlink_layout() {
        let bytes = encode_delete(&entry(), 9);
        let msg = Msgs::new(&bytes).next().expect("one message");
        assert_eq!(
            msg.ty,
            (1 << 8) | 2,
            "CTNETLINK subsystem, IPCTNL_MSG_CT_DELETE"
        );
        assert_eq!(msg.flags, sys::NLM_F_REQUEST | sys::NLM_F_ACK);
        assert_eq!(msg.family(), Some(sys::NFPROTO_IPV4));
        #[rustfmt::skip]
        let expected_attrs: &[u8] = &[
            52, 0, 0x01, 0x80,            // CTA_TUPLE_ORIG (nested)
              20, 0, 0x01, 0x80,          // CTA_TUPLE_IP
                8, 0, 1, 0, 10, 0, 0, 5,  // CTA_IP_V4_SRC
                8, 0, 2, 0, 10, 96, 0, 10,// CTA_IP_V4_DST
              28, 0, 0x02, 0x80,          // CTA_TUPLE_PROTO
                5, 0, 1, 0, 17, 0, 0, 0,  // CTA_PROTO_NUM udp
                6, 0, 2, 0, 0x9c, 0x40, 0, 0, // CTA_PROTO_SRC_PORT 40000
                6, 0, 3, 0, 0, 53, 0, 0,  // CTA_PROTO_DST_PORT 53
        ];
        assert_eq!(&msg.payload[4..], expected_attrs);
        // The same layout is what a dump reply carries: parse it back.
        let parsed = parse_tuple(msg.attrs().next().expect("tuple")).expect("decodes");
        assert_eq!(parsed, entry().original);
    }
}
