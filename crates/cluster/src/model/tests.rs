//! Kinds, keys and the JSON form of objects.

use super::*;

#[test]
fn cli_names_resolve_like_kubectl() {
    assert_eq!(Kind::from_cli("svc"), Some(Kind::Service));
    assert_eq!(Kind::from_cli("Pods"), Some(Kind::Pod));
    assert_eq!(Kind::from_cli("po"), Some(Kind::Pod));
    assert_eq!(
        Kind::from_cli("endpointslices.discovery.k8s.io"),
        Some(Kind::EndpointSlice)
    );
    assert_eq!(Kind::from_cli("ingress"), Some(Kind::Ingress));
    assert_eq!(Kind::from_cli("deployments"), None);
}

#[test]
fn keys_of_cluster_scoped_kinds_have_no_namespace() {
    let key = ObjectKey::new(Kind::Node, "default", "node-1");
    assert_eq!(key.namespace, "");
    assert_eq!(key.to_string(), "Node node-1");
    assert_eq!(
        ObjectKey::new(Kind::Service, "default", "web").to_string(),
        "Service default/web"
    );
}

#[test]
fn kubectl_resource_names_carry_the_api_group() {
    assert_eq!(Kind::Service.resource(), "service");
    assert_eq!(
        Kind::EndpointSlice.resource(),
        "endpointslice.discovery.k8s.io"
    );
}

#[test]
fn objects_serialize_with_api_version_and_kind() {
    let value = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"port": 80}]}
    });
    let obj = Object::from_json(Kind::Service, value.clone()).expect("valid service");
    assert_eq!(obj.key(), ObjectKey::new(Kind::Service, "default", "web"));
    assert_eq!(obj.to_json(), value);
}

#[test]
fn a_field_of_the_wrong_type_is_reported_by_its_path() {
    let value = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": "eighty"}]}
    });
    let err = Object::from_json(Kind::Service, value).expect_err("port is a string");
    assert_eq!(err.path().to_string(), "spec.ports[0].port");
}
