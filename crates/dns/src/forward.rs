//! Forwarding of names outside the cluster zone: upstream selection
//! (sequential or random, skipping upstreams that just failed), one query
//! over UDP retried over TCP when truncated, a per-upstream timeout, and the
//! [`cache`] of answers. Refuses, at construction, to forward to the
//! server's own listen address (a forwarding loop).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::config::Policy;
use crate::ops::Metrics;

pub mod cache;

use cache::Cache;

/// How long an upstream that failed is skipped while others are healthy.
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
    /// Skipped until then after a failure.
    down_until: Mutex<Option<Instant>>,
}

/// Forwards queries to a list of upstreams through a cache.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<Upstream>,
    policy: Policy,
    timeout: Duration,
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
                    down_until: Mutex::new(None),
                })
                .collect(),
            policy,
            timeout,
            cache,
        })
    }

    /// The order to try upstreams in: healthy ones first (by policy), then
    /// those marked down, so a query still has a chance when all failed.
    fn order(&self) -> Vec<&Upstream> {
        let now = Instant::now();
        let start = match self.policy {
            Policy::Sequential => 0,
            Policy::Random => rand::random_range(0..self.upstreams.len().max(1)),
        };
        let rotated = self.upstreams[start..]
            .iter()
            .chain(&self.upstreams[..start]);
        let (mut healthy, down): (Vec<&Upstream>, Vec<&Upstream>) = rotated.partition(|u| {
            u.down_until
                .lock()
                .map(|d| d.is_none_or(|t| t <= now))
                .unwrap_or(true)
        });
        healthy.extend(down);
        healthy
    }

    /// The upstream's answer to `query` (from the cache when fresh); the
    /// answer's id is 0 and its sections are as the upstream sent them.
    pub async fn resolve(&self, query: &Query, metrics: &Metrics) -> Result<Message, ForwardError> {
        if let Some(hit) = self.cache.get(query) {
            metrics.cache_hit();
            return Ok(hit);
        }
        metrics.cache_miss();
        let mut last = ForwardError::NoUpstream;
        for upstream in self.order() {
            match self.exchange(upstream.addr, query).await {
                Ok(answer) => {
                    if let Ok(mut d) = upstream.down_until.lock() {
                        *d = None;
                    }
                    self.cache.put(query, &answer);
                    return Ok(answer);
                }
                Err(e) => {
                    metrics.upstream_error(upstream.addr);
                    tracing::debug!(upstream = %upstream.addr, error = %e, "upstream failed");
                    if let Ok(mut d) = upstream.down_until.lock() {
                        *d = Some(Instant::now() + DOWN_FOR);
                    }
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
        if !answer.metadata.truncation {
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

async fn udp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> Result<Message, ForwardError> {
    let io = |source| ForwardError::Io { upstream, source };
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(upstream).await.map_err(io)?;
    socket.send(bytes).await.map_err(io)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(io)?;
        // Anything else (a late answer, spoofing) is ignored.
        if let Ok(answer) = Message::from_vec(&buf[..n]) {
            if matches(&answer, request) {
                return Ok(answer);
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
