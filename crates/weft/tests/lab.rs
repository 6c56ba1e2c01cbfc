//! `weft lab` end to end, in each pod network mode: a 3-node lab comes up,
//! `lab check` passes every row, a second `lab up` changes nothing, a
//! deleted pod loses its namespace, a deleted node disappears from its
//! peers' routes (and FDB in vxlan mode), and `lab down` leaves nothing of
//! the lab behind while another lab's namespace stays untouched.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use weft_linux::{NetNs, Netlink};
use weft_testhost::require_root;

// `0-client` sorts first and backs no Service: `lab check` must still find
// a pod behind `web` for the hairpin row.
const APP: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: 0-client, labels: {app: client}}
spec: {containers: [{name: client, image: agnhost, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: web}}
spec: {containers: [{name: web, image: agnhost, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: web}}
spec: {containers: [{name: web, image: agnhost, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, labels: {app: web}}
spec: {containers: [{name: web, image: agnhost, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: d, labels: {app: web}}
spec: {containers: [{name: web, image: agnhost, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, nodePort: 30080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: weft
  tls: [{hosts: [web.lab.example], secretName: lab-tls}]
  rules:
  - host: web.lab.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}]}
"#;

struct Lab<'a> {
    name: String,
    root: &'a Path,
}

impl Lab<'_> {
    fn weft(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
        command.args(args);
        if matches!(args, ["lab", "apply" | "delete" | "get", ..]) {
            command.args([
                "--store",
                self.root.join(&self.name).join("store").to_str().unwrap(),
            ]);
        } else {
            command.args([
                "--name",
                &self.name,
                "--state-root",
                self.root.to_str().unwrap(),
            ]);
        }
        command.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.weft(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "weft {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    fn namespaces(&self) -> Vec<String> {
        let prefix = format!("weft-{}-", self.name);
        NetNs::list()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        // Also on a failing test: nothing of the lab may stay.
        let _ = self.weft(&["lab", "down"]);
    }
}

fn eventually(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lab_scenario(mode: &str) {
    let root = tempfile::tempdir().unwrap();
    let tag = if mode == "vxlan" { "v" } else { "h" };
    let lab = Lab {
        name: format!("e2e{tag}{}", std::process::id() % 100_000),
        root: root.path(),
    };
    // Another lab's namespace, which this lab must leave alone.
    let bystander = Bystander(format!(
        "weft-other{tag}{}-node-1",
        std::process::id() % 100_000
    ));
    NetNs::create(&bystander.0).unwrap();

    let app = root.path().join("app.yaml");
    std::fs::write(&app, APP).unwrap();
    let up = lab.ok(&[
        "lab",
        "up",
        "--nodes",
        "3",
        "--mode",
        mode,
        "-f",
        app.to_str().unwrap(),
    ]);
    assert!(up.contains("7/7 pods ready"), "{up}"); // 5 + the cluster DNS and ingress pods
    // `lab up` returned only once every agent had applied the store
    // generation that made the pods Ready, and says so.
    assert!(up.contains("3/3 agents applied it"), "{up}");
    let generation: u64 = up
        .lines()
        .find_map(|line| line.split("to apply store generation ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no generation in:\n{up}"));
    for node in 1..=3 {
        let synced = Command::new("ip")
            .args(["netns", "exec", &format!("weft-{}-node-{node}", lab.name)])
            .args(["curl", "-sf", "127.0.0.1:10249/synced"])
            .output()
            .unwrap();
        let synced: u64 = String::from_utf8_lossy(&synced.stdout)
            .trim()
            .parse()
            .unwrap();
        assert!(
            synced >= generation,
            "node-{node} at {synced} < {generation}"
        );
    }

    let check = lab.ok(&["lab", "check"]);
    assert!(
        !check.contains("FAIL") && !check.contains("skipped"),
        "{check}"
    );
    for path in [
        "pod -> pod, same node",
        "pod -> pod, across nodes",
        "pod -> ClusterIP",
        "pod -> Service by DNS name",
        "pod -> own Service (hairpin)",
        "external -> NodePort",
        "external -> Ingress (HTTP)",
        "external -> Ingress (HTTPS)",
        "pod -> outside (masqueraded)",
    ] {
        assert!(
            check
                .lines()
                .any(|line| line.starts_with(path) && line.contains("ok:")),
            "{path}:\n{check}"
        );
    }
    assert_eq!(check.matches("external -> NodePort").count(), 3, "{check}");
    assert_eq!(
        check.matches("external -> Ingress (HTTP)").count(),
        3,
        "{check}"
    );
    assert_eq!(
        check.matches("external -> Ingress (HTTPS)").count(),
        3,
        "{check}"
    );
    assert_eq!(check.matches("certificate verified").count(), 3, "{check}");

    let pods = lab.ok(&["lab", "get", "pods", "-o", "wide"]);
    assert!(
        pods.contains("weft serve (image agnhost not run)"),
        "{pods}"
    );
    // Each kubelet marked its Node Ready once the agent wrote the CNI config.
    let nodes = lab.ok(&["lab", "get", "nodes"]);
    let ready = nodes
        .lines()
        .filter(|line| line.split_whitespace().nth(1) == Some("Ready"))
        .count();
    assert_eq!(ready, 3, "{nodes}");
    let ingress = lab.ok(&["lab", "get", "pods", "-n", "ingress-weft", "-o", "wide"]);
    assert!(ingress.contains("weft ingress"), "{ingress}");

    let svg = lab.ok(&["lab", "diagram"]);
    assert!(svg.starts_with("<svg"), "{svg}");
    for text in [
        "node-1",
        "node-3",
        "192.168.10.13",
        "default/d",
        "NodePort 30080",
        mode,
    ] {
        assert!(svg.contains(text), "{text} missing from the diagram");
    }

    // Again, without --nodes and --mode: the lab's own are used.
    let again = lab.ok(&["lab", "up", "-f", app.to_str().unwrap()]);
    assert!(
        !again.contains("started") && !again.contains("Created") && !again.contains("Configured"),
        "second up changed something:\n{again}"
    );
    assert!(
        again.contains(&format!("3 node(s), {mode} mode")),
        "{again}"
    );
    let pods = lab.ok(&["lab", "get", "pods", "-o", "wide"]);
    assert!(
        pods.contains("weft serve (image agnhost not run)"),
        "second up lost what the kubelet wrote:\n{pods}"
    );
    // Without -f on a lab that exists: a repair, not the sample app.
    let bare = lab.ok(&["lab", "up"]);
    assert!(
        !bare.contains("Created") && !bare.contains("Configured"),
        "a bare up on an existing lab changed something:\n{bare}"
    );
    assert!(!lab.ok(&["lab", "get", "pods"]).contains("web-0"));

    // A pod goes: its namespace goes.
    let pod_ns = format!("weft-{}-pod-default-a", lab.name);
    assert!(lab.namespaces().contains(&pod_ns));
    let pod = root.path().join("pod.yaml");
    std::fs::write(&pod, "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n").unwrap();
    lab.ok(&["lab", "delete", "-f", pod.to_str().unwrap()]);
    eventually(10, "the deleted pod's namespace to go", || {
        !lab.namespaces().contains(&pod_ns)
    });
    let pods_dir = root.path().join(&lab.name).join("pods");
    let files: Vec<String> = std::fs::read_dir(&pods_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    for pid_file in files.iter().filter(|name| name.ends_with(".pid")) {
        let state = pid_file.replace(".pid", ".json");
        assert!(
            files.contains(&state),
            "{pid_file} left without its pod: {files:?}"
        );
    }

    // Logs: a node that is not there and a pod without its namespace are
    // errors that say so.
    let output = lab.weft(&["lab", "logs", "agent/node-9"]);
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && error.contains("no node"),
        "{error}"
    );
    let output = lab.weft(&["lab", "logs", "b"]);
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && error.contains("NAMESPACE/NAME"),
        "{error}"
    );
    assert!(lab.ok(&["lab", "logs", "default/b"]).contains("==> "));

    // A node goes: its peers forget its pod subnet.
    let node_3 = NetNs::open(&format!("weft-{}-node-3", lab.name)).unwrap();
    let subnet_3 = Netlink::in_namespace(&node_3)
        .unwrap()
        .addresses(Some("cni0"))
        .unwrap()
        .first()
        .map(|address| address.net.trunc())
        .unwrap();
    let node = root.path().join("node.yaml");
    std::fs::write(
        &node,
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-3}\n",
    )
    .unwrap();
    lab.ok(&["lab", "delete", "-f", node.to_str().unwrap()]);
    // `lab delete` waits for every agent to apply the deletion: the routes
    // are gone when it returns, not eventually.
    let node_1 = NetNs::open(&format!("weft-{}-node-1", lab.name)).unwrap();
    let mut netlink = Netlink::in_namespace(&node_1).unwrap();
    let routed = netlink
        .routes(None)
        .unwrap()
        .iter()
        .any(|route| route.dst == subnet_3);
    assert!(!routed, "node-1 still routes to the departed node-3");
    if mode == "vxlan" {
        let fdb = netlink
            .fdb_entries("weft.vxlan")
            .unwrap()
            .iter()
            .any(|entry| entry.dst == Some("192.168.10.13".parse().unwrap()));
        assert!(!fdb, "node-1 still has an FDB entry for node-3");
    }

    // A process the lab did not record, inside one of its namespaces.
    let mut stray = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("weft-{}-pod-default-b", lab.name),
            "sleep",
            "300",
        ])
        .spawn()
        .unwrap();

    let down = lab.ok(&["lab", "down"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while stray.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "lab down left a process running in its namespace"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(down.contains("deleted"), "{down}");
    assert!(
        lab.namespaces().is_empty(),
        "left behind: {:?}",
        lab.namespaces()
    );
    assert!(!root.path().join(&lab.name).exists());
    assert!(
        NetNs::list().unwrap().contains(&bystander.0),
        "another lab's namespace was removed"
    );
}

/// Another lab's namespace, removed when the test ends, pass or fail.
struct Bystander(String);

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = NetNs::delete_if_exists(&self.0);
    }
}

#[test]
fn lab_in_host_gw_mode_passes_every_check_and_cleans_up() {
    require_root!();
    lab_scenario("host-gw");
}

#[test]
fn lab_in_vxlan_mode_passes_every_check_and_cleans_up() {
    require_root!();
    lab_scenario("vxlan");
}

#[test]
fn an_invalid_manifest_fails_lab_apply_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let lab = Lab {
        name: "badinput".into(),
        root: root.path(),
    };
    let good = root.path().join("good.yaml");
    std::fs::write(
        &good,
        "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\nspec: {ports: [{port: 80}]}\n",
    )
    .unwrap();
    lab.ok(&["lab", "apply", "-f", good.to_str().unwrap()]);
    let bad = root.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata: {name: fine}\nspec: {ports: [{port: 81}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: broken}\nspec: {ports: [{port: 70000}]}\n",
    )
    .unwrap();
    let output = lab.weft(&["lab", "apply", "-f", bad.to_str().unwrap()]);
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        error.contains("bad.yaml") && error.contains("document 2") && error.contains("port"),
        "{error}"
    );
    let services = lab.ok(&["lab", "get", "services"]);
    assert!(
        services.contains("ok") && !services.contains("fine"),
        "{services}"
    );
}

