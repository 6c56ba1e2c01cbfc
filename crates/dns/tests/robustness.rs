//! Hostile and slow clients: idle TCP connections, connection limits,
//! pipelining, 10,000 malformed packets; and the ops endpoints.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{config, lab_cluster, short, start};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use weft_dns::Config;
use weft_dns::config::Limits;

fn query_bytes(name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn read_framed(stream: &mut TcpStream) -> Message {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

#[test]
fn idle_tcp_client_does_not_block_udp_or_other_tcp_clients() {
    let s = start(&config(), Some(&lab_cluster()));
    let mut idle = TcpStream::connect(s.dns).unwrap();
    idle.write_all(&[0]).unwrap(); // half a length prefix, then nothing
    let started = Instant::now();
    assert_eq!(
        short(&s.port(), &["kubernetes.default.svc.cluster.local"]),
        ["10.96.0.1"]
    );
    assert_eq!(
        short(&s.port(), &["+tcp", "kubernetes.default.svc.cluster.local"]),
        ["10.96.0.1"]
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn idle_tcp_connection_is_closed_after_the_idle_timeout() {
    let cfg = Config {
        limits: Limits {
            tcp_idle_timeout_ms: 300,
            ..Limits::default()
        },
        ..config()
    };
    let s = start(&cfg, None);
    let mut idle = TcpStream::connect(s.dns).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "closed by the server");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn connections_beyond_the_limit_are_closed_and_udp_still_answers() {
    let cfg = Config {
        limits: Limits {
            max_tcp_connections: 2,
            ..Limits::default()
        },
        ..config()
    };
    let s = start(&cfg, Some(&lab_cluster()));
    let _a = TcpStream::connect(s.dns).unwrap();
    let _b = TcpStream::connect(s.dns).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut c = TcpStream::connect(s.dns).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1];
    assert!(
        matches!(c.read(&mut buf), Ok(0) | Err(_)),
        "third connection closed"
    );
    assert_eq!(
        short(&s.port(), &["kubernetes.default.svc.cluster.local"]),
        ["10.96.0.1"]
    );
}

#[test]
fn pipelined_tcp_queries_are_all_answered() {
    let s = start(&config(), Some(&lab_cluster()));
    let mut stream = TcpStream::connect(s.dns).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let names = [
        "kubernetes.default.svc.cluster.local.",
        "web.shop.svc.cluster.local.",
        "nope.default.svc.cluster.local.",
    ];
    let mut batch = Vec::new();
    let mut ids = Vec::new();
    for name in names {
        let q = query_bytes(name);
        ids.push(u16::from_be_bytes([q[0], q[1]]));
        batch.extend_from_slice(&u16::try_from(q.len()).unwrap().to_be_bytes());
        batch.extend_from_slice(&q);
    }
    stream.write_all(&batch).unwrap();
    let mut answered: Vec<u16> = (0..3)
        .map(|_| read_framed(&mut stream).metadata.id)
        .collect();
    answered.sort_unstable();
    ids.sort_unstable();
    assert_eq!(answered, ids);
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn ten_thousand_malformed_packets_cause_no_panic_and_no_hang() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let s = start(&config(), Some(&lab_cluster()));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let valid = query_bytes("kubernetes.default.svc.cluster.local.");
    for i in 0..10_000u32 {
        let packet: Vec<u8> = if i % 2 == 0 {
            let len = rand::random_range(0..600);
            (0..len).map(|_| rand::random()).collect()
        } else {
            // A valid query with a few bytes changed: gets deeper into the
            // parser than pure noise.
            let mut p = valid.clone();
            for _ in 0..rand::random_range(1..6) {
                let at = rand::random_range(0..p.len());
                p[at] = rand::random();
            }
            p.truncate(rand::random_range(1..=p.len()));
            p
        };
        client.send_to(&packet, s.dns).unwrap();
        if i % 1000 == 0 {
            // Garbage over TCP too.
            let mut t = TcpStream::connect(s.dns).unwrap();
            let _ = t.write_all(&u16::try_from(packet.len()).unwrap().to_be_bytes());
            let _ = t.write_all(&packet);
        }
    }
    let started = Instant::now();
    assert_eq!(
        short(&s.port(), &["kubernetes.default.svc.cluster.local"]),
        ["10.96.0.1"]
    );
    assert_eq!(
        short(&s.port(), &["+tcp", "kubernetes.default.svc.cluster.local"]),
        ["10.96.0.1"]
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task panicked");
    let metrics = s.handler.metrics.render();
    assert!(
        metrics.contains("rcode=\"FORMERR\""),
        "some packets answered FORMERR: {metrics}"
    );
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn ops_port_serves_health_readiness_and_metrics() {
    let s = start(&config(), None);
    assert!(http_get(s.ops, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(
        http_get(s.ops, "/ready").starts_with("HTTP/1.1 503"),
        "not ready before a sync"
    );
    let s = start(&config(), Some(&lab_cluster()));
    assert!(http_get(s.ops, "/ready").starts_with("HTTP/1.1 200"));
    short(&s.port(), &["kubernetes.default.svc.cluster.local"]);
    let metrics = http_get(s.ops, "/metrics");
    assert!(
        metrics
            .contains("weft_dns_queries_total{type=\"A\",transport=\"udp\",rcode=\"NOERROR\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weft_dns_query_duration_seconds_bucket"),
        "{metrics}"
    );
}
