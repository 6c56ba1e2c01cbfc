//! End-to-end tests of `weft ingress` inside a throwaway network namespace:
//! the controller fed by an embedded store, backend "pods" as HTTP and
//! WebSocket servers on 127.0.0.x, and real clients (HTTP/1.1, HTTP/2 over
//! TLS with ALPN, h2c, WebSocket, raw TCP for the limits).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use weft_cluster::manifest::Manifest;
use weft_cluster::store::WATCH_INTERVAL;
use weft_cluster::{Cluster, Kind, Object, ObjectKey, Store};
use weft_ingress::source::StatusWriter;
use weft_ingress::{Controller, IngressArgs};
use weft_testhost::{TestNs, require_root};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: IngressArgs,
}

/// Longer than any test here takes on a busy machine.
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Runs an async test body on a runtime inside a fresh namespace.
fn in_namespace<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = ()>,
{
    // The access log's subscriber is the process's, installed before any
    // test starts its threads: none of them registers a callsite while the
    // global subscriber is being set.
    access_log();
    let ns = TestNs::new();
    ns.run(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // A test that waits forever fails instead of holding up the run.
        let finished = runtime.block_on(async { tokio::time::timeout(TEST_LIMIT, body()).await });
        runtime.shutdown_timeout(Duration::from_secs(2));
        finished.expect("the test did not finish within its time limit");
    });
}

// ---------------------------------------------------------------- backends

/// A backend "pod": an HTTP server on `addr` answering
/// - `/upload`: the number of body bytes received (read as a stream);
/// - `/download?bytes=N`: N bytes, streamed in 64 KiB chunks;
/// - `/slow?ms=N`: after N ms;
/// - anything else: `backend=<name>` and what it saw, one `key=value` a line.
///
/// Dropping (or aborting) it closes the listener and every connection.
struct Backend {
    tasks: JoinSet<()>,
}

impl Backend {
    async fn start(name: &'static str, addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(name, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend { tasks }
    }

    /// A WebSocket echo server.
    async fn websocket(addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_close() || ws.send(message).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Backend { tasks }
    }

    fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(text: String) -> TestBody {
    Full::new(Bytes::from(text)).boxed()
}

async fn answer(
    name: &'static str,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let query = req.uri().query().unwrap_or_default().to_owned();
    let number = |key: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    match req.uri().path() {
        "/upload" => {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    total += data.len() as u64;
                }
            }
            Ok(Response::new(full(total.to_string())))
        }
        "/download" => {
            let total = number("bytes");
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = total.div_ceil(chunk.len() as u64);
            let stream = futures::stream::iter((0..chunks).map(move |i| {
                let left = total - i * chunk.len() as u64;
                let take = usize::try_from(left.min(chunk.len() as u64)).unwrap();
                Ok::<_, Infallible>(Frame::data(chunk.slice(..take)))
            }));
            Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(number("ms"))).await;
            Ok(Response::new(full(format!("backend={name}\nslow=done\n"))))
        }
        path => {
            let header = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            let mut text = format!("backend={name}\npath={path}\n");
            for h in [
                "host",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "forwarded",
                "x-real-ip",
                "connection",
                "x-hop",
                "keep-alive",
            ] {
                text.push_str(&format!("{h}={}\n", header(h)));
            }
            Ok(Response::new(full(text)))
        }
    }
}

// ------------------------------------------------------------- controller

/// The controller on 127.0.0.1 (random ports) with its store.
struct Ingress {
    bound: weft_ingress::Bound,
    store: Store,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), weft_ingress::IngressError>>,
    _watcher: weft_cluster::store::StoreWatcher,
    _dir: tempfile::TempDir,
}

impl Ingress {
    async fn start(yaml: &str, extra: &[&str]) -> Ingress {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        apply(&store, yaml);
        let cluster = Cluster::new();
        let watcher = store.watch(&cluster, WATCH_INTERVAL).unwrap();
        let mut argv = vec!["--publish-address", "192.0.2.10"];
        argv.extend_from_slice(extra);
        let args = loopback_args(&argv);
        let controller = Controller::bind(&args, cluster, StatusWriter::Store(store.clone()))
            .await
            .unwrap();
        let bound = controller.bound();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(controller.serve(async move {
            let _ = stopped.await;
        }));
        Ingress {
            bound,
            store,
            stop: Some(stop),
            served,
            _watcher: watcher,
            _dir: dir,
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.served).await;
    }
}

/// Controller arguments listening on 127.0.0.1 (random ports), then `extra`.
fn loopback_args(extra: &[&str]) -> IngressArgs {
    let mut argv = vec![
        "ingress",
        "--http-listen",
        "127.0.0.1:0",
        "--https-listen",
        "127.0.0.1:0",
        "--ops-listen",
        "127.0.0.1:0",
    ];
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).args
}

fn apply(store: &Store, yaml: &str) {
    store
        .apply(&[Manifest {
            origin: "test.yaml".to_owned(),
            text: yaml.to_owned(),
        }])
        .unwrap();
}

/// Polls `check` every 50 ms for up to 5 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A Service `name` on port 80 (named http) whose slice lists `ips` on
/// `port` (no selector: the slice is the test's).
fn service(name: &str, ips: &[&str], port: u16) -> String {
    let endpoints: Vec<String> = ips
        .iter()
        .map(|ip| format!("{{addresses: [\"{ip}\"], conditions: {{ready: true}}}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{ports: [{{name: http, port: 80, targetPort: {port}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\n\
         endpoints: [{}]\n---\n",
        endpoints.join(", ")
    )
}

// ---------------------------------------------------------------- clients

/// One HTTP/1.1 request on a new connection.
async fn request(
    addr: SocketAddr,
    req: Request<TestBody>,
) -> Result<Response<Incoming>, hyper::Error> {
    http1(addr).await.send_request(req).await
}

/// An HTTP/1.1 keep-alive connection to `addr`, driven by a task of its
/// own.
async fn http1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<TestBody> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::new().boxed())
        .unwrap();
    let response = request(addr, req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// An HTTP/2 connection with prior knowledge (h2c) to `addr`, and the
/// task driving it, which ends when the connection does.
async fn h2c(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<TestBody>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(conn))
}

