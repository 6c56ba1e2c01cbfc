use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::cache::Cache;
use super::{Forwarder, is_loop};
use crate::config::{CacheConfig, Policy};

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("test name")
}

fn answer(rcode: ResponseCode, ttl: u32) -> Message {
    let mut m = Message::new(0, MessageType::Response, OpCode::Query);
    m.metadata.response_code = rcode;
    if rcode == ResponseCode::NoError {
        m.add_answer(Record::from_rdata(
            name("a.example."),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        ));
    } else {
        m.add_authority(Record::from_rdata(
            name("example."),
            ttl,
            RData::SOA(SOA::new(
                name("ns.example."),
                name("h.example."),
                1,
                1,
                1,
                1,
                ttl,
            )),
        ));
    }
    m
}

fn cache(max_entries: usize) -> Cache {
    Cache::new(CacheConfig {
        max_entries,
        max_positive_ttl: 60,
        max_negative_ttl: 10,
    })
}

#[test]
fn cached_answer_is_returned_for_the_same_question_in_any_case() {
    let cache = cache(10);
    cache.put(
        &Query::query(name("a.example."), RecordType::A),
        &answer(ResponseCode::NoError, 300),
    );
    let hit = cache
        .get(&Query::query(name("A.EXAMPLE."), RecordType::A))
        .expect("cached");
    assert_eq!(
        hit.answers[0].ttl, 60,
        "positive TTL capped at max_positive_ttl"
    );
    assert!(
        cache
            .get(&Query::query(name("a.example."), RecordType::AAAA))
            .is_none()
    );
}

#[test]
fn negative_answer_ttl_is_capped_and_servfail_is_not_cached() {
    let cache = cache(10);
    let q = Query::query(name("gone.example."), RecordType::A);
    cache.put(&q, &answer(ResponseCode::NXDomain, 900));
    let hit = cache.get(&q).expect("negative answers are cached");
    assert_eq!(hit.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(hit.authorities[0].ttl, 10);
    let q = Query::query(name("broken.example."), RecordType::A);
    cache.put(&q, &answer(ResponseCode::ServFail, 900));
    assert!(cache.get(&q).is_none());
}

#[test]
fn full_cache_evicts_instead_of_growing() {
    let cache = cache(3);
    for i in 0..10 {
        let q = Query::query(name(&format!("n{i}.example.")), RecordType::A);
        cache.put(&q, &answer(ResponseCode::NoError, 30 + i));
    }
    assert_eq!(cache.len(), 3);
}

#[test]
fn upstream_equal_to_own_listen_address_is_refused_as_a_loop() {
    let own = ["127.0.0.1:5300".parse().expect("addr")];
    let err = Forwarder::new(
        &own,
        &own,
        Policy::Sequential,
        Duration::from_secs(1),
        cache(1),
    )
    .expect_err("loop");
    assert!(err.to_string().contains("127.0.0.1:5300"), "{err}");
    assert!(is_loop(
        "127.0.0.1:53".parse().expect("addr"),
        "0.0.0.0:53".parse().expect("addr")
    ));
    assert!(!is_loop(
        "127.0.0.1:54".parse().expect("addr"),
        "0.0.0.0:53".parse().expect("addr")
    ));
    assert!(!is_loop(
        "192.0.2.1:53".parse().expect("addr"),
        "0.0.0.0:53".parse().expect("addr")
    ));
}
