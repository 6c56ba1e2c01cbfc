//! The store's files byte for byte, as the reference plugin writes them.

use std::fs;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn reserving_writes_the_reference_file_format() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    assert!(store.reserve(" c1 ", "eth0", ip("10.1.2.2"), 0).unwrap());
    let dir = data.path().join("pods");
    assert_eq!(fs::read(dir.join("10.1.2.2")).unwrap(), b"c1\r\neth0");
    assert_eq!(
        fs::read(dir.join("last_reserved_ip.0")).unwrap(),
        b"10.1.2.2"
    );
    assert!(dir.join("lock").exists());
    assert_eq!(store.last_reserved(0), Some(ip("10.1.2.2")));
}

#[test]
fn an_address_with_a_file_cannot_be_reserved_again() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    assert!(store.reserve("c1", "eth0", ip("fd00::2"), 1).unwrap());
    assert!(!store.reserve("c2", "eth0", ip("fd00::2"), 1).unwrap());
    assert_eq!(
        fs::read(data.path().join("pods/fd00::2")).unwrap(),
        b"c1\r\neth0"
    );
}

#[test]
fn release_removes_only_the_attachments_files_and_is_idempotent() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    store.reserve("c1", "eth0", ip("10.1.2.2"), 0).unwrap();
    store.reserve("c1", "eth1", ip("10.1.2.3"), 0).unwrap();
    store.reserve("c2", "eth0", ip("10.1.2.4"), 0).unwrap();
    assert_eq!(store.release("c1", "eth0").unwrap(), vec![ip("10.1.2.2")]);
    assert!(store.release("c1", "eth0").unwrap().is_empty());
    let left: Vec<IpAddr> = store
        .allocations()
        .unwrap()
        .into_iter()
        .map(|a| a.ip)
        .collect();
    assert_eq!(left, vec![ip("10.1.2.3"), ip("10.1.2.4")]);
}

#[test]
fn old_format_files_holding_only_the_container_id_are_found_and_released() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    fs::write(data.path().join("pods/10.1.2.9"), "c-old").unwrap();
    assert_eq!(store.find("c-old", "eth0").unwrap(), vec![ip("10.1.2.9")]);
    assert_eq!(
        store.release("c-old", "eth0").unwrap(),
        vec![ip("10.1.2.9")]
    );
    assert!(!data.path().join("pods/10.1.2.9").exists());
}

#[test]
fn files_not_named_by_an_address_are_not_allocations() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    store.reserve("c1", "eth0", ip("10.1.2.2"), 0).unwrap();
    fs::write(data.path().join("pods/notes.txt"), "c1\r\neth0").unwrap();
    assert_eq!(store.allocations().unwrap().len(), 1);
}

#[test]
fn staging_files_of_a_crashed_writer_are_removed_and_never_count_as_allocations() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("pods");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(".10.1.2.2.weft-staging"), "c1\r\n").unwrap();
    let store = Store::open(data.path(), "pods").unwrap();
    assert!(!dir.join(".10.1.2.2.weft-staging").exists());
    assert!(store.reserve("c1", "eth0", ip("10.1.2.2"), 0).unwrap());
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".weft-staging")),
        "{names:?}"
    );
}
