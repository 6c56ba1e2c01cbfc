//! `bench/proxy`: weft's Service proxy against a kube-proxy-shaped
//! iptables-legacy ruleset, in throwaway namespaces, printed as ratios.
//!
//! For every (implementation, size) a fresh "node" namespace is built with a
//! client pod and a backend pod on veths, and `size` Services of 5 endpoints
//! each are installed: weft's ruleset through [`ServiceSyncer`], or kube-proxy's
//! iptables-mode shape (`KUBE-SERVICES` → `KUBE-SVC-*` → `KUBE-SEP-*` with
//! `statistic random` probabilities and DNAT) through
//! `iptables-legacy-restore`. Only the last Service's endpoints are real
//! listeners (five addresses of the backend pod); the others point into
//! 10.248.0.0/13, which nothing routes. The measured Service is the last one
//! written to `KUBE-SERVICES`, so iptables walks every other Service first.
//!
//! Measured:
//! - the time a TCP connect from the client to the measured ClusterIP takes
//!   (SYN out, SYN-ACK back), each from a new source port so that each SYN
//!   is the first packet of a new connection and goes through NAT; all
//!   points measured round-robin so background load hits them alike;
//! - the full load of each ruleset (weft: the first `ServiceSyncer::sync`,
//!   split into compiling and committing; iptables: one
//!   `iptables-legacy-restore`);
//! - one endpoint change at the largest size (weft: `ServiceSyncer::sync`
//!   with all ports, and `sync_services` with the changed Service;
//!   iptables: the `--noflush` restore kube-proxy's partial sync writes:
//!   `KUBE-SERVICES` in full plus the changed chains).
//!
//! Traffic only ever goes to addresses inside the namespaces created here
//! (`weft-bench-<run>-*`), which are deleted on exit and on panic; the
//! `bench/proxy/run` wrapper also deletes them on Ctrl-C. Every loop is
//! bounded in count and time.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_linux::{NetNs, Netlink, RouteSpec, VethSpec, sysctl};
use weft_nft::{Conntrack, Family, Nft};
use weft_proxy::{Endpoint, PortName, Protocol, ProxyConfig, ServicePort, ServiceSyncer};

/// Endpoints per Service.
const ENDPOINTS: usize = 5;
/// First ClusterIP (10.96.0.0/12, Kubernetes' default service CIDR).
const SERVICE_BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
/// Endpoints of the Services nobody connects to: never routed anywhere.
const UNUSED_BASE: u32 = u32::from_be_bytes([10, 248, 0, 0]);
/// The replacement endpoint of the one-change measurement (also unrouted).
const CHANGED_ENDPOINT: Ipv4Addr = Ipv4Addr::new(10, 247, 0, 1);
const SERVICE_PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;
const CLUSTER_CIDR: &str = "10.244.0.0/16";
const NODE_NAME: &str = "bench-node";
/// Accepted connections a backend keeps open (the oldest close first);
/// eight backends stay well under the usual limit of open files.
const KEPT_OPEN: usize = 1_024;
/// Accept queue of a backend listener (the usual `somaxconn`).
const ACCEPT_QUEUE: i32 = 4_096;
/// Unmeasured connects at the start of every measuring call (thread,
/// caches and neighbour entries warm).
const WARM_UP: usize = 20;
/// Per-connect timeout; a connect that exceeds it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Args {
    run_id: String,
    sizes: Vec<usize>,
    connects: usize,
    rounds: usize,
    seconds_per_point: u64,
    skip_iptables_change: bool,
    implementations: Vec<Implementation>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        run_id: std::process::id().to_string(),
        sizes: vec![10, 1_000, 10_000, 30_000],
        connects: 2_000,
        rounds: 4,
        seconds_per_point: 30,
        skip_iptables_change: false,
        implementations: vec![Implementation::Weft, Implementation::Iptables],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--run-id" => args.run_id = value()?,
            "--sizes" => {
                args.sizes = value()?
                    .split(',')
                    .map(|size| size.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--sizes takes numbers separated by commas")?
            }
            "--connects" => args.connects = value()?.parse().context("--connects")?,
            "--rounds" => args.rounds = value()?.parse().context("--rounds")?,
            "--seconds-per-point" => {
                args.seconds_per_point = value()?.parse().context("--seconds-per-point")?
            }
            "--skip-iptables-change" => args.skip_iptables_change = true,
            "--only" => {
                args.implementations = match value()?.as_str() {
                    "weft" => vec![Implementation::Weft],
                    "iptables" => vec![Implementation::Iptables],
                    other => bail!("--only takes weft or iptables, not {other:?}"),
                }
            }
            other => bail!(
                "unknown argument {other:?} (known: --run-id ID, --sizes 10,1000, --connects N, \
                 --rounds N, --seconds-per-point S, --skip-iptables-change, --only weft|iptables)"
            ),
        }
    }
    let valid_run_id = !args.run_id.is_empty()
        && args.run_id.len() <= 16
        && args.run_id.chars().all(|c| c.is_ascii_alphanumeric());
    if !valid_run_id {
        bail!("--run-id must be 1-16 letters or digits");
    }
    if args.sizes.is_empty() || args.sizes.contains(&0) || args.sizes.iter().any(|s| *s > 100_000) {
        bail!("--sizes must be between 1 and 100000");
    }
    if args.rounds == 0 || args.connects < args.rounds || args.connects > 100_000 {
        bail!("--connects must be between --rounds and 100000");
    }
    args.sizes.sort_unstable();
    args.sizes.dedup();
    Ok(args)
}

