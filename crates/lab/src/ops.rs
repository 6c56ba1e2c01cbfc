//! The lab's lifecycle: `up` (build or repair everything, idempotently,
//! showing each step), `down` (undo everything, also on a half-built lab),
//! `status` and `logs`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use weft_cluster::cli::align_table;
use weft_cluster::manifest::Manifest;
use weft_cluster::model::pod_is_ready;
use weft_cluster::{Kind, Object, Store};
use weft_linux::NetNs;

use crate::kubelet::{PodState, teardown};
use crate::layout::{EXTERNAL_IP, Layout, MAX_NODES};
use crate::process::{self, Recorded};
use crate::{LabError, topology};

/// The cluster DNS objects every lab gets (kube-system/kube-dns).
pub const CLUSTER_DNS: &str = include_str!("dns.yaml");

/// The ingress controller every lab gets (ingress-weft/weft-ingress,
/// NodePorts 31080 and 31443) and the default IngressClass `weft`.
pub const INGRESS_CONTROLLER: &str = include_str!("ingress.yaml");

/// The sample app applied when `lab up` gets no manifests.
pub const SAMPLE_APP: &str = include_str!("sample.yaml");

/// What a lab was built with (`lab.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Number of nodes.
    pub nodes: u8,
    /// `host-gw` or `vxlan`.
    pub mode: String,
}

