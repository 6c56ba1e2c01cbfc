//! `weft lab check`: proves every path of the cluster network with real
//! HTTP requests to the pods' `weft serve` and prints one row per path
//! (path, from, to, result, time): pod to pod on one node and across nodes
//! (the server must see the client pod's own address: no NAT), pod to a
//! ClusterIP, a pod to a Service by its DNS name (through the lab's cluster
//! DNS), a pod to itself through its Service (hairpin), the external
//! host to the NodePort on every node, the external host through the
//! ingress controller to the first Ingress host on every node (HTTP, and
//! HTTPS verified against the lab's certificate), and a pod to the outside
//! world (masqueraded to its node's address).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use weft_cluster::model::pod_is_ready;
use weft_cluster::{Kind, Object, Store};
use weft_linux::NetNs;

use crate::LabError;
use crate::layout::{EXTERNAL_IP, Layout};

/// One checked path.
#[derive(Debug, Clone)]
pub struct Row {
    /// What kind of path.
    pub path: &'static str,
    /// Where the request came from.
    pub from: String,
    /// Where it went.
    pub to: String,
    /// What happened; `Err` is a failure.
    pub result: Result<String, String>,
    /// The lab offers no such path (for example every pod on its own node).
    pub skipped: bool,
    /// Time the check took.
    pub elapsed: Duration,
}

/// An HTTP/1.0 GET from inside `ns`; the body, or what went wrong.
pub fn http_get(ns: &NetNs, target: SocketAddr, path: &str) -> Result<String, String> {
    http_get_host(ns, target, &target.to_string(), path)
}

struct PodInfo {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    node: String,
    ip: IpAddr,
    ns: NetNs,
}

impl PodInfo {
    /// Whether `service` selects this pod.
    fn backs(&self, service: &ServiceTarget) -> bool {
        self.namespace == service.namespace
            && weft_cluster::controlplane::endpointslice::selector_matches(
                &service.selector,
                Some(&self.labels),
            )
    }
}

fn ready_pods(layout: &Layout, store: &Store) -> Result<Vec<PodInfo>, LabError> {
    let mut pods = Vec::new();
    for object in store.list(Kind::Pod, None)? {
        let Object::Pod(pod) = object else { continue };
        let runs_other = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|annotations| annotations.contains_key(crate::kubelet::RUN_ANNOTATION));
        if runs_other {
            continue; // not a weft serve pod (the cluster DNS)
        }
        if let Some(info) = pod_info(layout, &pod) {
            pods.push(info);
        }
    }
    Ok(pods)
}

fn pod_info(layout: &Layout, pod: &Pod) -> Option<PodInfo> {
    if !pod_is_ready(pod) {
        return None;
    }
    let namespace = pod.metadata.namespace.clone()?;
    let name = pod.metadata.name.clone()?;
    Some(PodInfo {
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        node: pod.spec.as_ref()?.node_name.clone()?,
        ip: pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?,
        ns: NetNs::from_path(
            Path::new(weft_linux::netns::NETNS_RUN_DIR).join(layout.pod_ns(&namespace, &name)),
        ),
        name,
        namespace,
    })
}

/// Where a Service answers.
struct ServiceTarget {
    name: String,
    namespace: String,
    selector: BTreeMap<String, String>,
    /// `sessionAffinity: ClientIP`: a client sticks to one endpoint, so a
    /// pod may never reach itself through it (no hairpin row from it).
    affinity: bool,
    cluster_ip: IpAddr,
    port: u16,
    node_port: Option<u16>,
}

