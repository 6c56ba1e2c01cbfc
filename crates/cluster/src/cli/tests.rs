//! `weft lab apply|delete|get` as a user runs them: command lines in,
//! printed text out.

use clap::Parser;

use super::*;

const APP: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, labels: {app: web}}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: main, image: weft/serve}]}
";

#[derive(Parser)]
struct Cmd {
    #[command(subcommand)]
    lab: Lab,
}

#[derive(clap::Subcommand)]
enum Lab {
    Apply(ApplyArgs),
    Delete(DeleteArgs),
    Get(GetArgs),
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    manifest: PathBuf,
}

fn lab() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("store");
    let manifest = dir.path().join("app.yaml");
    std::fs::write(&manifest, APP).expect("write manifest");
    Fixture {
        _dir: dir,
        store,
        manifest,
    }
}

fn parse(args: &[&str]) -> Lab {
    let mut argv = vec!["weft"];
    argv.extend_from_slice(args);
    Cmd::try_parse_from(argv).expect("valid command line").lab
}

fn run(lab: &Fixture, args: &[&str], stdin: &str) -> Result<String, CliError> {
    let mut out = Vec::new();
    match parse(args) {
        Lab::Apply(a) => apply(&lab.store, &a, &mut stdin.as_bytes(), &mut out)?,
        Lab::Delete(a) => delete(&lab.store, &a, &mut stdin.as_bytes(), &mut out)?,
        Lab::Get(a) => get(&lab.store, &a, &mut out)?,
    }
    Ok(String::from_utf8(out).expect("utf-8 output"))
}

fn apply_app(lab: &Fixture) -> String {
    let path = lab.manifest.display().to_string();
    run(lab, &["apply", "-f", &path], "").expect("apply")
}

/// Cells of a table line, for tables whose cells hold no spaces.
fn cells(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn store_flag_defaults_to_the_default_lab() {
    let Lab::Get(args) = parse(&["get", "pods"]) else {
        panic!("get")
    };
    // WEFT_STORE may be set by whoever runs the tests.
    let expected = std::env::var("WEFT_STORE").unwrap_or_else(|_| DEFAULT_STORE.to_owned());
    assert_eq!(args.store.store, PathBuf::from(expected));
    let Lab::Apply(args) = parse(&["apply", "--store", "/tmp/x", "-f", "a.yaml", "-f", "-"]) else {
        panic!("apply")
    };
    assert_eq!(args.store.store, PathBuf::from("/tmp/x"));
    assert_eq!(args.files, [PathBuf::from("a.yaml"), PathBuf::from("-")]);
    assert!(
        Cmd::try_parse_from(["weft", "apply"]).is_err(),
        "-f is required"
    );
}

#[test]
fn apply_prints_one_line_per_object_like_kubectl() {
    let lab = lab();
    assert_eq!(apply_app(&lab), "service/web created\npod/web-1 created\n");
    assert_eq!(
        apply_app(&lab),
        "service/web unchanged\npod/web-1 unchanged\n"
    );
}

#[test]
fn apply_reads_stdin_for_dash() {
    let lab = lab();
    let out = run(
        &lab,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    )
    .expect("apply");
    assert_eq!(out, "namespace/shop created\n");
}

#[test]
fn apply_of_an_invalid_file_applies_nothing_and_says_where() {
    let lab = lab();
    let bad = format!(
        "{APP}---\napiVersion: v1\nkind: Service\nmetadata: {{name: db}}\nspec: {{ports: [{{port: 0}}]}}\n"
    );
    let err = run(&lab, &["apply", "-f", "-"], &bad).expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "-: document 3 (Service default/db): spec.ports[0].port: port 0 is out of range 1-65535"
    );
    assert_eq!(
        run(&lab, &["get", "svc"], "").expect("get"),
        "No resources found in default namespace.\n"
    );
}

#[test]
fn get_services_prints_kubectls_table() {
    let lab = lab();
    apply_app(&lab);
    let out = run(&lab, &["get", "svc"], "").expect("get");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        cells(lines[0]),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(
        cells(lines[1])[..5],
        ["web", "NodePort", "10.96.0.2", "<none>", "80:30000/TCP"]
    );
    assert_eq!(lines.len(), 2);
    let header_col = lines[0].find("TYPE");
    assert_eq!(
        header_col,
        lines[1].find("NodePort"),
        "columns are aligned:\n{out}"
    );
}

#[test]
fn get_wide_adds_columns() {
    let lab = lab();
    apply_app(&lab);
    let out = run(&lab, &["get", "pods", "-o", "wide"], "").expect("get");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        cells(lines[0]),
        [
            "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "WORKLOAD"
        ]
    );
    let row = cells(lines[1]);
    assert_eq!(row[..4], ["web-1", "0/1", "Pending", "0"]);
    assert_eq!(row[5..], ["<none>", "node-1", "<none>"]);
    let out = run(&lab, &["get", "svc", "-o", "wide"], "").expect("get");
    assert!(
        out.lines().nth(1).is_some_and(|l| l.ends_with("app=web")),
        "{out}"
    );
}

#[test]
fn get_all_namespaces_adds_a_namespace_column() {
    let lab = lab();
    apply_app(&lab);
    let out = run(&lab, &["get", "endpointslices", "-A"], "").expect("get");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        cells(lines[0]),
        [
            "NAMESPACE",
            "NAME",
            "ADDRESSTYPE",
            "PORTS",
            "ENDPOINTS",
            "AGE"
        ]
    );
    assert_eq!(
        cells(lines[1])[..5],
        ["default", "web-0", "IPv4", "<unset>", "<unset>"]
    );
}

