//! bridge and loopback exec'ed as a runtime execs them, in throwaway
//! namespaces: one stands in for the node (the plugin runs inside it), one
//! per container. Needs root; prints "skipped: needs root" otherwise.
//! Nothing here touches the namespace the test runs in.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used)]

#[path = "support/cni_runner.rs"]
mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::{Call, Node, REFERENCE_DIR, Reply, exec_in, root};
use weft_testhost::{TestNs, ip};

impl Node {
    /// A bridge config as a user writes it for the reference plugins.
    fn bridge_conf(&self, subnet: &str) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "podnet", "type": "bridge",
            "bridge": "cni-test0", "isGateway": true, "isDefaultGateway": true,
            "hairpinMode": true,
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": self.data.path()}
        })
    }

    fn weft(&self, plugin: &str, call: &Call, conf: &Value) -> Reply {
        exec_in(self.ns.ns(), &self.plugins.plugin(plugin), call, conf)
    }
}

fn netns_path(ns: &TestNs) -> String {
    ns.ns().path().display().to_string()
}

fn address_of(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().to_owned()
}

#[test]
fn loopback_add_brings_lo_up_check_sees_it_and_del_twice_succeeds() {
    if !root() {
        return;
    }
    let node = Node::new();
    let container = TestNs::new();
    container.netlink().set_down("lo").unwrap();
    let conf = json!({"cniVersion": "1.1.0", "name": "lo", "type": "loopback"});
    let call = node.call("ADD", &container, "c1").ifname("lo");
    let result = node.weft("loopback", &call, &conf).ok();
    assert!(container.netlink().require_link("lo").unwrap().up);
    assert_eq!(result["interfaces"][0]["name"], "lo");
    assert_eq!(result["ips"][0]["address"], "127.0.0.1/8");
    let check = Call {
        command: "CHECK".into(),
        ..call.clone()
    };
    node.weft("loopback", &check, &conf).ok();
    let del = Call {
        command: "DEL".into(),
        ..call.clone()
    };
    node.weft("loopback", &del, &conf).ok();
    node.weft("loopback", &del, &conf).ok();
    assert!(!container.netlink().require_link("lo").unwrap().up);
    let reply = node.weft("loopback", &check, &conf);
    assert_eq!(reply.code, 1, "CHECK must fail once lo is down");
    let gone = Call {
        netns: "/run/netns/weft-t-does-not-exist".into(),
        ..del
    };
    node.weft("loopback", &gone, &conf).ok();
}

#[test]
fn bridge_add_gives_containers_addresses_that_reach_the_gateway_and_each_other() {
    if !root() {
        return;
    }
    let node = Node::new();
    let (c1, c2) = (TestNs::new(), TestNs::new());
    let conf = node.bridge_conf("10.99.0.0/24");
    let first = node
        .weft("bridge", &node.call("ADD", &c1, "c1"), &conf)
        .ok();
    let second = node
        .weft("bridge", &node.call("ADD", &c2, "c2"), &conf)
        .ok();
    assert_eq!(address_of(&first), "10.99.0.2/24");
    assert_eq!(address_of(&second), "10.99.0.3/24");
    assert_eq!(first["cniVersion"], "1.0.0");
    assert_eq!(first["ips"][0]["interface"], 2);
    assert_eq!(first["ips"][0]["gateway"], "10.99.0.1");
    assert_eq!(first["interfaces"][0]["name"], "cni-test0");
    assert_eq!(first["interfaces"][2]["name"], "eth0");
    assert_eq!(first["interfaces"][2]["sandbox"], netns_path(&c1));
    assert_eq!(
        first["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.99.0.1"})
    );
    // The container's own view: address, default route, MAC as reported.
    let mut inside = c1.netlink();
    let eth0 = inside.require_link("eth0").unwrap();
    assert_eq!(
        weft_linux::netlink::format_mac(&eth0.mac.unwrap()),
        first["interfaces"][2]["mac"].as_str().unwrap()
    );
    assert!(
        inside
            .addresses(Some("eth0"))
            .unwrap()
            .iter()
            .any(|a| a.net.to_string() == "10.99.0.2/24")
    );
    // The node: gateway on the bridge, forwarding on, host veth on the bridge with hairpin.
    let mut nl = node.ns.netlink();
    assert!(
        nl.addresses(Some("cni-test0"))
            .unwrap()
            .iter()
            .any(|a| a.net.to_string() == "10.99.0.1/24")
    );
    assert_eq!(
        weft_linux::sysctl::read(node.ns.ns(), "net.ipv4.ip_forward").unwrap(),
        "1"
    );
    let host = nl
        .require_link(first["interfaces"][1]["name"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        host.master,
        Some(nl.require_link("cni-test0").unwrap().index)
    );
    assert_eq!(host.hairpin, Some(true));
    // Traffic: gateway and the other container.
    assert!(
        c1.ping(ip("10.99.0.1")),
        "container cannot reach its gateway"
    );
    assert!(
        c1.ping(ip("10.99.0.3")),
        "container cannot reach the second container"
    );
}

