//! One NETLINK_NETFILTER socket, bound in the namespace it was opened in:
//! sending a batch and collecting its errors, running a dump to completion,
//! and sending one acknowledged request. Shared by the nf_tables applier and
//! the conntrack client.
//!
//! Netlink requests to nfnetlink are processed synchronously inside
//! `sendmsg`, so when `send` returns every error and acknowledgement of the
//! batch is already queued on the socket; reading them never waits.

use std::io;

use netlink_sys::{Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};

use crate::Error;
use crate::sys;
use crate::wire::{Attrs, Msgs};

/// Receive buffer: room for the acks and errors of a very large batch.
const RCVBUF: usize = 8 << 20;
/// Blocking receives (dumps, single requests) give up after this long.
const RECV_TIMEOUT_SECS: i64 = 30;
/// Size of one receive call; dump datagrams are at most a few pages.
const RECV_CHUNK: usize = 1 << 20;

/// One kernel reply message, copied out of the datagram.
#[derive(Debug, Clone)]
pub(crate) struct OwnedMsg {
    /// Everything after the netlink header.
    pub(crate) payload: Vec<u8>,
}

impl OwnedMsg {
    pub(crate) fn family(&self) -> Option<u8> {
        self.payload.first().copied()
    }

    pub(crate) fn attrs(&self) -> Attrs<'_> {
        Attrs::new(self.payload.get(sys::NFGENMSG_LEN..).unwrap_or(&[]))
    }
}

/// A decoded `NLMSG_ERROR` (an ack when `errno == 0`).
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    /// Sequence number of the request it answers.
    pub(crate) seq: u32,
    /// Positive errno, 0 for success.
    pub(crate) errno: i32,
    /// Extended ack message.
    pub(crate) message: Option<String>,
    /// Extended ack: offset of the offending attribute in the request.
    pub(crate) offset: Option<usize>,
}

impl Ack {
    fn parse(flags: u16, payload: &[u8]) -> Option<Ack> {
        let error = i32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?);
        let orig = payload.get(4..4 + sys::NLMSG_HDRLEN)?;
        let orig_len = u32::from_ne_bytes(orig[0..4].try_into().ok()?) as usize;
        let seq = u32::from_ne_bytes(orig[8..12].try_into().ok()?);
        let mut ack = Ack {
            seq,
            errno: -error,
            message: None,
            offset: None,
        };
        if flags & sys::NLM_F_ACK_TLVS != 0 {
            let tlv_start = if flags & sys::NLM_F_CAPPED != 0 {
                4 + sys::NLMSG_HDRLEN
            } else {
                4 + crate::wire::align(orig_len)
            };
            for attr in Attrs::new(payload.get(tlv_start..).unwrap_or(&[])) {
                match attr.ty {
                    sys::NLMSGERR_ATTR_MSG => ack.message = Some(attr.string()),
                    sys::NLMSGERR_ATTR_OFFS => {
                        ack.offset = attr
                            .payload
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map(|b| u32::from_ne_bytes(b) as usize)
                    }
                    _ => {}
                }
            }
        }
        Some(ack)
    }
}

/// A netfilter netlink socket and the namespace name it lives in.
#[derive(Debug)]
pub(crate) struct NfSocket {
    sock: Socket,
    /// Namespace name, for errors.
    pub(crate) ns: String,
    /// Next sequence number to hand out.
    seq: u32,
    /// Current forced send buffer size.
    sndbuf: usize,
    buf: Vec<u8>,
}

