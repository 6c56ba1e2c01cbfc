//! The DNS server: turns one query's bytes into the answer's bytes
//! ([`Handler`]: the cluster index, then the hosts file, then upstream) and
//! serves it over UDP (EDNS0 buffer size, TC bit when the answer does not
//! fit) and TCP (pipelined queries, connection and per-connection in-flight
//! limits, an idle timeout so a silent client cannot hold a slot forever).
//!
//! Malformed input is answered FORMERR when its header can be read and
//! dropped otherwise; responses sent to the server are never answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};

use crate::config::Limits;
use crate::forward::Forwarder;
use crate::hosts::Hosts;
use crate::ops::Metrics;
use crate::records::{Answer, Found, Index};
use crate::wire::{self, QueryView};

/// The EDNS buffer size the server advertises.
const OUR_PAYLOAD: u16 = 1232;

/// Everything a query needs; shared by every socket task.
#[derive(Debug)]
pub struct Handler {
    /// Replaced whole by the source; a query loads it once, never waits.
    pub index: ArcSwap<Index>,
    pub hosts: Option<Hosts>,
    pub forwarder: Option<Forwarder>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
}

/// How the query arrived, for the answer's size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A FORMERR built from the 12-byte header alone, for messages hickory
/// cannot parse; `None` for fragments and for responses.
fn formerr_from_header(bytes: &[u8]) -> Option<Vec<u8>> {
    let header = bytes.get(..12)?;
    if header[2] & 0x80 != 0 {
        return None;
    }
    let opcode_and_rd = header[2] & 0x79;
    Some(vec![
        header[0],
        header[1],
        0x80 | opcode_and_rd,
        0x01,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ])
}

/// A query that needs an upstream (a forwarded name missing from the cache,
/// or the target of an ExternalName): what [`Handler::finish`] completes.
#[derive(Debug)]
pub struct Pending {
    started: Instant,
    transport: Transport,
    limit: usize,
    query: Query,
    response: Message,
    wait: Wait,
}

#[derive(Debug)]
enum Wait {
    /// The whole answer comes from upstream.
    Forward,
    /// The authoritative CNAME is in `response`; the target's records are
    /// appended when the upstream has them.
    Chase(Query),
}

impl Handler {
    /// The answer to one message, `None` when it must be dropped.
    pub async fn handle(&self, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
        match self.answer_now(bytes, transport) {
            Ok(out) => out,
            Err(pending) => self.finish(pending).await,
        }
    }

    /// Answers without waiting when it can (the cluster zone, the hosts
    /// file, a cached forwarded answer, errors): `Ok(None)` means drop the
    /// message. `Err` is a question that needs an upstream.
    pub fn answer_now(
        &self,
        bytes: &[u8],
        transport: Transport,
    ) -> Result<Option<Vec<u8>>, Box<Pending>> {
        let started = Instant::now();
        if let Some(view) = QueryView::parse(bytes) {
            if let Some(out) = self.answer_fast(&view, bytes, transport, started) {
                return Ok(Some(out));
            }
        }
        self.answer_general(bytes, transport, started)
    }

