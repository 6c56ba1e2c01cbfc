//! Shared setup of the integration tests: a server on 127.0.0.1 with a
//! random port fed from a `Cluster`, and `dig` against it.
#![allow(clippy::unwrap_used, dead_code)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weft_cluster::testing::{mk_service, set_cluster_ip};
use weft_cluster::{Cluster, Object};
use weft_dns::server::Handler;
use weft_dns::source::Follower;
use weft_dns::{Config, Server};

/// A running server; stops when dropped.
pub struct Running {
    pub dns: SocketAddr,
    pub ops: SocketAddr,
    pub handler: Arc<Handler>,
    _follower: Option<Follower>,
    runtime: tokio::runtime::Runtime,
}

impl Running {
    pub fn port(&self) -> String {
        self.dns.port().to_string()
    }

    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

/// A configuration listening on 127.0.0.1 (random ports) whose upstream
/// is a closed loopback port: no test ever sends traffic off the host.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ops_listen: "127.0.0.1:0".parse().unwrap(),
        upstreams: vec!["127.0.0.1:9".to_owned()],
        upstream_timeout_ms: 500,
        ..Config::default()
    }
}

pub fn start(config: &Config, cluster: Option<&Cluster>) -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(Server::bind(config)).unwrap();
    let handler = server.handler();
    let (dns, ops) = (server.bound().dns, server.bound().ops);
    let follower = cluster
        .map(|c| Follower::start(c.clone(), config.zone_settings(), handler.clone()).unwrap());
    runtime.spawn(server.serve());
    Running {
        dns,
        ops,
        handler,
        _follower: follower,
        runtime,
    }
}

/// `dig @127.0.0.1 -p <port> <args>`, its whole output.
pub fn dig(port: &str, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", port, "+tries=1", "+time=2"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short`: the answer data, one per line, sorted.
pub fn short(port: &str, args: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = dig(port, &[&["+short"], args].concat())
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

pub fn endpoint_slice(
    ns: &str,
    svc: &str,
    endpoints: &[(&str, Option<&str>)],
    ports: &[(&str, i32)],
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{svc}-1")),
            namespace: Some(ns.to_owned()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_owned(),
                svc.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".to_owned(),
        endpoints: endpoints
            .iter()
            .map(|(ip, host)| Endpoint {
                addresses: vec![(*ip).to_owned()],
                hostname: host.map(str::to_owned),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p)| EndpointPort {
                    name: Some((*n).to_owned()),
                    port: Some(*p),
                    protocol: Some("TCP".to_owned()),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    }
}

pub fn service(ns: &str, name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> Service {
    let mut svc = mk_service(ns, name, &[("app", name)], ports);
    set_cluster_ip(&mut svc, ip);
    svc
}

/// The lab-like cluster the conformance tests query: the spec's examples
/// (`kubernetes`, `headless` with and without hostnames, ExternalName
/// `foo`), a Service `web` in namespace `shop`, and a headless Service
/// `big` with 100 endpoints whose answer does not fit 512 bytes.
pub fn lab_cluster() -> Cluster {
    let cluster = Cluster::new();
    let mut external = mk_service("default", "foo", &[], &[]);
    if let Some(spec) = external.spec.as_mut() {
        spec.type_ = Some("ExternalName".to_owned());
        spec.external_name = Some("www.example.com".to_owned());
    }
    let big: Vec<String> = (1..=100).map(|i| format!("10.244.1.{i}")).collect();
    let big_eps: Vec<(&str, Option<&str>)> = big.iter().map(|ip| (ip.as_str(), None)).collect();
    let objects: Vec<Object> = vec![
        service(
            "default",
            "kubernetes",
            "10.96.0.1",
            &[("https", 443, "6443")],
        )
        .into(),
        service("default", "headless", "None", &[("https", 443, "")]).into(),
        endpoint_slice(
            "default",
            "headless",
            &[
                ("10.244.0.100", Some("my-pet")),
                ("10.244.0.101", Some("my-pet-2")),
                ("10.244.0.102", None),
            ],
            &[("https", 443)],
        )
        .into(),
        external.into(),
        service("shop", "web", "10.96.0.20", &[("http", 80, "8080")]).into(),
        service("default", "big", "None", &[]).into(),
        endpoint_slice("default", "big", &big_eps, &[]).into(),
    ];
    cluster.update(|index| index.replace_all(objects));
    cluster.mark_synced();
    cluster
}