/// The status and body of `req` sent on `sender`.
async fn send_h2(
    sender: &mut hyper::client::conn::http2::SendRequest<TestBody>,
    req: Request<TestBody>,
) -> (StatusCode, String) {
    let response = sender.send_request(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn field<'a>(body: &'a str, key: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("")
}

const A: &str = "127.0.0.2:8080";
const B: &str = "127.0.0.3:8080";
const C: &str = "127.0.0.4:8080";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn two_hosts_three_paths() -> String {
    service("app", &["127.0.0.2"], 8080)
        + &service("api", &["127.0.0.3"], 8080)
        + &service("empty", &[], 8080)
        + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop, namespace: default}\n\
           spec:\n  ingressClassName: weft\n  rules:\n\
           \x20 - host: shop.example.com\n    http:\n      paths:\n\
           \x20     - {path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}\n\
           \x20     - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}\n\
           \x20     - {path: /down, pathType: Exact, backend: {service: {name: empty, port: {number: 80}}}}\n\
           \x20 - host: \"*.api.example.com\"\n    http:\n      paths:\n\
           \x20     - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}\n"
}

// ------------------------------------------------------------------ tests

#[test]
fn routes_by_host_and_path_with_forwarding_headers() {
    require_root!();
    in_namespace(|| async {
        let _a = Backend::start("a", addr(A)).await;
        let _b = Backend::start("b", addr(B)).await;
        let ingress = Ingress::start(&two_hosts_three_paths(), &[]).await;
        let http = ingress.bound.http;

        let (status, body) = get(http, "shop.example.com", "/cart").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(field(&body, "backend"), "a");
        assert_eq!(field(&body, "path"), "/cart");
        let (_, body) = get(http, "shop.example.com", "/api/v1").await;
        assert_eq!(field(&body, "backend"), "b");
        let (_, body) = get(http, "shop.example.com", "/apix").await;
        assert_eq!(field(&body, "backend"), "a", "prefix is element-wise");
        let (_, body) = get(http, "eu.api.example.com:8443", "/x").await;
        assert_eq!(field(&body, "backend"), "b", "wildcard host, port ignored");

        // Forwarding headers set from what the proxy saw; Host kept.
        assert_eq!(field(&body, "host"), "eu.api.example.com:8443");
        assert_eq!(field(&body, "x-forwarded-for"), "127.0.0.1");
        assert_eq!(field(&body, "x-real-ip"), "127.0.0.1");
        assert_eq!(field(&body, "x-forwarded-proto"), "http");
        assert_eq!(field(&body, "x-forwarded-host"), "eu.api.example.com:8443");
        assert_eq!(
            field(&body, "forwarded"),
            "for=127.0.0.1;host=\"eu.api.example.com:8443\";proto=http"
        );

        // Hop-by-hop headers (and those Connection names) are dropped; a
        // client-sent X-Forwarded-For is not trusted.
        let req = Request::get("/h")
            .header("host", "shop.example.com")
            .header("connection", "keep-alive, x-hop")
            .header("keep-alive", "timeout=5")
            .header("x-hop", "secret")
            .header("x-forwarded-for", "6.6.6.6")
            .body(Empty::new().boxed())
            .unwrap();
        let response = request(http, req).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(field(&body, "x-hop"), "-");
        assert_eq!(field(&body, "keep-alive"), "-");
        assert_eq!(field(&body, "x-forwarded-for"), "127.0.0.1");

        // No endpoints → 503; unknown host → 404, with plain bodies.
        let (status, body) = get(http, "shop.example.com", "/down").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("default/empty:80"), "{body}");
        let (status, body) = get(http, "nowhere.example.com", "/").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("nowhere.example.com"), "{body}");

        // h2c (HTTP/2 with prior knowledge) on the plain port.
        let (mut sender, _conn) = h2c(http).await;
        let req = Request::get("http://shop.example.com/api/h2c")
            .body(Empty::new().boxed())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(field(&body, "backend"), "b");
        assert_eq!(field(&body, "host"), "shop.example.com");

        // Status written into the Ingress, and metrics by Ingress and status.
        let store = ingress.store.clone();
        eventually("the Ingress status", async || {
            let key = ObjectKey::new(Kind::Ingress, "default", "shop");
            let Ok(Some(Object::Ingress(ing))) = store.get(&key) else {
                return false;
            };
            let ips: Vec<Option<String>> = ing
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .unwrap_or_default()
                .into_iter()
                .map(|i| i.ip)
                .collect();
            ips == vec![Some("192.0.2.10".to_owned())]
        })
        .await;
        let (_, metrics) = get(ingress.bound.ops, "x", "/metrics").await;
        assert!(
            metrics
                .contains("weft_ingress_requests_total{ingress=\"default/shop\",status=\"200\"}"),
            "{metrics}"
        );
        assert!(metrics.contains("status=\"503\""), "{metrics}");
        let (status, _) = get(ingress.bound.ops, "x", "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        ingress.shutdown().await;
    });
}

#[test]
fn round_robin_spreads_and_a_deleted_backend_causes_no_errors() {
    require_root!();
    in_namespace(|| async {
        let mut a = Backend::start("a", addr(A)).await;
        let _b = Backend::start("b", addr(B)).await;
        let _c = Backend::start("c", addr(C)).await;
        let yaml = service("app", &["127.0.0.2", "127.0.0.3", "127.0.0.4"], 8080)
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: rr, namespace: default}\n\
               spec: {ingressClassName: weft, defaultBackend: {service: {name: app, port: {number: 80}}}}\n";
        // One worker: round-robin is per worker, and this checks its order.
        let ingress = Ingress::start(&yaml, &["--workers", "1"]).await;
        let http = ingress.bound.http;
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..30 {
            let (status, body) = get(http, "any", "/").await;
            assert_eq!(status, StatusCode::OK);
            *seen.entry(field(&body, "backend").to_owned()).or_insert(0) += 1;
        }
        assert_eq!(
            seen.values().copied().collect::<Vec<i32>>(),
            vec![10, 10, 10],
            "{seen:?}"
        );

        // A keep-alive client keeps requesting while backend a goes away
        // (before its endpoint leaves the slice): every request still
        // succeeds, retried on another endpoint.
        let mut sender = http1(http).await;
        for i in 0..60 {
            if i == 20 {
                a.stop();
            }
            if i == 40 {
                apply(
                    &ingress.store,
                    &service("app", &["127.0.0.3", "127.0.0.4"], 8080),
                );
            }
            let req = Request::get("/")
                .header("host", "any")
                .body(Empty::<Bytes>::new().boxed())
                .unwrap();
            sender.ready().await.unwrap();
            let response = sender.send_request(req).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(
                status,
                StatusCode::OK,
                "request {i}: {}",
                String::from_utf8_lossy(&body)
            );
            if i > 20 {
                assert_ne!(field(&String::from_utf8_lossy(&body), "backend"), "a");
            }
        }
        ingress.shutdown().await;
    });
}

