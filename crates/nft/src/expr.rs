//! Rules and the nf_tables expressions they are made of. An [`Expr`] is one
//! kernel expression (payload, meta, ct, cmp, lookup, nat, ...), exactly as
//! the kernel runs it: loads into 32-bit registers, compares, lookups and
//! statements. The constructors on [`Expr`] build the common nft phrases
//! (`ip daddr`, `th dport`, `ct state established,related`, a `vmap` lookup
//! on a concatenated key) so callers rarely pick offsets by hand.

use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::model::Verdict;

/// One of the sixteen 32-bit data registers (`NFT_REG32_00..15`). A value
/// wider than 4 bytes (an IPv6 address, a concatenation) occupies this and the
/// following registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reg(u8);

impl Reg {
    /// Register 0.
    pub const R0: Reg = Reg(0);
    /// Register 1.
    pub const R1: Reg = Reg(1);
    /// Register 2.
    pub const R2: Reg = Reg(2);
    /// Register 3.
    pub const R3: Reg = Reg(3);
    /// Register 4.
    pub const R4: Reg = Reg(4);
    /// Register 5.
    pub const R5: Reg = Reg(5);
    /// Register 6.
    pub const R6: Reg = Reg(6);
    /// Register 7.
    pub const R7: Reg = Reg(7);
    /// Register 8.
    pub const R8: Reg = Reg(8);

    /// Register `index` (0..=15), or `None` out of range.
    pub fn new(index: u8) -> Option<Reg> {
        (index < 16).then_some(Reg(index))
    }

    /// The register `n` positions later (used to address the second field
    /// of a concatenation). Saturates at the last register.
    pub fn offset(self, n: u8) -> Reg {
        Reg(self.0.saturating_add(n).min(15))
    }

    pub(crate) fn wire(self) -> u32 {
        crate::sys::NFT_REG32_00 + u32::from(self.0)
    }

    /// The register a register number names. The kernel dumps a 32-bit
    /// register that starts one of the legacy 16-byte registers under the
    /// legacy number (`NFT_REG_1..4` for `R0`, `R4`, `R8`, `R12`).
    pub(crate) fn from_wire(value: u32) -> Option<Reg> {
        let index = match value {
            1..=4 => (value - 1) * 4,
            _ => value.checked_sub(crate::sys::NFT_REG32_00)?,
        };
        Reg::new(u8::try_from(index).ok()?)
    }
}

/// Where `payload` loads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    /// Link layer header.
    LinkLayer,
    /// Network header (IPv4/IPv6).
    Network,
    /// Transport header (TCP/UDP/SCTP...).
    Transport,
}

/// `meta` keys weft uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// Packet length.
    Len,
    /// Ethertype.
    Protocol,
    /// Packet mark (host order u32).
    Mark,
    /// Input interface index.
    Iif,
    /// Output interface index.
    Oif,
    /// Input interface name (16 bytes, NUL padded).
    IifName,
    /// Output interface name (16 bytes, NUL padded).
    OifName,
    /// Netfilter family (NFPROTO_*), 1 byte.
    NfProto,
    /// Layer 4 protocol number, 1 byte.
    L4Proto,
    /// Packet type (unicast, broadcast, multicast, host).
    PktType,
}

impl MetaKey {
    const ALL: [MetaKey; 10] = [
        MetaKey::Len,
        MetaKey::Protocol,
        MetaKey::Mark,
        MetaKey::Iif,
        MetaKey::Oif,
        MetaKey::IifName,
        MetaKey::OifName,
        MetaKey::NfProto,
        MetaKey::L4Proto,
        MetaKey::PktType,
    ];

    pub(crate) fn from_number(value: u32) -> Option<MetaKey> {
        MetaKey::ALL.into_iter().find(|k| k.number() == value)
    }

    pub(crate) fn number(self) -> u32 {
        match self {
            MetaKey::Len => 0,
            MetaKey::Protocol => 1,
            MetaKey::Mark => 3,
            MetaKey::Iif => 4,
            MetaKey::Oif => 5,
            MetaKey::IifName => 6,
            MetaKey::OifName => 7,
            MetaKey::NfProto => 15,
            MetaKey::L4Proto => 16,
            MetaKey::PktType => 19,
        }
    }
}

