//! host-local through the skel, as a runtime calls it: results, files on
//! disk, error codes, DEL/CHECK/GC/STATUS, in temporary data directories.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use super::*;
use crate::run_plugin;

/// Runs host-local as a runtime would (through the skel) and returns the
/// exit code and the JSON it printed (`Null` when nothing).
fn call(command: &str, container: &str, ifname: &str, conf: &Value) -> (i32, Value) {
    call_with_args(command, container, ifname, "", conf)
}

fn call_with_args(
    command: &str,
    container: &str,
    ifname: &str,
    cni_args: &str,
    conf: &Value,
) -> (i32, Value) {
    let env: HashMap<&str, String> = [
        ("CNI_COMMAND", command.to_owned()),
        ("CNI_CONTAINERID", container.to_owned()),
        ("CNI_NETNS", "/run/netns/unused".to_owned()),
        ("CNI_IFNAME", ifname.to_owned()),
        ("CNI_PATH", "/nonexistent".to_owned()),
        ("CNI_ARGS", cni_args.to_owned()),
    ]
    .into_iter()
    .collect();
    let mut out = Vec::new();
    let code = run_plugin(
        &HostLocal,
        |key| env.get(key).cloned(),
        conf.to_string().as_bytes(),
        &mut out,
    );
    (code, serde_json::from_slice(&out).unwrap_or(Value::Null))
}

fn conf(data: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(data);
    json!({"cniVersion": "1.1.0", "name": "pods", "type": "bridge", "ipam": ipam})
}

