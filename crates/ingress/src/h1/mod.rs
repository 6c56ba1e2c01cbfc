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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::proxy::{ConnInfo, Failure, LocalResponse, Proxy, Record};
use crate::routes::Route;
use crate::upstream::Upstream;
use body::{Framing, Output};
use head::{BadResponse, ClientSide, Refusal, Reply, RequestHead};

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
        reply: Reply,
    },
    /// Forward to the route's backend; the upstream head is written.
    Forward(Forward),
}

/// A request to forward.
struct Forward {
    route: Arc<Route>,
    framing: Framing,
    client: ClientSide,
    upgrade: bool,
    idempotent: bool,
}

impl Forward {
    /// How a local answer to this request is framed.
    fn reply(&self) -> Reply {
        Reply {
            // An unread body leaves the connection unusable.
            close: !self.client.keep_alive || self.framing != Framing::Empty,
            minor: self.client.minor,
            head_request: self.client.head_request,
        }
    }
}

/// How long the closing of a connection may take (a TLS close_notify to
/// a client that does not read).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Serves HTTP/1 requests on `io` until the client closes, a request asks
/// to, an error makes the connection unusable, the client stays silent
/// for the header timeout, or `stopping` turns true between requests.
/// `buf` holds bytes already read from `io`; the first request's head
/// must be complete by `first_deadline`. The connection is shut down at
/// the end (for TLS, with a close_notify).
pub async fn serve<S>(
    mut io: S,
    buf: BytesMut,
    conn: Arc<ConnInfo>,
    proxy: Arc<Proxy>,
    limits: Limits,
    first_deadline: tokio::time::Instant,
    stopping: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = Connection {
        conn,
        proxy,
        limits,
        stopping,
        upstream_head: Vec::with_capacity(1024),
        out: Vec::with_capacity(2048),
    };
    connection.serve(&mut io, buf, first_deadline).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, io.shutdown()).await;
}

/// One client connection's state.
struct Connection {
    conn: Arc<ConnInfo>,
    proxy: Arc<Proxy>,
    limits: Limits,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// The upstream request head, kept for retries.
    upstream_head: Vec<u8>,
    /// What goes to the client next.
    out: Vec<u8>,
}

impl Connection {
    fn stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    async fn serve<S>(&mut self, io: &mut S, mut buf: BytesMut, first: tokio::time::Instant)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut deadline = first;
        loop {
            let (plan, mut record) = loop {
                self.upstream_head.clear();
                if let Some(planned) = self.plan(&mut buf) {
                    break planned;
                }
                let read = tokio::select! {
                    biased;
                    read = tokio::time::timeout_at(deadline, body::fill(io, &mut buf)) => read,
                    _ = self.stopping.wait_for(|stopping| *stopping), if buf.is_empty() => return,
                };
                match read {
                    Ok(Ok(read)) if read > 0 => {}
                    Ok(Ok(_)) => return,
                    Ok(Err(error)) => {
                        tracing::debug!(peer = %self.conn.peer, %error, "client read failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %self.conn.peer, "request head not received in time");
                        return;
                    }
                }
            };
            let keep_alive = match plan {
                Plan::Local { response, reply } => {
                    self.answer_locally(io, &response, reply, &mut record).await
                }
                Plan::Forward(mut request) => {
                    request.client.keep_alive &= !self.stopping();
                    self.forward(io, &mut buf, &request, &mut record).await
                }
            };
            self.proxy.finish(&record, &self.conn);
            if !keep_alive || self.stopping() {
                return;
            }
            deadline = tokio::time::Instant::now() + self.limits.header_timeout;
        }
    }

    /// Parses the head at the start of `buf` and decides what to do;
    /// `None` while the head is incomplete. The head's bytes are
    /// consumed; for a forward, the upstream head is written.
    fn plan(&mut self, buf: &mut BytesMut) -> Option<(Plan, Record)> {
        let started = Instant::now();
        let limits = self.limits;
        let parsed = head::parse_request(buf, limits.max_headers, limits.max_header_bytes);
        let (plan, record, consumed) = match parsed {
            Ok(None) => return None,
            Err(refusal) => (refused(refusal), Record::refused(started), buf.len()),
            Ok(Some(mut request)) => {
                let (plan, record) = self.plan_request(&mut request, started);
                (plan, record, request.len)
            }
        };
        buf.advance(consumed);
        Some((plan, record))
    }

