//! One request through the proxy: route by host and path, answer locally
//! (404, 503, the HTTPS redirect) or forward to a backend endpoint with
//! forwarding headers, hop-by-hop headers removed, retries on another
//! endpoint when nothing was sent (or, for idempotent requests without a
//! body, when the upstream failed before answering), timeouts mapped to
//! 502/504, and Upgrade (WebSocket) tunnels. Bodies stream both ways.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;

use crate::ops::{MetricHandles, Metrics};
use crate::routes::{Backend, Route, RouteTable};
use crate::upstream::{Connection, Pool, PooledBody, ProxyBody};

/// How endpoints are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Balance {
    /// Each request to the next endpoint.
    RoundRobin,
    /// The endpoint with the fewest requests in flight (round-robin among
    /// equals).
    LeastRequests,
}

/// Per-request behaviour.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    pub balance: Balance,
    /// Time for the upstream to send response headers.
    pub response_timeout: Duration,
    /// Endpoints tried per request.
    pub max_attempts: usize,
    /// Port in the `Location` of HTTP→HTTPS redirects.
    pub https_redirect_port: u16,
}

/// What the server knows about the connection a request came on, with the
/// forwarding header values that depend on it alone (made once per
/// connection, not per request).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The port the connection was accepted on.
    pub local_port: u16,
    pub tls: bool,
    /// The client's address: `X-Forwarded-For` and `X-Real-IP`.
    pub(crate) client: Option<HeaderValue>,
    /// `X-Forwarded-Port`.
    pub(crate) port: HeaderValue,
    /// The `for=…` element of `Forwarded`.
    forwarded_for: String,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, local_port: u16, tls: bool) -> ConnInfo {
        let client = peer.ip().to_canonical();
        let forwarded_for = if client.is_ipv6() {
            format!("for=\"[{client}]\"")
        } else {
            format!("for={client}")
        };
        ConnInfo {
            peer,
            local_port,
            tls,
            client: HeaderValue::try_from(client.to_string()).ok(),
            port: HeaderValue::from(local_port),
            forwarded_for,
        }
    }

    fn proto(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// The request handler shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    pub table: Arc<ArcSwap<RouteTable>>,
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    /// This worker's handles to the per-request metric series.
    pub handles: MetricHandles,
    pub settings: ProxySettings,
}

/// Headers that describe one hop only (RFC 9110 section 7.6.1), never
/// forwarded (an upgrade's `Upgrade` is set again on purpose), on both
/// request paths.
pub(crate) const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn empty() -> ProxyBody {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The request's host without port: the URI authority (HTTP/2, absolute
/// form), else the Host header.
fn request_host<B>(request: &Request<B>) -> Option<String> {
    let raw = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => request.headers().get(header::HOST)?.to_str().ok()?,
    };
    authority_host(raw)
}

/// The host to route on from an authority: lower-case, port and IPv6
/// brackets removed; `None` if it is not an authority. An empty authority
/// (an HTTP/1.0 request without Host) is the empty host.
pub(crate) fn authority_host(authority: &str) -> Option<String> {
    if authority.is_empty() {
        return Some(String::new());
    }
    if let Some(host) = plain_host(authority) {
        return Some(host.to_ascii_lowercase());
    }
    let parsed: http::uri::Authority = authority.parse().ok()?;
    Some(parsed.host().trim_matches(['[', ']']).to_ascii_lowercase())
}

/// The host of the common `name[:port]` authority (letters, digits, `-`
/// and `.`, an optional numeric port) without parsing it as a URI
/// authority; `None` for anything else (IPv6 literals, user info, odd
/// bytes), which takes the full parse.
fn plain_host(raw: &str) -> Option<&str> {
    let (host, port) = match raw.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (raw, None),
    };
    let name_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    (name_ok && port_ok).then_some(host)
}

