//! Routing table tests, from the Ingress spec's examples (the path matching
//! table of the Kubernetes Ingress documentation, wildcard hosts,
//! precedence) and the class, backend and TLS rules.

use super::*;
use weft_cluster::manifest::{Manifest, parse};

fn index(yaml: &str) -> Index {
    let (docs, invalid) = parse(&Manifest {
        origin: "test.yaml".to_owned(),
        text: yaml.to_owned(),
    });
    assert!(invalid.is_empty(), "{invalid:?}");
    let mut index = Index::new();
    for doc in docs {
        index.upsert(doc.object);
    }
    index
}

/// Services `a`..`e` (port 80 named http → 8080) each with one ready
/// endpoint 10.0.0.<n>.
fn services() -> String {
    let mut out = String::new();
    for (n, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{clusterIP: 10.96.0.{ip}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\n\
             endpoints: [{{addresses: [10.0.0.{ip}], conditions: {{ready: true}}}}]\n---\n",
            ip = n + 1
        ));
    }
    out
}

fn ingress(name: &str, host: Option<&str>, paths: &[(&str, &str, &str)]) -> String {
    let host = host
        .map(|h| format!("host: \"{h}\"\n    "))
        .unwrap_or_default();
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  ingressClassName: weft\n  rules:\n  - {host}http:\n      paths:\n"
    );
    for (path, path_type, service) in paths {
        out.push_str(&format!(
            "      - {{path: \"{path}\", pathType: {path_type}, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n"
        ));
    }
    out.push_str("---\n");
    out
}

fn table(yaml: &str) -> RouteTable {
    RouteTable::build(&index(&(services() + yaml)), &ClassSettings::default())
}

/// The Service a request lands on, by its single endpoint's last octet
/// (`a` = 1 … `e` = 5), or None.
fn lands(table: &RouteTable, host: &str, path: &str) -> Option<char> {
    let route = table.route(host, path)?;
    let service = route.backend.id.split('/').nth(1)?.chars().next()?;
    Some(service)
}

#[test]
fn spec_path_matching_table() {
    // From the "Examples" table of the Ingress documentation: (kind, paths,
    // request path, matches?).
    let cases: &[(&str, &str, &str, bool)] = &[
        ("Prefix", "/", "/aaa/bbb", true),
        ("Prefix", "/foo", "/foo", true),
        ("Prefix", "/foo", "/foo/", true),
        ("Prefix", "/foo/", "/foo", true),
        ("Prefix", "/foo/", "/foo/", true),
        ("Exact", "/foo", "/foo", true),
        ("Exact", "/foo", "/bar", false),
        ("Exact", "/foo", "/foo/", false),
        ("Exact", "/foo/", "/foo", false),
        ("Prefix", "/aaa/bb", "/aaa/bbb", false),
        ("Prefix", "/aaa/bbb", "/aaa/bbb", true),
        ("Prefix", "/aaa/bbb/", "/aaa/bbb", true),
        ("Prefix", "/aaa/bbb", "/aaa/bbb/", true),
        ("Prefix", "/aaa/bbb", "/aaa/bbb/ccc", true),
        ("Prefix", "/aaa/bbb", "/aaa/bbbxyz", false),
        ("ImplementationSpecific", "/foo", "/foo/bar", true),
        ("ImplementationSpecific", "/foo", "/foobar", false),
    ];
    for (kind, path, request, matches) in cases {
        let t = table(&ingress("one", Some("example.com"), &[(path, kind, "a")]));
        assert_eq!(
            lands(&t, "example.com", request).is_some(),
            *matches,
            "{kind} {path} vs {request}"
        );
    }
}

