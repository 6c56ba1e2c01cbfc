//! The answer index: every name the cluster zone holds, computed from
//! Services, EndpointSlices and Pods by a pure function ([`Index::build`]),
//! and the authoritative answer to a question about it ([`Index::answer`]).
//!
//! Owns the Kubernetes DNS-Based Service Discovery schema 1.1.0 (ClusterIP,
//! headless and ExternalName Services, SRV for named ports, PTR, pod records,
//! `dns-version`), the difference between NXDOMAIN and NODATA, and the SOA
//! of negative answers. Does no I/O: the server swaps whole indexes.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder, Restrict};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::wire::{self, rtype};

/// The schema version answered at `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// The label Kubernetes puts on an EndpointSlice naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What `<a-b-c-d>.<ns>.pod.<zone>` answers (CoreDNS `pods` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodMode {
    /// No pod records: every name under `pod.<zone>` is NXDOMAIN.
    Disabled,
    /// Any well-formed address answers, whether or not a Pod has it.
    #[default]
    Insecure,
    /// Only addresses of existing Pods in that namespace answer.
    Verified,
}

/// The settings the index is built with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneSettings {
    /// The cluster domain, `cluster.local` by default; any case, with or
    /// without the trailing dot.
    pub zone: String,
    /// TTL of every record, negative answers' SOA minimum included.
    pub ttl: u32,
    pub pods: PodMode,
}

impl Default for ZoneSettings {
    fn default() -> Self {
        ZoneSettings {
            zone: "cluster.local".to_owned(),
            ttl: 30,
            pods: PodMode::Insecure,
        }
    }
}

/// What the index says about one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name is in the zone (or is a reverse name the cluster owns):
    /// answer authoritatively with this rcode and these sections.
    Authoritative {
        rcode: ResponseCode,
        answers: Vec<Record>,
        /// The zone SOA on negative answers.
        authority: Vec<Record>,
        /// Addresses of SRV targets.
        additionals: Vec<Record>,
    },
    /// Not ours: the caller answers it from the hosts file or upstream.
    NotOurs,
}

/// Lower-case key of a name: ASCII, no trailing dot.
pub fn key_of(name: &Name) -> String {
    let mut s = name.to_ascii().to_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

fn fqdn(s: &str) -> Option<Name> {
    let mut name = Name::from_ascii(s).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// `10.0.0.1` → `10-0-0-1`; `fd00::1` → `fd00--1`, as CoreDNS names them.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The record type and stored data of an address record.
fn address(ip: IpAddr) -> (u16, Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => (rtype::A, v4.octets().to_vec()),
        IpAddr::V6(v6) => (rtype::AAAA, v6.octets().to_vec()),
    }
}

fn reverse_key(ip: IpAddr) -> String {
    key_of(&Name::from(ip))
}

/// A service port's SRV label pair, `_<port>._<proto>`.
fn srv_prefix(port_name: &str, protocol: Option<&str>) -> String {
    let proto = protocol.unwrap_or("TCP").to_ascii_lowercase();
    format!("_{}._{proto}", port_name.to_ascii_lowercase())
}

/// The uncompressed wire form of a name given in presentation form, if it
/// is a valid name.
fn wire_name(s: &str) -> Option<Vec<u8>> {
    let name = fqdn(s)?;
    let mut out = Vec::with_capacity(s.len() + 2);
    let mut encoder = BinEncoder::new(&mut out);
    name.emit(&mut encoder).ok()?;
    Some(out)
}

/// A private-use type number marking an SRV record whose weight is not
/// known until every target of its owner is: its data is the port then
/// the target. Never stored in an [`Index`].
const PENDING_SRV: u16 = 0xff00;

/// One record of the build log: owner, type and data.
type LogEntry<'a> = (&'a [u8], u16, &'a [u8]);

fn log_entry(log: &[u8], offset: u32) -> Option<LogEntry<'_>> {
    let at = usize::try_from(offset).ok()?;
    let owner_len = usize::from(*log.get(at)?);
    let owner = log.get(at + 1..at + 1 + owner_len)?;
    let rest = at + 1 + owner_len;
    let head = log.get(rest..rest + 4)?;
    let rtype = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    Some((owner, rtype, log.get(rest + 4..rest + 4 + len)?))
}

