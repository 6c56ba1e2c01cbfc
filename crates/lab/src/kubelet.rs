//! The lab's minimal kubelet, one per node (`weft lab kubelet`): for every
//! Pod bound to its node it creates the pod's network namespace, calls the
//! CNI plugins as a runtime does, writes the pod's resolv.conf under
//! `/etc/netns/<pod-netns>/`, starts the pod's workload (`weft serve` on the
//! container ports: the lab runs no images), and marks the Pod Ready in the
//! store once its first TCP port accepts connections. A Pod deleted from the
//! store, or bound elsewhere, is torn down: workload killed, CNI DEL,
//! namespace removed. The kubelet of the first node also schedules Pods
//! without a node, round-robin by load.
//!
//! A restarted kubelet first tears down what a previous run left for its
//! node (from the pod state files), then rebuilds: state is always derived
//! from the store.
//!
//! Store writes are batched: each pass collects the bindings it decides and
//! the statuses it observes (started, Ready) and commits them in one store
//! transaction at the end of the pass, so a node starting thirty pods costs
//! every watcher of the store a few reloads, not sixty.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::core::v1::{NodeCondition, Pod, PodCondition, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use weft_cluster::model::pod_is_terminal;
use weft_cluster::store::{Action, WATCH_INTERVAL};
use weft_cluster::{Cluster, Kind, Object, ObjectKey, Store};
use weft_linux::NetNs;

use crate::cni::{Attachment, Runtime};
use crate::layout::Layout;
use crate::process::{self, Recorded};

/// Pod annotation naming a weft program to run instead of `weft serve`
/// (`dns`: the cluster DNS server; `ingress`: the ingress controller).
pub const RUN_ANNOTATION: &str = "weft.dev/run";

/// The NodePort of the lab ingress controller's HTTPS port (ingress.yaml),
/// where its HTTP→HTTPS redirects point.
pub const INGRESS_HTTPS_NODE_PORT: u16 = 31443;
/// The NodePort of the lab ingress controller's HTTP port (ingress.yaml).
pub const INGRESS_HTTP_NODE_PORT: u16 = 31080;

/// Cluster DNS address written into every pod's resolv.conf.
pub const CLUSTER_DNS: &str = "10.96.0.10";

/// What a pod's state file records, so `lab down` and a restarted kubelet
/// can find and undo it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodState {
    /// The node the pod runs on.
    pub node: String,
    /// Pod namespace and name.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// CNI container id (the Pod's uid).
    pub container_id: String,
    /// The pod's network namespace name.
    pub netns: String,
    /// CNI ADD result, for DEL's prevResult.
    pub result: serde_json::Value,
    /// The pod's IP.
    pub ip: Option<IpAddr>,
    /// The workload process.
    pub pid: Option<u32>,
    /// Its start time (see [`Recorded`]).
    pub pid_start: Option<u64>,
}

impl PodState {
    fn file(layout: &Layout, container_id: &str) -> PathBuf {
        layout.pods_dir().join(format!("{container_id}.json"))
    }

    /// Where the workload's pid is recorded.
    fn pid_file(layout: &Layout, container_id: &str) -> PathBuf {
        layout.pods_dir().join(format!("{container_id}.pid"))
    }

