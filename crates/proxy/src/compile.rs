//! The pure heart of the proxy: Service ports and this node's settings in,
//! the whole desired nftables ruleset for one address family out.
//!
//! Layout (`docs/proxy.md` shows it with `nft list table ip weft`):
//!
//! - `nat-prerouting` and `nat-output` jump to `services`, which dispatches
//!   with ONE map lookup per kind of frontend, so cost does not grow with
//!   the number of Services: a ClusterIP balanced through the shared maps
//!   (below) is found in `@endpoint-counts`; every other frontend by the
//!   verdict map `@service-ips` on `ip daddr . meta l4proto . th dport`
//!   (ClusterIPs, external IPs, load-balancer IPs) and, for packets to a
//!   local address, `@service-nodeports` on `meta l4proto . th dport`.
//! - A ClusterIP-only port without session affinity and with 1 to
//!   [`BALANCE_BY_RULES_UP_TO`] endpoints has no chain and no rule of its
//!   own: `@endpoint-counts` maps its ClusterIP . protocol . port to its
//!   number of endpoints N, `@endpoints` maps ClusterIP . protocol . port .
//!   i to endpoint i, and the shared chain `balance` (masquerade check, then
//!   one rule per N: `numgen random mod N`, look the endpoint up, `dnat`)
//!   picks one. Adding, removing or replacing an endpoint, or the Service
//!   itself, changes map elements only, which the kernel commits without
//!   revalidating the table (adding any rule with a NAT or jump statement
//!   makes it revalidate every chain the table can reach: ~100 ms at 30,000
//!   Services). Every rule of `balance` loads what it needs itself: the
//!   kernel refuses a rule that reads a register it did not write.
//! - Every other Service port has a chain `svc-<ns>/<name>/<proto>/<port>`
//!   that marks traffic from outside the cluster CIDR for masquerade and
//!   picks an endpoint. Up to [`BALANCE_BY_RULES_UP_TO`] endpoints, one rule
//!   per endpoint: `numgen random mod (N-i) == 0` then `dnat` to endpoint
//!   `i` (the last one unconditionally), kube-proxy's probabilities without
//!   its chain per endpoint. More endpoints: `numgen random mod N` looked up
//!   in the map `eps-…` (index → address . port), then `dnat`. Not a set
//!   per Service for all of them: the kernel finds a set by name by walking
//!   the table's list of sets, so a set per Service made loading 30,000
//!   Services quadratic (tens of seconds); and a map shared by a rule per
//!   Service is no better (each rule binds the map, and adding an element
//!   walks every binding) — the shared maps above are bound by the few
//!   rules of `balance` only. Session affinity uses kube-proxy's shape: a
//!   chain and a timed set of client addresses per endpoint.
//! - External traffic (NodePort, external and LB IPs) enters through
//!   `ext-…`, which masquerades for `externalTrafficPolicy: Cluster` and uses
//!   only local endpoints for `Local` (client address preserved).
//! - Services without usable endpoints are in `@no-endpoint-services` /
//!   `@no-endpoint-nodeports`, checked by filter chains for new connections:
//!   the client is rejected at once. Unknown ports of a ClusterIP are
//!   rejected through `@cluster-ips`.
//! - `nat-postrouting` masquerades marked packets and hairpin connections (a
//!   pod reaching itself through its Service: `ip saddr . ip daddr` in
//!   `@hairpin`), with `fully-random` port allocation.
//!
//! [`compile`] builds the whole ruleset at once; [`crate::incremental`]
//! builds the same one per Service port with the same [`compile_port`].

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use weft_nft::expr::{Expr, NatFlags, NumgenKind, Reg, RejectKind, Rule, matches};
use weft_nft::{Chain, ChainType, Element, Family, Hook, KeyType, Set, TableRef, Value, Verdict};

use crate::service::{Endpoint, Protocol, ServicePort};

/// The mark bit that asks `nat-postrouting` to masquerade (kube-proxy's).
pub const MASQUERADE_MARK: u32 = 0x4000;
/// Name of the proxy's tables (`ip weft`, `ip6 weft`).
pub const TABLE_NAME: &str = "weft";

/// Node-level settings of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// This node's name (for local endpoints).
    pub node_name: String,
    /// Pod CIDRs of the cluster: traffic to a ClusterIP from outside them is
    /// masqueraded so replies come back through this node.
    pub cluster_cidrs: Vec<IpNet>,
}

