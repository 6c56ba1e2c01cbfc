//! The embedded store: the lab's cluster state as a directory of objects,
//! written with kubectl's apply conventions and read back into a
//! [`Cluster`] by any number of processes.
//!
//! # Layout
//! ```text
//! <dir>/generation                          store-wide counter, bumped once per commit
//! <dir>/journal                             which objects each commit changed (see [`journal`])
//! <dir>/.lock                               flock(2): exclusive for writers, shared for readers
//! <dir>/.tmp/                               files being written, renamed into place
//! <dir>/<kind-plural>/<namespace>/<name>.yaml   namespaced objects (pods, services, …)
//! <dir>/<kind-plural>/<name>.yaml               cluster-scoped objects (nodes, namespaces, ingressclasses)
//! ```
//! Each object file is the object's YAML, exactly as `get -o yaml` prints it.
//!
//! # Guarantees
//! - A write (apply, delete, modify) validates everything first and changes
//!   nothing if anything is invalid; then, under the exclusive lock, it runs
//!   the control plane ([`controlplane::reconcile`]), writes each changed
//!   object to a temporary file and renames it into place, appends one line
//!   naming them to the journal, and writes the new `generation` last. Any
//!   number of objects change in one commit ([`Store::apply_objects`],
//!   [`Store::modify_many`]): one generation, one reload per reader.
//! - A reader holding the shared lock sees one whole commit, never part of
//!   one; a reader without it still never sees half a file.
//! - `resourceVersion` is the generation of the commit that last changed the
//!   object; `uid` and `creationTimestamp` are set once.
//! - A handle keeps the last state it read or wrote; catching up reads only
//!   the files the journal names for the commits since, and reads the whole
//!   store only when it has none, or the journal no longer covers them (it
//!   was rewritten, or the store was made anew).
//!
//! # Caveats
//! Objects change only through a [`Store`]: a file edited by hand is seen by
//! a handle that reads the whole store (a new one), not by running watchers.
//! Files are not fsync'ed: after a machine crash the lab is rebuilt, not
//! recovered. Readers sleep until the `generation` file is renamed into
//! place (inotify on the top directory only, see [`Store::watch`]), then
//! compare that file (number, inode, mtime) with the one they last loaded:
//! one reload per commit however many files it
//! touched, no watches to add as namespaces appear, nothing lost while a
//! reader is busy, and no work at all while the store is idle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nix::fcntl::{Flock, FlockArg};

use crate::controlplane::{self, AllocError, ClusterConfig};
use crate::index::Cluster;
use crate::manifest::{self, Document, Invalid, Manifest};
use crate::model::{Kind, Object, ObjectKey};

mod journal;
mod signal;
mod validate;

pub use validate::dns_subdomain;

/// How often [`Store::watch`] looks at the generation file when inotify
/// cannot watch the store's directory (with inotify a commit wakes it).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(20);

/// What a write did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Deleted,
    /// A delete named an object that does not exist.
    NotFound,
}

/// One object a write was asked about, and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: ObjectKey,
    pub action: Action,
}

/// An error of the embedded store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file of the store could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file of the store does not hold the object its path names.
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// Manifests could not be read.
    #[error(transparent)]
    Read(#[from] manifest::ReadError),
    /// Documents failed validation; nothing was written.
    #[error("{}", Invalids(.0))]
    Invalid(Vec<Invalid>),
    /// The control plane ran out of addresses or ports; nothing was written.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The request is one an API server refuses whatever the objects hold
    /// (deleting `default`); nothing was written.
    #[error("{0}")]
    Forbidden(String),
    /// [`Store::open_existing`] found no directory.
    #[error(
        "no store at {} (is the lab up? `weft lab up`; a lab's store is STATE_ROOT/NAME/store, by default /var/lib/weft/lab/NAME/store, named with --store or WEFT_STORE)",
        .0.display()
    )]
    Missing(PathBuf),
    /// [`Store::modify`] named an object that does not exist.
    #[error("{0} not found")]
    NotFound(ObjectKey),
}

struct Invalids<'a>(&'a [Invalid]);

impl std::fmt::Display for Invalids<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

type Objects = BTreeMap<ObjectKey, Object>;

/// Identifies one commit's `generation` file: its number, and the inode and
/// mtime of the file (renamed into place anew by every commit), so a store
/// deleted and recreated is not mistaken for the one cached.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    generation: u64,
    inode: u64,
    mtime_ns: i128,
}

/// A handle on a store directory. Cheap to clone; any number of handles, in
/// any number of processes, may use the same directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    config: ClusterConfig,
    /// The objects of the last commit this handle (or a clone) read or
    /// wrote: a write, or a reload, reads no file unless another writer
    /// committed since, and then only the files the journal names.
    cache: Arc<Mutex<Option<Snapshot>>>,
}

