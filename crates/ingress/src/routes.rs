//! The routing table: a pure function from the cluster model (Ingresses,
//! IngressClasses, Services, EndpointSlices, TLS Secrets) to what the proxy
//! needs per request — which backend endpoints serve a host and path, and
//! which certificate serves a TLS server name.
//!
//! Matching follows the Ingress v1 spec:
//! - hosts: an exact host (case-insensitive), then a wildcard `*.example.com`
//!   (exactly one more label: `a.example.com`, not `example.com` nor
//!   `a.b.example.com`), then rules without a host, then the
//!   `defaultBackend`; a host's rules that match no path fall through to the
//!   next group;
//! - paths: `Exact` compares the whole path; `Prefix` compares element by
//!   element after dropping a trailing `/` (`/foo` matches `/foo`, `/foo/`
//!   and `/foo/bar` but not `/foobar`); `ImplementationSpecific` is treated
//!   as `Prefix`; the longest match wins, `Exact` over `Prefix` at equal
//!   length;
//! - the same host, path and type in two Ingresses: the older Ingress wins
//!   (creation time, then namespace/name) and the conflict is reported.
//!
//! Backends resolve straight to endpoint addresses (no hop through the
//! ClusterIP): the ready endpoints of the Service port's EndpointSlices, or,
//! when none is ready, the serving-and-terminating ones.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{IngressBackend, IngressClass};
use rustls::sign::CertifiedKey;
use weft_cluster::Index;
use weft_cluster::model::{Ingress, Service};

use crate::tls;

/// Annotation asking that plain-HTTP requests for an Ingress's routes be
/// redirected (308) to HTTPS.
pub const SSL_REDIRECT_ANNOTATION: &str = "weft.dev/ssl-redirect";
/// The pre-`ingressClassName` way to name a class, still honoured.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Annotation marking an IngressClass as the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// `IngressClass.spec.controller` value naming weft's controller.
pub const CONTROLLER_NAME: &str = "weft.dev/ingress-controller";

/// Which Ingresses this controller serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassSettings {
    /// Ingresses whose class has this name are served even without an
    /// IngressClass object.
    pub class: String,
    /// IngressClasses whose `spec.controller` is this are served.
    pub controller: String,
}

impl Default for ClassSettings {
    fn default() -> Self {
        ClassSettings {
            class: "weft".to_owned(),
            controller: CONTROLLER_NAME.to_owned(),
        }
    }
}

/// `namespace/name` of an Ingress.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IngressName {
    pub namespace: String,
    pub name: String,
}