/// The desired content of one table: what [`crate::sync`] makes the kernel hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// `ip weft` or `ip6 weft`.
    pub table: TableRef,
    /// Every chain by name.
    pub chains: BTreeMap<String, Chain>,
    /// Rules of each chain, in order.
    pub rules: BTreeMap<String, Vec<Rule>>,
    /// Every set and map by name.
    pub sets: BTreeMap<String, Set>,
    /// Elements of each set or map, each at most once (the syncer's diff
    /// relies on it).
    pub elements: BTreeMap<String, Vec<Element>>,
}

impl Ruleset {
    pub(crate) fn new(family: Family) -> Ruleset {
        Ruleset {
            table: TableRef::new(family, TABLE_NAME),
            chains: BTreeMap::new(),
            rules: BTreeMap::new(),
            sets: BTreeMap::new(),
            elements: BTreeMap::new(),
        }
    }

    fn chain(&mut self, chain: Chain) {
        self.rules.entry(chain.name.clone()).or_default();
        self.chains.insert(chain.name.clone(), chain);
    }

    fn rule(&mut self, chain: &str, exprs: Vec<Expr>, comment: Option<String>) {
        let mut rule = Rule::new(chain).extend(exprs);
        if let Some(comment) = comment {
            rule = rule.comment(truncate_comment(comment));
        }
        self.rules.entry(chain.to_owned()).or_default().push(rule);
    }

    fn set(&mut self, set: Set) {
        self.elements.entry(set.name.clone()).or_default();
        self.sets.insert(set.name.clone(), set);
    }

    /// Appends an element; duplicates are removed once, at the end of
    /// [`compile`] (a linear `contains` here made compiling 30,000 Services
    /// quadratic: `@hairpin` alone has an element per endpoint).
    fn element(&mut self, set: &str, element: Element) {
        match self.elements.get_mut(set) {
            Some(elements) => elements.push(element),
            None => {
                self.elements.insert(set.to_owned(), vec![element]);
            }
        }
    }

    /// Drops repeated elements of every set, keeping each first occurrence
    /// in place.
    pub(crate) fn dedup_elements(&mut self) {
        for elements in self.elements.values_mut() {
            if elements.len() <= 16 {
                // A Service port's own few elements: comparing is cheaper
                // than hashing.
                let mut index = 0;
                while index < elements.len() {
                    if elements[..index].contains(&elements[index]) {
                        elements.remove(index);
                    } else {
                        index += 1;
                    }
                }
                continue;
            }
            let keep: Vec<bool> = {
                let mut seen = HashSet::with_capacity(elements.len());
                elements
                    .iter()
                    .map(|element| seen.insert(element))
                    .collect()
            };
            if keep.iter().all(|kept| *kept) {
                continue;
            }
            let mut index = 0;
            elements.retain(|_| {
                let kept = keep.get(index).copied().unwrap_or(true);
                index += 1;
                kept
            });
        }
    }

    /// Number of map and set elements (a metric).
    pub fn element_count(&self) -> usize {
        self.elements.values().map(Vec::len).sum()
    }

    /// Number of rules (a metric).
    pub fn rule_count(&self) -> usize {
        self.rules.values().map(Vec::len).sum()
    }
}

fn truncate_comment(mut comment: String) -> String {
    if comment.len() > 120 {
        let mut end = 120;
        while !comment.is_char_boundary(end) {
            end -= 1;
        }
        comment.truncate(end);
    }
    comment
}

/// Family-specific expression building.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fam(pub(crate) Family);