/// One committed state as a handle last saw it.
#[derive(Debug)]
struct Snapshot {
    /// `None`: the store had no `generation` file (nothing committed yet);
    /// such a snapshot is never reused.
    stamp: Option<Stamp>,
    /// How far the journal was read, to continue from there.
    journal: Option<journal::Position>,
    objects: Objects,
}

/// What catching up with the store changed in a [`Snapshot`].
#[derive(Debug)]
enum Delta {
    /// Nothing: the snapshot was current.
    None,
    /// These objects were written or removed.
    Keys(BTreeSet<ObjectKey>),
    /// The whole store was read.
    Full,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, with Kubernetes'
    /// default address plan.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(dir.join(".tmp")).map_err(|source| StoreError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        Ok(Store {
            dir,
            config: ClusterConfig::default(),
            cache: Arc::default(),
        })
    }

    /// Opens the store in `dir`, which must exist.
    pub fn open_existing(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(StoreError::Missing(dir));
        }
        Store::open(dir)
    }

    /// Uses another address plan for allocation and validation.
    pub fn with_config(mut self, config: ClusterConfig) -> Store {
        self.config = config;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
        move |source| StoreError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    fn lock(&self, how: FlockArg) -> Result<Flock<File>, StoreError> {
        let path = self.dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Self::io("open", &path))?;
        Flock::lock(file, how).map_err(|(_, errno)| StoreError::Io {
            action: "lock",
            path,
            source: io::Error::from(errno),
        })
    }

    /// The file that holds the object with this key.
    pub fn path_of(&self, key: &ObjectKey) -> PathBuf {
        let mut path = self.dir.join(key.kind.plural());
        if key.kind.namespaced() {
            path.push(&key.namespace);
        }
        path.push(format!("{}.yaml", key.name));
        path
    }

    /// The generation of the last commit (0 for a new store).
    pub fn generation(&self) -> Result<u64, StoreError> {
        let path = self.dir.join("generation");
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| StoreError::Corrupt {
                path,
                reason: format!("{:?} is not a generation number", text.trim()),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(StoreError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    fn read_object(&self, path: &Path, kind: Kind) -> Result<Object, StoreError> {
        let text = fs::read_to_string(path).map_err(Self::io("read", path))?;
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let value: serde_json::Value =
            serde_yaml_ng::from_str(&text).map_err(|e| corrupt(format!("not valid YAML: {e}")))?;
        let obj = Object::from_json(kind, value)
            .map_err(|e| corrupt(format!("not a {kind}: {}: {}", e.path(), e.inner())))?;
        if self.path_of(&obj.key()) != path {
            return Err(corrupt(format!(
                "holds {}, which belongs elsewhere",
                obj.key()
            )));
        }
        Ok(obj)
    }

    fn files_in(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "list",
                    path: dir.to_owned(),
                    source,
                });
            }
        };
        let mut out: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn stamp(&self) -> Result<Option<Stamp>, StoreError> {
        let path = self.dir.join("generation");
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        Ok(Some(Stamp {
            generation: self.generation()?,
            inode: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }))
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<Snapshot>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join("journal")
    }

    /// Brings `cache` up to the last commit; the caller holds the lock.
    /// Reads only the files the journal names for the commits `cache` has
    /// not seen, or the whole store when it cannot.
    fn refresh(&self, cache: &mut Option<Snapshot>) -> Result<Delta, StoreError> {
        let stamp = self.stamp()?;
        if let (Some(stamp), Some(snapshot)) = (&stamp, cache.as_mut()) {
            if snapshot.stamp.as_ref() == Some(stamp) {
                return Ok(Delta::None);
            }
            if let Some(keys) = self.catch_up(snapshot, stamp)? {
                snapshot.stamp = Some(stamp.clone());
                return Ok(Delta::Keys(keys));
            }
        }
        let journal = match &stamp {
            Some(stamp) => journal::read(&self.journal_path(), None, stamp.generation)
                .map_err(Self::io("read", &self.journal_path()))?
                .map(|found| found.position),
            None => None,
        };
        *cache = Some(Snapshot {
            objects: self.read_all()?,
            stamp,
            journal,
        });
        Ok(Delta::Full)
    }

    /// Applies the journal's commits between `snapshot` and `stamp` to it;
    /// `None` (snapshot untouched) when the journal does not list each of
    /// them.
    fn catch_up(
        &self,
        snapshot: &mut Snapshot,
        stamp: &Stamp,
    ) -> Result<Option<BTreeSet<ObjectKey>>, StoreError> {
        let (Some(seen), Some(position)) = (&snapshot.stamp, &snapshot.journal) else {
            return Ok(None);
        };
        if seen.generation >= stamp.generation {
            return Ok(None);
        }
        let path = self.journal_path();
        let Some(found) = journal::read(&path, Some(position), stamp.generation)
            .map_err(Self::io("read", &path))?
        else {
            return Ok(None);
        };
        let mut covered = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for (generation, changed) in found.commits {
            if generation > seen.generation {
                covered.insert(generation);
                keys.extend(changed);
            }
        }
        if !(seen.generation + 1..=stamp.generation).all(|g| covered.contains(&g)) {
            return Ok(None);
        }
        let mut read = Vec::with_capacity(keys.len());
        for key in &keys {
            let path = self.path_of(key);
            let object = match fs::metadata(&path) {
                Ok(_) => Some(self.read_object(&path, key.kind)?),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(StoreError::Io {
                        action: "read",
                        path,
                        source,
                    });
                }
            };
            read.push((key.clone(), object));
        }
        for (key, object) in read {
            match object {
                Some(object) => snapshot.objects.insert(key, object),
                None => snapshot.objects.remove(&key),
            };
        }
        snapshot.journal = Some(found.position);
        Ok(Some(keys))
    }

    /// Every object of the store; the caller holds the lock.
    fn load_unlocked(&self) -> Result<Objects, StoreError> {
        let mut cache = self.cached();
        self.refresh(&mut cache)?;
        Ok(cache
            .as_ref()
            .map(|snapshot| snapshot.objects.clone())
            .unwrap_or_default())
    }

    fn read_all(&self) -> Result<Objects, StoreError> {
        let mut objects = Objects::new();
        for kind in Kind::ALL {
            let top = self.dir.join(kind.plural());
            let files = if kind.namespaced() {
                let mut files = Vec::new();
                for ns in Self::files_in(&top)?.into_iter().filter(|p| p.is_dir()) {
                    files.extend(Self::files_in(&ns)?);
                }
                files
            } else {
                Self::files_in(&top)?
            };
            for file in files
                .into_iter()
                .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
            {
                let obj = self.read_object(&file, kind)?;
                objects.insert(obj.key(), obj);
            }
        }
        Ok(objects)
    }

    /// Every object of one committed state.
    pub fn load(&self) -> Result<Vec<Object>, StoreError> {
        let _lock = self.lock(FlockArg::LockShared)?;
        Ok(self.load_unlocked()?.into_values().collect())
    }

    /// One object, if it exists.
    pub fn get(&self, key: &ObjectKey) -> Result<Option<Object>, StoreError> {
        let path = self.path_of(key);
        let _lock = self.lock(FlockArg::LockShared)?;
        if !path.exists() {
            return Ok(None);
        }
        self.read_object(&path, key.kind).map(Some)
    }

    /// The objects of a kind, in one namespace or (`None`) all of them,
    /// ordered by namespace and name.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Result<Vec<Object>, StoreError> {
        Ok(self
            .load()?
            .into_iter()
            .filter(|o| o.kind() == kind)
            .filter(|o| !kind.namespaced() || namespace.is_none_or(|ns| o.key().namespace == ns))
            .collect())
    }

    /// Applies manifests as `kubectl apply` does: every document of every
    /// manifest is validated first, and if any is invalid nothing is written
    /// and the error lists every problem. Returns what happened to each
    /// document's object, in order.
    pub fn apply(&self, manifests: &[Manifest]) -> Result<Vec<Change>, StoreError> {
        let mut docs = Vec::new();
        let mut invalid = Vec::new();
        for m in manifests {
            let (d, e) = manifest::parse(m);
            docs.extend(d);
            invalid.extend(e);
        }
        if !invalid.is_empty() {
            return Err(StoreError::Invalid(invalid));
        }
        self.apply_documents(docs)
    }

    /// Applies objects built in code (the lab's Nodes, a Pod's new status),
    /// with the same validation and control plane as manifests; errors name
    /// the file `(api)`.
    pub fn apply_objects(&self, objects: Vec<Object>) -> Result<Vec<Change>, StoreError> {
        let docs = objects
            .into_iter()
            .enumerate()
            .map(|(i, mut object)| {
                if object.kind().namespaced()
                    && object.meta().namespace.as_deref().is_none_or(str::is_empty)
                {
                    object.meta_mut().namespace = Some("default".to_owned());
                }
                Document {
                    file: "(api)".to_owned(),
                    index: i + 1,
                    object,
                }
            })
            .collect();
        self.apply_documents(docs)
    }

    fn apply_documents(&self, mut docs: Vec<Document>) -> Result<Vec<Change>, StoreError> {
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let current = self.load_unlocked()?;
        for doc in &mut docs {
            if let Some(old) = current.get(&doc.object.key()) {
                drop_type_dependent_fields(&mut doc.object, old);
            }
        }
        let invalid = validate::check_documents(&docs, &current, &self.config);
        if !invalid.is_empty() {
            return Err(StoreError::Invalid(invalid));
        }
        let mut next = current.clone();
        let mut keys = Vec::new();
        for doc in docs {
            let mut obj = doc.object;
            let key = obj.key();
            match current.get(&key) {
                Some(old) => carry_over(&mut obj, old),
                None => stamp_new(&mut obj),
            }
            next.insert(key.clone(), obj);
            keys.push(key);
        }
        let changed = self.commit(&current, next)?;
        Ok(keys
            .into_iter()
            .map(|key| {
                let action = if !current.contains_key(&key) {
                    Action::Created
                } else if changed.contains(&key) {
                    Action::Configured
                } else {
                    Action::Unchanged
                };
                Change { key, action }
            })
            .collect())
    }

    /// Deletes objects (a Namespace takes its objects with it); keys that do
    /// not exist come back as [`Action::NotFound`].
    pub fn delete(&self, keys: &[ObjectKey]) -> Result<Vec<Change>, StoreError> {
        // Kubernetes' own namespaces are never deleted (API servers forbid
        // it); nothing of the batch is.
        if let Some(key) = keys.iter().find(|key| {
            key.kind == Kind::Namespace
                && controlplane::UNDELETABLE_NAMESPACES.contains(&key.name.as_str())
        }) {
            return Err(StoreError::Forbidden(format!(
                "namespaces {:?} is forbidden: this namespace may not be deleted",
                key.name
            )));
        }
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let current = self.load_unlocked()?;
        let mut next = current.clone();
        let mut out = Vec::new();
        for key in keys {
            let found = next.remove(key).is_some();
            if key.kind == Kind::Namespace {
                next.retain(|k, _| !(k.kind.namespaced() && k.namespace == key.name));
            }
            out.push(Change {
                key: key.clone(),
                action: if found {
                    Action::Deleted
                } else {
                    Action::NotFound
                },
            });
        }
        self.commit(&current, next)?;
        Ok(out)
    }

    /// Deletes the objects that manifests name (only kind, namespace and
    /// name are read from each document).
    pub fn delete_manifests(&self, manifests: &[Manifest]) -> Result<Vec<Change>, StoreError> {
        let mut keys = Vec::new();
        let mut invalid = Vec::new();
        for m in manifests {
            let (d, e) = manifest::parse(m);
            keys.extend(d.into_iter().map(|d| d.object.key()));
            invalid.extend(e);
        }
        if !invalid.is_empty() {
            return Err(StoreError::Invalid(invalid));
        }
        self.delete(&keys)
    }

    /// Read-modify-write of one object under the lock, e.g. the lab kubelet
    /// recording a Pod's IP and readiness. The result is validated and the
    /// control plane runs as for an apply.
    pub fn modify(
        &self,
        key: &ObjectKey,
        f: impl FnOnce(&mut Object),
    ) -> Result<Change, StoreError> {
        let mut changes = self.modify_many(vec![(key.clone(), f)])?;
        match changes.pop() {
            Some(change) if change.action != Action::NotFound => Ok(change),
            _ => Err(StoreError::NotFound(key.clone())),
        }
    }

    /// Read-modify-write of many objects in one commit (one generation, one
    /// reload per reader), e.g. the lab kubelet recording a whole pass's Pod
    /// statuses. Each edit sees the object as the previous edits left it; a
    /// key that does not exist is skipped and reported as
    /// [`Action::NotFound`]. If any result is invalid nothing is written.
    pub fn modify_many<F: FnOnce(&mut Object)>(
        &self,
        edits: Vec<(ObjectKey, F)>,
    ) -> Result<Vec<Change>, StoreError> {
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let current = self.load_unlocked()?;
        let mut next = current.clone();
        let mut edited: Vec<(ObjectKey, Option<ObjectKey>)> = Vec::new();
        for (key, f) in edits {
            let Some(mut obj) = next.remove(&key) else {
                edited.push((key, None));
                continue;
            };
            f(&mut obj);
            let new_key = obj.key();
            next.insert(new_key.clone(), obj);
            edited.push((key, Some(new_key)));
        }
        let docs: Vec<Document> = edited
            .iter()
            .filter_map(|(_, new_key)| new_key.as_ref())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .filter_map(|(i, key)| {
                Some(Document {
                    file: "(api)".to_owned(),
                    index: i + 1,
                    object: next.get(key)?.clone(),
                })
            })
            .collect();
        let mut invalid = validate::check_documents(&docs, &current, &self.config);
        if !invalid.is_empty() {
            // As an API server on update: what the stored object already had
            // wrong (stored before a check existed) does not block an edit,
            // such as a status write; only what the edit made wrong does.
            let before: Vec<Document> = docs
                .iter()
                .filter_map(|doc| {
                    Some(Document {
                        object: current.get(&doc.object.key())?.clone(),
                        ..doc.clone()
                    })
                })
                .collect();
            let known = validate::check_documents(&before, &current, &self.config);
            invalid.retain(|problem| {
                !known.iter().any(|old| {
                    old.object == problem.object
                        && old.field == problem.field
                        && old.reason == problem.reason
                })
            });
        }
        if !invalid.is_empty() {
            return Err(StoreError::Invalid(invalid));
        }
        let changed = self.commit(&current, next)?;
        Ok(edited
            .into_iter()
            .map(|(key, new_key)| match new_key {
                None => Change {
                    key,
                    action: Action::NotFound,
                },
                Some(new_key) => Change {
                    action: if changed.contains(&new_key) {
                        Action::Configured
                    } else {
                        Action::Unchanged
                    },
                    key: new_key,
                },
            })
            .collect())
    }

    /// Runs the control plane on `next` and writes what differs from
    /// `current`; the caller holds the exclusive lock.
    fn commit(
        &self,
        current: &Objects,
        mut next: Objects,
    ) -> Result<BTreeSet<ObjectKey>, StoreError> {
        controlplane::reconcile(&mut next, &self.config)?;
        let generation = self.generation()? + 1;
        let mut changed = BTreeSet::new();
        for (key, obj) in next.iter_mut() {
            let old = current.get(key);
            if let Some(old) = old {
                let (old_meta, meta) = (old.meta(), obj.meta_mut());
                meta.uid.clone_from(&old_meta.uid);
                meta.creation_timestamp
                    .clone_from(&old_meta.creation_timestamp);
                meta.resource_version.clone_from(&old_meta.resource_version);
            }
            if old == Some(&*obj) {
                continue;
            }
            if old.is_none() {
                stamp_new(obj);
            }
            obj.meta_mut().resource_version = Some(generation.to_string());
            let yaml = serde_yaml_ng::to_string(obj).map_err(|e| StoreError::Corrupt {
                path: self.path_of(key),
                reason: format!("cannot serialize: {e}"),
            })?;
            self.write_atomic(&self.path_of(key), yaml.as_bytes())?;
            changed.insert(key.clone());
        }
        for key in current.keys().filter(|k| !next.contains_key(k)) {
            let path = self.path_of(key);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        action: "remove",
                        path,
                        source,
                    });
                }
            }
            if key.kind.namespaced() {
                // Only succeeds once the namespace folder is empty.
                let _ = path.parent().map(fs::remove_dir);
            }
            changed.insert(key.clone());
        }
        if changed.is_empty() {
            return Ok(changed);
        }
        let journal_path = self.journal_path();
        let position = journal::append(&journal_path, generation, &changed, |contents| {
            self.write_atomic(&journal_path, contents)
                .map_err(|e| match e {
                    StoreError::Io {
                        action,
                        path,
                        source,
                    } => io::Error::new(
                        source.kind(),
                        format!("cannot {action} {}: {source}", path.display()),
                    ),
                    other => io::Error::other(other.to_string()),
                })
        })
        .map_err(Self::io("append to", &journal_path))?;
        self.write_atomic(
            &self.dir.join("generation"),
            format!("{generation}\n").as_bytes(),
        )?;
        // What was just written is this handle's state now: its next read
        // or write starts from it.
        let stamp = self.stamp()?;
        *self.cached() = Some(Snapshot {
            stamp,
            journal: Some(position),
            objects: next,
        });
        Ok(changed)
    }

    fn write_atomic(&self, path: &Path, contents: &[u8]) -> Result<(), StoreError> {
        let tmp_dir = self.dir.join(".tmp");
        fs::create_dir_all(&tmp_dir).map_err(Self::io("create", &tmp_dir))?;
        let tmp = tmp_dir.join(format!(
            "{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::write(&tmp, contents).map_err(Self::io("write", &tmp))?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(Self::io("create", parent))?;
        }
        fs::rename(&tmp, path).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            StoreError::Io {
                action: "rename into",
                path: path.to_owned(),
                source,
            }
        })
    }

    /// Loads one committed state into `cluster` (replacing what it held) and
    /// marks it synced; returns the generation loaded.
    pub fn load_into(&self, cluster: &Cluster) -> Result<u64, StoreError> {
        let _lock = self.lock(FlockArg::LockShared)?;
        let mut cache = self.cached();
        self.refresh(&mut cache)?;
        let generation = cache
            .as_ref()
            .and_then(|snapshot| snapshot.stamp.as_ref())
            .map_or(0, |stamp| stamp.generation);
        let objects = cache
            .as_ref()
            .map(|snapshot| snapshot.objects.values().cloned().collect())
            .unwrap_or_default();
        cluster.update(|index| index.replace_all(objects));
        cluster.mark_synced();
        Ok(generation)
    }

    /// Brings `cluster` from the state this handle last gave it to the last
    /// commit, touching only the objects that changed (all of them on the
    /// first call, when the handle's cache is empty); records the generation in `loaded` while `cluster` is
    /// locked, so whoever reads it under [`Cluster::read`] gets the
    /// generation of the state they see. Subscribers are woken whenever the
    /// generation moves. Only for a handle no one else uses: its cache must
    /// be what `cluster` holds.
    fn feed(&self, cluster: &Cluster, loaded: &AtomicU64) -> Result<u64, StoreError> {
        /// What to do to the cluster, taken under the store lock and done
        /// after it, so a reader of the cluster never holds up a writer.
        enum Update {
            Whole(Vec<Object>),
            Some(Vec<(ObjectKey, Option<Object>)>),
        }
        let (generation, update) = {
            let _lock = self.lock(FlockArg::LockShared)?;
            let mut cache = self.cached();
            let delta = self.refresh(&mut cache)?;
            let Some(snapshot) = cache.as_ref() else {
                return Ok(0);
            };
            let generation = snapshot.stamp.as_ref().map_or(0, |stamp| stamp.generation);
            let update = match delta {
                Delta::Full => Update::Whole(snapshot.objects.values().cloned().collect()),
                Delta::None => Update::Some(Vec::new()),
                Delta::Keys(keys) => Update::Some(
                    keys.into_iter()
                        .map(|key| {
                            let object = snapshot.objects.get(&key).cloned();
                            (key, object)
                        })
                        .collect(),
                ),
            };
            (generation, update)
        };
        cluster.update(|index| {
            let changed = match update {
                Update::Whole(objects) => index.replace_all(objects),
                Update::Some(objects) => {
                    let mut changed = false;
                    for (key, object) in objects {
                        changed |= match object {
                            Some(object) => index.upsert(object),
                            None => index.remove(&key).is_some(),
                        };
                    }
                    changed
                }
            };
            let moved = loaded.swap(generation, Ordering::SeqCst) != generation;
            changed || moved
        });
        cluster.mark_synced();
        Ok(generation)
    }

    /// Starts watching for commits, before the caller's first load: a
    /// commit in between is seen. [`Commits::follow`] then reloads after
    /// each one.
    pub fn commits(&self) -> Result<Commits, StoreError> {
        let signal = signal::CommitSignal::new(&self.dir).map_err(Self::io("watch", &self.dir))?;
        Ok(Commits {
            store: self.clone(),
            signal,
            last: self.stamp()?,
        })
    }

    /// Loads the store into `cluster` now, then keeps it current from a
    /// background thread ([`Commits::follow`]) that, after each commit,
    /// applies only the objects the journal says changed. `interval` is how
    /// often it looks when inotify cannot watch the store
    /// ([`WATCH_INTERVAL`] is a good value). Stops when the returned handle
    /// is dropped.
    pub fn watch(&self, cluster: &Cluster, interval: Duration) -> Result<StoreWatcher, StoreError> {
        // A handle of its own: its cache is exactly what `cluster` holds.
        let store = Store {
            dir: self.dir.clone(),
            config: self.config.clone(),
            cache: Arc::default(),
        };
        let commits = store.commits()?;
        let loaded = Arc::new(AtomicU64::new(0));
        store.feed(cluster, &loaded)?;
        let thread = {
            let (cluster, loaded) = (cluster.clone(), loaded.clone());
            commits.follow("weft-store-watch", interval, move || {
                store.feed(&cluster, &loaded).map(drop)
            })?
        };
        Ok(StoreWatcher {
            _thread: thread,
            loaded,
        })
    }
}