impl IngressName {
    fn of(ingress: &Ingress) -> IngressName {
        IngressName {
            namespace: ingress.metadata.namespace.clone().unwrap_or_default(),
            name: ingress.metadata.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for IngressName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How a path is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathType {
    Exact,
    /// Element-wise prefix (also `ImplementationSpecific`).
    Prefix,
}

/// One Service port's endpoints, shared by every path that names it.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`.
    pub id: String,
    /// Endpoint addresses that take traffic; empty means 503.
    pub endpoints: Vec<SocketAddr>,
    /// Why the backend has no endpoints, when it is a configuration problem
    /// (missing Service or port) rather than no ready pods.
    pub problem: Option<String>,
}

impl Backend {
    fn new(id: String, endpoints: Vec<SocketAddr>, problem: Option<String>) -> Backend {
        Backend {
            id,
            endpoints,
            problem,
        }
    }
}

/// What serves a matched request.
#[derive(Debug)]
pub struct Route {
    /// The Ingress the rule came from.
    pub ingress: IngressName,
    /// The rule's path as written (`""` for a default backend).
    pub path: String,
    pub path_type: PathType,
    pub backend: Arc<Backend>,
    /// Plain HTTP gets a redirect to HTTPS.
    pub ssl_redirect: bool,
}

/// The paths of one host (or of the rules without a host).
#[derive(Debug, Default)]
struct HostRoutes {
    exact: HashMap<String, Arc<Route>>,
    /// Prefixes without their trailing `/` (`/` itself is `""`), longest
    /// first.
    prefixes: Vec<(String, Arc<Route>)>,
}

impl HostRoutes {
    /// Longest match; an exact match is always at least as long as any
    /// prefix that matches the same path, so it wins ties.
    fn find(&self, path: &str) -> Option<&Arc<Route>> {
        if let Some(route) = self.exact.get(path) {
            return Some(route);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, route)| route)
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

/// Element-wise prefix match; `prefix` has no trailing `/`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Certificates by TLS server name.
#[derive(Debug, Default)]
pub struct Certificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the parent domain of a `*.parent` host.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// From a `tls` entry without hosts.
    default: Option<Arc<CertifiedKey>>,
}

impl Certificates {
    /// The certificate for a server name (SNI): exact, then wildcard, then
    /// the default; a client without SNI gets the default.
    pub fn for_server_name(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = name else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(key) = self.wildcard.get(parent)
        {
            return Some(key.clone());
        }
        self.default.clone()
    }

    /// How many distinct server names have a certificate.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.default.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything the proxy consults per request; rebuilt off the request path
/// and swapped atomically.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact_hosts: HashMap<String, HostRoutes>,
    /// By the parent domain of a `*.parent` host.
    wildcard_hosts: HashMap<String, HostRoutes>,
    any_host: HostRoutes,
    default_backend: Option<Arc<Route>>,
    /// Certificates for the HTTPS listener.
    pub certificates: Certificates,
    /// The Ingresses this controller serves (for status), sorted.
    pub ingresses: Vec<IngressName>,
    /// Problems found while building: conflicts, missing Secrets, bad paths.
    pub warnings: Vec<String>,
}

impl RouteTable {
    /// The route for a request's host (without port) and path.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        // The proxy passes hosts already lowercased: copy only when needed.
        let host: std::borrow::Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.into()
        };
        let host = host.strip_suffix('.').unwrap_or(&host);
        let exact = self.exact_hosts.get(host).and_then(|r| r.find(path));
        exact
            .or_else(|| {
                let (_, parent) = host.split_once('.')?;
                self.wildcard_hosts.get(parent)?.find(path)
            })
            .or_else(|| self.any_host.find(path))
            .or(self.default_backend.as_ref())
    }

    /// Number of distinct hosts with rules (wildcards included; the
    /// host-less rules count as one when present).
    pub fn host_count(&self) -> usize {
        self.exact_hosts.len() + self.wildcard_hosts.len() + usize::from(!self.any_host.is_empty())
    }

    /// Builds the table from the whole cluster model.
    pub fn build(index: &Index, settings: &ClassSettings) -> RouteTable {
        let classes: Vec<&IngressClass> = index.ingress_classes().collect();
        let mut ours: Vec<&Ingress> = index
            .ingresses()
            .filter(|ingress| is_ours(ingress, &classes, settings))
            .collect();
        // Older first: the first writer of a host/path keeps it.
        ours.sort_by(|a, b| {
            let age = |i: &Ingress| i.metadata.creation_timestamp.as_ref().map(|t| t.0);
            age(a)
                .cmp(&age(b))
                .then_with(|| IngressName::of(a).cmp(&IngressName::of(b)))
        });
        let mut builder = Builder {
            index,
            table: RouteTable::default(),
            backends: HashMap::new(),
        };
        for ingress in ours {
            builder.add_ingress(ingress);
        }
        let mut table = builder.table;
        for routes in table
            .exact_hosts
            .values_mut()
            .chain(table.wildcard_hosts.values_mut())
            .chain(std::iter::once(&mut table.any_host))
        {
            routes
                .prefixes
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        }
        table.ingresses.sort();
        table
    }
}

/// Whether this controller serves the Ingress: its class (field or legacy
/// annotation) is our class name or an IngressClass of our controller; an
/// Ingress without a class is ours when an IngressClass of ours is the
/// cluster default.
pub fn is_ours(ingress: &Ingress, classes: &[&IngressClass], settings: &ClassSettings) -> bool {
    let ours = |class: &IngressClass| {
        class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(&settings.controller)
    };
    let named = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| annotation(ingress, LEGACY_CLASS_ANNOTATION));
    match named {
        Some(name) => {
            name == settings.class
                || classes
                    .iter()
                    .any(|c| c.metadata.name.as_deref() == Some(name) && ours(c))
        }
        None => classes.iter().any(|c| {
            ours(c)
                && c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true")
        }),
    }
}

