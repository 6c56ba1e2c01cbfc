//! The API server's validation, for the objects the embedded store accepts:
//! names and labels, Service selectors, ports, NodePorts and ClusterIPs
//! (range and uniqueness), namespaces that must exist. Every problem is an
//! [`Invalid`] naming file, document and field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::ServiceSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controlplane::{ClusterConfig, SYSTEM_NAMESPACES};
use crate::manifest::{Document, Invalid};
use crate::model::{EndpointSlice, Ingress, Kind, Object, ObjectKey};
use k8s_openapi::api::networking::v1::IngressBackend;

type Problems = Vec<(String, String)>;

fn is_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: at most 63 lowercase alphanumerics or `-`, alphanumeric
/// at both ends.
fn dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_alnum(c) || c == '-')
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS label (at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit)"
        ))
    }
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| dns_label(l).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS subdomain (dot-separated DNS labels, at most 253 characters)"
        ))
    }
}

/// RFC 1035 label, for Service names: a DNS label starting with a letter.
fn dns1035_label(s: &str) -> Result<(), String> {
    dns_label(s)?;
    if s.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(format!("{s:?} must start with a letter"))
    }
}

fn label_name(s: &str) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(edge)
        && s.ends_with(edge)
}

fn label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if prefix.is_some_and(|p| dns_subdomain(p).is_err()) || !label_name(name) {
        return Err(format!(
            "key {k:?} is not a valid label key ([prefix/]name, name at most 63 of [A-Za-z0-9-_.])"
        ));
    }
    Ok(())
}

fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || label_name(v) {
        Ok(())
    } else {
        Err(format!(
            "value {v:?} is not a valid label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends)"
        ))
    }
}

fn labels(field: &str, map: Option<&BTreeMap<String, String>>, what: &str, out: &mut Problems) {
    for (k, v) in map.into_iter().flatten() {
        if let Err(e) = label_key(k).and_then(|()| label_value(v)) {
            out.push((field.to_owned(), format!("{what}{e}")));
        }
    }
}

fn port_range(field: String, port: i32, out: &mut Problems) {
    if !(1..=65535).contains(&port) {
        out.push((field, format!("port {port} is out of range 1-65535")));
    }
}

/// IANA service name, what a named port may be called.
fn port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars().all(|c| is_alnum(c) || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Checks that need only the object itself.
pub(crate) fn check_object(obj: &Object, config: &ClusterConfig) -> Problems {
    let mut out = Problems::new();
    let meta = obj.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    let name_check = match obj.kind() {
        Kind::Service => dns1035_label(name),
        Kind::Namespace => dns_label(name),
        _ => dns_subdomain(name),
    };
    if let Err(e) = name_check {
        out.push(("metadata.name".to_owned(), e));
    }
    if obj.kind().namespaced() {
        if let Err(e) = dns_label(meta.namespace.as_deref().unwrap_or_default()) {
            out.push(("metadata.namespace".to_owned(), e));
        }
    }
    labels("metadata.labels", meta.labels.as_ref(), "", &mut out);
    match obj {
        Object::Service(svc) => check_service(svc.spec.as_ref(), config, &mut out),
        Object::Pod(pod) => {
            let containers = pod
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or_default();
            if containers.is_empty() {
                out.push((
                    "spec.containers".to_owned(),
                    "at least one container is required".to_owned(),
                ));
            }
            for (i, c) in containers.iter().enumerate() {
                if c.name.is_empty() {
                    out.push((
                        format!("spec.containers[{i}].name"),
                        "is required".to_owned(),
                    ));
                }
                for (j, p) in c.ports.iter().flatten().enumerate() {
                    port_range(
                        format!("spec.containers[{i}].ports[{j}].containerPort"),
                        p.container_port,
                        &mut out,
                    );
                }
            }
        }
        Object::Node(node) => {
            if let Some(cidr) = node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_deref())
                .filter(|c| !c.is_empty())
            {
                if cidr.parse::<ipnet::IpNet>().is_err() {
                    out.push(("spec.podCIDR".to_owned(), format!("{cidr:?} is not a CIDR")));
                }
            }
        }
        Object::EndpointSlice(slice) => check_endpoint_slice(slice, &mut out),
        Object::Ingress(ing) => check_ingress(ing, &mut out),
        _ => {}
    }
    out
}

