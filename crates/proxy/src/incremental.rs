//! Incremental compile: the desired ruleset of one family kept as the
//! skeleton plus one compiled fragment per Service port, so that a pass
//! recompiles only the ports whose inputs changed and yields the nftables
//! delta of exactly those ports.
//!
//! A port's fingerprint is its input itself: the [`ServicePort`] (Service
//! spec and endpoints resolved from its slices) and the node's
//! [`ProxyConfig`]. An unchanged port costs one equality comparison (cheaper
//! than hashing it, and exact); a changed one is compiled again by the same
//! [`compile_port`] the whole-ruleset [`crate::compile`] uses, and its old
//! and new fragments are compared object by object:
//!
//! - its own chains, rules and sets (named after the port, never shared)
//!   are added, rewritten or deleted;
//! - its elements in the shared sets and maps of the skeleton
//!   (`@service-ips`, `@hairpin`, ...) are reference-counted, because two
//!   ports may contribute the same element (a ClusterIP with several ports,
//!   an endpoint of several Services): an element enters the kernel when
//!   its first contributor appears and leaves with its last.
//!
//! [`ServiceTable::full_transaction`] writes the whole table from the same
//! state (start, resync on demand, after a failure), so a full resync and a
//! run of incremental updates converge on the same kernel content.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use weft_nft::{Chain, Element, Family, Rule, Set, TableRef, Transaction, Value};

use crate::compile::{
    CLUSTER_IPS, ENDPOINT_COUNTS, ENDPOINTS, Fam, HAIRPIN, ProxyConfig, Ruleset, SERVICE_IPS,
    compile_port, skeleton,
};
use crate::service::{PortName, Protocol, ServicePort};
use crate::sync::{changes, side_by_side};

/// A hash map with [`FastHasher`].
type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A multiply-rotate hasher (the one rustc uses, "FxHash") for the
/// reference counts: hundreds of thousands of small keys per full sync,
/// where SipHash was a fifth of the time. The keys are addresses and ports
/// of the cluster's own objects, not bytes from the network.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u16(&mut self, value: u16) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One Service port: what it was compiled from, and what it compiled to
/// (its own chains, rules and sets, and its elements of shared sets).
#[derive(Debug, Clone)]
struct Entry {
    input: ServicePort,
    fragment: Ruleset,
}

/// The changes of one update, grouped in the order a transaction needs
/// them (see [`Delta::into_transaction`]).
#[derive(Debug, Default)]
pub(crate) struct Delta {
    add_chains: Vec<Chain>,
    add_sets: Vec<Set>,
    delete_elements: BTreeMap<String, Vec<Element>>,
    flush_chains: Vec<String>,
    add_elements: BTreeMap<String, Vec<Element>>,
    add_rules: Vec<Rule>,
    delete_sets: Vec<String>,
    delete_chains: Vec<String>,
    /// A set of a port changed its definition (an affinity timeout): the
    /// kernel cannot change a set in place, the table is rewritten.
    pub(crate) incompatible: bool,
    /// Service ports compiled again (added, changed or removed).
    pub(crate) ports_changed: usize,
    /// Endpoint addresses of UDP ports that no UDP port has any more: their
    /// UDP conntrack entries are stale.
    pub(crate) gone_udp_endpoints: Vec<IpAddr>,
}

impl Delta {
    /// The transaction: new chains and sets first (elements and rules refer
    /// to them), stale elements out (they may point at chains deleted
    /// below), changed and removed chains flushed, new elements in, rules of
    /// new and changed chains, then removed sets and chains.
    pub(crate) fn into_transaction(self, table: &TableRef) -> Transaction {
        let mut tx = Transaction::new();
        for chain in self.add_chains {
            tx.add_chain(table, chain);
        }
        for set in self.add_sets {
            tx.add_set(table, set);
        }
        for (set, elements) in self.delete_elements {
            tx.delete_elements(table, set, elements);
        }
        for chain in &self.flush_chains {
            tx.flush_chain(table, chain.clone());
        }
        for (set, elements) in self.add_elements {
            tx.add_elements(table, set, elements);
        }
        for rule in self.add_rules {
            tx.add_rule(table, rule);
        }
        for set in self.delete_sets {
            tx.delete_set(table, set);
        }
        for chain in self.delete_chains {
            tx.delete_chain(table, chain);
        }
        tx
    }
}

