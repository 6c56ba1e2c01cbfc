//! HTTP/1 message heads on the proxy's own request path: a client's request
//! head parsed (httparse) and checked as RFC 9112 asks of a server (one
//! Host, a body length that cannot be read two ways, only the chunked
//! transfer coding), then written out for the upstream with hop-by-hop
//! headers dropped and the forwarding headers set; and an upstream's
//! response head checked the same way and written out for the client.
//!
//! Everything here is pure: bytes in, bytes out.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use crate::h1::body::Framing;
use crate::proxy::{ConnInfo, HOP_BY_HOP, authority_host, is_idempotent, write_forwarded};

/// Headers parsed on the stack; more (a `--max-headers` above this) are
/// parsed into a heap buffer.
const STACK_HEADERS: usize = 128;

/// Why a request head is refused; each maps to the status answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400, with the reason.
    BadRequest(&'static str),
    /// 431: more header bytes or headers than allowed.
    TooLarge,
    /// 501: a transfer coding other than chunked.
    NotImplemented(&'static str),
    /// 405: CONNECT, which a reverse proxy does not tunnel.
    MethodNotAllowed,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::TooLarge => 431,
            Refusal::NotImplemented(_) => 501,
            Refusal::MethodNotAllowed => 405,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::BadRequest(why) | Refusal::NotImplemented(why) => why,
            Refusal::TooLarge => "request header fields too large",
            Refusal::MethodNotAllowed => "CONNECT is not supported",
        }
    }
}

/// A parsed request head, borrowing the read buffer.
#[derive(Debug)]
pub struct RequestHead<'b> {
    /// Length of the head in the buffer (the body starts there).
    pub len: usize,
    pub method: &'b str,
    /// HTTP/1.x minor version.
    pub minor: u8,
    /// Host without port, lower-case, for routing.
    pub host: String,
    /// The authority to forward as Host (the client's Host, or the
    /// absolute-form target's authority).
    pub authority: &'b str,
    /// The origin-form target (path and query) to forward.
    pub target: Cow<'b, str>,
    /// The path (no query), for routing.
    pub path: &'b str,
    pub framing: Framing,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// The `Upgrade` value of an upgrade request (one without a body).
    pub upgrade: Option<&'b [u8]>,
    /// The client sent `Content-Length: 0` (forwarded as such).
    zero_length: bool,
    headers: Vec<(&'b str, &'b [u8])>,
    /// Header names the Connection header lists (dropped when forwarding).
    connection_named: Vec<&'b str>,
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is
/// incomplete (more may be read if `buf` is under `max_bytes`).
pub fn parse_request(
    buf: &[u8],
    max_headers: usize,
    max_bytes: usize,
) -> Result<Option<RequestHead<'_>>, Refusal> {
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if max_headers <= STACK_HEADERS {
        &mut stack[..max_headers]
    } else {
        heap.resize_with(max_headers, MaybeUninit::uninit);
        &mut heap
    };
    let mut request = httparse::Request::new(&mut []);
    let status = request.parse_with_uninit_headers(buf, slots);
    let len = match status {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_bytes => return Err(Refusal::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::BadRequest("malformed request head")),
    };
    if len > max_bytes {
        return Err(Refusal::TooLarge);
    }
    let method = request.method.unwrap_or_default();
    let raw_target = request.path.unwrap_or_default();
    let minor = request.version.unwrap_or(1);
    if method == "CONNECT" {
        return Err(Refusal::MethodNotAllowed);
    }
    let headers: Vec<(&str, &[u8])> = request.headers.iter().map(|h| (h.name, h.value)).collect();
    analyze(len, method, raw_target, minor, headers).map(Some)
}