#[test]
fn longest_match_wins_and_exact_beats_prefix() {
    let t = table(&ingress(
        "one",
        Some("example.com"),
        &[
            ("/", "Prefix", "a"),
            ("/aaa", "Prefix", "b"),
            ("/aaa/bbb", "Prefix", "c"),
            ("/aaa/bbb", "Exact", "d"),
            ("/aaa/", "Prefix", "e"),
        ],
    ));
    // Spec: "/aaa/ccc" with Prefix "/" and Prefix "/aaa" uses "/aaa".
    assert_eq!(lands(&t, "example.com", "/aaa/ccc"), Some('b'));
    assert_eq!(lands(&t, "example.com", "/aaa/bbb"), Some('d'));
    assert_eq!(lands(&t, "example.com", "/aaa/bbb/x"), Some('c'));
    assert_eq!(lands(&t, "example.com", "/ccc"), Some('a'));
    // "/aaa/" and "/aaa" are the same prefix: the first one written keeps it.
    assert!(
        t.warnings.iter().any(|w| w.contains("\"/aaa/\"")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn hosts_exact_then_wildcard_then_hostless_then_default() {
    let yaml = ingress("exact", Some("foo.bar.com"), &[("/", "Prefix", "a")])
        + &ingress("wild", Some("*.bar.com"), &[("/", "Prefix", "b")])
        + &ingress("any", None, &[("/any", "Prefix", "c")])
        + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: dflt, namespace: default}\n\
           spec: {ingressClassName: weft, defaultBackend: {service: {name: d, port: {name: http}}}}\n";
    let t = table(&yaml);
    assert_eq!(lands(&t, "foo.bar.com", "/x"), Some('a'));
    assert_eq!(
        lands(&t, "FOO.Bar.com", "/x"),
        Some('a'),
        "hosts are case-insensitive"
    );
    assert_eq!(lands(&t, "baz.bar.com", "/x"), Some('b'));
    // The spec: a wildcard covers exactly one label.
    assert_eq!(lands(&t, "bar.com", "/x"), Some('d'));
    assert_eq!(lands(&t, "a.foo.bar.com", "/x"), Some('d'));
    assert_eq!(lands(&t, "other.com", "/any/1"), Some('c'));
    assert_eq!(lands(&t, "other.com", "/x"), Some('d'));
}

#[test]
fn nothing_matches_without_a_default_backend() {
    let t = table(&ingress("one", Some("foo.com"), &[("/app", "Prefix", "a")]));
    assert!(t.route("foo.com", "/other").is_none());
    assert!(t.route("bar.com", "/app").is_none());
}

#[test]
fn conflicts_go_to_the_older_ingress() {
    let newer = ingress("newer", Some("foo.com"), &[("/", "Prefix", "b")]).replace(
        "namespace: default}",
        "namespace: default, creationTimestamp: \"2026-01-02T00:00:00Z\"}",
    );
    let older = ingress("older", Some("foo.com"), &[("/", "Prefix", "a")]).replace(
        "namespace: default}",
        "namespace: default, creationTimestamp: \"2026-01-01T00:00:00Z\"}",
    );
    let t = table(&(newer + &older));
    assert_eq!(lands(&t, "foo.com", "/"), Some('a'));
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("default/newer") && w.contains("default/older")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn backends_resolve_to_ready_endpoints_by_port_number_or_name() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
        spec: {clusterIP: 10.96.1.1, ports: [{name: http, port: 80, targetPort: web}, {name: admin, port: 9000}]}\n---\n\
        apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
        metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\n\
        addressType: IPv4\nports: [{name: http, port: 8080}, {name: admin, port: 9090}]\n\
        endpoints:\n\
        - {addresses: [10.0.1.1], conditions: {ready: true}}\n\
        - {addresses: [10.0.1.2], conditions: {ready: false}}\n\
        - {addresses: [10.0.1.3]}\n---\n\
        apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop, namespace: shop}\n\
        spec:\n  ingressClassName: weft\n  rules:\n  - http:\n      paths:\n\
        \x20     - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n\
        \x20     - {path: /admin, pathType: Prefix, backend: {service: {name: web, port: {name: admin}}}}\n\
        \x20     - {path: /gone, pathType: Prefix, backend: {service: {name: gone, port: {number: 80}}}}\n\
        \x20     - {path: /badport, pathType: Prefix, backend: {service: {name: web, port: {number: 81}}}}\n";
    let t = RouteTable::build(&index(yaml), &ClassSettings::default());
    let endpoints = |path: &str| {
        let route = t.route("x", path).expect("routed");
        route
            .backend
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    // Not-ready endpoints never; a missing `ready` condition means ready.
    assert_eq!(endpoints("/"), vec!["10.0.1.1:8080", "10.0.1.3:8080"]);
    assert_eq!(endpoints("/admin"), vec!["10.0.1.1:9090", "10.0.1.3:9090"]);
    let gone = t.route("x", "/gone").expect("routed");
    assert!(gone.backend.endpoints.is_empty());
    assert!(
        gone.backend
            .problem
            .as_deref()
            .unwrap_or_default()
            .contains("not found")
    );
    let bad = t.route("x", "/badport").expect("routed");
    assert!(
        bad.backend
            .problem
            .as_deref()
            .unwrap_or_default()
            .contains("no port")
    );
}

#[test]
fn terminating_serving_endpoints_only_when_none_is_ready() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
        spec: {clusterIP: 10.96.1.1, ports: [{port: 80}]}\n---\n\
        apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
        metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}\n\
        addressType: IPv4\nports: [{port: 80}]\n\
        endpoints:\n\
        - {addresses: [10.0.1.1], conditions: {ready: false, serving: true, terminating: true}}\n\
        - {addresses: [10.0.1.2], conditions: {ready: false, serving: false, terminating: true}}\n---\n"
        .to_owned()
        + &ingress("one", None, &[("/", "Prefix", "web")]);
    let t = RouteTable::build(&index(&yaml), &ClassSettings::default());
    let route = t.route("x", "/").expect("routed");
    assert_eq!(
        route.backend.endpoints,
        vec!["10.0.1.1:80".parse().unwrap()]
    );
}

