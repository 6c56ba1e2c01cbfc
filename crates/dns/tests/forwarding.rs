//! Forwarding through a second weft dns acting as upstream (hosts file
//! there), the cache, failure and failover, loop refusal, ExternalName
//! targets resolved upstream.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{config, dig, lab_cluster, short, start};
use weft_dns::{Config, DnsError, Server};

fn upstream_with_hosts(hosts: &str) -> (common::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hosts");
    std::fs::write(&path, hosts).unwrap();
    let cfg = Config {
        hosts_file: Some(path),
        hosts_ttl: 300,
        ..config()
    };
    (start(&cfg, None), dir)
}

fn forwarding_to(upstreams: &[String]) -> Config {
    Config {
        upstreams: upstreams.to_vec(),
        ..config()
    }
}

#[test]
fn names_outside_the_zone_are_answered_by_the_upstream_hosts_file() {
    let (upstream, _dir) = upstream_with_hosts("192.0.2.10 db.example.test db\n");
    let front = start(
        &forwarding_to(&[upstream.dns.to_string()]),
        Some(&lab_cluster()),
    );
    let out = dig(&front.port(), &["db.example.test"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("192.0.2.10"),
        "{out}"
    );
    assert!(
        out.contains("flags: qr rd ra;"),
        "forwarded answers are not authoritative: {out}"
    );
    // The cluster zone is still answered locally.
    assert_eq!(
        short(&front.port(), &["kubernetes.default.svc.cluster.local"]),
        ["10.96.0.1"]
    );
}

#[test]
fn repeated_question_is_answered_from_the_cache_even_after_the_upstream_stops() {
    let (upstream, _dir) = upstream_with_hosts("192.0.2.10 db.example.test\n");
    let front = start(&forwarding_to(&[upstream.dns.to_string()]), None);
    assert_eq!(short(&front.port(), &["db.example.test"]), ["192.0.2.10"]);
    drop(upstream);
    assert_eq!(short(&front.port(), &["DB.example.test"]), ["192.0.2.10"]);
    let metrics = front.handler.metrics.render();
    assert!(metrics.contains("weft_dns_cache_hits_total 1"), "{metrics}");
    assert!(
        metrics.contains("weft_dns_cache_misses_total 1"),
        "{metrics}"
    );
}

#[test]
fn upstream_nxdomain_is_passed_on_and_cached() {
    let upstream = start(&config(), Some(&lab_cluster()));
    let front = start(
        &Config {
            zone: "front.local".to_owned(),
            ..forwarding_to(&[upstream.dns.to_string()])
        },
        None,
    );
    for _ in 0..2 {
        let out = dig(&front.port(), &["nope.default.svc.cluster.local"]);
        assert!(
            out.contains("status: NXDOMAIN") && out.contains("IN\tSOA\tns.dns.cluster.local."),
            "{out}"
        );
    }
    assert!(
        front
            .handler
            .metrics
            .render()
            .contains("weft_dns_cache_hits_total 1")
    );
}

#[test]
fn upstream_servfail_is_passed_on_and_not_cached() {
    // This upstream has no upstream of its own: it answers SERVFAIL.
    let (upstream, _dir) = upstream_with_hosts("192.0.2.10 db.example.test\n");
    let front = start(&forwarding_to(&[upstream.dns.to_string()]), None);
    for _ in 0..2 {
        let out = dig(&front.port(), &["nothing.example.test"]);
        assert!(out.contains("status: SERVFAIL"), "{out}");
    }
    assert!(
        front
            .handler
            .metrics
            .render()
            .contains("weft_dns_cache_hits_total 0")
    );
}

#[test]
fn upstream_down_gives_servfail_quickly() {
    let front = start(&config(), None);
    let started = Instant::now();
    let out = dig(&front.port(), &["example.com"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        front
            .handler
            .metrics
            .render()
            .contains("weft_dns_upstream_errors_total{upstream=\"127.0.0.1:9\"} 1")
    );
}

#[test]
fn silent_upstream_times_out_and_the_next_one_answers() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (upstream, _dir) =
        upstream_with_hosts("192.0.2.10 db.example.test\n192.0.2.11 cache.example.test\n");
    let front = start(
        &forwarding_to(&[
            silent.local_addr().unwrap().to_string(),
            upstream.dns.to_string(),
        ]),
        None,
    );
    let started = Instant::now();
    assert_eq!(short(&front.port(), &["db.example.test"]), ["192.0.2.10"]);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the silent upstream was tried first"
    );
    // Marked down: the next question goes straight to the healthy one.
    let started = Instant::now();
    assert_eq!(
        short(&front.port(), &["cache.example.test"]),
        ["192.0.2.11"]
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn truncated_upstream_answer_is_retried_over_tcp() {
    let upstream = start(&config(), Some(&lab_cluster()));
    let front = start(
        &Config {
            zone: "front.local".to_owned(),
            ..forwarding_to(&[upstream.dns.to_string()])
        },
        None,
    );
    let out = dig(&front.port(), &["+tcp", "big.default.svc.cluster.local"]);
    assert!(out.contains("ANSWER: 100"), "{out}");
}

#[test]
fn external_name_target_is_resolved_upstream() {
    let (upstream, _dir) = upstream_with_hosts("192.0.2.53 www.example.com\n");
    let front = start(
        &forwarding_to(&[upstream.dns.to_string()]),
        Some(&lab_cluster()),
    );
    let out = dig(&front.port(), &["foo.default.svc.cluster.local", "A"]);
    assert!(
        out.contains("CNAME\twww.example.com.")
            && out.contains("www.example.com.\t300\tIN\tA\t192.0.2.53"),
        "{out}"
    );
}

#[test]
fn forwarding_to_its_own_listen_address_is_refused() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let own = format!("127.0.0.1:{port}");
    let cfg = Config {
        listen: own.parse().unwrap(),
        upstreams: vec![own.clone()],
        ..config()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime.block_on(Server::bind(&cfg)).expect_err("a loop");
    assert!(matches!(err, DnsError::Loop(_)), "{err}");
    assert!(err.to_string().contains(&own), "{err}");
}

/// ExternalNames whose targets the server answers itself: a Service of the
/// cluster zone, a name of the hosts file, and another ExternalName. The
/// upstream (a closed port) is never needed.
#[test]
fn external_name_targets_in_the_zone_or_the_hosts_file_are_resolved_locally() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "192.0.2.80 external\n").unwrap();
    let cluster = lab_cluster();
    let external_name = |name: &str, target: &str| {
        let mut service = weft_cluster::testing::mk_service("default", name, &[], &[]);
        if let Some(spec) = service.spec.as_mut() {
            spec.type_ = Some("ExternalName".to_owned());
            spec.external_name = Some(target.to_owned());
        }
        weft_cluster::Object::from(service)
    };
    cluster.update(|index| {
        index.upsert(external_name("inside", "web.shop.svc.cluster.local"))
            | index.upsert(external_name("hosted", "external"))
            | index.upsert(external_name("twice", "inside.default.svc.cluster.local"))
            | index.upsert(external_name("loop1", "loop2.default.svc.cluster.local"))
            | index.upsert(external_name("loop2", "loop1.default.svc.cluster.local"))
    });
    let cfg = Config {
        hosts_file: Some(hosts),
        hosts_ttl: 300,
        ..config()
    };
    let server = start(&cfg, Some(&cluster));
    for (name, target, address) in [
        ("inside", "web.shop.svc.cluster.local.", "10.96.0.20"),
        ("hosted", "external.", "192.0.2.80"),
        ("twice", "web.shop.svc.cluster.local.", "10.96.0.20"),
    ] {
        let out = dig(
            &server.port(),
            &[&format!("{name}.default.svc.cluster.local"), "A"],
        );
        assert!(
            out.contains("status: NOERROR")
                && out.contains(&format!("CNAME\t{target}"))
                && out.contains(&format!("IN\tA\t{address}")),
            "{name}: {out}"
        );
    }
    // A loop ends where it closes: each CNAME once.
    let out = dig(&server.port(), &["loop1.default.svc.cluster.local", "A"]);
    assert_eq!(out.matches("\tCNAME\t").count(), 2, "{out}");
}

#[test]
fn a_port_that_cannot_be_bound_is_named_in_the_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ops = taken.local_addr().unwrap();
    let cfg = Config {
        ops_listen: ops,
        ..config()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime
        .block_on(Server::bind(&cfg))
        .expect_err("the ops port is taken");
    assert_eq!(err.to_string(), format!("cannot listen on {ops}"));
}
