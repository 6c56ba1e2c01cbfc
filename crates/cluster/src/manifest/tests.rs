//! Reading manifests: documents, namespace defaulting, lists, and errors
//! that name file, document and field.

use super::*;

fn manifest(text: &str) -> Manifest {
    Manifest {
        origin: "app.yaml".to_owned(),
        text: text.to_owned(),
    }
}

const TWO_DOCS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop}
spec:
  containers: [{name: main, image: x}]
";

#[test]
fn documents_are_read_in_order_with_namespace_defaulted() {
    let (docs, errors) = parse(&manifest(TWO_DOCS));
    assert!(errors.is_empty(), "{errors:?}");
    let keys: Vec<String> = docs.iter().map(|d| d.object.key().to_string()).collect();
    assert_eq!(keys, ["Service default/web", "Pod shop/web-1"]);
    assert_eq!(docs.iter().map(|d| d.index).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn empty_documents_are_skipped_but_counted() {
    let text = format!("---\n# just a comment\n---\n{TWO_DOCS}");
    let (docs, errors) = parse(&manifest(&text));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(docs.iter().map(|d| d.index).collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn an_unknown_kind_names_file_document_and_field() {
    let text =
        format!("{TWO_DOCS}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\n");
    let (docs, errors) = parse(&manifest(&text));
    assert_eq!(docs.len(), 2);
    let msg = errors.first().map(ToString::to_string).unwrap_or_default();
    assert!(
        msg.starts_with("app.yaml: document 3: kind: unknown kind \"Deployment\" (apps/v1)"),
        "{msg}"
    );
}

#[test]
fn a_missing_name_is_reported_on_metadata_name() {
    let (_, errors) = parse(&manifest("apiVersion: v1\nkind: Pod\nmetadata: {}\n"));
    assert_eq!(
        errors.first().map(ToString::to_string).as_deref(),
        Some("app.yaml: document 1: metadata.name: is required")
    );
}

#[test]
fn a_wrong_api_version_for_a_known_kind_says_which_is_served() {
    let (_, errors) = parse(&manifest(
        "apiVersion: v1\nkind: Ingress\nmetadata: {name: a}\n",
    ));
    let msg = errors.first().map(ToString::to_string).unwrap_or_default();
    assert_eq!(
        msg,
        "app.yaml: document 1: apiVersion: Ingress is served as networking.k8s.io/v1, not v1"
    );
}

#[test]
fn a_field_of_the_wrong_type_is_named_by_path() {
    let text =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: [1]}]}\n";
    let (_, errors) = parse(&manifest(text));
    let e = errors.first().cloned().expect("an error");
    assert_eq!((e.document, e.field.as_str()), (1, "spec.ports[0].port"));
}

#[test]
fn broken_yaml_is_an_error_on_its_document() {
    let text = format!("{TWO_DOCS}---\nkind: [unclosed\n");
    let (_, errors) = parse(&manifest(&text));
    let e = errors.first().cloned().expect("an error");
    assert_eq!(e.document, 3);
    assert!(e.reason.starts_with("not valid YAML"), "{}", e.reason);
}

#[test]
fn a_list_expands_to_its_items() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: shop, namespace: x}}\n- {apiVersion: v1, kind: Node, metadata: {name: n1}}\n";
    let (docs, errors) = parse(&manifest(text));
    assert!(errors.is_empty(), "{errors:?}");
    let keys: Vec<String> = docs.iter().map(|d| d.object.key().to_string()).collect();
    assert_eq!(keys, ["Namespace shop", "Node n1"]);
}

#[test]
fn a_directory_is_read_file_by_file_in_name_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("b.yaml"), "b").expect("write");
    std::fs::write(dir.path().join("a.yml"), "a").expect("write");
    std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
    let manifests =
        read_manifests(&[dir.path().to_path_buf()], &mut std::io::empty()).expect("read");
    let texts: Vec<&str> = manifests.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["a", "b"]);
}

#[test]
fn a_dash_reads_stdin() {
    let manifests = read_manifests(&["-".into()], &mut "kind: x".as_bytes()).expect("read");
    assert_eq!(
        manifests,
        [Manifest {
            origin: "-".to_owned(),
            text: "kind: x".to_owned()
        }]
    );
}

#[test]
fn a_key_given_twice_is_an_error_naming_its_path_wherever_it_is() {
    let cases = [
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n  ports: [{port: 81}]\n",
            "spec.ports",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, name: shop}\nspec: {ports: [{port: 80}]}\n",
            "metadata.name",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}, {port: 81, port: 82}]}\n",
            "spec.ports[1].port",
        ),
        ("kind: Service\nkind: Pod\n", "kind"),
        // A repeat inside the value given twice names nothing kept.
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n  ports: [{port: 81, port: 82}]\n",
            "spec.ports",
        ),
    ];
    for (text, expected) in cases {
        // The documents after the refused one are still read and checked.
        let text =
            format!("{TWO_DOCS}---\n{text}---\n{TWO_DOCS}---\napiVersion: v1\nkind: Servic\n");
        let (docs, errors) = parse(&manifest(&text));
        assert_eq!(docs.len(), 4, "{text}");
        let found: Vec<(usize, &str, &str)> = errors
            .iter()
            .map(|e| (e.document, e.field.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(
            found[0],
            (3, expected, "given twice in one mapping"),
            "{found:?}"
        );
        assert_eq!(
            (found.len(), found[1].0, found[1].1),
            (2, 6, "kind"),
            "{found:?}"
        );
    }
}

#[test]
fn values_read_strictly_keep_their_yaml_types() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {a: \"1\", b: x}}\nspec: {ports: [{port: 80, name: ~}], sessionAffinityConfig: {clientIP: {timeoutSeconds: 10800}}}\n";
    let (docs, errors) = parse(&manifest(text));
    assert!(errors.is_empty(), "{errors:?}");
    let Object::Service(service) = &docs[0].object else {
        panic!("not a Service: {:?}", docs[0].object);
    };
    let labels = service.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("a").map(String::as_str), Some("1"));
    let spec = service.spec.clone().unwrap_or_default();
    let ports = spec.ports.unwrap_or_default();
    assert_eq!((ports[0].port, ports[0].name.clone()), (80, None));
}