/// Resolves `name` (A) with the cluster DNS from inside `ns`.
fn resolve(ns: &NetNs, name: &str) -> Result<IpAddr, String> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(
        Name::from_ascii(name).map_err(|err| err.to_string())?,
        RecordType::A,
    ));
    let bytes = request.to_vec().map_err(|err| err.to_string())?;
    let server = SocketAddr::from(([10, 96, 0, 10], 53));
    let answer = ns
        .run(|| -> Result<Vec<u8>, String> {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|err| err.to_string())?;
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|err| err.to_string())?;
            socket
                .send_to(&bytes, server)
                .map_err(|err| err.to_string())?;
            let mut buffer = vec![0u8; 4096];
            let read = socket
                .recv(&mut buffer)
                .map_err(|err| format!("no answer from {server}: {err}"))?;
            buffer.truncate(read);
            Ok(buffer)
        })
        .map_err(|err| err.to_string())??;
    let message = Message::from_vec(&answer).map_err(|err| err.to_string())?;
    message
        .answers
        .iter()
        .find_map(|record| record.data.to_string().parse::<IpAddr>().ok())
        .ok_or_else(|| format!("{name}: {:?}, no address", message.metadata.response_code))
}

impl ServiceTarget {
    /// Whether a ready pod of `pods` backs it.
    fn backed_by(&self, pods: &[PodInfo]) -> bool {
        pods.iter().any(|pod| pod.backs(self))
    }
}

/// Namespaces of the lab's own components (the cluster DNS, the ingress
/// controller): their Services have rows of their own.
pub(crate) const COMPONENT_NAMESPACES: [&str; 2] = ["kube-system", "ingress-weft"];

/// The first TCP port of every Service with a selector, in store order,
/// the lab components' left out.
fn selecting_services(store: &Store) -> Result<Vec<ServiceTarget>, LabError> {
    let mut found = Vec::new();
    for object in store.list(Kind::Service, None)? {
        let Object::Service(service) = object else {
            continue;
        };
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        if COMPONENT_NAMESPACES.contains(&namespace) {
            continue;
        }
        let Some(spec) = &service.spec else { continue };
        let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) else {
            continue;
        };
        let tcp = spec
            .ports
            .iter()
            .flatten()
            .find(|port| port.protocol.as_deref().unwrap_or("TCP") == "TCP");
        let selector = spec.selector.clone().unwrap_or_default();
        let (Some(port), false) = (tcp, selector.is_empty()) else {
            continue;
        };
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        found.push(ServiceTarget {
            name: service.metadata.name.clone().unwrap_or_default(),
            namespace: service.metadata.namespace.clone().unwrap_or_default(),
            selector,
            affinity: spec.session_affinity.as_deref() == Some("ClientIP"),
            cluster_ip: ip,
            port: number,
            node_port: port.node_port.and_then(|p| u16::try_from(p).ok()),
        });
    }
    Ok(found)
}

/// The first of `services` that `keep` accepts and a ready pod backs, or
/// failing that the first `keep` accepts.
fn pick_service<'a>(
    services: &'a [ServiceTarget],
    pods: &[PodInfo],
    keep: impl Fn(&ServiceTarget) -> bool,
) -> Option<&'a ServiceTarget> {
    let mut kept = services.iter().filter(|service| keep(service));
    let first = kept.clone().next();
    kept.find(|service| service.backed_by(pods)).or(first)
}

/// Runs `check` once, timed. No retry: `lab up`, `lab apply` and
/// `lab delete` return only once every agent has applied the store
/// generation they waited for (see [`crate::ops::settle`]), so a failure
/// here is a real one.
fn timed(
    path: &'static str,
    from: String,
    to: String,
    check: impl FnOnce() -> Result<String, String>,
) -> Row {
    let started = Instant::now();
    let result = check();
    Row {
        path,
        from,
        to,
        result,
        skipped: false,
        elapsed: started.elapsed(),
    }
}