impl Fam {
    fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::Ip
        } else {
            Family::Ip6
        }
    }

    fn addr_type(self) -> KeyType {
        match self.0 {
            Family::Ip6 => KeyType::Ipv6Addr,
            _ => KeyType::Ipv4Addr,
        }
    }

    /// Registers an address occupies.
    fn addr_regs(self) -> u8 {
        match self.0 {
            Family::Ip6 => 4,
            _ => 1,
        }
    }

    fn daddr(self, reg: Reg) -> Expr {
        match self.0 {
            Family::Ip6 => Expr::ip6_daddr(reg),
            _ => Expr::ip_daddr(reg),
        }
    }

    fn saddr(self, reg: Reg) -> Expr {
        match self.0 {
            Family::Ip6 => Expr::ip6_saddr(reg),
            _ => Expr::ip_saddr(reg),
        }
    }

    fn saddr_not_in(self, net: IpNet, reg: Reg) -> Option<Vec<Expr>> {
        match (self.0, net) {
            (Family::Ip, IpNet::V4(net)) => Some(matches::ip_saddr_in(net, true, reg)),
            (Family::Ip6, IpNet::V6(net)) => Some(matches::ip6_saddr_in(net, true, reg)),
            _ => None,
        }
    }

    fn saddr_in(self, net: IpNet, reg: Reg) -> Option<Vec<Expr>> {
        match (self.0, net) {
            (Family::Ip, IpNet::V4(net)) => Some(matches::ip_saddr_in(net, false, reg)),
            (Family::Ip6, IpNet::V6(net)) => Some(matches::ip6_saddr_in(net, false, reg)),
            _ => None,
        }
    }

    fn dnat(self, addr: Reg, port: Reg) -> Expr {
        match self.0 {
            Family::Ip6 => Expr::dnat_ipv6(addr, Some(port)),
            _ => Expr::dnat_ipv4(addr, Some(port)),
        }
    }

    /// `daddr . l4proto . dport` into consecutive registers from R0.
    fn load_service_key(self) -> Vec<Expr> {
        let regs = self.addr_regs();
        vec![
            self.daddr(Reg::R0),
            Expr::l4proto(Reg::R0.offset(regs)),
            Expr::th_dport(Reg::R0.offset(regs + 1)),
        ]
    }
}

fn address_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    }
}

fn value(ip: IpAddr) -> Value {
    match ip {
        IpAddr::V4(ip) => Value::Ipv4(ip),
        IpAddr::V6(ip) => Value::Ipv6(ip),
    }
}

pub(crate) const SERVICE_IPS: &str = "service-ips";
/// Service ports with at most this many endpoints pick one with a rule per
/// endpoint (or, for a ClusterIP-only port, through the shared maps
/// `@endpoint-counts` and `@endpoints`); larger ones look the pick up in a
/// map of their own.
pub const BALANCE_BY_RULES_UP_TO: usize = 16;
/// ClusterIP . protocol . port → number of endpoints, for ports balanced
/// by the shared maps.
pub const ENDPOINT_COUNTS: &str = "endpoint-counts";
/// ClusterIP . protocol . port . index → endpoint address . port.
pub const ENDPOINTS: &str = "endpoints";
/// The shared chain that balances the ClusterIPs of [`ENDPOINT_COUNTS`].
pub const BALANCE_CHAIN: &str = "balance";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const FIREWALL_IPS: &str = "firewall-ips";
pub(crate) const CLUSTER_IPS: &str = "cluster-ips";
/// Every endpoint of the family, as (address . address): masqueraded when a
/// pod reaches itself through its Service.
pub const HAIRPIN: &str = "hairpin";
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const REJECT_CHAIN: &str = "reject-chain";

/// Compiles the ruleset of `family` (`Ip` or `Ip6`) from every Service port.
/// Frontends and endpoints of the other family are left to its own table.
pub fn compile(family: Family, ports: &[ServicePort], config: &ProxyConfig) -> Ruleset {
    let fam = Fam(family);
    let mut rs = Ruleset::new(family);
    skeleton(&mut rs, fam, config);
    for port in ports {
        compile_port(&mut rs, fam, port, config);
    }
    rs.dedup_elements();
    rs
}

