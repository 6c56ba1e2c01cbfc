//! Client-facing listeners: HTTP (HTTP/1.1 and h2c) and HTTPS (TLS with
//! ALPN h2 and http/1.1), admission limits at accept (a cap on open
//! connections and a per-source-address rate of new connections), limits
//! per connection (header bytes and count, a header read timeout that also
//! closes idle keep-alive connections, idle HTTP/2 connections and
//! slowloris clients, a TLS handshake timeout), and graceful shutdown that
//! stops accepting and lets in-flight requests finish.
//!
//! [`serve`] is one worker's accept loop. The controller runs one worker per
//! CPU, each a single-threaded runtime with its own `SO_REUSEPORT` listeners
//! (which of them gets a new connection: [`crate::steer`]), its own
//! upstream pool and no cross-thread wakeups on the request path, as
//! nginx's workers do.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::conn_io::{ClientStream, first_bytes};
use crate::h1::Limits;
use crate::proxy::{ConnInfo, Proxy};
use crate::upstream::ProxyBody;

/// Connection-level limits.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Time to receive a request's headers (and, on keep-alive, the next
    /// request's first byte); also the TLS handshake timeout.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; more is
    /// answered 431.
    pub max_header_bytes: usize,
    /// Most request headers; more is answered 431.
    pub max_headers: usize,
    /// Open client connections at most; more are closed at accept.
    pub max_connections: usize,
    /// New connections per second from one source address (0: no limit);
    /// bursts of twice that are allowed.
    pub connection_rate: u32,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

/// hyper's smallest allowed HTTP/1 read buffer.
const MIN_BUFFER: usize = 8192;

/// Decides at accept whether a connection may be served; one is shared by
/// every worker so the limits are the process's.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    rate: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Why a connection is refused at accept (the `reason` label of
/// `weft_ingress_connections_rejected_total`): over the per-source rate,
/// or no slot under `--max-connections`.
pub const REFUSAL_REASONS: [&str; 2] = ["rate", "max_connections"];

impl Admission {
    pub fn new(settings: &ServerSettings) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(settings.max_connections.max(1))),
            rate: f64::from(settings.connection_rate),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for the connection, or the reason it is refused.
    fn admit(&self, ip: IpAddr) -> Result<OwnedSemaphorePermit, &'static str> {
        if self.rate > 0.0 {
            let burst = self.rate * 2.0;
            let mut buckets = self
                .buckets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            if buckets.len() > 100_000 {
                // Forget sources whose bucket has refilled: they are at the
                // state a new entry would have.
                let rate = self.rate;
                buckets.retain(|_, (tokens, at)| {
                    *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
                });
            }
            let (tokens, at) = buckets.entry(ip).or_insert((burst, now));
            *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(burst);
            *at = now;
            if *tokens < 1.0 {
                return Err(REFUSAL_REASONS[0]);
            }
            *tokens -= 1.0;
        }
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| REFUSAL_REASONS[1])
    }
}

