//! The bounded cache of forwarded answers: keyed by lower-case name, type
//! and class; positive and negative TTLs capped; remaining TTLs counted down
//! in what it returns; the oldest-expiring entry evicted when full.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};

use crate::config::CacheConfig;
use crate::records::key_of;

type Key = (String, u16, u16);

#[derive(Debug)]
struct Entry {
    answer: Message,
    stored: Instant,
    expires: Instant,
}

/// The cache; cheap to share behind the forwarder.
#[derive(Debug)]
pub struct Cache {
    config: CacheConfig,
    entries: Mutex<HashMap<Key, Entry>>,
}

fn key(query: &Query) -> Key {
    (
        key_of(&query.name),
        u16::from(query.query_type),
        u16::from(query.query_class),
    )
}

impl Cache {
    pub fn new(config: CacheConfig) -> Cache {
        Cache {
            config,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh copy of the answer with TTLs lowered by its age.
    pub fn get(&self, query: &Query) -> Option<Message> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(&key(query))?;
        let now = Instant::now();
        if entry.expires <= now {
            return None;
        }
        let age = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let mut answer = entry.answer.clone();
        for r in answer
            .answers
            .iter_mut()
            .chain(answer.authorities.iter_mut())
            .chain(answer.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(answer)
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
        let mut answer = answer.clone();
        for r in answer
            .answers
            .iter_mut()
            .chain(answer.authorities.iter_mut())
        {
            r.ttl = r.ttl.min(ttl);
        }
        entries.insert(
            key(query),
            Entry {
                answer,
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