/// `ct` keys weft uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    /// Connection state bits ([`ct_state`] constants), host order u32.
    State,
    /// Direction of this packet (0 original, 1 reply), 1 byte.
    Direction,
    /// Connection status bits ([`ct_status`] constants), host order u32.
    Status,
    /// Connection mark, host order u32.
    Mark,
    /// Layer 4 protocol of the tuple, 1 byte.
    Protocol,
    /// Tuple source port (per direction), network order.
    ProtoSrc,
    /// Tuple destination port (per direction), network order.
    ProtoDst,
    /// Tuple IPv4 source (per direction).
    SrcIp,
    /// Tuple IPv4 destination (per direction).
    DstIp,
    /// Tuple IPv6 source (per direction).
    SrcIp6,
    /// Tuple IPv6 destination (per direction).
    DstIp6,
}

impl CtKey {
    const ALL: [CtKey; 11] = [
        CtKey::State,
        CtKey::Direction,
        CtKey::Status,
        CtKey::Mark,
        CtKey::Protocol,
        CtKey::ProtoSrc,
        CtKey::ProtoDst,
        CtKey::SrcIp,
        CtKey::DstIp,
        CtKey::SrcIp6,
        CtKey::DstIp6,
    ];

    pub(crate) fn from_number(value: u32) -> Option<CtKey> {
        CtKey::ALL.into_iter().find(|k| k.number() == value)
    }

    pub(crate) fn number(self) -> u32 {
        match self {
            CtKey::State => 0,
            CtKey::Direction => 1,
            CtKey::Status => 2,
            CtKey::Mark => 3,
            CtKey::Protocol => 10,
            CtKey::ProtoSrc => 11,
            CtKey::ProtoDst => 12,
            CtKey::SrcIp => 19,
            CtKey::DstIp => 20,
            CtKey::SrcIp6 => 21,
            CtKey::DstIp6 => 22,
        }
    }
}

pub mod ct_state {
    //! Bits of the `ct state` value (`NF_CT_STATE_*_BIT`).
    /// Packet that conntrack could not classify.
    pub const INVALID: u32 = 1;
    /// Part of an established connection.
    pub const ESTABLISHED: u32 = 1 << 1;
    /// Related to an existing connection (ICMP errors, FTP data).
    pub const RELATED: u32 = 1 << 2;
    /// First packet of a connection.
    pub const NEW: u32 = 1 << 3;
    /// Not tracked.
    pub const UNTRACKED: u32 = 1 << 6;
}

pub mod ct_status {
    //! Bits of the `ct status` value (`IPS_*`).
    /// Connection was source-NATed.
    pub const SNAT: u32 = 1 << 4;
    /// Connection was destination-NATed.
    pub const DNAT: u32 = 1 << 5;
}

/// Direction for tuple keys of `ct`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtDirection {
    /// The direction of the first packet.
    Original,
    /// The answer direction.
    Reply,
}

/// Comparison operators of `cmp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Neq,
    /// `<`
    Lt,
    /// `<=`
    Lte,
    /// `>`
    Gt,
    /// `>=`
    Gte,
}

impl CmpOp {
    pub(crate) fn from_number(value: u32) -> Option<CmpOp> {
        [
            CmpOp::Eq,
            CmpOp::Neq,
            CmpOp::Lt,
            CmpOp::Lte,
            CmpOp::Gt,
            CmpOp::Gte,
        ]
        .into_iter()
        .find(|op| op.number() == value)
    }

    pub(crate) fn number(self) -> u32 {
        match self {
            CmpOp::Eq => 0,
            CmpOp::Neq => 1,
            CmpOp::Lt => 2,
            CmpOp::Lte => 3,
            CmpOp::Gt => 4,
            CmpOp::Gte => 5,
        }
    }
}

/// What a `lookup` does with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    /// Set membership: the rule goes on only if the key is in the set.
    Present,
    /// Negated membership: goes on only if the key is absent.
    Absent,
    /// Verdict map: the element's verdict is applied (`vmap`).
    Verdict,
    /// Data map: the element's value is loaded into this register.
    Data(Reg),
}

/// `numgen` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumgenKind {
    /// Uniform random in `offset..offset+modulus`.
    Random,
    /// Round robin.
    Incremental,
}