#[test]
fn streams_100_mb_both_ways_without_buffering() {
    require_root!();
    in_namespace(|| async {
        let _a = Backend::start("a", addr(A)).await;
        let yaml = service("app", &["127.0.0.2"], 8080)
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: big, namespace: default}\n\
               spec: {ingressClassName: weft, defaultBackend: {service: {name: app, port: {number: 80}}}}\n";
        let ingress = Ingress::start(&yaml, &[]).await;
        let http = ingress.bound.http;
        const SIZE: u64 = 100 * 1024 * 1024;
        let before = peak_rss_kib();

        // Upload: 100 MB produced chunk by chunk, never held whole.
        let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
        let chunks = SIZE / chunk.len() as u64;
        let stream = futures::stream::iter(
            (0..chunks).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
        );
        let req = Request::post("/upload")
            .header("host", "big")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap();
        let response = request(http, req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(String::from_utf8_lossy(&body), SIZE.to_string());

        // Download: counted frame by frame.
        let req = Request::get(format!("/download?bytes={SIZE}"))
            .header("host", "big")
            .body(Empty::new().boxed())
            .unwrap();
        let response = request(http, req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.unwrap().data_ref() {
                total += data.len() as u64;
            }
        }
        assert_eq!(total, SIZE);
        // Everything here (client, proxy, backend) shares this process: had
        // any of them held a whole body, the peak would have grown by 100 MB.
        let grown = peak_rss_kib().saturating_sub(before);
        assert!(grown < 48 * 1024, "peak RSS grew by {grown} KiB");
        ingress.shutdown().await;
    });
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn websocket_echo_through_the_ingress() {
    require_root!();
    in_namespace(|| async {
        let _ws = Backend::websocket(addr(A)).await;
        let yaml = service("ws", &["127.0.0.2"], 8080)
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: ws, namespace: default}\n\
               spec:\n  ingressClassName: weft\n  rules:\n  - host: ws.example.com\n    http:\n      paths:\n\
               \x20     - {path: /chat, pathType: Prefix, backend: {service: {name: ws, port: {number: 80}}}}\n";
        let ingress = Ingress::start(&yaml, &[]).await;
        let stream = TcpStream::connect(ingress.bound.http).await.unwrap();
        let (mut ws, response) =
            tokio_tungstenite::client_async("ws://ws.example.com/chat", stream)
                .await
                .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        for i in 0..10 {
            let text = format!("hello {i}");
            ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
                .await
                .unwrap();
            let echoed = ws.next().await.unwrap().unwrap();
            assert_eq!(echoed.into_text().unwrap().as_str(), text);
        }
        let binary = vec![7u8; 200_000];
        ws.send(tokio_tungstenite::tungstenite::Message::binary(
            binary.clone(),
        ))
        .await
        .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap().into_data().to_vec(),
            binary
        );
        ws.close(None).await.unwrap();
        ingress.shutdown().await;
    });
}

/// A self-signed certificate for `names`: (PEM chain, PEM key, DER).
fn certificate(names: &[&str]) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

fn tls_secret(name: &str, cert: &(String, String, Vec<u8>)) -> String {
    // YAML double-quoted strings take the same \n escapes as Rust's Debug.
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\n\
         type: kubernetes.io/tls\nstringData: {{tls.crt: {:?}, tls.key: {:?}}}\n---\n",
        cert.0, cert.1
    )
}

fn tls_ingress() -> String {
    "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: secure, namespace: default,\n\
     \x20 annotations: {weft.dev/ssl-redirect: \"true\"}}\n\
     spec:\n  ingressClassName: weft\n\
     \x20 tls:\n  - {hosts: [a.example.com], secretName: cert-a}\n  - {hosts: [b.example.com], secretName: cert-b}\n\
     \x20 rules:\n\
     \x20 - host: a.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]}\n\
     \x20 - host: b.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}]}\n"
        .to_owned()
}

