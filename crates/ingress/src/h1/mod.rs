//! The proxy's own HTTP/1 path: one task per client connection reads a
//! request head, routes it, and relays the exchange with a pooled upstream
//! connection itself, with no per-request task, channel or header map in
//! between (HTTP/2 goes through hyper, see [`server`](crate::server)).
//!
//! Per request: the head is parsed in place ([`head`]), answered locally
//! (404, 503, redirects, refusals) or written upstream with the forwarding
//! headers; then the request body goes up while the response comes down
//! ([`body`]), both streamed, 1xx responses passed on, `101 Switching
//! Protocols` turned into a tunnel. Endpoints are retried as the hyper path
//! does: on connect failure always, on a reused connection that failed
//! before answering for idempotent requests without a body. Keep-alive
//! holds on both sides when the framing allows; a client that stays silent
//! between requests is closed after the header timeout, or at once when
//! the worker stops accepting.

pub mod body;
pub mod head;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::proxy::{ConnInfo, Failure, LocalResponse, Proxy, Record};
use crate::routes::Route;
use crate::upstream::Upstream;
use body::{Framing, Output};
use head::{BadResponse, ClientSide, Refusal, RequestHead};

/// Limits on the client side of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time to receive a whole request head, counted from when the
    /// connection starts waiting for it.
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// What to do with a parsed request.
enum Plan {
    /// Answer with the proxy's own response.
    Local {
        response: LocalResponse,
        /// Close the connection afterwards.
        close: bool,
    },
    /// Forward to the route's backend; the upstream head is written.
    Forward {
        route: Arc<Route>,
        framing: Framing,
        client: ClientSide,
        upgrade: bool,
        idempotent: bool,
    },
}

/// Serves HTTP/1 requests on `io` until the client closes, a request asks
/// to, an error makes the connection unusable, the client stays silent
/// for the header timeout, or `stopping` turns true between requests.
/// `buf` holds bytes already read from `io`.
pub async fn serve<S>(
    mut io: S,
    mut buf: BytesMut,
    conn: Arc<ConnInfo>,
    proxy: Arc<Proxy>,
    limits: Limits,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The upstream request head, and what goes to the client: both kept
    // for the connection's life.
    let mut upstream_head = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(2048);
    loop {
        let deadline = tokio::time::Instant::now() + limits.header_timeout;
        let (plan, mut record) = loop {
            upstream_head.clear();
            if let Some(planned) = plan(&proxy, &conn, &mut buf, limits, &mut upstream_head) {
                break planned;
            }
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, body::fill(&mut io, &mut buf)) => read,
                _ = stopping.wait_for(|stopping| *stopping), if buf.is_empty() => return,
            };
            match read {
                Ok(Ok(read)) if read > 0 => {}
                Ok(Ok(_)) => return,
                Ok(Err(error)) => {
                    tracing::debug!(peer = %conn.peer, %error, "client read failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %conn.peer, "request head not received in time");
                    return;
                }
            }
        };
        let keep_alive = match plan {
            Plan::Local { response, close } => {
                out.clear();
                record.status = response.status.as_u16();
                let close = close || *stopping.borrow();
                head::write_local(
                    &mut out,
                    record.status,
                    &response.body,
                    response.location.as_deref(),
                    close,
                );
                let written = io.write_all(&out).await;
                let flushed = match written {
                    Ok(()) => io.flush().await,
                    Err(error) => Err(error),
                };
                proxy.finish(&record, &conn);
                flushed.is_ok() && !close
            }
            Plan::Forward {
                route,
                framing,
                mut client,
                upgrade,
                idempotent,
            } => {
                client.keep_alive &= !*stopping.borrow();
                let forwarded = Forward {
                    route: &route,
                    framing,
                    client,
                    upgrade,
                    idempotent,
                };
                let keep = forward(
                    &mut io,
                    &mut buf,
                    &upstream_head,
                    &mut out,
                    &proxy,
                    &forwarded,
                    &mut record,
                )
                .await;
                proxy.finish(&record, &conn);
                keep
            }
        };
        if !keep_alive || *stopping.borrow() {
            return;
        }
    }
}

