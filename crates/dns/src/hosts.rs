//! The hosts file (`/etc/hosts` format: an address, a canonical name,
//! aliases, `#` comments), answered authoritatively before forwarding:
//! A/AAAA for its names, PTR for its addresses, NODATA for other types.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::records::{Answer, key_of};

/// A parsed hosts file.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    /// Lower-case name (no trailing dot) → its addresses, in file order.
    by_name: HashMap<String, Vec<IpAddr>>,
    /// Reverse name → the first name listed for that address.
    by_reverse: HashMap<String, Name>,
    ttl: u32,
}

impl Hosts {
    /// Parses hosts-file text; malformed lines are skipped.
    pub fn parse(text: &str, ttl: u32) -> Hosts {
        let mut hosts = Hosts {
            ttl,
            ..Hosts::default()
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let Some(ip) = words
                .next()
                .and_then(|w| w.split('%').next()?.parse::<IpAddr>().ok())
            else {
                continue;
            };
            for (i, word) in words.enumerate() {
                let Ok(mut name) = Name::from_ascii(word) else {
                    continue;
                };
                name.set_fqdn(true);
                let key = key_of(&name);
                let addrs = hosts.by_name.entry(key).or_default();
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
                if i == 0 {
                    hosts
                        .by_reverse
                        .entry(key_of(&Name::from(ip)))
                        .or_insert(name);
                }
            }
        }
        hosts
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether the file answers for `key` (a lower-case name without the
    /// trailing dot), forward or reverse.
    pub fn lists(&self, key: &str) -> bool {
        self.by_name.contains_key(key) || self.by_reverse.contains_key(key)
    }

    /// The answer for a name the file lists, [`Answer::NotOurs`] otherwise.
    pub fn answer(&self, query: &Query) -> Answer {
        let key = key_of(&query.name);
        let record = |data: RData| Record::from_rdata(query.name.clone(), self.ttl, data);
        let answers: Vec<Record> = if let Some(addrs) = self.by_name.get(&key) {
            addrs
                .iter()
                .filter_map(|ip| match (ip, query.query_type) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                        Some(RData::AAAA(AAAA(*v6)))
                    }
                    _ => None,
                })
                .map(record)
                .collect()
        } else if let Some(name) = self.by_reverse.get(&key) {
            match query.query_type {
                RecordType::PTR | RecordType::ANY => vec![record(RData::PTR(PTR(name.clone())))],
                _ => Vec::new(),
            }
        } else {
            return Answer::NotOurs;
        };
        Answer::Authoritative {
            rcode: ResponseCode::NoError,
            answers,
            authority: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
