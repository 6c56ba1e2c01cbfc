//! The netlink byte layer: a writer that appends netlink messages with an
//! nfnetlink header and nested, 4-byte aligned attributes (TLVs) to one
//! contiguous buffer, and zero-copy readers for messages and attributes.
//!
//! It knows nothing about nf_tables objects; `encode` and `list` give the
//! bytes their meaning. All integers inside attributes are written in the
//! byte order the kernel expects for that attribute (nf_tables uses network
//! byte order); the netlink and nfgenmsg headers use host byte order except
//! `res_id`, which is big-endian.

use crate::sys;

/// Rounds up to the 4-byte netlink alignment.
pub(crate) const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Appends netlink messages to one buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// The encoded messages, back to back.
    pub(crate) buf: Vec<u8>,
    /// Set when a nested attribute grew past the 64 KiB that its 16-bit
    /// length can express; the encoding is then unusable.
    overflow: bool,
}

/// Where a message or nested attribute started, to patch its length later.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark(usize);

impl Mark {
    /// Offset of the message or attribute start in the buffer.
    pub(crate) fn offset(self) -> usize {
        self.0
    }
}

impl Writer {
    pub(crate) fn with_capacity(capacity: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(capacity),
            overflow: false,
        }
    }

    /// Current length of the buffer.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether some nested attribute overflowed its 16-bit length.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Starts a message: netlink header (length patched by [`Writer::end_msg`])
    /// followed by the nfgenmsg header.
    pub(crate) fn begin_msg(
        &mut self,
        ty: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> Mark {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: kernel fills
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        Mark(start)
    }

    /// Patches the length of the message started at `mark`.
    pub(crate) fn end_msg(&mut self, mark: Mark) {
        let len = (self.buf.len() - mark.0) as u32;
        self.buf[mark.0..mark.0 + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Drops everything written after `mark` (used to move an element that
    /// no longer fits into the next message).
    pub(crate) fn truncate_to(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Appends one attribute with a raw payload, padded to 4 bytes.
    pub(crate) fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        if len > usize::from(u16::MAX) {
            self.overflow = true;
        }
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    pub(crate) fn attr_u8(&mut self, ty: u16, value: u8) {
        self.attr(ty, &[value]);
    }

    pub(crate) fn attr_be16(&mut self, ty: u16, value: u16) {
        self.attr(ty, &value.to_be_bytes());
    }

    pub(crate) fn attr_be32(&mut self, ty: u16, value: u32) {
        self.attr(ty, &value.to_be_bytes());
    }

    pub(crate) fn attr_be64(&mut self, ty: u16, value: u64) {
        self.attr(ty, &value.to_be_bytes());
    }

    /// A NUL-terminated string attribute, as the kernel's `NLA_STRING` wants.
    pub(crate) fn attr_str(&mut self, ty: u16, value: &str) {
        let len = 4 + value.len() + 1;
        if len > usize::from(u16::MAX) {
            self.overflow = true;
        }
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// Starts a nested attribute (flagged `NLA_F_NESTED`, like libmnl does).
    pub(crate) fn begin_nest(&mut self, ty: u16) -> Mark {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | sys::NLA_F_NESTED).to_ne_bytes());
        Mark(start)
    }

    /// Patches the length of the nested attribute started at `mark`.
    pub(crate) fn end_nest(&mut self, mark: Mark) {
        let len = self.buf.len() - mark.0;
        if len > usize::from(u16::MAX) {
            self.overflow = true;
        }
        self.buf[mark.0..mark.0 + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    }

    fn pad(&mut self) {
        let padded = align(self.buf.len());
        self.buf.resize(padded, 0);
    }
}

/// One netlink message inside a received datagram (or an encoded batch).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg<'a> {
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    /// Everything after the 16-byte netlink header.
    pub(crate) payload: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The nfgenmsg family byte, when the payload has an nfgenmsg header.
    #[cfg(test)]
    pub(crate) fn family(&self) -> Option<u8> {
        self.payload.first().copied()
    }

    /// The attributes after the nfgenmsg header.
    pub(crate) fn attrs(&self) -> Attrs<'a> {
        Attrs::new(self.payload.get(sys::NFGENMSG_LEN..).unwrap_or(&[]))
    }
}

/// Iterates over the messages of a datagram; stops at the first malformed
/// header (a truncated datagram yields what precedes the damage).
#[derive(Debug, Clone)]
pub(crate) struct Msgs<'a> {
    rest: &'a [u8],
}

impl<'a> Msgs<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Msgs<'a> {
        Msgs { rest: data }
    }
}

impl<'a> Iterator for Msgs<'a> {
    type Item = Msg<'a>;