/// Records gathered while building, in one byte log rather than one small
/// allocation per name: large buffers, which the allocator gives back to
/// the system once the index is built, so that building a big zone does
/// not leave the process larger than the index itself. An entry is
/// `owner length (1) | owner | type (2) | data length (2) | data`;
/// duplicates are removed when [`Builder::sorted`] sorts the log.
#[derive(Default)]
struct Builder {
    log: Vec<u8>,
    entries: Vec<u32>,
}

impl Builder {
    fn add(&mut self, owner: &str, rtype: u16, rdata: &[u8]) {
        let (Ok(owner_len), Ok(len), Ok(offset)) = (
            u8::try_from(owner.len()),
            u16::try_from(rdata.len()),
            u32::try_from(self.log.len()),
        ) else {
            return;
        };
        self.log.push(owner_len);
        self.log.extend_from_slice(owner.as_bytes());
        self.log.extend_from_slice(&rtype.to_be_bytes());
        self.log.extend_from_slice(&len.to_be_bytes());
        self.log.extend_from_slice(rdata);
        self.entries.push(offset);
    }

    fn add_address(&mut self, owner: &str, ip: IpAddr) {
        let (rtype, rdata) = address(ip);
        self.add(owner, rtype, &rdata);
    }

    fn add_name_target(&mut self, owner: &str, rtype: u16, target: &str) {
        if let Some(target) = wire_name(target) {
            self.add(owner, rtype, &target);
        }
    }

    /// An SRV record of `owner` to `target`; its weight is set in
    /// [`Builder::sorted`] from the number of targets.
    fn add_srv(&mut self, owner: &str, port: u16, target: &str) {
        if let Some(target) = wire_name(target) {
            let mut data = Vec::with_capacity(2 + target.len());
            data.extend_from_slice(&port.to_be_bytes());
            data.extend_from_slice(&target);
            self.add(owner, PENDING_SRV, &data);
        }
    }

    /// The entries sorted by owner, type and data, without duplicates.
    fn sorted(&mut self) {
        let log = &self.log;
        let key = |o: &u32| log_entry(log, *o);
        self.entries.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
        self.entries.dedup_by(|a, b| key(a) == key(b));
    }

