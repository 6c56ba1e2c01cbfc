//! portmap exec'ed as a runtime execs it, chained after weft's bridge, in
//! throwaway namespaces: a node, a host outside it, a container running a
//! TCP server. The host port reaches the server from outside, from the
//! node's localhost and from the container itself (hairpin); DEL and GC take
//! the mapping away. Needs root; prints "skipped: needs root" otherwise.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used)]

#[path = "support/cni_runner.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{Call, PluginDir, exec_in};
use weft_testhost::{TestNs, net};

/// What a TCP client in `ns` reads from `target` (empty when it cannot connect).
fn fetch(ns: &TestNs, target: &str) -> String {
    let out = ns.exec(
        "socat",
        &[
            "-T2",
            "-u",
            &format!("TCP:{target},connect-timeout=2"),
            "STDOUT",
        ],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn portmap_rules(node: &TestNs) -> usize {
    let mut nft = weft_nft::Nft::open_in(node.ns()).unwrap();
    let table = weft_nft::TableRef::new(weft_nft::Family::Ip, "weft-portmap");
    if !nft.table_exists(&table).unwrap() {
        return 0;
    }
    nft.rules(&table, None).unwrap().len()
}

#[test]
fn host_port_reaches_the_container_from_outside_localhost_and_itself_until_del() {
    if !weft_testhost::is_root() {
        println!("skipped: needs root");
        return;
    }
    let node = TestNs::new();
    let outside = TestNs::new();
    weft_testhost::connect(
        &node,
        "uplink",
        net("172.31.2.1/24"),
        &outside,
        "eth0",
        net("172.31.2.2/24"),
    );
    let container = TestNs::new();
    let plugins = PluginDir::new();
    let data = tempfile::tempdir().unwrap();
    let path = plugins.path().display().to_string();
    let call = |command: &str| {
        Call::new(command, "pm1", &path).netns(&container.ns().path().display().to_string())
    };

    let bridge_conf = json!({
        "cniVersion": "1.1.0", "name": "podnet", "type": "bridge",
        "bridge": "cni-test0", "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
        "ipam": {"type": "host-local", "subnet": "10.89.0.0/24", "dataDir": data.path()}
    });
    let bridge_result = exec_in(
        node.ns(),
        &plugins.plugin("bridge"),
        &call("ADD"),
        &bridge_conf,
    )
    .ok();
    let conf = json!({
        "cniVersion": "1.1.0", "name": "podnet", "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}
        ]},
        "prevResult": bridge_result.clone()
    });
    let result = exec_in(node.ns(), &plugins.plugin("portmap"), &call("ADD"), &conf).ok();
    assert_eq!(
        result, bridge_result,
        "portmap must pass prevResult through"
    );

    container.spawn(
        Command::new("socat").args(["TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo hello-from-pod"]),
    );
    let ready = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        fetch(&container, "127.0.0.1:80") == "hello-from-pod"
    });
    assert!(ready, "test server did not start");

    assert_eq!(
        fetch(&outside, "172.31.2.1:8080"),
        "hello-from-pod",
        "from another host"
    );
    assert_eq!(
        fetch(&node, "127.0.0.1:8080"),
        "hello-from-pod",
        "from the node's localhost"
    );
    assert_eq!(
        fetch(&node, "172.31.2.1:8080"),
        "hello-from-pod",
        "from the node itself"
    );
    assert_eq!(
        fetch(&container, "172.31.2.1:8080"),
        "hello-from-pod",
        "hairpin from the container"
    );

    exec_in(node.ns(), &plugins.plugin("portmap"), &call("CHECK"), &conf).ok();

    exec_in(node.ns(), &plugins.plugin("portmap"), &call("DEL"), &conf).ok();
    exec_in(node.ns(), &plugins.plugin("portmap"), &call("DEL"), &conf).ok();
    assert_eq!(portmap_rules(&node), 0);
    assert_eq!(
        fetch(&outside, "172.31.2.1:8080"),
        "",
        "mapping still works after DEL"
    );
    let reply = exec_in(node.ns(), &plugins.plugin("portmap"), &call("CHECK"), &conf);
    assert_eq!(reply.code, 1, "CHECK passed without rules");

    exec_in(node.ns(), &plugins.plugin("portmap"), &call("ADD"), &conf).ok();
    assert!(portmap_rules(&node) > 0);
    let mut gc = conf.clone();
    gc.as_object_mut().unwrap().remove("prevResult");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "pm1", "ifname": "eth0"}]);
    exec_in(
        node.ns(),
        &plugins.plugin("portmap"),
        &Call::new("GC", "", &path),
        &gc,
    )
    .ok();
    assert!(
        portmap_rules(&node) > 0,
        "GC removed a valid attachment's rules"
    );
    gc["cni.dev/valid-attachments"] = json!([]);
    exec_in(
        node.ns(),
        &plugins.plugin("portmap"),
        &Call::new("GC", "", &path),
        &gc,
    )
    .ok();
    assert_eq!(portmap_rules(&node), 0);
}