    fn next(&mut self) -> Option<Msg<'a>> {
        let header = self.rest.get(..sys::NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes(header[0..4].try_into().ok()?) as usize;
        if len < sys::NLMSG_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let msg = Msg {
            ty: u16::from_ne_bytes(header[4..6].try_into().ok()?),
            flags: u16::from_ne_bytes(header[6..8].try_into().ok()?),
            seq: u32::from_ne_bytes(header[8..12].try_into().ok()?),
            payload: &self.rest[sys::NLMSG_HDRLEN..len],
        };
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(msg)
    }
}

/// One attribute: its type (flags masked off), payload, and its offset in
/// the slice the iterator was created over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr<'a> {
    pub(crate) ty: u16,
    pub(crate) payload: &'a [u8],
    /// Offset of the attribute header from the start of the iterated slice.
    pub(crate) offset: usize,
    /// Total length including header (without padding).
    pub(crate) len: usize,
}

impl<'a> Attr<'a> {
    pub(crate) fn nested(&self) -> Attrs<'a> {
        Attrs::new(self.payload)
    }

    pub(crate) fn be32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.payload.get(..4)?.try_into().ok()?))
    }

    pub(crate) fn be64(&self) -> Option<u64> {
        Some(u64::from_be_bytes(self.payload.get(..8)?.try_into().ok()?))
    }

    pub(crate) fn be16(&self) -> Option<u16> {
        Some(u16::from_be_bytes(self.payload.get(..2)?.try_into().ok()?))
    }

    pub(crate) fn u8(&self) -> Option<u8> {
        self.payload.first().copied()
    }

    /// A NUL-terminated (or unterminated) string, lossily decoded.
    pub(crate) fn string(&self) -> String {
        let end = self
            .payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.payload.len());
        String::from_utf8_lossy(&self.payload[..end]).into_owned()
    }
}

/// Iterates over consecutive attributes; stops at the first malformed one.
#[derive(Debug, Clone)]
pub(crate) struct Attrs<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Attrs<'a> {
        Attrs { data, pos: 0 }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        let rest = self.data.get(self.pos..)?;
        let header = rest.get(..4)?;
        let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        let ty = u16::from_ne_bytes([header[2], header[3]]) & sys::NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            self.pos = self.data.len();
            return None;
        }
        let attr = Attr {
            ty,
            payload: &rest[4..len],
            offset: self.pos,
            len,
        };
        self.pos += align(len);
        Some(attr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_to_four_bytes_and_nests_carry_their_length() {
        let mut w = Writer::default();
        let nest = w.begin_nest(1);
        w.attr_str(2, "ab");
        w.attr_u8(3, 7);
        w.end_nest(nest);
        assert_eq!(
            w.buf,
            [
                20, 0, 0x01, 0x80, // nest len 20, type 1 | NLA_F_NESTED
                7, 0, 2, 0, b'a', b'b', 0, 0, // "ab\0" + 1 pad
                5, 0, 3, 0, 7, 0, 0, 0, // u8 + 3 pad
            ]
        );
        let outer: Vec<_> = Attrs::new(&w.buf).collect();
        assert_eq!(outer.len(), 1);
        assert_eq!(outer[0].ty, 1);
        let inner: Vec<_> = outer[0].nested().collect();
        assert_eq!(inner[0].string(), "ab");
        assert_eq!(inner[1].u8(), Some(7));
    }

    #[test]
    fn message_header_is_host_order_with_big_endian_res_id() {
        let mut w = Writer::default();
        let m = w.begin_msg(0x0a00, sys::NLM_F_REQUEST, 7, sys::NFPROTO_IPV4, 10);
        w.attr_be32(2, 1);
        w.end_msg(m);
        let mut expected = Vec::new();
        expected.extend_from_slice(&28u32.to_ne_bytes());
        expected.extend_from_slice(&0x0a00u16.to_ne_bytes());
        expected.extend_from_slice(&1u16.to_ne_bytes());
        expected.extend_from_slice(&7u32.to_ne_bytes());
        expected.extend_from_slice(&0u32.to_ne_bytes());
        expected.extend_from_slice(&[2, 0, 0, 10]);
        expected.extend_from_slice(&[8, 0, 2, 0, 0, 0, 0, 1]);
        assert_eq!(w.buf, expected);
        let msgs: Vec<_> = Msgs::new(&w.buf).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].seq, 7);
        assert_eq!(msgs[0].family(), Some(sys::NFPROTO_IPV4));
        assert_eq!(msgs[0].attrs().next().and_then(|a| a.be32()), Some(1));
    }

    #[test]
    fn oversized_nest_is_flagged() {
        let mut w = Writer::default();
        let nest = w.begin_nest(1);
        for _ in 0..20_000 {
            w.attr_be32(1, 0);
        }
        w.end_nest(nest);
        assert!(w.overflowed());
    }

    #[test]
    fn truncated_input_stops_iteration_without_panicking() {
        let data = [8u8, 0, 1, 0, 0, 0];
        assert_eq!(Attrs::new(&data).count(), 0);
        assert_eq!(Msgs::new(&data).count(), 0);
    }
}
