//! The store's change journal, `<dir>/journal`: which objects each commit
//! wrote or removed, so a reader holding an older state re-reads only those
//! files instead of the whole store.
//!
//! # Format
//! JSON lines. The first is a header naming this journal, then one line per
//! commit:
//! ```text
//! {"store":"5f0c…","since":0}
//! {"g":1,"changed":[["namespaces","","default"],["services","default","web"]]}
//! {"g":2,"changed":[["pods","default","web-1"]]}
//! ```
//! `store` is random, chosen when the journal is created (a store deleted and
//! made anew has another); the journal lists every commit with a generation
//! above `since`.
//!
//! # Rules
//! - A writer appends its line under the store's exclusive lock, after its
//!   object files and before the `generation` file, so a reader holding the
//!   shared lock finds a line for every committed generation.
//! - When the journal outgrows [`MAX_BYTES`] the writer rewrites it (to a
//!   temporary name, renamed into place) holding only its own commit, with
//!   `since` just below it; a reader further behind then reads the whole
//!   store once.
//! - A line is only a hint of which files to read again: a reader reads the
//!   files themselves. So the line a crashed writer left for a generation it
//!   never committed costs a needless read, nothing more; a torn last line
//!   is skipped, and the next writer starts on a fresh line.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::{Kind, ObjectKey};

/// Past this size the next commit rewrites the journal.
pub(super) const MAX_BYTES: u64 = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Header {
    store: String,
    since: u64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    g: u64,
    /// (kind plural, namespace or "", name) of each object written or removed.
    changed: Vec<(String, String, String)>,
}

/// How far a reader has read one journal: the journal's identity (its
/// header) and the byte offset after the last line it consumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Position {
    store: String,
    since: u64,
    offset: u64,
}

/// What one read found: commits (generation, objects), oldest first, and
/// where the next read continues.
#[derive(Debug)]
pub(super) struct Found {
    pub position: Position,
    pub commits: Vec<(u64, Vec<ObjectKey>)>,
}

fn kind_of(plural: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|kind| kind.plural() == plural)
}

/// The header line and its length (newline included), if the file starts
/// with a whole, valid one.
fn header(file: &File) -> io::Result<Option<(Header, u64)>> {
    let mut buf = [0u8; 256];
    let mut len = 0;
    while len < buf.len() {
        let n = file.read_at(&mut buf[len..], len as u64)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let Some(end) = buf[..len].iter().position(|b| *b == b'\n') else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<Header>(&buf[..end])
        .ok()
        .map(|header| (header, end as u64 + 1)))
}

/// Reads the commits with generations up to `upto`, continuing after `from`
/// when it names this same journal, else from the start. `None` when there
/// is no usable journal (missing, no header, a line naming an unknown kind):
/// the caller reads the whole store.
pub(super) fn read(path: &Path, from: Option<&Position>, upto: u64) -> io::Result<Option<Found>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some((header, header_len)) = header(&file)? else {
        return Ok(None);
    };
    let start = match from {
        Some(p) if p.store == header.store && p.since == header.since => p.offset,
        _ => header_len,
    };
    file.seek(SeekFrom::Start(start))?;
    let mut rest = Vec::new();
    file.read_to_end(&mut rest)?;
    let mut offset = start;
    let mut commits = Vec::new();
    let mut lines = rest.split_inclusive(|b| *b == b'\n');
    for line in lines.by_ref() {
        let Some(text) = line.strip_suffix(b"\n") else {
            break; // a line still being written, or torn
        };
        match serde_json::from_slice::<Entry>(text) {
            Ok(entry) if entry.g > upto => break, // not committed yet
            Ok(entry) => {
                let mut keys = Vec::with_capacity(entry.changed.len());
                for (plural, namespace, name) in entry.changed {
                    let Some(kind) = kind_of(&plural) else {
                        return Ok(None);
                    };
                    keys.push(ObjectKey::new(kind, &namespace, &name));
                }
                commits.push((entry.g, keys));
            }
            Err(_) => {} // torn by a crashed writer, then ended by the next
        }
        offset += line.len() as u64;
    }
    Ok(Some(Found {
        position: Position {
            store: header.store,
            since: header.since,
            offset,
        },
        commits,
    }))
}

fn entry_line(generation: u64, keys: &BTreeSet<ObjectKey>) -> io::Result<Vec<u8>> {
    let entry = Entry {
        g: generation,
        changed: keys
            .iter()
            .map(|key| {
                (
                    key.kind.plural().to_owned(),
                    key.namespace.clone(),
                    key.name.clone(),
                )
            })
            .collect(),
    };
    let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// Records commit `generation` (which wrote or removed `keys`); the caller
/// holds the exclusive lock. `write_atomic` writes a whole file under a
/// temporary name and renames it into place. Returns the position after
/// the new line.
pub(super) fn append(
    path: &Path,
    generation: u64,
    keys: &BTreeSet<ObjectKey>,
    write_atomic: impl FnOnce(&[u8]) -> io::Result<()>,
) -> io::Result<Position> {
    let line = entry_line(generation, keys)?;
    let existing = match OpenOptions::new().read(true).append(true).open(path) {
        Ok(file) => Some(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if let Some(mut file) = existing {
        let len = file.metadata()?.len();
        if let Some((header, _)) = header(&file)?.filter(|_| len + line.len() as u64 <= MAX_BYTES) {
            let mut last = [0u8; 1];
            let mut offset = len;
            if file.read_at(&mut last, len - 1)? == 1 && last[0] != b'\n' {
                // A crashed writer's torn line: end it, so ours stands alone.
                file.write_all(b"\n")?;
                offset += 1;
            }
            file.write_all(&line)?;
            return Ok(Position {
                store: header.store,
                since: header.since,
                offset: offset + line.len() as u64,
            });
        }
        // Too big (or no header): start anew below, keeping the identity
        // when there is one so readers at the previous commit go on.
        if let Some((header, _)) = header(&file)? {
            return rewrite(header.store, generation, &line, write_atomic);
        }
    }
    rewrite(new_id(), generation, &line, write_atomic)
}

fn rewrite(
    store: String,
    generation: u64,
    line: &[u8],
    write_atomic: impl FnOnce(&[u8]) -> io::Result<()>,
) -> io::Result<Position> {
    let header = Header {
        store,
        since: generation.saturating_sub(1),
    };
    let mut contents = serde_json::to_vec(&header).map_err(io::Error::other)?;
    contents.push(b'\n');
    contents.extend_from_slice(line);
    write_atomic(&contents)?;
    Ok(Position {
        store: header.store,
        since: header.since,
        offset: contents.len() as u64,
    })
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests;