/// Parses the head at the start of `buf` and decides what to do; `None`
/// while the head is incomplete. The head's bytes are consumed; for a
/// forward, the upstream head is written into `upstream_head`.
fn plan(
    proxy: &Proxy,
    conn: &ConnInfo,
    buf: &mut BytesMut,
    limits: Limits,
    upstream_head: &mut Vec<u8>,
) -> Option<(Plan, Record)> {
    let started = Instant::now();
    let parsed = head::parse_request(buf, limits.max_headers, limits.max_header_bytes);
    let (plan, record, consumed) = match parsed {
        Ok(None) => return None,
        Err(refusal) => {
            let record = Record::refused(started);
            (refused(refusal), record, buf.len())
        }
        Ok(Some(mut request)) => {
            let (plan, record) = plan_request(proxy, conn, &mut request, started, upstream_head);
            (plan, record, request.len)
        }
    };
    buf.advance(consumed);
    Some((plan, record))
}

fn refused(refusal: Refusal) -> Plan {
    let status =
        http::StatusCode::from_u16(refusal.status()).unwrap_or(http::StatusCode::BAD_REQUEST);
    Plan::Local {
        response: LocalResponse {
            status,
            body: format!("{}\n", refusal.reason()),
            location: None,
        },
        close: true,
    }
}

fn plan_request(
    proxy: &Proxy,
    conn: &ConnInfo,
    request: &mut RequestHead<'_>,
    started: Instant,
    upstream_head: &mut Vec<u8>,
) -> (Plan, Record) {
    let table = proxy.table.load();
    let route = table.route(&request.host, request.path).cloned();
    // A local answer leaves any request body unread: the connection
    // closes after it.
    let close = !request.keep_alive || request.framing != Framing::Empty;
    let local = |response| Plan::Local { response, close };
    let plan = match route.clone() {
        None => local(proxy.not_found(&request.host, request.path)),
        Some(route) if route.ssl_redirect && !conn.tls => {
            local(proxy.redirect_to(&request.host, &request.target))
        }
        Some(route) => match proxy.unavailable(&route) {
            Some(response) => local(response),
            None => {
                request.write_upstream(conn, upstream_head);
                Plan::Forward {
                    framing: request.framing,
                    client: ClientSide {
                        minor: request.minor,
                        keep_alive: request.keep_alive,
                        head_request: request.is_head(),
                    },
                    upgrade: request.upgrade.is_some(),
                    idempotent: request.is_idempotent(),
                    route,
                }
            }
        },
    };
    let version = if request.minor == 0 {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    };
    let host = std::mem::take(&mut request.host);
    let record = Record::new(started, request.method, host, request.path, version, route);
    (plan, record)
}

/// A request to forward.
struct Forward<'a> {
    route: &'a Arc<Route>,
    framing: Framing,
    client: ClientSide,
    upgrade: bool,
    idempotent: bool,
}

/// How one attempt with an upstream connection ended.
enum Attempt {
    /// A response head went to the client (its body may have failed):
    /// whether the client connection stays open, and whether the upstream
    /// connection can go back to the pool.
    Answered { keep_alive: bool, reuse: bool },
    /// The upstream switched protocols and the client was told: tunnel.
    Upgraded,
    /// Nothing came back before the upstream failed or closed.
    NoResponse(String),
    /// The upstream answered something unusable, before any response head
    /// went to the client.
    Bad(BadResponse),
    /// No response head within the response timeout.
    Timeout,
    /// The client failed or left; nothing more can be sent.
    ClientGone,
}

