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
//!
//! The shared sets are created with a size ([`set_size`]: at least a
//! quarter more than the elements they get), so the kernel gives each a
//! hash table allocated once at that size instead of one that grows while
//! hundreds of thousands of elements go in (growing was the largest part
//! of the kernel's time for a full load). The size is also the most
//! elements the kernel accepts in the set, and it cannot change: an update
//! that would overfill a shared set is written as a full rewrite of the
//! table instead (the same atomic transaction as a resync, so dynamic
//! affinity entries start over), with sizes for the new counts.
//!
//! A port's own objects are kept with it; its elements of the shared sets
//! only in the reference counts (they are compiled again from its input
//! when it changes).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use indexmap::IndexMap;

use weft_nft::{Chain, Element, Family, Rule, Set, TableRef, Transaction, Value};

use crate::compile::{
    CLUSTER_IPS, ENDPOINT_COUNTS, ENDPOINTS, Fam, HAIRPIN, ProxyConfig, Ruleset, SERVICE_IPS,
    compile_port, skeleton,
};
use crate::service::{PortName, Protocol, ServicePort};
use crate::sync::{changes, side_by_side};

/// A hash map with [`FastHasher`].
type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// The elements of one shared set, with how many ports contribute each,
/// in the order they came. Behind an [`Arc`] in the state, so that a full
/// transaction encodes the elements from here instead of a copy of them
/// ([`Transaction::add_shared_elements`]); the state is changed only once
/// that transaction is gone (`Arc::make_mut` would copy otherwise).
#[derive(Debug, Clone, Default)]
struct SharedCounts(IndexMap<Element, u32, BuildHasherDefault<FastHasher>>);

impl std::ops::Deref for SharedCounts {
    type Target = IndexMap<Element, u32, BuildHasherDefault<FastHasher>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for SharedCounts {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl weft_nft::ElementList for SharedCounts {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, index: usize) -> Option<&Element> {
        self.0.get_index(index).map(|(element, _)| element)
    }
}

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

/// One Service port: what it was compiled from, and its own chains, rules,
/// sets and their elements (`None`: it has none, like every port balanced
/// through the shared maps). Its elements of the shared sets are not kept:
/// they live in the reference counts, and when the port changes they are
/// compiled again from `input` (the same pure function gives the same
/// elements), so each element is held once, not once per port and once
/// in the counts.
#[derive(Debug, Clone)]
struct Entry {
    input: ServicePort,
    own: Option<Ruleset>,
}

/// What compiling one port gives, split: its own objects, and its elements
/// of the shared sets (reused from port to port, so that compiling
/// 30,000 ports does not allocate their element lists 30,000 times).
struct Compiled {
    scratch: Ruleset,
}

impl Compiled {
    fn new(family: Family) -> Compiled {
        Compiled {
            scratch: Ruleset::new(family),
        }
    }

    /// Compiles `port` (none: nothing) with `config`, replacing what was
    /// compiled before.
    fn compile(&mut self, port: Option<&ServicePort>, fam: Fam, config: &ProxyConfig) {
        let scratch = &mut self.scratch;
        scratch.chains.clear();
        scratch.rules.clear();
        scratch.sets.clear();
        // Keep the element lists (and their capacity) of the shared sets.
        scratch.elements.retain(|_, elements| {
            elements.clear();
            elements.capacity() > 0
        });
        if let Some(port) = port {
            compile_port(scratch, fam, port, config);
            scratch.dedup_elements();
        }
    }

