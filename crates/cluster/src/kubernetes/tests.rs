//! The source against recorded API traffic: a `tower-test` mock service
//! plays the API server's side of a scenario (list, watch events, a
//! bookmark, a dropped connection, a 410 Gone forcing a relist).

use std::time::{Duration, Instant};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

use super::*;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn pod(name: &str, ip: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": rv, "uid": format!("uid-{name}")},
        "spec": {"nodeName": "node-1", "containers": [{"name": "main"}]},
        "status": {"phase": "Running", "podIP": ip}
    })
}

fn pod_list(rv: &str, items: Vec<Value>) -> Vec<u8> {
    let list = json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": rv},
        "items": items,
    });
    serde_json::to_vec(&list).unwrap_or_default()
}

fn watch_events(events: &[(&str, Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, object) in events {
        out.extend(
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default(),
        );
        out.push(b'\n');
    }
    out
}

fn bookmark(rv: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"resourceVersion": rv}})
}

fn gone() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": "too old resource version: 13 (20)", "reason": "Expired", "code": 410
    })
}

/// The next request, its path and query.
async fn next_request(handle: &mut Handle) -> (String, mock::SendResponse<Response<Body>>) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("the source asks the API server in time")
        .expect("the client is still there");
    (req.uri().to_string(), send)
}

fn respond(send: mock::SendResponse<Response<Body>>, body: Vec<u8>) {
    send.send_response(
        Response::builder()
            .body(Body::from(body))
            .expect("response"),
    );
}

fn pod_names(cluster: &Cluster) -> Vec<String> {
    cluster
        .read()
        .pods()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn list_watch_bookmark_drop_and_410_relist_keep_the_index_true() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let source = KubernetesSource::new(client)
        .kinds(&[Kind::Pod])
        .pods_on_node("node-1");
    let health = source.health();
    let cluster = Cluster::new();
    let task = tokio::spawn(source.run(cluster.clone()));

    // 1. The initial list, filtered to the node.
    let (uri, send) = next_request(&mut handle).await;
    assert!(uri.starts_with("/api/v1/pods?"), "{uri}");
    assert!(!uri.contains("watch=true"), "a list first: {uri}");
    assert!(
        uri.contains("fieldSelector=spec.nodeName%3Dnode-1"),
        "{uri}"
    );
    assert!(!cluster.is_synced());
    respond(
        send,
        pod_list(
            "10",
            vec![pod("a", "10.244.1.2", "9"), pod("b", "10.244.1.3", "10")],
        ),
    );

    // 2. A watch from the list's version: an add, a delete, a bookmark, then
    //    the connection drops (the body ends).
    let (uri, send) = next_request(&mut handle).await;
    assert!(
        uri.contains("watch=true") && uri.contains("resourceVersion=10"),
        "{uri}"
    );
    assert!(uri.contains("allowWatchBookmarks=true"), "{uri}");
    assert!(cluster.is_synced(), "synced after the first complete list");
    assert_eq!(pod_names(&cluster), ["a", "b"]);
    respond(
        send,
        watch_events(&[
            ("ADDED", pod("c", "10.244.1.4", "11")),
            ("DELETED", pod("a", "10.244.1.2", "12")),
            ("BOOKMARK", bookmark("13")),
        ]),
    );

    // 3. After the drop the watch resumes from the bookmark, and the server
    //    says that version is gone.
    let (uri, send) = next_request(&mut handle).await;
    assert!(
        uri.contains("watch=true") && uri.contains("resourceVersion=13"),
        "{uri}"
    );
    assert_eq!(pod_names(&cluster), ["b", "c"]);
    let ip: std::net::IpAddr = "10.244.1.4".parse().expect("ip");
    assert!(cluster.read().pod_by_ip(ip).is_some());
    respond(send, watch_events(&[("ERROR", gone())]));

    // 4. The watcher relists; until the list arrives the cluster keeps the
    //    last known state and the outage shows in health.
    let (uri, send) = next_request(&mut handle).await;
    assert!(!uri.contains("watch=true"), "a relist: {uri}");
    assert_eq!(pod_names(&cluster), ["b", "c"]);
    let report = health.report();
    assert_eq!(report.errors, 1);
    assert!(report.failing.contains(&Kind::Pod));
    assert!(report.last_error.is_some_and(|e| e.starts_with("Pod: ")));
    respond(
        send,
        pod_list(
            "20",
            vec![pod("b", "10.244.1.3", "10"), pod("d", "10.244.1.5", "19")],
        ),
    );

    // 5. The relist replaced the pods: c, deleted during the outage, is gone.
    let (uri, send) = next_request(&mut handle).await;
    assert!(
        uri.contains("watch=true") && uri.contains("resourceVersion=20"),
        "{uri}"
    );
    eventually("the relisted pods", || pod_names(&cluster) == ["b", "d"]).await;
    assert!(cluster.read().pod_by_ip(ip).is_none());
    assert!(health.report().failing.is_empty());
    assert!(health.report().synced);

    task.abort();
    drop(send);
}

#[tokio::test]
async fn an_api_server_error_is_reported_and_retried_until_it_answers() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let source = KubernetesSource::new(Client::new(service, "default")).kinds(&[Kind::Service]);
    let health = source.health();
    let cluster = Cluster::new();
    let task = tokio::spawn(source.run(cluster.clone()));

    let (uri, send) = next_request(&mut handle).await;
    assert!(uri.starts_with("/api/v1/services?"), "{uri}");
    let status = json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": "etcd is unavailable", "reason": "ServiceUnavailable", "code": 503
    });
    send.send_response(
        Response::builder()
            .status(503)
            .body(Body::from(serde_json::to_vec(&status).unwrap_or_default()))
            .expect("response"),
    );

    // The retry comes after a backoff; meanwhile the outage is visible.
    let (uri, send) = next_request(&mut handle).await;
    assert!(!uri.contains("watch=true"), "the list is retried: {uri}");
    let report = health.report();
    assert!(!report.synced && !cluster.is_synced());
    assert_eq!(report.errors, 1);
    assert!(report.failing.contains(&Kind::Service));
    let list = json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "5"}, "items": []});
    respond(send, serde_json::to_vec(&list).unwrap_or_default());

    let (_, send) = next_request(&mut handle).await;
    assert!(cluster.is_synced());
    assert!(health.report().failing.is_empty());
    task.abort();
    drop(send);
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn a_real_cluster_syncs_every_kind() {
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG or in-cluster config");
    let cluster = Cluster::new();
    let task = tokio::spawn(KubernetesSource::new(client).run(cluster.clone()));
    eventually("the first complete list", || cluster.is_synced()).await;
    assert!(cluster.read().namespace("kube-system").is_some());
    assert!(cluster.read().nodes().count() > 0);
    task.abort();
}