#[test]
fn check_passes_after_add_and_fails_once_the_container_interface_is_deleted() {
    if !root() {
        return;
    }
    let node = Node::new();
    let container = TestNs::new();
    let mut conf = node.bridge_conf("10.98.0.0/24");
    let result = node
        .weft("bridge", &node.call("ADD", &container, "c1"), &conf)
        .ok();
    conf["prevResult"] = result;
    node.weft("bridge", &node.call("CHECK", &container, "c1"), &conf)
        .ok();
    container.netlink().delete_link("eth0").unwrap();
    let reply = node.weft("bridge", &node.call("CHECK", &container, "c1"), &conf);
    assert_eq!(reply.code, 1);
    assert!(
        reply.json["msg"].as_str().unwrap().contains("eth0"),
        "{}",
        reply.json
    );
}

#[test]
fn del_twice_succeeds_and_leaves_no_veth_and_no_allocation() {
    if !root() {
        return;
    }
    let node = Node::new();
    let (c1, c2) = (TestNs::new(), TestNs::new());
    let conf = node.bridge_conf("10.97.0.0/24");
    let first = node
        .weft("bridge", &node.call("ADD", &c1, "c1"), &conf)
        .ok();
    node.weft("bridge", &node.call("ADD", &c2, "c2"), &conf)
        .ok();
    let host_veth = first["interfaces"][1]["name"].as_str().unwrap().to_owned();
    assert!(node.links().contains(&host_veth));
    node.weft("bridge", &node.call("DEL", &c1, "c1"), &conf)
        .ok();
    node.weft("bridge", &node.call("DEL", &c1, "c1"), &conf)
        .ok();
    assert!(
        !node.links().contains(&host_veth),
        "veth left behind: {:?}",
        node.links()
    );
    assert!(c1.netlink().link("eth0").unwrap().is_none());
    assert_eq!(node.allocations("podnet"), ["10.97.0.3"]);
    // DEL after the container's namespace is gone, and without CNI_NETNS.
    let c2_path = netns_path(&c2);
    drop(c2);
    let call = Call::new("DEL", "c2", &node.path()).netns(&c2_path);
    node.weft("bridge", &call, &conf).ok();
    node.weft(
        "bridge",
        &Call::new("DEL", "c2", &node.path()).netns(""),
        &conf,
    )
    .ok();
    assert!(node.allocations("podnet").is_empty());
}

