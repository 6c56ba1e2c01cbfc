//! The proxy with real packets: a node namespace with backend pods on a
//! bridge, a client pod, and an external host on the node's LAN. Services
//! are compiled and synced into the node namespace's `ip weft` table.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::UdpBackend;
use weft_linux::{RouteSpec, VethSpec, sysctl};
use weft_nft::{Conntrack, Family, Nft};
use weft_proxy::incremental::{MIN_SET_SIZE, set_size};
use weft_proxy::{
    Endpoint, PortName, Protocol, ProxyConfig, ServicePort, ServiceSyncer, Syncer, compile,
};
use weft_testhost::{TestNs, connect, ip, net, require_root};

const CLUSTER_IP: &str = "10.96.0.20";
const NODE_IP: &str = "192.168.10.11";

struct Lab {
    /// Declared first: dropped (stopped) before the namespaces go.
    _udp_backends: Vec<UdpBackend>,
    node: TestNs,
    pods: Vec<TestNs>,
    client: TestNs,
    external: TestNs,
}

fn pod_ip(i: usize) -> String {
    format!("10.244.1.{}", 10 + i)
}

fn attach_pod(node: &TestNs, pod: &TestNs, index: usize, address: &str) {
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
        .ensure_address("eth0", net(&format!("{address}/24")))
        .unwrap();
    pod_netlink.set_up("eth0").unwrap();
    pod_netlink
        .ensure_route(&RouteSpec::default_via(ip("10.244.1.1")))
        .unwrap();
}

/// A backend answering TCP 8080 with its name, TCP 8081 with the client
/// address it saw, and echoing on TCP 9000.
fn start_backend(pod: &TestNs, name: &str) {
    pod.spawn(Command::new("socat").args([
        "TCP-LISTEN:8080,reuseaddr,fork".to_owned(),
        format!("SYSTEM:echo {name}"),
    ]));
    pod.spawn(Command::new("socat").args([
        "TCP-LISTEN:8081,reuseaddr,fork",
        "SYSTEM:echo $SOCAT_PEERADDR",
    ]));
    pod.spawn(Command::new("socat").args(["TCP-LISTEN:9000,reuseaddr,fork", "EXEC:cat"]));
}

fn lab(backends: usize) -> Lab {
    let node = TestNs::new();
    let mut netlink = node.netlink();
    netlink.ensure_bridge("cni0", None).unwrap();
    netlink
        .ensure_address("cni0", net("10.244.1.1/24"))
        .unwrap();
    netlink.set_up("cni0").unwrap();
    sysctl::ensure(node.ns(), sysctl::IPV4_FORWARD, "1").unwrap();
    let pods: Vec<TestNs> = (0..backends).map(|_| TestNs::new()).collect();
    let mut udp_backends = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        attach_pod(&node, pod, i, &pod_ip(i));
        start_backend(pod, &format!("backend-{i}"));
        udp_backends.push(UdpBackend::start_on(
            "0.0.0.0",
            pod,
            5353,
            &format!("backend-{i}"),
        ));
    }
    let client = TestNs::new();
    attach_pod(&node, &client, 99, "10.244.1.99");
    let external = TestNs::new();
    connect(
        &node,
        "eth0",
        net(&format!("{NODE_IP}/24")),
        &external,
        "eth0",
        net("192.168.10.100/24"),
    );
    // Like a node's default route: ClusterIPs must be routable from the node.
    netlink
        .ensure_route(&RouteSpec::default_via(ip("192.168.10.100")))
        .unwrap();
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