/// `nat` kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Source NAT.
    Snat,
    /// Destination NAT.
    Dnat,
}

/// Port allocation flags of `snat`/`dnat`/`masquerade`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatFlags {
    /// `random`: randomized source port mapping.
    pub random: bool,
    /// `fully-random`: port mapping from a full PRNG (what kube-proxy uses).
    pub fully_random: bool,
    /// `persistent`: same client keeps the same mapping.
    pub persistent: bool,
}

impl NatFlags {
    /// Only `fully-random`.
    pub const FULLY_RANDOM: NatFlags = NatFlags {
        random: false,
        fully_random: true,
        persistent: false,
    };

    pub(crate) fn bits(self) -> u32 {
        let mut bits = 0;
        if self.random {
            bits |= crate::sys::NF_NAT_RANGE_PROTO_RANDOM;
        }
        if self.fully_random {
            bits |= crate::sys::NF_NAT_RANGE_PROTO_RANDOM_FULLY;
        }
        if self.persistent {
            bits |= crate::sys::NF_NAT_RANGE_PERSISTENT;
        }
        bits
    }
}

/// Address family of a `nat` statement's address register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatFamily {
    /// IPv4 address in the register.
    Ipv4,
    /// IPv6 address in the register (four registers).
    Ipv6,
}

/// What `reject` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// ICMP/ICMPv6 port unreachable (the client sees "connection refused").
    /// In an `inet` table this is the family-independent `icmpx` form.
    PortUnreachable,
    /// ICMP/ICMPv6 administratively prohibited.
    AdminProhibited,
    /// TCP reset (only valid for TCP packets).
    TcpReset,
}

/// `dynset` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynsetOp {
    /// `add @set { key }`: insert if absent.
    Add,
    /// `update @set { key }`: insert or refresh the timeout.
    Update,
}

/// One nf_tables expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Load `len` bytes at `offset` from a packet header into `dreg`.
    Payload {
        /// Which header.
        base: PayloadBase,
        /// Byte offset inside that header.
        offset: u32,
        /// Bytes to load.
        len: u32,
        /// Destination register.
        dreg: Reg,
    },
    /// Load packet metadata into `dreg`.
    Meta {
        /// What to load.
        key: MetaKey,
        /// Destination register.
        dreg: Reg,
    },
    /// Set packet metadata (`meta mark set`) from `sreg`.
    MetaSet {
        /// What to set.
        key: MetaKey,
        /// Source register.
        sreg: Reg,
    },
    /// Load connection tracking data into `dreg`.
    Ct {
        /// What to load.
        key: CtKey,
        /// Tuple direction, for tuple keys.
        direction: Option<CtDirection>,
        /// Destination register.
        dreg: Reg,
    },
    /// Set connection data (`ct mark set`) from `sreg`.
    CtSet {
        /// What to set.
        key: CtKey,
        /// Source register.
        sreg: Reg,
    },
    /// Compare `sreg` with `data`; the rule stops here when false.
    Cmp {
        /// Register compared.
        sreg: Reg,
        /// Operator.
        op: CmpOp,
        /// Bytes compared against, in register layout.
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        /// Source register.
        sreg: Reg,
        /// Destination register.
        dreg: Reg,
        /// AND mask.
        mask: Vec<u8>,
        /// XOR value, same length as `mask`.
        xor: Vec<u8>,
    },
    /// Look the key in `sreg` up in a named set or map.
    Lookup {
        /// Set or map name in the rule's table.
        set: String,
        /// First register of the key.
        sreg: Reg,
        /// What to do with the result.
        result: LookupResult,
    },
    /// A verdict (`accept`, `jump chain`, ...).
    Verdict(Verdict),
    /// Load a constant into `dreg`.
    Immediate {
        /// Destination register.
        dreg: Reg,
        /// Bytes, in register layout.
        data: Vec<u8>,
    },
    /// `numgen random mod N offset O` into `dreg`.
    Numgen {
        /// Destination register.
        dreg: Reg,
        /// Modulus (number of buckets).
        modulus: u32,
        /// Random or incremental.
        kind: NumgenKind,
        /// Added to the result.
        offset: u32,
    },
    /// `snat`/`dnat` to the address (and port) in registers.
    Nat {
        /// Source or destination NAT.
        kind: NatKind,
        /// Address family of `addr`.
        family: NatFamily,
        /// Register holding the address; `None` keeps the address.
        addr: Option<Reg>,
        /// Register holding the port; `None` keeps the port.
        port: Option<Reg>,
        /// Port allocation flags.
        flags: NatFlags,
    },
    /// `masquerade` to the outgoing interface's address.
    Masquerade(NatFlags),
    /// `reject`.
    Reject(RejectKind),
    /// `counter`.
    Counter,
    /// `add`/`update @set { key }` from the packet path.
    Dynset {
        /// Set name (the set must be [`crate::Set::dynamic`]).
        set: String,
        /// Add or update.
        op: DynsetOp,
        /// First register of the key.
        sreg_key: Reg,
        /// Element timeout; `None` uses the set's.
        timeout: Option<Duration>,
    },
    /// `fib daddr type` into `dreg` (a host-order u32 `RTN_*` address type),
    /// used to match traffic to local addresses (`fib daddr type local`).
    FibDaddrType {
        /// Destination register.
        dreg: Reg,
    },
    /// `fib saddr type` into `dreg`, used to match traffic from this host's
    /// own addresses (`fib saddr type local`).
    FibSaddrType {
        /// Destination register.
        dreg: Reg,
    },
}