/// The desired ruleset of one family, kept per Service port (see the
/// module docs).
#[derive(Debug, Clone)]
pub struct ServiceTable {
    family: Family,
    config: ProxyConfig,
    skeleton: Ruleset,
    /// Boxed: a B-tree node of whole entries is several kilobytes, and
    /// allocating one per few ports made glibc consolidate its free lists
    /// over and over (a quarter of a full build).
    ports: BTreeMap<PortName, Box<Entry>>,
    /// Elements of the skeleton's shared sets, with how many ports
    /// contribute each.
    shared: BTreeMap<String, FastMap<Element, u32>>,
    /// Endpoint addresses of UDP ports, with how many ports list each.
    udp_endpoints: FastMap<IpAddr, u32>,
    /// Rules and elements of all fragments (metrics).
    fragment_rules: usize,
    fragment_elements: usize,
}

/// Reference-count changes of one update, with the count each touched
/// element had before it (to find what enters and what leaves the kernel).
#[derive(Default)]
struct Touched {
    elements: FastMap<(String, Element), u32>,
    udp_endpoints: FastMap<IpAddr, u32>,
}

impl ServiceTable {
    /// An empty table (the skeleton only) for `family` and `config`.
    pub fn new(family: Family, config: ProxyConfig) -> ServiceTable {
        let mut base = Ruleset::new(family);
        skeleton(&mut base, Fam(family), &config);
        let shared = base
            .sets
            .keys()
            .map(|name| (name.clone(), FastMap::default()))
            .collect();
        ServiceTable {
            family,
            config,
            skeleton: base,
            ports: BTreeMap::new(),
            shared,
            udp_endpoints: FastMap::default(),
            fragment_rules: 0,
            fragment_elements: 0,
        }
    }

    /// The table this state is written to.
    pub fn table(&self) -> &TableRef {
        &self.skeleton.table
    }

    /// The node settings the fragments were compiled with.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// Service ports held.
    pub fn port_count(&self) -> usize {
        self.ports.len()
    }

    /// Rules of the whole table (a metric).
    pub fn rule_count(&self) -> usize {
        self.skeleton.rule_count() + self.fragment_rules
    }

    /// Set and map elements of the whole table (a metric).
    pub fn element_count(&self) -> usize {
        self.fragment_elements + self.shared.values().map(HashMap::len).sum::<usize>()
    }

    /// Makes the state hold `ports` compiled with `config`, recompiling only
    /// ports whose input differs from what they were compiled from (all of
    /// them when `config` changed). Returns the changes; with `collect`
    /// false only the state is updated (a full write follows).
    ///
    /// Ports are identified by name; when `ports` names one port twice, the
    /// first one counts.
    pub(crate) fn update(
        &mut self,
        ports: &[ServicePort],
        config: &ProxyConfig,
        collect: bool,
    ) -> Delta {
        let mut delta = Delta::default();
        let recompile_all = *config != self.config;
        if recompile_all {
            // The skeleton's masquerade check follows the cluster CIDRs.
            let mut base = Ruleset::new(self.family);
            skeleton(&mut base, Fam(self.family), config);
            if collect {
                own_changes(&self.skeleton, &base, &mut delta);
            }
            self.skeleton = base;
            self.config = config.clone();
        }
        let mut sorted: Vec<&ServicePort> = ports.iter().collect();
        if !sorted.windows(2).all(|pair| pair[0].name <= pair[1].name) {
            sorted.sort_by(|a, b| a.name.cmp(&b.name));
        }
        sorted.dedup_by(|later, earlier| later.name == earlier.name);

        // Which ports changed: a walk of both sorted lists side by side.
        let mut changed: Vec<(PortName, Option<&ServicePort>)> = Vec::new();
        let mut cached = self.ports.iter().peekable();
        let mut wanted = sorted.into_iter().peekable();
        loop {
            let order = match (cached.peek(), wanted.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((name, _)), Some(port)) => (*name).cmp(&port.name),
            };
            match order {
                std::cmp::Ordering::Less => {
                    if let Some((name, _)) = cached.next() {
                        changed.push((name.clone(), None));
                    }
                }
                std::cmp::Ordering::Greater => {
                    if let Some(port) = wanted.next() {
                        changed.push((port.name.clone(), Some(port)));
                    }
                }
                std::cmp::Ordering::Equal => {
                    if let (Some((_, entry)), Some(port)) = (cached.next(), wanted.next()) {
                        if recompile_all || entry.input != *port {
                            changed.push((port.name.clone(), Some(port)));
                        }
                    }
                }
            }
        }