impl Settings {
    /// The settings of an existing lab.
    pub fn read(layout: &Layout) -> Option<Settings> {
        let bytes = std::fs::read(layout.settings_file()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The settings of the lab, which must exist: for commands that look
    /// at a lab, so a lab that is not there is said to be missing instead
    /// of being read as an empty one.
    pub fn require(layout: &Layout) -> Result<Settings, LabError> {
        Settings::read(layout).ok_or_else(|| {
            LabError::Invalid(format!("no lab named {} (run `weft lab up`)", layout.name))
        })
    }
}

/// Nodes of a lab when neither `--nodes` nor an existing lab says.
pub const DEFAULT_NODES: u8 = 2;
/// Mode of a lab when neither `--mode` nor an existing lab says.
pub const DEFAULT_MODE: &str = "host-gw";

fn step(out: &mut dyn Write, number: usize, total: usize, text: &str) {
    let _ = writeln!(out, "[{number}/{total}] {text}");
    let _ = out.flush();
}

fn node_object(index: u8) -> Object {
    Object::Node(Node {
        metadata: ObjectMeta {
            name: Some(Layout::node_name(index)),
            labels: Some(
                [(
                    "kubernetes.io/hostname".to_owned(),
                    Layout::node_name(index),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".to_owned(),
                    address: Layout::node_ip(index).to_string(),
                },
                NodeAddress {
                    type_: "Hostname".to_owned(),
                    address: Layout::node_name(index),
                },
            ]),
            ..NodeStatus::default()
        }),
    })
}

/// Starts `args` as a long-running lab process in `ns` unless the one
/// recorded in `pid_file` still runs; returns whether it was started.
fn ensure_process(
    ns: &NetNs,
    exe: &Path,
    args: &[String],
    log: &Path,
    pid_file: &Path,
) -> Result<bool, LabError> {
    if Recorded::read(pid_file).is_some_and(|recorded| recorded.is_alive()) {
        return Ok(false);
    }
    let mut command = Command::new(exe);
    command.args(args).env("WEFT_LOG", "info");
    process::spawn(ns, &mut command, log, pid_file)
        .map_err(LabError::io(format!("starting {}", args.join(" "))))?;
    Ok(true)
}

/// Whether the lab's store holds Pods or Services of its own (not the
/// lab components', not `default/kubernetes`).
fn holds_apps(layout: &Layout) -> Result<bool, LabError> {
    let Ok(store) = Store::open_existing(layout.store_dir()) else {
        return Ok(false);
    };
    let mut objects = store.list(Kind::Pod, None)?;
    objects.extend(store.list(Kind::Service, None)?);
    Ok(objects.iter().any(|object| {
        let meta = object.meta();
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        let component = crate::check::COMPONENT_NAMESPACES.contains(&namespace);
        let api_server = namespace == "default" && name == "kubernetes";
        !(component || api_server)
    }))
}

/// The manifests `lab up` applies: the files given; none given, the sample
/// app for a lab without apps yet and nothing for one that has them (its
/// state stays as it is, whatever it was built with).
fn read_manifests(files: &[PathBuf], has_apps: bool) -> Result<Vec<Manifest>, LabError> {
    if files.is_empty() && has_apps {
        return Ok(Vec::new());
    }
    if files.is_empty() {
        return Ok(vec![Manifest {
            origin: "(sample app)".to_owned(),
            text: SAMPLE_APP.to_owned(),
        }]);
    }
    weft_cluster::manifest::read_manifests(files, &mut std::io::empty())
        .map_err(|err| LabError::Invalid(err.to_string()))
}

/// Builds (or repairs) the lab: LAN, external host, nodes, CNI plugins,
/// Node objects, agents and kubelets, then applies `manifests` (when
/// empty: the sample app for a new lab, nothing for an existing one) and
/// waits for the Pods to be Ready. `nodes` and `mode`
/// not given are the existing lab's, or the defaults for a new one.
pub fn up(
    layout: &Layout,
    nodes: Option<u8>,
    mode: Option<&str>,
    manifests: &[PathBuf],
    exe: &Path,
    out: &mut dyn Write,
) -> Result<(), LabError> {
    let existing = Settings::read(layout);
    let nodes = nodes
        .or(existing.as_ref().map(|existing| existing.nodes))
        .unwrap_or(DEFAULT_NODES);
    let mode = mode
        .map(str::to_owned)
        .or(existing.as_ref().map(|existing| existing.mode.clone()))
        .unwrap_or_else(|| DEFAULT_MODE.to_owned());
    if nodes == 0 || nodes > MAX_NODES {
        return Err(LabError::Invalid(format!(
            "--nodes must be 1 to {MAX_NODES}"
        )));
    }
    if !matches!(mode.as_str(), "host-gw" | "vxlan") {
        return Err(LabError::Invalid(format!(
            "--mode must be host-gw or vxlan, not {mode:?}"
        )));
    }
    let wanted = Settings {
        nodes,
        mode: mode.clone(),
    };
    if let Some(existing) = existing.as_ref().filter(|existing| **existing != wanted) {
        return Err(LabError::Invalid(format!(
            "lab {} exists with {} node(s) in {} mode; run `weft lab down --name {}` first",
            layout.name, existing.nodes, existing.mode, layout.name
        )));
    }
    // Manifests are read (and validated below) before anything is built.
    // A lab whose first `up` failed before its manifests went in is new
    // for this purpose.
    let has_apps = existing.is_some() && holds_apps(layout)?;
    let manifests = read_manifests(manifests, has_apps)?;
    let started = Instant::now();
    let total = 7;
    std::fs::create_dir_all(&layout.dir)
        .map_err(LabError::io(format!("creating {}", layout.dir.display())))?;
    let settings =
        serde_json::to_vec_pretty(&wanted).map_err(|err| LabError::Invalid(err.to_string()))?;
    std::fs::write(layout.settings_file(), settings).map_err(LabError::io("writing lab.json"))?;

    step(
        out,
        1,
        total,
        &format!(
            "underlay: {} with bridge lan0, gateway 192.168.10.1",
            layout.lan_ns()
        ),
    );
    let lan = topology::ensure_lan(layout)?;
    step(
        out,
        2,
        total,
        &format!("external host: {} at {EXTERNAL_IP}", layout.external_ns()),
    );
    let external = topology::ensure_external(layout, &lan)?;
    let external_dir = layout.dir.join("external");
    ensure_process(
        &external,
        exe,
        &[
            "serve".into(),
            "--http".into(),
            "8080".into(),
            "--hostname".into(),
            "external".into(),
        ],
        &external_dir.join("serve.log"),
        &external_dir.join("serve.pid"),
    )?;
    step(out, 3, total, &format!("{nodes} node(s), {mode} mode"));
    for index in 1..=nodes {
        topology::ensure_node(layout, &lan, index)?;
        let _ = writeln!(
            out,
            "      {} {}",
            layout.node_ns(index),
            Layout::node_ip(index)
        );
    }
    step(
        out,
        4,
        total,
        &format!("CNI plugins into {}", layout.bin_dir().display()),
    );
    let installed = Command::new(exe)
        .args(["cni", "install", "--force", "--bin-dir"])
        .arg(layout.bin_dir())
        .output()
        .map_err(LabError::io("running weft cni install"))?;
    if !installed.status.success() {
        return Err(LabError::Invalid(format!(
            "weft cni install failed: {}",
            String::from_utf8_lossy(&installed.stderr)
        )));
    }
    step(out, 5, total, "Node objects into the store");
    let store = Store::open(layout.store_dir())?;
    store.apply_objects((1..=nodes).map(node_object).collect())?;
    step(out, 6, total, "agents and kubelets");
    let store_arg = layout.store_dir().display().to_string();
    for index in 1..=nodes {
        let node = Layout::node_name(index);
        let node_dir = layout.node_dir(&node);
        let node_ns = NetNs::open(&layout.node_ns(index))?;
        let agent = ensure_process(
            &node_ns,
            exe,
            &[
                "agent".into(),
                "--store".into(),
                store_arg.clone(),
                "--node".into(),
                node.clone(),
                "--mode".into(),
                mode.to_owned(),
                "--cni-conf-dir".into(),
                layout.cni_conf_dir(&node).display().to_string(),
                "--ipam-data-dir".into(),
                layout.ipam_dir(&node).display().to_string(),
            ],
            &node_dir.join("agent.log"),
            &node_dir.join("agent.pid"),
        )?;
        let kubelet = ensure_process(
            &NetNs::current(),
            exe,
            &[
                "lab".into(),
                "kubelet".into(),
                "--name".into(),
                layout.name.clone(),
                "--node-index".into(),
                index.to_string(),
                "--state-root".into(),
                layout
                    .dir
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .display()
                    .to_string(),
            ],
            &node_dir.join("kubelet.log"),
            &node_dir.join("kubelet.pid"),
        )?;
        let what = |started: bool| if started { "started" } else { "running" };
        let _ = writeln!(
            out,
            "      {node}: agent {}, kubelet {}",
            what(agent),
            what(kubelet)
        );
    }
    step(
        out,
        7,
        total,
        "cluster DNS (10.96.0.10), ingress controller (NodePorts 31080, 31443) and manifests",
    );
    write_dns_config(layout)?;
    let mut system = vec![
        Manifest {
            origin: "(cluster DNS)".to_owned(),
            text: CLUSTER_DNS.to_owned(),
        },
        Manifest {
            origin: "(ingress controller)".to_owned(),
            text: INGRESS_CONTROLLER.to_owned(),
        },
    ];
    if let Some(secret) = crate::certs::secret_manifest(&store)? {
        system.push(Manifest {
            origin: "(lab certificate)".to_owned(),
            text: secret,
        });
    }
    for change in store
        .apply(&system)?
        .into_iter()
        .chain(store.apply(&manifests)?)
    {
        let _ = writeln!(out, "      {}: {:?}", change.key, change.action);
    }
    settle(layout, &store, nodes, out)?;
    let _ = writeln!(
        out,
        "lab {} is up in {:.1} s",
        layout.name,
        started.elapsed().as_secs_f64()
    );
    status(layout, out)
}

/// How long agents get to apply a generation once the Pods are Ready.
pub const AGENT_PATIENCE: Duration = Duration::from_secs(30);

/// Where each agent serves `/healthz`, `/metrics` and `/synced`, inside its
/// node namespace (the agent's default `--metrics-address`).
pub const AGENT_STATUS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10249);