fn analyze<'b>(
    len: usize,
    method: &'b str,
    raw_target: &'b str,
    minor: u8,
    headers: Vec<(&'b str, &'b [u8])>,
) -> Result<RequestHead<'b>, Refusal> {
    let mut host_header: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut upgrade_token = false;
    let mut upgrade_value = None;
    let mut connection_named = Vec::new();
    for &(name, value) in &headers {
        if name.eq_ignore_ascii_case("host") {
            if host_header.is_some() {
                return Err(Refusal::BadRequest("more than one Host header"));
            }
            host_header = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let parsed =
                parse_length(value).ok_or(Refusal::BadRequest("malformed Content-Length"))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(Refusal::BadRequest("conflicting Content-Length headers"));
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in list(value) {
                if chunked {
                    return Err(Refusal::BadRequest("a transfer coding after chunked"));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else {
                    return Err(Refusal::NotImplemented(
                        "only the chunked transfer coding is supported",
                    ));
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in list(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else {
                    if token.eq_ignore_ascii_case(b"upgrade") {
                        upgrade_token = true;
                    }
                    if let Ok(token) = std::str::from_utf8(token) {
                        connection_named.push(token);
                    }
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_value = Some(value);
        }
    }
    if transfer_encoding && !chunked {
        return Err(Refusal::BadRequest("empty Transfer-Encoding"));
    }
    if transfer_encoding && minor == 0 {
        return Err(Refusal::BadRequest(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    // Transfer-Encoding overrides Content-Length; a request with both is
    // answered and then the connection closed (RFC 9112 section 6.1).
    let framing = if chunked {
        if length.is_some() {
            close = true;
        }
        Framing::Chunked
    } else {
        match length {
            None | Some(0) => Framing::Empty,
            Some(length) => Framing::Length(length),
        }
    };

    let (authority, target) = if raw_target.starts_with('/') {
        let host = match host_header {
            Some(host) => std::str::from_utf8(host)
                .map_err(|_| Refusal::BadRequest("malformed Host header"))?,
            // HTTP/1.0 has no Host requirement.
            None if minor == 0 => "",
            None => return Err(Refusal::BadRequest("missing Host header")),
        };
        (host, Cow::Borrowed(raw_target))
    } else if let Some(rest) = raw_target
        .strip_prefix("http://")
        .or_else(|| raw_target.strip_prefix("https://"))
    {
        // Absolute form: the target's authority wins over Host.
        let slash = rest.find(['/', '?']).unwrap_or(rest.len());
        let target = &rest[slash..];
        // An empty path is "/" (RFC 9112 section 3.2.1).
        let target = if target.starts_with('/') {
            Cow::Borrowed(target)
        } else {
            Cow::Owned(format!("/{target}"))
        };
        (&rest[..slash], target)
    } else if raw_target == "*" && method == "OPTIONS" {
        let host = match host_header {
            Some(host) => std::str::from_utf8(host)
                .map_err(|_| Refusal::BadRequest("malformed Host header"))?,
            None if minor == 0 => "",
            None => return Err(Refusal::BadRequest("missing Host header")),
        };
        (host, Cow::Borrowed("*"))
    } else {
        return Err(Refusal::BadRequest("malformed request target"));
    };
    let host = authority_host(authority).ok_or(Refusal::BadRequest("malformed Host"))?;
    let path = match &target {
        Cow::Borrowed(target) => target.split_once('?').map_or(*target, |(path, _)| path),
        // Only made for an absolute form without a path: its path is "/".
        Cow::Owned(_) => "/",
    };
    let keep_alive = !close && (minor >= 1 || keep_alive_token);
    // An upgrade carrying a body is forwarded as a plain request: the
    // tunnel would start with the body half sent.
    let upgrade = if minor >= 1 && upgrade_token && framing == Framing::Empty {
        upgrade_value
    } else {
        None
    };
    Ok(RequestHead {
        len,
        method,
        minor,
        host,
        authority,
        target,
        path,
        framing,
        keep_alive,
        upgrade,
        zero_length: framing == Framing::Empty && length == Some(0),
        headers,
        connection_named,
    })
}

/// A Content-Length value: decimal digits only.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The elements of a comma-separated header value, trimmed, empty ones
/// skipped.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|d| d.eq_ignore_ascii_case(name))
}

/// Request headers the proxy sets from what it saw; client-sent values are
/// not trusted.
fn is_set_by_proxy(name: &str) -> bool {
    const SET: [&str; 8] = [
        "host",
        "content-length",
        "x-forwarded-for",
        "x-real-ip",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-host",
        "forwarded",
    ];
    SET.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// Appends `n` in decimal.
fn decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn content_length(out: &mut Vec<u8>, length: u64) {
    out.extend_from_slice(b"content-length: ");
    decimal(out, length);
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

impl RequestHead<'_> {
    /// Writes the head to send upstream (HTTP/1.1, origin form) into `out`.
    pub fn write_upstream(&self, conn: &ConnInfo, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        header(out, "host", self.authority.as_bytes());
        for &(name, value) in &self.headers {
            if is_hop_by_hop(name)
                || is_set_by_proxy(name)
                || self
                    .connection_named
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name))
            {
                continue;
            }
            header(out, name, value);
        }
        let proto = if conn.tls { "https" } else { "http" };
        if let Some(client) = &conn.client {
            header(out, "x-forwarded-for", client.as_bytes());
            header(out, "x-real-ip", client.as_bytes());
        }
        header(out, "x-forwarded-proto", proto.as_bytes());
        header(out, "x-forwarded-port", conn.port.as_bytes());
        header(out, "x-forwarded-host", self.authority.as_bytes());
        out.extend_from_slice(b"forwarded: ");
        write_forwarded(conn, self.authority, out);
        out.extend_from_slice(b"\r\n");
        match self.framing {
            Framing::Length(length) => content_length(out, length),
            Framing::Chunked => header(out, "transfer-encoding", b"chunked"),
            Framing::Empty if self.zero_length => content_length(out, 0),
            Framing::Empty | Framing::UntilClose => {}
        }
        if let Some(upgrade) = self.upgrade {
            header(out, "upgrade", upgrade);
            header(out, "connection", b"upgrade");
        }
        out.extend_from_slice(b"\r\n");
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// Whether the request may be sent again after a failure (RFC 9110
    /// section 9.2.2).
    pub fn is_idempotent(&self) -> bool {
        is_idempotent(self.method)
    }
}

/// What the client side needs to know to frame a response.
#[derive(Clone, Copy, Debug)]
pub struct ClientSide {
    /// HTTP/1.x minor version of the request.
    pub minor: u8,
    /// The connection stays open after this response.
    pub keep_alive: bool,
    /// The request was HEAD (the response has no body).
    pub head_request: bool,
}

/// A checked upstream response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    /// How the upstream delimits the body.
    pub framing: Framing,
    /// The upstream connection can take another request afterwards.
    pub reusable: bool,
    /// The client connection stays open after the response as written.
    pub client_keep_alive: bool,
}

/// Why an upstream response head is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("malformed response head")]
    Malformed,
    #[error("response head too large")]
    TooLarge,
    #[error("malformed or conflicting Content-Length")]
    Length,
    #[error("unsupported transfer coding")]
    Coding,
}

/// Most headers accepted in an upstream response.
const RESPONSE_HEADERS: usize = 128;
/// Largest upstream response head.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Parses the upstream response head at the start of `buf` and, when it
/// is complete, writes the client's head into `out`. `Ok(None)` while
/// incomplete.
pub fn parse_response(
    buf: &[u8],
    client: ClientSide,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, BadResponse> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(BadResponse::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse::TooLarge),
        Err(_) => return Err(BadResponse::Malformed),
    };
    let status = response.code.unwrap_or(0);
    if status < 100 {
        return Err(BadResponse::Malformed);
    }
    let minor = response.version.unwrap_or(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = minor == 0;
    let mut connection_named: Vec<&str> = Vec::new();
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let parsed = parse_length(h.value).ok_or(BadResponse::Length)?;
            if length.is_some_and(|l| l != parsed) {
                return Err(BadResponse::Length);
            }
            length = Some(parsed);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in list(h.value) {
                if chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(BadResponse::Coding);
                }
                chunked = true;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in list(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    if minor == 0 {
                        close = false;
                    }
                } else if let Ok(token) = std::str::from_utf8(token) {
                    connection_named.push(token);
                }
            }
        }
    }
    let bodiless = client.head_request || status < 200 || status == 204 || status == 304;
    let framing = if bodiless {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(length) = length {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };

    // The client's head.
    out.extend_from_slice(b"HTTP/1.1 ");
    decimal(out, u64::from(status));
    out.push(b' ');
    let reason = response
        .reason
        .filter(|r| !r.is_empty())
        .or_else(|| http::StatusCode::from_u16(status).ok()?.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let switching = status == 101;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") && (chunked || !bodiless) {
            continue;
        }
        // A switch of protocols keeps its Upgrade (which its Connection
        // header names).
        if switching && h.name.eq_ignore_ascii_case("upgrade") {
            header(out, h.name, h.value);
            continue;
        }
        if is_hop_by_hop(h.name)
            || connection_named
                .iter()
                .any(|n| n.eq_ignore_ascii_case(h.name))
        {
            continue;
        }
        header(out, h.name, h.value);
    }
    let mut client_close = !client.keep_alive;
    match framing {
        Framing::Length(length) => content_length(out, length),
        Framing::Chunked | Framing::UntilClose if client.minor >= 1 => {
            header(out, "transfer-encoding", b"chunked");
        }
        // An HTTP/1.0 client gets the body undelimited: it ends with the
        // connection.
        Framing::Chunked | Framing::UntilClose => client_close = true,
        Framing::Empty => {
            if chunked && client.head_request && client.minor >= 1 {
                header(out, "transfer-encoding", b"chunked");
            }
        }
    }
    if switching {
        header(out, "connection", b"upgrade");
    } else if client_close {
        header(out, "connection", b"close");
    } else if client.minor == 0 {
        header(out, "connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        status,
        framing,
        // A message with both a length and a transfer coding may have been
        // meant either way (RFC 9112 section 6.1): not reused.
        reusable: !close && framing.is_delimited() && !switching && (!chunked || length.is_none()),
        client_keep_alive: !client_close && !switching,
    }))
}

