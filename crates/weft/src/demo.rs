//! `weft demo`: builds one of the seed notes' scenarios (veth, bridge,
//! router, VXLAN) out of network namespaces named `weft-demo-*`, shows each
//! step, proves reachability with real pings (including the ones that must
//! fail), then removes everything unless `--keep` is given.
//!
//! A scenario is data: a list of [`Step`]s interpreted by [`run_steps`], so a
//! new one is a table, not new code.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use weft_linux::{NetNs, Netlink, RouteSpec, VethSpec, VxlanSpec, sysctl};

/// Prefix of every namespace the demo creates.
const PREFIX: &str = "weft-demo-";

/// The scenarios `weft demo` can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Two namespaces joined by one veth pair.
    Veth,
    /// Three namespaces on one Linux bridge that has an address of its own.
    Bridge,
    /// A router namespace with ip_forward joining two subnets.
    Router,
    /// Two nodes whose pod subnets talk over a VXLAN overlay.
    Vxlan,
}

impl Scenario {
    fn title(self) -> &'static str {
        match self {
            Scenario::Veth => "veth: two namespaces joined by a veth pair",
            Scenario::Bridge => "bridge: three namespaces on a Linux bridge (a virtual switch)",
            Scenario::Router => "router: two subnets joined by a namespace with ip_forward=1",
            Scenario::Vxlan => "vxlan: pod subnets of two nodes over a VXLAN overlay",
        }
    }

    fn hosts(self) -> &'static [&'static str] {
        match self {
            Scenario::Veth => &["red", "blue"],
            Scenario::Bridge => &["switch", "red", "blue", "green"],
            Scenario::Router => &["left", "router", "right"],
            Scenario::Vxlan => &["node1", "node2", "pod1", "pod2"],
        }
    }

    fn steps(self) -> Vec<Step> {
        use Step::*;
        match self {
            Scenario::Veth => vec![
                Expect("red", "192.168.15.2", false),
                Wire(
                    "red",
                    "veth-red",
                    "192.168.15.1/24",
                    "blue",
                    "veth-blue",
                    "192.168.15.2/24",
                ),
                Expect("red", "192.168.15.2", true),
                Expect("blue", "192.168.15.1", true),
            ],
            Scenario::Bridge => vec![
                Bridge("switch", "v-net-0", "192.168.15.5/24"),
                Plug("switch", "v-net-0", "veth-red-br", "red", "192.168.15.1/24"),
                Plug(
                    "switch",
                    "v-net-0",
                    "veth-blue-br",
                    "blue",
                    "192.168.15.2/24",
                ),
                Plug(
                    "switch",
                    "v-net-0",
                    "veth-green-br",
                    "green",
                    "192.168.15.3/24",
                ),
                Expect("red", "192.168.15.2", true),
                Expect("blue", "192.168.15.3", true),
                Expect("green", "192.168.15.1", true),
                Expect("red", "192.168.15.5", true),
            ],
            Scenario::Router => vec![
                Wire(
                    "left",
                    "eth0",
                    "192.168.1.10/24",
                    "router",
                    "eth-left",
                    "192.168.1.1/24",
                ),
                Wire(
                    "right",
                    "eth0",
                    "192.168.2.10/24",
                    "router",
                    "eth-right",
                    "192.168.2.1/24",
                ),
                Forward("router"),
                Expect("left", "192.168.2.10", false),
                Route("left", "192.168.2.0/24", "192.168.1.1"),
                Route("right", "192.168.1.0/24", "192.168.2.1"),
                Expect("left", "192.168.2.10", true),
                Expect("right", "192.168.1.10", true),
            ],
            Scenario::Vxlan => vec![
                Wire(
                    "node1",
                    "eth0",
                    "192.168.100.1/24",
                    "node2",
                    "eth0",
                    "192.168.100.2/24",
                ),
                Forward("node1"),
                Forward("node2"),
                Bridge("node1", "cni0", "10.244.1.1/24"),
                Bridge("node2", "cni0", "10.244.2.1/24"),
                Plug("node1", "cni0", "veth-pod1", "pod1", "10.244.1.10/24"),
                Plug("node2", "cni0", "veth-pod2", "pod2", "10.244.2.10/24"),
                Route("pod1", "0.0.0.0/0", "10.244.1.1"),
                Route("pod2", "0.0.0.0/0", "10.244.2.1"),
                Vtep("node1", "192.168.100.1", "10.244.1.0/32"),
                Vtep("node2", "192.168.100.2", "10.244.2.0/32"),
                Expect("pod1", "10.244.2.10", false),
                Peer("node1", "node2", "10.244.2.0/24", "192.168.100.2"),
                Peer("node2", "node1", "10.244.1.0/24", "192.168.100.1"),
                Expect("pod1", "10.244.2.10", true),
                Expect("pod2", "10.244.1.10", true),
            ],
        }
    }
}

