//! The answer index: every name the cluster zone holds, computed from
//! Services, EndpointSlices and Pods by a pure function ([`Index::build`]),
//! and the authoritative answer to a question about it ([`Index::answer`]).
//!
//! Owns the Kubernetes DNS-Based Service Discovery schema 1.1.0 (ClusterIP,
//! headless and ExternalName Services, SRV for named ports, PTR, pod records,
//! `dns-version`), the difference between NXDOMAIN and NODATA, and the SOA
//! of negative answers. Does no I/O: the server swaps whole indexes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

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

/// The whole zone at one moment, immutable once built.
#[derive(Clone, Debug)]
pub struct Index {
    /// The zone, lower case, no trailing dot.
    zone: String,
    zone_name: Name,
    ttl: u32,
    pods: PodMode,
    /// Lower-case owner name (no trailing dot) → its records' data.
    names: HashMap<String, Vec<RData>>,
    /// Names that own nothing but have descendants (RFC 8020: NODATA).
    empty_non_terminals: HashSet<String>,
    /// (namespace, address) of every Pod, for `pods verified`.
    pod_ips: HashSet<(String, IpAddr)>,
    /// When the index was built; the SOA serial.
    serial: u32,
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

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
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

/// Names and records gathered while building, deduplicated.
#[derive(Default)]
struct Builder {
    names: BTreeMap<String, Vec<RData>>,
    /// SRV owner → (port, target), weights given once all are known.
    srv: BTreeMap<String, BTreeSet<(u16, String)>>,
}

impl Builder {
    fn add(&mut self, owner: &str, data: RData) {
        let records = self.names.entry(owner.to_owned()).or_default();
        if !records.contains(&data) {
            records.push(data);
        }
    }

    fn add_name_target(&mut self, owner: &str, target: &str, make: fn(Name) -> RData) {
        if let Some(target) = fqdn(target) {
            self.add(owner, make(target));
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
    zone_name: Name,
    settings: ZoneSettings,
    b: Builder,
    pod_ips: HashSet<(String, IpAddr)>,
}

impl IndexBuilder {
    pub fn new(settings: &ZoneSettings) -> IndexBuilder {
        let zone = settings.zone.trim_end_matches('.').to_ascii_lowercase();
        let zone_name = fqdn(&zone).unwrap_or_else(Name::root);
        IndexBuilder {
            zone,
            zone_name,
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
                    b.add_name_target(&base, ext.trim_end_matches('.'), |n| RData::CNAME(CNAME(n)));
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
                    b.add(&base, address(ip));
                    b.add_name_target(&reverse_key(ip), &base, |n| RData::PTR(PTR(n)));
                }
                for port in spec.ports.iter().flatten() {
                    let (Some(port_name), Ok(number)) =
                        (port.name.as_deref(), u16::try_from(port.port))
                    else {
                        continue;
                    };
                    let owner =
                        format!("{}.{base}", srv_prefix(port_name, port.protocol.as_deref()));
                    b.srv
                        .entry(owner)
                        .or_default()
                        .insert((number, base.clone()));
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
                        b.add(&base, address(ip));
                        b.add(&host, address(ip));
                        b.add_name_target(&reverse_key(ip), &host, |n| RData::PTR(PTR(n)));
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
                            b.srv
                                .entry(owner)
                                .or_default()
                                .insert((number, host.clone()));
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
                    pod_ips.insert((ns.to_ascii_lowercase(), ip));
                }
            }
        }
    }

