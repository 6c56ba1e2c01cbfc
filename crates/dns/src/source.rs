//! Keeps the served index current with the cluster, off the query path:
//! the whole index is rebuilt and swapped in atomically, so queries never
//! wait on a rebuild. Marks the server ready after the first synced build.
//!
//! - [`Follower`]: waits on a [`Cluster`]'s coalesced change stream (the
//!   Kubernetes API source).
//! - [`StoreFollower`]: polls an embedded store's generation and reads only
//!   the kinds the zone is made of ([`kinds`]), a namespace at a time into
//!   an [`IndexBuilder`]: a lab's Pods, most of its objects, are read only
//!   for `pods = "verified"`, no more than one namespace's objects are held
//!   at once, and none is kept once the index is built.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use weft_cluster::manifest::{self, ReadError};
use weft_cluster::store::StoreError;
use weft_cluster::{Cluster, Kind, Object, Store};

use crate::records::{Index, IndexBuilder, PodMode, ZoneSettings};
use crate::server::Handler;

/// The kinds the zone is built from: Services and EndpointSlices, and Pods
/// only when `pods = "verified"` needs them (CoreDNS too watches Pods only
/// then).
pub fn kinds(settings: &ZoneSettings) -> &'static [Kind] {
    if settings.pods == PodMode::Verified {
        &[Kind::Service, Kind::EndpointSlice, Kind::Pod]
    } else {
        &[Kind::Service, Kind::EndpointSlice]
    }
}

/// Why the embedded store could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("cannot list {path}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store kept changing while being read")]
    Busy,
    #[error("cannot start the store follower thread")]
    Thread(#[source] std::io::Error),
}

/// The namespaces holding objects of any of `kinds` in the store
/// directory `dir` (`<kind-plural>/<namespace>/<name>.yaml`).
fn namespaces(dir: &Path, kinds: &[Kind]) -> Result<BTreeSet<String>, SourceError> {
    let mut out = BTreeSet::new();
    for &kind in kinds {
        let top = dir.join(kind.plural());
        let entries = match std::fs::read_dir(&top) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(SourceError::List { path: top, source }),
        };
        out.extend(
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .filter_map(|p| p.file_name()?.to_str().map(str::to_owned)),
        );
    }
    Ok(out)
}

/// The objects of `kinds` in one namespace of the store directory `dir`.
/// Documents that do not parse are logged and skipped.
pub fn read_namespace(
    dir: &Path,
    kinds: &[Kind],
    namespace: &str,
) -> Result<Vec<Object>, SourceError> {
    let mut objects = Vec::new();
    for &kind in kinds {
        let ns_dir = dir.join(kind.plural()).join(namespace);
        if !ns_dir.is_dir() {
            continue;
        }
        let manifests = match manifest::read_manifests(&[ns_dir], &mut std::io::empty()) {
            Ok(m) => m,
            // The namespace's last object of this kind went away.
            Err(ReadError::EmptyDir(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        for m in &manifests {
            let (docs, invalid) = manifest::parse(m);
            for i in invalid {
                tracing::warn!(problem = %i, "skipping a store document");
            }
            objects.extend(
                docs.into_iter()
                    .map(|d| d.object)
                    .filter(|o| o.kind() == kind),
            );
        }
    }
    Ok(objects)
}

/// Adds these objects to the index being built.
pub fn add_objects(builder: &mut IndexBuilder, objects: &[Object]) {
    let services = objects.iter().filter_map(|o| match o {
        Object::Service(s) => Some(s),
        _ => None,
    });
    let slices = objects.iter().filter_map(|o| match o {
        Object::EndpointSlice(s) => Some(s),
        _ => None,
    });
    let pods = objects.iter().filter_map(|o| match o {
        Object::Pod(p) => Some(p),
        _ => None,
    });
    builder.add(services, slices, pods);
}

/// The index of the store's current state, read a namespace at a time (no
/// more than one namespace's objects are held at once). The generation is
/// the same before and after (a commit renames its files into place, then
/// writes the generation last), else it reads again.
pub fn build_from_store(
    store: &Store,
    settings: &ZoneSettings,
) -> Result<(u64, Index), SourceError> {
    let kinds = kinds(settings);
    for _ in 0..5 {
        let before = store.generation()?;
        let mut builder = IndexBuilder::new(settings);
        for ns in namespaces(store.dir(), kinds)? {
            let objects = read_namespace(store.dir(), kinds, &ns)?;
            add_objects(&mut builder, &objects);
        }
        if store.generation()? == before {
            return Ok((before, builder.finish()));
        }
    }
    Err(SourceError::Busy)
}

/// Follows an embedded store; stops when dropped.
#[derive(Debug)]
pub struct StoreFollower {
    _thread: weft_cluster::store::CommitThread,
}

impl StoreFollower {
    /// Builds the index from the store now (an error if it cannot be read),
    /// then rebuilds after each commit ([`weft_cluster::store::Commits`]:
    /// woken by the commit, or looking every `interval` where inotify is
    /// not available); a failed read is logged and the last index kept.
    pub fn start(
        dir: PathBuf,
        settings: ZoneSettings,
        handler: Arc<Handler>,
        interval: Duration,
    ) -> Result<StoreFollower, SourceError> {
        let store = Store::open_existing(dir)?;
        let publish = |handler: &Handler, index: Index| {
            tracing::debug!(names = index.len(), "cluster zone rebuilt");
            handler.index.store(Arc::new(index));
            handler.metrics.set_ready();
        };
        let commits = store.commits()?;
        let (_, index) = build_from_store(&store, &settings)?;
        publish(&handler, index);
        let thread = commits.follow("weft-dns-store", interval, move || {
            let (_, index) = build_from_store(&store, &settings)?;
            publish(&handler, index);
            Ok::<_, SourceError>(())
        })?;
        Ok(StoreFollower { _thread: thread })
    }
}

/// The index as the cluster holds it now.
pub fn build_from(cluster: &Cluster, settings: &ZoneSettings) -> Index {
    let index = cluster.read();
    Index::build(
        settings,
        index.services(),
        index.endpoint_slices(),
        index.pods(),
    )
}

/// The rebuilding thread ([`weft_cluster::Follower`]); stops when dropped.
#[derive(Debug)]
pub struct Follower {
    _thread: weft_cluster::Follower,
}

impl Follower {
    /// Builds the index now, then rebuilds after every change.
    pub fn start(
        cluster: Cluster,
        settings: ZoneSettings,
        handler: Arc<Handler>,
    ) -> std::io::Result<Follower> {
        let changes = cluster.subscribe();
        let publish = move || {
            let index = build_from(&cluster, &settings);
            tracing::debug!(names = index.len(), "cluster zone rebuilt");
            handler.index.store(Arc::new(index));
            if cluster.is_synced() {
                handler.metrics.set_ready();
            }
        };
        publish();
        Ok(Follower {
            _thread: weft_cluster::Follower::spawn("weft-dns-index", changes, publish)?,
        })
    }
}
