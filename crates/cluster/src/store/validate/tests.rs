//! Every validation error, applied through a store: the message names file,
//! document, object and field, and nothing from the file is written.

use crate::manifest::Manifest;
use crate::store::{Store, StoreError};

const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, labels: {app: web}}\nspec: {containers: [{name: main}]}\n";

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("open store");
    (dir, store)
}

fn service(spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {spec}\n")
}

/// Applies `WEB` then `doc` as documents 1 and 2 of `bad.yaml` and returns
/// the error lines; checks that nothing was written.
fn rejected(store: &Store, doc: &str) -> Vec<String> {
    let before = store.generation().expect("generation");
    let manifest = Manifest {
        origin: "bad.yaml".to_owned(),
        text: format!("{WEB}---\n{doc}"),
    };
    let err = store.apply(&[manifest]).expect_err("invalid manifest");
    assert_eq!(
        store.generation().expect("generation"),
        before,
        "nothing committed"
    );
    assert!(
        store
            .get(&crate::ObjectKey::new(crate::Kind::Pod, "default", "web-1"))
            .expect("get")
            .is_none()
    );
    match err {
        StoreError::Invalid(list) => list.iter().map(ToString::to_string).collect(),
        other => panic!("not a validation error: {other}"),
    }
}

fn apply_ok(store: &Store, text: &str) {
    let manifest = Manifest {
        origin: "ok.yaml".to_owned(),
        text: text.to_owned(),
    };
    store.apply(&[manifest]).expect("valid manifest");
}

#[test]
fn unknown_kind_is_rejected_naming_kind() {
    let (_d, store) = store();
    let errors = rejected(
        &store,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
    );
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("bad.yaml: document 2: kind: unknown kind \"Deployment\""),
        "{errors:?}"
    );
}

#[test]
fn missing_name_is_rejected_naming_metadata_name() {
    let (_d, store) = store();
    let errors = rejected(
        &store,
        "apiVersion: v1\nkind: Service\nmetadata: {namespace: default}\nspec: {}\n",
    );
    assert_eq!(errors, ["bad.yaml: document 2: metadata.name: is required"]);
}

#[test]
fn bad_selector_is_rejected_naming_spec_selector() {
    let (_d, store) = store();
    let errors = rejected(
        &store,
        &service("{selector: {app: 'not valid!'}, ports: [{port: 80}]}"),
    );
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("bad.yaml: document 2 (Service default/web): spec.selector: bad selector: value \"not valid!\""),
        "{errors:?}"
    );
}

#[test]
fn service_port_out_of_range_is_rejected_naming_the_port() {
    let (_d, store) = store();
    let errors = rejected(&store, &service("{ports: [{port: 70000}]}"));
    assert_eq!(
        errors,
        [
            "bad.yaml: document 2 (Service default/web): spec.ports[0].port: port 70000 is out of range 1-65535"
        ]
    );
}

#[test]
fn node_port_outside_the_range_is_rejected() {
    let (_d, store) = store();
    let errors = rejected(
        &store,
        &service("{type: NodePort, ports: [{port: 80, nodePort: 8080}]}"),
    );
    assert_eq!(
        errors,
        [
            "bad.yaml: document 2 (Service default/web): spec.ports[0].nodePort: 8080 is outside the NodePort range 30000-32767"
        ]
    );
}

#[test]
fn node_port_already_taken_is_rejected_naming_the_holder() {
    let (_d, store) = store();
    apply_ok(
        &store,
        "apiVersion: v1\nkind: Service\nmetadata: {name: other}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 30080}]}\n",
    );
    let errors = rejected(
        &store,
        &service(
            "{type: NodePort, ports: [{name: a, port: 80}, {name: b, port: 81, nodePort: 30080}]}",
        ),
    );
    assert_eq!(
        errors,
        [
            "bad.yaml: document 2 (Service default/web): spec.ports[1].nodePort: 30080 is already allocated to Service default/other"
        ]
    );
}

#[test]
fn node_port_taken_earlier_in_the_same_file_is_rejected() {
    let (_d, store) = store();
    let first = "apiVersion: v1\nkind: Service\nmetadata: {name: first}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 30080}]}\n";
    let errors = rejected(
        &store,
        &format!(
            "{first}---\n{}",
            service("{type: NodePort, ports: [{port: 80, nodePort: 30080}]}")
        ),
    );
    assert_eq!(
        errors,
        [
            "bad.yaml: document 3 (Service default/web): spec.ports[0].nodePort: 30080 is already allocated to Service default/first"
        ]
    );
}

#[test]
fn cluster_ip_outside_the_service_cidr_is_rejected() {
    let (_d, store) = store();
    let errors = rejected(
        &store,
        &service("{clusterIP: 192.168.1.10, ports: [{port: 80}]}"),
    );
    assert_eq!(
        errors,
        [
            "bad.yaml: document 2 (Service default/web): spec.clusterIP: 192.168.1.10 is outside the service CIDR 10.96.0.0/12"
        ]
    );
}

#[test]
fn cluster_ip_already_taken_is_rejected_naming_the_holder() {
    let (_d, store) = store();
    apply_ok(
        &store,
        "apiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: kube-system}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 53}]}\n",
    );
    let errors = rejected(
        &store,
        &service("{clusterIP: 10.96.0.10, ports: [{port: 80}]}"),
    );
    assert_eq!(
        errors,
        [
            "bad.yaml: document 2 (Service default/web): spec.clusterIP: 10.96.0.10 is already allocated to Service kube-system/dns"
        ]
    );
}

#[test]
fn a_changed_cluster_ip_is_rejected_as_immutable() {
    let (_d, store) = store();
    apply_ok(&store, &service("{ports: [{port: 80}]}"));
    let errors = rejected(
        &store,
        &service("{clusterIP: 10.96.0.99, ports: [{port: 80}]}"),
    );
    assert_eq!(
        errors,
        [
            "bad.yaml: document 2 (Service default/web): spec.clusterIP: field is immutable (is 10.96.0.2)"
        ]
    );
}

#[test]
fn an_object_in_a_missing_namespace_is_rejected() {
    let (_d, store) = store();
    let errors = rejected(
        &store,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n",
    );
    assert_eq!(
        errors,
        [
            "bad.yaml: document 2 (Service shop/web): metadata.namespace: namespace \"shop\" not found"
        ]
    );
}

#[test]
fn a_namespace_created_in_the_same_file_is_enough() {
    let (_d, store) = store();
    apply_ok(
        &store,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    );
}

#[test]
fn every_problem_of_every_document_is_reported_at_once() {
    let (_d, store) = store();
    let errors = rejected(
        &store,
        &service("{type: Bogus, ports: [{port: 0}, {port: 80, protocol: ICMP}]}"),
    );
    let fields: Vec<&str> = errors.iter().filter_map(|e| e.split(": ").nth(2)).collect();
    assert_eq!(
        fields,
        [
            "spec.type",
            "spec.ports[0].port",
            "spec.ports[0].name",
            "spec.ports[1].protocol",
            "spec.ports[1].name"
        ]
    );
}