#[test]
fn portmap_without_prev_result_is_error_7_and_without_mappings_passes_the_result_through() {
    if !weft_testhost::is_root() {
        println!("skipped: needs root");
        return;
    }
    let node = TestNs::new();
    let plugins = PluginDir::new();
    let path = plugins.path().display().to_string();
    let call = Call::new("ADD", "pm2", &path);
    let conf = json!({"cniVersion": "1.1.0", "name": "podnet", "type": "portmap",
                      "runtimeConfig": {"portMappings": [{"hostPort": 1, "containerPort": 1}]}});
    let reply = exec_in(node.ns(), &plugins.plugin("portmap"), &call, &conf);
    assert_eq!((reply.code, reply.json["code"].clone()), (1, json!(7)));
    let prev = json!({"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.5/24"}], "dns": {}});
    let passthrough =
        json!({"cniVersion": "1.1.0", "name": "podnet", "type": "portmap", "prevResult": prev});
    let result = exec_in(node.ns(), &plugins.plugin("portmap"), &call, &passthrough).ok();
    assert_eq!(result, prev);
    assert_eq!(portmap_rules(&node), 0);
}

/// UDP conntrack entries in `node` to port `port`.
fn udp_entries_to(node: &TestNs, port: u16) -> usize {
    let mut conntrack = weft_nft::Conntrack::open_in(node.ns()).unwrap();
    conntrack
        .entries(weft_nft::Family::Ip)
        .unwrap()
        .iter()
        .filter(|e| e.original.proto == 17 && e.original.dst_port == port)
        .count()
}

#[test]
fn stale_udp_conntrack_entries_to_a_mapped_host_port_are_flushed_on_add() {
    if !weft_testhost::is_root() {
        println!("skipped: needs root");
        return;
    }
    let node = TestNs::new();
    let outside = TestNs::new();
    weft_testhost::connect(
        &node,
        "uplink",
        net("172.31.3.1/24"),
        &outside,
        "eth0",
        net("172.31.3.2/24"),
    );
    let plugins = PluginDir::new();
    let path = plugins.path().display().to_string();
    let call = |command: &str| Call::new(command, "pm3", &path);
    let conf = json!({
        "cniVersion": "1.1.0", "name": "podnet", "type": "portmap",
        "runtimeConfig": {"portMappings": [{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]},
        "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.88.0.2/24"}], "dns": {}}
    });
    // Connection tracking on in the node, as on any node running a service proxy.
    let tracking = node.sh("nft add table ip weft-t-ct && \
         nft add chain ip weft-t-ct input '{ type filter hook input priority 0; }' && \
         nft add rule ip weft-t-ct input ct state new counter");
    assert!(tracking.status.success(), "{tracking:?}");
    // A client keeps sending to the port while it is not mapped...
    outside.sh("echo ping | socat -u - UDP:172.31.3.1:5353");
    assert!(
        udp_entries_to(&node, 5353) > 0,
        "test setup: no conntrack entry created"
    );
    // ...and must not stay stuck on that entry once the port is mapped.
    exec_in(node.ns(), &plugins.plugin("portmap"), &call("ADD"), &conf).ok();
    assert_eq!(udp_entries_to(&node, 5353), 0);
}
