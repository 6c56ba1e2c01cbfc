//! bridge's layer-2 options exec'ed as a runtime execs them, in throwaway
//! namespaces (one standing in for the node, one per container): `vlan`
//! separates containers on one bridge, `macspoofchk` drops frames whose
//! source MAC is not the container's. Needs root; prints "skipped: needs
//! root" otherwise. Nothing here touches the namespace the test runs in.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used)]

#[path = "support/cni_runner.rs"]
mod support;

use serde_json::{Value, json};
use support::{Call, Node, Reply, exec_in, root};
use weft_testhost::{TestNs, ip};

impl Node {
    fn bridge(&self, call: &Call, conf: &Value) -> Reply {
        exec_in(self.ns.ns(), &self.plugins.plugin("bridge"), call, conf)
    }
}

fn with_command(call: &Call, command: &str) -> Call {
    Call {
        command: command.to_owned(),
        ..call.clone()
    }
}

/// A network on bridge `cni-l2` in 10.96.10.0/24, its addresses taken
/// from `first`..=`last`.
fn l2_conf(node: &Node, name: &str, first: &str, last: &str, extra: Value) -> Value {
    let mut conf = json!({
        "cniVersion": "1.1.0", "name": name, "type": "bridge", "bridge": "cni-l2",
        "ipam": {
            "type": "host-local", "subnet": "10.96.10.0/24",
            "rangeStart": first, "rangeEnd": last, "gateway": "10.96.10.1",
            "dataDir": node.data.path()
        }
    });
    for (key, value) in extra.as_object().unwrap() {
        conf[key] = value.clone();
    }
    conf
}

#[test]
fn containers_on_one_vlan_reach_each_other_and_their_gateway_but_not_another_vlan() {
    if !root() {
        return;
    }
    let node = Node::new();
    let (a, b, c) = (TestNs::new(), TestNs::new(), TestNs::new());
    let vlan10 = l2_conf(
        &node,
        "vlan10",
        "10.96.10.10",
        "10.96.10.19",
        json!({"vlan": 10, "isGateway": true}),
    );
    let vlan20 = l2_conf(
        &node,
        "vlan20",
        "10.96.10.20",
        "10.96.10.29",
        json!({"vlan": 20}),
    );
    let add_a = node.call("ADD", &a, "a");
    let first = node.bridge(&add_a, &vlan10);
    if first.code != 0 && first.stderr.contains("CONFIG_BRIDGE_VLAN_FILTERING")
        || first.json["msg"]
            .as_str()
            .is_some_and(|msg| msg.contains("CONFIG_BRIDGE_VLAN_FILTERING"))
    {
        // The failed ADD must have left no veth and no allocation behind.
        assert_eq!(first.json["code"], 5, "{}", first.json);
        assert_eq!(node.allocations("vlan10").len(), 0);
        assert!(!node.links().iter().any(|l| l.starts_with("veth")));
        println!("skipped: kernel without bridge VLAN filtering");
        return;
    }
    let first = first.ok();
    node.bridge(&node.call("ADD", &b, "b"), &vlan10).ok();
    node.bridge(&node.call("ADD", &c, "c"), &vlan20).ok();
    assert_eq!(first["ips"][0]["address"], "10.96.10.10/24");
    assert_eq!(first["interfaces"][3]["name"], "cni-l2.10");

    let mut nl = node.ns.netlink();
    assert!(nl.vlan_filtering("cni-l2").unwrap());
    let port = first["interfaces"][1]["name"].as_str().unwrap();
    assert!(
        nl.bridge_vlans(port)
            .unwrap()
            .iter()
            .any(|v| v.vid == 10 && v.pvid && v.untagged),
        "{port} is not an access port of VLAN 10"
    );
    assert!(
        nl.addresses(Some("cni-l2.10"))
            .unwrap()
            .iter()
            .any(|a| a.net.to_string() == "10.96.10.1/24")
    );

    assert!(
        a.ping(ip("10.96.10.1")),
        "a cannot reach its VLAN's gateway"
    );
    assert!(a.ping(ip("10.96.10.11")), "a cannot reach b on VLAN 10");
    assert!(
        !c.ping(ip("10.96.10.10")),
        "c on VLAN 20 reaches a on VLAN 10"
    );
    assert!(!c.ping(ip("10.96.10.1")), "c reaches VLAN 10's gateway");

    let mut check = with_command(&add_a, "CHECK");
    check.args = "IgnoreUnknown=1".into();
    let mut checked = vlan10.clone();
    checked["prevResult"] = first.clone();
    node.bridge(&check, &checked).ok();

    for (container, id, conf) in [(&a, "a", &vlan10), (&b, "b", &vlan10), (&c, "c", &vlan20)] {
        node.bridge(&node.call("DEL", container, id), conf).ok();
    }
    assert_eq!(
        node.allocations("vlan10").len() + node.allocations("vlan20").len(),
        0
    );
}

/// The spoof-check rules in the node's `bridge weft-cni` table, one line each.
fn spoof_rules(node: &Node) -> Vec<String> {
    let out = node
        .ns
        .exec("nft", &["list", "table", "bridge", "weft-cni"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains("ether saddr"))
        .map(|line| line.trim().to_owned())
        .collect()
}

#[test]
fn macspoofchk_cuts_off_a_container_that_changes_its_mac_and_del_and_gc_remove_the_rules() {
    if !root() {
        return;
    }
    let node = Node::new();
    let (a, b) = (TestNs::new(), TestNs::new());
    let conf = l2_conf(
        &node,
        "spoof",
        "10.96.10.10",
        "10.96.10.19",
        json!({"isGateway": true, "macspoofchk": true, "cniVersion": "1.1.0"}),
    );
    let add_a = node.call("ADD", &a, "a");
    let first = node.bridge(&add_a, &conf).ok();
    node.bridge(&node.call("ADD", &b, "b"), &conf).ok();
    let veth = first["interfaces"][1]["name"].as_str().unwrap();
    let mac = first["interfaces"][2]["mac"].as_str().unwrap();
    let rules = spoof_rules(&node);
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(
        rules[0].starts_with(&format!("iifname \"{veth}\" ether saddr != {mac} drop")),
        "{rules:?}"
    );

    let mut check = with_command(&add_a, "CHECK");
    check.args = "IgnoreUnknown=1".into();
    let mut checked = conf.clone();
    checked["prevResult"] = first.clone();
    node.bridge(&check, &checked).ok();

    assert!(a.ping(ip("10.96.10.1")), "a cannot reach its gateway");
    a.netlink()
        .set_mac("eth0", [0x02, 0x00, 0x5e, 0x00, 0x53, 0x01])
        .unwrap();
    assert!(
        !a.ping(ip("10.96.10.1")),
        "a reaches the gateway with a spoofed MAC"
    );
    assert!(!a.ping(ip("10.96.10.11")), "a reaches b with a spoofed MAC");
    assert!(b.ping(ip("10.96.10.1")), "b, untouched, lost its gateway");

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "b", "ifname": "eth0"}]);
    let gc_call = Call::new("GC", "", &node.plugins.path().display().to_string());
    node.bridge(&gc_call, &gc).ok();
    assert_eq!(spoof_rules(&node).len(), 1, "GC kept a's rule");
    node.bridge(&node.call("DEL", &b, "b"), &conf).ok();
    node.bridge(&node.call("DEL", &b, "b"), &conf).ok();
    assert!(spoof_rules(&node).is_empty(), "DEL kept b's rule");
    node.bridge(&node.call("DEL", &a, "a"), &conf).ok();
    assert_eq!(node.allocations("spoof").len(), 0);
}