/// A TLS client that accepts any certificate (the test checks which one
/// it got) and offers h2 and http/1.1.
fn tls_client() -> tokio_rustls::TlsConnector {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Sends nothing on `stream` and checks that the ingress closes it once
/// `header_timeout` has passed (not before), within 4 s more.
async fn assert_closed_while_silent<S>(mut stream: S, header_timeout: Duration, what: &str)
where
    S: tokio::io::AsyncRead + Unpin,
{
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let limit = header_timeout + Duration::from_secs(4);
    let read = tokio::time::timeout(limit, stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "{what} that sends nothing was not closed within {limit:?}: {read:?}"
    );
    let held = started.elapsed();
    assert!(
        held >= header_timeout.mul_f32(0.9),
        "{what} was closed after {held:?}, before the header timeout"
    );
}

/// Connects with SNI `name`; returns the stream and the leaf certificate.
async fn tls_connect(
    https: SocketAddr,
    name: &str,
) -> (tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>) {
    let tcp = TcpStream::connect(https).await.unwrap();
    let server_name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let stream = tls_client().connect(server_name, tcp).await.unwrap();
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (stream, leaf)
}

#[test]
fn tls_picks_certificates_by_sni_speaks_h2_and_rotates_without_restart() {
    require_root!();
    in_namespace(|| async {
        let _a = Backend::start("a", addr(A)).await;
        let _b = Backend::start("b", addr(B)).await;
        let cert_a = certificate(&["a.example.com"]);
        let cert_b = certificate(&["b.example.com"]);
        let yaml = service("app", &["127.0.0.2"], 8080)
            + &service("api", &["127.0.0.3"], 8080)
            + &tls_secret("cert-a", &cert_a)
            + &tls_secret("cert-b", &cert_b)
            + &tls_ingress();
        let ingress = Ingress::start(
            &yaml,
            &["--https-redirect-port", "8443", "--header-timeout", "2s"],
        )
        .await;
        let https = ingress.bound.https;

        // A client that completes the handshake and then sends nothing is
        // closed after the header timeout.
        let (silent, _) = tls_connect(https, "a.example.com").await;
        assert_closed_while_silent(silent, Duration::from_secs(2), "a TLS connection").await;

        // SNI chooses the certificate; ALPN gives h2; routing by :authority.
        for (name, cert, backend) in [
            ("a.example.com", &cert_a, "a"),
            ("b.example.com", &cert_b, "b"),
        ] {
            let (stream, leaf) = tls_connect(https, name).await;
            assert_eq!(leaf, cert.2, "certificate for {name}");
            assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = Request::get(format!("https://{name}/x"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = sender.send_request(req).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body);
            assert_eq!(field(&body, "backend"), backend);
            assert_eq!(field(&body, "x-forwarded-proto"), "https");
        }

        // Plain HTTP to a redirected Ingress: 308 to the HTTPS port.
        let req = Request::get("/p?q=1")
            .header("host", "a.example.com")
            .body(Empty::new().boxed())
            .unwrap();
        let response = request(ingress.bound.http, req).await.unwrap();
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            response.headers()["location"],
            "https://a.example.com:8443/p?q=1"
        );

        // Rotation: a client keeps making requests on new TLS connections
        // while the Secret changes; none fails, and the new certificate is
        // served soon after, without a restart.
        let rotated = certificate(&["a.example.com"]);
        let rotated_der = rotated.2.clone();
        let client = tokio::spawn(async move {
            let mut got_new = false;
            for _ in 0..200 {
                let (stream, leaf) = tls_connect(https, "a.example.com").await;
                let (mut sender, conn) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(stream),
                )
                .await
                .unwrap();
                tokio::spawn(conn);
                let req = Request::get("https://a.example.com/r")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let response = sender.send_request(req).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                if leaf == rotated_der {
                    got_new = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            got_new
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        apply(&ingress.store, &tls_secret("cert-a", &rotated));
        assert!(
            client.await.unwrap(),
            "the rotated certificate was never served"
        );
        ingress.shutdown().await;
    });
}

/// A backend "pod" on `addr` that hands every connection to `serve`, on
/// a task of its own.
async fn raw_backend<F, Fut>(addr: SocketAddr, serve: F) -> JoinSet<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.unwrap();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve(stream));
        }
    });
    tasks
}

/// A backend that answers every request with a body delimited only by the
/// end of the connection (no Content-Length, not chunked), as an old
/// HTTP/1.0-style server does.
async fn until_close_backend(addr: SocketAddr) -> JoinSet<()> {
    raw_backend(addr, |mut stream| async move {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nx-raw: 1\r\n\r\nthe body ends with the connection")
            .await;
    })
    .await
}

