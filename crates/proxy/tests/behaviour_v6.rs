//! The proxy with real IPv6 packets: a dual-stack node namespace with
//! backend pods on a bridge (fd00:10:244::/64 and 10.244.1.0/24), a client
//! pod, and an external host on the node's LAN (fd00:192:168:10::/64).
//! Services are compiled and synced into the node namespace's `ip6 weft`
//! table (and `ip weft` for the dual-stack Service) by one
//! [`ServiceSyncer`] per family, as the agent does.
//!
//! Every namespace has duplicate address detection off
//! (`accept_dad=0`, set before its links exist) so addresses are usable at
//! once, and forwarding is on in the node namespace only.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{UdpBackend, tcp, tcp_many, udp};
use weft_linux::{RouteSpec, VethSpec, sysctl};
use weft_nft::{Conntrack, Element, Family, Nft, TableRef, Value};
use weft_proxy::{Endpoint, PortName, Protocol, ProxyConfig, ServicePort, ServiceSyncer};
use weft_testhost::{TestNs, ip, net, require_root};

const CLUSTER_IP6: &str = "fd00:10:96::20";
const CLUSTER_IP4: &str = "10.96.0.20";
const GATEWAY6: &str = "fd00:10:244::1";
const GATEWAY4: &str = "10.244.1.1";
const NODE_IP6: &str = "fd00:192:168:10::11";
const EXTERNAL_IP6: &str = "fd00:192:168:10::100";
const NODE_IP4: &str = "192.168.10.11";
const EXTERNAL_IP4: &str = "192.168.10.100";
/// The client pod's index in the address plan (`…::99`, `….99`).
const CLIENT: usize = 89;

struct Lab {
    /// Declared first: dropped (stopped) before the namespaces go.
    _udp_backends: Vec<UdpBackend>,
    node: TestNs,
    pods: Vec<TestNs>,
    client: TestNs,
    external: TestNs,
}

fn pod_ip6(i: usize) -> IpAddr {
    ip(&format!("fd00:10:244::{}", 10 + i))
}

fn pod_ip4(i: usize) -> IpAddr {
    ip(&format!("10.244.1.{}", 10 + i))
}

/// A fresh namespace whose IPv6 addresses skip duplicate address detection
/// (set before any link but `lo` exists, so every later link inherits it).
fn host() -> TestNs {
    let host = TestNs::new();
    for key in [
        "net.ipv6.conf.all.accept_dad",
        "net.ipv6.conf.default.accept_dad",
    ] {
        sysctl::ensure(host.ns(), key, "0").unwrap();
    }
    host
}

/// A veth pair between `a` and `b`, both ends up, with an IPv6 and an IPv4
/// address each.
fn connect(a: &TestNs, a_if: &str, a_addrs: [&str; 2], b: &TestNs, b_if: &str, b_addrs: [&str; 2]) {
    a.netlink()
        .ensure_veth(&VethSpec {
            name: a_if.to_owned(),
            peer_name: b_if.to_owned(),
            peer_namespace: Some(b.ns().clone()),
            ..VethSpec::default()
        })
        .unwrap();
    for (host, link, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        let mut netlink = host.netlink();
        for addr in addrs {
            netlink.ensure_address(link, net(addr)).unwrap();
        }
        netlink.set_up(link).unwrap();
    }
}

/// Plugs `pod` into the node's bridge as port `veth<index>` (hairpin on),
/// with both families' addresses and default routes via the bridge.
fn attach_pod(node: &TestNs, pod: &TestNs, index: usize) {
    let port = format!("veth{index}");
    let mut netlink = node.netlink();
    netlink
        .ensure_veth(&VethSpec {
            name: port.clone(),
            peer_name: "eth0".into(),
            peer_namespace: Some(pod.ns().clone()),
            ..VethSpec::default()
        })
        .unwrap();
    netlink.set_master(&port, Some("cni0")).unwrap();
    netlink.set_hairpin(&port, true).unwrap();
    netlink.set_up(&port).unwrap();
    let mut pod_netlink = pod.netlink();
    pod_netlink
        .ensure_address("eth0", net(&format!("{}/64", pod_ip6(index))))
        .unwrap();
    pod_netlink
        .ensure_address("eth0", net(&format!("{}/24", pod_ip4(index))))
        .unwrap();
    pod_netlink.set_up("eth0").unwrap();
    for gateway in [GATEWAY6, GATEWAY4] {
        pod_netlink
            .ensure_route(&RouteSpec::default_via(ip(gateway)))
            .unwrap();
    }
}