        self.apply(changed, collect, delta)
    }

    /// Makes the state hold, for each Service of `services` (namespace,
    /// name), exactly its ports in `ports` (none: the Service is gone),
    /// leaving every other Service as it is: the work is proportional to
    /// the Services named, not to all Services. Other ports in `ports` are
    /// ignored. A changed `config` recompiles everything.
    pub(crate) fn update_services(
        &mut self,
        services: &[(String, String)],
        ports: &[ServicePort],
        config: &ProxyConfig,
        collect: bool,
    ) -> Delta {
        let named = |port: &PortName| {
            services
                .iter()
                .any(|(namespace, name)| port.namespace == *namespace && port.name == *name)
        };
        if *config != self.config {
            // Rare: every port is compiled again, from its cached input.
            let mut all: Vec<ServicePort> = self
                .ports
                .values()
                .filter(|entry| !named(&entry.input.name))
                .map(|entry| entry.input.clone())
                .collect();
            all.extend(ports.iter().filter(|port| named(&port.name)).cloned());
            return self.update(&all, config, collect);
        }
        let mut wanted: BTreeMap<&PortName, &ServicePort> = BTreeMap::new();
        for port in ports.iter().filter(|port| named(&port.name)) {
            wanted.entry(&port.name).or_insert(port);
        }
        let mut changed: Vec<(PortName, Option<&ServicePort>)> = Vec::new();
        for (namespace, name) in services {
            let first = PortName {
                namespace: namespace.clone(),
                name: name.clone(),
                port: String::new(),
                protocol: Protocol::Tcp,
            };
            let held = self
                .ports
                .range(first..)
                .take_while(|(port, _)| port.namespace == *namespace && port.name == *name);
            for (port, entry) in held {
                match wanted.get(port) {
                    None => changed.push((port.clone(), None)),
                    Some(input) if entry.input != **input => {
                        changed.push((port.clone(), Some(*input)));
                    }
                    Some(_) => {}
                }
            }
        }
        for (port, input) in wanted {
            if !self.ports.contains_key(port) {
                changed.push((port.clone(), Some(input)));
            }
        }
        changed.sort_by(|a, b| a.0.cmp(&b.0));
        changed.dedup_by(|later, earlier| later.0 == earlier.0);
        self.apply(changed, collect, Delta::default())
    }

    /// Recompiles the `changed` ports (`None`: removed) and collects the
    /// changes into `delta` (only the state is updated without `collect`).
    fn apply(
        &mut self,
        changed: Vec<(PortName, Option<&ServicePort>)>,
        collect: bool,
        mut delta: Delta,
    ) -> Delta {
        delta.ports_changed = changed.len();
        if changed.len() > 64 {
            // A full build: size the reference counts once instead of
            // growing them through a dozen reallocations.
            let endpoints: usize = changed
                .iter()
                .filter_map(|(_, port)| port.map(|port| port.endpoints.len()))
                .sum();
            for (set, counts) in self.shared.iter_mut() {
                match set.as_str() {
                    HAIRPIN | ENDPOINTS => counts.reserve(endpoints),
                    CLUSTER_IPS | ENDPOINT_COUNTS | SERVICE_IPS => counts.reserve(changed.len()),
                    _ => {}
                }
            }
        }
        let mut touched = Touched::default();
        let empty = Ruleset::new(self.family);
        for (name, port) in changed {
            let old = self.ports.remove(&name);
            let new = port.map(|port| {
                let mut fragment = Ruleset::new(self.family);
                compile_port(&mut fragment, Fam(self.family), port, &self.config);
                fragment.dedup_elements();
                Box::new(Entry {
                    input: port.clone(),
                    fragment,
                })
            });
            let old_fragment = old.as_ref().map_or(&empty, |entry| &entry.fragment);
            let new_fragment = new.as_ref().map_or(&empty, |entry| &entry.fragment);
            self.account(old_fragment, new_fragment);
            if collect {
                own_changes(old_fragment, new_fragment, &mut delta);
            }
            self.count_shared(old_fragment, new_fragment, collect.then_some(&mut touched));
            self.count_udp(
                old.as_deref(),
                new.as_deref(),
                collect.then_some(&mut touched),
            );
            if let Some(entry) = new {
                self.ports.insert(name, entry);
            }
        }
        if collect {
            self.settle(touched, &mut delta);
        }
        delta
    }

    /// Keeps the rule and element counts of the fragments.
    fn account(&mut self, old: &Ruleset, new: &Ruleset) {
        let own_elements = |fragment: &Ruleset| -> usize {
            fragment
                .sets
                .keys()
                .filter_map(|set| fragment.elements.get(set))
                .map(Vec::len)
                .sum()
        };
        self.fragment_rules =
            (self.fragment_rules + new.rule_count()).saturating_sub(old.rule_count());
        self.fragment_elements =
            (self.fragment_elements + own_elements(new)).saturating_sub(own_elements(old));
    }

    /// Moves the reference counts of shared elements from `old`'s
    /// contributions to `new`'s.
    fn count_shared(&mut self, old: &Ruleset, new: &Ruleset, mut touched: Option<&mut Touched>) {
        for (set, counts) in self.shared.iter_mut() {
            let was = old.elements.get(set).map(Vec::as_slice).unwrap_or_default();
            let is = new.elements.get(set).map(Vec::as_slice).unwrap_or_default();
            if was == is {
                continue;
            }
            for element in was {
                if let Some(touched) = touched.as_deref_mut() {
                    let before = counts.get(element).copied().unwrap_or(0);
                    touched
                        .elements
                        .entry((set.clone(), element.clone()))
                        .or_insert(before);
                }
                if let Some(count) = counts.get_mut(element) {
                    *count -= 1;
                    if *count == 0 {
                        counts.remove(element);
                    }
                }
            }
            for element in is {
                if let Some(touched) = touched.as_deref_mut() {
                    let before = counts.get(element).copied().unwrap_or(0);
                    touched
                        .elements
                        .entry((set.clone(), element.clone()))
                        .or_insert(before);
                }
                *counts.entry(element.clone()).or_insert(0) += 1;
            }
        }
    }

    /// Moves the reference counts of UDP endpoint addresses.
    fn count_udp(
        &mut self,
        old: Option<&Entry>,
        new: Option<&Entry>,
        mut touched: Option<&mut Touched>,
    ) {
        let was = old.map(udp_endpoints).unwrap_or_default();
        let is = new.map(udp_endpoints).unwrap_or_default();
        if was == is {
            return;
        }
        for ip in was {
            if let Some(touched) = touched.as_deref_mut() {
                let before = self.udp_endpoints.get(&ip).copied().unwrap_or(0);
                touched.udp_endpoints.entry(ip).or_insert(before);
            }
            if let Some(count) = self.udp_endpoints.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    self.udp_endpoints.remove(&ip);
                }
            }
        }
        for ip in is {
            if let Some(touched) = touched.as_deref_mut() {
                let before = self.udp_endpoints.get(&ip).copied().unwrap_or(0);
                touched.udp_endpoints.entry(ip).or_insert(before);
            }
            *self.udp_endpoints.entry(ip).or_insert(0) += 1;
        }
    }

    /// Turns reference-count changes into element changes: an element
    /// whose count went from zero enters the kernel, one whose count went
    /// to zero leaves it (an element that moved between ports does
    /// neither).
    fn settle(&self, touched: Touched, delta: &mut Delta) {
        for ((set, element), before) in touched.elements {
            let after = self
                .shared
                .get(&set)
                .and_then(|counts| counts.get(&element))
                .copied()
                .unwrap_or(0);
            if before > 0 && after == 0 {
                delta.delete_elements.entry(set).or_default().push(element);
            } else if before == 0 && after > 0 {
                delta.add_elements.entry(set).or_default().push(element);
            }
        }
        for (ip, before) in touched.udp_endpoints {
            if before > 0 && !self.udp_endpoints.contains_key(&ip) {
                delta.gone_udp_endpoints.push(ip);
            }
        }
        delta.gone_udp_endpoints.sort_unstable();
    }

    /// The transaction that replaces the table with the whole state, in the
    /// same commit (so packets never see a missing table).
    pub fn full_transaction(&self) -> Transaction {
        let table = self.table();
        let mut tx = Transaction::new();
        tx.recreate_table(table);
        let fragments = || self.ports.values().map(|entry| &entry.fragment);
        for chain in self.skeleton.chains.values() {
            tx.add_chain(table, chain.clone());
        }
        for fragment in fragments() {
            for chain in fragment.chains.values() {
                tx.add_chain(table, chain.clone());
            }
        }
        for set in self.skeleton.sets.values() {
            tx.add_set(table, set.clone());
        }
        for fragment in fragments() {
            for set in fragment.sets.values() {
                tx.add_set(table, set.clone());
            }
        }
        // Rules before elements: a rule that uses a map binds it, and the
        // kernel walks every element of a map a new binding sees (the 16
        // rules of `balance` over 150,000 endpoints at 30,000 Services:
        // a third of the kernel's time when the elements came first).
        for rules in self.skeleton.rules.values() {
            for rule in rules {
                tx.add_rule(table, rule.clone());
            }
        }
        for fragment in fragments() {
            for rules in fragment.rules.values() {
                for rule in rules {
                    tx.add_rule(table, rule.clone());
                }
            }
        }
        for (set, counts) in &self.shared {
            tx.add_elements(table, set.clone(), counts.keys().cloned().collect());
        }
        for fragment in fragments() {
            for (set, elements) in &fragment.elements {
                if fragment.sets.contains_key(set) {
                    tx.add_elements(table, set.clone(), elements.clone());
                }
            }
        }
        tx
    }

    /// The whole ruleset this state stands for, as one [`Ruleset`] (what
    /// [`crate::compile`] returns for the same ports, up to the order of
    /// elements in shared sets).
    pub fn ruleset(&self) -> Ruleset {
        let mut whole = self.skeleton.clone();
        for fragment in self.ports.values().map(|entry| &entry.fragment) {
            whole
                .chains
                .extend(fragment.chains.iter().map(|(k, v)| (k.clone(), v.clone())));
            whole
                .rules
                .extend(fragment.rules.iter().map(|(k, v)| (k.clone(), v.clone())));
            whole
                .sets
                .extend(fragment.sets.iter().map(|(k, v)| (k.clone(), v.clone())));
            for (set, elements) in &fragment.elements {
                if fragment.sets.contains_key(set) {
                    whole.elements.insert(set.clone(), elements.clone());
                }
            }
        }
        for (set, counts) in &self.shared {
            whole
                .elements
                .insert(set.clone(), counts.keys().cloned().collect());
        }
        whole
    }
}

