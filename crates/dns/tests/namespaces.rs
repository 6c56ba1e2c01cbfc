//! Forwarding between network namespaces: a front `weft dns` in one
//! throwaway namespace forwards to second instances (hosts files) in
//! another, over a veth pair, as a cluster DNS pod forwards to the node's
//! resolver. Covers answers and cache hits across the link, an upstream
//! that goes away (SERVFAIL quickly), loop refusal, and active health
//! checks (a down upstream is skipped until a probe gets an answer).
//!
//! Needs root (namespaces); traffic stays inside the test namespaces.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_dns::server::Handler;
use weft_dns::{Config, DnsError, Server};
use weft_testhost::{TestNs, connect, net, require_root};

const FRONT_IP: &str = "10.53.0.1";
const UPSTREAM_IP: &str = "10.53.0.2";

/// A server running on its own thread inside a namespace (its sockets,
/// upstream queries included, live there); stops when dropped.
struct NsServer {
    handler: Arc<Handler>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for NsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn try_start_in(ns: &TestNs, config: Config) -> Result<NsServer, String> {
    let netns = ns.ns().clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let ran = netns.run(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = match Server::bind(&config).await {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(server.handler()));
                tokio::select! {
                    () = server.serve() => {}
                    _ = stop_rx => {}
                }
            });
        });
        ran.unwrap();
    });
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(handler)) => Ok(NsServer {
            handler,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(match e {
                DnsError::Loop(l) => format!("loop: {l}"),
                other => format!("{other}: {:?}", std::error::Error::source(&other)),
            })
        }
        Err(e) => panic!("server did not start: {e}"),
    }
}

fn start_in(ns: &TestNs, config: Config) -> NsServer {
    try_start_in(ns, config).unwrap()
}

/// Two namespaces joined by a veth pair: `front` (10.53.0.1) and `up`
/// (10.53.0.2).
fn pair() -> (TestNs, TestNs) {
    let (front, up) = (TestNs::new(), TestNs::new());
    connect(
        &front,
        "dns0",
        net(&format!("{FRONT_IP}/24")),
        &up,
        "dns0",
        net(&format!("{UPSTREAM_IP}/24")),
    );
    (front, up)
}

fn base(listen: &str) -> Config {
    Config {
        listen: listen.parse().unwrap(),
        ops_listen: "127.0.0.1:0".parse().unwrap(),
        // Nothing listens there: no query leaves the namespaces.
        upstreams: vec!["127.0.0.1:9".to_owned()],
        upstream_timeout_ms: 500,
        ..Config::default()
    }
}

/// An upstream answering `hosts` from a file, on `listen` in `ns`.
fn upstream(ns: &TestNs, listen: &str, hosts: &str) -> (NsServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("hosts");
    std::fs::write(&path, hosts).unwrap();
    let config = Config {
        hosts_file: Some(path),
        hosts_ttl: 300,
        ..base(listen)
    };
    (start_in(ns, config), dir)
}

fn front_config(upstreams: &[&str]) -> Config {
    Config {
        upstreams: upstreams.iter().map(|u| (*u).to_owned()).collect(),
        health_check_ms: 100,
        ..base(&format!("{FRONT_IP}:53"))
    }
}