/// A backend answering TCP 8080 with its name and TCP 8081 with the client
/// address it saw, on both families (`[::]` with `ipv6only=0`).
fn start_backend(pod: &TestNs, name: &str) {
    pod.spawn(Command::new("socat").args([
        "TCP6-LISTEN:8080,reuseaddr,fork,ipv6only=0".to_owned(),
        format!("SYSTEM:echo {name}"),
    ]));
    pod.spawn(Command::new("socat").args([
        "TCP6-LISTEN:8081,reuseaddr,fork,ipv6only=0",
        "SYSTEM:echo $SOCAT_PEERADDR",
    ]));
}

fn lab(backends: usize) -> Lab {
    let node = host();
    let mut netlink = node.netlink();
    netlink.ensure_bridge("cni0", None).unwrap();
    netlink
        .ensure_address("cni0", net(&format!("{GATEWAY6}/64")))
        .unwrap();
    netlink
        .ensure_address("cni0", net(&format!("{GATEWAY4}/24")))
        .unwrap();
    netlink.set_up("cni0").unwrap();
    // Forwarding in the node namespace only (pods and the external host
    // are plain hosts).
    sysctl::ensure(node.ns(), sysctl::IPV6_FORWARD, "1").unwrap();
    sysctl::ensure(node.ns(), sysctl::IPV4_FORWARD, "1").unwrap();
    let pods: Vec<TestNs> = (0..backends).map(|_| host()).collect();
    let mut udp_backends = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        attach_pod(&node, pod, i);
        start_backend(pod, &format!("backend-{i}"));
        udp_backends.push(UdpBackend::start_on(
            "::",
            pod,
            5353,
            &format!("backend-{i}"),
        ));
    }
    let client = host();
    attach_pod(&node, &client, CLIENT);
    let external = host();
    connect(
        &node,
        "eth0",
        [&format!("{NODE_IP6}/64"), &format!("{NODE_IP4}/24")],
        &external,
        "eth0",
        [&format!("{EXTERNAL_IP6}/64"), &format!("{EXTERNAL_IP4}/24")],
    );
    // Like a node's default routes: ClusterIPs must be routable from the node.
    for gateway in [EXTERNAL_IP6, EXTERNAL_IP4] {
        netlink
            .ensure_route(&RouteSpec::default_via(ip(gateway)))
            .unwrap();
    }
    let lab = Lab {
        _udp_backends: udp_backends,
        node,
        pods,
        client,
        external,
    };
    for i in 0..lab.pods.len() {
        wait_until_backend_answers(&lab.client, i);
    }
    lab
}

