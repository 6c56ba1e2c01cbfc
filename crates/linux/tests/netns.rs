//! Named namespaces: created, listed and deleted compatibly with `ip netns`,
//! entered for a piece of work without moving the caller's thread.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

use weft_linux::{Error, NetNs, sysctl};
use weft_testhost::{TestNs, require_root};

fn ns_inode(path: &str) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

#[test]
fn named_namespaces_are_visible_to_ip_netns_and_deleted_cleanly() {
    require_root!();
    let name = format!("weft-t-ns-{}", std::process::id());
    // Removed even if an assertion below fails.
    struct Cleanup<'a>(&'a str);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = NetNs::delete_if_exists(self.0);
        }
    }
    let _cleanup = Cleanup(&name);
    let ns = NetNs::create(&name).unwrap();
    assert!(NetNs::list().unwrap().contains(&name));
    assert!(matches!(
        NetNs::create(&name),
        Err(Error::NamespaceExists(_))
    ));
    assert_eq!(NetNs::ensure(&name).unwrap(), ns);

    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&name));
    let inside = Command::new("ip")
        .args(["netns", "exec", &name, "ip", "-o", "link"])
        .output()
        .unwrap();
    assert!(inside.status.success());
    let links = String::from_utf8_lossy(&inside.stdout);
    assert_eq!(
        links.lines().count(),
        1,
        "a new namespace holds only lo: {links}"
    );

    NetNs::delete(&name).unwrap();
    assert!(!NetNs::list().unwrap().contains(&name));
    assert!(matches!(
        NetNs::delete(&name),
        Err(Error::NamespaceNotFound(_))
    ));
    assert!(!NetNs::delete_if_exists(&name).unwrap());
    assert!(matches!(
        NetNs::open(&name),
        Err(Error::NamespaceNotFound(_))
    ));
}

#[test]
fn work_runs_inside_the_namespace_and_the_caller_stays_outside() {
    require_root!();
    let host = TestNs::new();
    let caller_before = ns_inode("/proc/thread-self/ns/net");
    let target = ns_inode(host.ns().path().to_str().unwrap());
    let seen = host.run(|| ns_inode("/proc/thread-self/ns/net"));
    assert_eq!(seen, target);
    assert_ne!(seen, caller_before);
    assert_eq!(ns_inode("/proc/thread-self/ns/net"), caller_before);

    let output = host.exec("readlink", &["/proc/self/ns/net"]);
    let child_ns = String::from_utf8_lossy(&output.stdout);
    assert!(
        child_ns.contains(&target.to_string()),
        "child ran in {child_ns}"
    );
}

#[test]
fn a_panic_inside_the_namespace_is_an_error_not_a_crash() {
    require_root!();
    let host = TestNs::new();
    let result = host.ns().run(|| panic!("boom"));
    assert!(matches!(result, Err(Error::ThreadPanicked(_))));
}

#[test]
fn test_namespaces_are_removed_even_when_a_test_panics() {
    require_root!();
    let mut name = String::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let host = TestNs::new();
        name = host.name().to_owned();
        panic!("test failure while {name} exists");
    }));
    assert!(outcome.is_err());
    assert!(name.starts_with("weft-t-"));
    assert!(!NetNs::list().unwrap().contains(&name), "{name} leaked");
}

#[test]
fn names_that_escape_the_netns_directory_are_refused() {
    for name in ["", ".", "..", "a/b", "../etc"] {
        assert!(
            matches!(NetNs::create(name), Err(Error::InvalidName { .. })),
            "{name:?} accepted"
        );
    }
}

#[test]
fn ensure_here_sets_a_sysctl_of_the_calling_threads_namespace_only() {
    require_root!();
    let ns = TestNs::new();
    let changed = ns.run(|| sysctl::ensure_here(sysctl::IPV4_FORWARD, "1"));
    assert!(changed.unwrap());
    assert_eq!(sysctl::read(ns.ns(), sysctl::IPV4_FORWARD).unwrap(), "1");
    let again = ns.run(|| sysctl::ensure_here(sysctl::IPV4_FORWARD, "1"));
    assert!(!again.unwrap());
}
