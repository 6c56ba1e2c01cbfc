//! From "what was applied" and "what is wanted" to one nftables
//! transaction carrying only the difference ([`diff`], pure), and the
//! [`Syncer`] that commits it atomically, remembers it, and flushes stale
//! UDP conntrack entries of endpoints that went away.
//!
//! The first sync (and any sync after a failure, or on demand) recreates the
//! table from scratch in the same transaction, so the kernel never holds a
//! mix of an old and a new ruleset.
//!
//! [`ServiceSyncer`] does the same from Service ports instead of a whole
//! ruleset, recompiling and diffing only the ports that changed
//! ([`crate::incremental`]); stale UDP conntrack entries are looked for only
//! when an endpoint of a UDP port went, with one listing per sync.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use weft_nft::{Element, Family, Nft, Transaction, Value};

use crate::compile::{HAIRPIN, ProxyConfig, Ruleset};
use crate::incremental::{Delta, ServiceTable};
use crate::service::ServicePort;

/// The transaction that turns `old` into `new`. With no `old`, or when a
/// set changed its definition, the whole table is recreated.
pub fn diff(old: Option<&Ruleset>, new: &Ruleset) -> Transaction {
    transaction(old, new).0
}

/// [`diff`], and whether it recreates the table.
fn transaction(old: Option<&Ruleset>, new: &Ruleset) -> (Transaction, bool) {
    let mut tx = Transaction::new();
    let Some(old) = old.filter(|old| compatible(old, new)) else {
        full(&mut tx, new);
        return (tx, true);
    };
    let table = &new.table;
    // Maps are walked side by side (both are sorted by name): one name
    // comparison per chain instead of a lookup per chain and per step.

    // 1. New chains and sets first: elements and rules below refer to them.
    let mut gone_chains = Vec::new();
    for (name, was, is) in side_by_side(&old.chains, &new.chains) {
        match (was, is) {
            (None, Some(chain)) => {
                tx.add_chain(table, chain.clone());
            }
            (Some(_), None) => gone_chains.push(name),
            _ => {}
        }
    }
    let mut gone_sets = Vec::new();
    for (name, was, is) in side_by_side(&old.sets, &new.sets) {
        match (was, is) {
            (None, Some(set)) => {
                tx.add_set(table, set.clone());
            }
            (Some(_), None) => gone_sets.push(name),
            _ => {}
        }
    }
    // 2. Stale elements out (they may point at chains deleted below).
    let mut fresh_by_set = Vec::new();
    for (name, was, is) in side_by_side(&old.elements, &new.elements) {
        if !new.sets.contains_key(name) {
            continue; // the whole set goes
        }
        let (stale, fresh) = changes(
            was.map(Vec::as_slice).unwrap_or_default(),
            is.map(Vec::as_slice).unwrap_or_default(),
        );
        tx.delete_elements(table, name, stale);
        fresh_by_set.push((name, fresh));
    }
    // 3. Chains whose rules changed are flushed; removed ones too.
    let mut rewritten = Vec::new();
    for (name, was, is) in side_by_side(&old.rules, &new.rules) {
        match (was, is) {
            (Some(old_rules), Some(rules)) if old_rules != rules => {
                tx.flush_chain(table, name);
                rewritten.push(rules);
            }
            (None, Some(rules)) => rewritten.push(rules),
            _ => {}
        }
    }
    for name in &gone_chains {
        tx.flush_chain(table, *name);
    }
    // 4. New elements in.
    for (name, fresh) in fresh_by_set {
        tx.add_elements(table, name, fresh);
    }
    // 5. Rules of new and changed chains.
    for rules in rewritten {
        for rule in rules {
            tx.add_rule(table, rule.clone());
        }
    }
    // 6. Sets, then chains, that are gone.
    for name in gone_sets {
        tx.delete_set(table, name);
    }
    for name in gone_chains {
        tx.delete_chain(table, name);
    }
    (tx, false)
}

/// The entries of two maps in name order, side by side: (name, in `old`,
/// in `new`).
pub(crate) fn side_by_side<'a, V>(
    old: &'a BTreeMap<String, V>,
    new: &'a BTreeMap<String, V>,
) -> impl Iterator<Item = (&'a String, Option<&'a V>, Option<&'a V>)> {
    let mut old = old.iter().peekable();
    let mut new = new.iter().peekable();
    std::iter::from_fn(move || {
        let order = match (old.peek(), new.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((was, _)), Some((is, _))) => was.cmp(is),
        };
        Some(match order {
            Ordering::Less => old.next().map(|(name, value)| (name, Some(value), None))?,
            Ordering::Greater => new.next().map(|(name, value)| (name, None, Some(value)))?,
            Ordering::Equal => {
                let (name, was) = old.next()?;
                let (_, is) = new.next()?;
                (name, Some(was), Some(is))
            }
        })
    })
}