/// An Ingress as networking.k8s.io/v1 validation has it: rules or a
/// default backend, host names (a wildcard only as the whole first
/// label), absolute paths of known types, and each backend a Service by
/// name with a port number or name (or a resource, not both).
fn check_ingress(ing: &Ingress, out: &mut Problems) {
    let Some(spec) = ing.spec.as_ref() else {
        out.push((
            "spec".to_owned(),
            "either defaultBackend or rules is required".to_owned(),
        ));
        return;
    };
    if spec.default_backend.is_none() && spec.rules.as_ref().is_none_or(Vec::is_empty) {
        out.push((
            "spec".to_owned(),
            "either defaultBackend or rules is required".to_owned(),
        ));
    }
    if let Some(class) = spec.ingress_class_name.as_deref() {
        if let Err(e) = dns_subdomain(class) {
            out.push(("spec.ingressClassName".to_owned(), e));
        }
    }
    if let Some(backend) = &spec.default_backend {
        check_backend("spec.defaultBackend", backend, out);
    }
    for (i, tls) in spec.tls.iter().flatten().enumerate() {
        if let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) {
            if let Err(e) = dns_subdomain(secret) {
                out.push((format!("spec.tls[{i}].secretName"), e));
            }
        }
        for (j, host) in tls.hosts.iter().flatten().enumerate() {
            // A certificate may name an IP address; a rule's host may not.
            if host.parse::<IpAddr>().is_ok() {
                continue;
            }
            if let Err(e) = ingress_host(host) {
                out.push((format!("spec.tls[{i}].hosts[{j}]"), e));
            }
        }
    }
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        if let Some(host) = rule.host.as_deref() {
            if let Err(e) = ingress_host(host) {
                out.push((format!("spec.rules[{i}].host"), e));
            }
        }
        for (j, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let field = |f: &str| format!("spec.rules[{i}].http.paths[{j}].{f}");
            let path_type = path.path_type.as_str();
            if !matches!(path_type, "Exact" | "Prefix" | "ImplementationSpecific") {
                out.push((
                    field("pathType"),
                    format!("{path_type:?} is not one of Exact, Prefix, ImplementationSpecific"),
                ));
            }
            let text = path.path.as_deref().unwrap_or_default();
            if path_type != "ImplementationSpecific" && !text.starts_with('/') {
                out.push((
                    field("path"),
                    format!("{text:?} is not an absolute path (it must start with /)"),
                ));
            }
            check_backend(&field("backend"), &path.backend, out);
        }
    }
}

/// A host of an Ingress rule or TLS entry.
fn ingress_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Err(format!("{host:?} is an IP address, not a host name"));
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.contains('*') {
        return Err(format!(
            "{host:?}: a wildcard may only be the whole first label (*.example.com)"
        ));
    }
    dns_subdomain(name)
}