    /// The owners' records grouped, in owner order (after [`Builder::sorted`]).
    fn groups(&self) -> impl Iterator<Item = (&str, Vec<LogEntry<'_>>)> + '_ {
        let mut entries = self
            .entries
            .iter()
            .filter_map(|o| log_entry(&self.log, *o))
            .peekable();
        std::iter::from_fn(move || {
            let first = entries.next()?;
            let mut group = vec![first];
            while let Some(next) = entries.next_if(|e| e.0 == first.0) {
                group.push(next);
            }
            Some((std::str::from_utf8(first.0).unwrap_or_default(), group))
        })
    }
}

/// The stored records of one owner's log entries: SRV weights set to an
/// equal share of 100 among the owner's targets.
fn stored_group(group: &[LogEntry<'_>], out: &mut Vec<u8>) {
    out.clear();
    let targets = group.iter().filter(|e| e.1 == PENDING_SRV).count();
    let weight = u16::try_from(100 / targets.max(1)).unwrap_or(1).max(1);
    for &(_, rtype, data) in group {
        if rtype == PENDING_SRV {
            let mut rdata = Vec::with_capacity(4 + data.len());
            rdata.extend_from_slice(&0u16.to_be_bytes());
            rdata.extend_from_slice(&weight.to_be_bytes());
            rdata.extend_from_slice(data);
            wire::push_stored(out, rtype::SRV, &rdata);
        } else {
            wire::push_stored(out, rtype, data);
        }
    }
}

fn is_ready(ep: &k8s_openapi::api::discovery::v1::Endpoint) -> bool {
    ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
}

/// Builds an [`Index`] from the cluster's objects a part at a time (a
/// namespace at a time, say), so that a caller never holds every object at
/// once; [`Index::build`] adds them all in one go.
pub struct IndexBuilder {
    zone: String,
    settings: ZoneSettings,
    b: Builder,
    pod_ips: HashSet<(Box<str>, IpAddr)>,
}

impl IndexBuilder {
    pub fn new(settings: &ZoneSettings) -> IndexBuilder {
        let zone = settings.zone.trim_end_matches('.').to_ascii_lowercase();
        IndexBuilder {
            zone,
            settings: settings.clone(),
            b: Builder::default(),
            pod_ips: HashSet::new(),
        }
    }

    /// Adds Services, EndpointSlices and Pods. A Service's EndpointSlices
    /// must come in the same call as the Service (slices are matched to
    /// Services within one call).
    pub fn add<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) {
        let zone = self.zone.clone();
        let settings = &self.settings;
        let b = &mut self.b;
        let pod_ips = &mut self.pod_ips;
        let mut slices_by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let Some(svc) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let ns = slice.metadata.namespace.clone().unwrap_or_default();
            slices_by_service
                .entry((ns.to_ascii_lowercase(), svc.to_ascii_lowercase()))
                .or_default()
                .push(slice);
        }

        for svc in services {
            let (Some(name), Some(spec)) = (svc.metadata.name.as_deref(), svc.spec.as_ref()) else {
                continue;
            };
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let (name, ns) = (name.to_ascii_lowercase(), ns.to_ascii_lowercase());
            let base = format!("{name}.{ns}.svc.{zone}");

            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(ext) = spec.external_name.as_deref() {
                    b.add_name_target(&base, rtype::CNAME, ext.trim_end_matches('.'));
                }
                continue;
            }

            let headless = spec.cluster_ip.as_deref() == Some("None");
            if !headless {
                let mut ips: Vec<IpAddr> = spec
                    .cluster_ips
                    .iter()
                    .flatten()
                    .chain(spec.cluster_ip.iter())
                    .filter_map(|s| s.parse().ok())
                    .collect();
                ips.dedup();
                if ips.is_empty() {
                    continue;
                }
                for ip in ips {
                    b.add_address(&base, ip);
                    b.add_name_target(&reverse_key(ip), rtype::PTR, &base);
                }
                for port in spec.ports.iter().flatten() {
                    let (Some(port_name), Ok(number)) =
                        (port.name.as_deref(), u16::try_from(port.port))
                    else {
                        continue;
                    };
                    let owner =
                        format!("{}.{base}", srv_prefix(port_name, port.protocol.as_deref()));
                    b.add_srv(&owner, number, &base);
                }
                continue;
            }

            let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
            let slices = slices_by_service
                .get(&(ns.clone(), name.clone()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            for slice in slices {
                if slice.address_type == "FQDN" {
                    continue;
                }
                for ep in &slice.endpoints {
                    if !(publish_not_ready || is_ready(ep)) {
                        continue;
                    }
                    for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                        let label = ep
                            .hostname
                            .as_deref()
                            .map(str::to_ascii_lowercase)
                            .unwrap_or_else(|| dashed(ip));
                        let host = format!("{label}.{base}");
                        b.add_address(&base, ip);
                        b.add_address(&host, ip);
                        b.add_name_target(&reverse_key(ip), rtype::PTR, &host);
                        for port in slice.ports.iter().flatten() {
                            let (Some(port_name), Some(number)) = (
                                port.name.as_deref().filter(|n| !n.is_empty()),
                                port.port.and_then(|p| u16::try_from(p).ok()),
                            ) else {
                                continue;
                            };
                            let owner = format!(
                                "{}.{base}",
                                srv_prefix(port_name, port.protocol.as_deref())
                            );
                            b.add_srv(&owner, number, &host);
                        }
                    }
                }
            }
        }

        if settings.pods == PodMode::Verified {
            for pod in pods {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                let Some(status) = &pod.status else { continue };
                if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                    continue;
                }
                let ips = status
                    .pod_ips
                    .iter()
                    .flatten()
                    .map(|p| p.ip.as_str())
                    .chain(status.pod_ip.as_deref());
                for ip in ips.filter_map(|s| s.parse::<IpAddr>().ok()) {
                    pod_ips.insert((ns.to_ascii_lowercase().into_boxed_str(), ip));
                }
            }
        }
    }

    /// The index of everything added.
    pub fn finish(self) -> Index {
        let IndexBuilder {
            zone,
            settings,
            mut b,
            pod_ips,
        } = self;
        let version = SCHEMA_VERSION.as_bytes();
        let mut txt = vec![u8::try_from(version.len()).unwrap_or(0)];
        txt.extend_from_slice(version);
        b.add(&format!("dns-version.{zone}"), rtype::TXT, &txt);
        b.add_name_target(&zone, rtype::NS, &format!("ns.dns.{zone}"));
        b.sorted();

        // Names that own nothing but have descendants, in a log of their
        // own: every parent of an owner that is not an owner itself.
        let owners: Vec<&[u8]> = b.groups().map(|(owner, _)| owner.as_bytes()).collect();
        let is_owner = |name: &str| owners.binary_search(&name.as_bytes()).is_ok();
        let mut empty = Builder::default();
        for &owner in &owners {
            let mut rest = std::str::from_utf8(owner).unwrap_or_default();
            while let Some((_, parent)) = rest.split_once('.') {
                if !is_owner(parent) {
                    empty.add(parent, 0, &[]);
                }
                rest = parent;
            }
        }
        for name in ["svc", "pod"] {
            empty.add(&format!("{name}.{zone}"), 0, &[]);
        }
        for (ns, _) in &pod_ips {
            let name = format!("{ns}.pod.{zone}");
            if !is_owner(&name) {
                empty.add(&name, 0, &[]);
            }
        }
        drop(owners);
        empty.sorted();

        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs() % u64::from(u32::MAX)).unwrap_or(1))
            .unwrap_or(1);

        // Sized exactly first: the arena is never reallocated while filled.
        let mut scratch = Vec::new();
        let (mut names, mut bytes) = (empty.entries.len(), 0);
        for (owner, group) in b.groups() {
            stored_group(&group, &mut scratch);
            names += 1;
            bytes += Table::entry_len(owner, &scratch);
        }
        for (owner, _) in empty.groups() {
            bytes += Table::entry_len(owner, &[]);
        }
        let mut table = Table::with_capacity(names, bytes);
        for (owner, group) in b.groups() {
            stored_group(&group, &mut scratch);
            table.insert(owner, &scratch);
        }
        drop(b);
        for (owner, _) in empty.groups() {
            if table.get(owner).is_none() {
                table.insert(owner, &[]);
            }
        }
        drop(empty);
        table.shrink_to_fit();

        let zone_wire = wire_name(&zone).unwrap_or_else(|| vec![0]);
        let mut soa = Vec::new();
        wire::push_name(&mut soa, &format!("ns.dns.{zone}"));
        wire::push_name(&mut soa, &format!("hostmaster.{zone}"));
        for n in [serial, 7200, 1800, 86400, settings.ttl] {
            soa.extend_from_slice(&n.to_be_bytes());
        }

        Index {
            zone,
            zone_wire,
            soa,
            serial,
            ttl: settings.ttl,
            pods: settings.pods,
            table,
            pod_ips,
        }
    }
}