/// Every namespace this run created; deleted on drop (also while a panic
/// unwinds). Errors are reported and cleanup goes on.
#[derive(Default)]
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn create(&mut self, name: &str) -> Result<NetNs> {
        let ns = NetNs::create(name).with_context(|| format!("creating namespace {name}"))?;
        self.names.push(name.to_owned());
        Netlink::in_namespace(&ns)?
            .set_up("lo")
            .with_context(|| format!("lo up in {name}"))?;
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.drain(..).rev() {
            if let Err(err) = NetNs::delete_if_exists(&name) {
                eprintln!("deleting namespace {name}: {err}");
            }
        }
    }
}

/// A TCP listener on the backend pod that accepts everything, so the
/// kernel's accept queue never fills, and keeps the last connections open
/// so that the client closes first: the client's ports then wait in
/// TIME_WAIT and every connect gets a port not used before. Stopped by a
/// flag and a last connect.
struct Backend {
    ns: NetNs,
    wake: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    fn start(ns: &NetNs, wake: SocketAddr) -> Result<Backend> {
        let listener = ns
            .run(|| listen(TARGET_PORT))?
            .context("binding the backend listener")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut open = VecDeque::with_capacity(KEPT_OPEN);
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((stream, _)) = listener.accept() {
                    if open.len() == KEPT_OPEN {
                        open.pop_front();
                    }
                    open.push_back(stream);
                }
            }
        });
        Ok(Backend {
            ns: ns.clone(),
            wake,
            stop,
            thread: Some(thread),
        })
    }
}

/// A listener on `port` with a long accept queue: std's 128 overflows
/// when the accepting thread waits for a CPU for a few milliseconds, and the
/// dropped SYN costs the client a one-second retransmission.
fn listen(port: u16) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
    )?;
    nix::sys::socket::listen(&fd, Backlog::new(ACCEPT_QUEUE)?)?;
    Ok(TcpListener::from(fd))
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let wake = self.wake;
        let woke = self
            .ns
            .run(|| TcpStream::connect_timeout(&wake, CONNECT_TIMEOUT));
        if let Some(thread) = self.thread.take() {
            if matches!(woke, Ok(Ok(_))) {
                let _ = thread.join();
            }
            // Otherwise the thread stays blocked until the process exits.
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Implementation {
    Weft,
    Iptables,
}

impl Implementation {
    fn label(self) -> &'static str {
        match self {
            Implementation::Weft => "weft",
            Implementation::Iptables => "ipt",
        }
    }
}