    /// Elements of shared set `set`.
    fn shared(&self, set: &str) -> &[Element] {
        if self.scratch.sets.contains_key(set) {
            return &[];
        }
        self.scratch
            .elements
            .get(set)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Moves the port's own chains, rules, sets and their elements out.
    fn take_own(&mut self) -> Option<Ruleset> {
        let scratch = &mut self.scratch;
        if scratch.chains.is_empty() && scratch.sets.is_empty() {
            return None;
        }
        let mut own = Ruleset::new(scratch.table.family);
        own.chains = std::mem::take(&mut scratch.chains);
        own.rules = std::mem::take(&mut scratch.rules);
        own.sets = std::mem::take(&mut scratch.sets);
        for name in own.sets.keys() {
            if let Some(elements) = scratch.elements.remove(name) {
                own.elements.insert(name.clone(), elements);
            }
        }
        Some(own)
    }
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
    /// A shared set would hold more elements than the size it was created
    /// with: the table is rewritten with larger sets.
    pub(crate) outgrown: bool,
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
    /// contribute each. Index maps: the elements (a couple of hundred bytes
    /// each, hundreds of thousands in `@hairpin` and `@endpoints`) sit one
    /// after the other in a vector and the hash table holds only their
    /// positions, so a full build appends instead of scattering writes over
    /// tens of megabytes, and the full transaction copies them in one pass.
    shared: BTreeMap<String, Arc<SharedCounts>>,
    /// Endpoint addresses of UDP ports, with how many ports list each.
    udp_endpoints: FastMap<IpAddr, u32>,
    /// The size each shared set was created with by the last full write
    /// that reached the kernel ([`ServiceTable::written_in_full`]).
    sizes: BTreeMap<String, u32>,
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
            .map(|name| (name.clone(), Arc::new(SharedCounts::default())))
            .collect();
        ServiceTable {
            family,
            config,
            skeleton: base,
            ports: BTreeMap::new(),
            shared,
            udp_endpoints: FastMap::default(),
            sizes: BTreeMap::new(),
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
        let shared: usize = self.shared.values().map(|counts| counts.0.len()).sum();
        self.fragment_elements + shared
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
        let old_config = self.config.clone();
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

        self.apply(changed, &old_config, collect, delta)
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
            let first = PortName::new(namespace, name, "", Protocol::Tcp);
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
        let config = self.config.clone();
        self.apply(changed, &config, collect, Delta::default())
    }

    /// Recompiles the `changed` ports (`None`: removed) and collects the
    /// changes into `delta` (only the state is updated without `collect`).
    fn apply(
        &mut self,
        changed: Vec<(PortName, Option<&ServicePort>)>,
        old_config: &ProxyConfig,
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
                    HAIRPIN | ENDPOINTS => Arc::make_mut(counts).reserve(endpoints),
                    CLUSTER_IPS | ENDPOINT_COUNTS | SERVICE_IPS => {
                        Arc::make_mut(counts).reserve(changed.len())
                    }
                    _ => {}
                }
            }
        }
        let mut touched = Touched::default();
        let empty = Ruleset::new(self.family);
        let fam = Fam(self.family);
        let mut was = Compiled::new(self.family);
        let mut is = Compiled::new(self.family);
        for (name, port) in changed {
            let old = self.ports.remove(&name);
            // The old port's shared elements, compiled again from its
            // input with the settings it was compiled with.
            was.compile(old.as_ref().map(|entry| &entry.input), fam, old_config);
            is.compile(port, fam, &self.config);
            let new = port.map(|port| {
                Box::new(Entry {
                    input: port.clone(),
                    own: is.take_own(),
                })
            });
            let old_own = old.as_ref().and_then(|entry| entry.own.as_ref());
            let new_own = new.as_ref().and_then(|entry| entry.own.as_ref());
            let old_own = old_own.unwrap_or(&empty);
            let new_own = new_own.unwrap_or(&empty);
            self.account(old_own, new_own);
            if collect {
                own_changes(old_own, new_own, &mut delta);
            }
            let udp = |compiled: &Compiled, entry: Option<&Entry>| match entry {
                Some(entry) if entry.input.name.protocol == Protocol::Udp => {
                    udp_endpoints(compiled.shared(HAIRPIN))
                }
                _ => Vec::new(),
            };
            let udp_was = udp(&was, old.as_deref());
            let udp_is = udp(&is, new.as_deref());
            self.count_udp(udp_was, udp_is, collect.then_some(&mut touched));
            self.count_shared(&mut was, &mut is, collect.then_some(&mut touched));
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
    /// contributions to `new`'s (moving `new`'s elements into the counts).
    fn count_shared(
        &mut self,
        old: &mut Compiled,
        new: &mut Compiled,
        mut touched: Option<&mut Touched>,
    ) {
        for (set, counts) in self.shared.iter_mut() {
            let was = old.shared(set);
            if was == new.shared(set) {
                continue;
            }
            let counts = Arc::make_mut(counts);
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
                        counts.swap_remove(element);
                    }
                }
            }
            if new.scratch.sets.contains_key(set) {
                continue;
            }
            let Some(is) = new.scratch.elements.get_mut(set) else {
                continue;
            };
            for element in is.drain(..) {
                if let Some(touched) = touched.as_deref_mut() {
                    let before = counts.get(&element).copied().unwrap_or(0);
                    touched
                        .elements
                        .entry((set.clone(), element.clone()))
                        .or_insert(before);
                }
                *counts.entry(element).or_insert(0) += 1;
            }
        }
    }

    /// Moves the reference counts of UDP endpoint addresses.
    fn count_udp(&mut self, was: Vec<IpAddr>, is: Vec<IpAddr>, mut touched: Option<&mut Touched>) {
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
        delta.outgrown = self.shared.iter().any(|(set, counts)| {
            self.sizes
                .get(set)
                .is_some_and(|size| counts.len() > *size as usize)
        });
    }

    /// Records that [`ServiceTable::full_transaction`] of the current state
    /// reached the kernel: the shared sets now have the sizes it gave them.
    pub fn written_in_full(&mut self) {
        self.sizes = self
            .shared
            .iter()
            .map(|(set, counts)| (set.clone(), set_size(counts.len())))
            .collect();
    }

    /// The size the shared set `set` was created with by the last full
    /// write ([`ServiceTable::written_in_full`]); `None` for other sets or
    /// before any full write.
    pub fn set_size(&self, set: &str) -> Option<u32> {
        self.sizes.get(set).copied()
    }

    /// The transaction that replaces the table with the whole state, in the
    /// same commit (so packets never see a missing table). The elements of
    /// the shared sets are not copied: the transaction refers to the
    /// state's own lists, and changing the state while it lives copies
    /// them first (drop the transaction once it is committed).
    pub fn full_transaction(&self) -> Transaction {
        let table = self.table();
        let mut tx = Transaction::new();
        tx.recreate_table(table);
        let fragments = || self.ports.values().filter_map(|entry| entry.own.as_ref());
        for chain in self.skeleton.chains.values() {
            tx.add_chain(table, chain.clone());
        }
        for fragment in fragments() {
            for chain in fragment.chains.values() {
                tx.add_chain(table, chain.clone());
            }
        }
        for set in self.skeleton.sets.values() {
            let size = self
                .shared
                .get(&set.name)
                .map(|counts| set_size(counts.len()));
            tx.add_set(
                table,
                Set {
                    size,
                    ..set.clone()
                },
            );
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
            let counts: Arc<dyn weft_nft::ElementList> = counts.clone();
            tx.add_shared_elements(table, set.clone(), counts);
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
        for fragment in self.ports.values().filter_map(|entry| entry.own.as_ref()) {
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

/// The smallest size a shared set is created with (before rounding, see
/// [`set_size`]).
pub const MIN_SET_SIZE: u32 = 256;

/// The size a shared set holding `count` elements is created with: room
/// for at least a quarter more (at least [`MIN_SET_SIZE`]), rounded up to
/// fill the kernel's table. nf_tables gives a set of size `s` a fixed hash
/// table of `roundup_pow_of_two(s * 4 / 3)` buckets, allocated and zeroed
/// at once (at 30,000 Services a table twice as large as needed cost tens
/// of milliseconds of the load), so the size is the largest one with the
/// bucket count the wanted one gets anyway: between 25 % and 170 % of
/// headroom before the set has to be replaced.
pub fn set_size(count: usize) -> u32 {
    let wanted = u64::try_from(count)
        .unwrap_or(u64::MAX)
        .saturating_add(u64::try_from(count / 4).unwrap_or(u64::MAX))
        .max(u64::from(MIN_SET_SIZE));
    let buckets = (wanted.saturating_mul(4) / 3)
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX);
    u32::try_from(buckets / 4 * 3).unwrap_or(u32::MAX)
}

/// Addresses of the endpoints of a UDP port in its family, from its
/// `@hairpin` elements (the same endpoints the whole-ruleset syncer
/// considers).
fn udp_endpoints(hairpin: &[Element]) -> Vec<IpAddr> {
    hairpin
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