/// Appends the `Forwarded` value (RFC 7239) for a request on `conn` to
/// `authority`: `for`, `host` (quoted unless a plain name) and `proto`.
pub(crate) fn write_forwarded(conn: &ConnInfo, authority: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(conn.forwarded_for.as_bytes());
    out.extend_from_slice(b";host=");
    if authority
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
    {
        out.extend_from_slice(authority.as_bytes());
    } else {
        out.push(b'"');
        out.extend(authority.bytes().filter(|b| !matches!(b, b'"' | b'\\')));
        out.push(b'"');
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(conn.proto().as_bytes());
}

/// Whether the request asks for a protocol upgrade (HTTP/1.1 `Connection:
/// upgrade` with an `Upgrade` header).
fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().contains_key(header::UPGRADE)
        && connection_tokens(request.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Drops hop-by-hop headers, including those the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        // `close` and `keep-alive` are the usual tokens; neither names a
        // header to drop beyond the fixed list.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether a request with this method may be sent again after a failure
/// (RFC 9110 section 9.2.2).
pub(crate) fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}

/// The request line and headers to send upstream; the body is added per
/// attempt.
struct Outgoing {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Outgoing {
    /// The request of one attempt; `keep` keeps a copy of the headers for
    /// a later attempt, else they move into this one.
    fn request(&mut self, body: ProxyBody, keep: bool) -> Request<ProxyBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = if keep {
            self.headers.clone()
        } else {
            std::mem::take(&mut self.headers)
        };
        request
    }
}

/// How the upstream part of a request ended.
pub(crate) enum Failure {
    /// No endpoint accepted a connection.
    Connect { timed_out: bool, detail: String },
    /// The upstream did not send headers in time.
    Timeout,
    /// The upstream failed after the request was sent.
    Upstream(String),
}

impl Failure {
    /// Before any attempt: nothing connected yet.
    pub(crate) fn nothing_tried() -> Failure {
        Failure::Connect {
            timed_out: false,
            detail: String::new(),
        }
    }

    /// An endpoint could not be connected to.
    pub(crate) fn connect(addr: SocketAddr, error: &crate::upstream::ConnectError) -> Failure {
        tracing::debug!(%addr, %error, "upstream connect failed");
        Failure::Connect {
            timed_out: matches!(error, crate::upstream::ConnectError::Timeout(_)),
            detail: error.to_string(),
        }
    }
}

/// A response the proxy makes itself: a status, a plain-text body and for
/// redirects a `Location`.
#[derive(Debug)]
pub(crate) struct LocalResponse {
    pub status: StatusCode,
    pub body: String,
    pub location: Option<String>,
}

impl LocalResponse {
    fn new(status: StatusCode, body: String) -> LocalResponse {
        LocalResponse {
            status,
            body,
            location: None,
        }
    }
}

/// What the access log and the request metrics say of one request.
#[derive(Debug)]
pub(crate) struct Record {
    started: Instant,
    method: Method,
    host: String,
    /// Empty unless the access log is on.
    path: String,
    version: Version,
    route: Option<Arc<Route>>,
    pub status: u16,
    pub upstream: Option<SocketAddr>,
}

fn access_log_on() -> bool {
    tracing::enabled!(target: "weft_ingress::access", tracing::Level::INFO)
}

impl Record {
    pub fn new(
        started: Instant,
        method: &str,
        host: String,
        path: &str,
        version: Version,
        route: Option<Arc<Route>>,
    ) -> Record {
        Record {
            started,
            method: Method::from_bytes(method.as_bytes()).unwrap_or_default(),
            host,
            path: if access_log_on() {
                path.to_owned()
            } else {
                String::new()
            },
            version,
            route,
            status: 0,
            upstream: None,
        }
    }

    /// A request refused before it could be read.
    pub fn refused(started: Instant) -> Record {
        Record::new(started, "", String::new(), "", Version::HTTP_11, None)
    }
}

/// nginx's status for a request whose client left before its answer
/// (logged and counted, never sent).
pub(crate) const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Counts one request of [`Proxy::handle`] and writes its access log line
/// when dropped: when `handle` returns, or when hyper drops it before
/// because the client reset its HTTP/2 stream. A request dropped before
/// its answer is logged with status `499`, nginx's code for a client that
/// left first (as the HTTP/1 path does).
struct Finish<'a> {
    proxy: &'a Proxy,
    conn: &'a ConnInfo,
    record: Record,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        if self.record.status == 0 {
            self.record.status = CLIENT_CLOSED_REQUEST;
        }
        self.proxy.finish(&self.record, self.conn);
    }
}

/// The plain-text response for a [`LocalResponse`].
fn local(response: LocalResponse) -> Response<ProxyBody> {
    let mut built = text(response.status, response.body);
    if let Some(location) = response.location
        && let Ok(value) = HeaderValue::from_str(&location)
    {
        built.headers_mut().insert(header::LOCATION, value);
    }
    built
}