fn annotation<'a>(ingress: &'a Ingress, key: &str) -> Option<&'a str> {
    ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

struct Builder<'a> {
    index: &'a Index,
    table: RouteTable,
    /// One shared backend per `namespace/service:port`.
    backends: HashMap<String, Arc<Backend>>,
}

impl Builder<'_> {
    fn add_ingress(&mut self, ingress: &Ingress) {
        let name = IngressName::of(ingress);
        self.table.ingresses.push(name.clone());
        let Some(spec) = &ingress.spec else { return };
        let ssl_redirect = annotation(ingress, SSL_REDIRECT_ANNOTATION) == Some("true");
        if let Some(backend) = &spec.default_backend {
            if self.table.default_backend.is_some() {
                self.table.warnings.push(format!(
                    "Ingress {name}: defaultBackend ignored, an older Ingress already sets one"
                ));
            } else {
                let backend = self.backend(&name.namespace, backend);
                self.table.default_backend = Some(Arc::new(Route {
                    ingress: name.clone(),
                    path: String::new(),
                    path_type: PathType::Prefix,
                    backend,
                    ssl_redirect,
                }));
            }
        }
        for rule in spec.rules.iter().flatten() {
            let host = rule
                .host
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase();
            for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let text = path.path.clone().unwrap_or_else(|| "/".to_owned());
                if !text.starts_with('/') {
                    self.table.warnings.push(format!(
                        "Ingress {name}: path {text:?} skipped: a path must start with \"/\""
                    ));
                    continue;
                }
                let path_type = match path.path_type.as_str() {
                    "Exact" => PathType::Exact,
                    "Prefix" | "ImplementationSpecific" => PathType::Prefix,
                    other => {
                        self.table.warnings.push(format!(
                            "Ingress {name}: path {text:?} skipped: unknown pathType {other:?}"
                        ));
                        continue;
                    }
                };
                let backend = self.backend(&name.namespace, &path.backend);
                let route = Arc::new(Route {
                    ingress: name.clone(),
                    path: text.clone(),
                    path_type,
                    backend,
                    ssl_redirect,
                });
                self.insert(&host, route);
            }
        }
        for tls in spec.tls.iter().flatten() {
            self.add_tls(&name, tls);
        }
    }

    fn insert(&mut self, host: &str, route: Arc<Route>) {
        let routes = if host.is_empty() {
            &mut self.table.any_host
        } else if let Some(parent) = host.strip_prefix("*.") {
            self.table
                .wildcard_hosts
                .entry(parent.to_owned())
                .or_default()
        } else {
            self.table.exact_hosts.entry(host.to_owned()).or_default()
        };
        let taken_by = match route.path_type {
            PathType::Exact => match routes.exact.get(&route.path) {
                Some(existing) => Some(existing.ingress.clone()),
                None => {
                    routes.exact.insert(route.path.clone(), route.clone());
                    None
                }
            },
            PathType::Prefix => {
                let prefix = route.path.trim_end_matches('/').to_owned();
                match routes.prefixes.iter().find(|(p, _)| *p == prefix) {
                    Some((_, existing)) => Some(existing.ingress.clone()),
                    None => {
                        routes.prefixes.push((prefix, route.clone()));
                        None
                    }
                }
            }
        };
        if let Some(owner) = taken_by {
            let shown = if host.is_empty() { "*" } else { host };
            self.table.warnings.push(format!(
                "Ingress {}: host {shown} path {:?} ({:?}) ignored, Ingress {owner} already routes it",
                route.ingress, route.path, route.path_type
            ));
        }
    }

    fn add_tls(&mut self, name: &IngressName, tls: &k8s_openapi::api::networking::v1::IngressTLS) {
        let Some(secret_name) = tls.secret_name.as_deref() else {
            self.table.warnings.push(format!(
                "Ingress {name}: a tls entry without secretName is ignored"
            ));
            return;
        };
        let key = match self.index.secret(&name.namespace, secret_name) {
            None => Err(format!("Secret {}/{secret_name} not found", name.namespace)),
            Some(secret) => tls::certified_key(secret)
                .map(Arc::new)
                .map_err(|e| format!("Secret {}/{secret_name}: {e}", name.namespace)),
        };
        let key = match key {
            Ok(key) => key,
            Err(problem) => {
                self.table
                    .warnings
                    .push(format!("Ingress {name}: TLS ignored: {problem}"));
                return;
            }
        };
        let certs = &mut self.table.certificates;
        let hosts = tls.hosts.as_deref().unwrap_or_default();
        if hosts.is_empty() {
            certs.default.get_or_insert(key);
            return;
        }
        for host in hosts {
            let host = host.to_ascii_lowercase();
            match host.strip_prefix("*.") {
                Some(parent) => certs.wildcard.entry(parent.to_owned()),
                None => certs.exact.entry(host),
            }
            .or_insert_with(|| key.clone());
        }
    }

    fn backend(&mut self, namespace: &str, backend: &IngressBackend) -> Arc<Backend> {
        let Some(service) = &backend.service else {
            let id = format!("{namespace}/(resource backend)");
            return Arc::new(Backend::new(
                id,
                Vec::new(),
                Some("resource backends are not supported".to_owned()),
            ));
        };
        let port = service.port.as_ref();
        let port_text = match (
            port.and_then(|p| p.number),
            port.and_then(|p| p.name.as_deref()),
        ) {
            (Some(number), _) => number.to_string(),
            (None, Some(name)) => name.to_owned(),
            (None, None) => String::new(),
        };
        let id = format!("{namespace}/{}:{port_text}", service.name);
        if let Some(shared) = self.backends.get(&id) {
            return shared.clone();
        }
        let resolved = match self.index.service(namespace, &service.name) {
            None => Err(format!("Service {namespace}/{} not found", service.name)),
            Some(svc) => resolve_endpoints(self.index, svc, &port_text),
        };
        let backend = Arc::new(match resolved {
            Ok(endpoints) => Backend::new(id.clone(), endpoints, None),
            Err(problem) => Backend::new(id.clone(), Vec::new(), Some(problem)),
        });
        self.backends.insert(id, backend.clone());
        backend
    }
}

