use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use super::Hosts;
use crate::records::Answer;

const SEED: &str = "127.0.0.1\tlocalhost\n# a comment\n192.0.2.10 db.example.test db   # primary\n2001:db8::10 db.example.test\nnot-an-ip host\n";

fn ask(hosts: &Hosts, name: &str, qtype: RecordType) -> Option<(ResponseCode, Vec<String>)> {
    let query = Query::query(Name::from_ascii(name).expect("test name"), qtype);
    match hosts.answer(&query) {
        Answer::Authoritative { rcode, answers, .. } => Some((
            rcode,
            answers
                .iter()
                .map(|r| format!("{} {} {}", r.name, r.ttl, r.data))
                .collect(),
        )),
        Answer::NotOurs => None,
    }
}

#[test]
fn listed_names_answer_their_addresses_by_type() {
    let hosts = Hosts::parse(SEED, 3600);
    assert_eq!(
        ask(&hosts, "DB.example.test.", RecordType::A),
        Some((
            ResponseCode::NoError,
            vec!["DB.example.test. 3600 192.0.2.10".to_owned()]
        ))
    );
    assert_eq!(
        ask(&hosts, "db.example.test.", RecordType::AAAA),
        Some((
            ResponseCode::NoError,
            vec!["db.example.test. 3600 2001:db8::10".to_owned()]
        ))
    );
    assert_eq!(
        ask(&hosts, "db.", RecordType::A),
        Some((
            ResponseCode::NoError,
            vec!["db. 3600 192.0.2.10".to_owned()]
        ))
    );
}

#[test]
fn listed_name_without_the_type_is_nodata() {
    let hosts = Hosts::parse(SEED, 3600);
    assert_eq!(
        ask(&hosts, "localhost.", RecordType::AAAA),
        Some((ResponseCode::NoError, Vec::new()))
    );
}

#[test]
fn address_answers_ptr_with_its_first_name() {
    let hosts = Hosts::parse(SEED, 60);
    assert_eq!(
        ask(&hosts, "10.2.0.192.in-addr.arpa.", RecordType::PTR),
        Some((
            ResponseCode::NoError,
            vec!["10.2.0.192.in-addr.arpa. 60 db.example.test.".to_owned()]
        ))
    );
}

#[test]
fn unlisted_names_and_malformed_lines_are_not_answered() {
    let hosts = Hosts::parse(SEED, 3600);
    assert_eq!(ask(&hosts, "host.", RecordType::A), None);
    assert_eq!(ask(&hosts, "example.com.", RecordType::A), None);
}