    fn save(&self, layout: &Layout) -> std::io::Result<()> {
        let path = Self::file(layout, &self.container_id);
        let temporary = path.with_extension("tmp");
        std::fs::create_dir_all(layout.pods_dir())?;
        std::fs::write(
            &temporary,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(temporary, path)
    }

    /// Every pod state file of the lab.
    pub fn all(layout: &Layout) -> Vec<PodState> {
        let Ok(entries) = std::fs::read_dir(layout.pods_dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "json"))
            .filter_map(|entry| std::fs::read(entry.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }

    fn recorded(&self) -> Option<Recorded> {
        Some(Recorded {
            pid: self.pid?,
            start_time: self.pid_start?,
        })
    }
}

/// A running pod of this node.
struct Running {
    key: ObjectKey,
    state: PodState,
    /// The workload, to reap it.
    child: Option<Child>,
    /// First TCP container port, probed for readiness.
    probe_port: Option<u16>,
    /// Whether the store already says Ready.
    marked_ready: bool,
}

/// Tears down everything a pod state file describes; errors are logged.
pub fn teardown(layout: &Layout, runtime: Option<&Runtime>, state: &PodState) {
    if let Some(recorded) = state.recorded() {
        recorded.stop(Duration::from_secs(2));
    }
    let netns_path = Path::new(weft_linux::netns::NETNS_RUN_DIR).join(&state.netns);
    if let Some(runtime) = runtime {
        let attachment = Attachment {
            container_id: state.container_id.clone(),
            netns: netns_path,
            pod: (state.namespace.clone(), state.name.clone()),
            port_mappings: Vec::new(),
        };
        if let Err(err) = runtime.del(&attachment, Some(&state.result)) {
            tracing::warn!(pod = %state.name, "CNI DEL: {err}");
        }
    }
    if let Err(err) = NetNs::delete_if_exists(&state.netns) {
        tracing::warn!(pod = %state.name, "deleting namespace {}: {err}", state.netns);
    }
    let _ = std::fs::remove_dir_all(layout.etc_netns(&state.netns));
    let _ = std::fs::remove_file(PodState::pid_file(layout, &state.container_id));
    let _ = std::fs::remove_file(PodState::file(layout, &state.container_id));
}

/// The kubelet of one node.
pub struct Kubelet {
    layout: Layout,
    node: String,
    node_ip: IpAddr,
    store: Store,
    runtime: Runtime,
    /// The binary started as each pod's workload.
    workload: PathBuf,
    /// Whether this kubelet also schedules unbound Pods.
    scheduler: bool,
    running: BTreeMap<String, Running>,
    /// Statuses observed this pass, written in one commit at its end.
    pending: BTreeMap<ObjectKey, Mark>,
    /// Pods whose workload died: restarts so far, and when the next may
    /// happen (doubling from 1 s to 30 s, like CrashLoopBackOff).
    backoff: BTreeMap<String, (u32, std::time::Instant)>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet").field("node", &self.node).finish()
    }
}

/// A Pod status to record: its IP and readiness, and (on start) what runs
/// for it.
#[derive(Debug, Clone)]
struct Mark {
    /// The Pod's uid: a Pod deleted and made anew under the same name in the
    /// meantime is left alone.
    uid: String,
    ip: IpAddr,
    ready: bool,
    workload: Option<String>,
}

/// A pod's container ports by protocol, and its host port mappings.
#[derive(Debug, Default)]
struct PodPorts {
    tcp: Vec<u16>,
    udp: Vec<u16>,
    /// (hostPort, containerPort, protocol).
    host: Vec<(u16, u16, String)>,
}

fn pod_ports(pod: &Pod) -> PodPorts {
    let PodPorts {
        mut tcp,
        mut udp,
        host: mut host_ports,
    } = PodPorts::default();
    for container in pod.spec.iter().flat_map(|spec| &spec.containers) {
        for port in container.ports.iter().flatten() {
            let Ok(number) = u16::try_from(port.container_port) else {
                continue;
            };
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
            match protocol.as_str() {
                "UDP" => udp.push(number),
                _ => tcp.push(number),
            }
            if let Some(host) = port.host_port.and_then(|host| u16::try_from(host).ok()) {
                host_ports.push((host, number, protocol));
            }
        }
    }
    PodPorts {
        tcp,
        udp,
        host: host_ports,
    }
}

/// What runs for a pod instead of its images (the lab runs none), for the
/// `weft.dev/workload` annotation.
fn workload_text(images: &[String], runs: Option<&str>) -> String {
    if let Some(component @ ("dns" | "ingress")) = runs {
        format!("weft {component}")
    } else if images.is_empty() {
        "weft serve".to_owned()
    } else {
        format!("weft serve (image {} not run)", images.join(", "))
    }
}

/// The resolv.conf of a pod in namespace `namespace`, as kubelet writes it
/// for `dnsPolicy: ClusterFirst`.
pub fn resolv_conf(namespace: &str) -> String {
    format!(
        "search {namespace}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {CLUSTER_DNS}\noptions ndots:5\n"
    )
}

impl Kubelet {
    /// A kubelet for node `node` (1-based index `index`) of the lab.
    pub fn new(
        layout: Layout,
        index: u8,
        workload: PathBuf,
    ) -> Result<Kubelet, weft_cluster::store::StoreError> {
        let node = Layout::node_name(index);
        let store = Store::open(layout.store_dir())?;
        let runtime = Runtime {
            bin_dir: layout.bin_dir(),
            conf_dir: layout.cni_conf_dir(&node),
            node: NetNs::from_path(
                Path::new(weft_linux::netns::NETNS_RUN_DIR).join(layout.node_ns(index)),
            ),
        };
        Ok(Kubelet {
            node_ip: IpAddr::V4(Layout::node_ip(index)),
            scheduler: index == 1,
            layout,
            node,
            store,
            runtime,
            workload,
            running: BTreeMap::new(),
            pending: BTreeMap::new(),
            backoff: BTreeMap::new(),
        })
    }