impl NfSocket {
    /// Opens a socket in the calling thread's namespace.
    pub(crate) fn open(ns: String) -> Result<NfSocket, Error> {
        let fail = |op: &'static str, source: io::Error| Error::Socket {
            ns: ns.clone(),
            op,
            source,
        };
        let mut sock = Socket::new(sys::NETLINK_NETFILTER).map_err(|e| fail("socket", e))?;
        sock.bind_auto().map_err(|e| fail("bind", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| fail("connect", e))?;
        sock.set_ext_ack(true)
            .map_err(|e| fail("set NETLINK_EXT_ACK", e))?;
        sock.set_cap_ack(true)
            .map_err(|e| fail("set NETLINK_CAP_ACK", e))?;
        // Forcing needs CAP_NET_ADMIN, which writing nftables needs anyway;
        // without it the default buffer still serves small batches.
        if setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF).is_err() {
            let _ = sock.set_rx_buf_sz(RCVBUF);
        }
        // A kernel that never answers must not hang an agent forever.
        let timeout = nix::sys::time::TimeVal::new(RECV_TIMEOUT_SECS, 0);
        setsockopt(&sock, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| fail("set SO_RCVTIMEO", e.into()))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(NfSocket {
            sock,
            ns,
            seq: seed,
            sndbuf: 0,
            buf: Vec::with_capacity(RECV_CHUNK),
        })
    }

    /// Opens a socket inside `ns`.
    pub(crate) fn open_in(ns: &weft_linux::NetNs) -> Result<NfSocket, Error> {
        let name = ns.name().to_owned();
        ns.run(move || NfSocket::open(name))?
    }

    /// Reserves `count` consecutive sequence numbers; returns the first.
    pub(crate) fn reserve_seq(&mut self, count: u32) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(count.max(1));
        first
    }

    fn socket_error(&self, op: &'static str, source: io::Error) -> Error {
        Error::Socket {
            ns: self.ns.clone(),
            op,
            source,
        }
    }

    /// Sends one datagram, growing the send buffer for large batches.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let needed = bytes.len() + 64 * 1024;
        if needed > self.sndbuf.max(200 * 1024) {
            setsockopt(&self.sock, sockopt::SndBufForce, &needed)
                .map_err(|e| self.socket_error("set SO_SNDBUFFORCE", e.into()))?;
            self.sndbuf = needed;
        }
        let sent = self
            .sock
            .send(bytes, 0)
            .map_err(|e| self.socket_error("send", e))?;
        if sent != bytes.len() {
            return Err(self.socket_error(
                "send",
                io::Error::new(io::ErrorKind::WriteZero, "short netlink send"),
            ));
        }
        Ok(())
    }

    /// Receives one datagram; `None` when nothing is queued and `wait` is
    /// false.
    fn recv(&mut self, wait: bool) -> Result<Option<Vec<RawReply>>, Error> {
        self.buf.clear();
        if self.buf.capacity() < RECV_CHUNK {
            self.buf.reserve(RECV_CHUNK);
        }
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        match self.sock.recv(&mut self.buf, flags) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !wait => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(self.socket_error(
                    "receive",
                    io::Error::new(io::ErrorKind::TimedOut, "no reply from the kernel"),
                ));
            }
            Err(e) => return Err(self.socket_error("receive", e)),
        }
        Ok(Some(
            Msgs::new(&self.buf)
                .map(|m| RawReply {
                    ty: m.ty,
                    flags: m.flags,
                    seq: m.seq,
                    payload: m.payload.to_vec(),
                })
                .collect(),
        ))
    }

    /// Reads every reply queued after a batch: the errors (with their
    /// sequence numbers) and whether the ack for `ack_seq` arrived.
    pub(crate) fn drain_batch_replies(&mut self, ack_seq: u32) -> Result<(Vec<Ack>, bool), Error> {
        let mut errors = Vec::new();
        let mut acked = false;
        while let Some(msgs) = self.recv(false)? {
            for msg in msgs {
                if msg.ty != sys::NLMSG_ERROR {
                    continue;
                }
                let Some(ack) = Ack::parse(msg.flags, &msg.payload) else {
                    continue;
                };
                if ack.errno == 0 {
                    acked |= ack.seq == ack_seq;
                } else {
                    errors.push(ack);
                }
            }
        }
        Ok((errors, acked))
    }

    /// Sends a dump request and collects all reply messages until
    /// `NLMSG_DONE`. Retries (a few times) when the kernel flags the dump
    /// as interrupted by a concurrent change.
    pub(crate) fn dump(
        &mut self,
        op: &str,
        build: impl Fn(u32) -> Vec<u8>,
    ) -> Result<Vec<OwnedMsg>, Error> {
        for _attempt in 0..4 {
            let seq = self.reserve_seq(1);
            self.send(&build(seq))?;
            let mut out = Vec::new();
            let mut interrupted = false;
            'recv: loop {
                let Some(msgs) = self.recv(true)? else {
                    continue;
                };
                for msg in msgs {
                    if msg.seq != seq {
                        continue;
                    }
                    interrupted |= msg.flags & sys::NLM_F_DUMP_INTR != 0;
                    match msg.ty {
                        sys::NLMSG_DONE => break 'recv,
                        sys::NLMSG_ERROR => {
                            let ack = Ack::parse(msg.flags, &msg.payload);
                            match ack {
                                Some(ack) if ack.errno == 0 => break 'recv,
                                Some(ack) => {
                                    return Err(Error::Request {
                                        ns: self.ns.clone(),
                                        op: op.to_owned(),
                                        source: io::Error::from_raw_os_error(ack.errno),
                                    });
                                }
                                None => {
                                    return Err(Error::Decode {
                                        ns: self.ns.clone(),
                                        op: op.to_owned(),
                                        detail: "short error message".to_owned(),
                                    });
                                }
                            }
                        }
                        _ => out.push(OwnedMsg {
                            payload: msg.payload,
                        }),
                    }
                }
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(Error::Request {
            ns: self.ns.clone(),
            op: op.to_owned(),
            source: io::Error::new(io::ErrorKind::Interrupted, "dump kept being interrupted"),
        })
    }

    /// Sends one request with `NLM_F_ACK` and waits for its ack; returns
    /// the errno (0 on success).
    pub(crate) fn request(&mut self, bytes: &[u8], seq: u32) -> Result<i32, Error> {
        self.send(bytes)?;
        loop {
            let Some(msgs) = self.recv(true)? else {
                continue;
            };
            for msg in msgs {
                if msg.ty == sys::NLMSG_ERROR && msg.seq == seq {
                    if let Some(ack) = Ack::parse(msg.flags, &msg.payload) {
                        return Ok(ack.errno);
                    }
                }
            }
        }
    }
}

/// A reply message copied out of the receive buffer.
#[derive(Debug)]
struct RawReply {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_error_with_extended_ack_is_decoded() {
        let mut payload = Vec::new();
        payload.extend_from_slice(&(-22i32).to_ne_bytes());
        let mut orig = vec![0u8; 16];
        orig[0..4].copy_from_slice(&200u32.to_ne_bytes());
        orig[8..12].copy_from_slice(&77u32.to_ne_bytes());
        payload.extend_from_slice(&orig);
        // NLMSGERR_ATTR_MSG "bad" and NLMSGERR_ATTR_OFFS 40
        payload.extend_from_slice(&[8, 0, 1, 0, b'b', b'a', b'd', 0]);
        payload.extend_from_slice(&[8, 0, 2, 0]);
        payload.extend_from_slice(&40u32.to_ne_bytes());
        let ack = Ack::parse(sys::NLM_F_CAPPED | sys::NLM_F_ACK_TLVS, &payload).expect("parses");
        assert_eq!(ack.seq, 77);
        assert_eq!(ack.errno, 22);
        assert_eq!(ack.message.as_deref(), Some("bad"));
        assert_eq!(ack.offset, Some(40));
    }
}
