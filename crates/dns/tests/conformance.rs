//! The Kubernetes DNS spec through real queries (`dig`) against a running
//! server fed from a cluster model and from the embedded store.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{config, dig, lab_cluster, short, start};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use weft_cluster::manifest::Manifest;
use weft_cluster::{Cluster, Store};

#[test]
fn cluster_ip_service_resolves_to_its_cluster_ip() {
    let s = start(&config(), Some(&lab_cluster()));
    assert_eq!(
        short(&s.port(), &["kubernetes.default.svc.cluster.local", "A"]),
        ["10.96.0.1"]
    );
    let full = dig(&s.port(), &["kubernetes.default.svc.cluster.local", "A"]);
    assert!(full.contains("flags: qr aa rd"), "{full}");
    assert!(
        full.contains("kubernetes.default.svc.cluster.local. 30 IN A\t10.96.0.1"),
        "{full}"
    );
}

#[test]
fn named_port_srv_record_matches_the_spec_example() {
    let s = start(&config(), Some(&lab_cluster()));
    assert_eq!(
        short(
            &s.port(),
            &["_https._tcp.kubernetes.default.svc.cluster.local", "SRV"]
        ),
        ["0 100 443 kubernetes.default.svc.cluster.local."]
    );
}

#[test]
fn headless_service_answers_endpoints_hostnames_and_srv_per_endpoint() {
    let s = start(&config(), Some(&lab_cluster()));
    let p = s.port();
    assert_eq!(
        short(&p, &["headless.default.svc.cluster.local"]),
        ["10.244.0.100", "10.244.0.101", "10.244.0.102"]
    );
    assert_eq!(
        short(&p, &["my-pet.headless.default.svc.cluster.local"]),
        ["10.244.0.100"]
    );
    assert_eq!(
        short(&p, &["10-244-0-102.headless.default.svc.cluster.local"]),
        ["10.244.0.102"]
    );
    assert_eq!(
        short(
            &p,
            &["_https._tcp.headless.default.svc.cluster.local", "SRV"]
        ),
        [
            "0 33 443 10-244-0-102.headless.default.svc.cluster.local.",
            "0 33 443 my-pet-2.headless.default.svc.cluster.local.",
            "0 33 443 my-pet.headless.default.svc.cluster.local.",
        ]
    );
}

#[test]
fn external_name_service_answers_cname() {
    let s = start(&config(), Some(&lab_cluster()));
    let out = dig(&s.port(), &["foo.default.svc.cluster.local", "CNAME"]);
    assert!(
        out.contains("foo.default.svc.cluster.local. 30 IN\tCNAME\twww.example.com."),
        "{out}"
    );
}

#[test]
fn reverse_lookups_name_services_and_endpoints() {
    let s = start(&config(), Some(&lab_cluster()));
    assert_eq!(
        short(&s.port(), &["-x", "10.96.0.1"]),
        ["kubernetes.default.svc.cluster.local."]
    );
    assert_eq!(
        short(&s.port(), &["-x", "10.244.0.100"]),
        ["my-pet.headless.default.svc.cluster.local."]
    );
}

#[test]
fn dns_version_and_pod_records_answer() {
    let s = start(&config(), Some(&lab_cluster()));
    assert_eq!(
        short(&s.port(), &["dns-version.cluster.local", "TXT"]),
        ["\"1.1.0\""]
    );
    assert_eq!(
        short(&s.port(), &["10-244-3-4.shop.pod.cluster.local"]),
        ["10.244.3.4"]
    );
}