#[test]
fn gc_with_an_empty_valid_list_removes_every_allocation() {
    if !root() {
        return;
    }
    let node = Node::new();
    let (c1, c2) = (TestNs::new(), TestNs::new());
    let mut conf = node.bridge_conf("10.96.128.0/24");
    conf["cniVersion"] = json!("1.1.0");
    node.weft("bridge", &node.call("ADD", &c1, "c1"), &conf)
        .ok();
    node.weft("bridge", &node.call("ADD", &c2, "c2"), &conf)
        .ok();
    assert_eq!(node.allocations("podnet").len(), 2);
    node.weft("bridge", &Call::new("STATUS", "", &node.path()), &conf)
        .ok();
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "c2", "ifname": "eth0"}]);
    node.weft("bridge", &Call::new("GC", "", &node.path()), &conf)
        .ok();
    assert_eq!(node.allocations("podnet"), ["10.96.128.3"]);
    conf["cni.dev/valid-attachments"] = json!([]);
    node.weft("bridge", &Call::new("GC", "", &node.path()), &conf)
        .ok();
    assert!(node.allocations("podnet").is_empty());
}

#[test]
fn bad_input_gets_the_spec_error_code_and_creates_nothing() {
    if !root() {
        return;
    }
    let node = Node::new();
    let container = TestNs::new();
    let before = node.links();
    let conf = node.bridge_conf("10.95.0.0/24");
    let code_of = |reply: Reply| (reply.code, reply.json["code"].as_u64().unwrap_or(0));

    let mut unknown_ipam = conf.clone();
    unknown_ipam["ipam"]["type"] = json!("no-such-ipam");
    assert_eq!(
        code_of(node.weft("bridge", &node.call("ADD", &container, "c1"), &unknown_ipam)),
        (1, 7)
    );

    let mut vlan_and_trunk = conf.clone();
    vlan_and_trunk["vlan"] = json!(10);
    vlan_and_trunk["vlanTrunk"] = json!([{"id": 20}]);
    assert_eq!(
        code_of(node.weft(
            "bridge",
            &node.call("ADD", &container, "c1"),
            &vlan_and_trunk
        )),
        (1, 7)
    );

    let no_netns = node.call("ADD", &container, "c1").netns("");
    assert_eq!(code_of(node.weft("bridge", &no_netns, &conf)), (1, 4));

    let missing = node
        .call("ADD", &container, "c1")
        .netns("/run/netns/weft-t-does-not-exist");
    assert_eq!(code_of(node.weft("bridge", &missing, &conf)), (1, 3));

    // Not a network namespace, or the node's own: refused before anything.
    let not_netns = tempfile::NamedTempFile::new().unwrap();
    let plain_file = node
        .call("ADD", &container, "c1")
        .netns(not_netns.path().to_str().unwrap());
    assert_eq!(code_of(node.weft("bridge", &plain_file, &conf)), (1, 4));
    let own = node
        .call("ADD", &container, "c1")
        .netns(&netns_path(&node.ns));
    assert_eq!(code_of(node.weft("bridge", &own, &conf)), (1, 4));

    let mut future = conf.clone();
    future["cniVersion"] = json!("2.0.0");
    assert_eq!(
        code_of(node.weft("bridge", &node.call("ADD", &container, "c1"), &future)),
        (1, 1)
    );

    // The IPAM plugin refuses its part: the bridge made for it goes too.
    let mut bad_subnet = conf.clone();
    bad_subnet["ipam"]["subnet"] = json!("10.95.0.0/33");
    assert_eq!(
        code_of(node.weft("bridge", &node.call("ADD", &container, "c1"), &bad_subnet)),
        (1, 7)
    );

    assert_eq!(node.links(), before, "a refused ADD changed the node");
    assert!(container.netlink().link("eth0").unwrap().is_none());
    assert!(node.allocations("podnet").is_empty());
}

#[test]
fn concurrent_adds_on_one_bridge_get_distinct_addresses_and_all_reach_the_gateway() {
    if !root() {
        return;
    }
    let node = Node::new();
    let containers: Vec<TestNs> = (0..16).map(|_| TestNs::new()).collect();
    let conf = node.bridge_conf("10.94.0.0/24");
    let children: Vec<_> = containers
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let call = node.call("ADD", c, &format!("c{n}"));
            node.ns
                .ns()
                .spawn(&mut call.command_for(&node.plugins.plugin("bridge")))
                .unwrap()
        })
        .collect();
    let mut addresses: Vec<String> = children
        .into_iter()
        .map(|child| address_of(&support::finish(child, &conf).ok()))
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 16);
    for container in &containers {
        assert!(container.ping(ip("10.94.0.1")));
    }
}