pub mod addr_type {
    //! Route types returned by [`super::Expr::FibDaddrType`]: `RTN_*` values
    //! (`linux/rtnetlink.h`).
    /// A local address of this host.
    pub const LOCAL: u32 = 2;
}

impl Expr {
    /// `ip saddr` into `dreg`.
    pub fn ip_saddr(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Network, 12, 4, dreg)
    }

    /// `ip daddr` into `dreg`.
    pub fn ip_daddr(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Network, 16, 4, dreg)
    }

    /// `ip6 saddr` into `dreg`..`dreg+3`.
    pub fn ip6_saddr(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Network, 8, 16, dreg)
    }

    /// `ip6 daddr` into `dreg`..`dreg+3`.
    pub fn ip6_daddr(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Network, 24, 16, dreg)
    }

    /// `th sport` (any transport with ports) into `dreg`.
    pub fn th_sport(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Transport, 0, 2, dreg)
    }

    /// `th dport` into `dreg`.
    pub fn th_dport(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Transport, 2, 2, dreg)
    }

    /// `meta l4proto` into `dreg`.
    pub fn l4proto(dreg: Reg) -> Expr {
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg,
        }
    }

    /// `ether saddr` (6 bytes) into `dreg`: the source MAC of the link-layer
    /// header (in the `bridge` family, the frame as it entered the bridge).
    pub fn ether_saddr(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::LinkLayer, 6, 6, dreg)
    }

    /// A raw payload load.
    pub fn payload(base: PayloadBase, offset: u32, len: u32, dreg: Reg) -> Expr {
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        }
    }

    /// `sreg == data`.
    pub fn cmp_eq(sreg: Reg, data: impl Into<Vec<u8>>) -> Expr {
        Expr::Cmp {
            sreg,
            op: CmpOp::Eq,
            data: data.into(),
        }
    }

    /// `sreg != data`.
    pub fn cmp_neq(sreg: Reg, data: impl Into<Vec<u8>>) -> Expr {
        Expr::Cmp {
            sreg,
            op: CmpOp::Neq,
            data: data.into(),
        }
    }

    /// Verdict-map lookup of the key in `sreg` (`... vmap @set`).
    pub fn vmap(set: impl Into<String>, sreg: Reg) -> Expr {
        Expr::Lookup {
            set: set.into(),
            sreg,
            result: LookupResult::Verdict,
        }
    }

    /// Data-map lookup of the key in `sreg`, value into `dreg`.
    pub fn map(set: impl Into<String>, sreg: Reg, dreg: Reg) -> Expr {
        Expr::Lookup {
            set: set.into(),
            sreg,
            result: LookupResult::Data(dreg),
        }
    }

    /// Set membership of the key in `sreg` (`... @set`).
    pub fn in_set(set: impl Into<String>, sreg: Reg) -> Expr {
        Expr::Lookup {
            set: set.into(),
            sreg,
            result: LookupResult::Present,
        }
    }

    /// Negated set membership (`... != @set`).
    pub fn not_in_set(set: impl Into<String>, sreg: Reg) -> Expr {
        Expr::Lookup {
            set: set.into(),
            sreg,
            result: LookupResult::Absent,
        }
    }

    /// `jump chain`.
    pub fn jump(chain: impl Into<String>) -> Expr {
        Expr::Verdict(Verdict::Jump(chain.into()))
    }

    /// `goto chain`.
    pub fn goto(chain: impl Into<String>) -> Expr {
        Expr::Verdict(Verdict::Goto(chain.into()))
    }

    /// `accept`.
    pub fn accept() -> Expr {
        Expr::Verdict(Verdict::Accept)
    }

    /// `drop`.
    pub fn drop() -> Expr {
        Expr::Verdict(Verdict::Drop)
    }

    /// `return`.
    pub fn ret() -> Expr {
        Expr::Verdict(Verdict::Return)
    }

    /// `dnat to` the IPv4 address in `addr` and port in `port`.
    pub fn dnat_ipv4(addr: Reg, port: Option<Reg>) -> Expr {
        Expr::Nat {
            kind: NatKind::Dnat,
            family: NatFamily::Ipv4,
            addr: Some(addr),
            port,
            flags: NatFlags::default(),
        }
    }

    /// `dnat to` the IPv6 address in `addr` and port in `port`.
    pub fn dnat_ipv6(addr: Reg, port: Option<Reg>) -> Expr {
        Expr::Nat {
            kind: NatKind::Dnat,
            family: NatFamily::Ipv6,
            addr: Some(addr),
            port,
            flags: NatFlags::default(),
        }
    }
}

