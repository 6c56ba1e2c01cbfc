//! The embedded store: round trips, layout, server-set fields, concurrent
//! writers and watching readers.

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PodIP;

use super::*;
use crate::testing::{mk_node, set_ready};

const APP: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec: {containers: [{name: main, image: weft/serve}]}
";

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("open store");
    (dir, store)
}

/// A store holding `pods` pods, and a cluster a watcher keeps current with it.
fn watched_store(pods: usize) -> (tempfile::TempDir, Store, Cluster, StoreWatcher) {
    let (dir, store) = store();
    store.apply(&[manifest(&many_pods(pods))]).expect("apply");
    let cluster = Cluster::new();
    let watcher = store.watch(&cluster, WATCH_INTERVAL).expect("watch");
    (dir, store, cluster, watcher)
}

fn manifest(text: &str) -> Manifest {
    Manifest {
        origin: "app.yaml".to_owned(),
        text: text.to_owned(),
    }
}

fn key(kind: Kind, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(kind, ns, name)
}

fn actions(changes: &[Change]) -> Vec<(String, Action)> {
    changes
        .iter()
        .map(|c| (c.key.to_string(), c.action))
        .collect()
}

fn service_of(store: &Store, ns: &str, name: &str) -> crate::model::Service {
    match store.get(&key(Kind::Service, ns, name)).expect("get") {
        Some(Object::Service(s)) => s,
        other => panic!("no service: {other:?}"),
    }
}

fn slice_addresses(store: &Store, service: &str) -> Vec<String> {
    store
        .list(Kind::EndpointSlice, Some("default"))
        .expect("list")
        .into_iter()
        .filter_map(|o| match o {
            Object::EndpointSlice(s) => Some(s),
            _ => None,
        })
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::model::SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(service)
        })
        .flat_map(|s| s.endpoints.into_iter().flat_map(|e| e.addresses))
        .collect()
}

#[test]
fn apply_creates_objects_in_the_documented_layout_with_server_fields() {
    let (_d, store) = store();
    let changes = store.apply(&[manifest(APP)]).expect("apply");
    assert_eq!(
        actions(&changes),
        [
            ("Service default/web".to_owned(), Action::Created),
            ("Pod default/web-1".to_owned(), Action::Created)
        ]
    );
    let path = store.dir().join("services/default/web.yaml");
    let text = fs::read_to_string(&path).expect("service file");
    assert!(text.contains("clusterIP: 10.96.0.2"), "{text}");
    assert!(text.contains("nodePort: 30000"), "{text}");
    assert!(store.dir().join("pods/default/web-1.yaml").is_file());
    assert!(store.dir().join("namespaces/kube-system.yaml").is_file());
    assert!(
        store
            .dir()
            .join("endpointslices/default/web-0.yaml")
            .is_file()
    );

    let svc = service_of(&store, "default", "web");
    let meta = &svc.metadata;
    assert_eq!(meta.uid.as_deref().map(str::len), Some(36));
    assert_eq!(meta.resource_version.as_deref(), Some("1"));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(store.generation().expect("generation"), 1);
}

#[test]
fn applying_the_same_manifest_again_changes_nothing() {
    let (_d, store) = store();
    store.apply(&[manifest(APP)]).expect("apply");
    let before = service_of(&store, "default", "web");
    let changes = store.apply(&[manifest(APP)]).expect("apply again");
    assert!(
        changes.iter().all(|c| c.action == Action::Unchanged),
        "{changes:?}"
    );
    assert_eq!(service_of(&store, "default", "web"), before);
    assert_eq!(store.generation().expect("generation"), 1);
}

