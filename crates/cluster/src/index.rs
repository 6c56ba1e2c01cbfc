//! The in-memory index of the cluster that every component queries, and the
//! [`Cluster`] handle through which a source (the Kubernetes API or the
//! embedded store) fills it and reconcilers read it and wait for changes.
//!
//! The index holds whole objects keyed by [`ObjectKey`] plus secondary
//! lookups kept in step on every write: Services by cluster IP, Pods by IP,
//! EndpointSlices by Service, Ingress rules by host. It never derives or
//! defaults anything: it answers with what the source gave it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use k8s_openapi::api::networking::v1::IngressRule;

use crate::changes::{Changes, Subscription};
use crate::model::{
    EndpointSlice, Ingress, IngressClass, Kind, Namespace, Node, Object, ObjectKey, Pod,
    SERVICE_NAME_LABEL, Secret, Service, pod_is_terminal,
};

/// A secondary lookup an object appears under.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Lookup {
    ServiceIp(IpAddr),
    PodIp(IpAddr),
    /// Namespace and name of the Service an EndpointSlice belongs to.
    SliceOf(String, String),
    /// An Ingress rule's host as written (`*.example.com` included), or ""
    /// for rules without a host.
    IngressHost(String),
}

fn lookups(obj: &Object) -> Vec<Lookup> {
    let ips = |v: &mut Vec<Lookup>, s: Option<&String>, f: fn(IpAddr) -> Lookup| {
        if let Some(ip) = s.and_then(|s| s.parse().ok()) {
            v.push(f(ip));
        }
    };
    let mut out = Vec::new();
    match obj {
        Object::Service(svc) => {
            if let Some(spec) = &svc.spec {
                ips(&mut out, spec.cluster_ip.as_ref(), Lookup::ServiceIp);
                for ip in spec.cluster_ips.iter().flatten() {
                    ips(&mut out, Some(ip), Lookup::ServiceIp);
                }
            }
        }
        Object::Pod(pod) => {
            if let Some(status) = &pod.status {
                ips(&mut out, status.pod_ip.as_ref(), Lookup::PodIp);
                for ip in status.pod_ips.iter().flatten() {
                    ips(&mut out, Some(&ip.ip), Lookup::PodIp);
                }
            }
        }
        Object::EndpointSlice(slice) => {
            if let Some(svc) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                let ns = slice.metadata.namespace.clone().unwrap_or_default();
                out.push(Lookup::SliceOf(ns, svc.clone()));
            }
        }
        Object::Ingress(ing) => {
            for rule in ing.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
                out.push(Lookup::IngressHost(rule.host.clone().unwrap_or_default()));
            }
        }
        _ => {}
    }
    out.sort();
    out.dedup();
    out
}

/// One Ingress rule and the Ingress it belongs to.
#[derive(Clone, Copy, Debug)]
pub struct IngressRuleRef<'a> {
    pub ingress: &'a Ingress,
    pub rule: &'a IngressRule,
}

/// The whole cluster state a source has delivered, with lookups.
#[derive(Clone, Debug, Default)]
pub struct Index {
    objects: BTreeMap<ObjectKey, Object>,
    lookups: BTreeMap<Lookup, BTreeSet<ObjectKey>>,
}

