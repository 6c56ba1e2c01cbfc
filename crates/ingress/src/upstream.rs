//! Upstream connections and balancing state: a keep-alive pool of HTTP/1.1
//! connections per endpoint address, connect timeouts, round-robin
//! positions per backend and in-flight counts per endpoint (both outlive
//! routing table rebuilds), and a short memory of endpoints that refused
//! connections so the next requests try the others first.
//!
//! A connection goes back to the pool only after its response body was read
//! to the end ([`PooledBody`]); a response dropped half-way closes it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Body type of every request and response the proxy forwards.
pub type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// How long an endpoint that refused a connection is tried last.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connect to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

/// Pool limits.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    /// An idle connection older than this is closed, not reused.
    pub idle_timeout: Duration,
}

struct IdleConn {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

/// An idle connection of the HTTP/1 path, with its (empty) read buffer.
struct IdleStream {
    stream: TcpStream,
    buf: BytesMut,
    since: Instant,
}

#[derive(Default)]
struct PoolState {
    idle: HashMap<SocketAddr, Vec<IdleConn>>,
    idle_streams: HashMap<SocketAddr, Vec<IdleStream>>,
    in_flight: HashMap<SocketAddr, usize>,
    failed: HashMap<SocketAddr, Instant>,
    /// Next round-robin position by backend id.
    next: HashMap<String, usize>,
}

/// The shared connection pool.
#[derive(Clone)]
pub struct Pool {
    state: Arc<Mutex<PoolState>>,
    settings: PoolSettings,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("settings", &self.settings)
            .finish()
    }
}

/// A connection ready to send one request.
#[derive(Debug)]
pub struct Connection {
    pub sender: SendRequest<ProxyBody>,
    pub addr: SocketAddr,
    /// Taken from the pool rather than freshly connected.
    pub reused: bool,
}

/// A plain upstream connection for the proxy's own HTTP/1 path
/// ([`h1`](crate::h1)): the stream and what was read from it but not yet
/// used.
#[derive(Debug)]
pub struct Upstream {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub addr: SocketAddr,
    /// Taken from the pool rather than freshly connected.
    pub reused: bool,
}

/// Read buffer of a new upstream connection.
const UPSTREAM_BUFFER: usize = 8192;

