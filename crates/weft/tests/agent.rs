//! `weft agent` end to end on the embedded store: it builds the node's pod
//! network and CNI config, programs a LoadBalancer Service with a Local
//! policy, serves its health-check port and /metrics, and follows store
//! changes.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use weft_linux::{RouteSpec, VethSpec};
use weft_testhost::{TestNs, connect, ip, net, require_root};

const NODE: &str = "192.168.10.11";

fn manifests(ready: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata: {{name: node-1}}
spec: {{podCIDR: 10.244.1.0/24}}
status:
  addresses: [{{type: InternalIP, address: {NODE}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web-0, labels: {{app: web}}}}
spec:
  nodeName: node-1
  containers: [{{name: web, image: agnhost, ports: [{{containerPort: 8080, name: http}}]}}]
status:
  phase: Running
  podIP: 10.244.1.10
  podIPs: [{{ip: 10.244.1.10}}]
  conditions: [{{type: Ready, status: "{ready}"}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  selector: {{app: web}}
  externalTrafficPolicy: Local
  healthCheckNodePort: 32000
  ports: [{{name: http, port: 80, targetPort: http, nodePort: 30080}}]
"#
    )
}

fn weft(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .output()
        .unwrap()
}

fn apply(store: &Path, dir: &Path, text: &str) {
    let file = dir.join("app.yaml");
    std::fs::write(&file, text).unwrap();
    let output = weft(&[
        "lab",
        "apply",
        "--store",
        store.to_str().unwrap(),
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Polls `check` for up to `seconds`.
fn eventually(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn curl(from: &TestNs, url: &str) -> (String, String) {
    let output = from.exec(
        "curl",
        &["-s", "--max-time", "2", "-w", "\n%{http_code}", url],
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    (body.to_owned(), code.to_owned())
}

#[test]
fn agent_programs_the_node_from_the_store_and_follows_changes() {
    require_root!();
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let conf_dir = work.path().join("net.d");
    apply(&store, work.path(), &manifests("True"));

    let node = TestNs::new();
    let external = TestNs::new();
    connect(
        &node,
        "eth0",
        net(&format!("{NODE}/24")),
        &external,
        "eth0",
        net("192.168.10.100/24"),
    );
    node.netlink()
        .ensure_route(&RouteSpec::default_via(ip("192.168.10.100")))
        .unwrap();
    node.spawn(Command::new(env!("CARGO_BIN_EXE_weft")).args([
        "agent",
        "--store",
        store.to_str().unwrap(),
        "--node",
        "node-1",
        "--cni-conf-dir",
        conf_dir.to_str().unwrap(),
        "--resync-seconds",
        "60",
    ]));

    // The pod network: bridge with the gateway, and the CNI config.
    eventually(10, "cni0 and the CNI config", || {
        conf_dir.join("10-weft.conflist").exists() && node.netlink().link("cni0").unwrap().is_some()
    });
    let conflist: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(conf_dir.join("10-weft.conflist")).unwrap())
            .unwrap();
    assert_eq!(
        conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        "10.244.1.0/24"
    );
    let addresses = node.netlink().addresses(Some("cni0")).unwrap();
    assert!(
        addresses.iter().any(|a| a.net == net("10.244.1.1/24")),
        "{addresses:?}"
    );

    // The pod, wired the way the bridge plugin wires it.
    let pod = TestNs::new();
    let mut netlink = node.netlink();
    netlink
        .ensure_veth(&VethSpec {
            name: "veth-web".into(),
            peer_name: "eth0".into(),
            peer_namespace: Some(pod.ns().clone()),
            ..VethSpec::default()
        })
        .unwrap();
    netlink.set_master("veth-web", Some("cni0")).unwrap();
    netlink.set_up("veth-web").unwrap();
    let mut pod_netlink = pod.netlink();
    pod_netlink
        .ensure_address("eth0", net("10.244.1.10/24"))
        .unwrap();
    pod_netlink.set_up("eth0").unwrap();
    pod_netlink
        .ensure_route(&RouteSpec::default_via(ip("10.244.1.1")))
        .unwrap();
    pod.spawn(Command::new(env!("CARGO_BIN_EXE_weft")).args([
        "serve",
        "--http",
        "8080",
        "--hostname",
        "web-0",
    ]));

    // NodePort from outside, with the client's address kept (Local policy).
    eventually(10, "the NodePort", || {
        curl(&external, &format!("http://{NODE}:30080/hostname")).0 == "web-0"
    });
    assert_eq!(
        curl(&external, &format!("http://{NODE}:30080/clientip"))
            .0
            .split(':')
            .next(),
        Some("192.168.10.100")
    );
    // Health check port: 200 with one local endpoint.
    let (body, code) = curl(&external, &format!("http://{NODE}:32000/"));
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("\"localEndpoints\":1"), "{body}");
    // /metrics on the node's loopback.
    let (metrics, code) = curl(&node, "http://127.0.0.1:10249/metrics");
    assert_eq!(code, "200");
    assert!(metrics.contains("weft_agent_proxy_rules"), "{metrics}");
    assert!(metrics.contains("weft_agent_source_up 1"), "{metrics}");
    assert_eq!(curl(&node, "http://127.0.0.1:10249/healthz").1, "200");

    // The pod turns unready: the health check answers 503 within a second or two.
    apply(&store, work.path(), &manifests("False"));
    eventually(3, "the health check to flip to 503", || {
        curl(&external, &format!("http://{NODE}:32000/")).1 == "503"
    });

    // The Service goes: its NodePort goes with it.
    let output = weft(&[
        "lab",
        "delete",
        "--store",
        store.to_str().unwrap(),
        "-f",
        work.path().join("app.yaml").to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eventually(3, "the Service's rules to go", || {
        let listing = node.exec("nft", &["list", "map", "ip", "weft", "service-nodeports"]);
        !String::from_utf8_lossy(&listing.stdout).contains("30080")
    });
}
