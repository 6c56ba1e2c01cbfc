//! Cost of the pure step of a proxy sync: compiling 30,000 ClusterIP
//! Services of 5 endpoints each into the desired ruleset, and diffing it
//! against the ruleset of the same Services with one endpoint replaced (what
//! one EndpointSlice change costs before anything reaches the kernel).
//! Kernel time is measured by `bench/proxy/run`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use weft_nft::Family;
use weft_proxy::{Endpoint, PortName, Protocol, ProxyConfig, ServicePort, compile, diff};

const SERVICES: u32 = 30_000;
const ENDPOINTS: u32 = 5;

fn services() -> Vec<ServicePort> {
    (0..SERVICES)
        .map(|index| {
            let name = PortName::new("bench", &format!("svc-{index:05}"), "", Protocol::Tcp);
            let cluster_ip = IpAddr::V4(Ipv4Addr::from(u32::from_be_bytes([10, 96, 0, 0]) + index));
            let endpoints = (0..ENDPOINTS)
                .map(|e| {
                    let ip =
                        Ipv4Addr::from(u32::from_be_bytes([10, 248, 0, 0]) + index * ENDPOINTS + e);
                    Endpoint::ready(IpAddr::V4(ip), 8080, Some("bench-node".into()))
                })
                .collect();
            ServicePort::new(name, 80, vec![cluster_ip], endpoints)
        })
        .collect()
}

fn config() -> ProxyConfig {
    ProxyConfig {
        node_name: "bench-node".into(),
        cluster_cidrs: vec![ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(
            Ipv4Addr::new(10, 244, 0, 0),
            16,
        ))],
    }
}

fn compile_30k(c: &mut Criterion) {
    let ports = services();
    let config = config();
    let mut group = c.benchmark_group("proxy");
    group.sample_size(10);
    group.bench_function("compile 30k Services x 5 endpoints", |b| {
        b.iter(|| compile(Family::Ip, black_box(&ports), &config))
    });
    let old = compile(Family::Ip, &ports, &config);
    let mut changed = ports.clone();
    if let Some(endpoint) = changed
        .first_mut()
        .and_then(|port| port.endpoints.first_mut())
    {
        endpoint.ip = IpAddr::V4(Ipv4Addr::new(10, 247, 0, 1));
    }
    let new = compile(Family::Ip, &changed, &config);
    group.bench_function("diff one endpoint change at 30k", |b| {
        b.iter(|| diff(Some(black_box(&old)), black_box(&new)))
    });
    group.finish();
}

criterion_group!(benches, compile_30k);
criterion_main!(benches);