#[test]
fn classes_select_which_ingresses_are_served() {
    let classless = ingress("classless", Some("c.com"), &[("/", "Prefix", "a")])
        .replace("  ingressClassName: weft\n", "");
    let other = ingress("other", Some("o.com"), &[("/", "Prefix", "a")])
        .replace("ingressClassName: weft", "ingressClassName: nginx");
    let mine = ingress("mine", Some("m.com"), &[("/", "Prefix", "a")])
        .replace("ingressClassName: weft", "ingressClassName: edge");
    let legacy = ingress("legacy", Some("l.com"), &[("/", "Prefix", "a")])
        .replace("  ingressClassName: weft\n", "")
        .replace(
            "namespace: default}",
            "namespace: default, annotations: {kubernetes.io/ingress.class: weft}}",
        );
    let edge_class = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: edge}\n\
        spec: {controller: weft.dev/ingress-controller}\n---\n";
    let t = table(&(classless.clone() + &other + &mine + &legacy + edge_class));
    assert!(t.route("c.com", "/").is_none(), "no default class yet");
    assert!(
        t.route("o.com", "/").is_none(),
        "another controller's class"
    );
    assert!(
        t.route("m.com", "/").is_some(),
        "an IngressClass naming our controller"
    );
    assert!(t.route("l.com", "/").is_some(), "the legacy annotation");
    let default_class = edge_class.replace(
        "metadata: {name: edge}",
        "metadata: {name: edge, annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}}",
    );
    let t = table(&(classless + &default_class));
    assert!(t.route("c.com", "/").is_some(), "our class is the default");
}

#[test]
fn ssl_redirect_annotation_marks_routes() {
    let redirected = ingress("r", Some("r.com"), &[("/", "Prefix", "a")]).replace(
        "namespace: default}",
        "namespace: default, annotations: {weft.dev/ssl-redirect: \"true\"}}",
    );
    let t = table(&(redirected + &ingress("p", Some("p.com"), &[("/", "Prefix", "a")])));
    assert!(t.route("r.com", "/").expect("routed").ssl_redirect);
    assert!(!t.route("p.com", "/").expect("routed").ssl_redirect);
}

#[test]
fn tls_secrets_select_certificates_by_server_name() {
    let make = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let secret = |name: &str, (crt, key): (String, String)| {
        // YAML double-quoted strings take the same \n escapes as Rust's Debug.
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\n\
             type: kubernetes.io/tls\nstringData: {{tls.crt: {crt:?}, tls.key: {key:?}}}\n---\n"
        )
    };
    let with_tls = ingress("one", Some("a.com"), &[("/", "Prefix", "a")]).replace(
        "  rules:\n",
        "  tls:\n  - {hosts: [a.com], secretName: a-cert}\n  - {hosts: [\"*.w.com\"], secretName: w-cert}\n  - {hosts: [b.com], secretName: missing}\n  rules:\n",
    );
    let yaml = secret("a-cert", make("a.com")) + &secret("w-cert", make("*.w.com")) + &with_tls;
    let t = table(&yaml);
    let a = t
        .certificates
        .for_server_name(Some("A.com"))
        .expect("a.com cert");
    let w = t
        .certificates
        .for_server_name(Some("x.w.com"))
        .expect("wildcard cert");
    assert!(!Arc::ptr_eq(&a, &w));
    assert!(t.certificates.for_server_name(Some("y.x.w.com")).is_none());
    assert!(t.certificates.for_server_name(Some("b.com")).is_none());
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("default/missing not found")),
        "{:?}",
        t.warnings
    );
}