/// The servers of pod `i` answer the client directly on TCP and UDP over
/// IPv6, and on TCP over IPv4 (bounded wait).
fn wait_until_backend_answers(client: &TestNs, i: usize) {
    let name = format!("backend-{i}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let answers = |target: &SocketAddr| tcp(client, target).is_ok_and(|answer| answer == name);
    while !answers(&SocketAddr::new(pod_ip6(i), 8080))
        || !answers(&SocketAddr::new(pod_ip4(i), 8080))
        || udp(client, &SocketAddr::new(pod_ip6(i), 5353)) != name
    {
        assert!(Instant::now() < deadline, "{name} never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The client address socat reports in `$SOCAT_PEERADDR`: IPv6 in
/// brackets and in full (`[fd00:0010:…]`), IPv4 as an IPv4-mapped IPv6
/// address on a dual-stack listener.
fn peer(text: &str) -> IpAddr {
    let text = text.trim_start_matches('[').trim_end_matches(']');
    match ip(text) {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn endpoint(ip: IpAddr, port: u16, node: &str) -> Endpoint {
    Endpoint::ready(ip, port, Some(node.to_owned()))
}

/// Port `port` of ClusterIP Service `default/<name>` at `cluster_ips`,
/// with `endpoints`.
fn service(
    name: &str,
    protocol: Protocol,
    port: u16,
    cluster_ips: &[&str],
    endpoints: Vec<Endpoint>,
) -> ServicePort {
    let name = PortName::new("default", name, "", protocol);
    ServicePort::new(
        name,
        port,
        cluster_ips.iter().map(|text| ip(text)).collect(),
        endpoints,
    )
}

/// IPv6 endpoints on `target` of pods `pods`, all on node-1.
fn v6_endpoints(pods: &[usize], target: u16) -> Vec<Endpoint> {
    pods.iter()
        .map(|i| endpoint(pod_ip6(*i), target, "node-1"))
        .collect()
}

fn config() -> ProxyConfig {
    ProxyConfig {
        node_name: "node-1".into(),
        cluster_cidrs: vec![net("10.244.0.0/16"), net("fd00:10:244::/64")],
    }
}

fn syncer(lab: &Lab, family: Family) -> ServiceSyncer {
    ServiceSyncer::new(
        Nft::open_in(lab.node.ns()).unwrap(),
        Some(Conntrack::open_in(lab.node.ns()).unwrap()),
        family,
        config(),
    )
}

fn target(address: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(address), port)
}

/// `answer` is "connection refused", and it came at once: not after a SYN
/// retransmission (1 s), not a timeout.
fn assert_refused_at_once(what: &str, started: Instant, answer: io::Result<String>) {
    let elapsed = started.elapsed();
    match answer {
        Err(err) => assert_eq!(
            err.kind(),
            io::ErrorKind::ConnectionRefused,
            "{what}: expected connection refused, got {err} after {elapsed:?}"
        ),
        Ok(answer) => panic!("{what}: expected connection refused, got answer {answer:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(1),
        "{what}: refusal took {elapsed:?}"
    );
}

#[test]
fn ipv6_cluster_ip_spreads_60_tcp_connections_over_3_endpoints() {
    require_root!();
    let lab = lab(3);
    let mut syncer = syncer(&lab, Family::Ip6);
    let web = service(
        "web",
        Protocol::Tcp,
        80,
        &[CLUSTER_IP6],
        v6_endpoints(&[0, 1, 2], 8080),
    );
    let report = syncer.sync(&[web], &config()).unwrap();
    assert!(report.full, "{report:?}");
    // The IPv6 Service went into `ip6 weft`, nothing into `ip weft`.
    let mut nft = Nft::open_in(lab.node.ns()).unwrap();
    let counts_v6 = nft
        .elements(&TableRef::new(Family::Ip6, "weft"), "endpoint-counts")
        .unwrap();
    assert_eq!(counts_v6.len(), 1, "{counts_v6:?}");
    assert!(
        !nft.table_exists(&TableRef::new(Family::Ip, "weft"))
            .unwrap(),
        "an IPv6-only sync created `ip weft`"
    );

    let counts = tcp_many(&lab.client, &target(CLUSTER_IP6, 80), 60);
    assert_eq!(counts.values().sum::<usize>(), 60, "{counts:?}");
    for backend in ["backend-0", "backend-1", "backend-2"] {
        let got = counts.get(backend).copied().unwrap_or(0);
        // 20 expected; fewer than 5 of 60 has a probability below 1e-5.
        assert!(got >= 5, "{backend} got {got} of 60: {counts:?}");
    }
}

#[test]
fn ipv6_udp_cluster_ip_answers_and_removed_endpoints_lose_their_conntrack_entries() {
    require_root!();
    let lab = lab(2);
    let mut syncer = syncer(&lab, Family::Ip6);
    let dns = |pod: usize| {
        service(
            "dns",
            Protocol::Udp,
            53,
            &[CLUSTER_IP6],
            v6_endpoints(&[pod], 5353),
        )
    };
    syncer.sync(&[dns(0)], &config()).unwrap();
    assert_eq!(udp(&lab.client, &target(CLUSTER_IP6, 53)), "backend-0");

    let entries_to = |endpoint: IpAddr| {
        Conntrack::open_in(lab.node.ns())
            .unwrap()
            .entries(Family::Ip6)
            .unwrap()
            .iter()
            .filter(|entry| entry.reply.src == endpoint)
            .count()
    };
    assert!(
        entries_to(pod_ip6(0)) > 0,
        "no IPv6 conntrack entry for the UDP flow"
    );

    let report = syncer.sync(&[dns(1)], &config()).unwrap();
    assert!(!report.full, "{report:?}");
    assert!(report.conntrack_flushed > 0, "{report:?}");
    assert_eq!(
        entries_to(pod_ip6(0)),
        0,
        "stale IPv6 UDP entries to the removed endpoint remain"
    );
    assert_eq!(udp(&lab.client, &target(CLUSTER_IP6, 53)), "backend-1");
}

#[test]
fn ipv6_service_without_endpoints_refuses_at_once_and_unknown_ports_are_rejected() {
    require_root!();
    let lab = lab(1);
    let mut syncer = syncer(&lab, Family::Ip6);
    let web = |endpoints| service("web", Protocol::Tcp, 80, &[CLUSTER_IP6], endpoints);
    syncer.sync(&[web(vec![])], &config()).unwrap();
    let started = Instant::now();
    let answer = tcp(&lab.client, &target(CLUSTER_IP6, 80));
    assert_refused_at_once("no endpoints", started, answer);

    syncer
        .sync(&[web(v6_endpoints(&[0], 8080))], &config())
        .unwrap();
    assert_eq!(
        tcp(&lab.client, &target(CLUSTER_IP6, 80)).unwrap(),
        "backend-0"
    );
    let started = Instant::now();
    let answer = tcp(&lab.client, &target(CLUSTER_IP6, 81));
    assert_refused_at_once("unknown port of the ClusterIP", started, answer);
}

#[test]
fn ipv6_nodeport_reaches_backends_from_the_external_host() {
    require_root!();
    let lab = lab(2);
    let mut syncer = syncer(&lab, Family::Ip6);
    // Cluster policy: the backend sees the node (masqueraded).
    let mut cluster = service(
        "web",
        Protocol::Tcp,
        80,
        &[CLUSTER_IP6],
        v6_endpoints(&[0, 1], 8081),
    );
    cluster.node_port = Some(30080);
    // Local policy, one endpoint here and one elsewhere: the backend sees
    // the external host, and only the local endpoint is used.
    let mut local = service(
        "local",
        Protocol::Tcp,
        80,
        &["fd00:10:96::21"],
        vec![
            endpoint(pod_ip6(0), 8081, "node-1"),
            endpoint(pod_ip6(1), 8081, "node-2"),
        ],
    );
    local.node_port = Some(30081);
    local.external_local = true;
    // Without endpoints: refused at once on the node's address too.
    let mut empty = service("empty", Protocol::Tcp, 80, &["fd00:10:96::22"], vec![]);
    empty.node_port = Some(30082);
    syncer.sync(&[cluster, local, empty], &config()).unwrap();

    for _ in 0..10 {
        let seen = peer(&tcp(&lab.external, &target(NODE_IP6, 30080)).unwrap());
        assert!(
            seen == ip(GATEWAY6) || seen == ip(NODE_IP6),
            "Cluster policy: the backend saw {seen}, not the node"
        );
    }
    for _ in 0..10 {
        let seen = peer(&tcp(&lab.external, &target(NODE_IP6, 30081)).unwrap());
        assert_eq!(
            seen,
            ip(EXTERNAL_IP6),
            "Local policy must keep the client address (and use the local endpoint)"
        );
    }
    let started = Instant::now();
    let answer = tcp(&lab.external, &target(NODE_IP6, 30082));
    assert_refused_at_once("NodePort without endpoints", started, answer);

    // From a pod, to the node's addresses (LAN and bridge).
    for node_ip in [NODE_IP6, GATEWAY6] {
        let seen = peer(&tcp(&lab.client, &target(node_ip, 30080)).unwrap());
        assert!(
            seen == ip(GATEWAY6) || seen == ip(NODE_IP6),
            "from a pod to [{node_ip}]:30080: the backend saw {seen}"
        );
    }
    // The IPv4 NodePort of the same Services does not exist: nothing was
    // synced into `ip weft`.
    let answer = tcp(&lab.external, &target(NODE_IP4, 30080));
    assert!(answer.is_err(), "IPv4 NodePort answered: {answer:?}");
}

#[test]
fn a_pod_reaches_itself_through_its_ipv6_service() {
    require_root!();
    let lab = lab(1);
    let mut syncer = syncer(&lab, Family::Ip6);
    let web = service(
        "web",
        Protocol::Tcp,
        80,
        &[CLUSTER_IP6],
        v6_endpoints(&[0], 8080),
    );
    syncer.sync(&[web], &config()).unwrap();
    assert_eq!(
        tcp(&lab.pods[0], &target(CLUSTER_IP6, 80)).unwrap(),
        "backend-0"
    );
}

#[test]
fn a_dual_stack_service_answers_on_both_families() {
    require_root!();
    let lab = lab(2);
    let mut v4 = syncer(&lab, Family::Ip);
    let mut v6 = syncer(&lab, Family::Ip6);
    // One Service, both ClusterIPs; its endpoints come from one
    // EndpointSlice per family. `seen` answers with the client address.
    let endpoints = |target: u16| -> Vec<Endpoint> {
        (0..2)
            .flat_map(|i| {
                [
                    endpoint(pod_ip4(i), target, "node-1"),
                    endpoint(pod_ip6(i), target, "node-1"),
                ]
            })
            .collect()
    };
    // A Service with several ports names them (Kubernetes requires it).
    let port = |name: &str, protocol, port, target| {
        let mut port = service(
            "web",
            protocol,
            port,
            &[CLUSTER_IP4, CLUSTER_IP6],
            endpoints(target),
        );
        port.name.port = name.into();
        port
    };
    let ports = [
        port("http", Protocol::Tcp, 80, 8080),
        port("seen", Protocol::Tcp, 81, 8081),
        port("dns", Protocol::Udp, 53, 5353),
    ];
    assert!(v4.sync(&ports, &config()).unwrap().full);
    assert!(v6.sync(&ports, &config()).unwrap().full);

    for cluster_ip in [CLUSTER_IP4, CLUSTER_IP6] {
        let counts = tcp_many(&lab.client, &target(cluster_ip, 80), 20);
        assert_eq!(counts.values().sum::<usize>(), 20, "{counts:?}");
        assert!(
            counts.keys().all(|k| k == "backend-0" || k == "backend-1"),
            "{cluster_ip}: {counts:?}"
        );
        let answer = udp(&lab.client, &target(cluster_ip, 53));
        assert!(answer.starts_with("backend-"), "UDP {cluster_ip}: {answer}");
    }
    // Each family is translated within itself: the backend sees the
    // client's address of the family the client used.
    let seen_v6 = tcp(&lab.client, &target(CLUSTER_IP6, 81)).unwrap();
    assert_eq!(peer(&seen_v6), pod_ip6(CLIENT));
    let seen_v4 = tcp(&lab.client, &target(CLUSTER_IP4, 81)).unwrap();
    assert_eq!(peer(&seen_v4), pod_ip4(CLIENT));

    // Each family's table holds its own ClusterIP only.
    let mut nft = Nft::open_in(lab.node.ns()).unwrap();
    for (family, cluster_ip) in [(Family::Ip, CLUSTER_IP4), (Family::Ip6, CLUSTER_IP6)] {
        let table = TableRef::new(family, "weft");
        let value = match ip(cluster_ip) {
            IpAddr::V4(ip) => Value::Ipv4(ip),
            IpAddr::V6(ip) => Value::Ipv6(ip),
        };
        assert_eq!(
            nft.elements(&table, "cluster-ips").unwrap(),
            vec![Element::key([value])],
            "{table}"
        );
    }

    // Dropping the IPv6 ClusterIP leaves IPv4 working and IPv6 refused.
    let v4_only: Vec<ServicePort> = ports
        .iter()
        .cloned()
        .map(|mut port| {
            port.cluster_ips.retain(IpAddr::is_ipv4);
            port
        })
        .collect();
    v4.sync(&v4_only, &config()).unwrap();
    v6.sync(&v4_only, &config()).unwrap();
    assert!(
        tcp(&lab.client, &target(CLUSTER_IP4, 80))
            .unwrap()
            .starts_with("backend-")
    );
    let answer = tcp(&lab.client, &target(CLUSTER_IP6, 80));
    assert!(
        answer.is_err(),
        "the removed IPv6 ClusterIP answered: {answer:?}"
    );
}