/// One measured node: its namespaces, what loading its ruleset cost, and
/// the latencies measured through it.
struct Point {
    implementation: Implementation,
    size: usize,
    client: NetNs,
    node: NetNs,
    syncer: Option<ServiceSyncer>,
    compile: Option<Duration>,
    load: Duration,
    samples: Vec<Duration>,
    failures: BTreeMap<String, usize>,
    measuring_time: Duration,
}

fn ipv4(value: u32) -> Ipv4Addr {
    Ipv4Addr::from(value)
}

fn cluster_ip(index: usize) -> Ipv4Addr {
    ipv4(SERVICE_BASE + u32::try_from(index).unwrap_or(u32::MAX))
}

fn backend_ip(endpoint: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 10 + u8::try_from(endpoint).unwrap_or(0))
}

fn endpoint_ips(size: usize, index: usize) -> Vec<Ipv4Addr> {
    if index + 1 == size {
        return (0..ENDPOINTS).map(backend_ip).collect();
    }
    (0..ENDPOINTS)
        .map(|e| ipv4(UNUSED_BASE + u32::try_from(index * ENDPOINTS + e).unwrap_or(0)))
        .collect()
}

fn service_name(index: usize) -> String {
    format!("svc-{index:05}")
}

/// `size` ClusterIP Services of 5 endpoints; the last one is measured.
fn services(size: usize) -> Vec<ServicePort> {
    (0..size)
        .map(|index| {
            let name = PortName::new("bench", &service_name(index), "", Protocol::Tcp);
            let endpoints = endpoint_ips(size, index)
                .into_iter()
                .map(|ip| Endpoint::ready(IpAddr::V4(ip), TARGET_PORT, Some(NODE_NAME.into())))
                .collect();
            ServicePort::new(
                name,
                SERVICE_PORT,
                vec![IpAddr::V4(cluster_ip(index))],
                endpoints,
            )
        })
        .collect()
}

fn proxy_config() -> Result<ProxyConfig> {
    Ok(ProxyConfig {
        node_name: NODE_NAME.into(),
        cluster_cidrs: vec![CLUSTER_CIDR.parse()?],
    })
}

/// kube-proxy's chain names are a hash of the Service port (and endpoint);
/// any stable 16-character hash gives the same rule sizes.
fn chain_name(prefix: &str, text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}{hash:016X}")
}

fn svc_chain(index: usize) -> String {
    chain_name("KUBE-SVC-", &format!("bench/{}:tcp", service_name(index)))
}

fn sep_chain(index: usize, ip: Ipv4Addr) -> String {
    chain_name(
        "KUBE-SEP-",
        &format!("bench/{}:tcp{ip}:{TARGET_PORT}", service_name(index)),
    )
}

const FILTER_CHAINS: &str = "\
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
";
const FILTER_JUMPS: &str = "\
-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
";
const FILTER_RULES: &str = "\
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
";
const NAT_CHAINS: &str = "\
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
";
const NAT_JUMPS: &str = "\
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
";
const NAT_RULES: &str = "\
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
";

/// The `KUBE-SERVICES` jump of Service `index`.
fn write_service_jump(out: &mut String, index: usize) {
    let name = service_name(index);
    let _ = writeln!(
        out,
        "-A KUBE-SERVICES -m comment --comment \"bench/{name} cluster IP\" -m tcp -p tcp -d {}/32 \
         --dport {SERVICE_PORT} -j {}",
        cluster_ip(index),
        svc_chain(index)
    );
}