/// Sends `bytes` on a new connection and returns everything the ingress
/// sends back until it closes (within 5 s).
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the ingress did not close the connection")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The body of the one response in `answer`, chunked coding decoded.
fn response_body(answer: &str) -> String {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut decoded = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
        if size == 0 {
            return decoded;
        }
        decoded.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

#[test]
fn http1_framing_pipelining_and_refusals() {
    require_root!();
    in_namespace(|| async {
        let _a = Backend::start("a", addr(A)).await;
        let _b = Backend::start("b", addr(B)).await;
        let _raw = until_close_backend(addr(C)).await;
        let yaml = two_hosts_three_paths()
            + "---\n"
            + &service("raw", &["127.0.0.4"], 8080)
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: raw, namespace: default}\n\
               spec:\n  ingressClassName: weft\n  rules:\n  - host: raw.example.com\n    http:\n      paths:\n\
               \x20     - {path: /, pathType: Prefix, backend: {service: {name: raw, port: {number: 80}}}}\n";
        let ingress = Ingress::start(&yaml, &[]).await;
        let http = ingress.bound.http;
        let shop = "Host: shop.example.com\r\n";

        // A chunked upload (with a chunk extension) arrives whole.
        let answer = raw_exchange(
            http,
            format!(
                "POST /upload HTTP/1.1\r\n{shop}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                 5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(response_body(&answer), "11", "{answer}");

        // Pipelined requests are answered in order on one connection.
        let answer = raw_exchange(
            http,
            format!(
                "GET /first HTTP/1.1\r\n{shop}\r\nGET /api/second HTTP/1.1\r\n{shop}Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
        let first = answer.find("path=/first").expect(&answer);
        let second = answer.find("path=/api/second").expect(&answer);
        assert!(first < second, "{answer}");

        // HTTP/1.0: answered, then closed (no keep-alive asked for).
        let answer =
            raw_exchange(http, format!("GET /old HTTP/1.0\r\n{shop}\r\n").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        assert!(answer.contains("path=/old"), "{answer}");

        // HEAD: the length of the body, no body.
        let answer = raw_exchange(
            http,
            format!("HEAD /h HTTP/1.1\r\n{shop}Connection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("content-length: "),
            "{answer}"
        );
        assert!(answer.ends_with("\r\n\r\n"), "a body after HEAD: {answer}");

        // The proxy's own answers to HEAD have no body either, and the
        // connection stays usable.
        let answer = raw_exchange(
            http,
            b"HEAD /x HTTP/1.1\r\nHost: nowhere.example.com\r\n\r\nGET /y HTTP/1.1\r\nHost: nowhere.example.com\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(answer.matches("HTTP/1.1 404").count(), 2, "{answer}");
        let (head_answer, get_answer) = answer.split_at(answer.rfind("HTTP/1.1 404").unwrap());
        assert!(head_answer.ends_with("\r\n\r\n"), "{answer}");
        assert!(get_answer.ends_with("path \"/y\"\n"), "{answer}");

        // A malformed chunked body is answered 400.
        let answer = raw_exchange(
            http,
            format!("POST /upload HTTP/1.1\r\n{shop}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");

        // Expect: 100-continue: the backend's 100 comes through before the
        // client sends the body.
        let mut stream = TcpStream::connect(http).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST /upload HTTP/1.1\r\n{shop}Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut interim = [0u8; 25];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut interim))
            .await
            .expect("no 100 Continue")
            .unwrap();
        assert!(
            interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
            "{:?}",
            String::from_utf8_lossy(&interim)
        );
        stream.write_all(b"hello").await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        let rest = String::from_utf8_lossy(&rest);
        assert!(rest.contains("HTTP/1.1 200"), "{rest}");
        assert!(rest.ends_with('5'), "{rest}");

        // Absolute form: the target's authority routes, and is the Host sent.
        let answer = raw_exchange(
            http,
            b"GET http://shop.example.com/api/abs?q=1 HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(field(&response_body(&answer), "backend"), "b", "{answer}");
        assert_eq!(
            field(&response_body(&answer), "path"),
            "/api/abs",
            "{answer}"
        );
        assert_eq!(
            field(&response_body(&answer), "host"),
            "shop.example.com",
            "{answer}"
        );

        // Both Content-Length and Transfer-Encoding: the chunked coding
        // wins, and the connection closes after the answer.
        let answer = raw_exchange(
            http,
            format!(
                "POST /upload HTTP/1.1\r\n{shop}Content-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
                 3\r\nabc\r\n0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(response_body(&answer), "3", "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );

        // A body that ends with the upstream connection: chunked for an
        // HTTP/1.1 client (which keeps its connection), raw for HTTP/1.0.
        let raw_host = "Host: raw.example.com\r\n";
        let answer = raw_exchange(
            http,
            format!("GET /x HTTP/1.1\r\n{raw_host}\r\nGET /y HTTP/1.1\r\n{raw_host}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
        assert!(answer.contains("x-raw: 1"), "{answer}");
        let first = answer.split("HTTP/1.1 200").nth(1).unwrap();
        assert_eq!(
            response_body(&format!("HTTP/1.1 200{first}")),
            "the body ends with the connection",
            "{answer}"
        );
        let answer = raw_exchange(
            http,
            format!("GET /z HTTP/1.0\r\n{raw_host}\r\n").as_bytes(),
        )
        .await;
        assert!(
            answer.ends_with("\r\n\r\nthe body ends with the connection"),
            "{answer}"
        );

        // Malformed or unsupported requests get their status and a close.
        for (request, status) in [
            (
                format!("POST / HTTP/1.1\r\n{shop}Content-Length: 12x\r\n\r\n"),
                "400",
            ),
            (
                format!("POST / HTTP/1.1\r\n{shop}Content-Length: 1\r\nContent-Length: 2\r\n\r\n"),
                "400",
            ),
            (
                format!("POST / HTTP/1.1\r\n{shop}Transfer-Encoding: gzip\r\n\r\n"),
                "501",
            ),
            (format!("GET / HTTP/1.1\r\n{shop}{shop}\r\n"), "400"),
            ("GET / HTTP/1.1\r\nX-No-Host: 1\r\n\r\n".to_owned(), "400"),
            (
                "CONNECT shop.example.com:443 HTTP/1.1\r\nHost: shop.example.com:443\r\n\r\n"
                    .to_owned(),
                "405",
            ),
            (
                "GET / HTTP/1.1\r\nHost: shop.example.com\r\nBad Header: x\r\n\r\n".to_owned(),
                "400",
            ),
        ] {
            let answer = raw_exchange(http, request.as_bytes()).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{request:?} → {answer}"
            );
            assert!(
                answer.to_ascii_lowercase().contains("connection: close"),
                "{answer}"
            );
        }
        ingress.shutdown().await;
    });
}

#[test]
fn limits_headers_and_slow_clients() {
    require_root!();
    in_namespace(|| async {
        let _a = Backend::start("a", addr(A)).await;
        let yaml = two_hosts_three_paths();
        let ingress =
            Ingress::start(&yaml, &["--header-timeout", "1s", "--max-headers", "50"]).await;
        let http = ingress.bound.http;

        // Oversized headers and too many headers: 431.
        let big = "x".repeat(40 * 1024);
        let req = Request::get("/")
            .header("host", "shop.example.com")
            .header("x-big", big)
            .body(Empty::new().boxed())
            .unwrap();
        let status = match request(http, req).await {
            Ok(response) => response.status(),
            Err(error) => panic!("no answer to oversized headers: {error}"),
        };
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let mut req = Request::get("/").header("host", "shop.example.com");
        for i in 0..80 {
            req = req.header(format!("x-h{i}"), "1");
        }
        let response = request(http, req.body(Empty::new().boxed()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );

        // Slowloris: 100 connections trickle a header byte every 200 ms.
        let mut slow = JoinSet::new();
        for _ in 0..100 {
            slow.spawn(async move {
                let mut stream = TcpStream::connect(http).await.unwrap();
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n")
                    .await
                    .unwrap();
                let started = Instant::now();
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if stream.write_all(b"X-a: b\r\n").await.is_err() {
                        break;
                    }
                    let mut buf = [0u8; 512];
                    match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf))
                        .await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        _ => {}
                    }
                }
                started.elapsed()
            });
        }
        // Meanwhile other clients are served.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..20 {
            let (status, body) =
                tokio::time::timeout(Duration::from_secs(5), get(http, "shop.example.com", "/"))
                    .await
                    .expect("a normal client starved by slow ones");
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        // And the slow ones are cut off by the header timeout, well before
        // they would have finished trickling (10 s).
        while let Some(held) = slow.join_next().await {
            let held = held.unwrap();
            assert!(
                held < Duration::from_secs(5),
                "a slow client was held {held:?}"
            );
        }

        // HTTP/2: too many headers is 431 too. A stream open longer than
        // the header timeout is not cut; once no stream is open for the
        // header timeout, the connection is closed (GOAWAY).
        let (mut sender, conn) = h2c(http).await;
        let mut req = Request::get("http://shop.example.com/");
        for i in 0..80 {
            req = req.header(format!("x-h{i}"), "1");
        }
        let (status, _) = send_h2(&mut sender, req.body(Empty::new().boxed()).unwrap()).await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        // A Cookie split into 80 fields is one header, as on HTTP/1.
        let mut req = Request::get("http://shop.example.com/");
        for i in 0..80 {
            req = req.header("cookie", format!("c{i}=1"));
        }
        let (status, body) = send_h2(&mut sender, req.body(Empty::new().boxed()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let req = Request::get("http://shop.example.com/slow?ms=2500")
            .body(Empty::new().boxed())
            .unwrap();
        let (status, body) = send_h2(&mut sender, req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(field(&body, "slow"), "done");
        let idle_from = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
        assert!(
            ended.is_ok(),
            "an idle HTTP/2 connection was still open 5 s after its last stream"
        );
        // The server's clock starts a little before `idle_from`, when it
        // drops the response body.
        assert!(
            idle_from.elapsed() >= Duration::from_millis(500),
            "an HTTP/2 connection was closed {:?} after its last stream",
            idle_from.elapsed()
        );
        // One that completes no request at all is closed the same way.
        let (_sender, conn) = h2c(http).await;
        let opened = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
        assert!(ended.is_ok(), "a silent HTTP/2 connection was not closed");
        assert!(opened.elapsed() >= Duration::from_millis(900));

        // Clients that connect and send nothing at all are closed after
        // the header timeout too, on both ports (on HTTPS: after a TCP
        // connect without a handshake).
        for port in [http, ingress.bound.https] {
            let stream = TcpStream::connect(port).await.unwrap();
            let what = format!("a connection to {port}");
            assert_closed_while_silent(stream, Duration::from_secs(1), &what).await;
        }
        ingress.shutdown().await;
    });
}

#[test]
fn rate_limit_and_graceful_shutdown() {
    require_root!();
    in_namespace(|| async {
        let _a = Backend::start("a", addr(A)).await;
        let ingress = Ingress::start(
            &two_hosts_three_paths(),
            &["--connection-rate", "5", "--drain-timeout", "10s"],
        )
        .await;
        let http = ingress.bound.http;
        // A burst of 10 passes (twice the rate); far more in a row does not.
        let mut refused = 0;
        for _ in 0..30 {
            let stream = TcpStream::connect(http).await.unwrap();
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                refused += 1;
                continue;
            };
            tokio::spawn(conn);
            let req = Request::get("/")
                .header("host", "shop.example.com")
                .body(Empty::<Bytes>::new())
                .unwrap();
            if sender.send_request(req).await.is_err() {
                refused += 1;
            }
        }
        assert!(refused >= 15, "only {refused} of 30 connections refused");
        let (_, metrics) = get(ingress.bound.ops, "x", "/metrics").await;
        assert!(
            metrics.contains("weft_ingress_connections_rejected_total{reason=\"rate\"}"),
            "{metrics}"
        );

        // Let the bucket refill, start a slow request, then stop: the
        // request in flight completes; new connections are refused.
        // A connection that sends nothing does not hold up the drain
        // (the header timeout is 10 s here).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _silent = TcpStream::connect(http).await.unwrap();
        let in_flight = tokio::spawn(get(http, "shop.example.com", "/slow?ms=1000"));
        let (mut sender, h2_conn) = h2c(http).await;
        let h2_in_flight = tokio::spawn(async move {
            let req = Request::get("http://shop.example.com/slow?ms=1000")
                .body(Empty::new().boxed())
                .unwrap();
            send_h2(&mut sender, req).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut ingress = ingress;
        let stopped_at = Instant::now();
        let _ = ingress.stop.take().unwrap().send(());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            TcpStream::connect(http).await.is_err(),
            "still accepting after stop"
        );
        let (status, body) = in_flight.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(field(&body, "slow"), "done");
        // The HTTP/2 one too (its connection got GOAWAY), and then its
        // connection is closed.
        let (status, body) = h2_in_flight.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(field(&body, "slow"), "done");
        tokio::time::timeout(Duration::from_secs(5), h2_conn)
            .await
            .expect("an HTTP/2 connection left open by the drain")
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), &mut ingress.served)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            stopped_at.elapsed() < Duration::from_secs(5),
            "drained in {:?}: a silent connection held it up",
            stopped_at.elapsed()
        );
    });
}

/// The IPs in the `shop` Ingress's status.
fn status_ips(store: &Store) -> Vec<String> {
    let key = ObjectKey::new(Kind::Ingress, "default", "shop");
    let Ok(Some(Object::Ingress(ingress))) = store.get(&key) else {
        return Vec::new();
    };
    ingress
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| entry.ip)
        .collect()
}

#[test]
fn two_controllers_publish_both_addresses_and_each_withdraws_its_own_on_shutdown() {
    require_root!();
    in_namespace(|| async {
        let first = Ingress::start(&two_hosts_three_paths(), &[]).await;
        let store = first.store.clone();
        // A second controller on the same store, publishing another address.
        let cluster = Cluster::new();
        let _watcher = store.watch(&cluster, WATCH_INTERVAL).unwrap();
        let args = loopback_args(&["--publish-address", "192.0.2.11"]);
        let second = Controller::bind(&args, cluster, StatusWriter::Store(store.clone()))
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(second.serve(async move {
            let _ = stopped.await;
        }));

        eventually("both addresses in the status", async || {
            status_ips(&store) == ["192.0.2.10", "192.0.2.11"]
        })
        .await;
        // Settled: the two do not overwrite each other on every change.
        let generation = store.generation().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            store.generation().unwrap(),
            generation,
            "status keeps changing"
        );

        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), served).await;
        assert_eq!(status_ips(&store), ["192.0.2.10"]);
        first.shutdown().await;
        assert!(status_ips(&store).is_empty(), "{:?}", status_ips(&store));
    });
}

/// A backend "pod" that reads a request's first bytes and closes the
/// connection without answering, as one crashing on every request would.
async fn closes_without_answering(addr: SocketAddr) -> JoinSet<()> {
    raw_backend(addr, |mut stream| async move {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
    })
    .await
}

/// Runs `nft -f -` with `script` in the test's namespace (the calling
/// thread's).
fn nft(script: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft (Debian package nftables) is needed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft refused:\n{script}");
}

/// The Ingress `fail` on host fail.example.com, a path per Service.
fn failing_backends() -> String {
    let mut yaml = service("mixed", &["127.0.0.4", "127.0.0.2"], 8080)
        + &service("crashing", &["127.0.0.4"], 8080)
        + &service("slow", &["127.0.0.2"], 8080)
        + &service("silent", &["127.0.0.9"], 8080);
    yaml.push_str(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: fail, namespace: default}\n\
         spec:\n  ingressClassName: weft\n  rules:\n\
         \x20 - host: fail.example.com\n    http:\n      paths:\n",
    );
    for name in ["mixed", "crashing", "slow", "silent"] {
        yaml.push_str(&format!(
            "      - {{path: /{name}, pathType: Prefix, backend: {{service: {{name: {name}, port: {{number: 80}}}}}}}}\n"
        ));
    }
    yaml
}

#[test]
fn upstream_failures_are_502_or_504_and_idempotent_requests_go_to_another_endpoint() {
    require_root!();
    in_namespace(|| async {
        let _a = Backend::start("a", addr(A)).await;
        let _crashing = closes_without_answering(addr(C)).await;
        // Connections to 127.0.0.9:8080 get no answer at all: their SYNs
        // are dropped (a node that is gone).
        nft(
            "table ip weft_e2e {\n  chain out {\n    type filter hook output priority 0;\n    \
             ip daddr 127.0.0.9 tcp dport 8080 drop\n  }\n}\n",
        );
        let ingress = Ingress::start(
            &failing_backends(),
            &["--connect-timeout", "1s", "--response-timeout", "1s"],
        )
        .await;
        let http = ingress.bound.http;
        let host = "fail.example.com";
        let (mut sender, _conn) = h2c(http).await;
        let h2_get = |path: &str| {
            Request::get(format!("http://{host}{path}"))
                .body(Empty::new().boxed())
                .unwrap()
        };

        // Half of the endpoints close every connection without answering:
        // each GET that meets one first goes on to the other, on HTTP/1 and
        // HTTP/2 alike.
        for _ in 0..6 {
            let (status, body) = get(http, host, "/mixed").await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(field(&body, "backend"), "a");
            let (status, body) = send_h2(&mut sender, h2_get("/mixed")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }

        // With no endpoint that answers: 502, for a GET after its retries
        // and for a POST with a body, which is never sent twice.
        let (status, body) = get(http, host, "/crashing").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(body.contains("default/crashing:80"), "{body}");
        let post = Request::post("/crashing")
            .header("host", host)
            .body(full("a body".to_owned()))
            .unwrap();
        let response = request(http, post).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let (status, _) = send_h2(&mut sender, h2_get("/crashing")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);

        // An upstream slower than --response-timeout: 504 after it.
        for http2 in [false, true] {
            let started = Instant::now();
            let (status, body) = if http2 {
                send_h2(&mut sender, h2_get("/slow?ms=3000")).await
            } else {
                get(http, host, "/slow?ms=3000").await
            };
            let took = started.elapsed();
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
            assert!(body.contains("did not answer"), "{body}");
            assert!(
                took >= Duration::from_millis(900) && took < Duration::from_millis(2800),
                "504 after {took:?} (HTTP/2: {http2})"
            );
        }

        // An endpoint that never completes the TCP handshake: 504 once
        // --connect-timeout passes.
        let started = Instant::now();
        let (status, body) = get(http, host, "/silent").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert!(body.contains("unreachable"), "{body}");
        assert!(started.elapsed() >= Duration::from_millis(900));

        // An HTTP/2 client that resets its stream before the answer is
        // counted (and logged) with 499, as on HTTP/1.
        let pending = tokio::spawn({
            let mut sender = sender.clone();
            let req = h2_get("/slow?ms=3000");
            async move { sender.send_request(req).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        pending.abort();
        let ops = ingress.bound.ops;
        eventually("a 499 for the reset stream", async || {
            let (_, metrics) = get(ops, "x", "/metrics").await;
            metrics
                .contains("weft_ingress_requests_total{ingress=\"default/fail\",status=\"499\"} 1")
        })
        .await;
        let (_, metrics) = get(ops, "x", "/metrics").await;
        for status in ["502", "504"] {
            let series = format!(
                "weft_ingress_requests_total{{ingress=\"default/fail\",status=\"{status}\"}}"
            );
            assert!(metrics.contains(&series), "{metrics}");
        }
        ingress.shutdown().await;
    });
}

#[test]
fn a_table_rebuild_keeps_requests_in_flight_and_open_connections() {
    require_root!();
    in_namespace(|| async {
        let _a = Backend::start("a", addr(A)).await;
        let _b = Backend::start("b", addr(B)).await;
        let to = |service: &str| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: shop, namespace: default}}\n\
                 spec:\n  ingressClassName: weft\n  rules:\n\
                 \x20 - host: shop.example.com\n    http:\n      paths:\n\
                 \x20     - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n"
            )
        };
        let services =
            service("app", &["127.0.0.2"], 8080) + &service("next", &["127.0.0.3"], 8080);
        let ingress = Ingress::start(&(services.clone() + &to("app")), &[]).await;
        let http = ingress.bound.http;

        // A keep-alive HTTP/1 connection and an HTTP/2 one, each with a
        // request that takes 3 s in flight while the table changes.
        let mut kept = http1(http).await;
        let (mut sender, _conn) = h2c(http).await;
        let slow = |version_2: bool| {
            let uri = if version_2 {
                "http://shop.example.com/slow?ms=3000"
            } else {
                "/slow?ms=3000"
            };
            Request::get(uri)
                .header("host", "shop.example.com")
                .body(Empty::new().boxed())
                .unwrap()
        };
        let h1_in_flight = kept.send_request(slow(false));
        let h2_in_flight = tokio::spawn({
            let mut sender = sender.clone();
            async move { send_h2(&mut sender, slow(true)).await }
        });
        let h1_in_flight = tokio::spawn(async move {
            let response = h1_in_flight.await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;

        apply(&ingress.store, &(services + &to("next")));
        eventually("the new table", async || {
            field(&get(http, "shop.example.com", "/").await.1, "backend") == "b"
        })
        .await;

        assert!(
            !h1_in_flight.is_finished() && !h2_in_flight.is_finished(),
            "the new table came only after the requests in flight"
        );
        // The requests that started on the old table finish on it.
        for (what, answer) in [
            ("HTTP/1", h1_in_flight.await),
            ("HTTP/2", h2_in_flight.await),
        ] {
            let (status, body) = answer.unwrap();
            assert_eq!(status, StatusCode::OK, "{what}: {body}");
            assert_eq!(field(&body, "backend"), "a", "{what}: {body}");
            assert_eq!(field(&body, "slow"), "done", "{what}: {body}");
        }
        // The connections they came on stay open and use the new table.
        kept.ready().await.unwrap();
        let req = Request::get("/")
            .header("host", "shop.example.com")
            .body(Empty::new().boxed())
            .unwrap();
        let response = kept.send_request(req).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(field(&String::from_utf8_lossy(&body), "backend"), "b");
        let req = Request::get("http://shop.example.com/")
            .body(Empty::new().boxed())
            .unwrap();
        let (status, body) = send_h2(&mut sender, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(field(&body, "backend"), "b");
        ingress.shutdown().await;
    });
}

/// What the process's access log wrote, one JSON object a line: a
/// subscriber for the whole test process (every test's requests end up
/// in it), installed by the first caller ([`in_namespace`] calls it first
/// thing).
fn access_log() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("weft_ingress::access=info")
            .with_writer(move || Capture(sink.clone()))
            .init();
        log
    })
    .clone()
}

/// An `io::Write` appending to a shared buffer.
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_access_log_has_one_structured_line_per_request() {
    require_root!();
    let log = access_log();
    in_namespace(|| async {
        let _a = Backend::start("a", addr(A)).await;
        let _b = Backend::start("b", addr(B)).await;
        let ingress = Ingress::start(&two_hosts_three_paths(), &[]).await;
        let http = ingress.bound.http;
        let (status, _) = get(http, "shop.example.com", "/logged/1").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = get(http, "nowhere.example.com", "/logged/2").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (mut sender, _conn) = h2c(http).await;
        let req = Request::get("http://shop.example.com/api/logged/3")
            .body(Empty::new().boxed())
            .unwrap();
        assert_eq!(send_h2(&mut sender, req).await.0, StatusCode::OK);
        ingress.shutdown().await;
    });
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|line: &serde_json::Value| {
            line["path"]
                .as_str()
                .is_some_and(|p| p.contains("/logged/"))
        })
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    let line = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"] == path)
            .unwrap_or_else(|| panic!("no line for {path} in {lines:?}"))
    };
    let first = line("/logged/1");
    assert_eq!(first["target"], "weft_ingress::access");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["host"], "shop.example.com");
    assert_eq!(first["version"], "HTTP/1.1");
    assert_eq!(first["tls"], false);
    assert_eq!(first["status"], 200);
    assert_eq!(first["ingress"], "default/shop");
    assert_eq!(first["backend"], "default/app:80");
    assert_eq!(first["upstream"], A);
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["duration_ms"].as_f64().unwrap() > 0.0);
    let unmatched = line("/logged/2");
    assert_eq!(unmatched["status"], 404);
    assert_eq!(unmatched["ingress"], "");
    assert_eq!(unmatched["upstream"], "");
    let http2 = line("/api/logged/3");
    assert_eq!(http2["version"], "HTTP/2.0");
    assert_eq!(http2["backend"], "default/api:http");
    assert_eq!(http2["upstream"], B);
}