    fn plan_request(&mut self, request: &mut RequestHead<'_>, started: Instant) -> (Plan, Record) {
        let proxy = &self.proxy;
        let table = proxy.table.load();
        let route = table.route(&request.host, request.path).cloned();
        let reply = Reply {
            // A local answer leaves any request body unread: the
            // connection closes after it.
            close: !request.keep_alive || request.framing != Framing::Empty,
            minor: request.minor,
            head_request: request.is_head(),
        };
        let local = |response| Plan::Local { response, reply };
        let plan = match route.clone() {
            None => local(proxy.not_found(&request.host, request.path)),
            Some(route) if route.ssl_redirect && !self.conn.tls => {
                local(proxy.redirect_to(&request.host, &request.target))
            }
            Some(route) => match proxy.unavailable(&route) {
                Some(response) => local(response),
                None => {
                    request.write_upstream(&self.conn, &mut self.upstream_head);
                    Plan::Forward(Forward {
                        framing: request.framing,
                        client: ClientSide {
                            minor: request.minor,
                            keep_alive: request.keep_alive,
                            head_request: request.is_head(),
                        },
                        upgrade: request.upgrade.is_some(),
                        idempotent: request.is_idempotent(),
                        route,
                    })
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

    /// Writes the proxy's own response; whether the connection stays open.
    async fn answer_locally<S>(
        &mut self,
        io: &mut S,
        response: &LocalResponse,
        mut reply: Reply,
        record: &mut Record,
    ) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.out.clear();
        record.status = response.status.as_u16();
        reply.close |= self.stopping();
        head::write_local(
            &mut self.out,
            record.status,
            &response.body,
            response.location.as_deref(),
            reply,
        );
        let sent = io.write_all(&self.out).await.is_ok() && io.flush().await.is_ok();
        sent && !reply.close
    }

    /// Forwards a request whose upstream head is written, trying the
    /// route's endpoints in balancing order; returns whether the client
    /// connection stays open.
    async fn forward<S>(
        &mut self,
        io: &mut S,
        buf: &mut BytesMut,
        request: &Forward,
        record: &mut Record,
    ) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let proxy = self.proxy.clone();
        let backend = &request.route.backend;
        let mut failure = Failure::nothing_tried();
        for addr in proxy.attempt_order(backend) {
            let mut upstream = match proxy.pool.checkout_raw(addr).await {
                Ok(upstream) => upstream,
                Err(error) => {
                    failure = Failure::connect(addr, &error);
                    continue;
                }
            };
            let _in_flight = proxy.pool.start_request(addr);
            if let Err(error) = upstream.stream.write_all(&self.upstream_head).await {
                // Nothing of the request reached a live connection: any
                // request may go to the next endpoint.
                tracing::debug!(%addr, %error, reused = upstream.reused, "upstream write failed");
                failure = Failure::Upstream(error.to_string());
                continue;
            }
            record.upstream = Some(addr);
            match self.exchange(io, buf, &mut upstream, request, record).await {
                Attempt::Answered { keep_alive, reuse } => {
                    if reuse {
                        proxy.pool.checkin_raw(upstream);
                    }
                    return keep_alive;
                }
                Attempt::Upgraded => {
                    self.tunnel(io, buf, upstream).await;
                    return false;
                }
                Attempt::ClientGone => {
                    // nginx's code for a client that left before the
                    // answer; one that left during it keeps its status.
                    if record.status == 0 {
                        record.status = crate::proxy::CLIENT_CLOSED_REQUEST;
                    }
                    return false;
                }
                Attempt::BadBody(why) => {
                    record.upstream = None;
                    let response = LocalResponse {
                        status: http::StatusCode::BAD_REQUEST,
                        body: format!("{why}\n"),
                        location: None,
                    };
                    let reply = Reply {
                        close: true,
                        ..request.reply()
                    };
                    self.answer_locally(io, &response, reply, record).await;
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
                    // An idempotent request without a body can safely go
                    // again, to the next endpoint: a reused connection may
                    // have been closed by the upstream just as the request
                    // went out, a new one may belong to a backend that is
                    // going away (nginx's `proxy_next_upstream error`).
                    if !(request.idempotent
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
        self.answer_locally(io, &response, request.reply(), record)
            .await
    }

    /// One exchange on a connection the request head was written to: the
    /// request body goes up while the response comes back (see
    /// [`receive`]). A request without a body needs no second direction:
    /// the response is relayed on the streams themselves.
    async fn exchange<S>(
        &mut self,
        io: &mut S,
        buf: &mut BytesMut,
        upstream: &mut Upstream,
        request: &Forward,
        record: &mut Record,
    ) -> Attempt
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let proxy = &*self.proxy;
        let idle = proxy.settings.response_timeout;
        let answered = AtomicBool::new(false);
        let Upstream {
            stream, buf: ubuf, ..
        } = upstream;
        let exchange = Exchange {
            proxy,
            request,
            answered: &answered,
        };
        if request.framing == Framing::Empty {
            let (attempt, reusable) = exchange
                .receive(
                    &mut *io,
                    &mut *stream,
                    ubuf,
                    &mut self.out,
                    &mut record.status,
                )
                .await;
            return match attempt {
                Attempt::Answered { keep_alive, .. } => Attempt::Answered {
                    keep_alive,
                    reuse: reusable && ubuf.is_empty(),
                },
                other => other,
            };
        }
        let (mut client_read, mut client_write) = tokio::io::split(&mut *io);
        let (mut upstream_read, mut upstream_write) = stream.split();
        let mut request_out = Vec::new();
        let request_output = match request.framing {
            Framing::Chunked => Output::Chunked,
            _ => Output::Raw,
        };
        let send = body::relay(
            buf,
            &mut client_read,
            &mut upstream_write,
            &mut request_out,
            (request.framing, request_output),
            idle,
        );
        let receive = exchange.receive(
            &mut client_write,
            &mut upstream_read,
            ubuf,
            &mut self.out,
            &mut record.status,
        );
        let mut sending = true;
        let mut request_sent = false;
        let (attempt, reusable) = {
            tokio::pin!(send);
            tokio::pin!(receive);
            loop {
                tokio::select! {
                    biased;
                    sent = &mut send, if sending => {
                        sending = false;
                        match sent {
                            Ok(()) => request_sent = true,
                            // The upstream stopped reading: it may still answer.
                            Err(error) if error.is_write() => {
                                tracing::debug!(%error, "request body not taken by the upstream");
                            }
                            Err(body::BodyError::Chunked(why)) if !answered.load(Ordering::Relaxed) => {
                                break (Attempt::BadBody(why), false);
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
    /// bytes already buffered on either side first, until either side
    /// closes or the worker stops accepting.
    async fn tunnel<S>(&mut self, io: &mut S, buf: &mut BytesMut, mut upstream: Upstream)
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
        tokio::select! {
            biased;
            joined = tokio::io::copy_bidirectional(io, &mut upstream.stream) => {
                if let Err(error) = joined {
                    tracing::debug!(%error, "upgraded connection ended");
                }
            }
            _ = self.stopping.wait_for(|stopping| *stopping) => {
                tracing::debug!("upgraded connection closed: the worker stops");
            }
        }
    }
}

/// The response side of one exchange.
struct Exchange<'a> {
    proxy: &'a Proxy,
    request: &'a Forward,
    /// Set once the final response head is on its way to the client.
    answered: &'a AtomicBool,
}

impl Exchange<'_> {
    /// Reads the upstream's response: 1xx responses passed on (not to
    /// HTTP/1.0 clients), the final head within the response timeout,
    /// then its body relayed to the client (chunked again for an HTTP/1.1
    /// client when the upstream's is chunked or ends with the connection).
    /// Body reads and writes that make no progress for the response
    /// timeout end the relay. Returns how it ended and whether the
    /// upstream's message ended cleanly (the connection may be reused).
    async fn receive<W, R>(
        &self,
        client: &mut W,
        upstream: &mut R,
        ubuf: &mut BytesMut,
        out: &mut Vec<u8>,
        status: &mut u16,
    ) -> (Attempt, bool)
    where
        W: AsyncWrite + Unpin,
        R: AsyncRead + Unpin,
    {
        let request = self.request;
        let idle = self.proxy.settings.response_timeout;
        let now = tokio::time::Instant::now();
        let head = tokio::time::timeout_at(now + idle, async {
            loop {
                out.clear();
                match head::parse_response(ubuf, request.client, out) {
                    Err(bad) => return Err(Attempt::Bad(bad)),
                    Ok(Some(response)) if response.status < 200 && response.status != 101 => {
                        // Interim (100 Continue, 103 Early Hints): passed on,
                        // except to HTTP/1.0 clients, which would take it
                        // for the answer.
                        ubuf.advance(response.len);
                        if request.client.minor >= 1
                            && (client.write_all(out).await.is_err()
                                || client.flush().await.is_err())
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
                match body::fill(upstream, ubuf).await {
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
        let proxy = self.proxy;
        proxy.handles.upstream(
            &proxy.metrics,
            &request.route.backend.id,
            now.elapsed().as_secs_f64(),
        );
        if response.status == 101 && !request.upgrade {
            let detail = "the upstream switched protocols without being asked";
            return (Attempt::NoResponse(detail.to_owned()), false);
        }
        self.answered.store(true, Ordering::Relaxed);
        *status = response.status;
        if response.status == 101 {
            let told = client.write_all(out).await.is_ok() && client.flush().await.is_ok();
            let attempt = if told {
                Attempt::Upgraded
            } else {
                Attempt::ClientGone
            };
            return (attempt, false);
        }
        let output = match response.framing {
            Framing::Chunked | Framing::UntilClose if request.client.minor >= 1 => Output::Chunked,
            _ => Output::Raw,
        };
        let relayed = body::relay(
            ubuf,
            upstream,
            client,
            out,
            (response.framing, output),
            idle,
        )
        .await;
        let attempt = Attempt::Answered {
            keep_alive: relayed.is_ok() && response.client_keep_alive,
            reuse: false,
        };
        if let Err(error) = relayed {
            tracing::debug!(%error, "response body relay failed");
            return (attempt, false);
        }
        (attempt, response.reusable)
    }
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
        reply: Reply::CLOSE,
    }
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
    /// The client's chunked body is malformed, and no response went out.
    BadBody(&'static str),
    /// The client failed or left; nothing more can be sent.
    ClientGone,
}