/// The `KUBE-SVC-*` and `KUBE-SEP-*` rules of Service `index`.
fn write_service_chains(out: &mut String, index: usize, endpoints: &[Ipv4Addr]) {
    let name = service_name(index);
    let svc = svc_chain(index);
    let _ = writeln!(
        out,
        "-A {svc} -m comment --comment \"bench/{name} cluster IP\" -m tcp -p tcp -d {}/32 \
         --dport {SERVICE_PORT} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ",
        cluster_ip(index)
    );
    let n = endpoints.len();
    for (i, ip) in endpoints.iter().enumerate() {
        let sep = sep_chain(index, *ip);
        let probability = if i + 1 < n {
            // Cast: i < n ≤ 5, exact in f64.
            #[allow(clippy::cast_precision_loss)]
            let remaining = (n - i) as f64;
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / remaining
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "-A {svc} -m comment --comment \"bench/{name} -> {ip}:{TARGET_PORT}\"{probability} -j {sep}"
        );
    }
    for ip in endpoints {
        let sep = sep_chain(index, *ip);
        let _ = writeln!(
            out,
            "-A {sep} -m comment --comment bench/{name} -s {ip}/32 -j KUBE-MARK-MASQ"
        );
        let _ = writeln!(
            out,
            "-A {sep} -m comment --comment bench/{name} -m tcp -p tcp -j DNAT --to-destination \
             {ip}:{TARGET_PORT}"
        );
    }
}

const NODEPORTS_LAST: &str = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n";

/// kube-proxy's whole iptables-mode ruleset for `size` Services (what a
/// full sync restores), in Service order: the measured Service last.
fn iptables_full(size: usize) -> String {
    let mut out = String::with_capacity(size * 2_400);
    out.push_str("*filter\n");
    out.push_str(FILTER_CHAINS);
    out.push_str(FILTER_JUMPS);
    out.push_str(FILTER_RULES);
    out.push_str("COMMIT\n*nat\n");
    out.push_str(NAT_CHAINS);
    for index in 0..size {
        let _ = writeln!(out, ":{} - [0:0]", svc_chain(index));
        for ip in endpoint_ips(size, index) {
            let _ = writeln!(out, ":{} - [0:0]", sep_chain(index, ip));
        }
    }
    out.push_str(NAT_JUMPS);
    out.push_str(NAT_RULES);
    for index in 0..size {
        write_service_jump(&mut out, index);
    }
    out.push_str(NODEPORTS_LAST);
    for index in 0..size {
        write_service_chains(&mut out, index, &endpoint_ips(size, index));
    }
    out.push_str("COMMIT\n");
    out
}

/// What kube-proxy's partial sync restores (`--noflush`) when the first
/// endpoint of Service 0 is replaced: the top-level chains in full, the
/// changed Service's chains, the new endpoint chain, and the old one deleted.
fn iptables_one_change(size: usize) -> String {
    let old = endpoint_ips(size, 0);
    let mut new = old.clone();
    new[0] = CHANGED_ENDPOINT;
    let mut out = String::with_capacity(size * 200);
    out.push_str("*filter\n");
    out.push_str(FILTER_CHAINS);
    out.push_str(FILTER_RULES);
    out.push_str("COMMIT\n*nat\n");
    out.push_str(NAT_CHAINS);
    let _ = writeln!(out, ":{} - [0:0]", svc_chain(0));
    for ip in &new {
        let _ = writeln!(out, ":{} - [0:0]", sep_chain(0, *ip));
    }
    let _ = writeln!(out, ":{} - [0:0]", sep_chain(0, old[0]));
    out.push_str(NAT_RULES);
    for index in 0..size {
        write_service_jump(&mut out, index);
    }
    out.push_str(NODEPORTS_LAST);
    write_service_chains(&mut out, 0, &new);
    let _ = writeln!(out, "-X {}", sep_chain(0, old[0]));
    out.push_str("COMMIT\n");
    out
}