/// A store being watched for commits; see [`Store::commits`].
#[derive(Debug)]
pub struct Commits {
    store: Store,
    signal: signal::CommitSignal,
    /// The generation file as of [`Store::commits`]: a commit after it,
    /// even one the caller's first load already saw, is reloaded.
    last: Option<Stamp>,
}

impl Commits {
    /// Starts thread `name`, which sleeps until a commit renames the store's
    /// generation file into place (inotify on the store's directory;
    /// without inotify it looks every `interval`) and then, if that file is
    /// not the one it last saw (its number, inode and mtime: a store made
    /// anew in the same directory counts, whatever its number), calls
    /// `reload`. A failed read or reload is logged and tried again at the
    /// next wake; whatever `reload` feeds keeps its last state. Stops when
    /// the returned handle is dropped.
    pub fn follow<E: std::fmt::Display>(
        self,
        name: &str,
        interval: Duration,
        mut reload: impl FnMut() -> Result<(), E> + Send + 'static,
    ) -> Result<CommitThread, StoreError> {
        let Commits {
            store,
            mut signal,
            mut last,
        } = self;
        let dir = store.dir.clone();
        let stopper = signal.stopper();
        let mut failing = Failing::default();
        let stop = Arc::new(AtomicBool::new(false));
        let store_dir = dir.clone();
        let thread = {
            let stop = stop.clone();
            let name_owned = name.to_owned();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        if signal.wait(interval) == signal::Wake::Stop {
                            break;
                        }
                        let stamp = match store.stamp() {
                            Ok(stamp) if stamp == last => continue,
                            Ok(stamp) => stamp,
                            Err(e) => {
                                failing.fail(
                                    &name_owned,
                                    &dir,
                                    "cannot read the store generation",
                                    &e,
                                );
                                continue;
                            }
                        };
                        match reload() {
                            Ok(()) => {
                                last = stamp;
                                failing.recover(&name_owned, &dir);
                            }
                            Err(e) => failing.fail(
                                &name_owned,
                                &dir,
                                "cannot reload from the store; keeping the last state",
                                &e,
                            ),
                        }
                    }
                })
                .map_err(Store::io("start a watcher for", &store_dir))?
        };
        Ok(CommitThread {
            stop,
            stopper,
            thread: Some(thread),
        })
    }
}

