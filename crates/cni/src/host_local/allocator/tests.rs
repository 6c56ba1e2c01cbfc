//! The allocator against a real store in a temporary directory: order,
//! round-robin, exhaustion, requested addresses, and 64 threads at once.

use std::fs;
use std::sync::{Arc, Barrier};

use super::*;
use crate::host_local::range::Range;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn set(subnet: &str) -> RangeSet {
    RangeSet::new(vec![
        Range::new(subnet.parse().unwrap(), None, None, None).unwrap(),
    ])
    .unwrap()
}

#[test]
fn consecutive_allocations_take_consecutive_addresses_with_the_subnet_prefix_and_gateway() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    let pods = set("10.1.2.0/24");
    let a = allocate(&store, &pods, 0, "c1", "eth0", None).unwrap();
    let b = allocate(&store, &pods, 0, "c2", "eth0", None).unwrap();
    assert_eq!(a.address.to_string(), "10.1.2.2/24");
    assert_eq!(b.address.to_string(), "10.1.2.3/24");
    assert_eq!(a.gateway, Some(ip("10.1.2.1")));
}

#[test]
fn a_released_address_is_not_reused_until_the_range_wraps() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    let pods = set("10.1.2.0/29"); // .2 to .6 allocatable
    allocate(&store, &pods, 0, "c1", "eth0", None).unwrap();
    store.release("c1", "eth0").unwrap();
    let next = allocate(&store, &pods, 0, "c2", "eth0", None).unwrap();
    assert_eq!(next.address.addr(), ip("10.1.2.3"));
    for id in ["c3", "c4", "c5"] {
        allocate(&store, &pods, 0, id, "eth0", None).unwrap();
    }
    let wrapped = allocate(&store, &pods, 0, "c6", "eth0", None).unwrap();
    assert_eq!(wrapped.address.addr(), ip("10.1.2.2"));
}

#[test]
fn allocation_continues_after_a_cursor_written_by_another_plugin() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("pods");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("10.1.2.7"), "ref-c\r\neth0").unwrap();
    fs::write(dir.join("last_reserved_ip.0"), "10.1.2.7").unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    let got = allocate(&store, &set("10.1.2.0/24"), 0, "c1", "eth0", None).unwrap();
    assert_eq!(got.address.addr(), ip("10.1.2.8"));
}

#[test]
fn exhausted_range_is_reported_and_nothing_is_written() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    let tiny = set("10.1.2.0/30"); // only .2
    allocate(&store, &tiny, 0, "c1", "eth0", None).unwrap();
    let err = allocate(&store, &tiny, 0, "c2", "eth0", None).unwrap_err();
    assert!(matches!(err, AllocError::Exhausted(_)), "{err}");
    assert_eq!(store.allocations().unwrap().len(), 1);
}

#[test]
fn a_second_address_for_the_same_attachment_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    let pods = set("10.1.2.0/24");
    allocate(&store, &pods, 0, "c1", "eth0", None).unwrap();
    let err = allocate(&store, &pods, 0, "c1", "eth0", None).unwrap_err();
    assert!(matches!(err, AllocError::Duplicate { .. }), "{err}");
}

#[test]
fn requested_address_is_given_when_free_and_refused_when_taken_or_the_gateway() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    let pods = set("10.1.2.0/24");
    let got = allocate(&store, &pods, 0, "c1", "eth0", Some(ip("10.1.2.50"))).unwrap();
    assert_eq!(got.address.to_string(), "10.1.2.50/24");
    let taken = allocate(&store, &pods, 0, "c2", "eth0", Some(ip("10.1.2.50"))).unwrap_err();
    assert!(
        matches!(taken, AllocError::RequestedTaken { .. }),
        "{taken}"
    );
    let gateway = allocate(&store, &pods, 0, "c3", "eth0", Some(ip("10.1.2.1"))).unwrap_err();
    assert!(
        matches!(gateway, AllocError::RequestedReserved(_)),
        "{gateway}"
    );
}

#[test]
fn ipv6_allocation_uses_the_canonical_text_form_as_file_name() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    let got = allocate(&store, &set("fd00:10:0:0::/64"), 1, "c1", "eth0", None).unwrap();
    assert_eq!(got.address.to_string(), "fd00:10::2/64");
    assert!(data.path().join("pods/fd00:10::2").exists());
    assert_eq!(
        fs::read(data.path().join("pods/last_reserved_ip.1")).unwrap(),
        b"fd00:10::2"
    );
}

#[test]
fn sixty_four_concurrent_allocations_get_sixty_four_distinct_addresses() {
    let data = tempfile::tempdir().unwrap();
    let barrier = Arc::new(Barrier::new(64));
    let pods = set("10.1.0.0/24");
    let handles: Vec<_> = (0..64)
        .map(|n| {
            let barrier = Arc::clone(&barrier);
            let root = data.path().to_path_buf();
            let pods = pods.clone();
            std::thread::spawn(move || {
                barrier.wait();
                // Each thread opens its own store: flock excludes per open file.
                let store = Store::open(&root, "pods").unwrap();
                allocate(&store, &pods, 0, &format!("c{n}"), "eth0", None)
                    .unwrap()
                    .address
                    .addr()
            })
        })
        .collect();
    let mut got: Vec<IpAddr> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 64);
    let files = fs::read_dir(data.path().join("pods"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .parse::<IpAddr>()
                .is_ok()
        })
        .count();
    assert_eq!(files, 64);
}
