//! Data generator of `bench/dns/run`: one object list (Services, the Pods
//! behind them, their EndpointSlices as the control plane derives them)
//! written to an embedded store for `weft dns`, and the very same names
//! exported as local data for the peers (an unbound `local-data` file and a
//! BIND zone file, both dumped from weft's own answer index, so every server
//! holds the same records), plus the dnsperf query files and the hosts file
//! of the forwarding upstream.
//!
//! ```text
//! bench_dns --out DIR [--services 10000] [--pods 50000] [--namespaces 100]
//!           [--forward-names 1000] [--queries 100000]
//! ```
//!
//! Every tenth Service is headless (its Pods get a
//! `hostname` and `subdomain`); each Service has the named ports `http` and
//! `grpc` (SRV records). Addresses: ClusterIPs from 10.97.0.0, Pod IPs from
//! 10.244.0.2. Nothing here opens a socket.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use clap::Parser;
use hickory_proto::rr::RData;
use k8s_openapi::api::core::v1::Pod;
use weft_cluster::testing::{mk_namespace, mk_pod, mk_service, set_cluster_ip, set_node};
use weft_cluster::{Object, Store};
use weft_dns::records::{Index, ZoneSettings};

#[derive(Parser, Debug)]
struct Args {
    /// Directory to write `store/`, `unbound-local.conf`, `cluster.zone`,
    /// `reverse.zone`, `cluster.queries`, `forward.queries`, `upstream.hosts`.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    #[arg(long, default_value_t = 50_000)]
    pods: u32,
    #[arg(long, default_value_t = 100)]
    namespaces: u32,
    /// Names outside the cluster the forwarded mix asks for.
    #[arg(long, default_value_t = 1000)]
    forward_names: u32,
    /// Lines of each query file.
    #[arg(long, default_value_t = 100_000)]
    queries: u32,
}

const TTL: u32 = 30;
const ZONE: &str = "cluster.local";

fn ip_from(base: Ipv4Addr, offset: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add(offset))
}

fn service_name(i: u32) -> String {
    format!("svc-{i}")
}

fn namespace_of(i: u32, namespaces: u32) -> String {
    format!("ns-{}", i % namespaces.max(1))
}

fn is_headless(i: u32) -> bool {
    i % 10 == 9
}

/// The whole object list: Namespaces, Services, Pods (the store's control
/// plane adds the EndpointSlices).
fn objects(args: &Args) -> Vec<Object> {
    let mut out: Vec<Object> = (0..args.namespaces)
        .map(|n| mk_namespace(&format!("ns-{n}")).into())
        .collect();
    for i in 0..args.services {
        let (ns, name) = (namespace_of(i, args.namespaces), service_name(i));
        let mut svc = mk_service(
            &ns,
            &name,
            &[("app", &name)],
            &[("http", 80, "8080"), ("grpc", 9090, "")],
        );
        let ip = if is_headless(i) {
            "None".to_owned()
        } else {
            ip_from(Ipv4Addr::new(10, 97, 0, 0), i).to_string()
        };
        set_cluster_ip(&mut svc, &ip);
        out.push(svc.into());
    }
    for j in 0..args.pods {
        let i = j % args.services.max(1);
        let (ns, svc) = (namespace_of(i, args.namespaces), service_name(i));
        let name = format!("{svc}-{}", j / args.services.max(1));
        let ip = ip_from(Ipv4Addr::new(10, 244, 0, 2), j).to_string();
        let mut pod: Pod = mk_pod(&ns, &name, &[("app", &svc)], &ip);
        set_node(&mut pod, &format!("node-{}", j % 10));
        if is_headless(i) {
            if let Some(spec) = pod.spec.as_mut() {
                spec.hostname = Some(name.clone());
                spec.subdomain = Some(svc.clone());
            }
        }
        out.push(pod.into());
    }
    out
}

