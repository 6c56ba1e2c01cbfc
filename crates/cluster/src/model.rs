//! The kinds of object weft reads, as `k8s-openapi` types (Kubernetes 1.35
//! API), wrapped in one [`Object`] enum so an index, a store or a manifest can
//! hold any of them, and the [`ObjectKey`] (kind, namespace, name) that names
//! an object everywhere in weft.
//!
//! This module only describes objects: it does not validate them (see
//! `validate`) or default them (see `controlplane`).

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Serialize, Serializer};

pub use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// Annotation in which a runtime says what it actually runs for a Pod (the
/// lab kubelet runs `weft serve` whatever the image); `get pods -o wide`
/// shows it.
pub const WORKLOAD_ANNOTATION: &str = "weft.dev/workload";
/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] on slices derived from Pods, the same as
/// Kubernetes' EndpointSlice controller writes.
pub const ENDPOINTSLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";

/// A kind of object weft reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Node,
    Service,
    Pod,
    EndpointSlice,
    Ingress,
    IngressClass,
    Secret,
}

impl Kind {
    /// Every kind, in the order a store applies them.
    pub const ALL: [Kind; 8] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Service,
        Kind::Pod,
        Kind::EndpointSlice,
        Kind::Ingress,
        Kind::IngressClass,
        Kind::Secret,
    ];

    /// The `kind` field, e.g. `EndpointSlice`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Secret => "Secret",
        }
    }

    /// The `apiVersion` field, e.g. `discovery.k8s.io/v1`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Node | Kind::Service | Kind::Pod | Kind::Secret => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Ingress | Kind::IngressClass => "networking.k8s.io/v1",
        }
    }

    /// The resource name, e.g. `endpointslices`; also the store's folder name.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Node => "nodes",
            Kind::Service => "services",
            Kind::Pod => "pods",
            Kind::EndpointSlice => "endpointslices",
            Kind::Ingress => "ingresses",
            Kind::IngressClass => "ingressclasses",
            Kind::Secret => "secrets",
        }
    }

    /// How kubectl names the resource in messages: `service`,
    /// `endpointslice.discovery.k8s.io`.
    pub fn resource(self) -> String {
        let singular = self.name().to_ascii_lowercase();
        match self.api_version().split_once('/') {
            Some((group, _)) => format!("{singular}.{group}"),
            None => singular,
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node | Kind::IngressClass)
    }

    /// The kind a manifest's `apiVersion` and `kind` fields name, if weft
    /// knows it.
    pub fn from_type_meta(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == kind && k.api_version() == api_version)
    }

    /// The kind a command line names, accepting kubectl's spellings: singular,
    /// plural, short name (`svc`, `po`, `no`, `ns`, `ing`, `ep`… ) and
    /// `plural.group`, case-insensitively.
    pub fn from_cli(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        let base = lower.split('.').next().unwrap_or_default();
        Kind::ALL.into_iter().find(|k| {
            let short: &[&str] = match k {
                Kind::Namespace => &["ns"],
                Kind::Node => &["no"],
                Kind::Service => &["svc"],
                Kind::Pod => &["po"],
                Kind::EndpointSlice => &[],
                Kind::Ingress => &["ing"],
                Kind::IngressClass => &[],
                Kind::Secret => &[],
            };
            base == k.plural()
                || base == k.name().to_ascii_lowercase()
                || short.contains(&base)
                || lower == k.resource()
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The identity of an object: kind, namespace (empty for cluster-scoped
/// kinds) and name. Ordered by kind, then namespace, then name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// A key; `namespace` is ignored for cluster-scoped kinds.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        let namespace = if kind.namespaced() { namespace } else { "" };
        ObjectKey {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectKey {
    /// `Service default/web`, `Node node-1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One object of any kind weft reads.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "objects live in maps, whole; boxing would add an allocation per object for nothing"
)]
pub enum Object {
    Namespace(Namespace),
    Node(Node),
    Service(Service),
    Pod(Pod),
    EndpointSlice(EndpointSlice),
    Ingress(Ingress),
    IngressClass(IngressClass),
    Secret(Secret),
}

/// Runs `$body` with `$o` bound to the typed object inside `$obj`.
macro_rules! each_kind {
    ($obj:expr, $o:ident => $body:expr) => {
        match $obj {
            Object::Namespace($o) => $body,
            Object::Node($o) => $body,
            Object::Service($o) => $body,
            Object::Pod($o) => $body,
            Object::EndpointSlice($o) => $body,
            Object::Ingress($o) => $body,
            Object::IngressClass($o) => $body,
            Object::Secret($o) => $body,
        }
    };
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::Service(_) => Kind::Service,
            Object::Pod(_) => Kind::Pod,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Ingress(_) => Kind::Ingress,
            Object::IngressClass(_) => Kind::IngressClass,
            Object::Secret(_) => Kind::Secret,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        each_kind!(self, o => &o.metadata)
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_kind!(self, o => &mut o.metadata)
    }

    /// The object's key; a missing name or namespace is read as empty.
    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        ObjectKey::new(
            self.kind(),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    /// Reads an object of the given kind from its JSON form; the error names
    /// the path of the field that did not fit, e.g. `spec.ports[0].port`.
    pub fn from_json(
        kind: Kind,
        value: serde_json::Value,
    ) -> Result<Object, serde_path_to_error::Error<serde_json::Error>> {
        fn read<T: serde::de::DeserializeOwned>(
            value: serde_json::Value,
        ) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
            serde_path_to_error::deserialize(value)
        }
        Ok(match kind {
            Kind::Namespace => Object::Namespace(read(value)?),
            Kind::Node => Object::Node(read(value)?),
            Kind::Service => Object::Service(read(value)?),
            Kind::Pod => Object::Pod(read(value)?),
            Kind::EndpointSlice => Object::EndpointSlice(read(value)?),
            Kind::Ingress => Object::Ingress(read(value)?),
            Kind::IngressClass => Object::IngressClass(read(value)?),
            Kind::Secret => Object::Secret(read(value)?),
        })
    }

    /// The object as Kubernetes serializes it, `apiVersion` and `kind`
    /// included.
    pub fn to_json(&self) -> serde_json::Value {
        // Serializing k8s-openapi types to a JSON value cannot fail: their
        // maps have string keys.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        each_kind!(self, o => o.serialize(serializer))
    }
}

macro_rules! object_from {
    ($($t:ident),*) => {$(
        impl From<$t> for Object {
            fn from(o: $t) -> Object {
                Object::$t(o)
            }
        }
    )*};
}
object_from!(
    Namespace,
    Node,
    Service,
    Pod,
    EndpointSlice,
    Ingress,
    IngressClass,
    Secret
);

/// Whether a Service spec has a `healthCheckNodePort`: only a
/// `LoadBalancer` with `externalTrafficPolicy: Local` does.
pub fn uses_health_check_node_port(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> bool {
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec.external_traffic_policy.as_deref() == Some("Local")
}

/// Whether a Pod has the `Ready` condition set to `True`.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a Pod has finished for good (phase `Succeeded` or `Failed`).
pub fn pod_is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

#[cfg(test)]
mod tests;