/// Addresses of the endpoints of a UDP port in its family (its `@hairpin`
/// elements, so the same endpoints the whole-ruleset syncer considers).
fn udp_endpoints(entry: &Entry) -> Vec<IpAddr> {
    if entry.input.name.protocol != Protocol::Udp {
        return Vec::new();
    }
    entry
        .fragment
        .elements
        .get(HAIRPIN)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|element| match element.key.first() {
            Some(Value::Ipv4(ip)) => Some(IpAddr::V4(*ip)),
            Some(Value::Ipv6(ip)) => Some(IpAddr::V6(*ip)),
            _ => None,
        })
        .collect()
}

/// The changes to a port's own chains, rules and sets from `old` to `new`.
fn own_changes(old: &Ruleset, new: &Ruleset, delta: &mut Delta) {
    for (name, was, is) in side_by_side(&old.chains, &new.chains) {
        let rules = new.rules.get(name).map(Vec::as_slice).unwrap_or_default();
        match (was, is) {
            (None, Some(chain)) => {
                delta.add_chains.push(chain.clone());
                delta.add_rules.extend_from_slice(rules);
            }
            (Some(_), None) => {
                delta.flush_chains.push(name.clone());
                delta.delete_chains.push(name.clone());
            }
            (Some(was), Some(is)) => {
                if was != is {
                    delta.incompatible = true;
                }
                if old.rules.get(name).map(Vec::as_slice).unwrap_or_default() != rules {
                    delta.flush_chains.push(name.clone());
                    delta.add_rules.extend_from_slice(rules);
                }
            }
            (None, None) => {}
        }
    }
    for (name, was, is) in side_by_side(&old.sets, &new.sets) {
        let elements = |fragment: &Ruleset| -> Vec<Element> {
            fragment.elements.get(name).cloned().unwrap_or_default()
        };
        match (was, is) {
            (None, Some(set)) => {
                delta.add_sets.push(set.clone());
                delta
                    .add_elements
                    .entry(name.clone())
                    .or_default()
                    .extend(elements(new));
            }
            (Some(_), None) => delta.delete_sets.push(name.clone()),
            (Some(was), Some(is)) if was != is => delta.incompatible = true,
            (Some(_), Some(_)) => {
                let (stale, fresh) = changes(
                    old.elements
                        .get(name)
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                    new.elements
                        .get(name)
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                );
                if !stale.is_empty() {
                    delta
                        .delete_elements
                        .entry(name.clone())
                        .or_default()
                        .extend(stale);
                }
                if !fresh.is_empty() {
                    delta
                        .add_elements
                        .entry(name.clone())
                        .or_default()
                        .extend(fresh);
                }
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests;