/// Every owner name with its stored records in one byte arena, found
/// through a hash table of arena offsets: about the names' and records'
/// own bytes plus five bytes of table per name. An entry is
/// `key length (1) | key | data length (4) | data`; an empty non-terminal
/// has no data.
#[derive(Clone)]
struct Table {
    arena: Vec<u8>,
    slots: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("names", &self.slots.len())
            .field("arena_bytes", &self.arena.len())
            .finish()
    }
}

/// One entry of the arena: its key, its data, and where the next begins.
fn entry_at(arena: &[u8], offset: usize) -> Option<(&str, &[u8], usize)> {
    let key_len = usize::from(*arena.get(offset)?);
    let key = arena.get(offset + 1..offset + 1 + key_len)?;
    let len_at = offset + 1 + key_len;
    let len = arena.get(len_at..len_at + 4)?;
    let len = usize::try_from(u32::from_be_bytes([len[0], len[1], len[2], len[3]])).ok()?;
    let data = arena.get(len_at + 4..len_at + 4 + len)?;
    Some((std::str::from_utf8(key).ok()?, data, len_at + 4 + len))
}

impl Table {
    fn with_capacity(names: usize, bytes: usize) -> Table {
        Table {
            arena: Vec::with_capacity(bytes),
            slots: HashTable::with_capacity(names),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// The arena bytes of an entry.
    fn entry_len(key: &str, data: &[u8]) -> usize {
        1 + key.len() + 4 + data.len()
    }

    /// Adds a name not yet in the table. Keys longer than 255 bytes (never
    /// a valid name) are skipped.
    fn insert(&mut self, key: &str, data: &[u8]) {
        let (Ok(key_len), Ok(data_len), Ok(offset)) = (
            u8::try_from(key.len()),
            u32::try_from(data.len()),
            u32::try_from(self.arena.len()),
        ) else {
            return;
        };
        self.arena.push(key_len);
        self.arena.extend_from_slice(key.as_bytes());
        self.arena.extend_from_slice(&data_len.to_be_bytes());
        self.arena.extend_from_slice(data);
        let hash = self.hasher.hash_one(key.as_bytes());
        let (arena, hasher) = (&self.arena, &self.hasher);
        self.slots.insert_unique(hash, offset, |&o| {
            let key = usize::try_from(o)
                .ok()
                .and_then(|o| entry_at(arena, o))
                .map_or("", |(k, _, _)| k);
            hasher.hash_one(key.as_bytes())
        });
    }

    /// The stored records of `key`: empty for an empty non-terminal.
    fn get(&self, key: &str) -> Option<&[u8]> {
        let hash = self.hasher.hash_one(key.as_bytes());
        let arena = &self.arena;
        let found = self.slots.find(hash, |&o| {
            usize::try_from(o)
                .ok()
                .and_then(|o| entry_at(arena, o))
                .is_some_and(|(k, _, _)| k == key)
        })?;
        let (_, data, _) = entry_at(arena, usize::try_from(*found).ok()?)?;
        Some(data)
    }

    fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
        let (arena, hasher) = (&self.arena, &self.hasher);
        self.slots.shrink_to_fit(|&o| {
            let key = usize::try_from(o)
                .ok()
                .and_then(|o| entry_at(arena, o))
                .map_or("", |(k, _, _)| k);
            hasher.hash_one(key.as_bytes())
        });
    }

    /// Every entry, in insertion order.
    fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let (key, data, next) = entry_at(&self.arena, at)?;
            at = next;
            Some((key, data))
        })
    }
}