fn builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(settings.max_header_bytes.max(MIN_BUFFER))
        .max_headers(settings.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Accepts on the listeners until `stop` completes, then stops accepting
/// and waits up to the drain timeout for open requests to finish.
pub async fn serve(
    proxy: Arc<Proxy>,
    http: Option<TcpListener>,
    https: Option<(TcpListener, TlsAcceptor)>,
    settings: ServerSettings,
    admission: Arc<Admission>,
    stop: impl Future<Output = ()>,
) {
    // Every connection task holds a sender: the drain waits until all of
    // them are gone.
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    // Set when accepting stops: connections still waiting for their first
    // bytes end then instead of holding up the drain, HTTP/1 connections
    // close after their current request, HTTP/2 ones send GOAWAY.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let heartbeat = tokio::spawn(timer_heartbeat());
    let pool = proxy.pool.clone();
    let pruner = tokio::spawn(async move {
        loop {
            tokio::time::sleep(PRUNE_EVERY).await;
            pool.prune_idle();
        }
    });
    let builder = Arc::new(builder(&settings));
    // Only the port of the accepting socket is used (`X-Forwarded-Port`):
    // the listener's, without a getsockname per connection.
    let http_port = http
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    let https_port = https
        .as_ref()
        .and_then(|(l, _)| l.local_addr().ok())
        .map_or(0, |a| a.port());
    tokio::pin!(stop);
    loop {
        let (stream, peer, tls) = tokio::select! {
            accepted = accept(http.as_ref()) => match accepted {
                Some((stream, peer)) => (stream, peer, None),
                None => continue,
            },
            accepted = accept(https.as_ref().map(|(l, _)| l)) => match accepted {
                Some((stream, peer)) => (stream, peer, https.as_ref().map(|(_, a)| a.clone())),
                None => continue,
            },
            () = &mut stop => break,
        };
        let permit = match admission.admit(peer.ip().to_canonical()) {
            Ok(permit) => permit,
            Err(reason) => {
                proxy.metrics.rejected(reason);
                tracing::debug!(%peer, reason, "connection refused at accept");
                continue;
            }
        };
        let local_port = if tls.is_some() { https_port } else { http_port };
        let info = Arc::new(ConnInfo::new(peer, local_port, tls.is_some()));
        let builder = builder.clone();
        let proxy = proxy.clone();
        let header_timeout = settings.header_timeout;
        let waits = FirstBytes {
            limits: Limits {
                header_timeout,
                max_header_bytes: settings.max_header_bytes,
                max_headers: settings.max_headers,
            },
            stopping: stopping.clone(),
        };
        let open = open_tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            proxy.handles.connection_opened(&proxy.metrics);
            let stream = ClientStream::no_half_close(stream);
            match tls {
                None => {
                    serve_connection(stream, false, info, &builder, proxy.clone(), waits).await;
                }
                // Boxed: the TLS state would otherwise make every
                // connection's task larger, plain ones too, and each move
                // of a task copies all of it.
                Some(acceptor) => {
                    Box::pin(serve_tls(
                        acceptor,
                        stream,
                        info,
                        &builder,
                        proxy.clone(),
                        waits,
                    ))
                    .await;
                }
            }
            proxy.handles.connection_closed(&proxy.metrics);
        });
    }
    drop(http);
    drop(https);
    let _ = stopping_tx.send(true);
    tracing::debug!("worker stopped accepting; draining its open connections");
    drop(open_tx);
    // `None` once every connection task ended.
    let drained = open_rx.recv();
    if tokio::time::timeout(settings.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout passed; closing the remaining connections");
    }
    heartbeat.abort();
    pruner.abort();
}

/// How often idle upstream connections are checked.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// How often [`timer_heartbeat`] wakes its worker: shorter than every
/// timeout a request arms by default (connect 3 s, headers 10 s, upstream
/// response 60 s).
const HEARTBEAT: Duration = Duration::from_millis(250);

/// Keeps a timer due within [`HEARTBEAT`] in the worker's runtime, so that
/// the timers every request arms cost no wake-up. tokio's time driver
/// unparks itself (an eventfd write, then one more pass through
/// `epoll_wait` and an eventfd read) whenever a timer is registered
/// earlier than the earliest one it knew when it last parked, and always
/// when it knew none; a worker that went idle between bursts would do that
/// for every new connection's header timeout and every request's response
/// timeout. With this timer always due sooner, registering those wakes
/// nothing. Timers still fire at their exact deadlines: this changes only
/// which registrations need the driver woken.
async fn timer_heartbeat() {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
    }
}