#[test]
fn get_one_object_as_json_prints_the_object() {
    let lab = lab();
    apply_app(&lab);
    let out = run(&lab, &["get", "service", "web", "-o", "json"], "").expect("get");
    let value: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(value["kind"], "Service");
    assert_eq!(value["apiVersion"], "v1");
    assert_eq!(value["spec"]["clusterIP"], "10.96.0.2");
    assert_eq!(value["metadata"]["resourceVersion"], "1");
}

#[test]
fn get_a_kind_as_yaml_prints_a_list_that_applies_back() {
    let lab = lab();
    apply_app(&lab);
    let out = run(&lab, &["get", "pods", "-o", "yaml"], "").expect("get");
    let value: serde_json::Value = serde_yaml_ng::from_str(&out).expect("yaml");
    assert_eq!(value["kind"], "List");
    assert_eq!(value["items"][0]["metadata"]["name"], "web-1");
    assert_eq!(
        run(&lab, &["apply", "-f", "-"], &out).expect("apply back"),
        "pod/web-1 unchanged\n"
    );
}

#[test]
fn get_reports_unknown_kinds_and_missing_objects() {
    let lab = lab();
    let err = run(&lab, &["get", "deployments"], "").expect_err("unknown kind");
    assert_eq!(
        err.to_string(),
        "the server doesn't have a resource type \"deployments\""
    );
    let err = run(&lab, &["get", "svc", "nope"], "").expect_err("missing");
    assert_eq!(err.to_string(), "services \"nope\" not found");
}

#[test]
fn get_nodes_is_not_namespaced() {
    let lab = lab();
    run(
        &lab,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\n",
    )
    .expect("apply");
    let out = run(
        &lab,
        &["get", "nodes", "-n", "kube-system", "-o", "wide"],
        "",
    )
    .expect("get");
    let row: Vec<&str> = out.lines().nth(1).map(cells).unwrap_or_default();
    assert_eq!(row[0], "node-1");
    assert_eq!(row.last().copied(), Some("10.244.0.0/24"));
}

#[test]
fn delete_prints_what_it_deleted_and_fails_on_missing_objects() {
    let lab = lab();
    apply_app(&lab);
    let path = lab.manifest.display().to_string();
    let out = run(&lab, &["delete", "-f", &path], "").expect("delete");
    assert_eq!(out, "service \"web\" deleted\npod \"web-1\" deleted\n");
    let err = run(&lab, &["delete", "-f", &path], "").expect_err("already gone");
    assert_eq!(
        err.to_string(),
        "services \"web\" not found\npods \"web-1\" not found"
    );
    assert_eq!(
        run(&lab, &["delete", "--ignore-not-found", "-f", &path], "").expect("ignored"),
        ""
    );
}

#[test]
fn apply_and_delete_of_no_objects_fail_like_kubectl() {
    let lab = lab();
    for input in ["", "---\n", "# only a comment\n"] {
        let err = run(&lab, &["apply", "-f", "-"], input).expect_err("nothing to apply");
        assert_eq!(err.to_string(), "no objects passed to apply", "{input:?}");
        let err = run(&lab, &["delete", "-f", "-"], input).expect_err("nothing to delete");
        assert_eq!(err.to_string(), "no objects passed to delete", "{input:?}");
    }
}

#[test]
fn one_object_twice_in_one_apply_is_refused() {
    let lab = lab();
    let twice = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
                 apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
    let err = run(&lab, &["apply", "-f", "-"], twice).expect_err("twice");
    assert_eq!(
        err.to_string(),
        "-: document 2 (Namespace shop): metadata.name: Namespace shop is also document 1 of -"
    );
}

#[test]
fn kubernetes_own_namespaces_are_never_deleted() {
    let lab = lab();
    apply_app(&lab);
    let default = "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n";
    let err = run(&lab, &["delete", "-f", "-"], default).expect_err("forbidden");
    assert_eq!(
        err.to_string(),
        "namespaces \"default\" is forbidden: this namespace may not be deleted"
    );
    assert!(run(&lab, &["get", "svc"], "").expect("get").contains("web"));
}

#[test]
fn a_field_the_kind_does_not_have_is_refused_by_name() {
    let lab = lab();
    let typo = "apiVersion: v1\nkind: Service\nmetadata: {name: typo}\n\
                spec: {ports: [{port: 80, tragetPort: 8080}]}\n";
    let err = run(&lab, &["apply", "-f", "-"], typo).expect_err("unknown field");
    assert_eq!(
        err.to_string(),
        "-: document 1 (Service default/typo): spec.ports[0].tragetPort: unknown field"
    );
    let no_spec = "apiVersion: v1\nkind: Service\nmetadata: {name: bare}\n";
    let err = run(&lab, &["apply", "-f", "-"], no_spec).expect_err("no ports");
    assert!(
        err.to_string().contains("spec.ports: at least one port"),
        "{err}"
    );
    // Explicit nulls are what a decoder takes as absent.
    let nulls = "apiVersion: v1\nkind: Service\nmetadata: {name: ok, labels: null}\n\
                 spec: {ports: [{port: 80}], selector: null}\n";
    run(&lab, &["apply", "-f", "-"], nulls).expect("nulls are fine");
}