fn allocation_files(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(data.join("pods"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.parse::<IpAddr>().is_ok())
        .collect();
    names.sort();
    names
}

#[test]
fn add_with_two_range_sets_returns_one_ipv4_and_one_ipv6_address_and_the_routes() {
    let data = tempfile::tempdir().unwrap();
    let conf = conf(
        data.path(),
        json!({
            "ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00:1::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
        }),
    );
    let (code, out) = call("ADD", "c1", "eth0", &conf);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        json!({
            "cniVersion": "1.1.0",
            "ips": [
                {"address": "10.1.2.2/24", "gateway": "10.1.2.1"},
                {"address": "fd00:1::2/64", "gateway": "fd00:1::1"}
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
            "dns": {}
        })
    );
    assert_eq!(allocation_files(data.path()), ["10.1.2.2", "fd00:1::2"]);
}

#[test]
fn legacy_subnet_keys_work_and_the_range_bounds_are_respected() {
    let data = tempfile::tempdir().unwrap();
    let conf = conf(
        data.path(),
        json!({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.100", "rangeEnd": "10.1.2.101", "gateway": "10.1.2.254"}),
    );
    let (_, first) = call("ADD", "c1", "eth0", &conf);
    let (_, second) = call("ADD", "c2", "eth0", &conf);
    assert_eq!(
        first["ips"][0],
        json!({"address": "10.1.2.100/24", "gateway": "10.1.2.254"})
    );
    assert_eq!(second["ips"][0]["address"], "10.1.2.101/24");
}

#[test]
fn exhausted_range_is_error_11_and_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let conf = conf(data.path(), json!({"subnet": "10.1.2.0/30"}));
    assert_eq!(call("ADD", "c1", "eth0", &conf).0, 0);
    let (code, out) = call("ADD", "c2", "eth0", &conf);
    assert_eq!((code, out["code"].clone()), (1, json!(11)), "{out}");
    assert_eq!(allocation_files(data.path()), ["10.1.2.2"]);
}

#[test]
fn failing_second_range_set_releases_the_first_address() {
    let data = tempfile::tempdir().unwrap();
    let conf = conf(
        data.path(),
        json!({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.9.0.0/30"}]]}),
    );
    assert_eq!(call("ADD", "c1", "eth0", &conf).0, 0);
    let (code, _) = call("ADD", "c2", "eth0", &conf);
    assert_eq!(code, 1);
    assert_eq!(allocation_files(data.path()), ["10.1.2.2", "10.9.0.2"]);
}

#[test]
fn del_releases_by_container_and_interface_and_twice_is_fine() {
    let data = tempfile::tempdir().unwrap();
    let conf = conf(data.path(), json!({"subnet": "10.1.2.0/24"}));
    call("ADD", "c1", "eth0", &conf);
    call("ADD", "c1", "net1", &conf);
    assert_eq!(call("DEL", "c1", "eth0", &conf), (0, Value::Null));
    assert_eq!(call("DEL", "c1", "eth0", &conf), (0, Value::Null));
    assert_eq!(allocation_files(data.path()), ["10.1.2.3"]);
}

#[test]
fn check_passes_while_the_allocation_exists_and_fails_after_del() {
    let data = tempfile::tempdir().unwrap();
    let conf = conf(data.path(), json!({"subnet": "10.1.2.0/24"}));
    call("ADD", "c1", "eth0", &conf);
    assert_eq!(call("CHECK", "c1", "eth0", &conf).0, 0);
    call("DEL", "c1", "eth0", &conf);
    let (code, out) = call("CHECK", "c1", "eth0", &conf);
    assert_eq!(code, 1);
    assert!(out["msg"].as_str().unwrap().contains("c1"), "{out}");
}

#[test]
fn gc_removes_every_allocation_outside_the_valid_attachments() {
    let data = tempfile::tempdir().unwrap();
    let mut conf = conf(data.path(), json!({"subnet": "10.1.2.0/24"}));
    call("ADD", "keep", "eth0", &conf);
    call("ADD", "keep", "net1", &conf);
    call("ADD", "gone", "eth0", &conf);
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    assert_eq!(call("GC", "", "", &conf), (0, Value::Null));
    assert_eq!(allocation_files(data.path()), ["10.1.2.2"]);
    conf["cni.dev/valid-attachments"] = json!([]);
    call("GC", "", "", &conf);
    assert!(allocation_files(data.path()).is_empty());
}

#[test]
fn status_is_error_50_when_the_range_is_exhausted() {
    let data = tempfile::tempdir().unwrap();
    let conf = conf(data.path(), json!({"subnet": "10.1.2.0/30"}));
    assert_eq!(call("STATUS", "", "", &conf), (0, Value::Null));
    call("ADD", "c1", "eth0", &conf);
    let (code, out) = call("STATUS", "", "", &conf);
    assert_eq!((code, out["code"].clone()), (1, json!(50)), "{out}");
}

#[test]
fn status_is_error_50_when_the_data_directory_cannot_be_made() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("a-file");
    fs::write(&file, "").unwrap();
    let conf = conf(&file, json!({"subnet": "10.1.2.0/24"}));
    let (code, out) = call("STATUS", "", "", &conf);
    assert_eq!((code, out["code"].clone()), (1, json!(50)), "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("is not a directory"),
        "{out}"
    );
    let (code, out) = call("ADD", "c1", "eth0", &conf);
    assert_eq!((code, out["code"].clone()), (1, json!(5)), "{out}");
}

#[test]
fn a_repeated_add_is_refused_and_keeps_the_address_the_attachment_holds() {
    let data = tempfile::tempdir().unwrap();
    let conf = conf(data.path(), json!({"subnet": "10.1.2.0/24"}));
    let (code, _) = call("ADD", "c1", "eth0", &conf);
    assert_eq!(code, 0);
    let (code, out) = call("ADD", "c1", "eth0", &conf);
    assert_eq!(code, 1, "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .contains("duplicate allocation"),
        "{out}"
    );
    assert_eq!(allocation_files(data.path()), ["10.1.2.2"]);
    // The next container does not get it.
    let (_, out) = call("ADD", "c2", "eth0", &conf);
    assert_eq!(out["ips"][0]["address"], "10.1.2.3/24");
}

#[test]
fn requested_ip_from_cni_args_is_allocated() {
    let data = tempfile::tempdir().unwrap();
    let conf = conf(data.path(), json!({"subnet": "10.1.2.0/24"}));
    let (code, out) = call_with_args("ADD", "c1", "eth0", "IgnoreUnknown=1;IP=10.1.2.77", &conf);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["ips"][0]["address"], "10.1.2.77/24");
}

#[test]
fn requested_ip_outside_every_range_is_refused_and_nothing_stays_allocated() {
    let data = tempfile::tempdir().unwrap();
    let mut conf = conf(data.path(), json!({"subnet": "10.1.2.0/24"}));
    conf["runtimeConfig"] = json!({"ips": ["192.168.9.9/24"]});
    let (code, out) = call("ADD", "c1", "eth0", &conf);
    assert_eq!((code, out["code"].clone()), (1, json!(7)), "{out}");
    assert!(allocation_files(data.path()).is_empty());
}

#[test]
fn unknown_cni_args_without_ignore_unknown_are_error_4() {
    let data = tempfile::tempdir().unwrap();
    let conf = conf(data.path(), json!({"subnet": "10.1.2.0/24"}));
    let (code, out) = call_with_args("ADD", "c1", "eth0", "FOO=bar", &conf);
    assert_eq!((code, out["code"].clone()), (1, json!(4)), "{out}");
    let (code, _) = call_with_args("ADD", "c1", "eth0", "IgnoreUnknown=1;FOO=bar", &conf);
    assert_eq!(code, 0);
}

#[test]
fn resolv_conf_becomes_the_result_dns() {
    let data = tempfile::tempdir().unwrap();
    let resolv = data.path().join("resolv.conf");
    fs::write(&resolv, "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n").unwrap();
    let conf = conf(
        data.path(),
        json!({"subnet": "10.1.2.0/24", "resolvConf": resolv}),
    );
    let (_, out) = call("ADD", "c1", "eth0", &conf);
    assert_eq!(
        out["dns"],
        json!({"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local", "svc.cluster.local"], "options": ["ndots:5"]})
    );
}

#[test]
fn missing_ipam_section_or_ranges_is_error_7() {
    let data = tempfile::tempdir().unwrap();
    let no_ipam = json!({"cniVersion": "1.0.0", "name": "pods", "type": "host-local"});
    assert_eq!(call("ADD", "c1", "eth0", &no_ipam).1["code"], 7);
    let no_ranges = conf(data.path(), json!({}));
    assert_eq!(call("ADD", "c1", "eth0", &no_ranges).1["code"], 7);
}
