//! Forwarding of names outside the cluster zone: upstream selection
//! (sequential or random, skipping upstreams that are down), one query
//! over UDP retried over TCP when truncated, a per-upstream timeout, active
//! health checks ([`Forwarder::health_checks`]: an upstream that failed is
//! skipped until a probe gets an answer from it), and the [`cache`] of
//! answers. Refuses, at construction, to forward to the server's own listen
//! address (a forwarding loop).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::config::Policy;
use crate::ops::Metrics;

pub mod cache;

use cache::Cache;

/// Without health checks, how long an upstream that failed is skipped
/// while others are healthy.
const DOWN_FOR: Duration = Duration::from_secs(5);

/// Why forwarding failed; the client gets SERVFAIL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    #[error("upstream {upstream} did not answer within {timeout:?}")]
    Timeout {
        upstream: SocketAddr,
        timeout: Duration,
    },
    #[error("cannot query upstream {upstream}")]
    Io {
        upstream: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream {upstream} sent an answer that is not DNS")]
    Malformed { upstream: SocketAddr },
    #[error("cannot encode the query")]
    Encode(#[source] hickory_proto::ProtoError),
    #[error("no upstream configured")]
    NoUpstream,
}

/// A forwarding target refused at construction.
#[derive(Debug, thiserror::Error)]
#[error("upstream {0} is this server's own listen address: forwarding to it would loop")]
pub struct LoopError(pub SocketAddr);

#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    /// When it last failed; `None` while healthy.
    down_since: Mutex<Option<Instant>>,
}

impl Upstream {
    /// Whether to skip it while others are healthy: from a failure until a
    /// probe (or an answer) clears it, or for [`DOWN_FOR`] without probes.
    fn is_down(&self, now: Instant, probing: bool) -> bool {
        self.down_since
            .lock()
            .map(|d| d.is_some_and(|since| probing || now < since + DOWN_FOR))
            .unwrap_or(false)
    }

    fn mark(&self, up: bool) {
        if let Ok(mut d) = self.down_since.lock() {
            *d = if up { None } else { Some(Instant::now()) };
        }
    }

    fn marked_down(&self) -> bool {
        self.down_since.lock().map(|d| d.is_some()).unwrap_or(false)
    }
}

/// Forwards queries to a list of upstreams through a cache.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<Upstream>,
    policy: Policy,
    timeout: Duration,
    /// How often upstreams marked down are probed; `None`: never.
    health_interval: Option<Duration>,
    pub cache: Cache,
}

/// Whether sending to `upstream` would reach a server listening on `listen`.
pub fn is_loop(upstream: SocketAddr, listen: SocketAddr) -> bool {
    if upstream.port() != listen.port() {
        return false;
    }
    upstream.ip() == listen.ip()
        || (listen.ip().is_unspecified()
            && (upstream.ip().is_loopback() || upstream.ip().is_unspecified()))
}

impl Forwarder {
    /// Refuses any upstream that is one of `own` listen addresses.
    pub fn new(
        upstreams: &[SocketAddr],
        own: &[SocketAddr],
        policy: Policy,
        timeout: Duration,
        cache: Cache,
    ) -> Result<Forwarder, LoopError> {
        for &u in upstreams {
            if own.iter().any(|&l| is_loop(u, l)) {
                return Err(LoopError(u));
            }
        }
        Ok(Forwarder {
            upstreams: upstreams
                .iter()
                .map(|&addr| Upstream {
                    addr,
                    down_since: Mutex::new(None),
                })
                .collect(),
            policy,
            timeout,
            health_interval: None,
            cache,
        })
    }

    /// Probes upstreams marked down every `interval` (see
    /// [`Forwarder::health_checks`]); `None` or zero turns probing off, and
    /// a failed upstream is then retried by real queries after 5 s.
    pub fn with_health_checks(mut self, interval: Option<Duration>) -> Forwarder {
        self.health_interval = interval.filter(|i| !i.is_zero());
        self
    }

    /// The upstreams, in configured order.
    pub fn upstreams(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.upstreams.iter().map(|u| u.addr)
    }

