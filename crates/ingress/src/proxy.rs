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

use crate::ops::Metrics;
use crate::routes::{Route, RouteTable};
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

/// What the server knows about the connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
}

/// The request handler shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    pub table: Arc<ArcSwap<RouteTable>>,
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    pub settings: ProxySettings,
}

/// Headers that describe one hop only (RFC 9110 7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
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
        Some(authority) => authority.as_str().to_owned(),
        None => request
            .headers()
            .get(header::HOST)?
            .to_str()
            .ok()?
            .to_owned(),
    };
    let authority: http::uri::Authority = raw.parse().ok()?;
    Some(
        authority
            .host()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase(),
    )
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
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
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
    fn request(&self, body: ProxyBody) -> Request<ProxyBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// How the upstream part of a request ended.
enum Failure {
    /// No endpoint accepted a connection.
    Connect { timed_out: bool, detail: String },
    /// The upstream did not send headers in time.
    Timeout,
    /// The upstream failed after the request was sent.
    Upstream(String),
}

impl Proxy {
    /// Serves one request; never fails (errors become responses).
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let host = request_host(&request).unwrap_or_default();
        let version = request.version();
        let table = self.table.load_full();
        let route = table.route(&host, &path).cloned();
        let (response, upstream) = match &route {
            None => (
                text(
                    StatusCode::NOT_FOUND,
                    format!("no Ingress rule matches host {host:?} path {path:?}\n"),
                ),
                None,
            ),
            Some(route) if route.ssl_redirect && !conn.tls => {
                (self.redirect(&request, &host), None)
            }
            Some(route) => self.forward(request, route, &host, conn).await,
        };
        let status = response.status();
        let ingress = route
            .as_ref()
            .map(|r| r.ingress.to_string())
            .unwrap_or_default();
        let backend = route.as_ref().map(|r| r.backend.id.as_str()).unwrap_or("");
        self.metrics.request(&ingress, status.as_u16());
        tracing::info!(
            target: "weft_ingress::access",
            client = %conn.peer,
            method = %method,
            host = %host,
            path = %path,
            version = ?version,
            tls = conn.tls,
            status = status.as_u16(),
            ingress = %ingress,
            backend = %backend,
            upstream = %upstream.map(|a: SocketAddr| a.to_string()).unwrap_or_default(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
        Ok(response)
    }

    fn redirect(&self, request: &Request<Incoming>, host: &str) -> Response<ProxyBody> {
        let port = match self.settings.https_redirect_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let location = format!("https://{host}{port}{path}");
        let mut response = text(
            StatusCode::PERMANENT_REDIRECT,
            format!("redirecting to {location}\n"),
        );
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response
    }

    /// Forwards to the route's backend; returns the response and the
    /// endpoint that produced it.
    async fn forward(
        &self,
        mut request: Request<Incoming>,
        route: &Arc<Route>,
        host: &str,
        conn: ConnInfo,
    ) -> (Response<ProxyBody>, Option<SocketAddr>) {
        let backend = &route.backend;
        if backend.endpoints.is_empty() {
            let why = backend
                .problem
                .clone()
                .unwrap_or_else(|| "no ready endpoints".to_owned());
            return (
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("backend {} is unavailable: {why}\n", backend.id),
                ),
                None,
            );
        }
        let upgrade = is_upgrade(&request);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let outgoing = self.outgoing(&request, host, conn, upgrade);
        let body_is_empty = request.body().is_end_stream();
        let idempotent = is_idempotent(request.method());
        let mut body = Some(request.into_body().boxed_unsync());

        let mut order = self.pool.order(
            &backend.id,
            &backend.endpoints,
            self.settings.balance == Balance::LeastRequests,
        );
        order.truncate(self.settings.max_attempts.max(1));

        let mut failure = Failure::Connect {
            timed_out: false,
            detail: String::new(),
        };
        for addr in order {
            let mut connection = match self.pool.checkout(addr).await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::debug!(%addr, %error, "upstream connect failed");
                    failure = Failure::Connect {
                        timed_out: matches!(error, crate::upstream::ConnectError::Timeout(_)),
                        detail: error.to_string(),
                    };
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
                connection
                    .sender
                    .try_send_request(outgoing.request(sent_body)),
            )
            .await;
            match sent {
                Err(_) => {
                    failure = Failure::Timeout;
                    break;
                }
                Ok(Ok(response)) => {
                    self.metrics
                        .upstream(&backend.id, upstream_started.elapsed().as_secs_f64());
                    let response = self.relay(response, connection, in_flight, client_upgrade);
                    return (response, Some(addr));
                }
                Ok(Err(mut error)) => {
                    let unsent = error.take_message();
                    tracing::debug!(%addr, error = %error.error(), reused = connection.reused, "upstream request failed");
                    if let Some(unsent) = unsent {
                        // Never written: it can go anywhere, whatever the method.
                        body = Some(unsent.into_body());
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
        let response = match failure {
            Failure::Timeout => text(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "backend {} did not answer within {:?}\n",
                    backend.id, self.settings.response_timeout
                ),
            ),
            Failure::Connect { timed_out, detail } => text(
                if timed_out {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::BAD_GATEWAY
                },
                format!("backend {} unreachable: {detail}\n", backend.id),
            ),
            Failure::Upstream(detail) => text(
                StatusCode::BAD_GATEWAY,
                format!("backend {} failed: {detail}\n", backend.id),
            ),
        };
        (response, None)
    }

    /// Request line and headers for the upstream: origin-form URI, the
    /// client's Host kept, hop-by-hop headers dropped (Upgrade kept for an
    /// upgrade), `X-Forwarded-*`, `X-Real-IP` and `Forwarded` set from what
    /// this proxy saw (client-sent values are not trusted).
    fn outgoing(
        &self,
        request: &Request<Incoming>,
        host: &str,
        conn: ConnInfo,
        upgrade: bool,
    ) -> Outgoing {
        let mut headers = request.headers().clone();
        let upgrade_value = headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut headers);
        if upgrade && let Some(value) = upgrade_value {
            headers.insert(header::UPGRADE, value);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                request
                    .headers()
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| host.to_owned());
        if let Ok(value) = HeaderValue::from_str(&authority) {
            headers.insert(header::HOST, value.clone());
            headers.insert(HeaderName::from_static("x-forwarded-host"), value);
        }
        let client = conn.peer.ip().to_canonical();
        let proto = if conn.tls { "https" } else { "http" };
        let set = |headers: &mut HeaderMap, name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        };
        set(&mut headers, "x-forwarded-for", client.to_string());
        set(&mut headers, "x-real-ip", client.to_string());
        set(&mut headers, "x-forwarded-proto", proto.to_owned());
        set(
            &mut headers,
            "x-forwarded-port",
            conn.local.port().to_string(),
        );
        let for_node = if client.is_ipv6() {
            format!("\"[{client}]\"")
        } else {
            client.to_string()
        };
        let forwarded_host = if authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
        {
            authority.clone()
        } else {
            format!("\"{}\"", authority.replace(['"', '\\'], ""))
        };
        set(
            &mut headers,
            "forwarded",
            format!("for={for_node};host={forwarded_host};proto={proto}"),
        );
        let uri = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
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
