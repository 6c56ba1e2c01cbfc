//! Decoding of rule expressions from kernel dumps back into [`Expr`], the
//! inverse of `encode::exprs`. Attributes the kernel adds on its own in
//! dumps (counter values, the NAT range flags it derives, a zero dynset
//! timeout) are normalised away, so a rule reads back equal to what was
//! applied. An expression weft does not model decodes to `None`.

use std::time::Duration;

use crate::expr::{
    CmpOp, CtDirection, CtKey, DynsetOp, Expr, LookupResult, MetaKey, NatFamily, NatFlags, NatKind,
    NumgenKind, PayloadBase, Reg, RejectKind,
};
use crate::model::Family;
use crate::sys;
use crate::wire::{Attr, Attrs};

use super::parse_verdict;

/// Attribute values of one expression, by type (the last one wins).
struct Fields<'a>(Vec<Option<Attr<'a>>>);

impl<'a> Fields<'a> {
    fn new(attrs: Attrs<'a>) -> Fields<'a> {
        let mut slots = vec![None; 16];
        for attr in attrs {
            if let Some(slot) = slots.get_mut(usize::from(attr.ty)) {
                *slot = Some(attr);
            }
        }
        Fields(slots)
    }

    fn get(&self, ty: u16) -> Option<Attr<'a>> {
        self.0.get(usize::from(ty)).copied().flatten()
    }

    fn be32(&self, ty: u16) -> Option<u32> {
        self.get(ty)?.be32()
    }

    fn reg(&self, ty: u16) -> Option<Reg> {
        Reg::from_wire(self.be32(ty)?)
    }

    /// The `NFTA_DATA_VALUE` bytes inside a data nest.
    fn value(&self, ty: u16) -> Option<Vec<u8>> {
        let nest = self.get(ty)?;
        let value = nest.nested().find(|a| a.ty == sys::NFTA_DATA_VALUE)?;
        Some(value.payload.to_vec())
    }
}