#[test]
fn applying_again_after_the_kubelet_ran_a_pod_keeps_what_the_kubelet_wrote() {
    let (_d, store) = store();
    store.apply(&[manifest(&many_pods(1))]).expect("apply");
    let pod = key(Kind::Pod, "default", "p0");
    store
        .modify(&pod, |obj| {
            mark_running(obj, "10.244.0.2");
            if let Object::Pod(p) = obj {
                p.spec.get_or_insert_with(Default::default).node_name = Some("node-1".to_owned());
            }
            obj.meta_mut()
                .annotations
                .get_or_insert_with(Default::default)
                .insert(
                    crate::model::WORKLOAD_ANNOTATION.to_owned(),
                    "weft serve".to_owned(),
                );
        })
        .expect("the kubelet's edit");
    let before = store.get(&pod).expect("get");
    let generation = store.generation().expect("generation");

    let changes = store
        .apply(&[manifest(&many_pods(1))])
        .expect("apply again");
    assert!(
        changes.iter().all(|c| c.action == Action::Unchanged),
        "{changes:?}"
    );
    assert_eq!(store.get(&pod).expect("get"), before);
    assert_eq!(store.generation().expect("generation"), generation);
}

#[test]
fn applying_a_changed_manifest_configures_and_keeps_identity_and_allocations() {
    let (_d, store) = store();
    store.apply(&[manifest(APP)]).expect("apply");
    let before = service_of(&store, "default", "web");
    let changed = APP.replace("targetPort: 8080", "targetPort: 9090");
    let changes = store.apply(&[manifest(&changed)]).expect("apply changed");
    assert_eq!(changes[0].action, Action::Configured);
    assert_eq!(changes[1].action, Action::Unchanged);
    let after = service_of(&store, "default", "web");
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(
        after.metadata.creation_timestamp,
        before.metadata.creation_timestamp
    );
    assert_eq!(after.metadata.resource_version.as_deref(), Some("2"));
    let spec = after.spec.unwrap_or_default();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.2"));
    let ports = spec.ports.unwrap_or_default();
    assert_eq!(ports[0].node_port, Some(30000));
}

#[test]
fn get_reads_back_what_apply_wrote() {
    let (_d, store) = store();
    store.apply(&[manifest(APP)]).expect("apply");
    let pod = store
        .get(&key(Kind::Pod, "default", "web-1"))
        .expect("get")
        .expect("pod exists");
    assert_eq!(
        pod.meta()
            .labels
            .as_ref()
            .and_then(|l| l.get("app"))
            .map(String::as_str),
        Some("web")
    );
    let names: Vec<String> = store
        .list(Kind::Namespace, None)
        .expect("list")
        .iter()
        .map(|o| o.key().name)
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert!(
        store
            .get(&key(Kind::Pod, "default", "nope"))
            .expect("get")
            .is_none()
    );
}

#[test]
fn delete_removes_files_and_the_service_takes_its_slices() {
    let (_d, store) = store();
    store.apply(&[manifest(APP)]).expect("apply");
    let changes = store.delete_manifests(&[manifest(APP)]).expect("delete");
    assert!(
        changes.iter().all(|c| c.action == Action::Deleted),
        "{changes:?}"
    );
    assert!(!store.dir().join("services/default/web.yaml").exists());
    assert!(!store.dir().join("pods/default/web-1.yaml").exists());
    assert!(
        store
            .list(Kind::EndpointSlice, None)
            .expect("list")
            .is_empty()
    );
    let again = store
        .delete(&[key(Kind::Pod, "default", "web-1")])
        .expect("delete again");
    assert_eq!(again[0].action, Action::NotFound);
}

#[test]
fn deleting_a_namespace_deletes_its_objects() {
    let (_d, store) = store();
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n".to_owned()
        + &APP
            .replace("name: web}", "name: web, namespace: shop}")
            .replace("name: web-1,", "name: web-1, namespace: shop,");
    store.apply(&[manifest(&text)]).expect("apply");
    assert!(
        store
            .get(&key(Kind::Pod, "shop", "web-1"))
            .expect("get")
            .is_some()
    );
    store
        .delete(&[key(Kind::Namespace, "", "shop")])
        .expect("delete");
    assert!(
        store
            .load()
            .expect("load")
            .iter()
            .all(|o| o.key().namespace != "shop")
    );
    assert!(!store.dir().join("pods/shop").exists());
}

