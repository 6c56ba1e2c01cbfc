//! Encoding of rule expressions: one `NFTA_LIST_ELEM` body per [`Expr`],
//! with the attribute layout each kernel expression (`nft_payload`,
//! `nft_cmp`, `nft_lookup`, `nft_nat`, ...) parses.

use super::encode_verdict;
use crate::expr::{
    CtDirection, DynsetOp, Expr, LookupResult, NatFamily, NatKind, NumgenKind, PayloadBase,
    RejectKind,
};
use crate::model::Family;
use crate::sys;
use crate::wire::Writer;

/// The kernel's name of an expression.
pub(crate) fn expr_name(expr: &Expr) -> &'static str {
    match expr {
        Expr::Payload { .. } => "payload",
        Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
        Expr::Ct { .. } | Expr::CtSet { .. } => "ct",
        Expr::Cmp { .. } => "cmp",
        Expr::Bitwise { .. } => "bitwise",
        Expr::Lookup { .. } => "lookup",
        Expr::Verdict(_) | Expr::Immediate { .. } => "immediate",
        Expr::Numgen { .. } => "numgen",
        Expr::Nat { .. } => "nat",
        Expr::Masquerade(_) => "masq",
        Expr::Reject(_) => "reject",
        Expr::Counter => "counter",
        Expr::Dynset { .. } => "dynset",
        Expr::FibDaddrType { .. } | Expr::FibSaddrType { .. } => "fib",
    }
}

fn data_value(w: &mut Writer, ty: u16, data: &[u8]) {
    let nest = w.begin_nest(ty);
    w.attr(sys::NFTA_DATA_VALUE, data);
    w.end_nest(nest);
}