/// Runs every check. A path the lab's pods cannot offer (no two pods on
/// one node) is skipped; a missing piece a healthy lab has (a second node,
/// a Service, a ready pod) is a failure.
pub fn check(layout: &Layout) -> Result<Vec<Row>, LabError> {
    crate::Settings::require(layout)?;
    let store = Store::open(layout.store_dir())?;
    let pods = ready_pods(layout, &store)?;
    let mut rows = Vec::new();
    let missing = |path: &'static str, why: &str| Row {
        path,
        from: "-".into(),
        to: "-".into(),
        result: Err(why.to_owned()),
        skipped: false,
        elapsed: Duration::ZERO,
    };

    let same_node = pods.iter().enumerate().find_map(|(i, a)| {
        pods[i + 1..]
            .iter()
            .find(|b| b.node == a.node)
            .map(|b| (a, b))
    });
    match same_node {
        Some((a, b)) => rows.push(timed(
            "pod -> pod, same node",
            a.name.clone(),
            format!("{} {}", b.name, b.ip),
            || {
                let seen = http_get(&a.ns, SocketAddr::new(b.ip, 8080), "/clientip")?;
                no_nat(&seen, a.ip)
            },
        )),
        None => rows.push(Row {
            skipped: true,
            ..missing(
                "pod -> pod, same node",
                "no two ready pods running weft serve share a node",
            )
        }),
    }
    let across = pods.iter().enumerate().find_map(|(i, a)| {
        pods[i + 1..]
            .iter()
            .find(|b| b.node != a.node)
            .map(|b| (a, b))
    });
    match across {
        Some((a, b)) => rows.push(timed(
            "pod -> pod, across nodes",
            format!("{} ({})", a.name, a.node),
            format!("{} ({}) {}", b.name, b.node, b.ip),
            || {
                let seen = http_get(&a.ns, SocketAddr::new(b.ip, 8080), "/clientip")?;
                no_nat(&seen, a.ip)
            },
        )),
        None => rows.push(missing(
            "pod -> pod, across nodes",
            "no two ready pods running weft serve on different nodes",
        )),
    }

    let services = selecting_services(&store)?;
    // Backed and without affinity, then backed, then the first.
    let service = services
        .iter()
        .find(|s| s.backed_by(&pods) && !s.affinity)
        .or_else(|| pick_service(&services, &pods, |_| true));
    match (service, pods.first()) {
        (Some(service), Some(client)) => {
            let name = &service.name;
            let target = SocketAddr::new(service.cluster_ip, service.port);
            rows.push(timed(
                "pod -> ClusterIP",
                client.name.clone(),
                format!("{name} {target}"),
                || {
                    http_get(&client.ns, target, "/hostname")
                        .map(|host| format!("answered by {host}"))
                },
            ));
            let dns_name = format!("{name}.{}.svc.cluster.local.", service.namespace);
            rows.push(timed(
                "pod -> Service by DNS name",
                client.name.clone(),
                dns_name.clone(),
                || {
                    let address = resolve(&client.ns, &dns_name)?;
                    let host = http_get(
                        &client.ns,
                        SocketAddr::new(address, target.port()),
                        "/hostname",
                    )?;
                    Ok(format!("{address}, answered by {host}"))
                },
            ));
            match pods.iter().find(|pod| pod.backs(service)) {
                Some(_) if service.affinity => rows.push(Row {
                    skipped: true,
                    ..missing(
                        "pod -> own Service (hairpin)",
                        &format!("Service {name} has session affinity"),
                    )
                }),
                Some(backend) => rows.push(timed(
                    "pod -> own Service (hairpin)",
                    backend.name.clone(),
                    format!("{name} {target}"),
                    || {
                        // Random balancing: ask until the pod itself answers.
                        for _ in 0..40 {
                            if http_get(&backend.ns, target, "/hostname")? == backend.name {
                                return Ok("answered by itself".to_owned());
                            }
                        }
                        Err("never reached itself in 40 tries".to_owned())
                    },
                )),
                None => rows.push(missing(
                    "pod -> own Service (hairpin)",
                    &format!("no ready pod backs Service {name}"),
                )),
            }
            let with_node_port = pick_service(&services, &pods, |s| s.node_port.is_some());
            match with_node_port {
                Some(&ServiceTarget {
                    node_port: Some(node_port),
                    ..
                }) => {
                    let external = NetNs::from_path(
                        Path::new(weft_linux::netns::NETNS_RUN_DIR).join(layout.external_ns()),
                    );
                    for (node, address) in node_addresses(&store)? {
                        let target = SocketAddr::new(address, node_port);
                        rows.push(timed(
                            "external -> NodePort",
                            "external".into(),
                            format!("{node} {target}"),
                            || {
                                http_get(&external, target, "/hostname")
                                    .map(|host| format!("answered by {host}"))
                            },
                        ));
                    }
                }
                _ => rows.push(Row {
                    skipped: true,
                    ..missing(
                        "external -> NodePort",
                        "no Service with a selector has a NodePort",
                    )
                }),
            }
        }
        _ => rows.push(missing(
            "pod -> ClusterIP",
            "no Service with a selector, or no ready pod",
        )),
    }

    ingress_rows(layout, &store, &mut rows)?;

    match pods.first() {
        Some(client) => {
            let node_index = client
                .node
                .trim_start_matches("node-")
                .parse::<u8>()
                .unwrap_or(0);
            let node_ip = IpAddr::V4(Layout::node_ip(node_index));
            let target = SocketAddr::new(IpAddr::V4(EXTERNAL_IP), 8080);
            rows.push(timed(
                "pod -> outside (masqueraded)",
                client.name.clone(),
                format!("external {target}"),
                || {
                    let seen = http_get(&client.ns, target, "/clientip")?;
                    let source = seen.rsplit_once(':').map_or(seen.as_str(), |(ip, _)| ip);
                    if source == node_ip.to_string() {
                        Ok(format!("seen as {source} (its node)"))
                    } else {
                        Err(format!(
                            "seen as {source}, expected the node address {node_ip}"
                        ))
                    }
                },
            ));
        }
        None => rows.push(missing("pod -> outside (masqueraded)", "no ready pod")),
    }
    Ok(rows)
}

