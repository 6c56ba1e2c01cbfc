//! From "what was applied" and "what is wanted" to one nftables
//! transaction carrying only the difference ([`diff`], pure), and the
//! [`Syncer`] that commits it atomically, remembers it, and flushes stale
//! UDP conntrack entries of endpoints that went away.
//!
//! The first sync (and any sync after a failure, or on demand) recreates the
//! table from scratch in the same transaction, so the kernel never holds a
//! mix of an old and a new ruleset.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use weft_nft::{Element, ElementData, Nft, Transaction, Value};

use crate::compile::Ruleset;

/// The transaction that turns `old` into `new`. With no `old`, or when a
/// set changed its definition, the whole table is recreated.
pub fn diff(old: Option<&Ruleset>, new: &Ruleset) -> Transaction {
    let mut tx = Transaction::new();
    let Some(old) = old.filter(|old| compatible(old, new)) else {
        full(&mut tx, new);
        return tx;
    };
    let table = &new.table;

    // 1. New chains and sets first: elements and rules below refer to them.
    for (name, chain) in &new.chains {
        if !old.chains.contains_key(name) {
            tx.add_chain(table, chain.clone());
        }
    }
    for (name, set) in &new.sets {
        if !old.sets.contains_key(name) {
            tx.add_set(table, set.clone());
        }
    }
    // 2. Stale elements out (they may point at chains deleted below).
    for (name, old_elements) in &old.elements {
        if !new.sets.contains_key(name) {
            continue; // the whole set goes
        }
        let wanted: HashSet<&Element> = new.elements.get(name).into_iter().flatten().collect();
        let stale: Vec<Element> = old_elements
            .iter()
            .filter(|element| !wanted.contains(element))
            .cloned()
            .collect();
        tx.delete_elements(table, name, stale);
    }
    // 3. Chains whose rules changed are flushed; removed ones too.
    let mut rewritten = Vec::new();
    for (name, rules) in &new.rules {
        match old.rules.get(name) {
            Some(old_rules) if old_rules == rules => {}
            Some(_) => {
                tx.flush_chain(table, name);
                rewritten.push(name);
            }
            None => rewritten.push(name),
        }
    }
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            tx.flush_chain(table, name);
        }
    }
    // 4. New elements in.
    for (name, new_elements) in &new.elements {
        let had: HashSet<&Element> = old.elements.get(name).into_iter().flatten().collect();
        let fresh: Vec<Element> = new_elements
            .iter()
            .filter(|element| !had.contains(element))
            .cloned()
            .collect();
        tx.add_elements(table, name, fresh);
    }
    // 5. Rules of new and changed chains.
    for name in rewritten {
        for rule in new.rules.get(name).into_iter().flatten() {
            tx.add_rule(table, rule.clone());
        }
    }
    // 6. Sets, then chains, that are gone.
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            tx.delete_set(table, name);
        }
    }
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            tx.delete_chain(table, name);
        }
    }
    tx
}

/// Whether `new` can be reached from `old` incrementally: same table, and
/// every set present in both has the same definition, every chain present
/// in both the same hook.
fn compatible(old: &Ruleset, new: &Ruleset) -> bool {
    old.table == new.table
        && new
            .sets
            .iter()
            .all(|(name, set)| old.sets.get(name).is_none_or(|old_set| old_set == set))
        && new.chains.iter().all(|(name, chain)| {
            old.chains
                .get(name)
                .is_none_or(|old_chain| old_chain == chain)
        })
}

fn full(tx: &mut Transaction, new: &Ruleset) {
    let table = &new.table;
    tx.recreate_table(table);
    for chain in new.chains.values() {
        tx.add_chain(table, chain.clone());
    }
    for set in new.sets.values() {
        tx.add_set(table, set.clone());
    }
    for (name, elements) in &new.elements {
        tx.add_elements(table, name, elements.clone());
    }
    for rules in new.rules.values() {
        for rule in rules {
            tx.add_rule(table, rule.clone());
        }
    }
}

