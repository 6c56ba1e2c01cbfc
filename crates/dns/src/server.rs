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
use crate::records::{Answer, Index};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

impl Handler {
    /// The answer to one message, `None` when it must be dropped.
    pub async fn handle(&self, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let started = Instant::now();
        let request = match Message::from_vec(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.metrics.query(
                    "none",
                    transport_name(transport),
                    "FORMERR",
                    started.elapsed(),
                );
                return formerr_from_header(bytes);
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = self.forwarder.is_some();
        response.metadata.checking_disabled = request.metadata.checking_disabled;
        response.add_queries(request.queries.iter().cloned());
        if let Some(edns) = &request.edns {
            if edns.version() > 0 {
                response.metadata.response_code = ResponseCode::BADVERS;
            }
            let mut ours = Edns::new();
            ours.set_max_payload(OUR_PAYLOAD);
            response.set_edns(ours);
        }
        let qtype = request
            .queries
            .first()
            .map(|q| q.query_type.to_string())
            .unwrap_or_else(|| "none".to_owned());

        if response.metadata.response_code == ResponseCode::NoError {
            if request.metadata.op_code != OpCode::Query {
                response.metadata.response_code = ResponseCode::NotImp;
            } else if request.queries.len() != 1 {
                response.metadata.response_code = ResponseCode::FormErr;
            } else if let Some(query) = request.queries.first() {
                self.resolve(query, &mut response).await;
            }
        }
        let rcode = rcode_name(response.metadata.response_code);
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
        let mut out = response.to_vec().ok()?;
        if out.len() > limit {
            out = response.truncate().to_vec().ok()?;
            // Even the question does not fit (a huge name and a tiny buffer).
            if out.len() > limit {
                return None;
            }
        }
        self.metrics
            .query(&qtype, transport_name(transport), &rcode, started.elapsed());
        Some(out)
    }

    /// Fills `response` for one question: the cluster, the hosts file, then
    /// the upstreams.
    async fn resolve(&self, query: &Query, response: &mut Message) {
        let index = self.index.load();
        let mut answer = index.answer(query);
        if answer == Answer::NotOurs {
            if let Some(hosts) = &self.hosts {
                answer = hosts.answer(query);
            }
        }
        match answer {
            Answer::Authoritative {
                rcode,
                answers,
                authority,
                additionals,
            } => {
                response.metadata.authoritative = true;
                response.metadata.response_code = rcode;
                let chase = cname_target(&answers, query.query_type);
                response.insert_answers(answers);
                response.insert_authorities(authority);
                response.insert_additionals(additionals);
                // An ExternalName: resolve its target like CoreDNS does, so
                // stub resolvers that do not chase CNAMEs get addresses.
                if let (Some(target), Some(forwarder)) = (chase, &self.forwarder) {
                    let mut q = query.clone();
                    q.name = target;
                    if index.answer(&q) == Answer::NotOurs {
                        if let Ok(upstream) = forwarder.resolve(&q, &self.metrics).await {
                            response.answers.extend(upstream.answers);
                        }
                    }
                }
            }
            Answer::NotOurs => match &self.forwarder {
                None => response.metadata.response_code = ResponseCode::Refused,
                Some(forwarder) => match forwarder.resolve(query, &self.metrics).await {
                    Ok(upstream) => {
                        response.metadata.response_code = upstream.metadata.response_code;
                        response.metadata.authentic_data = upstream.metadata.authentic_data;
                        response.answers = upstream.answers;
                        response.authorities = upstream.authorities;
                        response.additionals = upstream.additionals;
                    }
                    Err(e) => {
                        tracing::debug!(name = %query.name, error = %e, "forwarding failed");
                        response.metadata.response_code = ResponseCode::ServFail;
                    }
                },
            },
        }
    }
}

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

/// The rcode as dig and CoreDNS's metrics spell it.
fn rcode_name(rcode: ResponseCode) -> String {
    match u16::from(rcode) {
        0 => "NOERROR".to_owned(),
        1 => "FORMERR".to_owned(),
        2 => "SERVFAIL".to_owned(),
        3 => "NXDOMAIN".to_owned(),
        4 => "NOTIMP".to_owned(),
        5 => "REFUSED".to_owned(),
        16 => "BADVERS".to_owned(),
        n => n.to_string(),
    }
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    }
}

/// Answers UDP queries on `socket` until the task is dropped; a query that
/// finds every in-flight slot taken is dropped (the client retries).
pub async fn serve_udp(socket: UdpSocket, handler: Arc<Handler>) {
    let socket = Arc::new(socket);
    let slots = Arc::new(Semaphore::new(handler.limits.max_udp_in_flight.max(1)));
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let packet = buf[..n].to_vec();
        let (socket, handler) = (socket.clone(), handler.clone());
        tokio::spawn(async move {
            if let Some(out) = handler.handle(&packet, Transport::Udp).await {
                let _ = socket.send_to(&out, peer).await;
            }
            drop(permit);
        });
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
/// has port 0) and the ops port; returns the sockets ready to serve.
pub async fn bind(
    listen: SocketAddr,
    ops: SocketAddr,
) -> std::io::Result<(UdpSocket, TcpListener, TcpListener, Bound)> {
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
    let ops = TcpListener::bind(ops).await?;
    let bound = Bound {
        dns,
        ops: ops.local_addr()?,
    };
    Ok((udp, tcp, ops, bound))
}

/// Serves DNS over UDP and TCP and the ops endpoints until the returned
/// future is dropped.
pub async fn serve(udp: UdpSocket, tcp: TcpListener, ops: TcpListener, handler: Arc<Handler>) {
    let metrics = handler.metrics.clone();
    tokio::join!(
        serve_udp(udp, handler.clone()),
        serve_tcp(tcp, handler),
        crate::ops::serve(ops, metrics),
    );
}

#[cfg(test)]
mod tests;