/// The value of `series` (name and labels, exactly) in a Prometheus text
/// exposition.
fn metric(metrics: &str, series: &str) -> i64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

/// Opens `count` keep-alive connections to `http` one after another, each
/// answering one request; the open connections on worker 0 and 1, by the
/// metrics.
async fn connections_by_worker(ingress: &Ingress, count: usize) -> (i64, i64) {
    let mut senders = Vec::new();
    for _ in 0..count {
        let mut sender = http1(ingress.bound.http).await;
        let req = Request::get("/")
            .header("host", "any")
            .body(Empty::<Bytes>::new().boxed())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
        senders.push(sender);
        // The load stays light: at most one request in flight, with pauses.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, metrics) = get(ingress.bound.ops, "x", "/metrics").await;
    let on = |worker: usize| {
        metric(
            &metrics,
            &format!("weft_ingress_worker_connections{{worker=\"{worker}\"}}"),
        )
    };
    assert_eq!(on(0) + on(1), count as i64, "{metrics}");
    (on(0), on(1))
}

#[test]
fn a_light_load_stays_on_the_first_worker_unless_spread_by_hash() {
    require_root!();
    in_namespace(|| async {
        let _backend = Backend::start("a", addr(A)).await;
        let yaml = service("app", &["127.0.0.2"], 8080)
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: one, namespace: default}\n\
               spec: {ingressClassName: weft, defaultBackend: {service: {name: app, port: {number: 80}}}}\n";
        let packed = Ingress::start(&yaml, &["--workers", "2"]).await;
        let (first, second) = connections_by_worker(&packed, 32).await;
        // Packed, all 32 go to worker 0; a moment when worker 0 looked busy
        // (this machine running other tests) may send a few to worker 1.
        // By hash, 24 or more on worker 0 would be a 1 in 280 chance.
        assert!(
            first >= 24,
            "pack: {first} on worker 0, {second} on worker 1"
        );
        packed.shutdown().await;

        let hashed = Ingress::start(&yaml, &["--workers", "2", "--accept-policy", "hash"]).await;
        let (first, second) = connections_by_worker(&hashed, 32).await;
        // All 32 on one worker by hash: a 1 in 2^31 chance.
        assert!(
            first > 0 && second > 0,
            "hash: {first} on worker 0, {second} on worker 1"
        );
        hashed.shutdown().await;
    });
}