/// Runs `iptables-legacy-restore` inside `ns` with `rules` on stdin and
/// returns how long it took (spawn to exit).
fn iptables_restore(ns: &NetNs, rules: &str, noflush: bool) -> Result<Duration> {
    let mut command = Command::new("iptables-legacy-restore");
    if noflush {
        command.arg("--noflush");
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = ns
        .spawn(&mut command)
        .context("starting iptables-legacy-restore")?;
    {
        let mut stdin = child
            .stdin
            .take()
            .context("iptables-legacy-restore stdin")?;
        stdin
            .write_all(rules.as_bytes())
            .context("writing to iptables-legacy-restore")?;
    }
    let output = child
        .wait_with_output()
        .context("waiting for iptables-legacy-restore")?;
    let took = started.elapsed();
    if !output.status.success() {
        bail!(
            "iptables-legacy-restore in {} failed ({}): {}",
            ns.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(took)
}

fn net(text: &str) -> Result<ipnet::IpNet> {
    text.parse().with_context(|| format!("address {text:?}"))
}

/// Builds the node, client and backend namespaces of one point, wires them,
/// and starts the backend listener.
fn build_point(
    namespaces: &mut Namespaces,
    backends: &mut Vec<Backend>,
    run_id: &str,
    implementation: Implementation,
    size: usize,
) -> Result<(NetNs, NetNs)> {
    let prefix = format!("weft-bench-{run_id}-{}{size}", implementation.label());
    let node = namespaces.create(&format!("{prefix}-n"))?;
    let client = namespaces.create(&format!("{prefix}-c"))?;
    let backend = namespaces.create(&format!("{prefix}-b"))?;
    sysctl::ensure(&node, sysctl::IPV4_FORWARD, "1")?;

    let mut node_netlink = Netlink::in_namespace(&node)?;
    for (port, peer, node_addr) in [
        ("c0", &client, "10.244.0.1/24"),
        ("b0", &backend, "10.244.1.1/24"),
    ] {
        node_netlink.ensure_veth(&VethSpec {
            name: port.into(),
            peer_name: "eth0".into(),
            peer_namespace: Some(peer.clone()),
            ..VethSpec::default()
        })?;
        node_netlink.ensure_address(port, net(node_addr)?)?;
        node_netlink.set_up(port)?;
    }
    let mut client_netlink = Netlink::in_namespace(&client)?;
    client_netlink.ensure_address("eth0", net("10.244.0.2/24")?)?;
    client_netlink.set_up("eth0")?;
    client_netlink.ensure_route(&RouteSpec::default_via("10.244.0.1".parse()?))?;
    let mut backend_netlink = Netlink::in_namespace(&backend)?;
    for endpoint in 0..ENDPOINTS {
        backend_netlink.ensure_address("eth0", net(&format!("{}/24", backend_ip(endpoint)))?)?;
    }
    backend_netlink.set_up("eth0")?;
    backend_netlink.ensure_route(&RouteSpec::default_via("10.244.1.1".parse()?))?;
    backends.push(Backend::start(
        &backend,
        SocketAddr::new(IpAddr::V4(backend_ip(0)), TARGET_PORT),
    )?);
    Ok((node, client))
}

/// The first sync of `ports` into `node`: (syncer, compile and transaction
/// building, the rest of the sync wall time: commit and clean-up).
fn load_weft(node: &NetNs, ports: &[ServicePort]) -> Result<(ServiceSyncer, Duration, Duration)> {
    let config = proxy_config()?;
    let mut syncer = ServiceSyncer::new(
        Nft::open_in(node)?,
        Some(Conntrack::open_in(node)?),
        Family::Ip,
        config.clone(),
    );
    let started = Instant::now();
    let report = syncer.sync(ports, &config)?;
    let wall = started.elapsed();
    if !report.full {
        bail!("the first sync in {} was not a full one", node.name());
    }
    Ok((syncer, report.prepare, wall.saturating_sub(report.prepare)))
}

/// `count` connects from `client` to `target`, bounded by `budget`.
/// `count` connects from `client` to `target` after [`WARM_UP`] unmeasured
/// ones, bounded by `budget`; failures counted by error kind.
fn measure(
    client: &NetNs,
    target: SocketAddr,
    count: usize,
    budget: Duration,
    failures: &mut BTreeMap<String, usize>,
) -> Result<Vec<Duration>> {
    let (samples, failed) = client.run(|| {
        let deadline = Instant::now() + budget;
        let mut samples = Vec::with_capacity(count);
        let mut failed: Vec<String> = Vec::new();
        for attempt in 0..count + WARM_UP {
            if Instant::now() > deadline {
                break;
            }
            let started = Instant::now();
            match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    let took = started.elapsed();
                    if attempt >= WARM_UP {
                        samples.push(took);
                    }
                    drop(stream);
                }
                Err(err) => failed.push(err.kind().to_string()),
            }
        }
        (samples, failed)
    })?;
    for kind in failed {
        *failures.entry(kind).or_default() += 1;
    }
    Ok(samples)
}

fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = (sorted.len() * percent / 100).min(sorted.len() - 1);
    sorted[index]
}

