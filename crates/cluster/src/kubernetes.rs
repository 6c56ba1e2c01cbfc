//! The Kubernetes source: fills a [`Cluster`] from an API server with one
//! reflector-style watcher per kind (`kube`'s `watcher`: list, then watch
//! from the list's resourceVersion, following bookmarks, relisting after a
//! `410 Gone`, with exponential backoff on errors).
//!
//! Guarantees:
//! - a relist replaces every object of its kind at once, so objects deleted
//!   while the watch was down disappear;
//! - [`Cluster::is_synced`] turns true only when every kind watched has
//!   delivered a complete list;
//! - while the API server is unreachable the cluster keeps the last state it
//!   had; the outage is logged and shows in [`Health`].
//!
//! It only reads (`list` and `watch`); `deploy/rbac.yaml` grants exactly that.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use futures::stream::{BoxStream, StreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde::de::DeserializeOwned;

use crate::index::Cluster;
use crate::model::{
    EndpointSlice, Ingress, IngressClass, Kind, Namespace, Node, Object, Pod, Secret, Service,
};

/// What a component reports about its source in `/healthz` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthReport {
    /// Every kind watched has delivered a complete list at least once.
    pub synced: bool,
    /// The kinds whose watch failed last time it was polled: the API server
    /// is unreachable for them, and the cluster shows their last known state.
    pub failing: BTreeSet<Kind>,
    /// Watch errors since start.
    pub errors: u64,
    /// The last watch error, with its kind.
    pub last_error: Option<String>,
}

/// The live health of a [`KubernetesSource`]; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Health {
    report: Arc<Mutex<HealthReport>>,
}

impl Health {
    pub fn report(&self) -> HealthReport {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut HealthReport)) {
        f(&mut self.report.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Watches an API server and keeps a [`Cluster`] current.
#[derive(Clone)]
pub struct KubernetesSource {
    client: Client,
    kinds: Vec<Kind>,
    node: Option<String>,
    health: Health,
}

type KindStream = BoxStream<'static, (Kind, Result<Event<Object>, watcher::Error>)>;

fn stream_of<K>(kind: Kind, api: Api<K>, config: watcher::Config) -> KindStream
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    Object: From<K>,
{
    watcher::watcher(api, config)
        .default_backoff()
        .map(move |r| {
            let r = r.map(|event| match event {
                Event::Apply(o) => Event::Apply(Object::from(o)),
                Event::Delete(o) => Event::Delete(Object::from(o)),
                Event::Init => Event::Init,
                Event::InitApply(o) => Event::InitApply(Object::from(o)),
                Event::InitDone => Event::InitDone,
            });
            (kind, r)
        })
        .boxed()
}

impl KubernetesSource {
    /// A source watching every kind but Secrets in every namespace; a
    /// component that needs Secrets (ingress, for TLS) asks for them with
    /// [`KubernetesSource::kinds`].
    pub fn new(client: Client) -> Self {
        KubernetesSource {
            client,
            kinds: Kind::ALL
                .into_iter()
                .filter(|k| *k != Kind::Secret)
                .collect(),
            node: None,
            health: Health::default(),
        }
    }

    /// Watches only these kinds (a DNS server needs no Secrets).
    pub fn kinds(mut self, kinds: &[Kind]) -> Self {
        self.kinds = kinds.to_vec();
        self
    }

    /// Watches only the Pods scheduled to `node` (what a node agent needs).
    pub fn pods_on_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }

    /// The source's health, updated while [`KubernetesSource::run`] runs.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    fn stream(&self, kind: Kind) -> KindStream {
        let c = self.client.clone();
        let config = watcher::Config::default();
        match kind {
            Kind::Namespace => stream_of::<Namespace>(kind, Api::all(c), config),
            Kind::Node => stream_of::<Node>(kind, Api::all(c), config),
            Kind::Service => stream_of::<Service>(kind, Api::all(c), config),
            Kind::Pod => {
                let config = match &self.node {
                    Some(node) => config.fields(&format!("spec.nodeName={node}")),
                    None => config,
                };
                stream_of::<Pod>(kind, Api::all(c), config)
            }
            Kind::EndpointSlice => stream_of::<EndpointSlice>(kind, Api::all(c), config),
            Kind::Ingress => stream_of::<Ingress>(kind, Api::all(c), config),
            Kind::IngressClass => stream_of::<IngressClass>(kind, Api::all(c), config),
            Kind::Secret => stream_of::<Secret>(kind, Api::all(c), config),
        }
    }

    /// Watches until every watch stream ends, which in practice is never:
    /// errors are retried with backoff. Run it as a task.
    pub async fn run(self, cluster: Cluster) {
        let kinds: BTreeSet<Kind> = self.kinds.iter().copied().collect();
        let mut events = futures::stream::select_all(kinds.iter().map(|k| self.stream(*k)));
        let mut listing: BTreeMap<Kind, Vec<Object>> = BTreeMap::new();
        let mut synced: BTreeSet<Kind> = BTreeSet::new();
        while let Some((kind, event)) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "watch failed; serving the last known state");
                    self.health.update(|h| {
                        h.failing.insert(kind);
                        h.errors += 1;
                        h.last_error = Some(format!("{kind}: {e}"));
                    });
                    continue;
                }
            };
            if !matches!(event, Event::Init) {
                // Init comes before the relist is even sent: only data
                // proves the API server is back.
                self.health.update(|h| {
                    h.failing.remove(&kind);
                });
            }
            match event {
                Event::Init => {
                    listing.insert(kind, Vec::new());
                }
                Event::InitApply(obj) => listing.entry(kind).or_default().push(obj),
                Event::InitDone => {
                    let objects = listing.remove(&kind).unwrap_or_default();
                    tracing::debug!(%kind, count = objects.len(), "listed");
                    cluster.update(|index| index.replace_kind(kind, objects));
                    synced.insert(kind);
                    if synced == kinds {
                        cluster.mark_synced();
                        self.health.update(|h| h.synced = true);
                    }
                }
                Event::Apply(obj) => {
                    cluster.update(|index| index.upsert(obj));
                }
                Event::Delete(obj) => {
                    cluster.update(|index| index.remove(&obj.key()).is_some());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