pub(super) fn encode_expr(w: &mut Writer, family: Family, expr: &Expr) {
    match expr {
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            let base = match base {
                PayloadBase::LinkLayer => 0,
                PayloadBase::Network => 1,
                PayloadBase::Transport => 2,
            };
            w.attr_be32(sys::NFTA_PAYLOAD_DREG, dreg.wire());
            w.attr_be32(sys::NFTA_PAYLOAD_BASE, base);
            w.attr_be32(sys::NFTA_PAYLOAD_OFFSET, *offset);
            w.attr_be32(sys::NFTA_PAYLOAD_LEN, *len);
        }
        Expr::Meta { key, dreg } => {
            w.attr_be32(sys::NFTA_META_KEY, key.number());
            w.attr_be32(sys::NFTA_META_DREG, dreg.wire());
        }
        Expr::MetaSet { key, sreg } => {
            w.attr_be32(sys::NFTA_META_KEY, key.number());
            w.attr_be32(sys::NFTA_META_SREG, sreg.wire());
        }
        Expr::Ct {
            key,
            direction,
            dreg,
        } => {
            w.attr_be32(sys::NFTA_CT_KEY, key.number());
            w.attr_be32(sys::NFTA_CT_DREG, dreg.wire());
            if let Some(direction) = direction {
                let value = match direction {
                    CtDirection::Original => 0,
                    CtDirection::Reply => 1,
                };
                w.attr_u8(sys::NFTA_CT_DIRECTION, value);
            }
        }
        Expr::CtSet { key, sreg } => {
            w.attr_be32(sys::NFTA_CT_KEY, key.number());
            w.attr_be32(sys::NFTA_CT_SREG, sreg.wire());
        }
        Expr::Cmp { sreg, op, data } => {
            w.attr_be32(sys::NFTA_CMP_SREG, sreg.wire());
            w.attr_be32(sys::NFTA_CMP_OP, op.number());
            data_value(w, sys::NFTA_CMP_DATA, data);
        }
        Expr::Bitwise {
            sreg,
            dreg,
            mask,
            xor,
        } => {
            w.attr_be32(sys::NFTA_BITWISE_SREG, sreg.wire());
            w.attr_be32(sys::NFTA_BITWISE_DREG, dreg.wire());
            w.attr_be32(sys::NFTA_BITWISE_LEN, mask.len() as u32);
            data_value(w, sys::NFTA_BITWISE_MASK, mask);
            data_value(w, sys::NFTA_BITWISE_XOR, xor);
        }
        Expr::Lookup { set, sreg, result } => {
            w.attr_str(sys::NFTA_LOOKUP_SET, set);
            w.attr_be32(sys::NFTA_LOOKUP_SREG, sreg.wire());
            match result {
                LookupResult::Present => {}
                LookupResult::Absent => w.attr_be32(sys::NFTA_LOOKUP_FLAGS, sys::NFT_LOOKUP_F_INV),
                LookupResult::Verdict => w.attr_be32(sys::NFTA_LOOKUP_DREG, sys::NFT_REG_VERDICT),
                LookupResult::Data(dreg) => w.attr_be32(sys::NFTA_LOOKUP_DREG, dreg.wire()),
            }
        }
        Expr::Verdict(verdict) => {
            w.attr_be32(sys::NFTA_IMMEDIATE_DREG, sys::NFT_REG_VERDICT);
            let data = w.begin_nest(sys::NFTA_IMMEDIATE_DATA);
            encode_verdict(w, verdict);
            w.end_nest(data);
        }
        Expr::Immediate { dreg, data } => {
            w.attr_be32(sys::NFTA_IMMEDIATE_DREG, dreg.wire());
            data_value(w, sys::NFTA_IMMEDIATE_DATA, data);
        }
        Expr::Numgen {
            dreg,
            modulus,
            kind,
            offset,
        } => {
            let kind = match kind {
                NumgenKind::Incremental => 0,
                NumgenKind::Random => 1,
            };
            w.attr_be32(sys::NFTA_NG_DREG, dreg.wire());
            w.attr_be32(sys::NFTA_NG_MODULUS, *modulus);
            w.attr_be32(sys::NFTA_NG_TYPE, kind);
            w.attr_be32(sys::NFTA_NG_OFFSET, *offset);
        }
        Expr::Nat {
            kind,
            family: nat_family,
            addr,
            port,
            flags,
        } => {
            let kind = match kind {
                NatKind::Snat => sys::NFT_NAT_SNAT,
                NatKind::Dnat => sys::NFT_NAT_DNAT,
            };
            let nfproto = match nat_family {
                NatFamily::Ipv4 => sys::NFPROTO_IPV4,
                NatFamily::Ipv6 => sys::NFPROTO_IPV6,
            };
            w.attr_be32(sys::NFTA_NAT_TYPE, kind);
            w.attr_be32(sys::NFTA_NAT_FAMILY, u32::from(nfproto));
            if let Some(addr) = addr {
                w.attr_be32(sys::NFTA_NAT_REG_ADDR_MIN, addr.wire());
            }
            if let Some(port) = port {
                w.attr_be32(sys::NFTA_NAT_REG_PROTO_MIN, port.wire());
            }
            if flags.bits() != 0 {
                w.attr_be32(sys::NFTA_NAT_FLAGS, flags.bits());
            }
        }
        Expr::Masquerade(flags) => {
            if flags.bits() != 0 {
                w.attr_be32(sys::NFTA_MASQ_FLAGS, flags.bits());
            }
        }
        Expr::Reject(kind) => {
            let (ty, code) = match (kind, family) {
                (RejectKind::TcpReset, _) => (sys::NFT_REJECT_TCP_RST, None),
                (RejectKind::PortUnreachable, Family::Ip) => {
                    (sys::NFT_REJECT_ICMP_UNREACH, Some(sys::ICMP_PORT_UNREACH))
                }
                (RejectKind::PortUnreachable, Family::Ip6) => {
                    (sys::NFT_REJECT_ICMP_UNREACH, Some(sys::ICMPV6_PORT_UNREACH))
                }
                (RejectKind::PortUnreachable, Family::Inet | Family::Bridge) => (
                    sys::NFT_REJECT_ICMPX_UNREACH,
                    Some(sys::NFT_REJECT_ICMPX_PORT_UNREACH),
                ),
                (RejectKind::AdminProhibited, Family::Ip) => {
                    (sys::NFT_REJECT_ICMP_UNREACH, Some(sys::ICMP_PKT_FILTERED))
                }
                (RejectKind::AdminProhibited, Family::Ip6) => (
                    sys::NFT_REJECT_ICMP_UNREACH,
                    Some(sys::ICMPV6_ADM_PROHIBITED),
                ),
                (RejectKind::AdminProhibited, Family::Inet | Family::Bridge) => (
                    sys::NFT_REJECT_ICMPX_UNREACH,
                    Some(sys::NFT_REJECT_ICMPX_ADMIN_PROHIBITED),
                ),
            };
            w.attr_be32(sys::NFTA_REJECT_TYPE, ty);
            if let Some(code) = code {
                w.attr_u8(sys::NFTA_REJECT_ICMP_CODE, code);
            }
        }
        Expr::Counter => {
            w.attr_be64(sys::NFTA_COUNTER_BYTES, 0);
            w.attr_be64(sys::NFTA_COUNTER_PACKETS, 0);
        }
        Expr::Dynset {
            set,
            op,
            sreg_key,
            timeout,
        } => {
            let op = match op {
                DynsetOp::Add => 0,
                DynsetOp::Update => 1,
            };
            w.attr_str(sys::NFTA_DYNSET_SET_NAME, set);
            w.attr_be32(sys::NFTA_DYNSET_OP, op);
            w.attr_be32(sys::NFTA_DYNSET_SREG_KEY, sreg_key.wire());
            if let Some(timeout) = timeout {
                w.attr_be64(sys::NFTA_DYNSET_TIMEOUT, timeout.as_millis() as u64);
            }
        }
        Expr::FibDaddrType { dreg } | Expr::FibSaddrType { dreg } => {
            let address = if matches!(expr, Expr::FibDaddrType { .. }) {
                sys::NFTA_FIB_F_DADDR
            } else {
                sys::NFTA_FIB_F_SADDR
            };
            w.attr_be32(sys::NFTA_FIB_DREG, dreg.wire());
            w.attr_be32(sys::NFTA_FIB_RESULT, sys::NFT_FIB_RESULT_ADDRTYPE);
            w.attr_be32(sys::NFTA_FIB_FLAGS, address);
        }
    }
}
