//! Throwaway hosts for privileged tests: each [`TestNs`] is a fresh network
//! namespace named `weft-t-<random>`, with loopback up, deleted when the
//! value drops (also while a failing test unwinds), together with every link
//! inside it. Helpers run commands or closures inside a namespace and wire
//! namespaces together with veth pairs and bridges.
//!
//! Nothing here touches the namespace the test runs in: links are created
//! inside test namespaces only (a veth pair is created in one test namespace
//! with its peer placed directly into the other).
//!
//! Tests that need root call [`require_root!`] first: without root they
//! print a visible `SKIPPED` line and return, rather than passing silently
//! with nothing checked.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::process::{Child, Command, Output, Stdio};

use ipnet::IpNet;
use weft_linux::{NetNs, Netlink, VethSpec};

/// Prefix of every namespace this crate creates.
pub const PREFIX: &str = "weft-t-";

/// Whether the test process runs as root (needed for namespaces).
pub fn is_root() -> bool {
    nix_euid_is_root()
}

fn nix_euid_is_root() -> bool {
    // /proc/self/status "Uid:" line: real, effective, saved, fs.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Returns from the calling test with a visible `SKIPPED` message when the
/// process is not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!(
                "SKIPPED {}: needs root (network namespaces)",
                module_path!()
            );
            return;
        }
    };
}

/// A throwaway network namespace, deleted on drop.
#[derive(Debug)]
pub struct TestNs {
    ns: NetNs,
    /// Processes started with [`TestNs::spawn`], killed on drop.
    children: std::sync::Mutex<Vec<Child>>,
}

impl TestNs {
    /// Creates `weft-t-<random>` with `lo` up. Panics on failure (test code).
    pub fn new() -> TestNs {
        let suffix: u64 = rand::random();
        let name = format!("{PREFIX}{:012x}", suffix & 0xffff_ffff_ffff);
        let ns = NetNs::create(&name)
            .unwrap_or_else(|err| panic!("creating test namespace {name}: {err}"));
        let host = TestNs {
            ns,
            children: std::sync::Mutex::new(Vec::new()),
        };
        host.netlink()
            .set_up("lo")
            .unwrap_or_else(|err| panic!("bringing lo up in {name}: {err}"));
        host
    }

    /// The namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The namespace's name (`weft-t-…`).
    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// A netlink handle inside this namespace.
    pub fn netlink(&self) -> Netlink {
        Netlink::in_namespace(&self.ns)
            .unwrap_or_else(|err| panic!("netlink in {}: {err}", self.name()))
    }

    /// Runs `work` on a thread inside the namespace.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        self.ns
            .run(work)
            .unwrap_or_else(|err| panic!("running in {}: {err}", self.name()))
    }

    /// Runs `program args…` inside the namespace and waits for it.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null());
        let child = self
            .ns
            .spawn(command.stdout(Stdio::piped()).stderr(Stdio::piped()))
            .unwrap_or_else(|err| panic!("starting {program} in {}: {err}", self.name()));
        child
            .wait_with_output()
            .unwrap_or_else(|err| panic!("waiting for {program} in {}: {err}", self.name()))
    }

    /// Runs a shell command line inside the namespace and waits for it.
    pub fn sh(&self, script: &str) -> Output {
        self.exec("sh", &["-c", script])
    }

    /// Starts a long-running process inside the namespace; it is killed
    /// when this namespace is dropped. Returns its pid.
    pub fn spawn(&self, command: &mut Command) -> u32 {
        let child = self
            .ns
            .spawn(command)
            .unwrap_or_else(|err| panic!("starting process in {}: {err}", self.name()));
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(child);
        pid
    }

    /// Whether an ICMP echo to `ip` is answered within a second, trying up
    /// to three times: on a path that was just built, the very first packet
    /// can be lost while ports and neighbours settle, and that is not what a
    /// reachability test is about.
    pub fn ping(&self, ip: IpAddr) -> bool {
        let target = ip.to_string();
        (0..3).any(|_| {
            self.exec("ping", &["-c", "1", "-W", "1", "-n", "-q", &target])
                .status
                .success()
        })
    }
}

impl Default for TestNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let mut children = self
            .children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for child in children.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(children);
        // Deleting the namespace frees every link inside it; a veth whose
        // peer lives in another test namespace goes with it.
        if let Err(err) = NetNs::delete_if_exists(self.ns.name()) {
            eprintln!("cleaning up test namespace {}: {err}", self.name());
        }
    }
}

/// Connects `a` and `b` with a veth pair (`a_if` in `a`, `b_if` in `b`),
/// assigns the addresses and brings both ends up.
pub fn connect(a: &TestNs, a_if: &str, a_addr: IpNet, b: &TestNs, b_if: &str, b_addr: IpNet) {
    let mut a_netlink = a.netlink();
    a_netlink
        .ensure_veth(&VethSpec {
            name: a_if.to_owned(),
            peer_name: b_if.to_owned(),
            peer_namespace: Some(b.ns().clone()),
            ..VethSpec::default()
        })
        .unwrap_or_else(|err| panic!("veth {a_if}/{b_if}: {err}"));
    configure(&mut a_netlink, a_if, Some(a_addr));
    configure(&mut b.netlink(), b_if, Some(b_addr));
}

/// Plugs `host` into bridge `bridge` living in `switch`: a veth pair whose
/// end `port` is enslaved to the bridge and whose other end is `host_if`
/// (with `host_addr`) in `host`. The bridge must exist.
pub fn plug(
    switch: &TestNs,
    bridge: &str,
    port: &str,
    host: &TestNs,
    host_if: &str,
    host_addr: Option<IpNet>,
) {
    let mut switch_netlink = switch.netlink();
    switch_netlink
        .ensure_veth(&VethSpec {
            name: port.to_owned(),
            peer_name: host_if.to_owned(),
            peer_namespace: Some(host.ns().clone()),
            ..VethSpec::default()
        })
        .unwrap_or_else(|err| panic!("veth {port}/{host_if}: {err}"));
    switch_netlink
        .set_master(port, Some(bridge))
        .unwrap_or_else(|err| panic!("enslaving {port} to {bridge}: {err}"));
    configure(&mut switch_netlink, port, None);
    configure(&mut host.netlink(), host_if, host_addr);
}

fn configure(netlink: &mut Netlink, link: &str, addr: Option<IpNet>) {
    if let Some(addr) = addr {
        netlink
            .ensure_address(link, addr)
            .unwrap_or_else(|err| panic!("address {addr} on {link}: {err}"));
    }
    netlink
        .set_up(link)
        .unwrap_or_else(|err| panic!("bringing {link} up: {err}"));
}

/// Parses an address literal in test code (`"10.0.0.1/24"`).
pub fn net(text: &str) -> IpNet {
    text.parse()
        .unwrap_or_else(|err| panic!("bad test address {text}: {err}"))
}

/// Parses an IP literal in test code (`"10.0.0.1"`).
pub fn ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|err| panic!("bad test IP {text}: {err}"))
}