macro_rules! typed_accessors {
    ($($kind:ident $ty:ident $all:ident $one:ident),* $(,)?) => {$(
        #[doc = concat!("Every ", stringify!($ty), ", ordered by namespace and name.")]
        pub fn $all(&self) -> impl Iterator<Item = &$ty> + '_ {
            self.list(Kind::$kind).filter_map(|o| match o {
                Object::$kind(x) => Some(x),
                _ => None,
            })
        }

        #[doc = concat!("The ", stringify!($ty), " with this namespace (ignored if cluster-scoped) and name.")]
        pub fn $one(&self, namespace: &str, name: &str) -> Option<&$ty> {
            match self.get(&ObjectKey::new(Kind::$kind, namespace, name)) {
                Some(Object::$kind(x)) => Some(x),
                _ => None,
            }
        }
    )*};
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of objects of every kind.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key)
    }

    /// Every object of one kind, ordered by namespace and name.
    pub fn list(&self, kind: Kind) -> impl Iterator<Item = &Object> + '_ {
        let start = ObjectKey {
            kind,
            namespace: String::new(),
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, o)| o)
    }

    /// Every object, ordered by key.
    pub fn objects(&self) -> impl Iterator<Item = &Object> + '_ {
        self.objects.values()
    }

    typed_accessors!(
        Namespace Namespace namespaces namespace_named,
        Node Node nodes node_named,
        Service Service services service,
        Pod Pod pods pod,
        EndpointSlice EndpointSlice endpoint_slices endpoint_slice,
        Ingress Ingress ingresses ingress,
        IngressClass IngressClass ingress_classes ingress_class_named,
        Secret Secret secrets secret,
    );

    /// The Namespace with this name.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespace_named("", name)
    }

    /// The Node with this name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.node_named("", name)
    }

    /// The IngressClass with this name.
    pub fn ingress_class(&self, name: &str) -> Option<&IngressClass> {
        self.ingress_class_named("", name)
    }

    fn by_lookup(&self, lookup: Lookup) -> impl Iterator<Item = &Object> + '_ {
        self.lookups
            .get(&lookup)
            .into_iter()
            .flatten()
            .filter_map(|k| self.objects.get(k))
    }

    /// The Service that has `ip` among its cluster IPs.
    pub fn service_by_cluster_ip(&self, ip: IpAddr) -> Option<&Service> {
        self.by_lookup(Lookup::ServiceIp(ip)).find_map(|o| match o {
            Object::Service(s) => Some(s),
            _ => None,
        })
    }

    /// The Pod that has `ip`; when a finished Pod and a live one share the
    /// address, the live one.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        let mut pods = self.by_lookup(Lookup::PodIp(ip)).filter_map(|o| match o {
            Object::Pod(p) => Some(p),
            _ => None,
        });
        let first = pods.next()?;
        if !pod_is_terminal(first) {
            return Some(first);
        }
        pods.find(|p| !pod_is_terminal(p)).or(Some(first))
    }

    /// The EndpointSlices labelled as belonging to Service `namespace/name`.
    pub fn endpoint_slices_for(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Iterator<Item = &EndpointSlice> + '_ {
        self.by_lookup(Lookup::SliceOf(namespace.to_owned(), name.to_owned()))
            .filter_map(|o| match o {
                Object::EndpointSlice(s) => Some(s),
                _ => None,
            })
    }

    /// The Ingress rules that apply to requests for `host`, most specific
    /// first: rules naming the host exactly, then a wildcard rule
    /// (`*.example.com` matches `a.example.com`, one label only), then rules
    /// without a host. Within a group, ordered by Ingress namespace and name.
    pub fn ingress_rules_for_host(&self, host: &str) -> Vec<IngressRuleRef<'_>> {
        let host = host.to_ascii_lowercase();
        let mut patterns = vec![host.clone()];
        if let Some((_, parent)) = host.split_once('.') {
            patterns.push(format!("*.{parent}"));
        }
        patterns.push(String::new());
        let mut out = Vec::new();
        for pattern in patterns {
            for obj in self.by_lookup(Lookup::IngressHost(pattern.clone())) {
                let Object::Ingress(ing) = obj else { continue };
                for rule in ing.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
                    if rule
                        .host
                        .as_deref()
                        .unwrap_or_default()
                        .eq_ignore_ascii_case(&pattern)
                    {
                        out.push(IngressRuleRef { ingress: ing, rule });
                    }
                }
            }
        }
        out
    }

    /// Inserts or replaces an object; returns whether anything changed.
    pub fn upsert(&mut self, obj: Object) -> bool {
        let key = obj.key();
        if self.objects.get(&key) == Some(&obj) {
            return false;
        }
        self.remove(&key);
        for lookup in lookups(&obj) {
            self.lookups.entry(lookup).or_default().insert(key.clone());
        }
        self.objects.insert(key, obj);
        true
    }

    /// Removes an object; returns it if it was there.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<Object> {
        let old = self.objects.remove(key)?;
        for lookup in lookups(&old) {
            if let Some(keys) = self.lookups.get_mut(&lookup) {
                keys.remove(key);
                if keys.is_empty() {
                    self.lookups.remove(&lookup);
                }
            }
        }
        Some(old)
    }

    /// Makes the objects of `kind` exactly `objects` (what a relist
    /// delivers); returns whether anything changed.
    pub fn replace_kind(&mut self, kind: Kind, objects: Vec<Object>) -> bool {
        let fresh: BTreeSet<ObjectKey> = objects.iter().map(Object::key).collect();
        let stale: Vec<ObjectKey> = self
            .list(kind)
            .map(Object::key)
            .filter(|k| !fresh.contains(k))
            .collect();
        let mut changed = false;
        for key in stale {
            changed |= self.remove(&key).is_some();
        }
        for obj in objects.into_iter().filter(|o| o.kind() == kind) {
            changed |= self.upsert(obj);
        }
        changed
    }

    /// Makes the whole index exactly `objects`; returns whether anything
    /// changed.
    pub fn replace_all(&mut self, objects: Vec<Object>) -> bool {
        let mut by_kind: BTreeMap<Kind, Vec<Object>> =
            Kind::ALL.into_iter().map(|k| (k, Vec::new())).collect();
        for obj in objects {
            by_kind.entry(obj.kind()).or_default().push(obj);
        }
        let mut changed = false;
        for (kind, objs) in by_kind {
            changed |= self.replace_kind(kind, objs);
        }
        changed
    }
}

#[derive(Debug, Default)]
struct Shared {
    index: RwLock<Index>,
    changes: Arc<Changes>,
    synced: AtomicBool,
}

/// The handle every component shares: a source writes through
/// [`Cluster::update`], reconcilers read through [`Cluster::read`] and wait on
/// [`Cluster::subscribe`]. Cloning is cheap and shares the same index.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    shared: Arc<Shared>,
}

impl Cluster {
    pub fn new() -> Self {
        Self::default()
    }

    /// Read access to the whole index. Writers wait while the guard lives:
    /// compute from it, then drop it before applying to the kernel.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.shared
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a batch of writes; subscribers are woken once, and only if
    /// `f` reports a change (the `bool` the `Index` write methods return).
    pub fn update(&self, f: impl FnOnce(&mut Index) -> bool) -> bool {
        let changed = {
            let mut index = self
                .shared
                .index
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            f(&mut index)
        };
        if changed {
            self.shared.changes.bump();
        }
        changed
    }

    /// A subscription that has seen the current state.
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.shared.changes.clone())
    }

    /// How many changing writes the index has had.
    pub fn generation(&self) -> u64 {
        self.shared.changes.generation()
    }

    /// Records that the source delivered its first complete state; a
    /// component must not program the kernel before this is true.
    pub fn mark_synced(&self) {
        if !self.shared.synced.swap(true, Ordering::SeqCst) {
            self.shared.changes.bump();
        }
    }

    /// Whether the source has delivered a complete state at least once.
    pub fn is_synced(&self) -> bool {
        self.shared.synced.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests;