#[test]
fn reference_bridge_configs_work_unchanged_and_both_plugins_share_the_bridge_and_data_dir() {
    if !root() {
        return;
    }
    if !Path::new(REFERENCE_DIR).join("bridge").exists() {
        println!("skipped: reference plugins not installed in {REFERENCE_DIR}");
        return;
    }
    let node = Node::new();
    let (c1, c2) = (TestNs::new(), TestNs::new());
    let conf = node.bridge_conf("10.93.0.0/24");
    let reference_call = Call::new("ADD", "ref-c1", REFERENCE_DIR).netns(&netns_path(&c1));
    let reference = Path::new(REFERENCE_DIR).join("bridge");
    let first = exec_in(node.ns.ns(), &reference, &reference_call, &conf).ok();
    let second = node
        .weft("bridge", &node.call("ADD", &c2, "weft-c2"), &conf)
        .ok();
    assert_eq!(address_of(&first), "10.93.0.2/24");
    assert_eq!(address_of(&second), "10.93.0.3/24");
    assert!(
        c2.ping(ip("10.93.0.2")),
        "weft's container cannot reach the reference's"
    );
    // weft's DEL cleans up the reference plugin's attachment.
    node.weft("bridge", &node.call("DEL", &c1, "ref-c1"), &conf)
        .ok();
    assert!(c1.netlink().link("eth0").unwrap().is_none());
    assert_eq!(node.allocations("podnet"), ["10.93.0.3"]);
}