/// A failure streak of a commit thread: the first failure is a warning,
/// the ones after it (retried at every wake: every 20 ms while the store's
/// directory is gone) only debug lines, and the recovery one info line.
#[derive(Debug, Default)]
struct Failing {
    since: Option<std::time::Instant>,
    count: u64,
}

impl Failing {
    fn fail(&mut self, thread: &str, dir: &Path, what: &str, error: &dyn std::fmt::Display) {
        self.count += 1;
        if self.since.is_none() {
            self.since = Some(std::time::Instant::now());
            tracing::warn!(thread, store = %dir.display(), %error, "{what}");
        } else {
            tracing::debug!(thread, store = %dir.display(), %error, "{what}");
        }
    }

    fn recover(&mut self, thread: &str, dir: &Path) {
        if let Some(since) = self.since.take() {
            tracing::info!(thread, store = %dir.display(), failures = self.count, after_ms = since.elapsed().as_millis() as u64, "the store is readable again");
        }
        self.count = 0;
    }
}

/// The thread of [`Commits::follow`]; stops it when dropped.
#[derive(Debug)]
pub struct CommitThread {
    stop: Arc<AtomicBool>,
    /// Wakes the thread from its wait.
    stopper: signal::Stopper,
    thread: Option<JoinHandle<()>>,
}