/// Forwards the request whose head for the upstream is `upstream_head`,
/// trying the route's endpoints in balancing order; `out` is the buffer
/// for the client. Returns whether the client connection stays open.
async fn forward<S>(
    io: &mut S,
    buf: &mut BytesMut,
    upstream_head: &[u8],
    out: &mut Vec<u8>,
    proxy: &Proxy,
    request: &Forward<'_>,
    record: &mut Record,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let backend = &request.route.backend;
    let mut order = proxy.pool.order(
        &backend.id,
        &backend.endpoints,
        proxy.settings.balance == crate::proxy::Balance::LeastRequests,
    );
    order.truncate(proxy.settings.max_attempts.max(1));
    let mut failure = Failure::Connect {
        timed_out: false,
        detail: String::new(),
    };
    for addr in order {
        let mut upstream = match proxy.pool.checkout_raw(addr).await {
            Ok(upstream) => upstream,
            Err(error) => {
                tracing::debug!(%addr, %error, "upstream connect failed");
                failure = Failure::Connect {
                    timed_out: matches!(error, crate::upstream::ConnectError::Timeout(_)),
                    detail: error.to_string(),
                };
                continue;
            }
        };
        let _in_flight = proxy.pool.start_request(addr);
        if let Err(error) = upstream.stream.write_all(upstream_head).await {
            // Nothing of the request reached a live connection: any
            // request may go to the next endpoint.
            tracing::debug!(%addr, %error, reused = upstream.reused, "upstream write failed");
            failure = Failure::Upstream(error.to_string());
            continue;
        }
        record.upstream = Some(addr);
        match exchange(io, buf, &mut upstream, out, proxy, request, record).await {
            Attempt::Answered { keep_alive, reuse } => {
                if reuse {
                    proxy.pool.checkin_raw(upstream);
                }
                return keep_alive;
            }
            Attempt::Upgraded => {
                tunnel(io, buf, upstream).await;
                return false;
            }
            Attempt::ClientGone => {
                // nginx's code for a client that left before the answer.
                record.status = 499;
                return false;
            }
            Attempt::Timeout => {
                failure = Failure::Timeout;
                break;
            }
            Attempt::Bad(bad) => {
                failure = Failure::Upstream(bad.to_string());
                break;
            }
            Attempt::NoResponse(detail) => {
                tracing::debug!(%addr, %detail, reused = upstream.reused, "upstream failed before answering");
                failure = Failure::Upstream(detail);
                // A reused connection may have been closed by the upstream
                // just as the request went out: an idempotent request
                // without a body can safely go again.
                if !(upstream.reused
                    && request.idempotent
                    && request.framing == Framing::Empty
                    && !request.upgrade)
                {
                    break;
                }
            }
        }
    }
    record.upstream = None;
    let response = proxy.failure_response(backend, failure);
    record.status = response.status.as_u16();
    let close = !request.client.keep_alive || request.framing != Framing::Empty;
    out.clear();
    head::write_local(out, record.status, &response.body, None, close);
    let written = io.write_all(out).await.is_ok() && io.flush().await.is_ok();
    written && !close
}