fn micros(duration: Duration) -> String {
    format!("{:.1} µs", duration.as_secs_f64() * 1e6)
}

fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1e3;
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1e3)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn ratio(numerator: Duration, denominator: Duration) -> String {
    if denominator.is_zero() {
        return "n/a".into();
    }
    format!(
        "×{:.2}",
        numerator.as_secs_f64() / denominator.as_secs_f64()
    )
}

fn size_label(size: usize) -> String {
    if size >= 1_000 && size % 1_000 == 0 {
        format!("{}k", size / 1_000)
    } else {
        size.to_string()
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(2) == Some("0"))
    {
        bail!("needs root (network namespaces, nftables, iptables)");
    }
    let started = Instant::now();
    // Declared before `namespaces`: listeners stop before namespaces go.
    let mut namespaces = Namespaces::default();
    let mut backends: Vec<Backend> = Vec::new();
    let result = run(&args, &mut namespaces, &mut backends);
    drop(backends);
    drop(namespaces);
    eprintln!("# total {:.0} s", started.elapsed().as_secs_f64());
    result
}

struct ChangeResult {
    /// Per way of telling the syncer (all ports / the changed Service):
    /// comparing, compiling the changed port and building the transaction.
    weft_compile: [Vec<Duration>; 2],
    /// The kernel commit.
    weft_sync: [Vec<Duration>; 2],
    /// The whole sync call (with the conntrack check).
    weft_sync_wall: [Vec<Duration>; 2],
    weft_operations: usize,
    weft_ports_changed: usize,
    iptables: Option<Duration>,
}

fn run(args: &Args, namespaces: &mut Namespaces, backends: &mut Vec<Backend>) -> Result<()> {
    let mut points: Vec<Point> = Vec::new();
    let largest = args.sizes.iter().copied().max().unwrap_or(0);
    for &size in &args.sizes {
        let ports = services(size);
        for &implementation in &args.implementations {
            let (node, client) =
                build_point(namespaces, backends, &args.run_id, implementation, size)?;
            let (syncer, compile, load) = match implementation {
                Implementation::Weft => {
                    let (syncer, compiled, synced) = load_weft(&node, &ports)?;
                    (Some(syncer), Some(compiled), synced)
                }
                Implementation::Iptables => {
                    let rules = iptables_full(size);
                    (None, None, iptables_restore(&node, &rules, false)?)
                }
            };
            eprintln!(
                "# {:>4} {:>6} Services: loaded in {}{}",
                implementation.label(),
                size,
                millis(load),
                compile
                    .map(|c| format!(" (+ compile {})", millis(c)))
                    .unwrap_or_default()
            );
            points.push(Point {
                implementation,
                size,
                client,
                node,
                syncer,
                compile,
                load,
                samples: Vec::new(),
                failures: BTreeMap::new(),
                measuring_time: Duration::ZERO,
            });
        }
    }

    // Latency: a short warm-up (neighbours, caches), then round-robin rounds.
    let per_round = args.connects / args.rounds;
    let budget = Duration::from_secs(args.seconds_per_point) / u32::try_from(args.rounds)?;
    for point in &mut points {
        let target = SocketAddr::new(IpAddr::V4(cluster_ip(point.size - 1)), SERVICE_PORT);
        let mut failed = BTreeMap::new();
        let warm = measure(
            &point.client,
            target,
            50,
            Duration::from_secs(5),
            &mut failed,
        )?;
        if warm.is_empty() {
            bail!(
                "no connect through {} {} Services succeeded ({failed:?})",
                point.implementation.label(),
                point.size
            );
        }
    }
    for round in 0..args.rounds {
        // Every other round in reverse order: drift hits all points alike.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..points.len()).collect()
        } else {
            (0..points.len()).rev().collect()
        };
        for index in order {
            let Some(point) = points.get_mut(index) else {
                continue;
            };
            let target = SocketAddr::new(IpAddr::V4(cluster_ip(point.size - 1)), SERVICE_PORT);
            let started = Instant::now();
            let samples = measure(
                &point.client,
                target,
                per_round,
                budget,
                &mut point.failures,
            )?;
            point.measuring_time += started.elapsed();
            point.samples.extend(samples);
        }
        eprintln!("# latency round {}/{} done", round + 1, args.rounds);
    }

    // One endpoint change at the largest size.
    let change = one_change(args, &mut points, largest)?;
    print_report(args, &mut points, &change);
    Ok(())
}