    /// Active health checks, until the future is dropped: every interval,
    /// each upstream marked down gets a `. NS` query (as CoreDNS's `forward`
    /// sends), and any well-formed answer, whatever its rcode, marks it up
    /// again. Returns at once when probing is off.
    pub async fn health_checks(&self, metrics: &Metrics) {
        for u in &self.upstreams {
            metrics.upstream_up(u.addr, true);
        }
        let Some(interval) = self.health_interval else {
            return;
        };
        let probe = Query::query(Name::root(), RecordType::NS);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for upstream in self.upstreams.iter().filter(|u| u.marked_down()) {
                match self.exchange(upstream.addr, &probe).await {
                    Ok(_) => {
                        tracing::info!(upstream = %upstream.addr, "upstream answers health probes again");
                        upstream.mark(true);
                        metrics.upstream_up(upstream.addr, true);
                    }
                    Err(e) => {
                        tracing::debug!(upstream = %upstream.addr, error = %e, "health probe failed");
                    }
                }
            }
        }
    }

    /// The order to try upstreams in: healthy ones first (by policy), then
    /// those marked down, so a query still has a chance when all failed.
    fn order(&self) -> Vec<&Upstream> {
        let now = Instant::now();
        let probing = self.health_interval.is_some();
        let start = match self.policy {
            Policy::Sequential => 0,
            Policy::Random => rand::random_range(0..self.upstreams.len().max(1)),
        };
        let rotated = self.upstreams[start..]
            .iter()
            .chain(&self.upstreams[..start]);
        let (mut healthy, down): (Vec<&Upstream>, Vec<&Upstream>) =
            rotated.partition(|u| !u.is_down(now, probing));
        healthy.extend(down);
        healthy
    }

    /// The upstream's answer to `query` (from the cache when fresh); the
    /// answer's id is 0 and its sections are as the upstream sent them.
    pub async fn resolve(&self, query: &Query, metrics: &Metrics) -> Result<Message, ForwardError> {
        if let Some(hit) = self.cached(query, metrics) {
            return Ok(hit);
        }
        self.resolve_upstream(query, metrics).await
    }

    /// The cached answer to `query`, counted as a cache hit or miss.
    pub fn cached(&self, query: &Query, metrics: &Metrics) -> Option<Message> {
        let hit = self.cache.get(query);
        if hit.is_some() {
            metrics.cache_hit();
        } else {
            metrics.cache_miss();
        }
        hit
    }

    /// Asks the upstreams (without looking at the cache) and caches the
    /// answer.
    pub async fn resolve_upstream(
        &self,
        query: &Query,
        metrics: &Metrics,
    ) -> Result<Message, ForwardError> {
        let mut last = ForwardError::NoUpstream;
        for upstream in self.order() {
            match self.exchange(upstream.addr, query).await {
                Ok(answer) => {
                    if upstream.marked_down() {
                        upstream.mark(true);
                        metrics.upstream_up(upstream.addr, true);
                    }
                    self.cache.put(query, &answer);
                    return Ok(answer);
                }
                Err(e) => {
                    metrics.upstream_error(upstream.addr);
                    tracing::debug!(upstream = %upstream.addr, error = %e, "upstream failed");
                    upstream.mark(false);
                    metrics.upstream_up(upstream.addr, false);
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn exchange(&self, upstream: SocketAddr, query: &Query) -> Result<Message, ForwardError> {
        let mut request = Message::query();
        request.metadata.recursion_desired = true;
        request.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        request.set_edns(edns);
        let bytes = request.to_vec().map_err(ForwardError::Encode)?;
        let io = |source| ForwardError::Io { upstream, source };
        let timeout = ForwardError::Timeout {
            upstream,
            timeout: self.timeout,
        };
        let deadline = tokio::time::Instant::now() + self.timeout;

        let answer = tokio::time::timeout_at(deadline, udp_exchange(upstream, &bytes, &request))
            .await
            .map_err(|_| timeout)??;
        if let Some(answer) = answer.filter(|a| !a.metadata.truncation) {
            return Ok(answer);
        }
        let timeout = ForwardError::Timeout {
            upstream,
            timeout: self.timeout,
        };
        tokio::time::timeout_at(deadline, tcp_exchange(upstream, &bytes, &request))
            .await
            .map_err(|_| timeout)?
            .map_err(|e| match e {
                Exchange::Io(source) => io(source),
                Exchange::Malformed => ForwardError::Malformed { upstream },
            })
    }
}

enum Exchange {
    Io(std::io::Error),
    Malformed,
}

fn matches(answer: &Message, request: &Message) -> bool {
    answer.metadata.id == request.metadata.id
        && answer.metadata.message_type == MessageType::Response
        && answer.queries.len() == request.queries.len()
        && answer
            .queries
            .iter()
            .zip(&request.queries)
            .all(|(a, q)| a.name.eq_ignore_root(&q.name) && a.query_type == q.query_type)
}

/// Receive buffer of an upstream UDP exchange.
const UDP_ANSWER_BUFFER: usize = 4096;

/// The upstream's answer over UDP; `None` when it filled the receive
/// buffer (an upstream ignoring the advertised payload size), so that the
/// caller asks again over TCP.
async fn udp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> Result<Option<Message>, ForwardError> {
    let io = |source| ForwardError::Io { upstream, source };
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(upstream).await.map_err(io)?;
    socket.send(bytes).await.map_err(io)?;
    // Room for answers well past the 1232 bytes asked for; not 64 KB per
    // question in flight, which with hundreds in flight is megabytes of
    // memory the allocator keeps.
    let mut buf = vec![0u8; UDP_ANSWER_BUFFER];
    loop {
        let n = socket.recv(&mut buf).await.map_err(io)?;
        if n >= buf.len() {
            return Ok(None);
        }
        // Anything else (a late answer, spoofing) is ignored.
        if let Ok(answer) = Message::from_vec(&buf[..n]) {
            if matches(&answer, request) {
                return Ok(Some(answer));
            }
        }
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> Result<Message, Exchange> {
    let mut stream = TcpStream::connect(upstream).await.map_err(Exchange::Io)?;
    let len = u16::try_from(bytes.len()).map_err(|_| Exchange::Malformed)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(Exchange::Io)?;
    loop {
        let len = stream.read_u16().await.map_err(Exchange::Io)?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.map_err(Exchange::Io)?;
        let answer = Message::from_vec(&buf).map_err(|_| Exchange::Malformed)?;
        if matches(&answer, request) {
            return Ok(answer);
        }
    }
}

/// Whether an upstream answer is worth caching and for how long: the
/// answer's smallest TTL for a positive answer, the SOA's for NXDOMAIN and
/// NODATA; SERVFAIL and friends are not cached.
pub fn cache_ttl(answer: &Message) -> Option<(u32, bool)> {
    match answer.metadata.response_code {
        ResponseCode::NoError if !answer.answers.is_empty() => answer
            .answers
            .iter()
            .map(|r| r.ttl)
            .min()
            .map(|t| (t, true)),
        ResponseCode::NoError | ResponseCode::NXDomain => {
            let soa = answer.authorities.iter().find_map(|r| match &r.data {
                hickory_proto::rr::RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            });
            Some((soa.unwrap_or(30), false))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