/// Every endpoint address a ruleset sends traffic to (from its maps).
fn endpoint_addresses(ruleset: &Ruleset) -> BTreeSet<IpAddr> {
    let mut addresses = BTreeSet::new();
    for (name, elements) in &ruleset.elements {
        if !name.starts_with("eps-") {
            continue;
        }
        for element in elements {
            if let Some(ElementData::Value(values)) = &element.data {
                match values.first() {
                    Some(Value::Ipv4(ip)) => addresses.insert(IpAddr::V4(*ip)),
                    Some(Value::Ipv6(ip)) => addresses.insert(IpAddr::V6(*ip)),
                    _ => false,
                };
            }
        }
    }
    // Affinity endpoints appear in their chain names' immediates; the hairpin
    // set lists every endpoint of the family anyway.
    for element in ruleset.elements.get("hairpin").into_iter().flatten() {
        match element.key.first() {
            Some(Value::Ipv4(ip)) => addresses.insert(IpAddr::V4(*ip)),
            Some(Value::Ipv6(ip)) => addresses.insert(IpAddr::V6(*ip)),
            _ => false,
        };
    }
    addresses
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Whether the table was recreated from scratch.
    pub full: bool,
    /// Netlink operations committed (0: nothing to do).
    pub operations: usize,
    /// Time spent building and committing the transaction.
    pub duration: Duration,
    /// Conntrack entries deleted for endpoints that went away.
    pub conntrack_flushed: usize,
}

/// A sync that failed; the kernel holds the previous ruleset (transactions
/// are atomic) and the next sync recreates the table.
#[derive(Debug, thiserror::Error)]
#[error("syncing {table} in network namespace {ns}")]
pub struct SyncError {
    table: String,
    ns: String,
    #[source]
    source: Box<weft_nft::Error>,
}

/// Commits rulesets to one table in one namespace, one difference at a time.
pub struct Syncer {
    nft: Nft,
    conntrack: Option<weft_nft::Conntrack>,
    applied: Option<Ruleset>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("ns", &self.nft.namespace())
            .field(
                "applied",
                &self.applied.as_ref().map(|rs| rs.table.to_string()),
            )
            .finish()
    }
}

impl Syncer {
    /// A syncer acting on `nft`'s namespace; `conntrack` (same namespace)
    /// is used to flush stale UDP entries when given.
    pub fn new(nft: Nft, conntrack: Option<weft_nft::Conntrack>) -> Syncer {
        Syncer {
            nft,
            conntrack,
            applied: None,
        }
    }

    /// Forgets what was applied: the next sync recreates the table.
    pub fn force_full_resync(&mut self) {
        self.applied = None;
    }

    /// The ruleset last committed.
    pub fn applied(&self) -> Option<&Ruleset> {
        self.applied.as_ref()
    }

    /// Makes the kernel hold `desired`.
    pub fn sync(&mut self, desired: Ruleset) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        let full = self
            .applied
            .as_ref()
            .is_none_or(|old| !compatible(old, &desired));
        let tx = diff(self.applied.as_ref(), &desired);
        let operations = tx.ops().len();
        if operations > 0 {
            if let Err(source) = self.nft.apply(&tx) {
                self.applied = None;
                return Err(SyncError {
                    table: desired.table.to_string(),
                    ns: self.nft.namespace().to_owned(),
                    source: Box::new(source),
                });
            }
        }
        let duration = started.elapsed();
        let mut conntrack_flushed = 0;
        if let (Some(old), Some(conntrack)) = (&self.applied, &mut self.conntrack) {
            let gone: Vec<IpAddr> = endpoint_addresses(old)
                .difference(&endpoint_addresses(&desired))
                .copied()
                .collect();
            for ip in gone {
                match conntrack.delete_udp_from_endpoint(ip) {
                    Ok(count) => conntrack_flushed += count,
                    Err(err) => tracing::warn!("flushing UDP conntrack entries of {ip}: {err}"),
                }
            }
        }
        self.applied = Some(desired);
        Ok(SyncReport {
            full,
            operations,
            duration,
            conntrack_flushed,
        })
    }
}

#[cfg(test)]
mod tests;