pub mod matches {
    //! Multi-expression building blocks: each returns the expressions that
    //! load, mask and compare for one nft match.
    use super::*;

    /// `ct state & mask != 0` (e.g. `ct state established,related`).
    pub fn ct_state(mask: u32, reg: Reg) -> Vec<Expr> {
        bits_set(
            Expr::Ct {
                key: CtKey::State,
                direction: None,
                dreg: reg,
            },
            mask,
            reg,
        )
    }

    /// `ct status & mask != 0` (e.g. `ct status dnat`).
    pub fn ct_status(mask: u32, reg: Reg) -> Vec<Expr> {
        bits_set(
            Expr::Ct {
                key: CtKey::Status,
                direction: None,
                dreg: reg,
            },
            mask,
            reg,
        )
    }

    /// `meta mark & mask != 0`.
    pub fn mark_bits(mask: u32, reg: Reg) -> Vec<Expr> {
        bits_set(
            Expr::Meta {
                key: MetaKey::Mark,
                dreg: reg,
            },
            mask,
            reg,
        )
    }

    /// `meta mark set meta mark | bits` (kube-proxy's "mark for masquerade").
    pub fn set_mark_bits(bits: u32, reg: Reg) -> Vec<Expr> {
        vec![
            Expr::Meta {
                key: MetaKey::Mark,
                dreg: reg,
            },
            Expr::Bitwise {
                sreg: reg,
                dreg: reg,
                mask: (!bits).to_ne_bytes().to_vec(),
                xor: bits.to_ne_bytes().to_vec(),
            },
            Expr::MetaSet {
                key: MetaKey::Mark,
                sreg: reg,
            },
        ]
    }

    /// `meta iifname == name` (exact: the name padded with NULs to
    /// `IFNAMSIZ`, as `nft` encodes it).
    pub fn iifname(name: &str, reg: Reg) -> Vec<Expr> {
        let mut padded = name.as_bytes().to_vec();
        padded.resize(16.max(padded.len() + 1), 0);
        vec![
            Expr::Meta {
                key: MetaKey::IifName,
                dreg: reg,
            },
            Expr::cmp_eq(reg, padded),
        ]
    }

    /// `ether saddr == mac` (or `!=` when `negate`).
    pub fn ether_saddr(mac: [u8; 6], negate: bool, reg: Reg) -> Vec<Expr> {
        let compare = if negate { Expr::cmp_neq } else { Expr::cmp_eq };
        vec![Expr::ether_saddr(reg), compare(reg, mac.to_vec())]
    }

    /// `meta l4proto == proto`.
    pub fn l4proto(proto: u8, reg: Reg) -> Vec<Expr> {
        vec![Expr::l4proto(reg), Expr::cmp_eq(reg, [proto])]
    }

