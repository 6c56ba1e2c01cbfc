//! Egress masquerade: pod traffic leaving the cluster CIDR leaves the node
//! with the node's address (the pod network is not routed outside the
//! cluster), while pod-to-pod traffic keeps its source (no NAT inside the
//! cluster). One rule in a table of its own, `ip weft-podnet` (or `ip6`),
//! checked by listing before anything is written, so ensuring it again is a
//! no-op.

use ipnet::IpNet;
use weft_linux::NetNs;
use weft_nft::expr::{Expr, NatFlags, Reg, Rule, matches};
use weft_nft::{Chain, ChainType, Family, Hook, Nft, TableRef, Transaction};

/// Name of the table.
pub const TABLE: &str = "weft-podnet";
const CHAIN: &str = "postrouting";

fn table_for(cluster_cidr: IpNet) -> TableRef {
    match cluster_cidr {
        IpNet::V4(_) => TableRef::new(Family::Ip, TABLE),
        IpNet::V6(_) => TableRef::new(Family::Ip6, TABLE),
    }
}

/// The rule: from the cluster CIDR, to outside it, masquerade.
fn egress_rule(cluster_cidr: IpNet) -> Rule {
    let mut exprs = match cluster_cidr {
        IpNet::V4(net) => {
            let mut exprs = matches::ip_saddr_in(net, false, Reg::R0);
            exprs.extend(matches::ip_daddr_in(net, true, Reg::R0));
            exprs
        }
        IpNet::V6(net) => {
            let mut exprs = matches::ip6_saddr_in(net, false, Reg::R0);
            exprs.extend(matches::ip6_daddr_in(net, true, Reg::R0));
            exprs
        }
    };
    exprs.push(Expr::Masquerade(NatFlags::FULLY_RANDOM));
    Rule::new(CHAIN)
        .extend(exprs)
        .comment(format!("pod egress leaving {cluster_cidr}"))
}

/// Ensures the masquerade rule for `cluster_cidr` in `ns`; returns whether
/// the table had to be (re)written.
pub fn ensure(ns: &NetNs, cluster_cidr: IpNet) -> Result<bool, weft_nft::Error> {
    let cluster_cidr = cluster_cidr.trunc();
    let table = table_for(cluster_cidr);
    let wanted = egress_rule(cluster_cidr);
    let mut nft = Nft::open_in(ns)?;
    if nft.table_exists(&table)? {
        let rules = nft.rules(&table, Some(CHAIN))?;
        let current =
            rules.len() == 1 && rules[0].decoded.as_deref() == Some(wanted.exprs.as_slice());
        if current {
            return Ok(false);
        }
    }
    let mut tx = Transaction::new();
    tx.recreate_table(&table)
        .add_chain(
            &table,
            Chain::base(CHAIN, ChainType::Nat, Hook::Postrouting, 100),
        )
        .add_rule(&table, wanted);
    nft.apply(&tx)?;
    Ok(true)
}

/// Removes the table (a node leaving weft); `false` when it was not there.
pub fn remove(ns: &NetNs, cluster_cidr: IpNet) -> Result<bool, weft_nft::Error> {
    let table = table_for(cluster_cidr);
    let mut nft = Nft::open_in(ns)?;
    if !nft.table_exists(&table)? {
        return Ok(false);
    }
    let mut tx = Transaction::new();
    tx.delete_table(&table);
    nft.apply(&tx)?;
    Ok(true)
}