fn one_change(args: &Args, points: &mut [Point], size: usize) -> Result<ChangeResult> {
    let config = proxy_config()?;
    let original = services(size);
    let mut changed = original.clone();
    if let Some(first) = changed
        .first_mut()
        .and_then(|port| port.endpoints.first_mut())
    {
        first.ip = IpAddr::V4(CHANGED_ENDPOINT);
    }
    let mut result = ChangeResult {
        weft_compile: [Vec::new(), Vec::new()],
        weft_sync: [Vec::new(), Vec::new()],
        weft_sync_wall: [Vec::new(), Vec::new()],
        weft_operations: 0,
        weft_ports_changed: 0,
        iptables: None,
    };
    for point in points.iter_mut().filter(|p| p.size == size) {
        match (point.implementation, point.syncer.as_mut()) {
            (Implementation::Weft, Some(syncer)) => {
                // Five changes there and back, given all ports (way 0) and
                // given the changed Service (way 1); the table is never
                // recreated.
                let service = vec![("bench".to_owned(), service_name(0))];
                for attempt in 0..10 {
                    let way = attempt / 5;
                    let ports = if attempt % 2 == 0 {
                        &changed
                    } else {
                        &original
                    };
                    let started = Instant::now();
                    let report = if way == 0 {
                        syncer.sync(ports, &config)?
                    } else {
                        syncer.sync_services(&service, &ports[..1], &config)?
                    };
                    result.weft_sync_wall[way].push(started.elapsed());
                    result.weft_compile[way].push(report.prepare);
                    result.weft_sync[way].push(report.duration.saturating_sub(report.prepare));
                    if report.full {
                        bail!("an endpoint change recreated the table");
                    }
                    result.weft_operations = report.operations;
                    eprintln!(
                        "# change {attempt}: {} operations, {} ports, prepare {:?}, duration {:?}",
                        report.operations,
                        report.ports_changed.unwrap_or_default(),
                        report.prepare,
                        report.duration
                    );
                    result.weft_ports_changed = report.ports_changed.unwrap_or_default();
                }
            }
            (Implementation::Iptables, _) if !args.skip_iptables_change => {
                let rules = iptables_one_change(size);
                result.iptables = Some(iptables_restore(&point.node, &rules, true)?);
            }
            _ => {}
        }
    }
    Ok(result)
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    percentile(&sorted, 50)
}