/// The chains, sets and rules every node has, Services or not.
pub(crate) fn skeleton(rs: &mut Ruleset, fam: Fam, config: &ProxyConfig) {
    let addr = fam.addr_type();
    let service_key = vec![addr, KeyType::InetProto, KeyType::InetService];
    let nodeport_key = vec![KeyType::InetProto, KeyType::InetService];
    rs.set(Set::map(
        ENDPOINT_COUNTS,
        service_key.clone(),
        vec![KeyType::Mark],
    ));
    rs.set(Set::map(
        ENDPOINTS,
        // The index as a `mark`, not an `integer`: both are 32 bits in host
        // order, but nft cannot list a concatenation with an `integer` in it
        // (it does not know the field's length and aborts).
        vec![
            addr,
            KeyType::InetProto,
            KeyType::InetService,
            KeyType::Mark,
        ],
        vec![addr, KeyType::InetService],
    ));
    rs.set(Set::verdict_map(SERVICE_IPS, service_key.clone()));
    rs.set(Set::verdict_map(SERVICE_NODEPORTS, nodeport_key.clone()));
    rs.set(Set::verdict_map(NO_ENDPOINT_SERVICES, service_key.clone()));
    rs.set(Set::verdict_map(NO_ENDPOINT_NODEPORTS, nodeport_key));
    rs.set(Set::verdict_map(FIREWALL_IPS, service_key));
    rs.set(Set::new(CLUSTER_IPS, vec![addr]));
    rs.set(Set::new(HAIRPIN, vec![addr, addr]));

    rs.chain(Chain::base(
        "nat-prerouting",
        ChainType::Nat,
        Hook::Prerouting,
        -100,
    ));
    rs.chain(Chain::base(
        "nat-output",
        ChainType::Nat,
        Hook::Output,
        -100,
    ));
    rs.chain(Chain::base(
        "nat-postrouting",
        ChainType::Nat,
        Hook::Postrouting,
        100,
    ));
    rs.chain(Chain::base(
        "filter-prerouting",
        ChainType::Filter,
        Hook::Prerouting,
        -110,
    ));
    rs.chain(Chain::base(
        "filter-input",
        ChainType::Filter,
        Hook::Input,
        0,
    ));
    rs.chain(Chain::base(
        "filter-forward",
        ChainType::Filter,
        Hook::Forward,
        0,
    ));
    rs.chain(Chain::base(
        "filter-output",
        ChainType::Filter,
        Hook::Output,
        0,
    ));
    for regular in [
        "services",
        "masquerading",
        MARK_FOR_MASQUERADE,
        REJECT_CHAIN,
        "endpoints-check",
        "cluster-ips-check",
        "firewall-check",
        BALANCE_CHAIN,
    ] {
        rs.chain(Chain::regular(regular));
    }

    let regs = fam.addr_regs();
    rs.rule("nat-prerouting", vec![Expr::jump("services")], None);
    rs.rule("nat-output", vec![Expr::jump("services")], None);
    rs.rule("nat-postrouting", vec![Expr::jump("masquerading")], None);

    // ClusterIPs balanced through the shared maps first (one lookup), then
    // every other frontend through the verdict map (one lookup).
    let mut balanced = fam.load_service_key();
    balanced.extend([
        Expr::in_set(ENDPOINT_COUNTS, Reg::R0),
        Expr::goto(BALANCE_CHAIN),
    ]);
    rs.rule("services", balanced, None);
    let mut dispatch = fam.load_service_key();
    dispatch.push(Expr::vmap(SERVICE_IPS, Reg::R0));
    rs.rule("services", dispatch, None);
    balance_chain(rs, fam, config);
    let mut nodeports = matches::daddr_is_local(Reg::R0);
    if fam.0 == Family::Ip {
        // NodePorts answer on the node's addresses, not on 127.0.0.0/8.
        nodeports.extend(matches::ip_daddr_in(
            ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(127, 0, 0, 0), 8),
            true,
            Reg::R0,
        ));
    }
    nodeports.extend([
        Expr::l4proto(Reg::R0),
        Expr::th_dport(Reg::R1),
        Expr::vmap(SERVICE_NODEPORTS, Reg::R0),
    ]);
    rs.rule("services", nodeports, None);

    let mut marked = matches::mark_bits(MASQUERADE_MARK, Reg::R0);
    marked.push(Expr::Masquerade(NatFlags::FULLY_RANDOM));
    rs.rule("masquerading", marked, Some("marked for masquerade".into()));
    let mut hairpin = matches::ct_status(weft_nft::expr::ct_status::DNAT, Reg::R0);
    hairpin.extend([
        fam.saddr(Reg::R0),
        fam.daddr(Reg::R0.offset(regs)),
        Expr::in_set(HAIRPIN, Reg::R0),
        Expr::Masquerade(NatFlags::FULLY_RANDOM),
    ]);
    rs.rule(
        "masquerading",
        hairpin,
        Some("pod reaching itself through its Service".into()),
    );
    rs.rule(
        MARK_FOR_MASQUERADE,
        matches::set_mark_bits(MASQUERADE_MARK, Reg::R0),
        None,
    );
    // TCP is refused with a reset, everything else with port unreachable.
    // An ICMP error that reaches a connecting socket while its owner holds
    // the socket lock (a client on this node: the whole path runs in the
    // softirq of the client's own `connect()`) is only a soft error for
    // TCP, and an IPv6 client then waited for its SYN retransmission (1 s)
    // to be refused; a reset is queued to the socket's backlog instead and
    // refuses at once, in both families.
    rs.rule(
        REJECT_CHAIN,
        vec![
            Expr::l4proto(Reg::R0),
            Expr::cmp_eq(Reg::R0, [Protocol::Tcp.number()]),
            Expr::Reject(RejectKind::TcpReset),
        ],
        Some("TCP: reset".into()),
    );
    rs.rule(
        REJECT_CHAIN,
        vec![Expr::Reject(RejectKind::PortUnreachable)],
        None,
    );

    let mut no_endpoints = fam.load_service_key();
    no_endpoints.push(Expr::vmap(NO_ENDPOINT_SERVICES, Reg::R0));
    rs.rule("endpoints-check", no_endpoints, None);
    let mut no_endpoint_nodeports = matches::daddr_is_local(Reg::R0);
    no_endpoint_nodeports.extend([
        Expr::l4proto(Reg::R0),
        Expr::th_dport(Reg::R1),
        Expr::vmap(NO_ENDPOINT_NODEPORTS, Reg::R0),
    ]);
    rs.rule("endpoints-check", no_endpoint_nodeports, None);
    rs.rule(
        "cluster-ips-check",
        vec![
            fam.daddr(Reg::R0),
            Expr::in_set(CLUSTER_IPS, Reg::R0),
            Expr::goto(REJECT_CHAIN),
        ],
        Some("reject traffic to unknown ports of ClusterIPs".into()),
    );
    let mut firewall = fam.load_service_key();
    firewall.push(Expr::vmap(FIREWALL_IPS, Reg::R0));
    rs.rule("firewall-check", firewall, None);

    let new_connection = || matches::ct_state(weft_nft::expr::ct_state::NEW, Reg::R0);
    let with_jump = |target: &str| {
        let mut exprs = new_connection();
        exprs.push(Expr::jump(target));
        exprs
    };
    rs.rule("filter-prerouting", with_jump("firewall-check"), None);
    for chain in ["filter-input", "filter-forward", "filter-output"] {
        rs.rule(chain, with_jump("endpoints-check"), None);
    }
    for chain in ["filter-forward", "filter-output"] {
        rs.rule(chain, with_jump("cluster-ips-check"), None);
    }
}