fn check_backend(field: &str, backend: &IngressBackend, out: &mut Problems) {
    match (&backend.service, &backend.resource) {
        (Some(_), Some(_)) => out.push((
            field.to_owned(),
            "service and resource are mutually exclusive".to_owned(),
        )),
        (None, None) => out.push((
            field.to_owned(),
            "a service or a resource is required".to_owned(),
        )),
        (None, Some(_)) => {}
        (Some(service), None) => {
            if let Err(e) = dns1035_label(&service.name) {
                out.push((format!("{field}.service.name"), e));
            }
            let port = service.port.as_ref();
            // 0 and "" are unset, as Kubernetes reads them.
            match (
                port.and_then(|p| p.number).filter(|n| *n != 0),
                port.and_then(|p| p.name.as_deref())
                    .filter(|n| !n.is_empty()),
            ) {
                (Some(_), Some(_)) => out.push((
                    format!("{field}.service.port"),
                    "number and name are mutually exclusive".to_owned(),
                )),
                (None, None) => out.push((
                    format!("{field}.service.port"),
                    "a port number or name is required".to_owned(),
                )),
                (Some(number), None) => {
                    port_range(format!("{field}.service.port.number"), number, out);
                }
                (None, Some(name)) if !port_name(name) => out.push((
                    format!("{field}.service.port.name"),
                    format!(
                        "{name:?} is not a port name (at most 15 lowercase letters, digits or '-')"
                    ),
                )),
                (None, Some(_)) => {}
            }
        }
    }
}

/// The address type is one Kubernetes knows, every address is of that
/// type, and every port is in range.
fn check_endpoint_slice(slice: &EndpointSlice, out: &mut Problems) {
    let address_type = slice.address_type.as_str();
    let parses: fn(&str) -> bool = match address_type {
        "IPv4" => |a| a.parse::<Ipv4Addr>().is_ok(),
        "IPv6" => |a| a.parse::<Ipv6Addr>().is_ok(),
        "FQDN" => |a| dns_subdomain(a).is_ok(),
        other => {
            out.push((
                "addressType".to_owned(),
                format!("{other:?} is not one of IPv4, IPv6, FQDN"),
            ));
            return;
        }
    };
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        if endpoint.addresses.is_empty() {
            out.push((
                format!("endpoints[{i}].addresses"),
                "at least one address is required".to_owned(),
            ));
        }
        for (j, address) in endpoint.addresses.iter().enumerate() {
            if !parses(address) {
                out.push((
                    format!("endpoints[{i}].addresses[{j}]"),
                    format!("{address:?} is not an {address_type} address"),
                ));
            }
        }
    }
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        if let Some(number) = port.port {
            port_range(format!("ports[{i}].port"), number, out);
        }
    }
}