#[test]
fn adds_killed_at_varied_moments_then_deleted_leave_no_allocation_and_no_veth() {
    if !root() {
        return;
    }
    let node = Node::new();
    let conf = node.bridge_conf("10.92.0.0/24");
    let containers: Vec<TestNs> = (0..16).map(|_| TestNs::new()).collect();
    let before: Vec<String> = node.links();
    for (n, container) in containers.iter().enumerate() {
        let call = node.call("ADD", container, &format!("k{n}"));
        let mut child = node
            .ns
            .ns()
            .spawn(&mut call.command_for(&node.plugins.plugin("bridge")))
            .unwrap();
        if let Some(mut stdin) = child.stdin.take() {
            let _ = std::io::Write::write_all(&mut stdin, conf.to_string().as_bytes());
        }
        // Spread the kills over the whole ADD: before, during and after IPAM.
        std::thread::sleep(std::time::Duration::from_micros(1_500 * n as u64));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    // A delegated host-local may outlive its killed parent by a moment.
    std::thread::sleep(std::time::Duration::from_millis(300));
    for (n, container) in containers.iter().enumerate() {
        node.weft(
            "bridge",
            &node.call("DEL", container, &format!("k{n}")),
            &conf,
        )
        .ok();
    }
    assert!(
        node.allocations("podnet").is_empty(),
        "{:?}",
        node.allocations("podnet")
    );
    let after: Vec<String> = node
        .links()
        .into_iter()
        .filter(|name| name != "cni-test0")
        .collect();
    assert_eq!(after, before, "veths left on the node");
    for container in &containers {
        assert!(container.netlink().link("eth0").unwrap().is_none());
    }
}

#[test]
fn dual_stack_add_configures_ipv4_and_ipv6_with_default_routes_for_both() {
    if !root() {
        return;
    }
    let node = Node::new();
    let (c1, c2) = (TestNs::new(), TestNs::new());
    let conf = json!({
        "cniVersion": "1.1.0", "name": "podnet", "type": "bridge",
        "bridge": "cni-test0", "isDefaultGateway": true, "mtu": 1400,
        "ipam": {"type": "host-local", "dataDir": node.data.path(),
                 "ranges": [[{"subnet": "10.91.0.0/24"}], [{"subnet": "fd00:91::/64"}]]}
    });
    let result = node
        .weft("bridge", &node.call("ADD", &c1, "c1"), &conf)
        .ok();
    node.weft("bridge", &node.call("ADD", &c2, "c2"), &conf)
        .ok();
    assert_eq!(result["ips"][1]["address"], "fd00:91::2/64");
    assert_eq!(result["interfaces"][2]["mtu"], 1400);
    let routes: Vec<Value> = result["routes"].as_array().unwrap().clone();
    assert!(
        routes.contains(&json!({"dst": "0.0.0.0/0", "gw": "10.91.0.1"})),
        "{routes:?}"
    );
    assert!(
        routes.contains(&json!({"dst": "::/0", "gw": "fd00:91::1"})),
        "{routes:?}"
    );
    assert_eq!(c1.netlink().require_link("eth0").unwrap().mtu, 1400);
    assert!(c1.ping(ip("fd00:91::1")), "no IPv6 path to the gateway");
    assert!(
        c1.ping(ip("fd00:91::3")),
        "no IPv6 path to the second container"
    );
    assert!(c1.ping(ip("10.91.0.3")));
}

#[test]
fn gso_max_size_raises_both_veth_ends_and_the_bridge_for_big_tcp() {
    if !root() {
        return;
    }
    let node = Node::new();
    let container = TestNs::new();
    let conf = json!({
        "cniVersion": "1.1.0", "name": "podnet", "type": "bridge",
        "bridge": "cni-test0", "isDefaultGateway": true, "gsoMaxSize": 196_608,
        "ipam": {"type": "host-local", "dataDir": node.data.path(),
                 "ranges": [[{"subnet": "10.92.0.0/24"}]]}
    });
    let result = node
        .weft("bridge", &node.call("ADD", &container, "c1"), &conf)
        .ok();
    let host_veth = result["interfaces"][1]["name"].as_str().unwrap().to_owned();
    let mut on_node = node.ns.netlink();
    for name in ["cni-test0", host_veth.as_str()] {
        let link = on_node.require_link(name).unwrap();
        assert_eq!(link.gso_ipv4_max_size, Some(196_608), "{name}");
    }
    let inside = container.netlink().require_link("eth0").unwrap();
    assert_eq!(inside.gso_ipv4_max_size, Some(196_608));
    assert!(container.ping(ip("10.92.0.1")));
}

/// Comments of the masquerade rules in the node's `ip weft-cni` table.
fn masquerade_rules(node: &Node) -> Vec<String> {
    let mut nft = weft_nft::Nft::open_in(node.ns.ns()).unwrap();
    let table = weft_nft::TableRef::new(weft_nft::Family::Ip, "weft-cni");
    if !nft.table_exists(&table).unwrap() {
        return Vec::new();
    }
    nft.rules(&table, None)
        .unwrap()
        .into_iter()
        .filter_map(|rule| rule.comment)
        .collect()
}

#[test]
fn ip_masq_lets_pods_reach_beyond_the_node_and_del_and_gc_remove_the_rules() {
    if !root() {
        return;
    }
    let node = Node::new();
    let outside = TestNs::new();
    weft_testhost::connect(
        &node.ns,
        "uplink",
        weft_testhost::net("172.31.0.1/24"),
        &outside,
        "eth0",
        weft_testhost::net("172.31.0.2/24"),
    );
    let (c1, c2, c3) = (TestNs::new(), TestNs::new(), TestNs::new());
    let mut conf = node.bridge_conf("10.90.0.0/24");
    conf["cniVersion"] = json!("1.1.0");
    let plain = conf.clone();
    conf["ipMasq"] = json!(true);
    let result = node
        .weft("bridge", &node.call("ADD", &c1, "c1"), &conf)
        .ok();
    node.weft("bridge", &node.call("ADD", &c2, "c2"), &plain)
        .ok();
    assert_eq!(masquerade_rules(&node), ["weft-bridge podnet c1 eth0"]);
    // `outside` has no route to the pod subnet: only a masqueraded pod gets answers.
    assert!(
        c1.ping(ip("172.31.0.2")),
        "masqueraded pod cannot reach outside the node"
    );
    assert!(
        !c2.ping(ip("172.31.0.2")),
        "pod without ipMasq reached outside: the test proves nothing"
    );
    assert!(c1.ping(ip("10.90.0.3")), "pod-to-pod traffic broken");

    conf["prevResult"] = result;
    node.weft("bridge", &node.call("CHECK", &c1, "c1"), &conf)
        .ok();
    conf.as_object_mut().unwrap().remove("prevResult");

    node.weft("bridge", &node.call("ADD", &c3, "c3"), &conf)
        .ok();
    node.weft("bridge", &node.call("DEL", &c3, "c3"), &conf)
        .ok();
    node.weft("bridge", &node.call("DEL", &c3, "c3"), &conf)
        .ok();
    assert_eq!(masquerade_rules(&node), ["weft-bridge podnet c1 eth0"]);

    conf["cni.dev/valid-attachments"] = json!([]);
    node.weft("bridge", &Call::new("GC", "", &node.path()), &conf)
        .ok();
    assert!(masquerade_rules(&node).is_empty());
    assert!(node.allocations("podnet").is_empty());
}

#[test]
fn check_fails_when_one_of_a_dual_stack_attachments_masquerade_rules_is_gone() {
    if !root() {
        return;
    }
    let node = Node::new();
    let c1 = TestNs::new();
    let mut conf = json!({
        "cniVersion": "1.1.0", "name": "podnet", "type": "bridge",
        "bridge": "cni-test0", "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": node.data.path(),
                 "ranges": [[{"subnet": "10.92.0.0/24"}], [{"subnet": "fd00:92::/64"}]]}
    });
    conf["prevResult"] = node
        .weft("bridge", &node.call("ADD", &c1, "c1"), &conf)
        .ok();
    node.weft("bridge", &node.call("CHECK", &c1, "c1"), &conf)
        .ok();

    // Only the IPv4 rule goes; the IPv6 one stays.
    let mut nft = weft_nft::Nft::open_in(node.ns.ns()).unwrap();
    let table = weft_nft::TableRef::new(weft_nft::Family::Ip, "weft-cni");
    let rules = nft.rules(&table, None).unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let mut tx = weft_nft::Transaction::new();
    tx.delete_rule(&table, rules[0].chain.clone(), rules[0].handle);
    nft.apply(&tx).unwrap();

    let reply = node.weft("bridge", &node.call("CHECK", &c1, "c1"), &conf);
    assert_eq!(reply.code, 1, "CHECK passed with the IPv4 rule gone");
    let msg = reply.json["msg"].as_str().unwrap();
    assert!(
        msg.contains("masquerade") && msg.contains("1 of the attachment's 2"),
        "{msg}"
    );
}