    /// Runs until the process is stopped.
    pub fn run(mut self) -> Result<(), weft_cluster::store::StoreError> {
        for state in PodState::all(&self.layout)
            .iter()
            .filter(|state| state.node == self.node)
        {
            tracing::info!(pod = %state.name, "tearing down what a previous kubelet left");
            teardown(&self.layout, Some(&self.runtime), state);
        }
        let cluster = Cluster::new();
        let _watcher = self.store.watch(&cluster, WATCH_INTERVAL)?;
        let mut changes = cluster.subscribe();
        loop {
            let pods: Vec<Pod> = cluster.read().pods().cloned().collect();
            let nodes: Vec<String> = cluster
                .read()
                .nodes()
                .filter_map(|node| node.metadata.name.clone())
                .collect();
            if self.scheduler {
                self.schedule(&pods, &nodes);
            }
            self.report_ready(&cluster);
            self.sync_pods(&pods);
            self.probe();
            self.flush();
            let waiting = self.running.values().any(|running| !running.marked_ready);
            changes.wait_timeout(Duration::from_millis(if waiting { 100 } else { 500 }));
        }
    }

    /// Sets the Node's `Ready` condition as kubelet does: `True` once the
    /// node's CNI config is there (the agent wrote it), `False` with
    /// `NetworkPluginNotReady` before. Written only when it changes.
    fn report_ready(&self, cluster: &Cluster) {
        let conflist = self.runtime.conf_dir.join(crate::cni::CONFLIST);
        let ready = conflist.exists();
        let (status, reason, message) = if ready {
            (
                "True",
                "KubeletReady",
                "kubelet is posting ready status".to_owned(),
            )
        } else {
            (
                "False",
                "NetworkPluginNotReady",
                format!(
                    "network plugin not ready: no CNI config {}",
                    conflist.display()
                ),
            )
        };
        let current = {
            let index = cluster.read();
            // A Node deleted from the store gets no status written.
            let Some(node) = index.node(&self.node) else {
                return;
            };
            let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions
                .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|ready| ready.status.clone())
        };
        if current.as_deref() == Some(status) {
            return;
        }
        let key = ObjectKey::new(Kind::Node, "", &self.node);
        let result = self.store.modify(&key, |object| {
            let Object::Node(node) = object else { return };
            let now = Time(jiff::Timestamp::now());
            let conditions = node
                .status
                .get_or_insert_with(Default::default)
                .conditions
                .get_or_insert_with(Vec::new);
            conditions.retain(|c| c.type_ != "Ready");
            conditions.push(NodeCondition {
                type_: "Ready".to_owned(),
                status: status.to_owned(),
                reason: Some(reason.to_owned()),
                message: Some(message),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(now),
            });
        });
        match result {
            Ok(_) => tracing::info!(node = %self.node, ready, "node status"),
            Err(err) => {
                tracing::warn!(node = %self.node, "writing the node's Ready condition: {err}")
            }
        }
    }