fn check_service(spec: Option<&ServiceSpec>, config: &ClusterConfig, out: &mut Problems) {
    let empty = ServiceSpec::default();
    let spec = spec.unwrap_or(&empty);
    labels(
        "spec.selector",
        spec.selector.as_ref(),
        "bad selector: ",
        out,
    );
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !matches!(
        kind,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        out.push((
            "spec.type".to_owned(),
            format!("{kind:?} is not one of ClusterIP, NodePort, LoadBalancer, ExternalName"),
        ));
    }
    if kind == "ExternalName" && spec.external_name.as_deref().is_none_or(str::is_empty) {
        out.push((
            "spec.externalName".to_owned(),
            "is required for type ExternalName".to_owned(),
        ));
    }
    let node_port_type = matches!(kind, "NodePort" | "LoadBalancer");
    let ports = spec.ports.as_deref().unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None")
        || spec
            .cluster_ips
            .as_ref()
            .and_then(|ips| ips.first())
            .is_some_and(|ip| ip == "None");
    if ports.is_empty() && kind != "ExternalName" && !headless {
        out.push((
            "spec.ports".to_owned(),
            "at least one port is required".to_owned(),
        ));
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        port_range(field("port"), p.port, out);
        match &p.target_port {
            Some(IntOrString::Int(n)) if *n != 0 => port_range(field("targetPort"), *n, out),
            Some(IntOrString::String(s)) if !port_name(s) => out.push((
                field("targetPort"),
                format!("{s:?} is not a port name (at most 15 lowercase letters, digits or '-')"),
            )),
            _ => {}
        }
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            out.push((
                field("protocol"),
                format!("{protocol:?} is not one of TCP, UDP, SCTP"),
            ));
        }
        let name = p.name.as_deref().unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            out.push((
                field("name"),
                "is required when a Service has more than one port".to_owned(),
            ));
        }
        if !name.is_empty() && !names.insert(name) {
            out.push((field("name"), format!("{name:?} is used by another port")));
        }
        if let Some(np) = p.node_port.filter(|n| *n != 0) {
            let range = config.node_ports.clone();
            if !node_port_type {
                out.push((
                    field("nodePort"),
                    format!("may not be set when type is {kind}"),
                ));
            } else if !u16::try_from(np).is_ok_and(|n| range.contains(&n)) {
                out.push((
                    field("nodePort"),
                    format!(
                        "{np} is outside the NodePort range {}-{}",
                        range.start(),
                        range.end()
                    ),
                ));
            }
        }
    }
    if let Some(port) = spec.health_check_node_port.filter(|p| *p != 0) {
        let range = config.node_ports.clone();
        if ports.iter().any(|p| p.node_port == Some(port)) {
            out.push((
                "spec.healthCheckNodePort".to_owned(),
                format!("{port} is also one of the Service's nodePorts"),
            ));
        } else if !crate::model::uses_health_check_node_port(spec) {
            out.push((
                "spec.healthCheckNodePort".to_owned(),
                "may only be set when type is LoadBalancer and externalTrafficPolicy is Local"
                    .to_owned(),
            ));
        } else if !u16::try_from(port).is_ok_and(|n| range.contains(&n)) {
            out.push((
                "spec.healthCheckNodePort".to_owned(),
                format!(
                    "{port} is outside the NodePort range {}-{}",
                    range.start(),
                    range.end()
                ),
            ));
        }
    }
    // The store allocates from one IPv4 service range.
    for (i, family) in spec.ip_families.iter().flatten().enumerate() {
        if family != "IPv4" {
            out.push((
                format!("spec.ipFamilies[{i}]"),
                format!("{family:?}: this cluster's service range is IPv4 only"),
            ));
        }
    }
    match spec.ip_family_policy.as_deref() {
        None | Some("SingleStack" | "PreferDualStack") => {}
        Some("RequireDualStack") => out.push((
            "spec.ipFamilyPolicy".to_owned(),
            "RequireDualStack: this cluster's service range is IPv4 only".to_owned(),
        )),
        Some(other) => out.push((
            "spec.ipFamilyPolicy".to_owned(),
            format!("{other:?} is not one of SingleStack, PreferDualStack, RequireDualStack"),
        )),
    }
    match spec.cluster_ip.as_deref().unwrap_or_default() {
        "" => {}
        "None" if node_port_type => out.push((
            "spec.clusterIP".to_owned(),
            format!("may not be None when type is {kind}"),
        )),
        "None" => {}
        ip => match ip.parse::<Ipv4Addr>() {
            Ok(addr) if usable(config.service_cidr, addr) => {}
            Ok(_) => out.push((
                "spec.clusterIP".to_owned(),
                format!("{ip} is outside the service CIDR {}", config.service_cidr),
            )),
            Err(_) => out.push((
                "spec.clusterIP".to_owned(),
                format!("{ip:?} is not an IPv4 address"),
            )),
        },
    }
}

fn usable(net: Ipv4Net, ip: Ipv4Addr) -> bool {
    net.contains(&ip) && ip != net.network() && ip != net.broadcast()
}

/// Who holds which ClusterIPs and NodePorts.
#[derive(Default)]
struct Claims {
    ips: BTreeMap<IpAddr, ObjectKey>,
    ports: BTreeMap<i32, ObjectKey>,
}

fn claims_of(obj: &Object) -> (Vec<IpAddr>, Vec<i32>) {
    let Object::Service(svc) = obj else {
        return (vec![], vec![]);
    };
    let Some(spec) = &svc.spec else {
        return (vec![], vec![]);
    };
    let ips = spec
        .cluster_ip
        .iter()
        .chain(spec.cluster_ips.iter().flatten());
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.node_port)
        .chain(spec.health_check_node_port)
        .filter(|p| *p != 0);
    let mut ips: Vec<IpAddr> = ips.filter_map(|ip| ip.parse().ok()).collect();
    ips.dedup();
    (ips, ports.collect())
}

