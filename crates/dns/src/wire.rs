//! DNS wire format for the fast path: reading the common shape of a query
//! straight from its bytes ([`QueryView`]: one question, an optional OPT
//! record, nothing else), lower-casing its name into a lookup key without
//! allocating, and writing names and records into a response buffer.
//!
//! Anything of another shape (several questions, compressed or escaped
//! names, records in the answer or authority sections, EDNS versions above
//! 0) is not read here: [`QueryView::parse`] returns `None` and the caller
//! takes the general path, which parses with hickory.

/// The DNS header length.
pub const HEADER_LEN: usize = 12;

/// Record type numbers used by the index.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const ANY: u16 = 255;
}

/// The IN class.
pub const CLASS_IN: u16 = 1;

/// Longest name in presentation form without the trailing dot.
pub const MAX_KEY_LEN: usize = 253;

/// A lower-case owner name in presentation form without the trailing dot,
/// held on the stack.
#[derive(Clone)]
pub struct Key {
    bytes: [u8; MAX_KEY_LEN],
    len: usize,
}

impl Key {
    pub fn as_str(&self) -> &str {
        // Only ASCII letters, digits, '-', '_', '*' and '.' are ever stored.
        std::str::from_utf8(self.bytes.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }

    /// The key of the uncompressed wire name at the start of `wire`, and
    /// the name's length in bytes (terminating zero included). `None` for
    /// compression pointers, names too long, and labels holding anything
    /// but letters, digits, '-', '_' and '*' (their presentation form needs
    /// escapes: the general path handles them).
    pub fn from_wire(wire: &[u8]) -> Option<(Key, usize)> {
        let mut key = Key {
            bytes: [0; MAX_KEY_LEN],
            len: 0,
        };
        let mut at = 0;
        loop {
            let len = usize::from(*wire.get(at)?);
            if len == 0 {
                return Some((key, at + 1));
            }
            if len > 63 {
                return None;
            }
            let label = wire.get(at + 1..at + 1 + len)?;
            if key.len > 0 {
                *key.bytes.get_mut(key.len)? = b'.';
                key.len += 1;
            }
            for &b in label {
                if !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*')) {
                    return None;
                }
                *key.bytes.get_mut(key.len)? = b.to_ascii_lowercase();
                key.len += 1;
            }
            at += 1 + len;
        }
    }
}

/// The parts of a query the fast path needs, read from its bytes.
#[derive(Clone)]
pub struct QueryView {
    pub id: [u8; 2],
    /// Recursion desired.
    pub rd: bool,
    /// Checking disabled.
    pub cd: bool,
    /// The question's bytes (name, type, class) as the client sent them,
    /// starting at [`HEADER_LEN`].
    pub question_len: usize,
    pub key: Key,
    pub qtype: u16,
    pub qclass: u16,
    /// The client's EDNS payload size when it sent an OPT record.
    pub edns_payload: Option<u16>,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

impl QueryView {
    /// Reads a standard query with one question and at most an EDNS(0) OPT
    /// record; `None` for anything else.
    pub fn parse(bytes: &[u8]) -> Option<QueryView> {
        let flags = *bytes.get(2)?;
        // QR must be clear and the opcode QUERY (0).
        if flags & 0xf8 != 0 {
            return None;
        }
        let counts = (
            u16_at(bytes, 4)?,
            u16_at(bytes, 6)?,
            u16_at(bytes, 8)?,
            u16_at(bytes, 10)?,
        );
        let additional = match counts {
            (1, 0, 0, n @ (0 | 1)) => n,
            _ => return None,
        };
        let (key, name_len) = Key::from_wire(bytes.get(HEADER_LEN..)?)?;
        let qtype_at = HEADER_LEN + name_len;
        let qtype = u16_at(bytes, qtype_at)?;
        let qclass = u16_at(bytes, qtype_at + 2)?;
        let question_end = qtype_at + 4;
        let edns_payload = if additional == 1 {
            // Root owner, type OPT, payload, extended rcode, version,
            // flags, options.
            let opt = bytes.get(question_end..)?;
            if *opt.first()? != 0 || u16_at(opt, 1)? != rtype::OPT {
                return None;
            }
            let payload = u16_at(opt, 3)?;
            let version = *opt.get(6)?;
            let rdlen = usize::from(u16_at(opt, 9)?);
            if version != 0 || opt.len() != 11 + rdlen {
                return None;
            }
            Some(payload)
        } else {
            if bytes.len() != question_end {
                return None;
            }
            None
        };
        Some(QueryView {
            id: [bytes[0], bytes[1]],
            rd: flags & 0x01 != 0,
            cd: bytes.get(3)? & 0x10 != 0,
            question_len: question_end - HEADER_LEN,
            key,
            qtype,
            qclass,
            edns_payload,
        })
    }
}

/// Appends the wire form of a dotted name (no trailing dot needed; empty
/// for the root). Labels longer than 63 bytes are cut there: names come
/// from validated Kubernetes names, which never hold such labels.
pub fn push_name(out: &mut Vec<u8>, dotted: &str) {
    for label in dotted.trim_end_matches('.').split('.') {
        if label.is_empty() {
            continue;
        }
        let bytes = label.as_bytes();
        let bytes = bytes.get(..63).unwrap_or(bytes);
        out.push(u8::try_from(bytes.len()).unwrap_or(63));
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

/// Appends one resource record: owner (already encoded or a compression
/// pointer), type, class IN, TTL, then the record data.
pub fn push_record(out: &mut Vec<u8>, owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) {
    out.extend_from_slice(owner);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// The length of the (possibly compressed) name at the start of `bytes`:
/// its labels up to the terminating zero or the first pointer.
pub fn name_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = *bytes.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => {
                bytes.get(at + 1)?;
                return Some(at + 2);
            }
            l if l & 0xc0 != 0 => return None,
            l => at += 1 + usize::from(l),
        }
    }
}

/// A compression pointer to the name at `offset` of the message, when the
/// offset can be pointed at.
pub fn pointer(offset: usize) -> Option<[u8; 2]> {
    let offset = u16::try_from(offset).ok().filter(|o| *o < 0x4000)?;
    Some((0xc000 | offset).to_be_bytes())
}

/// Appends the OPT record the server sends: payload `payload`, version 0,
/// no flags, no options.
pub fn push_opt(out: &mut Vec<u8>, payload: u16) {
    out.push(0);
    out.extend_from_slice(&rtype::OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
}

/// One stored record: type and data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredRecord<'a> {
    pub rtype: u16,
    pub rdata: &'a [u8],
}

/// Iterates records stored as `type (2) | length (2) | data` one after
/// the other.
pub fn stored_records(mut data: &[u8]) -> impl Iterator<Item = StoredRecord<'_>> {
    std::iter::from_fn(move || {
        let rtype = u16_at(data, 0)?;
        let len = usize::from(u16_at(data, 2)?);
        let rdata = data.get(4..4 + len)?;
        data = data.get(4 + len..).unwrap_or_default();
        Some(StoredRecord { rtype, rdata })
    })
}

/// Appends one record in the stored form [`stored_records`] reads.
pub fn push_stored(out: &mut Vec<u8>, rtype: u16, rdata: &[u8]) {
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(rdata);
}

#[cfg(test)]
mod tests;