fn port_id(port: &ServicePort) -> String {
    let name = &port.name;
    let port_label = if name.port.is_empty() {
        port.port.to_string()
    } else {
        name.port.clone()
    };
    format!(
        "{}/{}/{}/{}",
        name.namespace, name.name, name.protocol, port_label
    )
}

/// The shared chain that balances the ClusterIPs of `@endpoint-counts`:
/// the masquerade check of the Service chains, then one rule per endpoint
/// count N that draws `numgen random mod N` and looks the endpoint up in
/// `@endpoints` by ClusterIP . protocol . port . index. Every rule loads what
/// it needs itself (the kernel refuses a rule that reads a register it did
/// not write). These rules never change with the Services: endpoints come
/// and go as map elements, which the kernel takes without revalidating the
/// table (adding a rule with a NAT or jump statement makes it revalidate
/// every chain, ~100 ms at 30,000 Services).
fn balance_chain(rs: &mut Ruleset, fam: Fam, config: &ProxyConfig) {
    for cidr in &config.cluster_cidrs {
        if let Some(mut exprs) = fam.saddr_not_in(*cidr, Reg::R0) {
            exprs.push(Expr::jump(MARK_FOR_MASQUERADE));
            rs.rule(
                BALANCE_CHAIN,
                exprs,
                Some("from outside the cluster CIDR".into()),
            );
        }
    }
    let regs = fam.addr_regs();
    let index = Reg::R0.offset(regs + 2);
    let found = Reg::R0.offset(regs + 3);
    for count in 1..=BALANCE_BY_RULES_UP_TO {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let draw = if count == 1 {
            Expr::Immediate {
                dreg: index,
                data: 0u32.to_ne_bytes().to_vec(),
            }
        } else {
            Expr::Numgen {
                dreg: index,
                modulus: count,
                kind: NumgenKind::Random,
                offset: 0,
            }
        };
        let mut exprs = fam.load_service_key();
        exprs.extend([
            Expr::map(ENDPOINT_COUNTS, Reg::R0, found),
            Expr::cmp_eq(found, count.to_ne_bytes()),
            draw,
            Expr::map(ENDPOINTS, Reg::R0, found),
            fam.dnat(found, found.offset(regs)),
        ]);
        let plural = if count == 1 { "" } else { "s" };
        rs.rule(
            BALANCE_CHAIN,
            exprs,
            Some(format!("{count} endpoint{plural}")),
        );
    }
}