/// One step of a scenario; hosts are named by role (`red`, `node1`, …).
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A veth pair between two hosts: (host, if, addr, host, if, addr).
    Wire(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ),
    /// A bridge with an address of its own: (host, bridge, addr).
    Bridge(&'static str, &'static str, &'static str),
    /// A host plugged into a bridge: (switch host, bridge, port, host, addr);
    /// the host side is `eth0`.
    Plug(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ),
    /// `net.ipv4.ip_forward=1` in a host.
    Forward(&'static str),
    /// A route: (host, destination, gateway).
    Route(&'static str, &'static str, &'static str),
    /// A VXLAN device `weft.vxlan` (VNI 1, port 8472): (host, underlay address, VTEP address).
    Vtep(&'static str, &'static str, &'static str),
    /// Program a peer node into the overlay: (host, peer host, peer pod subnet, peer underlay address).
    Peer(&'static str, &'static str, &'static str, &'static str),
    /// Ping: (from host, to address, whether it must succeed).
    Expect(&'static str, &'static str, bool),
}

fn namespace_of(scenario: Scenario, host: &str) -> String {
    format!("{PREFIX}{scenario:?}-{host}").to_lowercase()
}

/// Runs the scenario; returns an error if any expectation failed.
pub fn run(scenario: Scenario, keep: bool, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "== {} ==", scenario.title())?;
    clean(scenario)?;
    let result = run_steps(scenario, out);
    if keep {
        writeln!(out, "namespaces kept; look around with, for example:")?;
        for host in scenario.hosts() {
            writeln!(
                out,
                "  ip netns exec {} ip addr",
                namespace_of(scenario, host)
            )?;
        }
        writeln!(
            out,
            "remove them with: weft demo {} --clean",
            format!("{scenario:?}").to_lowercase()
        )?;
    } else {
        clean(scenario)?;
        writeln!(
            out,
            "cleaned up: every {}-* namespace removed",
            namespace_of(scenario, "").trim_end_matches('-')
        )?;
    }
    result
}

/// Removes the scenario's namespaces (and with them every link inside).
pub fn clean(scenario: Scenario) -> Result<()> {
    for host in scenario.hosts() {
        let name = namespace_of(scenario, host);
        NetNs::delete_if_exists(&name).with_context(|| format!("removing namespace {name}"))?;
    }
    Ok(())
}

fn run_steps(scenario: Scenario, out: &mut dyn Write) -> Result<()> {
    let ns = |host: &str| NetNs::open(&namespace_of(scenario, host));
    for host in scenario.hosts() {
        let created = NetNs::create(&namespace_of(scenario, host))?;
        Netlink::in_namespace(&created)?.set_up("lo")?;
        writeln!(out, "+ namespace {}", created.name())?;
    }
    let mut failures = 0;
    let mut vtep_macs: Vec<(&str, [u8; 6], IpAddr)> = Vec::new();
    for step in scenario.steps() {
        match step {
            Step::Wire(a, a_if, a_addr, b, b_if, b_addr) => {
                let (a_ns, b_ns) = (ns(a)?, ns(b)?);
                let mut netlink = Netlink::in_namespace(&a_ns)?;
                netlink.ensure_veth(&VethSpec {
                    name: a_if.to_owned(),
                    peer_name: b_if.to_owned(),
                    peer_namespace: Some(b_ns.clone()),
                    ..VethSpec::default()
                })?;
                address_up(&mut netlink, a_if, a_addr)?;
                address_up(&mut Netlink::in_namespace(&b_ns)?, b_if, b_addr)?;
                writeln!(out, "+ veth {a}:{a_if} {a_addr} <-> {b}:{b_if} {b_addr}")?;
            }
            Step::Bridge(host, bridge, addr) => {
                let mut netlink = Netlink::in_namespace(&ns(host)?)?;
                netlink.ensure_bridge(bridge, None)?;
                address_up(&mut netlink, bridge, addr)?;
                writeln!(out, "+ bridge {host}:{bridge} {addr}")?;
            }
            Step::Plug(switch, bridge, port, host, addr) => {
                let host_ns = ns(host)?;
                let mut netlink = Netlink::in_namespace(&ns(switch)?)?;
                netlink.ensure_veth(&VethSpec {
                    name: port.to_owned(),
                    peer_name: "eth0".to_owned(),
                    peer_namespace: Some(host_ns.clone()),
                    ..VethSpec::default()
                })?;
                netlink.set_master(port, Some(bridge))?;
                netlink.set_up(port)?;
                address_up(&mut Netlink::in_namespace(&host_ns)?, "eth0", addr)?;
                writeln!(
                    out,
                    "+ {host}:eth0 {addr} plugged into {switch}:{bridge} via {port}"
                )?;
            }
            Step::Forward(host) => {
                sysctl::ensure(&ns(host)?, sysctl::IPV4_FORWARD, "1")?;
                writeln!(out, "+ {host}: net.ipv4.ip_forward=1")?;
            }
            Step::Route(host, dst, gateway) => {
                let spec = RouteSpec::via(dst.parse()?, gateway.parse()?);
                Netlink::in_namespace(&ns(host)?)?.ensure_route(&spec)?;
                writeln!(out, "+ {host}: route {dst} via {gateway}")?;
            }
            Step::Vtep(host, underlay, vtep) => {
                let mut netlink = Netlink::in_namespace(&ns(host)?)?;
                let link = netlink.ensure_vxlan(&VxlanSpec {
                    name: "weft.vxlan".to_owned(),
                    vni: 1,
                    port: 8472,
                    local: Some(underlay.parse()?),
                    underlay: Some("eth0".to_owned()),
                    learning: false,
                    mtu: None,
                })?;
                address_up(&mut netlink, "weft.vxlan", vtep)?;
                let mac = link.mac.context("vxlan device without a MAC")?;
                let vtep_ip = vtep.parse::<IpNet>()?.addr();
                vtep_macs.push((host, mac, vtep_ip));
                writeln!(
                    out,
                    "+ {host}: weft.vxlan vni 1 port 8472 local {underlay} ({}) {vtep}",
                    weft_linux::netlink::format_mac(&mac)
                )?;
            }
            Step::Peer(host, peer, subnet, peer_underlay) => {
                let &(_, mac, vtep_ip) = vtep_macs
                    .iter()
                    .find(|(name, _, _)| *name == peer)
                    .context("peer without a VTEP")?;
                let mut netlink = Netlink::in_namespace(&ns(host)?)?;
                netlink.ensure_neighbour("weft.vxlan", vtep_ip, mac)?;
                netlink.ensure_fdb("weft.vxlan", mac, peer_underlay.parse()?)?;
                let mut route = RouteSpec::via(subnet.parse()?, vtep_ip).with_dev("weft.vxlan");
                route.onlink = true;
                netlink.ensure_route(&route)?;
                writeln!(
                    out,
                    "+ {host}: peer {peer}: route {subnet} via {vtep_ip} onlink, neighbour and FDB entry -> {peer_underlay}"
                )?;
            }
            Step::Expect(host, target, want) => {
                let started = Instant::now();
                let reached = ping(&ns(host)?, target)?;
                let verdict = if reached == want {
                    "as expected"
                } else {
                    "WRONG"
                };
                if reached != want {
                    failures += 1;
                }
                writeln!(
                    out,
                    "  ping {host} -> {target}: {} ({verdict}, {} ms)",
                    if reached { "reply" } else { "no reply" },
                    started.elapsed().as_millis()
                )?;
            }
        }
    }
    if failures > 0 {
        bail!("{failures} reachability check(s) did not match");
    }
    Ok(())
}

fn address_up(netlink: &mut Netlink, link: &str, addr: &str) -> Result<()> {
    netlink.ensure_address(link, addr.parse()?)?;
    netlink.set_up(link)?;
    Ok(())
}

/// ICMP echo from inside `ns` (iputils `ping`): up to three tries of one
/// second each, since the first packet over a just-built path can be lost
/// while neighbours resolve.
fn ping(ns: &NetNs, target: &str) -> Result<bool> {
    for _ in 0..3 {
        let mut command = Command::new("ping");
        command
            .args(["-c", "1", "-W", "1", "-n", "-q", target])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = ns
            .spawn(&mut command)
            .context("starting ping (package iputils-ping)")?
            .wait()?;
        if status.success() {
            return Ok(true);
        }
    }
    Ok(false)
}
