//! The bounded cache of forwarded answers: keyed by lower-case name, type
//! and class; positive and negative TTLs capped; remaining TTLs counted down
//! in what it returns; the oldest-expiring entry evicted when full.
//!
//! An entry keeps the answer's records as wire bytes, as they follow the
//! question in a response (compression pointers into the question stay
//! valid: a question for the same name has the same length in any case),
//! with the offset of every TTL. A hit is copied out and its TTLs lowered
//! by the entry's age ([`Cache::write_hit`]); [`Cache::get`] reads the
//! same bytes back into a hickory [`Message`] for the general path.

use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashbrown::{Equivalent, HashMap};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::config::CacheConfig;
use crate::records::key_of;
use crate::wire;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    name: Box<str>,
    qtype: u16,
    qclass: u16,
}

/// A [`Key`] borrowed for lookups; hashes as the owned one does.
struct KeyRef<'a> {
    name: &'a str,
    qtype: u16,
    qclass: u16,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.qtype.hash(state);
        self.qclass.hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *key.name == *self.name && key.qtype == self.qtype && key.qclass == self.qclass
    }
}

#[derive(Debug)]
struct Entry {
    /// Answer, authority and additional records, following the question.
    sections: Box<[u8]>,
    /// Where each record's TTL sits in `sections`.
    ttl_at: Box<[u16]>,
    /// Answer, authority and additional counts.
    counts: [u16; 3],
    rcode: ResponseCode,
    authentic_data: bool,
    /// Length of the question (name, type, class) the sections follow.
    question_len: usize,
    stored: Instant,
    expires: Instant,
}

/// What [`Cache::write_hit`] appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub rcode: ResponseCode,
    pub authentic_data: bool,
    /// Answer, authority and additional counts.
    pub counts: [u16; 3],
}

/// The cache; cheap to share behind the forwarder.
#[derive(Debug)]
pub struct Cache {
    config: CacheConfig,
    entries: Mutex<HashMap<Key, Entry>>,
}

fn question_bytes(query: &Query) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = BinEncoder::new(&mut out);
    query.emit(&mut encoder).ok()?;
    Some(out)
}

/// The offsets of the TTLs of `count` records starting at `at` of
/// `message`, and where they end.
fn ttl_offsets(message: &[u8], mut at: usize, count: usize) -> Option<(Vec<usize>, usize)> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        at += wire::name_len(message.get(at..)?)?;
        // Type and class, then the TTL, then the data length.
        out.push(at + 4);
        let len = message.get(at + 8..at + 10)?;
        at += 10 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        message.get(..at)?;
    }
    Some((out, at))
}

impl Cache {
    pub fn new(config: CacheConfig) -> Cache {
        Cache {
            config,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Appends the cached records for a question about `key` (a lower-case
    /// name without the trailing dot) to `out`, which holds the response's
    /// header and the client's question of `question_len` bytes; TTLs are
    /// lowered by the entry's age. `None` on a miss.
    pub fn write_hit(
        &self,
        key: &str,
        qtype: u16,
        qclass: u16,
        question_len: usize,
        out: &mut Vec<u8>,
    ) -> Option<Hit> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(&KeyRef {
            name: key,
            qtype,
            qclass,
        })?;
        let now = Instant::now();
        if entry.expires <= now || entry.question_len != question_len {
            return None;
        }
        let age = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let start = out.len();
        out.extend_from_slice(&entry.sections);
        if age > 0 {
            for &at in entry.ttl_at.iter() {
                let at = start + usize::from(at);
                if let Some(ttl) = out.get_mut(at..at + 4) {
                    let left =
                        u32::from_be_bytes([ttl[0], ttl[1], ttl[2], ttl[3]]).saturating_sub(age);
                    ttl.copy_from_slice(&left.to_be_bytes());
                }
            }
        }
        Some(Hit {
            rcode: entry.rcode,
            authentic_data: entry.authentic_data,
            counts: entry.counts,
        })
    }

    /// A fresh copy of the answer with TTLs lowered by its age.
    pub fn get(&self, query: &Query) -> Option<Message> {
        let question = question_bytes(query)?;
        let mut bytes = vec![0u8; wire::HEADER_LEN];
        bytes.extend_from_slice(&question);
        let key = key_of(&query.name);
        let hit = self.write_hit(
            &key,
            u16::from(query.query_type),
            u16::from(query.query_class),
            question.len(),
            &mut bytes,
        )?;
        let counts = [1, hit.counts[0], hit.counts[1], hit.counts[2]];
        for (i, count) in counts.into_iter().enumerate() {
            bytes[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
        }
        bytes[2] = 0x80;
        let mut message = Message::from_vec(&bytes).ok()?;
        message.metadata.response_code = hit.rcode;
        message.metadata.authentic_data = hit.authentic_data;
        Some(message)
    }

    /// Stores an upstream answer if it is cacheable.
    pub fn put(&self, query: &Query, answer: &Message) {
        if self.config.max_entries == 0 {
            return;
        }
        let Some((ttl, positive)) = super::cache_ttl(answer) else {
            return;
        };
        let cap = if positive {
            self.config.max_positive_ttl
        } else {
            self.config.max_negative_ttl
        };
        let ttl = ttl.min(cap);
        if ttl == 0 {
            return;
        }
        let Some(entry) = Self::entry(query, answer, ttl) else {
            return;
        };
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        if entries.len() >= self.config.max_entries {
            entries.retain(|_, e| e.expires > now);
        }
        if entries.len() >= self.config.max_entries {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                entries.remove(&k);
            }
        }
        entries.insert(
            Key {
                name: key_of(&query.name).into_boxed_str(),
                qtype: u16::from(query.query_type),
                qclass: u16::from(query.query_class),
            },
            Entry {
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
                ..entry
            },
        );
    }

    /// The entry for `answer` to `query`, answer and authority TTLs capped
    /// at `ttl`: the records encoded after the question, as a response
    /// carries them.
    fn entry(query: &Query, answer: &Message, ttl: u32) -> Option<Entry> {
        let mut message = Message::new(0, MessageType::Response, OpCode::Query);
        message.add_query(query.clone());
        message.answers = answer.answers.clone();
        message.authorities = answer.authorities.clone();
        message.additionals = answer.additionals.clone();
        for r in message
            .answers
            .iter_mut()
            .chain(message.authorities.iter_mut())
        {
            r.ttl = r.ttl.min(ttl);
        }
        let bytes = message.to_vec().ok()?;
        let question_len = question_bytes(query)?.len();
        let start = wire::HEADER_LEN + question_len;
        let count = |at: usize| {
            bytes
                .get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let counts = [count(6)?, count(8)?, count(10)?];
        let total = counts.iter().map(|&c| usize::from(c)).sum();
        let (offsets, end) = ttl_offsets(&bytes, start, total)?;
        let ttl_at = offsets
            .into_iter()
            .map(|at| u16::try_from(at - start).ok())
            .collect::<Option<Vec<u16>>>()?;
        let now = Instant::now();
        Some(Entry {
            sections: bytes.get(start..end)?.into(),
            ttl_at: ttl_at.into(),
            counts,
            rcode: answer.metadata.response_code,
            authentic_data: answer.metadata.authentic_data,
            question_len,
            stored: now,
            expires: now,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