#[test]
fn a_pod_marked_ready_with_an_ip_becomes_an_endpoint() {
    let (_d, store) = store();
    store.apply(&[manifest(APP)]).expect("apply");
    assert!(slice_addresses(&store, "web").is_empty());
    let pod = key(Kind::Pod, "default", "web-1");
    store
        .modify(&pod, |obj| {
            if let Object::Pod(p) = obj {
                let status = p.status.get_or_insert_with(Default::default);
                status.phase = Some("Running".to_owned());
                status.pod_ip = Some("10.244.0.5".to_owned());
                status.pod_ips = Some(vec![PodIP {
                    ip: "10.244.0.5".to_owned(),
                }]);
                set_ready(p, true);
            }
        })
        .expect("modify");
    assert_eq!(slice_addresses(&store, "web"), ["10.244.0.5"]);
    // Re-applying the manifest (no status) keeps what the kubelet recorded.
    store.apply(&[manifest(APP)]).expect("apply again");
    assert_eq!(slice_addresses(&store, "web"), ["10.244.0.5"]);
}

#[test]
fn nodes_get_a_pod_cidr_recorded_in_the_store() {
    let (_d, store) = store();
    store
        .apply_objects(vec![
            mk_node("node-1", "").into(),
            mk_node("node-2", "").into(),
        ])
        .expect("apply nodes");
    let text = fs::read_to_string(store.dir().join("nodes/node-2.yaml")).expect("node file");
    assert!(text.contains("podCIDR: 10.244.1.0/24"), "{text}");
}

#[test]
fn a_hand_edited_file_that_names_another_object_is_reported() {
    let (_d, store) = store();
    store.apply(&[manifest(APP)]).expect("apply");
    let text = fs::read_to_string(store.dir().join("pods/default/web-1.yaml")).expect("read");
    fs::write(store.dir().join("pods/default/web-2.yaml"), text).expect("write");
    let err = Store::open(store.dir())
        .expect("fresh handle")
        .load()
        .expect_err("mismatch");
    let msg = err.to_string();
    assert!(
        msg.contains("pods/default/web-2.yaml: holds Pod default/web-1"),
        "{msg}"
    );
}

#[test]
fn concurrent_writers_never_corrupt_the_store() {
    let (_d, store) = store();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = Store::open(store.dir()).expect("second handle");
            thread::spawn(move || {
                for i in 0..15 {
                    let text = format!(
                        "apiVersion: v1\nkind: Service\nmetadata: {{name: s{w}-{i}}}\nspec: {{type: NodePort, selector: {{app: a}}, ports: [{{port: 80}}]}}\n"
                    );
                    store.apply(&[manifest(&text)]).expect("concurrent apply");
                }
            })
        })
        .collect();
    let reader = {
        let store = store.clone();
        thread::spawn(move || {
            let mut loads = 0;
            while store.generation().expect("generation") < 60 {
                store.load().expect("a reader always sees whole objects");
                loads += 1;
            }
            loads
        })
    };
    for w in writers {
        w.join().expect("writer");
    }
    assert!(reader.join().expect("reader") > 0);
    let services: Vec<crate::model::Service> = store
        .list(Kind::Service, None)
        .expect("list")
        .into_iter()
        .filter_map(|o| match o {
            Object::Service(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(services.len(), 60);
    let ips: BTreeSet<_> = services
        .iter()
        .filter_map(|s| s.spec.as_ref()?.cluster_ip.clone())
        .collect();
    let ports: BTreeSet<_> = services
        .iter()
        .flat_map(|s| {
            s.spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .filter_map(|p| p.node_port)
        })
        .collect();
    assert_eq!((ips.len(), ports.len()), (60, 60), "allocations are unique");
    assert_eq!(
        store.generation().expect("generation"),
        60,
        "one generation per commit"
    );
    assert_eq!(
        fs::read_dir(store.dir().join(".tmp"))
            .expect("tmp dir")
            .count(),
        0
    );
}

#[test]
fn a_watching_reader_sees_every_commit_within_100ms() {
    let (_d, store) = store();
    let cluster = Cluster::new();
    let _watcher = store.watch(&cluster, WATCH_INTERVAL).expect("watch");
    assert!(cluster.is_synced());
    let writer = Store::open(store.dir()).expect("writer handle");
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{ports: [{{port: 80}}]}}\n"
        );
        writer.apply(&[manifest(&text)]).expect("apply");
        let start = Instant::now();
        while cluster
            .read()
            .service("default", &format!("s{i}"))
            .is_none()
        {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "change {i} never seen"
            );
            thread::sleep(Duration::from_millis(2));
        }
        slowest = slowest.max(start.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(100),
        "slowest pick-up took {slowest:?}"
    );
    writer
        .delete(&[key(Kind::Service, "default", "s3")])
        .expect("delete");
    let start = Instant::now();
    while cluster.read().service("default", "s3").is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "delete never seen"
        );
        thread::sleep(Duration::from_millis(2));
    }
    let stored: Vec<ObjectKey> = store
        .load()
        .expect("load")
        .iter()
        .map(Object::key)
        .collect();
    let seen: Vec<ObjectKey> = cluster.read().objects().map(Object::key).collect();
    assert_eq!(seen, stored);
}