/// Compiles one Service port into `rs`.
pub(crate) fn compile_port<'a>(
    rs: &mut Ruleset,
    fam: Fam,
    port: &'a ServicePort,
    config: &ProxyConfig,
) {
    let family = fam.0;
    let in_family = |ip: &&IpAddr| Fam::of(**ip) == family;
    let cluster_ips: Vec<IpAddr> = port.cluster_ips.iter().filter(in_family).copied().collect();
    let external_ips: Vec<IpAddr> = port
        .external_ips
        .iter()
        .chain(&port.load_balancer_ips)
        .filter(in_family)
        .copied()
        .collect();
    let family_of_service = !cluster_ips.is_empty() || !external_ips.is_empty();
    if !family_of_service {
        return;
    }
    let proto = Value::Proto(port.name.protocol.number());
    let service_port = Value::Port(port.port);
    let node = config.node_name.as_str();
    let keep = |mut endpoints: Vec<&'a Endpoint>| -> Vec<&'a Endpoint> {
        endpoints.retain(|endpoint| Fam::of(endpoint.ip) == family);
        endpoints
    };
    let internal = keep(port.usable_endpoints(port.internal_local.then_some(node)));

    for endpoint in port.endpoints.iter().filter(|e| Fam::of(e.ip) == family) {
        rs.element(
            HAIRPIN,
            Element::key([value(endpoint.ip), value(endpoint.ip)]),
        );
    }

    // A ClusterIP-only port without affinity: its endpoints are elements
    // of the shared maps the `balance` chain draws from; no chain, no rule.
    let by_maps = !port.has_external()
        && port.affinity_timeout.is_none()
        && (1..=BALANCE_BY_RULES_UP_TO).contains(&internal.len());
    if by_maps {
        let count = u32::try_from(internal.len()).unwrap_or(u32::MAX);
        for ip in &cluster_ips {
            rs.element(CLUSTER_IPS, Element::key([value(*ip)]));
            rs.element(
                ENDPOINT_COUNTS,
                Element::value([value(*ip), proto, service_port], [Value::Mark(count)]),
            );
            for (index, endpoint) in (0u32..).zip(&internal) {
                rs.element(
                    ENDPOINTS,
                    Element::value(
                        [value(*ip), proto, service_port, Value::Mark(index)],
                        [value(endpoint.ip), Value::Port(endpoint.port)],
                    ),
                );
            }
        }
        return;
    }
    let id = port_id(port);
    let comment = Some(port.name.to_string());
    let external = keep(port.usable_endpoints(port.external_local.then_some(node)));

    // Internal traffic: ClusterIPs.
    let svc_chain = format!("svc-{id}");
    if !internal.is_empty() {
        rs.chain(Chain::regular(&svc_chain));
        for cidr in &config.cluster_cidrs {
            if let Some(mut exprs) = fam.saddr_not_in(*cidr, Reg::R0) {
                exprs.push(Expr::jump(MARK_FOR_MASQUERADE));
                rs.rule(
                    &svc_chain,
                    exprs,
                    Some("from outside the cluster CIDR".into()),
                );
            }
        }
        balance(
            rs,
            fam,
            &svc_chain,
            &format!("eps-{id}"),
            &internal,
            port.affinity_timeout,
            &comment,
        );
    }
    for ip in &cluster_ips {
        rs.element(CLUSTER_IPS, Element::key([value(*ip)]));
        let key = [value(*ip), proto, service_port];
        if internal.is_empty() {
            rs.element(
                NO_ENDPOINT_SERVICES,
                Element::verdict(key, Verdict::Goto(REJECT_CHAIN.into())),
            );
        } else {
            rs.element(
                SERVICE_IPS,
                Element::verdict(key, Verdict::Goto(svc_chain.clone())),
            );
        }
    }

    // External traffic: NodePort, external IPs, load-balancer IPs.
    if !port.has_external() {
        return;
    }
    let ext_chain = format!("ext-{id}");
    let no_external = if port.external_local {
        // Let the load balancer's health check move traffic elsewhere.
        Verdict::Drop
    } else {
        Verdict::Goto(REJECT_CHAIN.into())
    };
    // With the Local policy, pods and this node itself reaching an external
    // frontend are not external clients: as kube-proxy does, they go to
    // every endpoint of the cluster ("short-circuit"), local or not, even
    // where this node has none; only the rest is held to local endpoints.
    let cluster_wide = if port.external_local {
        keep(port.usable_endpoints(None))
    } else {
        Vec::new()
    };
    let enters_ext = !external.is_empty() || !cluster_wide.is_empty();
    if enters_ext {
        rs.chain(Chain::regular(&ext_chain));
    }
    if !cluster_wide.is_empty() {
        // The service chain balances over the same endpoints (and
        // masquerades sources outside the cluster CIDR); else a chain of
        // their own.
        let target = if internal == cluster_wide {
            svc_chain.clone()
        } else {
            let chain = format!("svc-{id}__cluster");
            rs.chain(Chain::regular(&chain));
            balance(
                rs,
                fam,
                &chain,
                &format!("eps-{id}__cluster"),
                &cluster_wide,
                port.affinity_timeout,
                &comment,
            );
            chain
        };
        for cidr in &config.cluster_cidrs {
            if let Some(mut exprs) = fam.saddr_in(*cidr, Reg::R0) {
                exprs.push(Expr::goto(target.clone()));
                rs.rule(&ext_chain, exprs, Some("short-circuit pod traffic".into()));
            }
        }
        let mut local = matches::saddr_is_local(Reg::R0);
        local.push(Expr::jump(MARK_FOR_MASQUERADE));
        rs.rule(&ext_chain, local, Some("masquerade local traffic".into()));
        let mut local = matches::saddr_is_local(Reg::R0);
        local.push(Expr::goto(target));
        rs.rule(
            &ext_chain,
            local,
            Some("short-circuit local traffic".into()),
        );
    }
    if !external.is_empty() {
        if !port.external_local {
            rs.rule(
                &ext_chain,
                vec![Expr::jump(MARK_FOR_MASQUERADE)],
                Some("external traffic, cluster policy".into()),
            );
        }
        // The service chain masquerades sources outside the cluster CIDR:
        // right for Cluster policy (marked above anyway), wrong for Local.
        if external == internal && !internal.is_empty() && !port.external_local {
            rs.rule(&ext_chain, vec![Expr::goto(svc_chain.clone())], None);
        } else {
            balance(
                rs,
                fam,
                &ext_chain,
                &format!("eps-{id}__ext"),
                &external,
                port.affinity_timeout,
                &comment,
            );
        }
    }
    // What the ext chain does not send on (no local endpoint: external
    // clients) is dropped or rejected after DNAT by the no-endpoint maps.
    let ext_verdict = enters_ext.then(|| Verdict::Goto(ext_chain.clone()));
    let no_endpoint = external.is_empty().then_some(&no_external);
    let frontends = external_ips
        .iter()
        .map(|ip| {
            let key: &[Value] = &[value(*ip), proto, service_port];
            (SERVICE_IPS, NO_ENDPOINT_SERVICES, key.to_vec())
        })
        .chain(port.node_port.map(|node_port| {
            let key: &[Value] = &[proto, Value::Port(node_port)];
            (SERVICE_NODEPORTS, NO_ENDPOINT_NODEPORTS, key.to_vec())
        }));
    for (map, no_endpoint_map, key) in frontends {
        if let Some(verdict) = &ext_verdict {
            rs.element(map, Element::verdict(key.clone(), verdict.clone()));
        }
        if let Some(verdict) = no_endpoint {
            rs.element(no_endpoint_map, Element::verdict(key, verdict.clone()));
        }
    }
    firewall(
        rs,
        fam,
        port,
        &id,
        &port.load_balancer_ips,
        proto,
        service_port,
    );
}

