//! host-local exec'ed as a runtime execs it, side by side with the reference
//! plugin on one data directory: each continues where the other stopped,
//! releases the other's allocations, and concurrent ADDs through both never
//! share an address. No privileges needed: host-local only touches files.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used)]

#[path = "support/cni_runner.rs"]
mod support;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::{Call, PluginDir, REFERENCE_DIR, exec};

fn reference() -> Option<PathBuf> {
    let path = Path::new(REFERENCE_DIR).join("host-local");
    if path.exists() {
        Some(path)
    } else {
        println!("skipped: reference host-local not installed in {REFERENCE_DIR}");
        None
    }
}

/// A 1.0.0 config (the newest the Debian reference plugins speak).
fn conf(data: &Path, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "interop", "type": "host-local",
        "ipam": {"type": "host-local", "subnet": subnet, "dataDir": data}
    })
}

fn address(reply: &Value) -> String {
    reply["ips"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn allocations(data: &Path) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = fs::read_dir(data.join("interop"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .unwrap()
                .parse::<IpAddr>()
                .is_ok()
        })
        .map(|entry| {
            let name = entry.file_name().into_string().unwrap();
            (name, fs::read_to_string(entry.path()).unwrap())
        })
        .collect();
    found.sort();
    found
}

#[test]
fn weft_continues_with_the_next_address_after_the_reference_allocated() {
    let Some(reference) = reference() else { return };
    let weft = PluginDir::new();
    let data = tempfile::tempdir().unwrap();
    let conf = conf(data.path(), "10.20.0.0/24");
    let path = weft.path().to_str().unwrap();
    let first = exec(&reference, &Call::new("ADD", "ref-1", path), &conf).ok();
    let second = exec(&reference, &Call::new("ADD", "ref-2", path), &conf).ok();
    let third = exec(
        &weft.plugin("host-local"),
        &Call::new("ADD", "weft-3", path),
        &conf,
    )
    .ok();
    assert_eq!(
        [address(&first), address(&second), address(&third)],
        ["10.20.0.2/24", "10.20.0.3/24", "10.20.0.4/24"]
    );
    assert_eq!(third["ips"][0]["gateway"], "10.20.0.1");
    assert_eq!(
        allocations(data.path()),
        [
            ("10.20.0.2".to_owned(), "ref-1\r\neth0".to_owned()),
            ("10.20.0.3".to_owned(), "ref-2\r\neth0".to_owned()),
            ("10.20.0.4".to_owned(), "weft-3\r\neth0".to_owned()),
        ]
    );
}

#[test]
fn reference_continues_with_the_next_address_after_weft_allocated() {
    let Some(reference) = reference() else { return };
    let weft = PluginDir::new();
    let data = tempfile::tempdir().unwrap();
    let conf = conf(data.path(), "10.21.0.0/24");
    let path = weft.path().to_str().unwrap();
    let weft_bin = weft.plugin("weft-host-local");
    exec(&weft_bin, &Call::new("ADD", "weft-1", path), &conf).ok();
    exec(&weft_bin, &Call::new("ADD", "weft-2", path), &conf).ok();
    let third = exec(&reference, &Call::new("ADD", "ref-3", path), &conf).ok();
    assert_eq!(address(&third), "10.21.0.4/24");
    // Either plugin's DEL frees the other's allocation.
    exec(&reference, &Call::new("DEL", "weft-1", path), &conf).ok();
    exec(&weft_bin, &Call::new("DEL", "ref-3", path), &conf).ok();
    assert_eq!(
        allocations(data.path()),
        [("10.21.0.3".to_owned(), "weft-2\r\neth0".to_owned())]
    );
    // And CHECK of each sees the other's allocation.
    exec(&reference, &Call::new("CHECK", "weft-2", path), &conf).ok();
    exec(&weft_bin, &Call::new("ADD", "weft-4", path), &conf).ok();
    exec(&reference, &Call::new("CHECK", "weft-4", path), &conf).ok();
}

#[test]
fn sixty_four_concurrent_adds_through_both_plugins_get_sixty_four_distinct_addresses() {
    let weft = PluginDir::new();
    let reference = reference();
    let data = tempfile::tempdir().unwrap();
    let conf = conf(data.path(), "10.22.0.0/24");
    let path = weft.path().to_str().unwrap();
    let children: Vec<_> = (0..64)
        .map(|n| {
            // Every other ADD goes through the reference plugin when it is installed.
            let binary = match (&reference, n % 2) {
                (Some(reference), 1) => reference.clone(),
                _ => weft.plugin("host-local"),
            };
            Call::new("ADD", &format!("pod-{n}"), path)
                .command_for(&binary)
                .spawn()
                .unwrap()
        })
        .collect();
    let mut addresses: Vec<String> = children
        .into_iter()
        .map(|child| address(&support::finish(child, &conf).ok()))
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 64, "{addresses:?}");
    assert_eq!(allocations(data.path()).len(), 64);
}

#[test]
fn bad_input_gets_the_spec_error_code_and_changes_nothing() {
    let weft = PluginDir::new();
    let data = tempfile::tempdir().unwrap();
    let path = weft.path().to_str().unwrap();
    let plugin = weft.plugin("host-local");
    let good = conf(data.path(), "10.23.0.0/30");

    let malformed = json!("{\"cniVersion\": \"1.0.0\", \"name\": ");
    let mut call = Call::new("ADD", "c1", path);
    let mut child = call.command_for(&plugin).spawn().unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        malformed.as_str().unwrap().as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    let reply = support::Reply::from_output(child.wait_with_output().unwrap());
    assert_eq!(
        (reply.code, reply.json["code"].clone()),
        (1, json!(6)),
        "{reply:?}"
    );

    let mut old = good.clone();
    old["cniVersion"] = json!("0.2.0");
    let reply = exec(&plugin, &call, &old);
    assert_eq!(
        (reply.code, reply.json["code"].clone()),
        (1, json!(1)),
        "{reply:?}"
    );

    call.netns = String::new();
    let reply = exec(&plugin, &call, &good);
    assert_eq!(reply.json["code"], 4, "{reply:?}");
    assert_eq!(
        reply.json["msg"],
        "required env variables [CNI_NETNS] missing"
    );
    assert!(
        !data.path().join("interop").exists(),
        "nothing may be written on bad input"
    );

    let call = call.netns("/run/netns/unused");
    exec(&plugin, &call, &good).ok();
    let reply = exec(&plugin, &Call::new("ADD", "c2", path), &good);
    assert_eq!(
        (reply.code, reply.json["code"].clone()),
        (1, json!(11)),
        "{reply:?}"
    );
    assert_eq!(allocations(data.path()).len(), 1);
}

#[test]
fn version_command_answers_through_every_installed_name() {
    let weft = PluginDir::new();
    for name in [
        "host-local",
        "weft-host-local",
        "bridge",
        "loopback",
        "portmap",
    ] {
        let reply = exec(
            &weft.plugin(name),
            &Call::new("VERSION", "", ""),
            &json!({"cniVersion": "1.1.0"}),
        )
        .ok();
        assert_eq!(reply["supportedVersions"][4], "1.1.0", "{name}");
    }
}