/// The whole zone at one moment, immutable once built.
#[derive(Clone, Debug)]
pub struct Index {
    /// The zone, lower case, no trailing dot.
    zone: String,
    zone_wire: Vec<u8>,
    /// The SOA record's data.
    soa: Vec<u8>,
    /// When the index was built; the SOA serial.
    serial: u32,
    ttl: u32,
    pods: PodMode,
    /// Lower-case owner name (no trailing dot) → its records; names that
    /// own nothing but have descendants (RFC 8020: NODATA) with none.
    table: Table,
    /// (namespace, address) of every Pod, for `pods verified`.
    pod_ips: HashSet<(Box<str>, IpAddr)>,
}

/// Which of a name's records answer a question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Select {
    /// Only its CNAME (the question is for another type).
    Cname,
    /// Those of this type; every one for ANY.
    Type(u16),
}

impl Select {
    fn takes(self, record_type: u16) -> bool {
        match self {
            Select::Cname => record_type == rtype::CNAME,
            Select::Type(rtype::ANY) => true,
            Select::Type(t) => t == record_type,
        }
    }
}

/// What the index holds for one question, before it is written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// Outside the zone, or a reverse name the cluster does not own.
    NotOurs,
    /// A class other than IN: REFUSED, no SOA.
    Refused,
    /// NXDOMAIN or NODATA (NOERROR): the zone SOA in the authority section.
    Negative(ResponseCode),
    /// Records of a name (never an empty selection).
    Records(&'a [u8], SelectOf),
    /// The zone's SOA, asked for at the apex.
    Soa,
    /// A pod record's address, of the asked type.
    Pod(IpAddr),
}