#[test]
fn a_repeated_add_that_fails_leaves_the_working_attachment_alone() {
    if !root() {
        return;
    }
    let node = Node::new();
    let container = TestNs::new();
    let conf = node.bridge_conf("10.94.0.0/24");
    node.weft("bridge", &node.call("ADD", &container, "c1"), &conf)
        .ok();
    let links = node.links();
    // The same attachment again: host-local refuses a second address.
    let again = node.weft("bridge", &node.call("ADD", &container, "c1"), &conf);
    assert_eq!(again.code, 1, "{}", again.json);
    // And again with a config its IPAM plugin refuses.
    let mut bad_subnet = conf.clone();
    bad_subnet["ipam"]["subnet"] = json!("10.94.0.0/33");
    let bad = node.weft("bridge", &node.call("ADD", &container, "c1"), &bad_subnet);
    assert_eq!(bad.code, 1, "{}", bad.json);

    assert_eq!(node.links(), links, "a failed repeat ADD changed the node");
    assert!(
        container.netlink().link("eth0").unwrap().is_some(),
        "a failed repeat ADD took the container's interface"
    );
    assert_eq!(node.allocations("podnet"), ["10.94.0.2"]);
    assert!(
        container.ping(ip("10.94.0.1")),
        "the attachment stopped working"
    );
}