impl Proxy {
    /// Serves one request; never fails (errors become responses).
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        let host = request_host(&request).unwrap_or_default();
        let path = request.uri().path();
        let table = self.table.load_full();
        let route = table.route(&host, path).cloned();
        let record = Record::new(
            started,
            request.method().as_str(),
            host.clone(),
            path,
            request.version(),
            route.clone(),
        );
        let mut finish = Finish {
            proxy: &self,
            conn: &conn,
            record,
        };
        let response = match &route {
            None => local(self.not_found(&host, path)),
            Some(route) if route.ssl_redirect && !conn.tls => {
                let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
                local(self.redirect_to(&host, target))
            }
            Some(route) => match self.unavailable(route) {
                Some(response) => local(response),
                None => {
                    let (response, upstream) = self.forward(request, route, &host, &conn).await;
                    finish.record.upstream = upstream;
                    response
                }
            },
        };
        finish.record.status = response.status().as_u16();
        drop(finish);
        Ok(response)
    }

    /// `431` for an HTTP/2 request with more headers than `--max-headers`
    /// (HTTP/1 heads are refused as they are parsed, in [`h1`](crate::h1)).
    pub(crate) fn too_many_headers(
        &self,
        request: &Request<Incoming>,
        conn: &ConnInfo,
    ) -> Response<ProxyBody> {
        let refusal = crate::h1::head::Refusal::TooLarge;
        let mut record = Record::new(
            Instant::now(),
            request.method().as_str(),
            request_host(request).unwrap_or_default(),
            request.uri().path(),
            request.version(),
            None,
        );
        record.status = refusal.status();
        self.finish(&record, conn);
        local(LocalResponse::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("{}\n", refusal.reason()),
        ))
    }

    /// The endpoints one request tries, in order (balancing, then at most
    /// `max_attempts`).
    pub(crate) fn attempt_order(&self, backend: &Backend) -> Vec<SocketAddr> {
        let mut order = self.pool.order(
            &backend.id,
            &backend.endpoints,
            self.settings.balance == Balance::LeastRequests,
        );
        order.truncate(self.settings.max_attempts.max(1));
        order
    }

    /// Counts the request and writes its access log line.
    pub(crate) fn finish(&self, record: &Record, conn: &ConnInfo) {
        let route = record.route.as_ref();
        self.handles
            .request(&self.metrics, route.map(|r| &r.ingress), record.status);
        // The field values are only computed when the access log is on.
        tracing::info!(
            target: "weft_ingress::access",
            client = %conn.peer,
            method = %record.method,
            host = %record.host,
            path = %record.path,
            version = ?record.version,
            tls = conn.tls,
            status = record.status,
            ingress = %route.map(|r| r.ingress.to_string()).unwrap_or_default(),
            backend = %route.map(|r| r.backend.id.as_str()).unwrap_or(""),
            upstream = %record.upstream.map(|a| a.to_string()).unwrap_or_default(),
            // Milliseconds to the microsecond: `0.768`, not `0.76799999`.
            duration_ms = (record.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        );
    }

    /// 404 for a request no rule matches.
    pub(crate) fn not_found(&self, host: &str, path: &str) -> LocalResponse {
        LocalResponse::new(
            StatusCode::NOT_FOUND,
            format!("no Ingress rule matches host {host:?} path {path:?}\n"),
        )
    }

    /// 503 when the route's backend has no endpoint to send to.
    pub(crate) fn unavailable(&self, route: &Route) -> Option<LocalResponse> {
        let backend = &route.backend;
        if !backend.endpoints.is_empty() {
            return None;
        }
        let why = backend.problem.as_deref().unwrap_or("no ready endpoints");
        Some(LocalResponse::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("backend {} is unavailable: {why}\n", backend.id),
        ))
    }

    /// The permanent redirect of an HTTP request to HTTPS; `target` is
    /// the path and query.
    pub(crate) fn redirect_to(&self, host: &str, target: &str) -> LocalResponse {
        let port = match self.settings.https_redirect_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let location = format!("https://{host}{port}{target}");
        LocalResponse {
            status: StatusCode::PERMANENT_REDIRECT,
            body: format!("redirecting to {location}\n"),
            location: Some(location),
        }
    }

    /// 502 or 504 after the upstream part failed.
    pub(crate) fn failure_response(&self, backend: &Backend, failure: Failure) -> LocalResponse {
        match failure {
            Failure::Timeout => LocalResponse::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "backend {} did not answer within {:?}\n",
                    backend.id, self.settings.response_timeout
                ),
            ),
            Failure::Connect { timed_out, detail } => LocalResponse::new(
                if timed_out {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::BAD_GATEWAY
                },
                format!("backend {} unreachable: {detail}\n", backend.id),
            ),
            Failure::Upstream(detail) => LocalResponse::new(
                StatusCode::BAD_GATEWAY,
                format!("backend {} failed: {detail}\n", backend.id),
            ),
        }
    }

    /// Forwards to the route's backend; returns the response and the
    /// endpoint that produced it.
    async fn forward(
        &self,
        mut request: Request<Incoming>,
        route: &Arc<Route>,
        host: &str,
        conn: &ConnInfo,
    ) -> (Response<ProxyBody>, Option<SocketAddr>) {
        let backend = &route.backend;
        let upgrade = is_upgrade(&request);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let mut outgoing = self.outgoing(&mut request, host, conn, upgrade);
        let body_is_empty = request.body().is_end_stream();
        let idempotent = is_idempotent(request.method().as_str());
        let mut body = Some(request.into_body().boxed_unsync());

        let order = self.attempt_order(backend);
        let attempts = order.len();
        // Only a request that may go out again after being sent needs its
        // headers copied per attempt.
        let resendable = idempotent && body_is_empty && !upgrade;

        let mut failure = Failure::nothing_tried();
        for (attempt, addr) in order.into_iter().enumerate() {
            let mut connection = match self.pool.checkout(addr).await {
                Ok(connection) => connection,
                Err(error) => {
                    failure = Failure::connect(addr, &error);
                    continue;
                }
            };
            let sent_body = match body.take() {
                Some(body) => body,
                // The body went out on an earlier attempt; only an empty
                // body can be sent again.
                None if body_is_empty => empty(),
                None => break,
            };
            let in_flight = self.pool.start_request(addr);
            let upstream_started = Instant::now();
            let sent = tokio::time::timeout(
                self.settings.response_timeout,
                connection.sender.try_send_request(
                    outgoing.request(sent_body, resendable && attempt + 1 < attempts),
                ),
            )
            .await;
            match sent {
                Err(_) => {
                    failure = Failure::Timeout;
                    break;
                }
                Ok(Ok(response)) => {
                    self.handles.upstream(
                        &self.metrics,
                        &backend.id,
                        upstream_started.elapsed().as_secs_f64(),
                    );
                    let response = self.relay(response, connection, in_flight, client_upgrade);
                    return (response, Some(addr));
                }
                Ok(Err(mut error)) => {
                    let unsent = error.take_message();
                    tracing::debug!(%addr, error = %error.error(), reused = connection.reused, "upstream request failed");
                    if let Some(unsent) = unsent {
                        // Never written: it can go anywhere, whatever the method.
                        let (parts, unsent) = unsent.into_parts();
                        outgoing.headers = parts.headers;
                        body = Some(unsent);
                        failure = Failure::Upstream(error.error().to_string());
                        continue;
                    }
                    failure = Failure::Upstream(error.error().to_string());
                    if !(idempotent && body_is_empty) || upgrade {
                        break;
                    }
                }
            }
        }
        (local(self.failure_response(backend, failure)), None)
    }

    /// Request line and headers for the upstream: origin-form URI, the
    /// client's Host kept, hop-by-hop headers dropped (Upgrade kept for an
    /// upgrade), `X-Forwarded-*`, `X-Real-IP` and `Forwarded` set from what
    /// this proxy saw (client-sent values are not trusted). The headers move
    /// out of `request`.
    fn outgoing(
        &self,
        request: &mut Request<Incoming>,
        host: &str,
        conn: &ConnInfo,
        upgrade: bool,
    ) -> Outgoing {
        let mut headers = std::mem::take(request.headers_mut());
        // Read before stripping: a Connection header may name Host.
        let authority = match request.uri().authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => headers.get(header::HOST).cloned(),
        }
        .or_else(|| HeaderValue::from_str(host).ok());
        let upgrade_value = headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut headers);
        if upgrade && let Some(value) = upgrade_value {
            headers.insert(header::UPGRADE, value);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let proto = conn.proto();
        if let Some(client) = &conn.client {
            headers.insert(HeaderName::from_static("x-forwarded-for"), client.clone());
            headers.insert(HeaderName::from_static("x-real-ip"), client.clone());
        }
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(proto),
        );
        headers.insert(
            HeaderName::from_static("x-forwarded-port"),
            conn.port.clone(),
        );
        let authority_text = authority
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut forwarded = Vec::with_capacity(64);
        write_forwarded(conn, authority_text, &mut forwarded);
        if let Ok(value) = HeaderValue::from_bytes(&forwarded) {
            headers.insert(header::FORWARDED, value);
        }
        if let Some(value) = authority {
            headers.insert(header::HOST, value.clone());
            headers.insert(HeaderName::from_static("x-forwarded-host"), value);
        }
        let uri = match request.uri().path_and_query() {
            // Already origin-form (HTTP/1): the same bytes.
            Some(_) if request.uri().authority().is_none() => request.uri().clone(),
            Some(path) => {
                let mut parts = http::uri::Parts::default();
                parts.path_and_query = Some(path.clone());
                Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
            }
            None => Uri::from_static("/"),
        };
        Outgoing {
            method: request.method().clone(),
            uri,
            headers,
        }
    }

    /// Turns the upstream response into the client's: hop-by-hop headers
    /// dropped, the body streamed through the pool's wrapper, or for a
    /// `101 Switching Protocols` the two upgraded connections joined.
    fn relay(
        &self,
        mut response: Response<Incoming>,
        connection: Connection,
        in_flight: crate::upstream::InFlight,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<ProxyBody> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return text(
                    StatusCode::BAD_GATEWAY,
                    "backend switched protocols without being asked\n".to_owned(),
                );
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                let _in_flight = in_flight;
                let _sender = connection.sender;
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        if let Err(error) =
                            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                        {
                            tracing::debug!(%error, "upgraded connection ended");
                        }
                    }
                    Err(error) => tracing::debug!(%error, "upgrade failed"),
                }
            });
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, empty());
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = PooledBody::new(
            body,
            self.pool.clone(),
            connection.addr,
            connection.sender,
            in_flight,
        );
        Response::from_parts(parts, body.boxed_unsync())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_comes_from_authority_or_host_header() {
        let request = Request::builder()
            .uri("/x")
            .header("host", "Foo.Example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&request).as_deref(), Some("foo.example.com"));
        let request = Request::builder()
            .uri("https://h2.example.com/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&request).as_deref(), Some("h2.example.com"));
        let request = Request::builder()
            .uri("/x")
            .header("host", "[fd00::1]:80")
            .body(())
            .unwrap();
        assert_eq!(request_host(&request).as_deref(), Some("fd00::1"));
        // The shortcut and the full parse agree; odd authorities take the
        // full parse.
        assert_eq!(
            plain_host("Shop.example.com:8443"),
            Some("Shop.example.com")
        );
        assert_eq!(plain_host("shop"), Some("shop"));
        assert_eq!(plain_host("[fd00::1]:80"), None);
        assert_eq!(plain_host("user@shop"), None);
        assert_eq!(plain_host("shop:"), None);
        assert_eq!(plain_host("shop:8x"), None);
        assert_eq!(plain_host(""), None);
        let request = Request::builder()
            .uri("/x")
            .header("host", "bad host")
            .body(())
            .unwrap();
        assert_eq!(request_host(&request), None);
    }

    #[test]
    fn connection_values_are_made_once_per_connection() {
        let v4 = ConnInfo::new(SocketAddr::from(([10, 1, 2, 3], 5555)), 8443, true);
        assert_eq!(v4.client, Some(HeaderValue::from_static("10.1.2.3")));
        assert_eq!(v4.port, HeaderValue::from_static("8443"));
        assert_eq!(v4.forwarded_for, "for=10.1.2.3");
        assert_eq!(v4.proto(), "https");
        let v6: SocketAddr = "[fd00::7]:5555".parse().unwrap();
        let v6 = ConnInfo::new(v6, 80, false);
        assert_eq!(v6.forwarded_for, "for=\"[fd00::7]\"");
        assert_eq!(v6.proto(), "http");
        // An IPv4 client on a dual-stack socket is reported as IPv4.
        let mapped: SocketAddr = "[::ffff:10.0.0.9]:1".parse().unwrap();
        let mapped = ConnInfo::new(mapped, 80, false);
        assert_eq!(mapped.client, Some(HeaderValue::from_static("10.0.0.9")));
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, vec!["x-kept"]);
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let upgrade = Request::builder()
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(&upgrade));
        let no_connection = Request::builder()
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(!is_upgrade(&no_connection));
    }
}