#[test]
fn unknown_name_is_nxdomain_and_missing_type_is_nodata_both_with_soa() {
    let s = start(&config(), Some(&lab_cluster()));
    let nx = dig(&s.port(), &["nope.default.svc.cluster.local", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(
        nx.contains("AUTHORITY: 1")
            && nx.contains("IN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local."),
        "{nx}"
    );
    let nodata = dig(&s.port(), &["kubernetes.default.svc.cluster.local", "AAAA"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    assert!(nodata.contains("AUTHORITY: 1"), "{nodata}");
}

#[test]
fn names_are_case_insensitive() {
    let s = start(&config(), Some(&lab_cluster()));
    assert_eq!(
        short(&s.port(), &["KUBERNETES.Default.SVC.cluster.LOCAL"]),
        ["10.96.0.1"]
    );
}

#[test]
fn truncated_udp_answer_is_retried_over_tcp_by_the_client() {
    let s = start(&config(), Some(&lab_cluster()));
    let udp_only = dig(
        &s.port(),
        &["+noedns", "+ignore", "big.default.svc.cluster.local"],
    );
    assert!(udp_only.contains(" tc "), "TC bit expected: {udp_only}");
    assert_eq!(
        short(&s.port(), &["+noedns", "big.default.svc.cluster.local"]).len(),
        100
    );
    let tcp = dig(&s.port(), &["+tcp", "big.default.svc.cluster.local"]);
    assert!(tcp.contains("ANSWER: 100"), "{tcp}");
}

#[test]
fn edns_buffer_size_of_the_client_is_honoured() {
    let s = start(&config(), Some(&lab_cluster()));
    let out = dig(
        &s.port(),
        &["+bufsize=4096", "+ignore", "big.default.svc.cluster.local"],
    );
    assert!(
        out.contains("ANSWER: 100") && !out.contains(" tc "),
        "{out}"
    );
    let out = dig(
        &s.port(),
        &["+bufsize=1232", "+ignore", "big.default.svc.cluster.local"],
    );
    assert!(out.contains(" tc "), "{out}");
}

#[test]
fn short_name_resolves_through_a_pod_search_path() {
    weft_testhost::require_root!();
    let s = start(&config(), Some(&lab_cluster()));
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
    )
    .unwrap();
    // A private mount namespace: the host's /etc/resolv.conf is untouched.
    let script = format!(
        "mount --bind {} /etc/resolv.conf && dig @127.0.0.1 -p {} +tries=1 +time=2 +search +short web && dig @127.0.0.1 -p {} +tries=1 +time=2 +search +short kubernetes.default",
        resolv.display(),
        s.port(),
        s.port()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["10.96.0.20", "10.96.0.1"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn service_applied_to_the_store_resolves_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let cluster = Cluster::new();
    let _watcher = store
        .watch(&cluster, weft_cluster::store::WATCH_INTERVAL)
        .unwrap();
    let s = start(&config(), Some(&cluster));
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {clusterIP: 10.96.0.55, ports: [{name: http, port: 80}]}\n";
    let applied = Instant::now();
    store
        .apply(&[Manifest {
            origin: "web.yaml".into(),
            text: text.into(),
        }])
        .unwrap();
    loop {
        if short(&s.port(), &["web.default.svc.cluster.local"]) == ["10.96.0.55"] {
            break;
        }
        assert!(
            applied.elapsed() < Duration::from_secs(1),
            "not visible within 1 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.handler.metrics.is_ready());
}

#[test]
fn weft_dns_command_serves_the_store_named_in_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: lab}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: lab}\nspec: {clusterIP: 10.96.0.77, ports: [{port: 443}]}\n";
    store
        .apply(&[Manifest {
            origin: "api.yaml".into(),
            text: text.into(),
        }])
        .unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("dns.toml");
    std::fs::write(
        &config,
        "ops_listen = \"127.0.0.1:0\"\nupstreams = [\"127.0.0.1:9\"]\nttl = 7\n",
    )
    .unwrap();
    let args = weft_dns::DnsArgs {
        config: Some(config),
        listen: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        ops_listen: None,
        store: Some(dir.path().join("store")),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(weft_dns::serve_until(&args, async {
                let _ = stop_rx.await;
            }))
    });
    let port = port.to_string();
    let started = Instant::now();
    let answer = loop {
        let out = dig(&port, &["api.lab.svc.cluster.local"]);
        if out.contains("10.96.0.77") || started.elapsed() > Duration::from_secs(3) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        answer.contains("api.lab.svc.cluster.local. 7\tIN\tA\t10.96.0.77"),
        "{answer}"
    );
    // A change to the store is answered within a second.
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: lab}\nspec: {clusterIP: 10.96.0.78, ports: [{port: 80}]}\n";
    let applied = Instant::now();
    store
        .apply(&[Manifest {
            origin: "web.yaml".into(),
            text: text.into(),
        }])
        .unwrap();
    while short(&port, &["web.lab.svc.cluster.local"]) != ["10.96.0.78"] {
        assert!(
            applied.elapsed() < Duration::from_secs(1),
            "not visible within 1 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_tx.send(()).unwrap();
    server.join().unwrap().unwrap();
}

/// One question over UDP with hickory's message codec, the answer parsed.
fn hickory_query(server: std::net::SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.send_to(&request.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(answer.metadata.id, request.metadata.id);
    answer
}

#[test]
fn hickory_client_sees_srv_targets_in_the_additional_section() {
    let s = start(&config(), Some(&lab_cluster()));
    let answer = hickory_query(
        s.dns,
        "_https._tcp.headless.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert!(answer.metadata.authoritative);
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer.answers.len(), 3);
    let mut additional: Vec<String> = answer
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    additional.sort();
    assert_eq!(
        additional,
        [
            "10-244-0-102.headless.default.svc.cluster.local. 10.244.0.102",
            "my-pet-2.headless.default.svc.cluster.local. 10.244.0.101",
            "my-pet.headless.default.svc.cluster.local. 10.244.0.100",
        ]
    );
}

#[test]
fn hickory_client_gets_the_question_back_in_its_own_case() {
    let s = start(&config(), Some(&lab_cluster()));
    let answer = hickory_query(s.dns, "wEb.ShOp.svc.CLUSTER.local.", RecordType::A);
    assert_eq!(
        answer.queries[0].name.to_ascii(),
        "wEb.ShOp.svc.CLUSTER.local."
    );
    assert_eq!(
        answer.answers[0].name.to_ascii(),
        "wEb.ShOp.svc.CLUSTER.local."
    );
    assert_eq!(answer.answers[0].data.to_string(), "10.96.0.20");
}