/// `loadBalancerSourceRanges`: traffic to a load-balancer IP from outside
/// the ranges is dropped before DNAT.
#[allow(clippy::too_many_arguments)]
fn firewall(
    rs: &mut Ruleset,
    fam: Fam,
    port: &ServicePort,
    id: &str,
    lb_ips: &[IpAddr],
    proto: Value,
    service_port: Value,
) {
    let ranges: Vec<IpNet> = port
        .source_ranges
        .iter()
        .filter(|net| Fam::of(net.addr()) == fam.0)
        .copied()
        .collect();
    let lb_ips: Vec<&IpAddr> = lb_ips.iter().filter(|ip| Fam::of(**ip) == fam.0).collect();
    if port.source_ranges.is_empty() || lb_ips.is_empty() {
        return;
    }
    let chain = format!("fw-{id}");
    rs.chain(Chain::regular(&chain));
    for range in ranges {
        if let Some(mut exprs) = fam.saddr_in(range, Reg::R0) {
            exprs.push(Expr::ret());
            rs.rule(&chain, exprs, None);
        }
    }
    rs.rule(
        &chain,
        vec![Expr::drop()],
        Some("not in loadBalancerSourceRanges".into()),
    );
    for ip in lb_ips {
        rs.element(
            FIREWALL_IPS,
            Element::verdict(
                [value(*ip), proto, service_port],
                Verdict::Jump(chain.clone()),
            ),
        );
    }
}