/// Every node's InternalIP address, with the node's name.
fn node_addresses(store: &Store) -> Result<Vec<(String, IpAddr)>, LabError> {
    let mut out = Vec::new();
    for object in store.list(Kind::Node, None)? {
        let Object::Node(node) = object else { continue };
        let address = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse::<IpAddr>().ok());
        if let Some(address) = address {
            out.push((node.metadata.name.unwrap_or_default(), address));
        }
    }
    Ok(out)
}

/// The first Ingress rule with a host and the path `/` (the sample app's):
/// its host and whether the lab certificate covers it.
fn first_ingress_host(store: &Store) -> Result<Option<(String, bool)>, LabError> {
    for object in store.list(Kind::Ingress, None)? {
        let Object::Ingress(ingress) = object else {
            continue;
        };
        let Some(spec) = &ingress.spec else { continue };
        for rule in spec.rules.iter().flatten() {
            let Some(host) = rule.host.clone().filter(|h| !h.contains('*')) else {
                continue;
            };
            let root = rule
                .http
                .iter()
                .flat_map(|http| &http.paths)
                .any(|path| path.path.as_deref() == Some("/"));
            if root {
                let tls = spec.tls.iter().flatten().any(|tls| {
                    tls.secret_name.as_deref() == Some(crate::certs::TLS_SECRET.1)
                        && tls.hosts.iter().flatten().any(|h| *h == host)
                });
                return Ok(Some((host, tls)));
            }
        }
    }
    Ok(None)
}

/// An HTTP/1.0 GET with a Host header from inside `ns`: the body of a 200,
/// or what went wrong.
fn http_get_host(ns: &NetNs, target: SocketAddr, host: &str, path: &str) -> Result<String, String> {
    ns.run(|| -> Result<String, String> {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .map_err(|err| err.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|err| err.to_string())?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .map_err(|err| err.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .map_err(|err| err.to_string())?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP response")?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(head.lines().next().unwrap_or_default().to_owned());
        }
        Ok(body.trim().to_owned())
    })
    .map_err(|err| err.to_string())?
}

