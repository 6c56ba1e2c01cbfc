//! `ipMasq`: source NAT for pod traffic leaving the pod's subnet, in the
//! tables `ip weft-cni` and `ip6 weft-cni` (chain `postrouting`) of the
//! node's namespace: per address of the attachment, traffic from it to
//! anything but its own subnet and multicast is masqueraded, as the reference
//! plugin does per container. Rules are tagged `weft-bridge <network>
//! <containerID> <ifname>` (see [`crate::nat_rules`]).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use weft_nft::expr::{NatFlags, matches};
use weft_nft::{ChainType, Expr, Family, Hook, Reg, Rule};

use crate::IpConfig;
use crate::nat_rules::Tables;

/// The NAT base chain masquerade rules live in.
pub const CHAIN: &str = "postrouting";

/// weft's bridge tables: `weft-cni`, one `postrouting` chain at `srcnat`.
pub const TABLES: Tables = Tables {
    name: "weft-cni",
    families: &[Family::Ip, Family::Ip6],
    kind: ChainType::Nat,
    chains: &[(CHAIN, Hook::Postrouting, 100)],
};

/// The masquerade rule for one address (pure).
pub fn rule_for(ip: &IpConfig) -> (Family, Rule) {
    let rule = Rule::new(CHAIN);
    let (family, matches) = match (ip.address.addr(), ip.address.trunc()) {
        (IpAddr::V4(addr), IpNet::V4(subnet)) => {
            let mut exprs = matches::ip_saddr_in(Ipv4Net::from(addr), false, Reg::R0);
            exprs.extend(matches::ip_daddr_in(subnet, true, Reg::R0));
            exprs.extend(matches::ip_daddr_in(MULTICAST_V4, true, Reg::R0));
            (Family::Ip, exprs)
        }
        (IpAddr::V6(addr), IpNet::V6(subnet)) => {
            let mut exprs = matches::ip6_saddr_in(Ipv6Net::from(addr), false, Reg::R0);
            exprs.extend(matches::ip6_daddr_in(subnet, true, Reg::R0));
            exprs.extend(matches::ip6_daddr_in(MULTICAST_V6, true, Reg::R0));
            (Family::Ip6, exprs)
        }
        // An IpNet's address and network are always of one family.
        (IpAddr::V4(_), _) => (Family::Ip, Vec::new()),
        (IpAddr::V6(_), _) => (Family::Ip6, Vec::new()),
    };
    (
        family,
        rule.extend(matches)
            .push(Expr::Masquerade(NatFlags::default())),
    )
}

/// 224.0.0.0/4, never masqueraded.
const MULTICAST_V4: Ipv4Net = Ipv4Net::new_assert(std::net::Ipv4Addr::new(224, 0, 0, 0), 4);
/// ff00::/8, never masqueraded.
const MULTICAST_V6: Ipv6Net =
    Ipv6Net::new_assert(std::net::Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8);