#[test]
fn a_long_lived_handle_does_not_serve_a_deleted_store_from_memory() {
    let (_d, store) = store();
    store.apply(&[manifest(APP)]).expect("apply");
    assert!(
        store
            .get(&key(Kind::Pod, "default", "web-1"))
            .expect("get")
            .is_some()
    );
    fs::remove_dir_all(store.dir()).expect("remove store");
    let fresh = Store::open(store.dir()).expect("recreate");
    fresh
        .apply(&[manifest(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        )])
        .expect("apply to the new store");
    let pods = store.list(Kind::Pod, None).expect("list");
    assert!(pods.is_empty(), "old objects served: {pods:?}");
    assert!(
        store
            .get(&key(Kind::Namespace, "", "shop"))
            .expect("get")
            .is_some()
    );
}

#[test]
fn two_handles_see_each_others_writes() {
    let (_d, a) = store();
    let b = Store::open(a.dir()).expect("second handle");
    a.apply(&[manifest(APP)]).expect("apply via a");
    b.delete(&[key(Kind::Pod, "default", "web-1")])
        .expect("delete via b");
    let changes = a.apply(&[manifest(APP)]).expect("apply via a again");
    assert_eq!(changes[1].action, Action::Created, "a saw b's delete");
}

#[test]
fn reapplying_a_service_keeps_its_node_port_even_when_a_lower_one_is_free() {
    let (_d, store) = store();
    let svc = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{type: NodePort, ports: [{{port: 80}}]}}\n"
        )
    };
    store.apply(&[manifest(&svc("a"))]).expect("apply a");
    store.apply(&[manifest(&svc("b"))]).expect("apply b");
    store
        .delete(&[key(Kind::Service, "default", "a")])
        .expect("delete a");
    let changes = store.apply(&[manifest(&svc("b"))]).expect("apply b again");
    assert_eq!(changes[0].action, Action::Unchanged);
    let ports: Vec<i32> = service_of(&store, "default", "b")
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| p.node_port)
        .collect();
    assert_eq!(ports, [30001]);
}

#[test]
fn turning_a_node_port_service_into_cluster_ip_releases_its_node_ports() {
    let (_d, store) = store();
    store.apply(&[manifest(APP)]).expect("apply");
    let cluster_ip_app = APP.replace("type: NodePort", "type: ClusterIP");
    let changes = store
        .apply(&[manifest(&cluster_ip_app)])
        .expect("apply as ClusterIP");
    assert_eq!(changes[0].action, Action::Configured);
    let svc = service_of(&store, "default", "web");
    let spec = svc.spec.unwrap_or_default();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(spec.ports.iter().flatten().all(|p| p.node_port.is_none()));
    assert_eq!(
        spec.cluster_ip.as_deref(),
        Some("10.96.0.2"),
        "the ClusterIP stays"
    );
}