/// Checks every document against the current objects and the documents
/// before it: the object checks above, namespaces that exist, ClusterIPs and
/// NodePorts not held by another Service, a ClusterIP that is not changed.
pub(crate) fn check_documents(
    docs: &[Document],
    current: &BTreeMap<ObjectKey, Object>,
    config: &ClusterConfig,
) -> Vec<Invalid> {
    let mut namespaces: BTreeSet<String> =
        SYSTEM_NAMESPACES.iter().map(|s| (*s).to_owned()).collect();
    namespaces.extend(
        current
            .keys()
            .filter(|k| k.kind == Kind::Namespace)
            .map(|k| k.name.clone()),
    );
    namespaces.extend(
        docs.iter()
            .map(|d| d.object.key())
            .filter(|k| k.kind == Kind::Namespace)
            .map(|k| k.name),
    );
    let mut claims = Claims::default();
    for (key, obj) in current {
        let (ips, ports) = claims_of(obj);
        claims
            .ips
            .extend(ips.into_iter().map(|ip| (ip, key.clone())));
        claims
            .ports
            .extend(ports.into_iter().map(|p| (p, key.clone())));
    }

    let mut out = Vec::new();
    let mut seen: BTreeMap<ObjectKey, (&str, usize)> = BTreeMap::new();
    for doc in docs {
        let key = doc.object.key();
        let mut problems = check_object(&doc.object, config);
        // One object twice in one apply: which one counts would be a guess.
        if let Some((file, index)) = seen.insert(key.clone(), (&doc.file, doc.index)) {
            problems.push((
                "metadata.name".to_owned(),
                format!("{key} is also document {index} of {file}"),
            ));
        }
        if key.kind.namespaced() && !namespaces.contains(&key.namespace) {
            problems.push((
                "metadata.namespace".to_owned(),
                format!("namespace {:?} not found", key.namespace),
            ));
        }
        if let (Object::Service(new), Some(Object::Service(old))) = (&doc.object, current.get(&key))
        {
            let ip = |s: &k8s_openapi::api::core::v1::Service| {
                s.spec
                    .as_ref()
                    .and_then(|s| s.cluster_ip.clone())
                    .filter(|ip| !ip.is_empty())
            };
            if let (Some(new_ip), Some(old_ip)) = (ip(new), ip(old)) {
                if new_ip != old_ip {
                    problems.push((
                        "spec.clusterIP".to_owned(),
                        format!("field is immutable (is {old_ip})"),
                    ));
                }
            }
        }
        if let Object::Service(svc) = &doc.object {
            let spec = svc.spec.clone().unwrap_or_default();
            if let Some(ip) = spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
            {
                match claims.ips.get(&ip) {
                    Some(holder) if *holder != key => problems.push((
                        "spec.clusterIP".to_owned(),
                        format!("{ip} is already allocated to {holder}"),
                    )),
                    _ => {
                        claims.ips.insert(ip, key.clone());
                    }
                }
            }
            let node_ports = spec
                .ports
                .iter()
                .flatten()
                .enumerate()
                .filter_map(|(i, p)| Some((format!("spec.ports[{i}].nodePort"), p.node_port?)));
            let health = spec
                .health_check_node_port
                .map(|port| ("spec.healthCheckNodePort".to_owned(), port));
            for (field, np) in node_ports.chain(health).filter(|(_, np)| *np != 0) {
                match claims.ports.get(&np) {
                    Some(holder) if *holder != key => {
                        problems.push((field, format!("{np} is already allocated to {holder}")))
                    }
                    _ => {
                        claims.ports.insert(np, key.clone());
                    }
                }
            }
        }
        out.extend(problems.into_iter().map(|(field, reason)| Invalid {
            file: doc.file.clone(),
            document: doc.index,
            object: Some(key.clone()),
            field,
            reason,
        }));
    }
    out
}

#[cfg(test)]
mod tests;
