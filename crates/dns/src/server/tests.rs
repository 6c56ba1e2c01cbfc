use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weft_cluster::testing::{mk_service, set_cluster_ip};

use super::{Handler, Transport};
use crate::config::Limits;
use crate::ops::Metrics;
use crate::records::{Index, ZoneSettings};

/// A headless Service with 60 endpoints: its A answer is ~1 KB.
fn handler() -> Handler {
    let mut svc = mk_service("default", "big", &[], &[]);
    set_cluster_ip(&mut svc, "None");
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some("big-1".to_owned()),
            namespace: Some("default".to_owned()),
            labels: Some([("kubernetes.io/service-name".to_owned(), "big".to_owned())].into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".to_owned(),
        endpoints: (1..=60)
            .map(|i| Endpoint {
                addresses: vec![format!("10.244.0.{i}")],
                ..Endpoint::default()
            })
            .collect(),
        ports: None,
    };
    Handler {
        index: ArcSwap::from_pointee(Index::build(&ZoneSettings::default(), [&svc], [&slice], [])),
        hosts: None,
        forwarder: None,
        metrics: Arc::new(Metrics::new()),
        limits: Limits::default(),
    }
}

fn query(name: &str, edns: Option<u16>) -> Vec<u8> {
    query_of(name, RecordType::A, edns)
}

/// A recursion-desired query for `name` of `qtype`, with an OPT record
/// advertising `edns` when given.
fn query_of(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
}