/// The socat servers of pod `i` answer on TCP and UDP (bounded wait).
fn wait_until_backend_answers(client: &TestNs, i: usize) {
    let name = format!("backend-{i}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while tcp(client, &format!("{}:8080", pod_ip(i))) != name
        || udp(client, &format!("{}:5353", pod_ip(i))) != name
    {
        assert!(Instant::now() < deadline, "{name} never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn service(endpoints: &[(usize, &str)]) -> ServicePort {
    let name = PortName::new("default", "web", "", Protocol::Tcp);
    let endpoints = endpoints
        .iter()
        .map(|(i, node)| {
            Endpoint::ready(pod_ip(*i).parse().unwrap(), 8080, Some((*node).to_owned()))
        })
        .collect();
    ServicePort::new(name, 80, vec![CLUSTER_IP.parse().unwrap()], endpoints)
}

fn with_target(
    mut port: ServicePort,
    protocol: Protocol,
    service_port: u16,
    target: u16,
) -> ServicePort {
    port.name.protocol = protocol;
    port.port = service_port;
    for endpoint in &mut port.endpoints {
        endpoint.port = target;
    }
    port
}

fn config() -> ProxyConfig {
    ProxyConfig {
        node_name: "node-1".into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
    }
}

fn new_syncer(lab: &Lab) -> Syncer {
    Syncer::new(
        Nft::open_in(lab.node.ns()).unwrap(),
        Some(Conntrack::open_in(lab.node.ns()).unwrap()),
    )
}

fn sync(syncer: &mut Syncer, ports: &[ServicePort]) -> weft_proxy::SyncReport {
    syncer.sync(compile(Family::Ip, ports, &config())).unwrap()
}

/// One TCP request from `from` to `target` (`ip:port`); the answer, or
/// the error text.
fn tcp(from: &TestNs, target: &str) -> String {
    support::tcp(from, &addr(target)).unwrap_or_else(|err| format!("error: {err}"))
}

fn tcp_many(from: &TestNs, target: &str, count: usize) -> BTreeMap<String, usize> {
    support::tcp_many(from, &addr(target), count)
}

fn udp(from: &TestNs, target: &str) -> String {
    support::udp(from, &addr(target))
}

fn addr(target: &str) -> SocketAddr {
    target.parse().unwrap()
}

#[test]
fn cluster_ip_spreads_300_tcp_connections_over_3_endpoints() {
    require_root!();
    let lab = lab(3);
    let mut syncer = new_syncer(&lab);
    let report = sync(
        &mut syncer,
        &[service(&[(0, "node-1"), (1, "node-1"), (2, "node-1")])],
    );
    assert!(report.full);

    let counts = tcp_many(&lab.client, &format!("{CLUSTER_IP}:80"), 300);
    assert_eq!(counts.values().sum::<usize>(), 300, "{counts:?}");
    for backend in ["backend-0", "backend-1", "backend-2"] {
        let got = counts.get(backend).copied().unwrap_or(0);
        assert!(got >= 50, "{backend} got {got} of 300: {counts:?}");
    }
}

#[test]
fn udp_cluster_ip_reaches_an_endpoint_and_removed_endpoints_lose_their_conntrack_entries() {
    require_root!();
    let lab = lab(2);
    let mut syncer = new_syncer(&lab);
    let dns =
        |endpoints: &[(usize, &str)]| with_target(service(endpoints), Protocol::Udp, 53, 5353);
    sync(&mut syncer, &[dns(&[(0, "node-1")])]);
    assert_eq!(udp(&lab.client, &format!("{CLUSTER_IP}:53")), "backend-0");

    let entries_to = |endpoint: &str| {
        Conntrack::open_in(lab.node.ns())
            .unwrap()
            .entries(Family::Ip)
            .unwrap()
            .iter()
            .filter(|entry| entry.reply.src == endpoint.parse::<IpAddr>().unwrap())
            .count()
    };
    assert!(
        entries_to(&pod_ip(0)) > 0,
        "no conntrack entry for the UDP flow"
    );

    let report = sync(&mut syncer, &[dns(&[(1, "node-1")])]);
    assert!(!report.full);
    assert!(report.conntrack_flushed > 0, "{report:?}");
    assert_eq!(
        entries_to(&pod_ip(0)),
        0,
        "stale UDP entries to the removed endpoint remain"
    );
    assert_eq!(udp(&lab.client, &format!("{CLUSTER_IP}:53")), "backend-1");
}

#[test]
fn a_service_without_endpoints_refuses_at_once_and_unknown_ports_are_rejected() {
    require_root!();
    let lab = lab(1);
    let mut syncer = new_syncer(&lab);
    sync(&mut syncer, &[service(&[])]);
    let started = Instant::now();
    let answer = tcp(&lab.client, &format!("{CLUSTER_IP}:80"));
    assert!(answer.contains("Connection refused"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refusal took {:?}",
        started.elapsed()
    );

    sync(&mut syncer, &[service(&[(0, "node-1")])]);
    assert_eq!(tcp(&lab.client, &format!("{CLUSTER_IP}:80")), "backend-0");
    let unknown = tcp(&lab.client, &format!("{CLUSTER_IP}:81"));
    assert!(unknown.contains("Connection refused"), "{unknown}");
}

#[test]
fn nodeport_external_ip_and_load_balancer_ip_reach_backends_from_the_external_host() {
    require_root!();
    let lab = lab(2);
    let mut syncer = new_syncer(&lab);
    let mut port = service(&[(0, "node-1"), (1, "node-1")]);
    port.node_port = Some(30080);
    port.external_ips = vec!["192.168.10.200".parse().unwrap()];
    port.load_balancer_ips = vec!["192.168.10.250".parse().unwrap()];
    sync(&mut syncer, &[port]);
    let mut external = lab.external.netlink();
    for vip in ["192.168.10.200/32", "192.168.10.250/32"] {
        external
            .ensure_route(&RouteSpec::via(net(vip), ip(NODE_IP)))
            .unwrap();
    }
    for target in [
        format!("{NODE_IP}:30080"),
        "192.168.10.200:80".to_owned(),
        "192.168.10.250:80".to_owned(),
    ] {
        let answer = tcp(&lab.external, &target);
        assert!(answer.starts_with("backend-"), "{target}: {answer}");
    }
    assert!(tcp(&lab.client, &format!("{NODE_IP}:30080")).starts_with("backend-"));
}

#[test]
fn session_affinity_sends_a_client_to_the_same_backend() {
    require_root!();
    let lab = lab(3);
    let mut syncer = new_syncer(&lab);
    let mut port = service(&[(0, "node-1"), (1, "node-1"), (2, "node-1")]);
    port.affinity_timeout = Some(10_800);
    sync(&mut syncer, &[port]);
    let counts = tcp_many(&lab.client, &format!("{CLUSTER_IP}:80"), 15);
    assert_eq!(
        counts.len(),
        1,
        "15 connections went to several backends: {counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), 15);
}

#[test]
fn a_pod_reaches_itself_through_its_service() {
    require_root!();
    let lab = lab(1);
    let mut syncer = new_syncer(&lab);
    sync(&mut syncer, &[service(&[(0, "node-1")])]);
    assert_eq!(tcp(&lab.pods[0], &format!("{CLUSTER_IP}:80")), "backend-0");
}

#[test]
fn local_external_policy_keeps_the_client_address_and_uses_only_local_endpoints() {
    require_root!();
    let lab = lab(2);
    let mut syncer = new_syncer(&lab);
    let mut port = with_target(
        service(&[(0, "node-1"), (1, "node-2")]),
        Protocol::Tcp,
        80,
        8081,
    );
    port.node_port = Some(30081);
    port.external_local = true;
    let mut cluster_policy = with_target(service(&[(0, "node-1")]), Protocol::Tcp, 81, 8081);
    cluster_policy.name.name = "masq".into();
    cluster_policy.cluster_ips = vec!["10.96.0.21".parse().unwrap()];
    cluster_policy.node_port = Some(30082);
    sync(&mut syncer, &[port, cluster_policy]);

    for _ in 0..10 {
        let seen = tcp(&lab.external, &format!("{NODE_IP}:30081"));
        assert_eq!(
            seen, "192.168.10.100",
            "Local policy must keep the client address"
        );
    }
    let masqueraded = tcp(&lab.external, &format!("{NODE_IP}:30082"));
    assert!(
        masqueraded == "10.244.1.1" || masqueraded == NODE_IP,
        "Cluster policy: backend saw {masqueraded}"
    );
}

#[test]
fn local_external_policy_lets_pods_and_the_node_through_where_it_has_no_local_endpoint() {
    require_root!();
    let lab = lab(1);
    let mut syncer = new_syncer(&lab);
    // The one endpoint is on another node, as far as this node knows.
    let mut port = with_target(service(&[(0, "node-2")]), Protocol::Tcp, 80, 8081);
    port.node_port = Some(30083);
    port.external_local = true;
    sync(&mut syncer, &[port]);
    let node_port = format!("{NODE_IP}:30083");
    // A pod is not an external client: it reaches the endpoint elsewhere,
    // with its own address, as through kube-proxy.
    assert_eq!(tcp(&lab.client, &node_port), "10.244.1.99");
    // Nor is the node itself (masqueraded: its source is a local address).
    let from_node = tcp(&lab.node, &node_port);
    assert!(
        from_node == "10.244.1.1" || from_node == NODE_IP,
        "the node reached {from_node}"
    );
    // An external client is dropped: no endpoint here.
    let external = tcp(&lab.external, &node_port);
    assert!(
        external.starts_with("error"),
        "external client got {external}"
    );
}

#[test]
fn resyncing_from_scratch_keeps_established_connections_and_the_same_state_commits_nothing() {
    require_root!();
    let lab = lab(1);
    let mut syncer = new_syncer(&lab);
    let echo = || with_target(service(&[(0, "node-1")]), Protocol::Tcp, 80, 9000);
    sync(&mut syncer, &[echo()]);
    let target: SocketAddr = format!("{CLUSTER_IP}:80").parse().unwrap();
    let mut stream = lab
        .client
        .run(|| TcpStream::connect_timeout(&target, Duration::from_secs(2)))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut roundtrip = |text: &str| {
        stream.write_all(text.as_bytes()).unwrap();
        let mut buffer = vec![0u8; text.len()];
        stream.read_exact(&mut buffer).unwrap();
        String::from_utf8(buffer).unwrap()
    };
    assert_eq!(roundtrip("before"), "before");

    // An agent restart: a fresh syncer recreates the table in one transaction.
    let mut restarted = new_syncer(&lab);
    let report = sync(&mut restarted, &[echo()]);
    assert!(report.full);
    assert_eq!(roundtrip("after"), "after");

    let again = sync(&mut restarted, &[echo()]);
    assert_eq!(
        again.operations, 0,
        "re-applying the same state committed {again:?}"
    );
}

/// `count` ClusterIP Services `filler-N` at 10.96.1.0 + N with two
/// endpoints each in 10.250.0.0/16, which nothing routes.
fn fillers(count: u32) -> Vec<ServicePort> {
    (0..count)
        .map(|n| {
            let cluster_ip = std::net::Ipv4Addr::from(u32::from_be_bytes([10, 96, 1, 0]) + n);
            let endpoints: Vec<String> = (0..2)
                .map(|e| {
                    std::net::Ipv4Addr::from(u32::from_be_bytes([10, 250, 0, 0]) + n * 2 + e)
                        .to_string()
                })
                .collect();
            let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
            weft_proxy::testing::cluster_ip_port(
                &format!("filler-{n}"),
                Protocol::Tcp,
                &cluster_ip.to_string(),
                &endpoints,
                Some("node-1"),
            )
        })
        .collect()
}

#[test]
fn outgrowing_the_size_of_a_shared_set_rewrites_the_table_with_larger_sets() {
    require_root!();
    let lab = lab(2);
    let table = weft_nft::TableRef::new(Family::Ip, "weft");
    let mut nft = Nft::open_in(lab.node.ns()).unwrap();
    let mut syncer = ServiceSyncer::new(
        Nft::open_in(lab.node.ns()).unwrap(),
        Some(Conntrack::open_in(lab.node.ns()).unwrap()),
        Family::Ip,
        config(),
    );
    let size_of = |nft: &mut Nft, set: &str| {
        nft.sets(&table)
            .unwrap()
            .into_iter()
            .find(|info| info.name == set)
            .and_then(|info| info.size)
    };
    let web = service(&[(0, "node-1"), (1, "node-1")]);
    let mut ports = fillers(10);
    ports.push(web.clone());
    assert!(syncer.sync(&ports, &config()).unwrap().full);
    // 22 endpoints: every shared set starts at the smallest size.
    let smallest = set_size(0);
    assert!(smallest >= MIN_SET_SIZE);
    assert_eq!(size_of(&mut nft, "hairpin"), Some(smallest));
    assert_eq!(size_of(&mut nft, "endpoints"), Some(smallest));
    assert_eq!(syncer.state().set_size("hairpin"), Some(smallest));

    // 190 more Services of 2 endpoints overfill @hairpin and @endpoints:
    // the sync writes the table again, with sets sized for the new counts,
    // and a Service added by that sync takes traffic.
    let mut ports = fillers(200);
    ports.push(web.clone());
    let mut second = service(&[(1, "node-1")]);
    second.name.name = "second".into();
    second.cluster_ips = vec!["10.96.0.21".parse().unwrap()];
    ports.push(second);
    let report = syncer.sync(&ports, &config()).unwrap();
    assert!(report.full, "{report:?}");
    let elements = 200 * 2 + 2;
    assert!(elements > smallest as usize);
    let hairpin = nft.elements(&table, "hairpin").unwrap();
    assert_eq!(hairpin.len(), elements);
    assert_eq!(
        nft.elements(&table, "endpoints").unwrap().len(),
        elements + 1
    );
    assert_eq!(size_of(&mut nft, "hairpin"), Some(set_size(elements)));
    assert!(set_size(elements) > smallest);
    assert_eq!(size_of(&mut nft, "endpoints"), Some(set_size(elements + 1)));
    assert_eq!(tcp(&lab.client, "10.96.0.21:80"), "backend-1");
    let counts = tcp_many(&lab.client, &format!("{CLUSTER_IP}:80"), 20);
    assert_eq!(counts.values().sum::<usize>(), 20, "{counts:?}");
    assert!(
        counts.keys().all(|k| k == "backend-0" || k == "backend-1"),
        "{counts:?}"
    );

    // Below the new sizes, changes are incremental again.
    ports.retain(|port| port.name.name != "filler-0");
    let report = syncer.sync(&ports, &config()).unwrap();
    assert!(!report.full, "{report:?}");
    assert_eq!(nft.elements(&table, "hairpin").unwrap().len(), elements - 2);
    assert_eq!(tcp(&lab.client, "10.96.0.21:80"), "backend-1");
}