async fn accept(listener: Option<&TcpListener>) -> Option<(TcpStream, SocketAddr)> {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    match listener.accept().await {
        Ok(accepted) => Some(accepted),
        Err(error) => {
            // Out of file descriptors and the like: back off instead of
            // spinning on the error.
            tracing::warn!(%error, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// How long a new connection may take to send its first bytes, and the
/// limits on its requests.
struct FirstBytes {
    limits: Limits,
    /// Becomes true when the worker stops accepting.
    stopping: tokio::sync::watch::Receiver<bool>,
}

/// Serves HTTPS on `stream` after a TLS handshake within the header
/// timeout.
async fn serve_tls(
    acceptor: TlsAcceptor,
    stream: ClientStream<TcpStream>,
    info: Arc<ConnInfo>,
    builder: &auto::Builder<TokioExecutor>,
    proxy: Arc<Proxy>,
    waits: FirstBytes,
) {
    let peer = info.peer;
    match tokio::time::timeout(waits.limits.header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_connection(stream, h2, info, builder, proxy, waits).await;
        }
        Ok(Err(error)) => {
            proxy.metrics.tls_failure();
            tracing::debug!(%peer, %error, "TLS handshake failed");
        }
        Err(_) => {
            proxy.metrics.tls_failure();
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

/// Serves HTTP on `io` once its first bytes arrived (see
/// [`conn_io`](crate::conn_io)): HTTP/2 (negotiated by ALPN, `h2`, or
/// the prior-knowledge preface) through hyper, HTTP/1 on the proxy's own
/// path ([`h1`](crate::h1)). A connection that stays silent for the header
/// timeout or until the worker stops accepting, or closes first, is
/// dropped.
async fn serve_connection<I>(
    mut io: I,
    h2: bool,
    info: Arc<ConnInfo>,
    builder: &auto::Builder<TokioExecutor>,
    proxy: Arc<Proxy>,
    mut waits: FirstBytes,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    // One header timeout for the first bytes and the rest of the head.
    let deadline = tokio::time::Instant::now() + waits.limits.header_timeout;
    let first = tokio::select! {
        biased;
        first = first_bytes(&mut io, waits.limits.header_timeout) => first,
        _ = waits.stopping.wait_for(|stopping| *stopping) => None,
    };
    let Some(first) = first else {
        tracing::debug!(%peer, "connection closed or silent before its first request");
        return;
    };
    if !h2 && !is_h2_preface(&first) {
        let limits = waits.limits;
        crate::h1::serve(io, first, info, proxy, limits, deadline, waits.stopping).await;
        return;
    }
    // Boxed, as HTTP/2 is the rarer case and its state the larger.
    Box::pin(serve_hyper(
        ClientStream::with_prefix(first.to_vec(), io),
        info,
        builder,
        proxy,
        waits,
    ))
    .await;
}

/// Serves `io` with hyper (HTTP/2; it would take HTTP/1 as well).
///
/// The connection gets GOAWAY, which lets its open streams finish and
/// starts no new one, when the worker stops accepting, and when it has had
/// no stream open for the header timeout: that is HTTP/2's keep-alive
/// idle limit, and it also ends a client that opens the connection and
/// never completes a request's headers (HTTP/1 has the same limit in
/// [`h1`](crate::h1)). hyper's pings close a connection whose peer stops
/// answering, but not one that answers them and sends nothing else. After
/// an idle GOAWAY the connection is dropped once it has had no stream open
/// for one more header timeout (a request that came in just as the GOAWAY
/// left is served whole).
async fn serve_hyper<I>(
    io: I,
    info: Arc<ConnInfo>,
    builder: &auto::Builder<TokioExecutor>,
    proxy: Arc<Proxy>,
    mut waits: FirstBytes,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let idle_limit = waits.limits.header_timeout;
    let max_headers = waits.limits.max_headers;
    let streams = Arc::new(OpenStreams::new());
    let service = {
        let streams = streams.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let stream = OpenStream::new(streams.clone());
            let proxy = proxy.clone();
            let info = info.clone();
            async move {
                let response = if header_count(&request) > max_headers {
                    proxy.too_many_headers(&request, &info)
                } else {
                    proxy.handle(request, info).await?
                };
                Ok::<_, Infallible>(response.map(|body| StreamBody {
                    body,
                    _stream: stream,
                }))
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn.into_owned());
    // When the idle GOAWAY went out; `draining` once the worker stopped
    // accepting (the drain timeout then bounds the rest).
    let mut idle_goaway: Option<tokio::time::Instant> = None;
    let mut draining = false;
    loop {
        let check_at = match idle_goaway {
            Some(sent) => sent + idle_limit,
            None => streams.idle_deadline(idle_limit),
        };
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%peer, %error, "client connection ended with an error");
                }
                return;
            }
            _ = waits.stopping.wait_for(|stopping| *stopping), if !draining && idle_goaway.is_none() => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            () = tokio::time::sleep_until(check_at), if !draining => {
                if idle_goaway.is_some() {
                    // A request may have come in just as the GOAWAY left:
                    // it is served whole, however long it takes.
                    if streams.any_open() {
                        idle_goaway = Some(tokio::time::Instant::now());
                        continue;
                    }
                    tracing::debug!(%peer, "HTTP/2 connection still open a header timeout after GOAWAY");
                    return;
                }
                if streams.idle_deadline(idle_limit) <= tokio::time::Instant::now() {
                    tracing::debug!(%peer, "HTTP/2 connection idle; sending GOAWAY");
                    conn.as_mut().graceful_shutdown();
                    idle_goaway = Some(tokio::time::Instant::now());
                }
            }
        }
    }
}

/// The request's header fields as HTTP/1 would count them: the crumbs of
/// a `Cookie` that an HTTP/2 client split into fields of their own (RFC
/// 9113 section 8.2.3) count as the one header they are in HTTP/1.
fn header_count(request: &hyper::Request<Incoming>) -> usize {
    let headers = request.headers();
    let cookie_fields = headers.get_all(hyper::header::COOKIE).iter().count();
    headers.len() - cookie_fields.saturating_sub(1)
}

/// The streams open on one HTTP/2 connection (requests whose response has
/// not been sent whole), and since when none is.
#[derive(Debug)]
struct OpenStreams(Mutex<StreamCount>);

#[derive(Debug)]
struct StreamCount {
    open: usize,
    /// When `open` last went to zero (or the connection started).
    idle_since: tokio::time::Instant,
}

impl OpenStreams {
    fn new() -> OpenStreams {
        OpenStreams(Mutex::new(StreamCount {
            open: 0,
            idle_since: tokio::time::Instant::now(),
        }))
    }

    fn count(&self) -> std::sync::MutexGuard<'_, StreamCount> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn any_open(&self) -> bool {
        self.count().open > 0
    }

    /// When the connection will have been idle for `limit`; a header
    /// timeout from now while a stream is open (checked again then).
    fn idle_deadline(&self, limit: Duration) -> tokio::time::Instant {
        let count = self.count();
        if count.open > 0 {
            tokio::time::Instant::now() + limit
        } else {
            count.idle_since + limit
        }
    }
}

/// One open stream of an [`OpenStreams`]: counted from the request's
/// arrival until its response body is dropped (sent whole, or the stream
/// reset).
#[derive(Debug)]
struct OpenStream(Arc<OpenStreams>);

impl OpenStream {
    fn new(streams: Arc<OpenStreams>) -> OpenStream {
        streams.count().open += 1;
        OpenStream(streams)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut count = self.0.count();
        count.open -= 1;
        if count.open == 0 {
            count.idle_since = tokio::time::Instant::now();
        }
    }
}

/// A response body that keeps its stream counted as open until hyper has
/// sent it whole (and dropped it).
#[derive(Debug)]
struct StreamBody {
    body: ProxyBody,
    _stream: OpenStream,
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Whether a connection's first bytes are (the start of) the HTTP/2
/// client preface.
fn is_h2_preface(first: &[u8]) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let n = first.len().min(PREFACE.len());
    n > 0 && first[..n] == PREFACE[..n]
}

/// A listener on `addr` with `SO_REUSEPORT`, so that every worker can bind
/// its own on the same address, and `TCP_NODELAY`, which Linux copies to
/// every connection it accepts (responses and TLS records are not held
/// back for Nagle, without a `setsockopt` per connection). Call inside a
/// tokio runtime.
pub fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_inherit_no_delay_from_the_listener() {
        let listener = reuseport_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY not inherited");
        // The client side is a plain socket: the option is the listener's doing.
        assert!(!client.nodelay().unwrap());
    }
}