/// The external host through the ingress controller's NodePorts on every
/// node to the first Ingress host: HTTP, and HTTPS when the lab
/// certificate covers the host (verified against exactly it).
fn ingress_rows(layout: &Layout, store: &Store, rows: &mut Vec<Row>) -> Result<(), LabError> {
    let Some((host, tls)) = first_ingress_host(store)? else {
        rows.push(Row {
            path: "external -> Ingress",
            from: "-".into(),
            to: "-".into(),
            result: Err("no Ingress rule with a host and the path /".to_owned()),
            skipped: true,
            elapsed: Duration::ZERO,
        });
        return Ok(());
    };
    let external =
        NetNs::from_path(Path::new(weft_linux::netns::NETNS_RUN_DIR).join(layout.external_ns()));
    let certificate = crate::certs::certificate_pem(store)?;
    for (_, address) in node_addresses(store)? {
        let target = SocketAddr::new(address, crate::kubelet::INGRESS_HTTP_NODE_PORT);
        rows.push(timed(
            "external -> Ingress (HTTP)",
            "external".into(),
            format!("{host} {target}"),
            || {
                http_get_host(&external, target, &host, "/hostname")
                    .map(|pod| format!("answered by {pod}"))
            },
        ));
        if !tls {
            continue;
        }
        let target = SocketAddr::new(address, crate::kubelet::INGRESS_HTTPS_NODE_PORT);
        rows.push(timed(
            "external -> Ingress (HTTPS)",
            "external".into(),
            format!("{host} {target}"),
            || {
                let pem = certificate
                    .as_deref()
                    .ok_or("the lab certificate default/lab-tls is missing")?;
                crate::https::get(&external, target, &host, "/hostname", pem)
                    .map(|pod| format!("answered by {pod}, certificate verified"))
            },
        ));
    }
    Ok(())
}

fn no_nat(seen: &str, client: IpAddr) -> Result<String, String> {
    let source = seen.rsplit_once(':').map_or(seen, |(ip, _)| ip);
    if source == client.to_string() {
        Ok(format!("source {source} kept"))
    } else {
        Err(format!("server saw {source}, not the client pod {client}"))
    }
}

/// Prints the rows as a table; returns whether every row passed.
pub fn print(rows: &[Row], out: &mut dyn Write) -> bool {
    let _ = writeln!(
        out,
        "{:<30} {:<22} {:<34} {:<8} RESULT",
        "PATH", "FROM", "TO", "TIME"
    );
    for row in rows {
        let result = match (&row.result, row.skipped) {
            (Ok(text), _) => format!("ok: {text}"),
            (Err(text), true) => format!("skipped: {text}"),
            (Err(text), false) => format!("FAIL: {text}"),
        };
        let _ = writeln!(
            out,
            "{:<30} {:<22} {:<34} {:<8} {result}",
            row.path,
            row.from,
            row.to,
            format!("{}ms", row.elapsed.as_millis()),
        );
    }
    rows.iter().all(|row| row.result.is_ok() || row.skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_components_services_are_never_the_checked_service() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("store")).expect("store");
        let app = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
                   spec: {selector: {app: web}, ports: [{port: 80}]}\n";
        let manifests =
            [crate::ops::CLUSTER_DNS, crate::ops::INGRESS_CONTROLLER, app].map(|text| {
                weft_cluster::manifest::Manifest {
                    origin: "test.yaml".to_owned(),
                    text: text.to_owned(),
                }
            });
        store.apply(&manifests).expect("apply");
        let services = selecting_services(&store).expect("services");
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web"]);
        // No Service of the app has a NodePort: the ingress controller's
        // does, but it is not the app's, so the NodePort rows are skipped.
        assert!(pick_service(&services, &[], |s| s.node_port.is_some()).is_none());
    }
}