/// Decodes one `NFTA_LIST_ELEM` of a rule's expression list.
pub(crate) fn decode_expr(elem: Attr<'_>, family: Family) -> Option<Expr> {
    let name = elem
        .nested()
        .find(|a| a.ty == sys::NFTA_EXPR_NAME)?
        .string();
    let data = elem
        .nested()
        .find(|a| a.ty == sys::NFTA_EXPR_DATA)
        .map(|a| a.nested())
        .unwrap_or_else(|| Attrs::new(&[]));
    let f = Fields::new(data);
    Some(match name.as_str() {
        // Without a destination register it is a payload write (mangle),
        // which is not modelled: `f.reg(DREG)?` returns `None` then.
        "payload" => Expr::Payload {
            base: match f.be32(sys::NFTA_PAYLOAD_BASE)? {
                0 => PayloadBase::LinkLayer,
                1 => PayloadBase::Network,
                2 => PayloadBase::Transport,
                _ => return None,
            },
            offset: f.be32(sys::NFTA_PAYLOAD_OFFSET)?,
            len: f.be32(sys::NFTA_PAYLOAD_LEN)?,
            dreg: f.reg(sys::NFTA_PAYLOAD_DREG)?,
        },
        "meta" => {
            let key = MetaKey::from_number(f.be32(sys::NFTA_META_KEY)?)?;
            match f.reg(sys::NFTA_META_DREG) {
                Some(dreg) => Expr::Meta { key, dreg },
                None => Expr::MetaSet {
                    key,
                    sreg: f.reg(sys::NFTA_META_SREG)?,
                },
            }
        }
        "ct" => {
            let key = CtKey::from_number(f.be32(sys::NFTA_CT_KEY)?)?;
            match f.reg(sys::NFTA_CT_DREG) {
                Some(dreg) => Expr::Ct {
                    key,
                    direction: match f.get(sys::NFTA_CT_DIRECTION).and_then(|a| a.u8()) {
                        None => None,
                        Some(0) => Some(CtDirection::Original),
                        Some(_) => Some(CtDirection::Reply),
                    },
                    dreg,
                },
                None => Expr::CtSet {
                    key,
                    sreg: f.reg(sys::NFTA_CT_SREG)?,
                },
            }
        }
        "cmp" => Expr::Cmp {
            sreg: f.reg(sys::NFTA_CMP_SREG)?,
            op: CmpOp::from_number(f.be32(sys::NFTA_CMP_OP)?)?,
            data: f.value(sys::NFTA_CMP_DATA)?,
        },
        "bitwise" => {
            // NFTA_BITWISE_OP (6): only the mask-and-xor form is modelled.
            if f.be32(6).is_some_and(|op| op != 0) {
                return None;
            }
            Expr::Bitwise {
                sreg: f.reg(sys::NFTA_BITWISE_SREG)?,
                dreg: f.reg(sys::NFTA_BITWISE_DREG)?,
                mask: f.value(sys::NFTA_BITWISE_MASK)?,
                xor: f.value(sys::NFTA_BITWISE_XOR)?,
            }
        }
        "lookup" => {
            let inverted = f
                .be32(sys::NFTA_LOOKUP_FLAGS)
                .is_some_and(|flags| flags & sys::NFT_LOOKUP_F_INV != 0);
            let result = match f.be32(sys::NFTA_LOOKUP_DREG) {
                Some(sys::NFT_REG_VERDICT) => LookupResult::Verdict,
                Some(reg) => LookupResult::Data(Reg::from_wire(reg)?),
                None if inverted => LookupResult::Absent,
                None => LookupResult::Present,
            };
            Expr::Lookup {
                set: f.get(sys::NFTA_LOOKUP_SET)?.string(),
                sreg: f.reg(sys::NFTA_LOOKUP_SREG)?,
                result,
            }
        }
        "immediate" => {
            let data = f.get(sys::NFTA_IMMEDIATE_DATA)?;
            match f.be32(sys::NFTA_IMMEDIATE_DREG)? {
                sys::NFT_REG_VERDICT => Expr::Verdict(parse_verdict(data)?),
                reg => Expr::Immediate {
                    dreg: Reg::from_wire(reg)?,
                    data: f.value(sys::NFTA_IMMEDIATE_DATA)?,
                },
            }
        }
        "numgen" => Expr::Numgen {
            dreg: f.reg(sys::NFTA_NG_DREG)?,
            modulus: f.be32(sys::NFTA_NG_MODULUS)?,
            kind: match f.be32(sys::NFTA_NG_TYPE)? {
                0 => NumgenKind::Incremental,
                1 => NumgenKind::Random,
                _ => return None,
            },
            offset: f.be32(sys::NFTA_NG_OFFSET).unwrap_or(0),
        },
        "nat" => Expr::Nat {
            kind: match f.be32(sys::NFTA_NAT_TYPE)? {
                sys::NFT_NAT_SNAT => NatKind::Snat,
                sys::NFT_NAT_DNAT => NatKind::Dnat,
                _ => return None,
            },
            family: match u8::try_from(f.be32(sys::NFTA_NAT_FAMILY)?).ok()? {
                sys::NFPROTO_IPV4 => NatFamily::Ipv4,
                sys::NFPROTO_IPV6 => NatFamily::Ipv6,
                _ => return None,
            },
            addr: f.reg(sys::NFTA_NAT_REG_ADDR_MIN),
            port: f.reg(sys::NFTA_NAT_REG_PROTO_MIN),
            flags: nat_flags(f.be32(sys::NFTA_NAT_FLAGS).unwrap_or(0)),
        },
        "masq" => Expr::Masquerade(nat_flags(f.be32(sys::NFTA_MASQ_FLAGS).unwrap_or(0))),
        "reject" => {
            let code = f.get(sys::NFTA_REJECT_ICMP_CODE).and_then(|a| a.u8());
            Expr::Reject(match (f.be32(sys::NFTA_REJECT_TYPE)?, code, family) {
                (sys::NFT_REJECT_TCP_RST, _, _) => RejectKind::TcpReset,
                (sys::NFT_REJECT_ICMP_UNREACH, Some(sys::ICMP_PORT_UNREACH), Family::Ip)
                | (sys::NFT_REJECT_ICMP_UNREACH, Some(sys::ICMPV6_PORT_UNREACH), Family::Ip6)
                | (
                    sys::NFT_REJECT_ICMPX_UNREACH,
                    Some(sys::NFT_REJECT_ICMPX_PORT_UNREACH),
                    Family::Inet | Family::Bridge,
                ) => RejectKind::PortUnreachable,
                (sys::NFT_REJECT_ICMP_UNREACH, Some(sys::ICMP_PKT_FILTERED), Family::Ip)
                | (sys::NFT_REJECT_ICMP_UNREACH, Some(sys::ICMPV6_ADM_PROHIBITED), Family::Ip6)
                | (
                    sys::NFT_REJECT_ICMPX_UNREACH,
                    Some(sys::NFT_REJECT_ICMPX_ADMIN_PROHIBITED),
                    Family::Inet | Family::Bridge,
                ) => RejectKind::AdminProhibited,
                _ => return None,
            })
        }
        "counter" => Expr::Counter,
        "dynset" => {
            if f.get(sys::NFTA_DYNSET_SREG_DATA).is_some() {
                return None; // map updates from the packet path: not modelled
            }
            Expr::Dynset {
                set: f.get(sys::NFTA_DYNSET_SET_NAME)?.string(),
                op: match f.be32(sys::NFTA_DYNSET_OP)? {
                    0 => DynsetOp::Add,
                    1 => DynsetOp::Update,
                    _ => return None,
                },
                sreg_key: f.reg(sys::NFTA_DYNSET_SREG_KEY)?,
                timeout: f
                    .get(sys::NFTA_DYNSET_TIMEOUT)
                    .and_then(|a| a.be64())
                    .filter(|ms| *ms != 0)
                    .map(Duration::from_millis),
            }
        }
        "fib" => {
            if f.be32(sys::NFTA_FIB_RESULT) != Some(sys::NFT_FIB_RESULT_ADDRTYPE) {
                return None;
            }
            let dreg = f.reg(sys::NFTA_FIB_DREG)?;
            match f.be32(sys::NFTA_FIB_FLAGS) {
                Some(sys::NFTA_FIB_F_DADDR) => Expr::FibDaddrType { dreg },
                Some(sys::NFTA_FIB_F_SADDR) => Expr::FibSaddrType { dreg },
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// NAT flags without the bits the kernel derives from the registers given.
fn nat_flags(bits: u32) -> NatFlags {
    NatFlags {
        random: bits & sys::NF_NAT_RANGE_PROTO_RANDOM != 0,
        fully_random: bits & sys::NF_NAT_RANGE_PROTO_RANDOM_FULLY != 0,
        persistent: bits & sys::NF_NAT_RANGE_PERSISTENT != 0,
    }
}