    /// [`Handler::answer_now`] for any message, parsed with hickory.
    fn answer_general(
        &self,
        bytes: &[u8],
        transport: Transport,
        started: Instant,
    ) -> Result<Option<Vec<u8>>, Box<Pending>> {
        let request = match Message::from_vec(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.metrics
                    .query(None, transport, ResponseCode::FormErr, started.elapsed());
                return Ok(formerr_from_header(bytes));
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return Ok(None);
        }
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = self.forwarder.is_some();
        response.metadata.checking_disabled = request.metadata.checking_disabled;
        if let Some(edns) = &request.edns {
            if edns.version() > 0 {
                response.metadata.response_code = ResponseCode::BADVERS;
            }
            let mut ours = Edns::new();
            ours.set_max_payload(OUR_PAYLOAD);
            response.set_edns(ours);
        }
        let limit = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => {
                let client = request
                    .edns
                    .as_ref()
                    .map_or(512, |e| e.max_payload().max(512));
                usize::from(client.min(self.limits.max_udp_payload.max(512)))
            }
        };
        let op_code = request.metadata.op_code;
        let mut queries = request.queries;
        let single = queries.len() == 1;
        response.add_queries(queries.iter().cloned());
        let mut pending = None;
        if response.metadata.response_code == ResponseCode::NoError {
            if op_code != OpCode::Query {
                response.metadata.response_code = ResponseCode::NotImp;
            } else if !single {
                response.metadata.response_code = ResponseCode::FormErr;
            } else if let Some(query) = queries.pop() {
                if let Some(wait) = self.resolve_now(&query, &mut response) {
                    pending = Some((query, wait));
                }
            }
        }
        match pending {
            None => Ok(self.encode(&response, transport, limit, started)),
            Some((query, wait)) => Err(Box::new(Pending {
                started,
                transport,
                limit,
                query,
                response,
                wait,
            })),
        }
    }

    /// The answer to a query of the common shape ([`QueryView`]) about a
    /// name of the cluster zone, written straight from the index's stored
    /// records, or about a forwarded name whose answer is cached, copied
    /// from the cache's bytes. `None` hands the query to the general path:
    /// names the hosts file lists, cache misses, and ExternalName CNAMEs
    /// whose target the forwarder resolves.
    fn answer_fast(
        &self,
        view: &QueryView,
        bytes: &[u8],
        transport: Transport,
        started: Instant,
    ) -> Option<Vec<u8>> {
        let index = self.index.load();
        let key = view.key.as_str();
        let found = index.find(key, view.qtype, view.qclass);
        if found.is_cname_for_other_type() {
            return None; // an ExternalName: its target is chased below
        }
        let question_end = wire::HEADER_LEN + view.question_len;
        let question = bytes.get(wire::HEADER_LEN..question_end)?;
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&view.id);
        out.extend_from_slice(&[0; wire::HEADER_LEN - 2]);
        out.extend_from_slice(question);
        let (rcode, authoritative, authentic_data, counts) = if found == Found::NotOurs {
            if self.hosts.as_ref().is_some_and(|h| h.lists(key)) {
                return None;
            }
            let forwarder = self.forwarder.as_ref()?;
            let hit = forwarder.cache.write_hit(
                key,
                view.qtype,
                view.qclass,
                view.question_len,
                &mut out,
            )?;
            self.metrics.cache_hit();
            (hit.rcode, false, hit.authentic_data, hit.counts)
        } else {
            let written = index.write(found, &mut out);
            let counts = [written.answers, written.authority, written.additionals];
            (written.rcode, true, false, counts)
        };
        let edns = view.edns_payload.is_some();
        if edns {
            wire::push_opt(&mut out, OUR_PAYLOAD);
        }
        let limit = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(
                view.edns_payload
                    .unwrap_or(512)
                    .max(512)
                    .min(self.limits.max_udp_payload.max(512)),
            ),
        };
        let mut counts = [
            1,
            counts[0],
            counts[1],
            counts[2].saturating_add(u16::from(edns)),
        ];
        let truncated = out.len() > limit;
        if truncated {
            // The question alone (and OPT): the client retries over TCP.
            out.truncate(question_end);
            if edns {
                wire::push_opt(&mut out, OUR_PAYLOAD);
            }
            counts = [1, 0, 0, u16::from(edns)];
        }
        let rcode_bits = u8::try_from(u16::from(rcode) & 0x0f).unwrap_or(0);
        out[2] = 0x80
            | if authoritative { 0x04 } else { 0 }
            | if truncated { 0x02 } else { 0 }
            | u8::from(view.rd);
        out[3] = if self.forwarder.is_some() { 0x80 } else { 0 }
            | if authentic_data { 0x20 } else { 0 }
            | if view.cd { 0x10 } else { 0 }
            | rcode_bits;
        for (i, count) in counts.into_iter().enumerate() {
            out[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
        }
        self.metrics.query(
            Some(RecordType::from(view.qtype)),
            transport,
            rcode,
            started.elapsed(),
        );
        Some(out)
    }

    /// Completes a question that needed an upstream.
    pub async fn finish(&self, pending: Box<Pending>) -> Option<Vec<u8>> {
        let Pending {
            started,
            transport,
            limit,
            query,
            mut response,
            wait,
        } = *pending;
        if let Some(forwarder) = &self.forwarder {
            match wait {
                Wait::Chase(target) => {
                    if let Ok(upstream) = forwarder.resolve(&target, &self.metrics).await {
                        response.answers.extend(upstream.answers);
                    }
                }
                Wait::Forward => match forwarder.resolve_upstream(&query, &self.metrics).await {
                    Ok(upstream) => fill_forwarded(&mut response, upstream),
                    Err(e) => {
                        tracing::debug!(name = %query.name, error = %e, "forwarding failed");
                        response.metadata.response_code = ResponseCode::ServFail;
                    }
                },
            }
        }
        self.encode(&response, transport, limit, started)
    }

    /// The response's bytes within `limit` (truncated to the question with
    /// the TC bit when the records do not fit); counts the query.
    fn encode(
        &self,
        response: &Message,
        transport: Transport,
        limit: usize,
        started: Instant,
    ) -> Option<Vec<u8>> {
        let mut out = response.to_vec().ok()?;
        if out.len() > limit {
            out = response.truncate().to_vec().ok()?;
            // Even the question does not fit (a huge name and a tiny buffer).
            if out.len() > limit {
                return None;
            }
        }
        self.metrics.query(
            response.queries.first().map(|q| q.query_type),
            transport,
            response.metadata.response_code,
            started.elapsed(),
        );
        Some(out)
    }

    /// The answer of the cluster zone, else of the hosts file.
    fn local_answer(&self, index: &Index, query: &Query) -> Answer {
        let answer = index.answer(query);
        match (&answer, &self.hosts) {
            (Answer::NotOurs, Some(hosts)) => hosts.answer(query),
            _ => answer,
        }
    }

    /// Fills `response` for one question from the cluster, the hosts file
    /// or the cache; returns what is still to ask upstream.
    fn resolve_now(&self, query: &Query, response: &mut Message) -> Option<Wait> {
        let index = self.index.load();
        match self.local_answer(&index, query) {
            Answer::Authoritative {
                rcode,
                answers,
                authority,
                additionals,
            } => {
                response.metadata.authoritative = true;
                response.metadata.response_code = rcode;
                let mut chase = cname_target(&answers, query.query_type);
                response.insert_answers(answers);
                response.insert_authorities(authority);
                response.insert_additionals(additionals);
                // An ExternalName: resolve its target like CoreDNS does, so
                // stub resolvers that do not chase CNAMEs get addresses:
                // from the cluster zone or the hosts file when the target
                // is there (another ExternalName is followed in turn), else
                // upstream.
                let mut followed = vec![query.name.clone()];
                for _ in 0..MAX_CNAME_CHAIN {
                    let target = chase.take()?;
                    // A loop of ExternalNames ends where it closes.
                    if followed.contains(&target) {
                        return None;
                    }
                    followed.push(target.clone());
                    let mut q = query.clone();
                    q.name = target;
                    if let Answer::Authoritative { answers, .. } = self.local_answer(&index, &q) {
                        chase = cname_target(&answers, query.query_type);
                        response.answers.extend(answers);
                        continue;
                    }
                    let forwarder = self.forwarder.as_ref()?;
                    return match forwarder.cache.get(&q) {
                        Some(hit) => {
                            self.metrics.cache_hit();
                            response.answers.extend(hit.answers);
                            None
                        }
                        None => Some(Wait::Chase(q)),
                    };
                }
                None
            }
            Answer::NotOurs => match &self.forwarder {
                None => {
                    response.metadata.response_code = ResponseCode::Refused;
                    None
                }
                Some(forwarder) => match forwarder.cached(query, &self.metrics) {
                    Some(hit) => {
                        fill_forwarded(response, hit);
                        None
                    }
                    None => Some(Wait::Forward),
                },
            },
        }
    }
}