/// `count` Pods `p0…` behind the Service `web`, not yet running.
fn many_pods(count: usize) -> String {
    let mut text = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
    );
    for i in 0..count {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, labels: {{app: web}}}}\nspec: {{containers: [{{name: main, image: weft/serve}}]}}\n"
        ));
    }
    text
}

fn mark_running(obj: &mut Object, ip: &str) {
    if let Object::Pod(p) = obj {
        let status = p.status.get_or_insert_with(Default::default);
        status.phase = Some("Running".to_owned());
        status.pod_ip = Some(ip.to_owned());
        status.pod_ips = Some(vec![PodIP { ip: ip.to_owned() }]);
        set_ready(p, true);
    }
}

fn running_ips(cluster: &Cluster) -> Vec<String> {
    cluster
        .read()
        .pods()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect()
}

#[test]
fn a_batch_of_edits_is_one_commit_that_watchers_see_whole() {
    let (_d, store, cluster, watcher) = watched_store(20);
    let before = store.generation().expect("generation");
    assert_eq!(watcher.generation(), before);
    // Someone looks at the cluster all along: never a part of the batch.
    let observer = {
        let cluster = cluster.clone();
        thread::spawn(move || {
            let start = Instant::now();
            loop {
                let seen = running_ips(&cluster).len();
                assert!(seen == 0 || seen == 20, "saw {seen} of 20 edits");
                if seen == 20 || start.elapsed() > Duration::from_secs(5) {
                    return seen;
                }
                thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let writer = Store::open(store.dir()).expect("writer handle");
    let edits: Vec<_> = (0..20)
        .map(|i| {
            let ip = format!("10.244.0.{}", i + 2);
            (
                key(Kind::Pod, "default", &format!("p{i}")),
                move |obj: &mut Object| mark_running(obj, &ip),
            )
        })
        .collect();
    let changes = writer.modify_many(edits).expect("modify many");
    assert!(changes.iter().all(|c| c.action == Action::Configured));
    assert_eq!(observer.join().expect("observer"), 20);
    assert_eq!(
        store.generation().expect("generation"),
        before + 1,
        "one commit"
    );
    assert_eq!(watcher.generation(), before + 1);
    assert_eq!(slice_addresses(&store, "web").len(), 20);
    let pod = store.get(&key(Kind::Pod, "default", "p7")).expect("get");
    assert_eq!(
        pod.and_then(|o| o.meta().resource_version.clone()),
        Some((before + 1).to_string())
    );
}

#[test]
fn a_batch_with_one_invalid_edit_writes_nothing_and_a_missing_key_is_not_found() {
    let (_d, store) = store();
    store.apply(&[manifest(&many_pods(2))]).expect("apply");
    let before = store.generation().expect("generation");
    type Edit = Box<dyn FnOnce(&mut Object)>;
    let edits: Vec<(ObjectKey, Edit)> = vec![
        (
            key(Kind::Pod, "default", "p0"),
            Box::new(|obj: &mut Object| mark_running(obj, "10.244.0.2")),
        ),
        (
            key(Kind::Pod, "default", "p1"),
            Box::new(|obj: &mut Object| {
                obj.meta_mut()
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert("bad key!".to_owned(), "x".to_owned());
            }),
        ),
    ];
    assert!(matches!(
        store.modify_many(edits),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.generation().expect("generation"), before);
    assert!(slice_addresses(&store, "web").is_empty());

    let running = |ip: &'static str| move |obj: &mut Object| mark_running(obj, ip);
    let changes = store
        .modify_many(vec![
            (key(Kind::Pod, "default", "gone"), running("10.244.0.9")),
            (key(Kind::Pod, "default", "p0"), running("10.244.0.2")),
        ])
        .expect("modify many");
    assert_eq!(
        actions(&changes),
        [
            ("Pod default/gone".to_owned(), Action::NotFound),
            ("Pod default/p0".to_owned(), Action::Configured),
        ]
    );
    assert!(matches!(
        store.modify(&key(Kind::Pod, "default", "gone"), |_| {}),
        Err(StoreError::NotFound(_))
    ));
}

/// Waits until `cluster` holds exactly what the store holds.
fn converges(cluster: &Cluster, store: &Store) {
    let start = Instant::now();
    loop {
        let stored = store.load().expect("load");
        let seen: Vec<Object> = cluster.read().objects().cloned().collect();
        if seen == stored {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the watcher never caught up"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_watcher_reads_only_the_files_the_journal_names() {
    let (_d, store, cluster, _watcher) = watched_store(3);
    // An object file no commit names goes bad: a reader that read the
    // whole store again would fail on it.
    let untouched = store.dir().join("pods/default/p2.yaml");
    fs::write(&untouched, "not: [a pod").expect("spoil");
    // The handle that applied writes on from its own state, not the files.
    let writer = &store;
    writer
        .modify(&key(Kind::Pod, "default", "p0"), |obj| {
            mark_running(obj, "10.244.0.2")
        })
        .expect("modify");
    let start = Instant::now();
    while running_ips(&cluster) != ["10.244.0.2"] {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "update never seen"
        );
        thread::sleep(Duration::from_millis(5));
    }
    writer
        .delete(&[key(Kind::Pod, "default", "p1")])
        .expect("delete");
    let start = Instant::now();
    while cluster.read().pod("default", "p1").is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "delete never seen"
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        cluster.read().pod("default", "p2").is_some(),
        "kept as it was"
    );
}

#[test]
fn a_watcher_without_a_usable_journal_reads_the_whole_store() {
    let (_d, store, cluster, watcher) = watched_store(3);
    // The journal goes (as after an older weft wrote the store): the next
    // commit starts a new one, which does not cover what the watcher missed.
    fs::remove_file(store.dir().join("journal")).expect("remove journal");
    let writer = Store::open(store.dir()).expect("writer handle");
    writer
        .modify(&key(Kind::Pod, "default", "p0"), |obj| {
            mark_running(obj, "10.244.0.2")
        })
        .expect("modify");
    writer
        .delete(&[key(Kind::Pod, "default", "p1")])
        .expect("delete");
    converges(&cluster, &store);
    assert_eq!(
        watcher.generation(),
        store.generation().expect("generation")
    );
    // And it goes on incrementally from the new journal.
    writer
        .delete(&[key(Kind::Pod, "default", "p2")])
        .expect("delete");
    converges(&cluster, &store);
    assert!(cluster.read().pod("default", "p2").is_none());
}

#[test]
fn a_watcher_follows_a_store_made_anew_in_its_directory() {
    let (_d, store, cluster, _watcher) = watched_store(2);
    // The same generation number in a new store: the watcher must not take
    // it for the commit it already has.
    fs::remove_dir_all(store.dir()).expect("remove the store");
    let anew = Store::open(store.dir()).expect("a new store in the same place");
    anew.apply(&[manifest(&many_pods(1))]).expect("apply");
    assert_eq!(
        anew.generation().expect("generation"),
        store.generation().expect("generation")
    );
    converges(&cluster, &anew);
    assert!(cluster.read().pod("default", "p1").is_none());
}

#[test]
fn a_handle_that_wrote_reads_on_from_its_own_commit() {
    let (_d, store) = store();
    store.apply(&[manifest(&many_pods(3))]).expect("apply");
    // Spoiling an untouched file: neither the next write through this
    // handle nor its reads go back to it, they start from the handle's own
    // last commit plus the journal.
    fs::write(store.dir().join("pods/default/p2.yaml"), "not: [a pod").expect("spoil");
    let other = Store::open(store.dir()).expect("other handle");
    assert!(other.load().is_err(), "a new handle reads everything");
    store
        .modify(&key(Kind::Pod, "default", "p0"), |obj| {
            mark_running(obj, "10.244.0.2")
        })
        .expect("modify without reading everything again");
    let objects = store.load().expect("load from the handle's own commit");
    assert!(
        objects
            .iter()
            .any(|o| o.key() == key(Kind::Pod, "default", "p2"))
    );
    assert_eq!(slice_addresses(&store, "web"), ["10.244.0.2"]);
}

#[test]
fn a_load_balancer_with_local_traffic_gets_a_health_check_node_port_kept_on_reapply() {
    let (_d, store) = store();
    let lb = "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\n\
              spec: {type: LoadBalancer, externalTrafficPolicy: Local, selector: {app: web}, ports: [{port: 80}]}\n";
    store.apply(&[manifest(lb)]).expect("apply");
    let spec = service_of(&store, "default", "lb").spec.expect("spec");
    let health = spec.health_check_node_port.expect("a healthCheckNodePort");
    assert!((30000..=32767).contains(&health), "{health}");
    let node_port = spec.ports.expect("ports")[0].node_port.expect("a nodePort");
    assert_ne!(health, node_port);
    let changes = store.apply(&[manifest(lb)]).expect("apply again");
    assert_eq!(changes[0].action, Action::Unchanged);
    assert_eq!(
        service_of(&store, "default", "lb")
            .spec
            .expect("spec")
            .health_check_node_port,
        Some(health)
    );
}

/// The fields `text` is refused for, in order.
fn refused_fields(store: &Store, text: &str) -> Vec<String> {
    match store.apply(&[manifest(text)]) {
        Err(StoreError::Invalid(problems)) => problems.into_iter().map(|p| p.field).collect(),
        other => panic!("accepted: {other:?}"),
    }
}

#[test]
fn what_an_api_server_refuses_the_store_refuses_and_names_the_field() {
    let (_d, store) = store();
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {name: bad-1, labels: {kubernetes.io/service-name: bad}}\n\
                 addressType: IPv4\nports: [{port: 70000}]\n\
                 endpoints: [{addresses: [10.244.9.3]}, {addresses: [10.244.9.300, fd00::1]}]\n";
    assert_eq!(
        refused_fields(&store, slice),
        [
            "endpoints[1].addresses[0]",
            "endpoints[1].addresses[1]",
            "ports[0].port"
        ]
    );
    let dual = "apiVersion: v1\nkind: Service\nmetadata: {name: dual}\n\
                spec: {ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], ports: [{port: 80}]}\n";
    assert_eq!(
        refused_fields(&store, dual),
        ["spec.ipFamilies[1]", "spec.ipFamilyPolicy"]
    );
    let health = "apiVersion: v1\nkind: Service\nmetadata: {name: np}\n\
                  spec: {type: NodePort, healthCheckNodePort: 30100, ports: [{port: 80}]}\n";
    assert_eq!(refused_fields(&store, health), ["spec.healthCheckNodePort"]);
    assert_eq!(store.generation().expect("generation"), 0);
}

#[test]
fn a_health_check_node_port_is_refused_when_taken_and_dropped_when_the_policy_no_longer_uses_it() {
    let (_d, store) = store();
    let np = "apiVersion: v1\nkind: Service\nmetadata: {name: np}\n\
              spec: {type: NodePort, ports: [{port: 80, nodePort: 30100}]}\n";
    store.apply(&[manifest(np)]).expect("apply");
    let lb = |health: i32, policy: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: lb}}\n\
             spec: {{type: LoadBalancer, externalTrafficPolicy: {policy}, healthCheckNodePort: {health}, \
             ports: [{{port: 80, nodePort: 30200}}]}}\n"
        )
    };
    assert_eq!(
        refused_fields(&store, &lb(30100, "Local")),
        ["spec.healthCheckNodePort"]
    );
    assert_eq!(
        refused_fields(&store, &lb(30200, "Local")),
        ["spec.healthCheckNodePort"]
    );
    store
        .apply(&[manifest(&lb(30300, "Local"))])
        .expect("a free port");
    // Read back and re-applied with the policy changed: the port goes, as
    // kube-apiserver drops it, instead of the apply being refused.
    store
        .apply(&[manifest(&lb(30300, "Cluster"))])
        .expect("policy changed");
    let spec = service_of(&store, "default", "lb").spec.expect("spec");
    assert_eq!(spec.health_check_node_port, None);
}

#[test]
fn ingresses_and_services_an_api_server_refuses_are_refused_with_their_fields() {
    let (_d, store) = store();
    let no_ports =
        "apiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec: {selector: {app: x}}\n";
    assert_eq!(refused_fields(&store, no_ports), ["spec.ports"]);
    let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad}\n\
                   spec:\n  ingressClassName: Bad Class\n  tls: [{hosts: [\"foo.*.example\"], secretName: Not_Valid}]\n  rules:\n\
                   \x20 - host: \"foo.*.example\"\n    http:\n      paths:\n\
                   \x20     - {path: foo, pathType: Prefix, backend: {service: {name: Bad_Svc, port: {number: 70000}}}}\n\
                   \x20     - {path: /a, pathType: Exact, backend: {service: {name: web, port: {number: 80, name: http}}}}\n\
                   \x20     - {path: /b, pathType: Exact, backend: {}}\n";
    assert_eq!(
        refused_fields(&store, ingress),
        [
            "spec.ingressClassName",
            "spec.tls[0].secretName",
            "spec.tls[0].hosts[0]",
            "spec.rules[0].host",
            "spec.rules[0].http.paths[0].path",
            "spec.rules[0].http.paths[0].backend.service.name",
            "spec.rules[0].http.paths[0].backend.service.port.number",
            "spec.rules[0].http.paths[1].backend.service.port",
            "spec.rules[0].http.paths[2].backend",
        ]
    );
    let nothing =
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: nothing}\nspec: {}\n";
    assert_eq!(refused_fields(&store, nothing), ["spec"]);
    assert_eq!(store.generation().expect("generation"), 0);
    // What Kubernetes accepts: an IP in a TLS entry, an empty secret name,
    // 0 and "" as unset, a wildcard host, a headless Service without ports.
    let fine = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: fine}\n\
                spec:\n  tls: [{hosts: [10.0.0.1, \"*.example.com\"], secretName: \"\"}]\n  rules:\n\
                \x20 - host: \"*.example.com\"\n    http:\n      paths:\n\
                \x20     - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 0, name: http}}}}\n\
                \x20     - {path: anything, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80, name: \"\"}}}}\n\
                ---\napiVersion: v1\nkind: Service\nmetadata: {name: pets}\nspec: {clusterIPs: [None]}\n";
    store
        .apply(&[manifest(fine)])
        .expect("valid for Kubernetes");
    let pets = service_of(&store, "default", "pets").spec.expect("spec");
    assert_eq!(pets.cluster_ip.as_deref(), Some("None"));
}

#[test]
fn an_edit_is_not_blocked_by_what_the_stored_object_already_had_wrong() {
    let (_d, store) = store();
    let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: old}\n\
                   spec: {rules: [{http: {paths: [{path: /, pathType: Prefix, \
                   backend: {service: {name: web, port: {number: 80}}}}]}}]}\n";
    store.apply(&[manifest(ingress)]).expect("apply");
    // As stored before the path check existed.
    let file = store.dir().join("ingresses/default/old.yaml");
    let text = fs::read_to_string(&file).expect("read");
    assert!(text.contains("path: /"), "{text}");
    fs::write(&file, text.replace("path: /", "path: old")).expect("write");
    let store = Store::open(store.dir()).expect("fresh handle");
    let key = key(Kind::Ingress, "default", "old");
    store
        .modify(&key, |object| {
            if let Object::Ingress(ingress) = object {
                ingress.status = Some(Default::default());
            }
        })
        .expect("a status write is not refused for the old path");
    let err = store
        .modify(&key, |object| {
            if let Object::Ingress(ingress) = object {
                let spec = ingress.spec.get_or_insert_with(Default::default);
                spec.ingress_class_name = Some("Bad Class".to_owned());
            }
        })
        .expect_err("a new problem is refused");
    assert!(err.to_string().contains("spec.ingressClassName"), "{err}");
}