#[test]
fn daemons_given_a_store_that_does_not_exist_say_so_and_create_nothing() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("typo").join("store");
    let store = missing.to_str().unwrap();
    let any = "127.0.0.1:0";
    for args in [
        &[
            "agent",
            "--node",
            "node-1",
            "--metrics-address",
            any,
            "--store",
            store,
        ][..],
        &[
            "dns",
            "--listen",
            any,
            "--ops-listen",
            any,
            "--store",
            store,
        ],
        &[
            "ingress",
            "--http-listen",
            any,
            "--https-listen",
            any,
            "--ops-listen",
            any,
            "--store",
            store,
        ],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(args)
            .output()
            .unwrap();
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "weft {args:?} succeeded");
        assert!(
            error.contains(&format!("no store at {store}")),
            "weft {args:?}: {error}"
        );
        assert!(
            std::fs::read_dir(root.path()).unwrap().next().is_none(),
            "weft {args:?} created something"
        );
    }
}

#[test]
fn commands_on_a_lab_that_does_not_exist_say_so_and_create_nothing() {
    let root = tempfile::tempdir().unwrap();
    let lab = Lab {
        name: "absent".into(),
        root: root.path(),
    };
    for args in [
        &["lab", "check"][..],
        &["lab", "status"],
        &["lab", "diagram"],
        &["lab", "logs", "agent"],
        &["lab", "get", "pods"],
        &["lab", "delete", "-f", "-"],
    ] {
        let output = lab.weft(args);
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "weft {args:?} succeeded");
        assert!(
            error.contains("no lab named absent") || error.contains("no store at"),
            "weft {args:?}: {error}"
        );
    }
    // A failed apply to a store not made yet leaves no directory either.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bad.path(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
    )
    .unwrap();
    let output = lab.weft(&["lab", "apply", "-f", bad.path().to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        std::fs::read_dir(root.path()).unwrap().next().is_none(),
        "something was created under the state root"
    );
}