fn print_report(args: &Args, points: &mut [Point], change: &ChangeResult) {
    let per_round = args.connects / args.rounds;
    for point in points.iter_mut() {
        point.samples.sort_unstable();
    }
    let find = |implementation: Implementation, size: usize| {
        points
            .iter()
            .find(|p| p.implementation == implementation && p.size == size)
    };
    let smallest = args.sizes.first().copied().unwrap_or(0);
    let largest = args.sizes.last().copied().unwrap_or(0);
    let p = |implementation, size, percent| {
        find(implementation, size)
            .map(|point| percentile(&point.samples, percent))
            .unwrap_or_default()
    };

    println!();
    println!(
        "## First-packet TCP connect latency: client pod → ClusterIP (last of N Services) → 1 of 5 endpoints"
    );
    println!(
        "{} connects per point in {} round-robin rounds; each connect a new source port (a new conntrack entry, through NAT).",
        args.connects, args.rounds
    );
    println!();
    println!(
        "| Services | weft p50 | weft p99 | iptables p50 | iptables p99 | weft p50 vs {s} | iptables p50 vs {s} | iptables/weft p50 |",
        s = size_label(smallest)
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &size in &args.sizes {
        let (w50, w99) = (
            p(Implementation::Weft, size, 50),
            p(Implementation::Weft, size, 99),
        );
        let (i50, i99) = (
            p(Implementation::Iptables, size, 50),
            p(Implementation::Iptables, size, 99),
        );
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            size_label(size),
            micros(w50),
            micros(w99),
            micros(i50),
            micros(i99),
            ratio(w50, p(Implementation::Weft, smallest, 50)),
            ratio(i50, p(Implementation::Iptables, smallest, 50)),
            ratio(i50, w50)
        );
    }
    println!();
    println!(
        "{}/{} ratio: weft p50 {} p99 {} (goal ≤ 1.1); iptables p50 {} p99 {}",
        size_label(largest),
        size_label(smallest),
        ratio(
            p(Implementation::Weft, largest, 50),
            p(Implementation::Weft, smallest, 50)
        ),
        ratio(
            p(Implementation::Weft, largest, 99),
            p(Implementation::Weft, smallest, 99)
        ),
        ratio(
            p(Implementation::Iptables, largest, 50),
            p(Implementation::Iptables, smallest, 50)
        ),
        ratio(
            p(Implementation::Iptables, largest, 99),
            p(Implementation::Iptables, smallest, 99)
        ),
    );
    for point in points.iter() {
        if !point.failures.is_empty() || point.samples.len() < per_round * args.rounds {
            println!(
                "note: {} {} Services: {} connects measured, failed: {:?}, {:.1} s spent",
                point.implementation.label(),
                point.size,
                point.samples.len(),
                point.failures,
                point.measuring_time.as_secs_f64()
            );
        }
    }

    println!();
    println!("## Sync: full load of N Services × 5 endpoints into an empty node");
    println!();
    println!(
        "| Services | weft compile | weft full sync | weft compile + sync | iptables-legacy-restore | iptables / weft (compile + sync) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for &size in &args.sizes {
        let weft = find(Implementation::Weft, size);
        let compiled = weft.and_then(|w| w.compile).unwrap_or_default();
        let synced = weft.map(|w| w.load).unwrap_or_default();
        let iptables = find(Implementation::Iptables, size)
            .map(|i| i.load)
            .unwrap_or_default();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            size_label(size),
            millis(compiled),
            millis(synced),
            millis(compiled + synced),
            millis(iptables),
            ratio(iptables, compiled + synced)
        );
    }
    println!();
    println!(
        "## One endpoint change at {} Services (one endpoint of one Service replaced)",
        size_label(largest)
    );
    println!();
    println!(
        "| weft told (median of 5) | compare + compile + diff | commit | total (whole sync call, incl. conntrack check) | iptables-legacy-restore --noflush | iptables / weft total |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (way, label) in [
        "all ports (`sync`)",
        "the changed Service (`sync_services`)",
    ]
    .iter()
    .enumerate()
    {
        let weft_total = median(&change.weft_sync_wall[way]);
        println!(
            "| {label} | {} | {} | {} | {} | {} |",
            millis(median(&change.weft_compile[way])),
            millis(median(&change.weft_sync[way])),
            millis(weft_total),
            change
                .iptables
                .map(millis)
                .unwrap_or_else(|| "skipped".into()),
            change
                .iptables
                .map(|i| ratio(i, weft_total))
                .unwrap_or_else(|| "n/a".into())
        );
    }
    println!();
    println!(
        "weft recompiled {} Service port(s) and committed {} netlink operations per change (no table recreation).",
        change.weft_ports_changed, change.weft_operations,
    );
}