    /// The index of everything added.
    pub fn finish(self) -> Index {
        let IndexBuilder {
            zone,
            zone_name,
            settings,
            mut b,
            pod_ips,
        } = self;
        for (owner, targets) in std::mem::take(&mut b.srv) {
            let weight = u16::try_from(100 / targets.len().max(1))
                .unwrap_or(1)
                .max(1);
            for (port, target) in targets {
                if let Some(target) = fqdn(&target) {
                    b.add(&owner, RData::SRV(SRV::new(0, weight, port, target)));
                }
            }
        }

        b.add(
            &format!("dns-version.{zone}"),
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_owned()])),
        );
        if let Some(ns_name) = fqdn(&format!("ns.dns.{zone}")) {
            b.add(&zone, RData::NS(NS(ns_name)));
        }

        let mut empty_non_terminals = HashSet::new();
        for owner in b.names.keys() {
            let mut rest = owner.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if !b.names.contains_key(parent) {
                    empty_non_terminals.insert(parent.to_owned());
                }
                rest = parent;
            }
        }
        for name in ["svc", "pod"] {
            empty_non_terminals.insert(format!("{name}.{zone}"));
        }
        for (ns, _) in &pod_ips {
            empty_non_terminals.insert(format!("{ns}.pod.{zone}"));
        }

        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs() % u64::from(u32::MAX)).unwrap_or(1))
            .unwrap_or(1);

        Index {
            zone,
            zone_name,
            ttl: settings.ttl,
            pods: settings.pods,
            // Exact capacities: most names own one record, and a `Vec` grown
            // by one push holds room for four.
            names: b
                .names
                .into_iter()
                .map(|(owner, mut data)| {
                    data.shrink_to_fit();
                    (owner, data)
                })
                .collect(),
            empty_non_terminals,
            pod_ips,
            serial,
        }
    }
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

    /// Every record the index holds, as (lower-case owner name without the
    /// trailing dot, data), in no particular order: what a zone file of the
    /// cluster would list. Pod records (synthesized per question) and the
    /// SOA ([`Index::soa`]) are not among them.
    pub fn records(&self) -> impl Iterator<Item = (&str, &RData)> + '_ {
        self.names
            .iter()
            .flat_map(|(owner, data)| data.iter().map(move |d| (owner.as_str(), d)))
    }

    /// Number of owner names holding records.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The zone's SOA record, as put in the authority section.
    pub fn soa(&self) -> Record {
        let name = |s: &str| fqdn(&format!("{s}.{}", self.zone)).unwrap_or_else(Name::root);
        Record::from_rdata(
            self.zone_name.clone(),
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

    /// The authoritative answer to `query`, or [`Answer::NotOurs`] for names
    /// outside the zone and reverse names the cluster does not own.
    pub fn answer(&self, query: &Query) -> Answer {
        let key = key_of(&query.name);
        // Reverse names are owned only where the cluster has a PTR (kubeadm's
        // `fallthrough in-addr.arpa ip6.arpa`); every other one is forwarded.
        let owned_reverse = (key.ends_with("in-addr.arpa") || key.ends_with("ip6.arpa"))
            && self.names.contains_key(&key);
        if !self.in_zone(&key) && !owned_reverse {
            return Answer::NotOurs;
        }
        if query.query_class != DNSClass::IN {
            return self.negative(ResponseCode::Refused);
        }
        if let Some(data) = self.names.get(&key) {
            return self.positive(query, data);
        }
        if let Some(answer) = self.pod_answer(query, &key) {
            return answer;
        }
        if self.empty_non_terminals.contains(&key) || self.is_insecure_pod_namespace(&key) {
            return self.negative(ResponseCode::NoError);
        }
        self.negative(ResponseCode::NXDomain)
    }

    fn is_insecure_pod_namespace(&self, key: &str) -> bool {
        self.pods == PodMode::Insecure
            && key
                .strip_suffix(&format!(".pod.{}", self.zone))
                .is_some_and(|ns| !ns.is_empty() && !ns.contains('.'))
    }

    fn pod_answer(&self, query: &Query, key: &str) -> Option<Answer> {
        let head = key.strip_suffix(&format!(".pod.{}", self.zone))?;
        let (label, ns) = head.split_once('.')?;
        if ns.contains('.') || self.pods == PodMode::Disabled {
            return None;
        }
        let ip = undashed(label)?;
        if self.pods == PodMode::Verified && !self.pod_ips.contains(&(ns.to_owned(), ip)) {
            return None;
        }
        Some(self.positive(query, &[address(ip)]))
    }

    fn positive(&self, query: &Query, data: &[RData]) -> Answer {
        let qtype = query.query_type;
        let record = |d: &RData| Record::from_rdata(query.name.clone(), self.ttl, d.clone());
        let cname: Vec<Record> = data
            .iter()
            .filter(|d| matches!(d, RData::CNAME(_)))
            .map(record)
            .collect();
        let answers: Vec<Record> = if !cname.is_empty() && qtype != RecordType::CNAME {
            cname
        } else {
            data.iter()
                .filter(|d| qtype == RecordType::ANY || d.record_type() == qtype)
                .map(record)
                .collect()
        };
        let answers = if qtype == RecordType::SOA && key_of(&query.name) == self.zone {
            vec![self.soa()]
        } else {
            answers
        };
        if answers.is_empty() {
            return self.negative(ResponseCode::NoError);
        }
        let mut additionals = Vec::new();
        for a in &answers {
            if let RData::SRV(srv) = &a.data {
                let target = key_of(&srv.target);
                for d in self.names.get(&target).into_iter().flatten() {
                    if matches!(d, RData::A(_) | RData::AAAA(_)) {
                        additionals.push(Record::from_rdata(
                            srv.target.clone(),
                            self.ttl,
                            d.clone(),
                        ));
                    }
                }
            }
        }
        Answer::Authoritative {
            rcode: ResponseCode::NoError,
            answers,
            authority: Vec::new(),
            additionals,
        }
    }

    fn negative(&self, rcode: ResponseCode) -> Answer {
        let authority = if rcode == ResponseCode::Refused {
            Vec::new()
        } else {
            vec![self.soa()]
        };
        Answer::Authoritative {
            rcode,
            answers: Vec::new(),
            authority,
            additionals: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