/// The presentation form of one record's data, as zone files and unbound
/// take it.
fn rdata_text(data: &RData) -> String {
    match data {
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| format!("\"{}\"", String::from_utf8_lossy(s)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// A small deterministic generator (the same files on every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from((self.0 >> 33) % n.max(1) as u64).unwrap_or(0)
    }
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let store_dir = args.out.join("store");
    if store_dir.exists() {
        std::fs::remove_dir_all(&store_dir)?;
    }
    let store = Store::open(&store_dir)?;
    let started = std::time::Instant::now();
    store.apply_objects(objects(&args))?;
    let loaded = store.load()?;
    eprintln!(
        "bench_dns: store of {} objects written in {:.1?}",
        loaded.len(),
        started.elapsed()
    );

    let (mut services, mut slices, mut pods) = (Vec::new(), Vec::new(), Vec::new());
    for obj in &loaded {
        match obj {
            Object::Service(s) => services.push(s),
            Object::EndpointSlice(s) => slices.push(s),
            Object::Pod(p) => pods.push(p),
            _ => {}
        }
    }
    let settings = ZoneSettings {
        zone: ZONE.to_owned(),
        ttl: TTL,
        ..ZoneSettings::default()
    };
    let index = Index::build(&settings, services, slices, pods);
    eprintln!(
        "bench_dns: index of {} names holding records, {} bytes stored",
        index.len(),
        index.stored_bytes()
    );

    // Every record of the index, by owner, for the peers.
    let mut by_owner: BTreeMap<String, Vec<RData>> = BTreeMap::new();
    for (owner, data) in index.records() {
        by_owner.entry(owner.to_owned()).or_default().push(data);
    }
    let soa = index.soa();
    let soa_text = rdata_text(&soa.data);
    let mut zone = format!("$TTL {TTL}\n{ZONE}. {TTL} IN SOA {soa_text}\n");
    let mut reverse = format!("$TTL {TTL}\n10.in-addr.arpa. {TTL} IN SOA {soa_text}\n");
    reverse.push_str(&format!("10.in-addr.arpa. {TTL} IN NS ns.dns.{ZONE}.\n"));
    let mut unbound = String::new();
    writeln!(unbound, "server:")?;
    writeln!(unbound, "  local-zone: \"{ZONE}.\" static")?;
    writeln!(unbound, "  local-zone: \"10.in-addr.arpa.\" static")?;
    writeln!(unbound, "  local-data: '{ZONE}. {TTL} IN SOA {soa_text}'")?;
    writeln!(
        unbound,
        "  local-data: '10.in-addr.arpa. {TTL} IN SOA {soa_text}'"
    )?;
    let (mut records, mut a_names, mut headless_names, mut srv_names, mut ptr_names) =
        (0usize, Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (owner, datas) in &by_owner {
        let reverse_name = owner.ends_with(".in-addr.arpa");
        for data in datas {
            let line = format!(
                "{owner}. {TTL} IN {} {}",
                data.record_type(),
                rdata_text(data)
            );
            if reverse_name {
                writeln!(reverse, "{line}")?;
            } else {
                writeln!(zone, "{line}")?;
            }
            writeln!(unbound, "  local-data: '{line}'")?;
            records += 1;
        }
        let first = datas.first().map(|d| d.record_type().to_string());
        match first.as_deref() {
            // `<svc>.<ns>.svc.cluster.local` with one address: ClusterIP.
            Some("A") if owner.split('.').count() == 5 && datas.len() == 1 => {
                a_names.push(owner.clone())
            }
            // Headless Services and their endpoints' names.
            Some("A") => headless_names.push(owner.clone()),
            Some("SRV") => srv_names.push(owner.clone()),
            Some("PTR") => ptr_names.push(owner.clone()),
            _ => {}
        }
    }
    write(&args.out.join("cluster.zone"), &zone)?;
    write(&args.out.join("reverse.zone"), &reverse)?;
    write(&args.out.join("unbound-local.conf"), &unbound)?;

    // The cluster mix: what pods ask, search-path misses included.
    let mut rng = Lcg(7);
    let mut cluster = String::new();
    let pick = |rng: &mut Lcg, names: &[String]| -> String {
        names
            .get(rng.below(names.len()))
            .cloned()
            .unwrap_or_default()
    };
    for _ in 0..args.queries {
        let roll = rng.below(100);
        let line = match roll {
            0..50 => format!("{} A", pick(&mut rng, &a_names)),
            50..65 => format!("{} A", pick(&mut rng, &headless_names)),
            65..75 => format!("{} SRV", pick(&mut rng, &srv_names)),
            75..80 => format!("{} PTR", pick(&mut rng, &ptr_names)),
            // A pod in another namespace looking up a short name through
            // its search path: NXDOMAIN.
            80..95 => {
                let name = pick(&mut rng, &a_names);
                let ns = format!("ns-{}", rng.below(args.namespaces as usize));
                format!("{name}.{ns}.svc.{ZONE} A")
            }
            // A name that exists without records of the type: NODATA.
            _ => format!("{} AAAA", pick(&mut rng, &a_names)),
        };
        writeln!(cluster, "{line}")?;
    }
    write(&args.out.join("cluster.queries"), &cluster)?;

    let mut hosts = String::new();
    for k in 0..args.forward_names {
        writeln!(
            hosts,
            "{} host-{k}.example.test",
            ip_from(Ipv4Addr::new(192, 0, 2, 0), k % 250 + 1)
        )?;
    }
    write(&args.out.join("upstream.hosts"), &hosts)?;
    let mut forward = String::new();
    for _ in 0..args.queries {
        let k = rng.below(args.forward_names as usize);
        writeln!(forward, "host-{k}.example.test A")?;
    }
    write(&args.out.join("forward.queries"), &forward)?;

    println!(
        "services={} pods={} slices={} names={} records={records} a={} headless={} srv={} ptr={}",
        args.services,
        args.pods,
        loaded
            .iter()
            .filter(|o| matches!(o, Object::EndpointSlice(_)))
            .count(),
        by_owner.len(),
        a_names.len(),
        headless_names.len(),
        srv_names.len(),
        ptr_names.len()
    );
    Ok(())
}