/// Copies an upstream's answer into the response to the client.
fn fill_forwarded(response: &mut Message, upstream: Message) {
    response.metadata.response_code = upstream.metadata.response_code;
    response.metadata.authentic_data = upstream.metadata.authentic_data;
    response.answers = upstream.answers;
    response.authorities = upstream.authorities;
    response.additionals = upstream.additionals;
}

/// How many CNAMEs in a row an answer follows inside the cluster zone and
/// the hosts file (ExternalNames naming each other), as a bound on loops.
const MAX_CNAME_CHAIN: usize = 8;

fn cname_target(
    answers: &[hickory_proto::rr::Record],
    qtype: RecordType,
) -> Option<hickory_proto::rr::Name> {
    if qtype == RecordType::CNAME || qtype == RecordType::ANY {
        return None;
    }
    match answers {
        [only] => match &only.data {
            RData::CNAME(c) => Some(c.0.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Answers UDP queries on `socket` until the task is dropped. One receive
/// loop per CPU shares the socket; each answers what it can at once (the
/// cluster, the hosts file, the cache) without a task or a copy, and hands
/// a question that needs an upstream to a task of its own. Such questions
/// beyond `max_udp_in_flight` are dropped (the client retries).
pub async fn serve_udp(socket: UdpSocket, handler: Arc<Handler>) {
    let socket = Arc::new(socket);
    let slots = Arc::new(Semaphore::new(handler.limits.max_udp_in_flight.max(1)));
    let loops = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    // Aborted with this future: the loops stop when serving stops.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..loops {
        tasks.spawn(udp_loop(socket.clone(), handler.clone(), slots.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn udp_loop(socket: Arc<UdpSocket>, handler: Arc<Handler>, slots: Arc<Semaphore>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors surface here on some kernels: not fatal.
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        let Some(packet) = buf.get(..n) else { continue };
        match handler.answer_now(packet, Transport::Udp) {
            Ok(Some(out)) => {
                let _ = socket.send_to(&out, peer).await;
            }
            Ok(None) => {}
            Err(pending) => {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let (socket, handler) = (socket.clone(), handler.clone());
                tokio::spawn(async move {
                    if let Some(out) = handler.finish(pending).await {
                        let _ = socket.send_to(&out, peer).await;
                    }
                    drop(permit);
                });
            }
        }
    }
}

/// Accepts TCP connections on `listener` until the task is dropped; a
/// connection beyond `max_tcp_connections` is closed at once.
pub async fn serve_tcp(listener: TcpListener, handler: Arc<Handler>) {
    let slots = Arc::new(Semaphore::new(handler.limits.max_tcp_connections.max(1)));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            connection(stream, handler).await;
            drop(permit);
        });
    }
}

/// One TCP connection: reads length-prefixed queries and answers each in
/// its own task (pipelining, at most `tcp_pipeline` at once), writing
/// answers in completion order; closes after `tcp_idle_timeout_ms` without
/// a complete query, or when an answer cannot be written (the client does
/// not read) for as long.
async fn connection(stream: TcpStream, handler: Arc<Handler>) {
    let idle = Duration::from_millis(handler.limits.tcp_idle_timeout_ms.max(1));
    let (mut reader, mut writer) = stream.into_split();
    let depth = handler.limits.tcp_pipeline.max(1);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(depth);
    let write = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let Ok(len) = u16::try_from(out.len()) else {
                continue;
            };
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(&out);
            // A client that stops reading is cut off like an idle one.
            match tokio::time::timeout(idle, writer.write_all(&framed)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
    });
    let slots = Arc::new(Semaphore::new(depth));
    loop {
        let read = async {
            let len = reader.read_u16().await?;
            let mut buf = vec![0u8; usize::from(len)];
            reader.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let Ok(Ok(packet)) = tokio::time::timeout(idle, read).await else {
            break;
        };
        let Ok(Ok(permit)) = tokio::time::timeout(idle, slots.clone().acquire_owned()).await else {
            break;
        };
        if tx.is_closed() {
            break;
        }
        let (handler, tx) = (handler.clone(), tx.clone());
        tokio::spawn(async move {
            if let Some(out) = handler.handle(&packet, Transport::Tcp).await {
                let _ = tx.send(out).await;
            }
            drop(permit);
        });
    }
    drop(tx);
    let _ = write.await;
}

/// The bound sockets of a running server, for callers that asked for port 0.
#[derive(Debug)]
pub struct Bound {
    pub dns: SocketAddr,
    pub ops: SocketAddr,
}

/// Binds UDP and TCP on `listen` (the same port for both when `listen`
/// has port 0) and the ops port; returns the sockets ready to serve, or
/// the address that could not be bound and why.
pub async fn bind(
    listen: SocketAddr,
    ops: SocketAddr,
) -> Result<(UdpSocket, TcpListener, TcpListener, Bound), (SocketAddr, std::io::Error)> {
    let (udp, tcp, dns) = bind_dns(listen).await.map_err(|err| (listen, err))?;
    let ops_listener = TcpListener::bind(ops).await.map_err(|err| (ops, err))?;
    let bound = Bound {
        dns,
        ops: ops_listener.local_addr().map_err(|err| (ops, err))?,
    };
    Ok((udp, tcp, ops_listener, bound))
}

/// UDP and TCP on one address.
async fn bind_dns(listen: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener, SocketAddr)> {
    // With port 0 the kernel picks the UDP port; TCP must get the same one,
    // which another TCP socket may hold: pick again a few times.
    let attempts = if listen.port() == 0 { 20 } else { 1 };
    let mut attempt = 0;
    let (udp, dns, tcp) = loop {
        attempt += 1;
        let udp = UdpSocket::bind(listen).await?;
        let dns = udp.local_addr()?;
        match TcpListener::bind(dns).await {
            Ok(tcp) => break (udp, dns, tcp),
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && attempt < attempts => {
                continue;
            }
            Err(err) => return Err(err),
        }
    };
    Ok((udp, tcp, dns))
}

/// Serves DNS over UDP and TCP and the ops endpoints, and probes the
/// upstreams, until the returned future is dropped.
pub async fn serve(udp: UdpSocket, tcp: TcpListener, ops: TcpListener, handler: Arc<Handler>) {
    let metrics = handler.metrics.clone();
    let health = async {
        if let Some(forwarder) = &handler.forwarder {
            forwarder.health_checks(&handler.metrics).await;
        }
    };
    tokio::join!(
        serve_udp(udp, handler.clone()),
        serve_tcp(tcp, handler.clone()),
        crate::ops::serve(ops, metrics),
        health,
    );
}

#[cfg(test)]
mod tests;