/// The selection of a [`Found::Records`], opaque to callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectOf(Select);

impl Found<'_> {
    /// An ExternalName's CNAME answering a question for another type: the
    /// server resolves the target too.
    pub fn is_cname_for_other_type(&self) -> bool {
        matches!(self, Found::Records(_, SelectOf(Select::Cname)))
    }
}

/// The counts and rcode of what [`Index::write`] appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub rcode: ResponseCode,
    pub answers: u16,
    pub authority: u16,
    pub additionals: u16,
}

impl Index {
    /// An index with no Services and no Pods: the zone apex,
    /// `dns-version` and (insecure mode) pod records only.
    pub fn empty(settings: &ZoneSettings) -> Index {
        Index::build(settings, [], [], [])
    }

    /// Computes the whole zone from the cluster's objects.
    ///
    /// EndpointSlices are matched to their Service by the
    /// `kubernetes.io/service-name` label; Services without a cluster IP
    /// (neither allocated nor `None`) get no address records yet.
    pub fn build<'a>(
        settings: &ZoneSettings,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> Index {
        let mut builder = IndexBuilder::new(settings);
        builder.add(services, slices, pods);
        builder.finish()
    }

    /// The zone, lower case, without the trailing dot.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The TTL of every record.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Every record the index holds, as (lower-case owner name without the
    /// trailing dot, data), in no particular order: what a zone file of the
    /// cluster would list. Pod records (synthesized per question) and the
    /// SOA ([`Index::soa`]) are not among them.
    pub fn records(&self) -> impl Iterator<Item = (&str, RData)> + '_ {
        self.table.entries().flat_map(|(owner, data)| {
            wire::stored_records(data).filter_map(move |r| {
                let mut decoder = BinDecoder::new(r.rdata);
                let length = Restrict::new(u16::try_from(r.rdata.len()).ok()?);
                let data = RData::read(&mut decoder, RecordType::from(r.rtype), length).ok()?;
                Some((owner, data))
            })
        })
    }

    /// Number of owner names holding records.
    pub fn len(&self) -> usize {
        self.table
            .entries()
            .filter(|(_, data)| !data.is_empty())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the index keeps for its names and records (the arena and the
    /// hash table's slots), for the memory figures.
    pub fn stored_bytes(&self) -> usize {
        self.table.arena.capacity() + self.table.slots.capacity() * (size_of::<u32>() + 1)
    }

    /// The zone's SOA record, as put in the authority section.
    pub fn soa(&self) -> Record {
        let name = |s: &str| fqdn(&format!("{s}.{}", self.zone)).unwrap_or_else(Name::root);
        Record::from_rdata(
            fqdn(&self.zone).unwrap_or_else(Name::root),
            self.ttl,
            RData::SOA(SOA::new(
                name("ns.dns"),
                name("hostmaster"),
                self.serial,
                7200,
                1800,
                86400,
                self.ttl,
            )),
        )
    }

    fn in_zone(&self, key: &str) -> bool {
        key == self.zone
            || key
                .strip_suffix(self.zone.as_str())
                .is_some_and(|head| head.ends_with('.'))
    }

    /// What the index holds for a question about `key` (a lower-case name
    /// without the trailing dot) of type `qtype` and class `qclass`.
    pub fn find(&self, key: &str, qtype: u16, qclass: u16) -> Found<'_> {
        let in_zone = self.in_zone(key);
        if !(in_zone || key.ends_with("in-addr.arpa") || key.ends_with("ip6.arpa")) {
            return Found::NotOurs;
        }
        let entry = self.table.get(key);
        // Reverse names are owned only where the cluster has a PTR (kubeadm's
        // `fallthrough in-addr.arpa ip6.arpa`); every other one is forwarded.
        if !in_zone && entry.is_none_or(<[u8]>::is_empty) {
            return Found::NotOurs;
        }
        if qclass != wire::CLASS_IN {
            return Found::Refused;
        }
        if let Some(data) = entry.filter(|d| !d.is_empty()) {
            if qtype == rtype::SOA && key == self.zone {
                return Found::Soa;
            }
            let has_cname = wire::stored_records(data).any(|r| r.rtype == rtype::CNAME);
            let select = if has_cname && qtype != rtype::CNAME {
                Select::Cname
            } else {
                Select::Type(qtype)
            };
            if wire::stored_records(data).any(|r| select.takes(r.rtype)) {
                return Found::Records(data, SelectOf(select));
            }
            return Found::Negative(ResponseCode::NoError);
        }
        if let Some(ip) = self.pod_address(key) {
            let matches = match ip {
                IpAddr::V4(_) => matches!(qtype, rtype::A | rtype::ANY),
                IpAddr::V6(_) => matches!(qtype, rtype::AAAA | rtype::ANY),
            };
            return if matches {
                Found::Pod(ip)
            } else {
                Found::Negative(ResponseCode::NoError)
            };
        }
        if entry.is_some() || self.is_insecure_pod_namespace(key) {
            return Found::Negative(ResponseCode::NoError);
        }
        Found::Negative(ResponseCode::NXDomain)
    }

    fn is_insecure_pod_namespace(&self, key: &str) -> bool {
        self.pods == PodMode::Insecure
            && key
                .strip_suffix(self.zone.as_str())
                .and_then(|head| head.strip_suffix(".pod."))
                .is_some_and(|ns| !ns.is_empty() && !ns.contains('.'))
    }

    /// The address a pod name stands for, when pod records answer it.
    fn pod_address(&self, key: &str) -> Option<IpAddr> {
        let head = key
            .strip_suffix(self.zone.as_str())?
            .strip_suffix(".pod.")?;
        let (label, ns) = head.split_once('.')?;
        if ns.contains('.') || self.pods == PodMode::Disabled {
            return None;
        }
        let ip = undashed(label)?;
        if self.pods == PodMode::Verified && !self.pod_ips.contains(&(Box::from(ns), ip)) {
            return None;
        }
        Some(ip)
    }

    fn write_soa(&self, out: &mut Vec<u8>, owner: &[u8]) {
        wire::push_record(out, owner, rtype::SOA, self.ttl, &self.soa);
    }

    /// Appends the answer, authority and additional records of `found` to
    /// `out`, which holds the response's header and question, the question
    /// name starting at offset 12 (answers point at it). The caller sets
    /// the counts and rcode returned in the header.
    pub fn write(&self, found: Found<'_>, out: &mut Vec<u8>) -> Written {
        const QUESTION_NAME: [u8; 2] = [0xc0, 0x0c];
        let mut written = Written {
            rcode: ResponseCode::NoError,
            answers: 0,
            authority: 0,
            additionals: 0,
        };
        match found {
            Found::NotOurs => {}
            Found::Refused => written.rcode = ResponseCode::Refused,
            Found::Negative(rcode) => {
                written.rcode = rcode;
                written.authority = 1;
                self.write_soa(out, &self.zone_wire);
            }
            Found::Soa => {
                written.answers = 1;
                self.write_soa(out, &QUESTION_NAME);
            }
            Found::Pod(ip) => {
                let (rtype, rdata) = match ip {
                    IpAddr::V4(v4) => (rtype::A, v4.octets().to_vec()),
                    IpAddr::V6(v6) => (rtype::AAAA, v6.octets().to_vec()),
                };
                written.answers = 1;
                wire::push_record(out, &QUESTION_NAME, rtype, self.ttl, &rdata);
            }
            Found::Records(data, SelectOf(select)) => {
                // Where each SRV target landed in `out`, for the additional
                // section's owner names.
                let mut targets: Vec<(usize, &[u8])> = Vec::new();
                for r in wire::stored_records(data).filter(|r| select.takes(r.rtype)) {
                    if r.rtype == rtype::SRV {
                        // Owner pointer (2), type, class, TTL, length (10),
                        // then priority, weight and port (6).
                        targets.push((out.len() + 18, r.rdata.get(6..).unwrap_or_default()));
                    }
                    wire::push_record(out, &QUESTION_NAME, r.rtype, self.ttl, r.rdata);
                    written.answers = written.answers.saturating_add(1);
                }
                for (at, target) in targets {
                    let Some((key, _)) = wire::Key::from_wire(target) else {
                        continue;
                    };
                    let Some(target_data) = self.table.get(key.as_str()) else {
                        continue;
                    };
                    let owner = wire::pointer(at).map_or_else(|| target.to_vec(), |p| p.to_vec());
                    for r in wire::stored_records(target_data)
                        .filter(|r| matches!(r.rtype, rtype::A | rtype::AAAA))
                    {
                        wire::push_record(out, &owner, r.rtype, self.ttl, r.rdata);
                        written.additionals = written.additionals.saturating_add(1);
                    }
                }
            }
        }
        written
    }

    /// The authoritative answer to `query`, or [`Answer::NotOurs`] for names
    /// outside the zone and reverse names the cluster does not own: what
    /// [`Index::write`] puts on the wire, read back as records.
    pub fn answer(&self, query: &Query) -> Answer {
        let key = key_of(&query.name);
        let found = self.find(
            &key,
            u16::from(query.query_type),
            u16::from(query.query_class),
        );
        if found == Found::NotOurs {
            return Answer::NotOurs;
        }
        let mut bytes = vec![0u8; wire::HEADER_LEN];
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_offset(wire::HEADER_LEN);
        if query.emit(&mut encoder).is_err() {
            return Answer::NotOurs;
        }
        let written = self.write(found, &mut bytes);
        let counts = [1, written.answers, written.authority, written.additionals];
        for (i, count) in counts.into_iter().enumerate() {
            if let Some(slot) = bytes.get_mut(4 + 2 * i..6 + 2 * i) {
                slot.copy_from_slice(&count.to_be_bytes());
            }
        }
        if let Some(flags) = bytes.get_mut(2) {
            *flags = 0x84;
        }
        match Message::from_vec(&bytes) {
            Ok(message) => Answer::Authoritative {
                rcode: written.rcode,
                answers: message.answers,
                authority: message.authorities,
                additionals: message.additionals,
            },
            Err(e) => {
                tracing::warn!(name = %query.name, error = %e, "cannot read back an answer");
                Answer::NotOurs
            }
        }
    }
}

#[cfg(test)]
mod tests;