impl Pool {
    pub fn new(settings: PoolSettings) -> Pool {
        Pool {
            state: Arc::default(),
            settings,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves plain maps behind, still
        // consistent enough to keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle pooled connection to `addr`, or a new one.
    pub async fn checkout(&self, addr: SocketAddr) -> Result<Connection, ConnectError> {
        while let Some(mut sender) = self.take_idle(addr) {
            // A connection goes idle as soon as its response body ended;
            // hyper may need a moment more to be ready for the next request.
            if sender.ready().await.is_ok() {
                return Ok(Connection {
                    sender,
                    addr,
                    reused: true,
                });
            }
        }
        let stream = self.connect_tcp(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%addr, %error, "upstream connection ended");
            }
        });
        Ok(Connection {
            sender,
            addr,
            reused: false,
        })
    }

    /// An idle pooled plain connection to `addr` that the upstream has not
    /// closed, or a new one.
    pub async fn checkout_raw(&self, addr: SocketAddr) -> Result<Upstream, ConnectError> {
        loop {
            let idle = {
                let mut state = self.lock();
                state.idle_streams.get_mut(&addr).and_then(Vec::pop)
            };
            let Some(idle) = idle else { break };
            if idle.since.elapsed() >= self.settings.idle_timeout {
                continue;
            }
            // An idle connection has nothing to say: a readable one was
            // closed by the upstream (or sent something unasked). The
            // check costs no system call while the reactor has seen
            // nothing arrive.
            match idle.stream.try_read(&mut [0u8; 1]) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(Upstream {
                        stream: idle.stream,
                        buf: idle.buf,
                        addr,
                        reused: true,
                    });
                }
                _ => continue,
            }
        }
        let stream = self.connect_tcp(addr).await?;
        Ok(Upstream {
            stream,
            buf: BytesMut::with_capacity(UPSTREAM_BUFFER),
            addr,
            reused: false,
        })
    }

    /// Returns a plain connection whose exchange ended cleanly (nothing
    /// left unread) to the idle list.
    pub fn checkin_raw(&self, upstream: Upstream) {
        let mut state = self.lock();
        let idle = state.idle_streams.entry(upstream.addr).or_default();
        if idle.len() < self.settings.max_idle_per_endpoint {
            idle.push(IdleStream {
                stream: upstream.stream,
                buf: upstream.buf,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections that are too old or that the upstream
    /// closed, and forgets endpoints with none left; run periodically, so
    /// that connections to endpoints no request goes to any more (a
    /// deleted pod) do not stay open.
    pub fn prune_idle(&self) {
        let idle_timeout = self.settings.idle_timeout;
        let mut state = self.lock();
        state.idle_streams.retain(|_, idle| {
            idle.retain(|conn| {
                conn.since.elapsed() < idle_timeout
                    && matches!(
                        conn.stream.try_read(&mut [0u8; 1]),
                        Err(ref error) if error.kind() == std::io::ErrorKind::WouldBlock
                    )
            });
            !idle.is_empty()
        });
        state.idle.retain(|_, idle| {
            idle.retain(|conn| !conn.sender.is_closed() && conn.since.elapsed() < idle_timeout);
            !idle.is_empty()
        });
    }

    /// A new TCP connection to `addr` within the connect timeout; the
    /// outcome updates the memory of endpoints that refused.
    async fn connect_tcp(&self, addr: SocketAddr) -> Result<TcpStream, ConnectError> {
        let result = tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(addr))
            .and_then(|r| r.map_err(|source| ConnectError::Io { addr, source }));
        let mut state = self.lock();
        match &result {
            Ok(stream) => {
                state.failed.remove(&addr);
                // Small writes (headers) must not wait for Nagle.
                let _ = stream.set_nodelay(true);
            }
            Err(_) => {
                state.failed.insert(addr, Instant::now());
            }
        }
        result
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        let mut state = self.lock();
        let conns = state.idle.get_mut(&addr)?;
        while let Some(conn) = conns.pop() {
            if !conn.sender.is_closed() && conn.since.elapsed() < self.settings.idle_timeout {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Returns a connection whose response was fully read to the idle list
    /// (the next checkout waits for hyper to have it ready).
    fn checkin(&self, addr: SocketAddr, sender: SendRequest<ProxyBody>) {
        let mut state = self.lock();
        let idle = state.idle.entry(addr).or_default();
        if idle.len() < self.settings.max_idle_per_endpoint {
            idle.push(IdleConn {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Counts a request to `addr` as in flight until the guard drops.
    pub fn start_request(&self, addr: SocketAddr) -> InFlight {
        *self.lock().in_flight.entry(addr).or_default() += 1;
        InFlight {
            pool: self.clone(),
            addr,
        }
    }

    /// The endpoints of backend `id` in the order to try them for one
    /// request: round-robin from the backend's next position; then, stably,
    /// endpoints that refused a connection in the last few seconds last,
    /// and with `least_requests` fewer in-flight requests first.
    pub fn order(
        &self,
        id: &str,
        endpoints: &[SocketAddr],
        least_requests: bool,
    ) -> Vec<SocketAddr> {
        let count = endpoints.len();
        if count == 0 {
            return Vec::new();
        }
        let mut state = self.lock();
        let start = match state.next.get_mut(id) {
            Some(next) => {
                let start = *next % count;
                *next = next.wrapping_add(1);
                start
            }
            None => {
                // First request of this backend: a random start, so that
                // many proxies do not all begin with the same endpoint.
                let start = rand::random_range(0..count);
                if state.next.len() > 100_000 {
                    state.next.clear();
                }
                state.next.insert(id.to_owned(), start + 1);
                start
            }
        };
        state
            .failed
            .retain(|_, since| since.elapsed() < FAILURE_MEMORY);
        let mut order: Vec<SocketAddr> =
            (0..count).map(|i| endpoints[(start + i) % count]).collect();
        order.sort_by_key(|addr| {
            let failed = state.failed.contains_key(addr);
            let load = if least_requests {
                state.in_flight.get(addr).copied().unwrap_or(0)
            } else {
                0
            };
            (failed, load)
        });
        order
    }
}

/// One request in flight to an endpoint.
#[derive(Debug)]
pub struct InFlight {
    pool: Pool,
    addr: SocketAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        if let Some(count) = state.in_flight.get_mut(&self.addr) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.in_flight.remove(&self.addr);
            }
        }
    }
}

/// An upstream response body that hands its connection back to the pool
/// once read to the end, and ends the in-flight count when dropped.
pub struct PooledBody {
    inner: Incoming,
    done: bool,
    conn: Option<(Pool, SocketAddr, SendRequest<ProxyBody>)>,
    _in_flight: InFlight,
}

impl PooledBody {
    pub fn new(
        inner: Incoming,
        pool: Pool,
        addr: SocketAddr,
        sender: SendRequest<ProxyBody>,
        in_flight: InFlight,
    ) -> PooledBody {
        PooledBody {
            inner,
            done: false,
            conn: Some((pool, addr, sender)),
            _in_flight: in_flight,
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if (self.done || self.inner.is_end_stream())
            && let Some((pool, addr, sender)) = self.conn.take()
        {
            pool.checkin(addr, sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        Pool::new(PoolSettings {
            connect_timeout: Duration::from_secs(1),
            max_idle_per_endpoint: 1,
            idle_timeout: Duration::from_secs(1),
        })
    }

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 80)))
            .collect()
    }

    #[tokio::test]
    async fn pruning_closes_idle_streams_the_upstream_closed_or_that_aged() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::new(PoolSettings {
            connect_timeout: Duration::from_secs(1),
            max_idle_per_endpoint: 4,
            idle_timeout: Duration::from_secs(60),
        });
        let kept = pool.checkout_raw(addr).await.unwrap();
        let (_kept_peer, _) = listener.accept().await.unwrap();
        let closed = pool.checkout_raw(addr).await.unwrap();
        let (closed_peer, _) = listener.accept().await.unwrap();
        pool.checkin_raw(kept);
        pool.checkin_raw(closed);
        drop(closed_peer);
        // The reactor sees the close once the runtime polls it.
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            pool.prune_idle();
            if pool.lock().idle_streams.get(&addr).map(Vec::len) == Some(1) {
                break;
            }
        }
        assert_eq!(pool.lock().idle_streams.get(&addr).map(Vec::len), Some(1));
        // The survivor is the open one, and is handed out again.
        let again = pool.checkout_raw(addr).await.unwrap();
        assert!(again.reused);
        pool.checkin_raw(again);
        // Aged out: the endpoint is forgotten.
        pool.lock().idle_streams.get_mut(&addr).unwrap()[0].since -= Duration::from_secs(61);
        pool.prune_idle();
        assert!(pool.lock().idle_streams.is_empty());
    }

    #[test]
    fn round_robin_rotates_per_backend() {
        let pool = pool();
        let endpoints = addrs(3);
        let firsts: Vec<SocketAddr> = (0..6)
            .map(|_| pool.order("a", &endpoints, false)[0])
            .collect();
        assert_eq!(firsts[0..3], firsts[3..6]);
        let mut distinct = firsts[0..3].to_vec();
        distinct.sort();
        assert_eq!(distinct, endpoints);
        assert_eq!(pool.order("a", &endpoints, false).len(), 3);
        assert!(pool.order("a", &[], false).is_empty());
    }

    #[test]
    fn failed_endpoints_go_last_and_least_requests_prefers_idle() {
        let pool = pool();
        let endpoints = addrs(3);
        pool.lock().failed.insert(endpoints[0], Instant::now());
        for _ in 0..3 {
            assert_eq!(
                *pool.order("b", &endpoints, false).last().unwrap(),
                endpoints[0]
            );
        }
        let _busy = pool.start_request(endpoints[1]);
        let _busy2 = pool.start_request(endpoints[1]);
        let _one = pool.start_request(endpoints[2]);
        assert_eq!(
            pool.order("b", &endpoints, true),
            vec![endpoints[2], endpoints[1], endpoints[0]]
        );
        drop(_one);
        assert_eq!(pool.lock().in_flight.get(&endpoints[2]), None);
    }
}