/// `dig` run inside `ns` against the front; its whole output.
fn dig(ns: &TestNs, args: &[&str]) -> String {
    let server = format!("@{FRONT_IP}");
    let out = ns.exec(
        "dig",
        &[&[server.as_str(), "+tries=1", "+time=2"], args].concat(),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn short(ns: &TestNs, name: &str) -> String {
    dig(ns, &["+short", name]).trim().to_owned()
}

fn metric(server: &NsServer, line: &str) -> bool {
    server.handler.metrics.render().lines().any(|l| l == line)
}

#[test]
fn forwarding_to_an_instance_in_another_namespace() {
    require_root!();
    let (front_ns, up_ns) = pair();
    let (upstream, _dir) = upstream(
        &up_ns,
        &format!("{UPSTREAM_IP}:53"),
        "192.0.2.10 db.example.test\n192.0.2.11 other.example.test\n",
    );
    let front = start_in(&front_ns, front_config(&[&format!("{UPSTREAM_IP}:53")]));

    let out = dig(&front_ns, &["db.example.test"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("192.0.2.10"),
        "{out}"
    );
    assert!(metric(&front, "weft_dns_cache_misses_total 1"));
    // The repeat is a cache hit, in any case.
    assert_eq!(short(&front_ns, "DB.Example.Test"), "192.0.2.10");
    assert!(metric(&front, "weft_dns_cache_hits_total 1"));
    assert!(metric(&front, "weft_dns_cache_misses_total 1"));

    // The upstream goes away: a new name fails quickly (its namespace
    // answers port unreachable), the cached one is still answered.
    drop(upstream);
    let started = Instant::now();
    let out = dig(&front_ns, &["other.example.test"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(metric(
        &front,
        &format!("weft_dns_upstream_errors_total{{upstream=\"{UPSTREAM_IP}:53\"}} 1")
    ));
    assert_eq!(short(&front_ns, "db.example.test"), "192.0.2.10");
}

#[test]
fn a_silent_upstream_in_another_namespace_gives_servfail_after_the_timeout() {
    require_root!();
    let (front_ns, up_ns) = pair();
    // A socket that reads nothing: queries to it time out.
    let _silent = up_ns.run(|| std::net::UdpSocket::bind(format!("{UPSTREAM_IP}:53")).unwrap());
    let front = start_in(&front_ns, front_config(&[&format!("{UPSTREAM_IP}:53")]));
    let started = Instant::now();
    let out = dig(&front_ns, &["db.example.test"]);
    let took = started.elapsed();
    assert!(out.contains("status: SERVFAIL"), "{out}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
        "took {took:?} with a 500 ms upstream timeout"
    );
    assert!(metric(
        &front,
        &format!("weft_dns_upstream_up{{upstream=\"{UPSTREAM_IP}:53\"}} 0")
    ));
}

#[test]
fn forwarding_loops_are_refused_in_a_namespace() {
    require_root!();
    let (front_ns, _up_ns) = pair();
    // Its own address.
    let own = format!("{FRONT_IP}:53");
    let err = try_start_in(&front_ns, front_config(&[&own]))
        .err()
        .expect("a loop");
    assert!(err.starts_with("loop:") && err.contains(&own), "{err}");
    // Loopback while listening on every address of the namespace.
    let err = try_start_in(
        &front_ns,
        Config {
            listen: "0.0.0.0:53".parse().unwrap(),
            ..front_config(&["127.0.0.1:53"])
        },
    )
    .err()
    .expect("a loop");
    assert!(err.starts_with("loop:"), "{err}");
    // Another port of the same address is not a loop.
    let fine = try_start_in(&front_ns, front_config(&[&format!("{FRONT_IP}:5353")]));
    assert!(fine.is_ok(), "{:?}", fine.err());
}

#[test]
fn a_down_upstream_is_skipped_until_a_health_probe_succeeds() {
    require_root!();
    let (front_ns, up_ns) = pair();
    let first: SocketAddr = format!("{UPSTREAM_IP}:53").parse().unwrap();
    let second: SocketAddr = format!("{UPSTREAM_IP}:5353").parse().unwrap();
    let names: String = (1..=6).map(|i| format!(" n{i}.example.test")).collect();
    let first_hosts = format!("192.0.2.1{names}\n");
    let (one, _d1) = upstream(&up_ns, &first.to_string(), &first_hosts);
    let (_two, _d2) = upstream(&up_ns, &second.to_string(), &format!("192.0.2.2{names}\n"));
    let front = start_in(
        &front_ns,
        front_config(&[&first.to_string(), &second.to_string()]),
    );
    let up_line =
        |addr: SocketAddr, v: u8| format!("weft_dns_upstream_up{{upstream=\"{addr}\"}} {v}");
    let errors_line = |addr: SocketAddr, n: u8| {
        format!("weft_dns_upstream_errors_total{{upstream=\"{addr}\"}} {n}")
    };

    // Sequential: the first upstream answers while it is up.
    assert_eq!(short(&front_ns, "n1.example.test"), "192.0.2.1");
    assert!(metric(&front, &up_line(first, 1)));

    // It stops: the question fails over to the second, and the first is down.
    drop(one);
    assert_eq!(short(&front_ns, "n2.example.test"), "192.0.2.2");
    assert!(metric(&front, &up_line(first, 0)));
    assert!(metric(&front, &errors_line(first, 1)));

    // Probes keep failing: later questions skip it (no new errors).
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(short(&front_ns, "n3.example.test"), "192.0.2.2");
    assert!(metric(&front, &errors_line(first, 1)));
    assert!(metric(&front, &up_line(first, 0)));

    // It comes back: a probe finds it and it answers again.
    let (_one_again, _d3) = upstream(&up_ns, &first.to_string(), &first_hosts);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !metric(&front, &up_line(first, 1)) {
        assert!(Instant::now() < deadline, "no probe marked it up again");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(short(&front_ns, "n4.example.test"), "192.0.2.1");
    assert!(metric(&front, &errors_line(first, 1)));
}