impl Drop for CommitThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.stopper.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Keeps a [`Cluster`] current with a store; see [`Store::watch`].
#[derive(Debug)]
pub struct StoreWatcher {
    _thread: CommitThread,
    /// The store generation the cluster holds.
    loaded: Arc<AtomicU64>,
}

impl StoreWatcher {
    /// The store generation whose state the cluster holds. Read it while
    /// holding [`Cluster::read`] to get the generation of exactly the state
    /// being read (it is updated under the cluster's write lock).
    pub fn generation(&self) -> u64 {
        self.loaded.load(Ordering::SeqCst)
    }
}

fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn now() -> Time {
    let now = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Gives a new object its identity.
fn stamp_new(obj: &mut Object) {
    let meta = obj.meta_mut();
    meta.uid.get_or_insert_with(new_uid);
    meta.creation_timestamp.get_or_insert_with(now);
    meta.resource_version = None;
}

/// A port's protocol, `TCP` when not given.
fn protocol(p: &Option<String>) -> &str {
    p.as_deref().unwrap_or("TCP")
}

/// Drops what the server allocated for a Service's old type or policy and
/// its new one does not use, as kube-apiserver does on update: NodePorts
/// of a Service that is no longer NodePort or LoadBalancer, the
/// healthCheckNodePort of one that is no longer LoadBalancer with
/// `externalTrafficPolicy: Local`. Only values equal to the allocated ones
/// go (a manifest read back with `lab get -o yaml` carries them); a value
/// the manifest chose itself is left for validation to refuse.
fn drop_type_dependent_fields(obj: &mut Object, old: &Object) {
    let (Object::Service(new), Object::Service(old)) = (obj, old) else {
        return;
    };
    let (Some(spec), Some(old_spec)) = (new.spec.as_mut(), old.spec.as_ref()) else {
        return;
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !matches!(kind, "NodePort" | "LoadBalancer") {
        let allocated: Vec<i32> = old_spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.node_port)
            .collect();
        for port in spec.ports.iter_mut().flatten() {
            if port.node_port.is_some_and(|p| allocated.contains(&p)) {
                port.node_port = None;
            }
        }
    }
    if !crate::model::uses_health_check_node_port(spec)
        && spec.health_check_node_port.is_some()
        && spec.health_check_node_port == old_spec.health_check_node_port
    {
        spec.health_check_node_port = None;
    }
}

/// Keeps what the server owns when an existing object is applied again:
/// identity, status when the manifest has none, the allocated ClusterIP,
/// NodePorts and pod CIDR, a Node's conditions, the node a Pod was
/// scheduled to and the runtime's workload annotation on it.
fn carry_over(obj: &mut Object, old: &Object) {
    let old_meta = old.meta();
    let meta = obj.meta_mut();
    meta.uid.clone_from(&old_meta.uid);
    meta.creation_timestamp
        .clone_from(&old_meta.creation_timestamp);
    meta.resource_version.clone_from(&old_meta.resource_version);
    match (obj, old) {
        (Object::Service(new), Object::Service(old)) => {
            if new.status.is_none() {
                new.status.clone_from(&old.status);
            }
            let (Some(spec), Some(old_spec)) = (new.spec.as_mut(), old.spec.as_ref()) else {
                return;
            };
            let external_name = spec.type_.as_deref() == Some("ExternalName");
            if !external_name && spec.cluster_ip.as_deref().is_none_or(str::is_empty) {
                spec.cluster_ip.clone_from(&old_spec.cluster_ip);
                spec.cluster_ips.clone_from(&old_spec.cluster_ips);
            }
            if spec.health_check_node_port.is_none_or(|p| p == 0)
                && crate::model::uses_health_check_node_port(spec)
            {
                spec.health_check_node_port = old_spec.health_check_node_port;
            }
            let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
            for port in spec.ports.iter_mut().flatten() {
                if !node_ports || port.node_port.is_some_and(|p| p != 0) {
                    continue;
                }
                port.node_port = old_spec
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| {
                        p.port == port.port && protocol(&p.protocol) == protocol(&port.protocol)
                    })
                    .and_then(|p| p.node_port);
            }
        }
        (Object::Node(new), Object::Node(old)) => {
            match (&mut new.status, &old.status) {
                (None, _) => new.status.clone_from(&old.status),
                // The conditions are the kubelet's.
                (Some(status), Some(old_status)) if status.conditions.is_none() => {
                    status.conditions.clone_from(&old_status.conditions);
                }
                _ => {}
            }
            let (Some(spec), Some(old_spec)) = (new.spec.as_mut(), old.spec.as_ref()) else {
                return;
            };
            if spec.pod_cidr.as_deref().is_none_or(str::is_empty) {
                spec.pod_cidr.clone_from(&old_spec.pod_cidr);
                spec.pod_cidrs.clone_from(&old_spec.pod_cidrs);
            }
        }
        (Object::Pod(new), Object::Pod(old)) => {
            if new.status.is_none() {
                new.status.clone_from(&old.status);
            }
            // What the runtime said it runs is the runtime's, like status.
            let workload = old
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(crate::model::WORKLOAD_ANNOTATION));
            if let Some(workload) = workload {
                new.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .entry(crate::model::WORKLOAD_ANNOTATION.to_owned())
                    .or_insert_with(|| workload.clone());
            }
            if let (Some(spec), Some(old_spec)) = (new.spec.as_mut(), old.spec.as_ref()) {
                if spec.node_name.is_none() {
                    spec.node_name.clone_from(&old_spec.node_name);
                }
            }
        }
        (Object::Namespace(new), Object::Namespace(old)) if new.status.is_none() => {
            new.status.clone_from(&old.status);
        }
        (Object::Ingress(new), Object::Ingress(old)) if new.status.is_none() => {
            new.status.clone_from(&old.status);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
