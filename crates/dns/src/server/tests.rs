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
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
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