/// One exchange on a connection the request head was written to: the
/// request body goes up while the response comes back, 1xx responses are
/// passed on, the final head must arrive within the response timeout, and
/// its body is relayed to the client (chunked again for an HTTP/1.1
/// client when the upstream's is chunked or ends with the connection).
/// The upstream connection goes back to the pool when both messages ended
/// cleanly and nothing else arrived.
async fn exchange<S>(
    io: &mut S,
    buf: &mut BytesMut,
    upstream: &mut Upstream,
    out: &mut Vec<u8>,
    proxy: &Proxy,
    request: &Forward<'_>,
    record: &mut Record,
) -> Attempt
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + proxy.settings.response_timeout;
    let Upstream {
        stream, buf: ubuf, ..
    } = upstream;
    let (mut client_read, mut client_write) = tokio::io::split(&mut *io);
    let (mut upstream_read, mut upstream_write) = stream.split();
    let mut request_out = Vec::new();
    let send = body::relay(
        buf,
        &mut client_read,
        &mut upstream_write,
        &mut request_out,
        request.framing,
        match request.framing {
            Framing::Chunked => Output::Chunked,
            _ => Output::Raw,
        },
    );
    let status = &mut record.status;
    let receive = async {
        let head = tokio::time::timeout_at(deadline, async {
            loop {
                out.clear();
                match head::parse_response(ubuf, request.client, out) {
                    Err(bad) => return Err(Attempt::Bad(bad)),
                    Ok(Some(response)) if response.status < 200 && response.status != 101 => {
                        // Interim (100 Continue, 103 Early Hints): passed on.
                        ubuf.advance(response.len);
                        if client_write.write_all(out).await.is_err()
                            || client_write.flush().await.is_err()
                        {
                            return Err(Attempt::ClientGone);
                        }
                        continue;
                    }
                    Ok(Some(response)) => {
                        ubuf.advance(response.len);
                        return Ok(response);
                    }
                    Ok(None) => {}
                }
                match body::fill(&mut upstream_read, ubuf).await {
                    Ok(0) => {
                        return Err(Attempt::NoResponse(
                            "upstream closed the connection".to_owned(),
                        ));
                    }
                    Ok(_) => {}
                    Err(error) => return Err(Attempt::NoResponse(error.to_string())),
                }
            }
        })
        .await;
        let response = match head {
            Ok(Ok(response)) => response,
            Ok(Err(attempt)) => return (attempt, false),
            Err(_) => return (Attempt::Timeout, false),
        };
        proxy.handles.upstream(
            &proxy.metrics,
            &request.route.backend.id,
            started.elapsed().as_secs_f64(),
        );
        if response.status == 101 && !request.upgrade {
            return (
                Attempt::NoResponse(
                    "the upstream switched protocols without being asked".to_owned(),
                ),
                false,
            );
        }
        *status = response.status;
        if response.status == 101 {
            let told =
                client_write.write_all(out).await.is_ok() && client_write.flush().await.is_ok();
            return (
                if told {
                    Attempt::Upgraded
                } else {
                    Attempt::ClientGone
                },
                false,
            );
        }
        let output = match response.framing {
            Framing::Chunked | Framing::UntilClose if request.client.minor >= 1 => Output::Chunked,
            _ => Output::Raw,
        };
        let relayed = body::relay(
            ubuf,
            &mut upstream_read,
            &mut client_write,
            out,
            response.framing,
            output,
        )
        .await;
        match relayed {
            Ok(()) => (
                Attempt::Answered {
                    keep_alive: response.client_keep_alive,
                    reuse: false,
                },
                response.reusable,
            ),
            Err(error) => {
                tracing::debug!(%error, "response body relay failed");
                (
                    Attempt::Answered {
                        keep_alive: false,
                        reuse: false,
                    },
                    false,
                )
            }
        }
    };
    let mut sending = request.framing != Framing::Empty;
    let mut request_sent = !sending;
    let (attempt, reusable) = {
        tokio::pin!(send);
        tokio::pin!(receive);
        loop {
            tokio::select! {
                sent = &mut send, if sending => {
                    sending = false;
                    match sent {
                        Ok(()) => request_sent = true,
                        // The upstream stopped reading: it may still answer.
                        Err(error) if error.is_write() => {
                            tracing::debug!(%error, "request body not taken by the upstream");
                        }
                        Err(error) => {
                            tracing::debug!(%error, "request body from the client failed");
                            break (Attempt::ClientGone, false);
                        }
                    }
                }
                received = &mut receive => break received,
            }
        }
    };
    match attempt {
        // An unfinished request body leaves both connections unusable.
        Attempt::Answered { keep_alive, .. } => Attempt::Answered {
            keep_alive: keep_alive && request_sent,
            reuse: reusable && request_sent && ubuf.is_empty(),
        },
        other => other,
    }
}

/// Joins the client and the upstream after `101 Switching Protocols`,
/// bytes already buffered on either side first.
async fn tunnel<S>(io: &mut S, buf: &mut BytesMut, mut upstream: Upstream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !upstream.buf.is_empty()
        && (io.write_all(&upstream.buf).await.is_err() || io.flush().await.is_err())
    {
        return;
    }
    if !buf.is_empty() && upstream.stream.write_all(buf).await.is_err() {
        return;
    }
    buf.clear();
    if let Err(error) = tokio::io::copy_bidirectional(io, &mut upstream.stream).await {
        tracing::debug!(%error, "upgraded connection ended");
    }
}
