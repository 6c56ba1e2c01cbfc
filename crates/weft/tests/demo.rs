//! `weft demo` end to end: the binary builds a scenario, its pings match
//! the expectations, and nothing named `weft-demo-` is left behind.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

use weft_linux::NetNs;
use weft_testhost::require_root;

fn demo_namespaces() -> Vec<String> {
    NetNs::list()
        .unwrap()
        .into_iter()
        .filter(|name| name.starts_with("weft-demo-"))
        .collect()
}

#[test]
fn demo_router_proves_reachability_only_after_routes_and_cleans_up() {
    require_root!();
    let output = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["demo", "router"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("ping left -> 192.168.2.10: no reply (as expected"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ping left -> 192.168.2.10: reply (as expected"),
        "{stdout}"
    );
    assert!(!stdout.contains("WRONG"), "{stdout}");
    assert!(
        !demo_namespaces()
            .iter()
            .any(|name| name.starts_with("weft-demo-router-"))
    );
}