    /// `th dport == port`.
    pub fn dport(port: u16, reg: Reg) -> Vec<Expr> {
        vec![Expr::th_dport(reg), Expr::cmp_eq(reg, port.to_be_bytes())]
    }

    /// `ip saddr` in `net` (or not in it when `negate`).
    pub fn ip_saddr_in(net: Ipv4Net, negate: bool, reg: Reg) -> Vec<Expr> {
        prefix(
            Expr::ip_saddr(reg),
            &net.network().octets(),
            &net.netmask().octets(),
            negate,
            reg,
        )
    }

    /// `ip daddr` in `net` (or not in it when `negate`).
    pub fn ip_daddr_in(net: Ipv4Net, negate: bool, reg: Reg) -> Vec<Expr> {
        prefix(
            Expr::ip_daddr(reg),
            &net.network().octets(),
            &net.netmask().octets(),
            negate,
            reg,
        )
    }

    /// `ip6 saddr` in `net` (or not in it when `negate`).
    pub fn ip6_saddr_in(net: Ipv6Net, negate: bool, reg: Reg) -> Vec<Expr> {
        prefix(
            Expr::ip6_saddr(reg),
            &net.network().octets(),
            &net.netmask().octets(),
            negate,
            reg,
        )
    }

    /// `ip6 daddr` in `net` (or not in it when `negate`).
    pub fn ip6_daddr_in(net: Ipv6Net, negate: bool, reg: Reg) -> Vec<Expr> {
        prefix(
            Expr::ip6_daddr(reg),
            &net.network().octets(),
            &net.netmask().octets(),
            negate,
            reg,
        )
    }

    /// `fib daddr type local`.
    pub fn daddr_is_local(reg: Reg) -> Vec<Expr> {
        vec![
            Expr::FibDaddrType { dreg: reg },
            Expr::cmp_eq(reg, addr_type::LOCAL.to_ne_bytes()),
        ]
    }

    /// `fib saddr type local`: sent from one of this host's addresses.
    pub fn saddr_is_local(reg: Reg) -> Vec<Expr> {
        vec![
            Expr::FibSaddrType { dreg: reg },
            Expr::cmp_eq(reg, addr_type::LOCAL.to_ne_bytes()),
        ]
    }

    fn bits_set(load: Expr, mask: u32, reg: Reg) -> Vec<Expr> {
        vec![
            load,
            Expr::Bitwise {
                sreg: reg,
                dreg: reg,
                mask: mask.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            Expr::cmp_neq(reg, [0u8; 4]),
        ]
    }

    fn prefix(load: Expr, network: &[u8], mask: &[u8], negate: bool, reg: Reg) -> Vec<Expr> {
        let full = mask.iter().all(|&b| b == 0xff);
        let op = if negate { CmpOp::Neq } else { CmpOp::Eq };
        let mut exprs = vec![load];
        if !full {
            exprs.push(Expr::Bitwise {
                sreg: reg,
                dreg: reg,
                mask: mask.to_vec(),
                xor: vec![0; mask.len()],
            });
        }
        exprs.push(Expr::Cmp {
            sreg: reg,
            op,
            data: network.to_vec(),
        });
        exprs
    }
}

/// A rule: expressions evaluated in order inside one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The chain the rule is appended to.
    pub chain: String,
    /// Expressions, in evaluation order.
    pub exprs: Vec<Expr>,
    /// A comment shown by `nft list` (at most 128 bytes is wise).
    pub comment: Option<String>,
}

impl Rule {
    /// An empty rule in `chain`.
    pub fn new(chain: impl Into<String>) -> Rule {
        Rule {
            chain: chain.into(),
            exprs: Vec::new(),
            comment: None,
        }
    }

    /// Appends one expression.
    pub fn push(mut self, expr: Expr) -> Rule {
        self.exprs.push(expr);
        self
    }

    /// Appends several expressions.
    pub fn extend(mut self, exprs: impl IntoIterator<Item = Expr>) -> Rule {
        self.exprs.extend(exprs);
        self
    }

    /// Sets the comment.
    pub fn comment(mut self, comment: impl Into<String>) -> Rule {
        self.comment = Some(comment.into());
        self
    }
}