/// How a response the proxy makes itself is framed for its client.
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    /// The connection closes after it.
    pub close: bool,
    /// HTTP/1.x minor version of the request.
    pub minor: u8,
    /// The request was HEAD: the body's length, not the body.
    pub head_request: bool,
}

impl Reply {
    /// For a request that could not be read: close after answering.
    pub const CLOSE: Reply = Reply {
        close: true,
        minor: 1,
        head_request: false,
    };
}

/// A response the proxy makes itself: status, a plain-text body and
/// optionally a Location.
pub fn write_local(
    out: &mut Vec<u8>,
    status: u16,
    body: &str,
    location: Option<&str>,
    reply: Reply,
) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    header(out, "content-type", b"text/plain; charset=utf-8");
    content_length(out, body.len() as u64);
    if let Some(location) = location.filter(|l| l.bytes().all(|b| (0x21..0x7f).contains(&b))) {
        header(out, "location", location.as_bytes());
    }
    if reply.close {
        header(out, "connection", b"close");
    } else if reply.minor == 0 {
        header(out, "connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    if !reply.head_request {
        out.extend_from_slice(body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn parse(text: &str) -> Result<Option<RequestHead<'_>>, Refusal> {
        parse_request(text.as_bytes(), 100, 32 * 1024)
    }

    fn upstream_head(text: &str, conn: &ConnInfo) -> String {
        let head = parse(text).unwrap().unwrap();
        let mut out = Vec::new();
        head.write_upstream(conn, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn conn() -> ConnInfo {
        ConnInfo::new(SocketAddr::from(([10, 0, 0, 7], 40000)), 80, false)
    }

    #[test]
    fn incomplete_heads_wait_and_oversized_ones_are_refused() {
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let long = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "y".repeat(40_000));
        assert_eq!(parse(&long).unwrap_err(), Refusal::TooLarge);
        let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(parse(&many).unwrap_err(), Refusal::TooLarge);
        // More headers than fit on the stack still parse when allowed.
        let fine: String = (0..150).map(|i| format!("X-{i}: 1\r\n")).collect();
        let fine = format!("GET / HTTP/1.1\r\nHost: a\r\n{fine}\r\n");
        assert!(
            parse_request(fine.as_bytes(), 200, 32 * 1024)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let head = parse("POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        let head = parse("POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::Empty);
        let head = parse("POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        // Both: chunked wins and the connection closes afterwards.
        let head = parse("POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.keep_alive);
        for (bad, refusal) in [
            (
                "Content-Length: 5\r\nContent-Length: 6",
                Refusal::BadRequest("conflicting Content-Length headers"),
            ),
            (
                "Content-Length: +5",
                Refusal::BadRequest("malformed Content-Length"),
            ),
            (
                "Content-Length: 5, 5",
                Refusal::BadRequest("malformed Content-Length"),
            ),
            (
                "Transfer-Encoding: chunked, chunked",
                Refusal::BadRequest("a transfer coding after chunked"),
            ),
            (
                "Transfer-Encoding: gzip, chunked",
                Refusal::NotImplemented("only the chunked transfer coding is supported"),
            ),
            (
                "Transfer-Encoding: ",
                Refusal::BadRequest("empty Transfer-Encoding"),
            ),
        ] {
            let text = format!("POST / HTTP/1.1\r\nHost: a\r\n{bad}\r\n\r\n");
            assert_eq!(parse(&text).unwrap_err(), refusal, "{bad}");
        }
        let text = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(text), Err(Refusal::BadRequest(_))));
    }

    #[test]
    fn targets_hosts_and_versions() {
        let head = parse("GET /a/b?x=1 HTTP/1.1\r\nHost: Shop.Example.com:8080\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.host, "shop.example.com");
        assert_eq!(head.authority, "Shop.Example.com:8080");
        assert_eq!(head.path, "/a/b");
        assert_eq!(head.target, "/a/b?x=1");
        let head = parse("GET http://h.example.com?q HTTP/1.1\r\nHost: other\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.host.as_str(), &*head.target, head.path),
            ("h.example.com", "/?q", "/")
        );
        let head = parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.target, "*");
        let head = parse("GET http://h.example.com/x/y HTTP/1.1\r\nHost: o\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((&*head.target, head.path), ("/x/y", "/x/y"));
        let head = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.host, "");
        assert!(!head.keep_alive);
        let head = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.keep_alive);
        let head = parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive);
        assert!(matches!(
            parse("GET / HTTP/1.1\r\n\r\n"),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(
            parse("GET x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(Refusal::BadRequest(_))
        ));
        assert_eq!(
            parse("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap_err(),
            Refusal::MethodNotAllowed
        );
        // Folded header lines are malformed.
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n"),
            Err(Refusal::BadRequest(_))
        ));
    }

    #[test]
    fn upstream_head_drops_hop_by_hop_and_sets_forwarding_headers() {
        let text = "POST /p?q HTTP/1.1\r\nHost: shop.example.com\r\nConnection: keep-alive, X-Secret\r\n\
                    Keep-Alive: timeout=5\r\nX-Secret: 1\r\nTE: trailers\r\nX-Forwarded-For: 6.6.6.6\r\n\
                    Forwarded: for=6.6.6.6\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n";
        let head = upstream_head(text, &conn());
        assert!(
            head.starts_with("POST /p?q HTTP/1.1\r\nhost: shop.example.com\r\n"),
            "{head}"
        );
        for gone in ["Keep-Alive", "X-Secret", "TE:", "6.6.6.6", "Connection"] {
            assert!(!head.contains(gone), "{gone} in {head}");
        }
        for kept in [
            "X-Kept: yes\r\n",
            "x-forwarded-for: 10.0.0.7\r\n",
            "x-real-ip: 10.0.0.7\r\n",
            "x-forwarded-proto: http\r\n",
            "x-forwarded-port: 80\r\n",
            "x-forwarded-host: shop.example.com\r\n",
            "forwarded: for=10.0.0.7;host=shop.example.com;proto=http\r\n",
            "transfer-encoding: chunked\r\n",
        ] {
            assert!(head.contains(kept), "{kept:?} missing in {head}");
        }
        assert!(head.ends_with("\r\n\r\n"));
        // An upgrade keeps Upgrade and says so in Connection.
        let head = upstream_head(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            &conn(),
        );
        assert!(
            head.contains("upgrade: websocket\r\nconnection: upgrade\r\n"),
            "{head}"
        );
        // An upgrade with a body is a plain request.
        let head = upstream_head(
            "POST /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\nContent-Length: 2\r\n\r\n",
            &conn(),
        );
        assert!(!head.to_ascii_lowercase().contains("upgrade"), "{head}");
        // An explicit zero length is kept.
        let head = upstream_head(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            &conn(),
        );
        assert!(head.contains("content-length: 0\r\n"), "{head}");
        // A fixed-length body's length is restated once.
        let head = upstream_head(
            "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\n",
            &conn(),
        );
        assert_eq!(head.matches("content-length: 7\r\n").count(), 1, "{head}");
        assert!(!head.contains("Content-Length"), "{head}");
    }

    fn respond(text: &str, client: ClientSide) -> (ResponseHead, String) {
        let mut out = Vec::new();
        let head = parse_response(text.as_bytes(), client, &mut out)
            .unwrap()
            .unwrap();
        (head, String::from_utf8(out).unwrap())
    }

    const V11: ClientSide = ClientSide {
        minor: 1,
        keep_alive: true,
        head_request: false,
    };

    #[test]
    fn response_framing_and_the_clients_head() {
        let (head, out) = respond(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc",
            V11,
        );
        assert_eq!(
            (head.status, head.framing, head.reusable),
            (200, Framing::Length(3), true)
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nX-A: b\r\ncontent-length: 3\r\n\r\n"
        );
        assert_eq!(head.len, out.len());
        let (head, out) = respond(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            V11,
        );
        assert_eq!(head.framing, Framing::Chunked);
        assert!(
            out.contains("transfer-encoding: chunked") && !out.contains("ength"),
            "{out}"
        );
        // Until close: chunked for HTTP/1.1 clients, the upstream not reused.
        let (head, out) = respond("HTTP/1.1 200 OK\r\n\r\n", V11);
        assert_eq!(
            (head.framing, head.reusable, head.client_keep_alive),
            (Framing::UntilClose, false, true)
        );
        assert!(out.contains("transfer-encoding: chunked"), "{out}");
        // For an HTTP/1.0 client: raw, then close.
        let old = ClientSide {
            minor: 0,
            keep_alive: true,
            head_request: false,
        };
        let (head, out) = respond("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", old);
        assert!(!head.client_keep_alive);
        assert!(
            out.contains("connection: close") && !out.contains("chunked"),
            "{out}"
        );
        let (head, out) = respond("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", old);
        assert!(head.client_keep_alive);
        assert!(out.contains("connection: keep-alive"), "{out}");
        // No body: HEAD (its Content-Length kept), 204, 304, 1xx.
        let head_request = ClientSide {
            head_request: true,
            ..V11
        };
        let (head, out) = respond(
            "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n",
            head_request,
        );
        assert_eq!(head.framing, Framing::Empty);
        assert!(out.contains("Content-Length: 42"), "{out}");
        for status in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let (head, _) = respond(&format!("HTTP/1.1 {status}\r\n\r\n"), V11);
            assert_eq!(head.framing, Framing::Empty, "{status}");
        }
        // The upstream's own keep-alive.
        let (head, out) = respond(
            "HTTP/1.1 200 OK\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nContent-Length: 0\r\n\r\n",
            V11,
        );
        assert!(!head.reusable);
        assert!(!out.contains("X-Drop") && !out.contains("close"), "{out}");
        let (head, _) = respond("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", V11);
        assert!(!head.reusable);
        // Switching protocols keeps Upgrade.
        let (head, out) = respond(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            V11,
        );
        assert!(!head.reusable);
        assert!(
            out.contains("Upgrade: websocket\r\n") && out.contains("connection: upgrade\r\n"),
            "{out}"
        );
        // Unusable heads.
        let mut out = Vec::new();
        for (bad, why) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                BadResponse::Length,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                BadResponse::Coding,
            ),
            ("HTTP/1.1 2000 OK\r\n\r\n", BadResponse::Malformed),
        ] {
            assert_eq!(
                parse_response(bad.as_bytes(), V11, &mut out).unwrap_err(),
                why,
                "{bad}"
            );
        }
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\n", V11, &mut out)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn mutated_heads_are_parsed_or_refused_never_a_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xbad);
        let requests: [&[u8]; 3] = [
            b"POST http://a.example.com/x?y HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive, x\r\n\r\n",
            b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: [fd00::1]:80\r\nExpect: 100-continue\r\n\r\n",
        ];
        let responses: [&[u8]; 2] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.0 101 Switching\r\nConnection: close, upgrade\r\nUpgrade: x\r\n\r\n",
        ];
        let interesting = b"\r\n :,;\x00\x7f\xff0123456789aZ-/?[]*\t";
        let mut out = Vec::new();
        let mut forwarded = 0;
        for case in 0..20_000 {
            let mut bytes = if case % 2 == 0 {
                requests[case % 3].to_vec()
            } else {
                responses[case % 2].to_vec()
            };
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => bytes[at] = interesting[rng.random_range(0..interesting.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, interesting[rng.random_range(0..interesting.len())]),
                }
                if bytes.is_empty() {
                    bytes.push(b'G');
                }
            }
            let cut = rng.random_range(0..=bytes.len());
            for input in [&bytes[..], &bytes[..cut]] {
                if let Ok(Some(head)) = parse_request(input, 8, 4096) {
                    let mut upstream = Vec::new();
                    head.write_upstream(&conn(), &mut upstream);
                    forwarded += 1;
                    assert!(upstream.ends_with(b"\r\n\r\n"), "case {case}");
                    // No line break but CRLF: nothing smuggled into a header.
                    for (i, &b) in upstream.iter().enumerate() {
                        match b {
                            b'\r' => assert_eq!(upstream.get(i + 1), Some(&b'\n'), "case {case}"),
                            b'\n' => assert_eq!(upstream[i - 1], b'\r', "case {case}"),
                            0 => panic!("case {case}: NUL forwarded"),
                            _ => {}
                        }
                    }
                }
                out.clear();
                let _ = parse_response(input, V11, &mut out);
            }
        }
        // Enough mutants still parse for the checks above to mean something.
        assert!(forwarded > 1_000, "only {forwarded} mutants parsed");
    }

    #[test]
    fn local_responses_are_complete_messages() {
        let mut out = Vec::new();
        write_local(&mut out, 308, "go\n", Some("https://a/b"), Reply::CLOSE);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 308 Permanent Redirect\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 3\r\nlocation: https://a/b\r\nconnection: close\r\n\r\ngo\n"
        );
        // HEAD: the length, no body; HTTP/1.0 keep-alive said so.
        let mut out = Vec::new();
        let reply = Reply {
            close: false,
            minor: 0,
            head_request: true,
        };
        write_local(&mut out, 404, "nothing\n", None, reply);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with("content-length: 8\r\nconnection: keep-alive\r\n\r\n"),
            "{text}"
        );
        let mut digits = Vec::new();
        for n in [0, 7, 10, 12345, u64::MAX] {
            digits.clear();
            decimal(&mut digits, n);
            assert_eq!(String::from_utf8(digits.clone()).unwrap(), n.to_string());
        }
    }
}