    /// Binds each Pod without a node to the node with the fewest Pods.
    fn schedule(&self, pods: &[Pod], nodes: &[String]) {
        if nodes.is_empty() {
            return;
        }
        let mut load: BTreeMap<&str, usize> = nodes.iter().map(|node| (node.as_str(), 0)).collect();
        for node in pods
            .iter()
            .filter_map(|pod| pod.spec.as_ref()?.node_name.as_deref())
        {
            if let Some(count) = load.get_mut(node) {
                *count += 1;
            }
        }
        let mut bindings = Vec::new();
        for pod in pods {
            let bound = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.node_name.as_deref())
                .is_some();
            if bound || pod_is_terminal(pod) {
                continue;
            }
            let Some((&target, _)) = load.iter().min_by_key(|(node, count)| (**count, **node))
            else {
                return;
            };
            let target = target.to_owned();
            if let Some(count) = load.get_mut(target.as_str()) {
                *count += 1;
            }
            let key = ObjectKey::new(
                Kind::Pod,
                pod.metadata.namespace.as_deref().unwrap_or("default"),
                pod.metadata.name.as_deref().unwrap_or_default(),
            );
            let uid = pod.metadata.uid.clone();
            bindings.push((key, move |object: &mut Object| {
                // Bound only if still the same, unbound Pod.
                if let Object::Pod(pod) = object {
                    if pod.metadata.uid == uid {
                        let spec = pod.spec.get_or_insert_with(Default::default);
                        spec.node_name.get_or_insert(target);
                    }
                }
            }));
        }
        if bindings.is_empty() {
            return;
        }
        // One commit for every binding of the pass.
        match self.store.modify_many(bindings) {
            Ok(changes) => {
                for change in changes.iter().filter(|c| c.action == Action::Configured) {
                    tracing::info!(pod = %change.key, "scheduled");
                }
            }
            Err(err) => tracing::warn!("scheduling: {err}"),
        }
    }

    fn sync_pods(&mut self, pods: &[Pod]) {
        let mine: BTreeMap<String, &Pod> = pods
            .iter()
            .filter(|pod| {
                pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref())
                    == Some(self.node.as_str())
                    && !pod_is_terminal(pod)
                    && pod.metadata.deletion_timestamp.is_none()
            })
            .filter_map(|pod| Some((pod.metadata.uid.clone()?, pod)))
            .collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|uid| !mine.contains_key(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(mut running) = self.running.remove(&uid) {
                tracing::info!(pod = %running.key, "stopping");
                teardown(&self.layout, Some(&self.runtime), &running.state);
                if let Some(child) = running.child.as_mut() {
                    let _ = child.wait();
                }
            }
        }
        self.backoff.retain(|uid, _| mine.contains_key(uid));
        for (uid, pod) in mine {
            let waiting = self
                .backoff
                .get(&uid)
                .is_some_and(|(_, next)| std::time::Instant::now() < *next);
            if !self.running.contains_key(&uid) && !waiting {
                match self.start(&uid, pod) {
                    Ok(running) => {
                        self.running.insert(uid, running);
                    }
                    Err(err) => tracing::warn!(pod = ?pod.metadata.name, "starting: {err}"),
                }
            }
        }
    }

    fn start(&mut self, uid: &str, pod: &Pod) -> Result<Running, String> {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let key = ObjectKey::new(Kind::Pod, &namespace, &name);
        let netns = self.layout.pod_ns(&namespace, &name);
        let ns = NetNs::ensure(&netns).map_err(|err| err.to_string())?;
        let PodPorts {
            tcp,
            udp,
            host: host_ports,
        } = pod_ports(pod);
        let attachment = Attachment {
            container_id: uid.to_owned(),
            netns: ns.path().to_owned(),
            pod: (namespace.clone(), name.clone()),
            port_mappings: host_ports,
        };
        let mut state = PodState {
            node: self.node.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            container_id: uid.to_owned(),
            netns: netns.clone(),
            result: serde_json::Value::Null,
            ip: None,
            pid: None,
            pid_start: None,
        };
        // Saved before anything else so a crash mid-way is undone next time.
        state.save(&self.layout).map_err(|err| err.to_string())?;
        let (result, ip) = match self.runtime.add(&attachment) {
            Ok(added) => added,
            Err(err) => {
                teardown(&self.layout, Some(&self.runtime), &state);
                return Err(err.to_string());
            }
        };
        state.result = result;
        state.ip = Some(ip);
        let etc = self.layout.etc_netns(&netns);
        std::fs::create_dir_all(&etc).map_err(|err| err.to_string())?;
        std::fs::write(etc.join("resolv.conf"), resolv_conf(&namespace))
            .map_err(|err| err.to_string())?;

        let mut command = Command::new(&self.workload);
        let runs = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(RUN_ANNOTATION))
            .map(String::as_str);
        if runs == Some("dns") {
            // The cluster DNS pod: weft dns on the lab's store, port 53.
            command.args(["dns", "--listen", "0.0.0.0:53", "--store"]);
            command.arg(self.layout.store_dir());
            command
                .arg("--config")
                .arg(self.layout.dir.join("dns").join("dns.toml"));
        } else if runs == Some("ingress") {
            // The ingress controller pod: weft ingress on the lab's store,
            // reached through its NodePort Service on every node; Ingress
            // status names this node's address.
            command.args([
                "ingress",
                "--http-listen",
                "0.0.0.0:80",
                "--https-listen",
                "0.0.0.0:443",
                "--ops-listen",
                "127.0.0.1:10254",
                "--https-redirect-port",
                &INGRESS_HTTPS_NODE_PORT.to_string(),
                "--publish-address",
                &self.node_ip.to_string(),
                "--store",
            ]);
            command.arg(self.layout.store_dir());
        } else {
            command.args(["serve", "--hostname", &name]);
            for port in &tcp {
                command.args(["--http", &port.to_string()]);
            }
            for port in &udp {
                command.args(["--udp-echo", &port.to_string()]);
            }
        }
        command
            .env("POD_NAME", &name)
            .env("POD_NAMESPACE", &namespace);
        let log = self
            .layout
            .pods_dir()
            .join(format!("{namespace}_{name}.log"));
        let pid_file = PodState::pid_file(&self.layout, uid);
        let (recorded, child) =
            process::spawn(&ns, &mut command, &log, &pid_file).map_err(|err| err.to_string())?;
        state.pid = Some(recorded.pid);
        state.pid_start = Some(recorded.start_time);
        state.save(&self.layout).map_err(|err| err.to_string())?;
        tracing::info!(pod = %key, %ip, "started");
        let images: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|spec| &spec.containers)
            .filter_map(|container| container.image.clone())
            .collect();
        self.pending.insert(
            key.clone(),
            Mark {
                uid: uid.to_owned(),
                ip,
                ready: false,
                workload: Some(workload_text(&images, runs)),
            },
        );
        let probe_port = if tcp.is_empty() && udp.is_empty() {
            Some(8080)
        } else {
            tcp.first().copied()
        };
        Ok(Running {
            key,
            state,
            child: Some(child),
            probe_port,
            marked_ready: false,
        })
    }

    /// Probes every running pod not yet Ready; restarts dead workloads.
    fn probe(&mut self) {
        let mut ready = Vec::new();
        for (uid, running) in &mut self.running {
            if let Some(child) = running.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    tracing::warn!(pod = %running.key, "workload exited ({status}); the pod will be restarted");
                    running.marked_ready = false;
                    ready.push((uid.clone(), None));
                    continue;
                }
            }
            if running.marked_ready {
                continue;
            }
            let Some(ip) = running.state.ip else {
                continue;
            };
            let accepts = match running.probe_port {
                None => true,
                Some(port) => {
                    let target = SocketAddr::new(ip, port);
                    let ns = NetNs::from_path(
                        Path::new(weft_linux::netns::NETNS_RUN_DIR).join(&running.state.netns),
                    );
                    ns.run(|| {
                        TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok()
                    })
                    .unwrap_or(false)
                }
            };
            if accepts {
                ready.push((uid.clone(), Some(ip)));
            }
        }
        for (uid, ip) in ready {
            match ip {
                Some(ip) => {
                    if let Some(running) = self.running.get_mut(&uid) {
                        running.marked_ready = true;
                        let mark = self.pending.entry(running.key.clone()).or_insert(Mark {
                            uid: uid.clone(),
                            ip,
                            ready: true,
                            workload: None,
                        });
                        mark.ready = true;
                        mark.ip = ip;
                    }
                }
                None => {
                    // Dead workload: tear down; a later sync starts it again
                    // after a growing delay.
                    let restarts = self.backoff.get(&uid).map_or(0, |(count, _)| *count);
                    let delay = Duration::from_secs((1u64 << restarts.min(5)).min(30));
                    self.backoff.insert(
                        uid.clone(),
                        (restarts + 1, std::time::Instant::now() + delay),
                    );
                    if let Some(mut running) = self.running.remove(&uid) {
                        teardown(&self.layout, Some(&self.runtime), &running.state);
                        if let Some(child) = running.child.as_mut() {
                            let _ = child.wait();
                        }
                    }
                }
            }
        }
    }

    /// Records the statuses observed this pass (each pod's IP and
    /// readiness, and once what runs for it) in one store commit. On a
    /// failure they are kept and tried again after the next pass.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let node_ip = self.node_ip.to_string();
        let edits: Vec<_> = self
            .pending
            .iter()
            .map(|(key, mark)| {
                let (mark, node_ip) = (mark.clone(), node_ip.clone());
                (key.clone(), move |object: &mut Object| {
                    if let Object::Pod(pod) = object {
                        if pod.metadata.uid.as_deref() == Some(mark.uid.as_str()) {
                            record_status(pod, &mark, node_ip);
                        }
                    }
                })
            })
            .collect();
        match self.store.modify_many(edits) {
            Ok(_) => self.pending.clear(),
            Err(err) => tracing::warn!(
                pods = self.pending.len(),
                "recording pod statuses (retried next pass): {err}"
            ),
        }
    }
}

/// Writes what the kubelet observed into a Pod's status.
fn record_status(pod: &mut Pod, mark: &Mark, node_ip: String) {
    if let Some(workload) = &mark.workload {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                weft_cluster::model::WORKLOAD_ANNOTATION.to_owned(),
                workload.clone(),
            );
    }
    let ip = mark.ip.to_string();
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.phase = Some("Running".to_owned());
    status.pod_ip = Some(ip.clone());
    status.pod_ips = Some(vec![PodIP { ip }]);
    status.host_ip = Some(node_ip);
    let value = if mark.ready { "True" } else { "False" };
    status.conditions = Some(
        ["Ready", "ContainersReady"]
            .into_iter()
            .map(|kind| PodCondition {
                type_: kind.to_owned(),
                status: value.to_owned(),
                ..PodCondition::default()
            })
            .collect(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_searches_the_pod_namespace_first_with_ndots_5() {
        assert_eq!(
            resolv_conf("shop"),
            "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }
}