/// The general path's answer to `bytes` over UDP and the fast path's, if
/// it takes the query.
fn both_paths(handler: &Handler, bytes: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let now = std::time::Instant::now();
    let general = handler
        .answer_general(bytes, Transport::Udp, now)
        .ok()
        .flatten()
        .expect("the general path answers without an upstream");
    let view = super::QueryView::parse(bytes).expect("a query of the common shape");
    (
        general,
        handler.answer_fast(&view, bytes, Transport::Udp, now),
    )
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn large_udp_answer_without_edns_is_truncated_with_tc() {
    let out = block_on(handler().handle(
        &query("big.default.svc.cluster.local.", None),
        Transport::Udp,
    ))
    .expect("answered");
    let answer = Message::from_vec(&out).expect("parse");
    assert!(out.len() <= 512);
    assert!(answer.metadata.truncation);
    assert!(answer.answers.is_empty());
}

#[test]
fn edns_buffer_size_lets_the_whole_answer_through_udp() {
    let out = block_on(handler().handle(
        &query("big.default.svc.cluster.local.", Some(4096)),
        Transport::Udp,
    ))
    .expect("answered");
    let answer = Message::from_vec(&out).expect("parse");
    assert!(!answer.metadata.truncation);
    assert_eq!(answer.answers.len(), 60);
    assert!(answer.edns.is_some(), "EDNS answered with EDNS");
}

#[test]
fn tcp_answer_is_never_truncated() {
    let out = block_on(handler().handle(
        &query("big.default.svc.cluster.local.", None),
        Transport::Tcp,
    ))
    .expect("answered");
    let answer = Message::from_vec(&out).expect("parse");
    assert_eq!(answer.answers.len(), 60);
    assert!(answer.metadata.authoritative);
}

#[test]
fn garbage_after_a_header_is_answered_formerr_and_fragments_are_dropped() {
    let mut bytes = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    bytes.extend_from_slice(&[0xff; 5]);
    let out = block_on(handler().handle(&bytes, Transport::Udp)).expect("formerr");
    let answer = Message::from_vec(&out).expect("parse");
    assert_eq!(answer.metadata.id, 0xabcd);
    assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    assert!(block_on(handler().handle(&[1, 2, 3], Transport::Udp)).is_none());
}

#[test]
fn responses_sent_to_the_server_are_not_answered() {
    let mut bytes = query("big.default.svc.cluster.local.", None);
    bytes[2] |= 0x80;
    assert!(block_on(handler().handle(&bytes, Transport::Udp)).is_none());
}

#[test]
fn names_outside_the_zone_are_refused_without_upstreams() {
    let out =
        block_on(handler().handle(&query("example.com.", None), Transport::Udp)).expect("answered");
    let answer = Message::from_vec(&out).expect("parse");
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
}

/// A zone with every kind of name: ClusterIP with named ports (SRV and its
/// additionals), headless with and without hostnames, ExternalName, PTR.
fn rich_handler() -> Handler {
    let mut web = mk_service(
        "ns1",
        "web",
        &[],
        &[("http", 80, "8080"), ("dns", 53, "53")],
    );
    set_cluster_ip(&mut web, "10.96.0.20");
    let mut pets = mk_service("ns1", "pets", &[], &[("http", 80, "80")]);
    set_cluster_ip(&mut pets, "None");
    let mut ext = mk_service("ns1", "ext", &[], &[]);
    if let Some(spec) = ext.spec.as_mut() {
        spec.type_ = Some("ExternalName".to_owned());
        spec.external_name = Some("Www.Example.com".to_owned());
    }
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some("pets-1".to_owned()),
            namespace: Some("ns1".to_owned()),
            labels: Some([("kubernetes.io/service-name".to_owned(), "pets".to_owned())].into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".to_owned(),
        endpoints: vec![
            Endpoint {
                addresses: vec!["10.244.1.5".to_owned()],
                hostname: Some("cat".to_owned()),
                ..Endpoint::default()
            },
            Endpoint {
                addresses: vec!["10.244.1.6".to_owned()],
                ..Endpoint::default()
            },
        ],
        ports: Some(vec![k8s_openapi::api::discovery::v1::EndpointPort {
            name: Some("http".to_owned()),
            port: Some(80),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
    };
    Handler {
        index: ArcSwap::from_pointee(Index::build(
            &ZoneSettings::default(),
            [&web, &pets, &ext],
            [&slice],
            [],
        )),
        hosts: None,
        forwarder: None,
        metrics: Arc::new(Metrics::new()),
        limits: Limits::default(),
    }
}

/// The sections of a response as comparable text.
fn sections(bytes: &[u8]) -> String {
    let m = Message::from_vec(bytes).expect("a response hickory reads");
    let text = |records: &[hickory_proto::rr::Record]| {
        records
            .iter()
            .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
            .collect::<Vec<_>>()
            .join("; ")
    };
    format!(
        "id={} aa={} ad={} cd={} tc={} rd={} ra={} rcode={:?} q={:?} an=[{}] ns=[{}] ar=[{}] edns={:?}",
        m.metadata.id,
        m.metadata.authoritative,
        m.metadata.authentic_data,
        m.metadata.checking_disabled,
        m.metadata.truncation,
        m.metadata.recursion_desired,
        m.metadata.recursion_available,
        m.metadata.response_code,
        m.queries,
        text(&m.answers),
        text(&m.authorities),
        text(&m.additionals),
        m.edns.as_ref().map(|e| e.max_payload()),
    )
}

#[test]
fn fast_path_answers_exactly_as_the_general_path() {
    let handler = rich_handler();
    let questions = [
        ("web.ns1.svc.cluster.local.", RecordType::A),
        ("WEB.Ns1.svc.cluster.local.", RecordType::A),
        ("web.ns1.svc.cluster.local.", RecordType::AAAA),
        ("web.ns1.svc.cluster.local.", RecordType::ANY),
        ("_http._tcp.web.ns1.svc.cluster.local.", RecordType::SRV),
        ("_http._tcp.pets.ns1.svc.cluster.local.", RecordType::SRV),
        ("pets.ns1.svc.cluster.local.", RecordType::A),
        ("cat.pets.ns1.svc.cluster.local.", RecordType::A),
        ("10-244-1-6.pets.ns1.svc.cluster.local.", RecordType::A),
        ("ext.ns1.svc.cluster.local.", RecordType::A),
        ("ext.ns1.svc.cluster.local.", RecordType::CNAME),
        ("20.0.96.10.in-addr.arpa.", RecordType::PTR),
        ("5.1.244.10.in-addr.arpa.", RecordType::PTR),
        ("nope.ns1.svc.cluster.local.", RecordType::A),
        ("ns1.svc.cluster.local.", RecordType::A),
        ("cluster.local.", RecordType::SOA),
        ("cluster.local.", RecordType::NS),
        ("dns-version.cluster.local.", RecordType::TXT),
        ("10-1-2-3.ns1.pod.cluster.local.", RecordType::A),
        ("10-1-2-3.ns1.pod.cluster.local.", RecordType::AAAA),
        ("ns1.pod.cluster.local.", RecordType::A),
    ];
    let mut fast_answers = 0;
    for (name, qtype) in questions {
        for edns in [None, Some(1232)] {
            let (general, fast) = both_paths(&handler, &query_of(name, qtype, edns));
            let Some(fast) = fast else {
                continue;
            };
            fast_answers += 1;
            assert_eq!(sections(&fast), sections(&general), "{name} {qtype}");
        }
    }
    // Every question above is in the zone and there is no forwarder; only
    // `ext` (an ExternalName) asked for A goes the general way, which
    // chases its target.
    assert_eq!(fast_answers, 2 * (questions.len() - 1));
}

#[test]
fn fast_path_truncates_like_the_general_path() {
    let handler = handler();
    for edns in [None, Some(512), Some(1232)] {
        let (general, fast) = both_paths(&handler, &query("big.default.svc.cluster.local.", edns));
        let fast = fast.expect("fast answer");
        assert_eq!(sections(&fast), sections(&general));
        // 60 addresses take about 1 KB: they fit only in a 1232-byte buffer.
        let truncated = Message::from_vec(&fast).expect("read").metadata.truncation;
        assert_eq!(truncated, edns != Some(1232), "{edns:?}");
    }
}

#[test]
fn cached_forwarded_answers_come_out_of_the_fast_path_as_out_of_the_general_one() {
    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::rdata::{A, CNAME, SOA};
    use hickory_proto::rr::{RData, Record};

    use crate::config::{CacheConfig, Policy};
    use crate::forward::Forwarder;
    use crate::forward::cache::Cache;

    let cache = Cache::new(CacheConfig {
        max_entries: 10,
        max_positive_ttl: 60,
        max_negative_ttl: 10,
    });
    let n = |s: &str| Name::from_ascii(s).expect("name");
    // A CNAME chain (names compressed against the question) and a negative
    // answer with its SOA.
    let mut chain = Message::new(0, MessageType::Response, OpCode::Query);
    chain.add_answer(Record::from_rdata(
        n("www.example.com."),
        300,
        RData::CNAME(CNAME(n("web.example.com."))),
    ));
    chain.add_answer(Record::from_rdata(
        n("web.example.com."),
        40,
        RData::A(A::new(192, 0, 2, 7)),
    ));
    chain.metadata.authentic_data = true;
    cache.put(&Query::query(n("www.example.com."), RecordType::A), &chain);
    let mut missing = Message::new(0, MessageType::Response, OpCode::Query);
    missing.metadata.response_code = ResponseCode::NXDomain;
    missing.add_authority(Record::from_rdata(
        n("example.com."),
        900,
        RData::SOA(SOA::new(
            n("ns.example.com."),
            n("h.example.com."),
            1,
            2,
            3,
            4,
            600,
        )),
    ));
    cache.put(
        &Query::query(n("gone.example.com."), RecordType::A),
        &missing,
    );

    let forwarder = Forwarder::new(
        &["127.0.0.1:9".parse().expect("addr")],
        &[],
        Policy::Sequential,
        std::time::Duration::from_secs(1),
        cache,
    )
    .expect("no loop");
    let mut handler = handler();
    handler.forwarder = Some(forwarder);

    for name in ["www.example.com.", "WWW.Example.COM.", "gone.example.com."] {
        for edns in [None, Some(1232)] {
            let (general, fast) = both_paths(&handler, &query(name, edns));
            let fast = fast.expect("a cache hit");
            assert_eq!(sections(&fast), sections(&general), "{name}");
            let read = Message::from_vec(&fast).expect("read");
            assert!(!read.metadata.authoritative);
            assert!(read.metadata.recursion_available);
        }
    }
    // A miss goes to the general path (which forwards).
    let bytes = query("other.example.com.", None);
    let view = super::QueryView::parse(&bytes).expect("a common query");
    let now = std::time::Instant::now();
    assert!(
        handler
            .answer_fast(&view, &bytes, Transport::Udp, now)
            .is_none()
    );
}
