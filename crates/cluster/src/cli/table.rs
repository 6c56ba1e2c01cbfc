//! kubectl's default table for each kind: the same columns and cell formats
//! (`80:30000/TCP`, `1/1`, `<none>`, ages like `5m`), aligned with three
//! spaces between columns.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::{Kind, Object, pod_is_ready};

const NONE: &str = "<none>";

/// The table for objects of one kind; `wide` adds kubectl's `-o wide`
/// columns, `show_ns` a leading NAMESPACE column.
pub(crate) fn render(
    kind: Kind,
    objects: &[Object],
    wide: bool,
    show_ns: bool,
    now: jiff::Timestamp,
) -> String {
    let (mut headers, wide_headers) = headers(kind);
    if wide {
        headers.extend(wide_headers);
    }
    let mut rows = Vec::new();
    for obj in objects {
        let (mut row, wide_cells) = cells(obj, now);
        if wide {
            row.extend(wide_cells);
        }
        if show_ns {
            row.insert(0, obj.meta().namespace.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    if show_ns {
        headers.insert(0, "NAMESPACE");
    }
    align(&headers, &rows)
}

/// `headers` and `rows` as kubectl prints tables: each column as wide as
/// its widest cell, three spaces between columns.
pub fn align(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("   ");
            }
            s.push_str(&format!("{cell:<w$}"));
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn headers(kind: Kind) -> (Vec<&'static str>, Vec<&'static str>) {
    match kind {
        Kind::Pod => (
            vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            vec!["IP", "NODE", "WORKLOAD"],
        ),
        Kind::Service => (
            vec![
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ],
            vec!["SELECTOR"],
        ),
        Kind::EndpointSlice => (
            vec!["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
            vec![],
        ),
        Kind::Node => (
            vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            vec!["INTERNAL-IP", "POD-CIDR"],
        ),
        Kind::Namespace => (vec!["NAME", "STATUS", "AGE"], vec![]),
        Kind::Ingress => (
            vec!["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
            vec![],
        ),
        Kind::IngressClass => (vec!["NAME", "CONTROLLER", "PARAMETERS", "AGE"], vec![]),
        Kind::Secret => (vec!["NAME", "TYPE", "DATA", "AGE"], vec![]),
    }
}

/// kubectl's short human duration.
pub(crate) fn age(meta: &ObjectMeta, now: jiff::Timestamp) -> String {
    let Some(created) = &meta.creation_timestamp else {
        return "<unknown>".to_owned();
    };
    let secs = (now.as_second() - created.0.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    match secs {
        s if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", secs % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() { NONE.to_owned() } else { s }
}

fn cells(obj: &Object, now: jiff::Timestamp) -> (Vec<String>, Vec<String>) {
    let meta = obj.meta();
    let name = meta.name.clone().unwrap_or_default();
    let age = age(meta, now);
    match obj {
        Object::Pod(pod) => {
            let containers = pod.spec.as_ref().map_or(0, |s| s.containers.len());
            let status = pod.status.clone().unwrap_or_default();
            let statuses = status.container_statuses.clone().unwrap_or_default();
            let ready = if statuses.is_empty() {
                if pod_is_ready(pod) { containers } else { 0 }
            } else {
                statuses.iter().filter(|c| c.ready).count()
            };
            let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
            let phase = if meta.deletion_timestamp.is_some() {
                "Terminating".to_owned()
            } else {
                status.phase.clone().unwrap_or_else(|| "Pending".to_owned())
            };
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            (
                vec![
                    name,
                    format!("{ready}/{containers}"),
                    phase,
                    restarts.to_string(),
                    age,
                ],
                vec![
                    or_none(status.pod_ip.unwrap_or_default()),
                    or_none(node),
                    or_none(
                        meta.annotations
                            .as_ref()
                            .and_then(|a| a.get(crate::model::WORKLOAD_ANNOTATION))
                            .cloned()
                            .unwrap_or_default(),
                    ),
                ],
            )
        }
        Object::Service(svc) => {
            let spec = svc.spec.clone().unwrap_or_default();
            let kind = spec.type_.clone().unwrap_or_else(|| "ClusterIP".to_owned());
            let cluster_ip = or_none(spec.cluster_ip.clone().unwrap_or_default());
            let lb: Vec<String> = svc
                .status
                .iter()
                .flat_map(|s| {
                    s.load_balancer
                        .iter()
                        .flat_map(|l| l.ingress.iter().flatten())
                })
                .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                .collect();
            let mut external: Vec<String> = spec.external_ips.clone().unwrap_or_default();
            external.extend(lb);
            let external = match kind.as_str() {
                "ExternalName" => spec.external_name.clone().unwrap_or_default(),
                "LoadBalancer" if external.is_empty() => "<pending>".to_owned(),
                _ => or_none(external.join(",")),
            };
            let ports: Vec<String> = spec
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    let proto = p.protocol.as_deref().unwrap_or("TCP");
                    match p.node_port {
                        Some(np) if np != 0 => format!("{}:{np}/{proto}", p.port),
                        _ => format!("{}/{proto}", p.port),
                    }
                })
                .collect();
            let selector: Vec<String> = spec
                .selector
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            (
                vec![
                    name,
                    kind,
                    cluster_ip,
                    external,
                    or_none(ports.join(",")),
                    age,
                ],
                vec![or_none(selector.join(","))],
            )
        }
        Object::EndpointSlice(slice) => {
            let ports: Vec<String> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.port.map(|n| n.to_string()))
                .collect();
            let addresses: Vec<&String> = slice
                .endpoints
                .iter()
                .flat_map(|e| e.addresses.iter())
                .collect();
            let first: Vec<&str> = addresses.iter().take(3).map(|a| a.as_str()).collect();
            let mut shown = first.join(",");
            if addresses.len() > 3 {
                shown.push_str(&format!(" + {} more...", addresses.len() - 3));
            }
            let ports = if ports.is_empty() {
                "<unset>".to_owned()
            } else {
                ports.join(",")
            };
            let shown = if shown.is_empty() {
                "<unset>".to_owned()
            } else {
                shown
            };
            (
                vec![name, slice.address_type.clone(), ports, shown, age],
                vec![],
            )
        }
        Object::Node(node) => {
            let status = node.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .map(|c| match c.status.as_str() {
                    "True" => "Ready",
                    "False" => "NotReady",
                    _ => "Unknown",
                })
                .unwrap_or("Unknown");
            let roles: Vec<&str> = meta
                .labels
                .iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
                .collect();
            let version = status
                .node_info
                .as_ref()
                .map(|i| i.kubelet_version.clone())
                .unwrap_or_default();
            let internal = status
                .addresses
                .iter()
                .flatten()
                .find(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
                .unwrap_or_default();
            let cidr = node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.clone())
                .unwrap_or_default();
            (
                vec![
                    name,
                    ready.to_owned(),
                    or_none(roles.join(",")),
                    age,
                    version,
                ],
                vec![or_none(internal), or_none(cidr)],
            )
        }
        Object::Namespace(ns) => {
            let phase = ns
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            (vec![name, phase, age], vec![])
        }
        Object::Ingress(ing) => {
            let spec = ing.spec.clone().unwrap_or_default();
            let hosts: Vec<String> = spec
                .rules
                .iter()
                .flatten()
                .map(|r| r.host.clone().unwrap_or_else(|| "*".to_owned()))
                .collect();
            let address: Vec<String> = ing
                .status
                .iter()
                .flat_map(|s| {
                    s.load_balancer
                        .iter()
                        .flat_map(|l| l.ingress.iter().flatten())
                })
                .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                .collect();
            let ports = if spec.tls.as_ref().is_some_and(|t| !t.is_empty()) {
                "80, 443"
            } else {
                "80"
            };
            (
                vec![
                    name,
                    or_none(spec.ingress_class_name.unwrap_or_default()),
                    if hosts.is_empty() {
                        "*".to_owned()
                    } else {
                        hosts.join(",")
                    },
                    address.join(","),
                    ports.to_owned(),
                    age,
                ],
                vec![],
            )
        }
        Object::IngressClass(class) => {
            let spec = class.spec.clone().unwrap_or_default();
            let params = spec
                .parameters
                .map(|p| format!("{}/{}", p.kind, p.name))
                .unwrap_or_default();
            (
                vec![
                    name,
                    spec.controller.unwrap_or_default(),
                    or_none(params),
                    age,
                ],
                vec![],
            )
        }
        Object::Secret(secret) => {
            let data = secret.data.as_ref().map_or(0, |d| d.len())
                + secret.string_data.as_ref().map_or(0, |d| d.len());
            (
                vec![
                    name,
                    secret.type_.clone().unwrap_or_else(|| "Opaque".to_owned()),
                    data.to_string(),
                    age,
                ],
                vec![],
            )
        }
    }
}

#[cfg(test)]
mod tests;