/// The elements of `old` that `new` lacks (to delete) and those of `new`
/// that `old` lacks (to add). Elements of a set never repeat, and both lists
/// come from the same deterministic compiler, so the common prefix and
/// suffix are skipped by comparison and only the window between them is
/// hashed: one endpoint change in a map of 150,000 elements costs a scan,
/// not two hash tables of the whole map.
pub(crate) fn changes(old: &[Element], new: &[Element]) -> (Vec<Element>, Vec<Element>) {
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let (old, new) = (&old[prefix..], &new[prefix..]);
    let suffix = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (old, new) = (&old[..old.len() - suffix], &new[..new.len() - suffix]);
    if old.is_empty() || new.is_empty() {
        return (old.to_vec(), new.to_vec());
    }
    let in_old: HashSet<&Element> = old.iter().collect();
    let in_new: HashSet<&Element> = new.iter().collect();
    let stale = old
        .iter()
        .filter(|element| !in_new.contains(element))
        .cloned()
        .collect();
    let fresh = new
        .iter()
        .filter(|element| !in_old.contains(element))
        .cloned()
        .collect();
    (stale, fresh)
}

/// Whether `new` can be reached from `old` incrementally: same table, and
/// every set present in both has the same definition, every chain present
/// in both the same hook.
fn compatible(old: &Ruleset, new: &Ruleset) -> bool {
    fn same_where_both<V: PartialEq>(entry: (&String, Option<&V>, Option<&V>)) -> bool {
        match entry {
            (_, Some(was), Some(is)) => was == is,
            _ => true,
        }
    }
    old.table == new.table
        && side_by_side(&old.sets, &new.sets).all(same_where_both)
        && side_by_side(&old.chains, &new.chains).all(same_where_both)
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

/// Endpoint addresses `old` sent traffic to and `new` does not. The
/// `hairpin` set lists every endpoint of the family (those in
/// `@service-endpoints` and the affinity chains included), so these are the
/// addresses of its elements that went.
fn gone_endpoints(old: &Ruleset, new: &Ruleset) -> Vec<IpAddr> {
    let (gone, _) = changes(hairpin(old), hairpin(new));
    let mut addresses: Vec<IpAddr> = gone
        .iter()
        .filter_map(|element| match element.key.first() {
            Some(Value::Ipv4(ip)) => Some(IpAddr::V4(*ip)),
            Some(Value::Ipv6(ip)) => Some(IpAddr::V6(*ip)),
            _ => None,
        })
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses
}

fn hairpin(ruleset: &Ruleset) -> &[Element] {
    ruleset
        .elements
        .get(HAIRPIN)
        .map(Vec::as_slice)
        .unwrap_or_default()
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
    /// Of `duration`, the time spent before the commit: compiling and
    /// diffing (the rest is the kernel's).
    pub prepare: Duration,
    /// Service ports compiled again ([`ServiceSyncer`] only; a full sync
    /// compiles all of them).
    pub ports_changed: Option<usize>,
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
        let (tx, full) = transaction(self.applied.as_ref(), &desired);
        let prepare = started.elapsed();
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
        let conntrack_flushed = match (&self.applied, &mut self.conntrack) {
            (Some(old), Some(conntrack)) => flush_udp_from(
                conntrack,
                desired.table.family,
                &gone_endpoints(old, &desired),
            ),
            _ => 0,
        };
        self.applied = Some(desired);
        Ok(SyncReport {
            full,
            operations,
            duration,
            prepare,
            ports_changed: None,
            conntrack_flushed,
        })
    }
}

/// Deletes the UDP conntrack entries answered by any of `endpoints` (their
/// reply source is the endpoint), with one listing of the table however
/// many endpoints went. Failures are logged: the ruleset is committed
/// already, and stale entries time out on their own.
fn flush_udp_from(
    conntrack: &mut weft_nft::Conntrack,
    family: Family,
    endpoints: &[IpAddr],
) -> usize {
    if endpoints.is_empty() {
        return 0;
    }
    let gone: HashSet<IpAddr> = endpoints.iter().copied().collect();
    match conntrack.delete_matching(family, |entry| {
        entry.reply.proto == IPPROTO_UDP && gone.contains(&entry.reply.src)
    }) {
        Ok(count) => count,
        Err(err) => {
            tracing::warn!("flushing UDP conntrack entries of {endpoints:?}: {err}");
            0
        }
    }
}

/// IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;

/// Commits the Services of one family to its table, one Service port's
/// difference at a time: the [`ServiceTable`] recompiles only ports whose
/// input changed and yields exactly their changes, committed as one atomic
/// transaction per sync. The first sync, a sync after a failure, after
/// [`ServiceSyncer::force_full_resync`], one where a port's set changed
/// its definition, or one that would overfill a shared set (they are
/// created with a size, see [`crate::incremental`]) writes the whole table
/// in one transaction instead.
pub struct ServiceSyncer {
    nft: Nft,
    conntrack: Option<weft_nft::Conntrack>,
    state: ServiceTable,
    /// Whether the kernel holds exactly `state` (false: next sync is full).
    in_sync: bool,
}

impl std::fmt::Debug for ServiceSyncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSyncer")
            .field("ns", &self.nft.namespace())
            .field("table", &self.state.table().to_string())
            .field("ports", &self.state.port_count())
            .field("in_sync", &self.in_sync)
            .finish()
    }
}

impl ServiceSyncer {
    /// A syncer for the `family` table in `nft`'s namespace; `conntrack`
    /// (same namespace) is used to flush stale UDP entries when given.
    pub fn new(
        nft: Nft,
        conntrack: Option<weft_nft::Conntrack>,
        family: Family,
        config: ProxyConfig,
    ) -> ServiceSyncer {
        ServiceSyncer {
            nft,
            conntrack,
            state: ServiceTable::new(family, config),
            in_sync: false,
        }
    }

    /// The next sync rewrites the whole table.
    pub fn force_full_resync(&mut self) {
        self.in_sync = false;
    }

    /// What was last committed (or is being retried after a failure).
    pub fn state(&self) -> &ServiceTable {
        &self.state
    }

    /// Makes the kernel hold `ports` (every Service port of the cluster)
    /// compiled with `config`. Each port is compared with the input it was
    /// last compiled from; only changed ones are compiled and committed.
    pub fn sync(
        &mut self,
        ports: &[ServicePort],
        config: &ProxyConfig,
    ) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        // Not in sync: the state is rebuilt from scratch, so that a full
        // resync also repairs it; the old one is dropped after the commit.
        let previous = (!self.in_sync).then(|| {
            let fresh = ServiceTable::new(self.state.table().family, config.clone());
            std::mem::replace(&mut self.state, fresh)
        });
        let delta = self.state.update(ports, config, self.in_sync);
        let result = self.commit(delta, started);
        drop(previous);
        result
    }

    /// Like [`ServiceSyncer::sync`] for the Services named in `services`
    /// (namespace, name) only: their ports become those of `ports` (none:
    /// the Service is gone), every other Service stays as last synced. For
    /// a caller that knows what changed; the work is proportional to the
    /// Services named, not to all Services.
    pub fn sync_services(
        &mut self,
        services: &[(String, String)],
        ports: &[ServicePort],
        config: &ProxyConfig,
    ) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        let delta = self
            .state
            .update_services(services, ports, config, self.in_sync);
        self.commit(delta, started)
    }

    /// Commits `delta` (or, when not in sync or when the delta cannot be
    /// applied in place, the whole state) and flushes stale conntrack
    /// entries.
    fn commit(&mut self, delta: Delta, started: Instant) -> Result<SyncReport, SyncError> {
        let table = self.state.table().clone();
        let mut gone = Vec::new();
        let mut ports_changed = self.state.port_count();
        let (tx, full) = if self.in_sync && !delta.incompatible && !delta.outgrown {
            gone = delta.gone_udp_endpoints.clone();
            ports_changed = delta.ports_changed;
            (delta.into_transaction(&table), false)
        } else {
            (self.state.full_transaction(), true)
        };
        let prepare = started.elapsed();
        let operations = tx.ops().len();
        if operations > 0 {
            if let Err(source) = self.nft.apply(&tx) {
                self.in_sync = false;
                return Err(SyncError {
                    table: table.to_string(),
                    ns: self.nft.namespace().to_owned(),
                    source: Box::new(source),
                });
            }
        }
        self.in_sync = true;
        if full {
            self.state.written_in_full();
        }
        let duration = started.elapsed();
        drop(tx);
        let conntrack_flushed = match &mut self.conntrack {
            Some(conntrack) => flush_udp_from(conntrack, table.family, &gone),
            None => 0,
        };
        Ok(SyncReport {
            full,
            operations,
            duration,
            prepare,
            ports_changed: Some(ports_changed),
            conntrack_flushed,
        })
    }
}

#[cfg(test)]
mod tests;