/// Waits until every Pod of the store is Ready, then until the agent of
/// every node (1 to `nodes`) has applied the store generation that made
/// them so ([`wait_for_agents`]): afterwards every path `lab check` proves
/// works, endpoints included. Shows progress on `out`.
pub fn settle(
    layout: &Layout,
    store: &Store,
    nodes: u8,
    out: &mut dyn Write,
) -> Result<(), LabError> {
    // A minute, plus a quarter second per pod for big labs.
    let pod_count = store.list(Kind::Pod, None)?.len();
    let patience = Duration::from_secs(60)
        + Duration::from_millis(250) * u32::try_from(pod_count).unwrap_or(u32::MAX);
    let deadline = Instant::now() + patience;
    loop {
        let pods = store.list(Kind::Pod, None)?;
        let ready = pods
            .iter()
            .filter(|object| matches!(object, Object::Pod(pod) if pod_is_ready(pod)))
            .count();
        if ready == pods.len() {
            let _ = writeln!(out, "      {ready}/{} pods ready", pods.len());
            break;
        }
        if Instant::now() > deadline {
            return Err(LabError::Invalid(format!(
                "only {ready}/{} pods became ready within {} s; see `weft lab logs kubelet --name {}`",
                pods.len(),
                patience.as_secs(),
                layout.name
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let generation = store.generation()?;
    // A node whose Node object was deleted is no longer in the cluster: its
    // agent has nothing to apply (and reports the error), so it is not
    // waited for.
    let names: Vec<String> = store
        .list(Kind::Node, None)?
        .iter()
        .map(|node| node.key().name)
        .collect();
    let present: Vec<u8> = (1..=nodes)
        .filter(|index| names.contains(&Layout::node_name(*index)))
        .collect();
    wait_for_agents(layout, &present, generation, AGENT_PATIENCE, out)
}

/// What node `index`'s agent says on `/synced`: the store generation it
/// has applied in full, or why there is none.
pub fn agent_synced(layout: &Layout, index: u8) -> Result<u64, String> {
    let ns = NetNs::open(&layout.node_ns(index)).map_err(|err| err.to_string())?;
    let body = crate::check::http_get(&ns, AGENT_STATUS, "/synced")?;
    body.trim()
        .parse()
        .map_err(|_| format!("/synced answered {body:?}"))
}

/// Waits until the agent of every node in `nodes` (1-based indices) has
/// applied store generation `generation` or a later one, asking each on
/// `/synced` inside its namespace; fails after `patience` naming the nodes
/// behind.
pub fn wait_for_agents(
    layout: &Layout,
    nodes: &[u8],
    generation: u64,
    patience: Duration,
    out: &mut dyn Write,
) -> Result<(), LabError> {
    let count = nodes.len();
    let _ = writeln!(
        out,
        "      waiting for {count} agent(s) to apply store generation {generation}"
    );
    let _ = out.flush();
    let started = Instant::now();
    let mut behind: Vec<(u8, Result<u64, String>)> = nodes.iter().map(|i| (*i, Ok(0))).collect();
    loop {
        behind = behind
            .into_iter()
            .map(|(index, _)| (index, agent_synced(layout, index)))
            .filter(|(_, synced)| !matches!(synced, Ok(g) if *g >= generation))
            .collect();
        if behind.is_empty() {
            let _ = writeln!(
                out,
                "      {count}/{count} agents applied it in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > patience {
            let lagging: Vec<String> = behind
                .iter()
                .map(|(index, synced)| match synced {
                    Ok(g) => format!("{} at {g}", Layout::node_name(*index)),
                    Err(err) => format!("{}: {err}", Layout::node_name(*index)),
                })
                .collect();
            return Err(LabError::Invalid(format!(
                "agents did not apply store generation {generation} within {} s ({}); see `weft lab logs agent --name {}`",
                patience.as_secs(),
                lagging.join(", "),
                layout.name
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After `weft lab apply|delete` on the store `store_dir`: when the store
/// is a lab's (its `lab.json` beside it), waits as `lab up` does
/// ([`settle`]); for a store of no lab, does nothing.
pub fn settle_store(store_dir: &Path, out: &mut dyn Write) -> Result<(), LabError> {
    let (Some(dir), Some(root)) = (
        store_dir.parent(),
        store_dir.parent().and_then(Path::parent),
    ) else {
        return Ok(());
    };
    let Some(name) = dir.file_name().and_then(|name| name.to_str()) else {
        return Ok(());
    };
    let Ok(layout) = Layout::new(root, name) else {
        return Ok(());
    };
    if layout.store_dir() != store_dir {
        return Ok(());
    }
    let Some(settings) = Settings::read(&layout) else {
        return Ok(());
    };
    let store = Store::open(layout.store_dir())?;
    settle(&layout, &store, settings.nodes, out)
}

/// The lab DNS server's config: the cluster zone from the store, the
/// external host by name from a hosts file, and the external host as the
/// only upstream, so nothing the lab's pods ask leaves the lab (it runs no
/// DNS server: other names fail fast).
fn write_dns_config(layout: &Layout) -> Result<(), LabError> {
    let dir = layout.dir.join("dns");
    std::fs::create_dir_all(&dir).map_err(LabError::io(format!("creating {}", dir.display())))?;
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("{EXTERNAL_IP} external\n"))
        .map_err(LabError::io("writing the lab DNS hosts file"))?;
    let config = format!(
        "listen = \"0.0.0.0:53\"\nops_listen = \"127.0.0.1:9153\"\nupstreams = [\"{EXTERNAL_IP}\"]\nupstream_timeout_ms = 500\nhosts_file = \"{}\"\n",
        hosts.display()
    );
    std::fs::write(dir.join("dns.toml"), config).map_err(LabError::io("writing the lab DNS config"))
}

/// Stops every process the lab recorded, removes every namespace named
/// `weft-<lab>-…`, the pods' `/etc/netns` files and the state directory.
/// Goes on past errors and reports them all at the end.
pub fn down(layout: &Layout, out: &mut dyn Write) -> Result<(), LabError> {
    let mut problems = Vec::new();
    let grace = Duration::from_secs(2);
    let nodes_dir = layout.dir.join("nodes");
    let node_dirs: Vec<PathBuf> = std::fs::read_dir(&nodes_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .collect()
        })
        .unwrap_or_default();
    // Kubelets first, so nothing restarts pods while they go.
    let kubelets: Vec<Recorded> = node_dirs
        .iter()
        .filter_map(|dir| Recorded::read(&dir.join("kubelet.pid")))
        .collect();
    let mut stopped = process::stop_all(&kubelets, grace);
    // Then, all at once, the agents, the external host's server, the pod
    // workloads, and anything else running inside a lab namespace (a
    // workload whose kubelet died between starting it and recording it was
    // started by the lab too): each goes before its namespace does.
    let pods = PodState::all(layout);
    let mut rest: Vec<Recorded> = node_dirs
        .iter()
        .filter_map(|dir| Recorded::read(&dir.join("agent.pid")))
        .chain(Recorded::read(
            &layout.dir.join("external").join("serve.pid"),
        ))
        .chain(pods.iter().filter_map(|pod| {
            Some(Recorded {
                pid: pod.pid?,
                start_time: pod.pid_start?,
            })
        }))
        .collect();
    let paths: Vec<PathBuf> = topology::lab_namespaces(layout)?
        .into_iter()
        .map(|name| Path::new(weft_linux::netns::NETNS_RUN_DIR).join(name))
        .collect();
    rest.extend(process::in_namespaces(&paths));
    rest.sort_by_key(|process| (process.pid, process.start_time));
    rest.dedup();
    stopped += process::stop_all(&rest, grace);
    for pod in &pods {
        // The node namespaces go below, taking the pods' veths and the
        // kernel state with them; only the host-local files need CNI DEL's
        // care, and the state dir holding them is removed too.
        teardown(layout, None, pod);
    }
    let namespaces = topology::lab_namespaces(layout)?;
    let _ = writeln!(
        out,
        "stopped {stopped} lab process(es) and {} pod(s)",
        pods.len()
    );
    for name in &namespaces {
        if let Err(err) = NetNs::delete_if_exists(name) {
            problems.push(format!("deleting namespace {name}: {err}"));
        }
        let _ = std::fs::remove_dir_all(layout.etc_netns(name));
    }
    let _ = writeln!(out, "deleted {} namespace(s)", namespaces.len());
    match std::fs::remove_dir_all(&layout.dir) {
        Ok(()) => {
            let _ = writeln!(out, "removed {}", layout.dir.display());
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => problems.push(format!("removing {}: {err}", layout.dir.display())),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LabError::Invalid(problems.join("; ")))
    }
}

/// Nodes, pods and Services in tables.
pub fn status(layout: &Layout, out: &mut dyn Write) -> Result<(), LabError> {
    let settings = Settings::require(layout)?;
    let store = Store::open(layout.store_dir())?;
    let write = |out: &mut dyn Write, line: String| {
        let _ = writeln!(out, "{line}");
    };
    write(
        out,
        format!(
            "lab {} ({} nodes, {} mode)",
            layout.name, settings.nodes, settings.mode
        ),
    );
    write(out, String::new());
    let mut nodes = Vec::new();
    for object in store.list(Kind::Node, None)? {
        let Object::Node(node) = object else { continue };
        let name = node.metadata.name.clone().unwrap_or_default();
        let address = node
            .status
            .as_ref()
            .and_then(|status| status.addresses.as_ref())
            .and_then(|addresses| addresses.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone())
            .unwrap_or_default();
        let cidr = node
            .spec
            .as_ref()
            .and_then(|spec| spec.pod_cidr.clone())
            .unwrap_or_default();
        let agent =
            Recorded::read(&layout.node_dir(&name).join("agent.pid")).is_some_and(|r| r.is_alive());
        let agent = if agent { "running" } else { "STOPPED" };
        nodes.push(vec![name, address, cidr, agent.to_owned()]);
    }
    let _ = write!(
        out,
        "{}",
        align_table(&["NODE", "ADDRESS", "POD-CIDR", "AGENT"], &nodes)
    );
    write(out, String::new());
    let mut pods = Vec::new();
    for object in store.list(Kind::Pod, None)? {
        let Object::Pod(pod) = object else { continue };
        let name = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let node = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .unwrap_or_else(|| "<none>".into());
        let ip = pod
            .status
            .as_ref()
            .and_then(|status| status.pod_ip.clone())
            .unwrap_or_else(|| "<none>".into());
        let ready = if pod_is_ready(&pod) { "yes" } else { "no" };
        pods.push(vec![name, node, ip, ready.to_owned()]);
    }
    let _ = write!(
        out,
        "{}",
        align_table(&["POD", "NODE", "IP", "READY"], &pods)
    );
    write(out, String::new());
    let mut services = Vec::new();
    for object in store.list(Kind::Service, None)? {
        let Object::Service(service) = object else {
            continue;
        };
        let name = format!(
            "{}/{}",
            service.metadata.namespace.as_deref().unwrap_or_default(),
            service.metadata.name.as_deref().unwrap_or_default()
        );
        let spec = service.spec.unwrap_or_default();
        let ports: Vec<String> = spec
            .ports
            .unwrap_or_default()
            .iter()
            .map(|port| {
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                match port.node_port {
                    Some(node_port) => format!("{}:{node_port}/{protocol}", port.port),
                    None => format!("{}/{protocol}", port.port),
                }
            })
            .collect();
        services.push(vec![
            name,
            spec.cluster_ip.unwrap_or_default(),
            ports.join(","),
        ]);
    }
    let _ = write!(
        out,
        "{}",
        align_table(&["SERVICE", "CLUSTER-IP", "PORTS"], &services)
    );
    Ok(())
}

/// Prints a component's log: `agent`, `kubelet` (every node's, or
/// `agent/node-2`), or a pod `NAMESPACE/NAME`.
pub fn logs(layout: &Layout, component: &str, out: &mut dyn Write) -> Result<(), LabError> {
    Settings::require(layout)?;
    let (kind, node) = component.split_once('/').unwrap_or((component, ""));
    let files: Vec<PathBuf> = match kind {
        "agent" | "kubelet" => {
            let nodes_dir = layout.dir.join("nodes");
            let mut nodes: Vec<String> = std::fs::read_dir(&nodes_dir)
                .map_err(LabError::io(format!("reading {}", nodes_dir.display())))?
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect();
            nodes.sort();
            if !node.is_empty() && !nodes.iter().any(|name| name == node) {
                return Err(LabError::Invalid(format!(
                    "lab {} has no node {node:?} (its nodes: {})",
                    layout.name,
                    nodes.join(", ")
                )));
            }
            nodes
                .iter()
                .filter(|name| node.is_empty() || name.as_str() == node)
                .map(|name| layout.node_dir(name).join(format!("{kind}.log")))
                .collect()
        }
        _ if node.is_empty() => {
            return Err(LabError::Invalid(format!(
                "{component:?} is not a component: name agent, kubelet (with /node-N for one node) or a pod as NAMESPACE/NAME"
            )));
        }
        namespace => {
            let file = layout.pods_dir().join(format!("{namespace}_{node}.log"));
            if !file.exists() {
                return Err(LabError::Invalid(format!(
                    "no log for pod {namespace}/{node} in lab {} (see `weft lab get pods -A`)",
                    layout.name
                )));
            }
            vec![file]
        }
    };
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(LabError::io(format!("reading {}", file.display())))?;
        let _ = writeln!(out, "==> {} <==", file.display());
        let _ = out.write_all(text.as_bytes());
    }
    Ok(())
}