/// The endpoint addresses of one Service port (`port` is its number or
/// name): ready endpoints, or serving-and-terminating ones when none is
/// ready.
fn resolve_endpoints(
    index: &Index,
    service: &Service,
    port: &str,
) -> Result<Vec<SocketAddr>, String> {
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let spec = service.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return Err(format!(
            "Service {namespace}/{name} is an ExternalName Service, which weft ingress does not proxy to"
        ));
    }
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let service_port = ports
        .iter()
        .find(|p| match port.parse::<i32>() {
            Ok(number) => p.port == number,
            Err(_) => p.name.as_deref() == Some(port),
        })
        .ok_or_else(|| format!("Service {namespace}/{name} has no port {port:?}"))?;
    let port_name = service_port.name.as_deref().unwrap_or_default();
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in index.endpoint_slices_for(namespace, name) {
        if slice.address_type == "FQDN" {
            continue;
        }
        let Some(target) = slice.ports.iter().flatten().find_map(|p| {
            let same_name = p.name.as_deref().unwrap_or_default() == port_name;
            let tcp = p.protocol.as_deref().unwrap_or("TCP") == "TCP";
            let number = p
                .port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0);
            if same_name && tcp { number } else { None }
        }) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let list = if is_ready {
                &mut ready
            } else if serving && is_terminating {
                &mut terminating
            } else {
                continue;
            };
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    list.push(SocketAddr::new(ip, target));
                }
            }
        }
    }
    let mut chosen = if ready.is_empty() { terminating } else { ready };
    chosen.sort();
    chosen.dedup();
    Ok(chosen)
}

#[cfg(test)]
mod tests;