/// Appends to `chain` the rules that pick one of `endpoints` at random and
/// DNAT to it; `map` names the objects it needs.
fn balance(
    rs: &mut Ruleset,
    fam: Fam,
    chain: &str,
    map: &str,
    endpoints: &[&Endpoint],
    affinity: Option<u32>,
    comment: &Option<String>,
) {
    let count = u32::try_from(endpoints.len()).unwrap_or(u32::MAX);
    let pick = |dreg: Reg| Expr::Numgen {
        dreg,
        modulus: count,
        kind: NumgenKind::Random,
        offset: 0,
    };
    match affinity {
        None if endpoints.len() <= BALANCE_BY_RULES_UP_TO => {
            // Rule i takes 1 in (N - i) of what reaches it: each endpoint
            // gets 1 in N. `dnat` ends the evaluation.
            let addr = Reg::R1;
            let port = addr.offset(fam.addr_regs());
            let count = endpoints.len();
            for (index, endpoint) in endpoints.iter().enumerate() {
                let mut exprs = Vec::with_capacity(5);
                let remaining = u32::try_from(count - index).unwrap_or(u32::MAX);
                if remaining > 1 {
                    exprs.push(Expr::Numgen {
                        dreg: Reg::R0,
                        modulus: remaining,
                        kind: NumgenKind::Random,
                        offset: 0,
                    });
                    exprs.push(Expr::cmp_eq(Reg::R0, 0u32.to_ne_bytes()));
                }
                exprs.extend([
                    Expr::Immediate {
                        dreg: addr,
                        data: address_bytes(endpoint.ip),
                    },
                    Expr::Immediate {
                        dreg: port,
                        data: endpoint.port.to_be_bytes().to_vec(),
                    },
                    fam.dnat(addr, port),
                ]);
                rs.rule(chain, exprs, comment.clone());
            }
        }
        None => {
            rs.set(Set::map(
                map,
                vec![KeyType::Integer],
                vec![fam.addr_type(), KeyType::InetService],
            ));
            for (index, endpoint) in endpoints.iter().enumerate() {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                rs.element(
                    map,
                    Element::value(
                        [Value::Integer(index)],
                        [value(endpoint.ip), Value::Port(endpoint.port)],
                    ),
                );
            }
            let addr = Reg::R1;
            let port = addr.offset(fam.addr_regs());
            rs.rule(
                chain,
                vec![
                    pick(Reg::R0),
                    Expr::map(map, Reg::R0, addr),
                    fam.dnat(addr, port),
                ],
                comment.clone(),
            );
        }
        Some(timeout) => {
            let vmap = format!("{map}-pick");
            rs.set(Set::verdict_map(&vmap, vec![KeyType::Integer]));
            for (index, endpoint) in endpoints.iter().enumerate() {
                let endpoint_chain = format!("{map}-{}-{}", endpoint.ip, endpoint.port);
                let clients = format!("{endpoint_chain}-clients");
                rs.set(
                    Set::new(&clients, vec![fam.addr_type()])
                        .with_timeout(Duration::from_secs(u64::from(timeout)))
                        .dynamic(),
                );
                rs.chain(Chain::regular(&endpoint_chain));
                let addr_data = address_bytes(endpoint.ip);
                let port_reg = Reg::R1.offset(fam.addr_regs());
                rs.rule(
                    &endpoint_chain,
                    vec![
                        fam.saddr(Reg::R0),
                        Expr::Dynset {
                            set: clients.clone(),
                            op: weft_nft::expr::DynsetOp::Update,
                            sreg_key: Reg::R0,
                            timeout: None,
                        },
                        Expr::Immediate {
                            dreg: Reg::R1,
                            data: addr_data,
                        },
                        Expr::Immediate {
                            dreg: port_reg,
                            data: endpoint.port.to_be_bytes().to_vec(),
                        },
                        fam.dnat(Reg::R1, port_reg),
                    ],
                    comment.clone(),
                );
                rs.rule(
                    chain,
                    vec![
                        fam.saddr(Reg::R0),
                        Expr::in_set(&clients, Reg::R0),
                        Expr::goto(&endpoint_chain),
                    ],
                    Some("session affinity".into()),
                );
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                rs.element(
                    &vmap,
                    Element::verdict([Value::Integer(index)], Verdict::Goto(endpoint_chain)),
                );
            }
            rs.rule(
                chain,
                vec![pick(Reg::R0), Expr::vmap(&vmap, Reg::R0)],
                comment.clone(),
            );
        }
    }
}

#[cfg(test)]
mod tests;
