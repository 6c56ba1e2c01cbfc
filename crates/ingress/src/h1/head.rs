//! HTTP/1 message heads on the proxy's own request path: a client's request
//! head parsed (httparse) and checked as RFC 9112 asks of a server (one
//! Host, a body length that cannot be read two ways, only the chunked
//! transfer coding), then written out for the upstream with hop-by-hop
//! headers dropped and the forwarding headers set; and an upstream's
//! response head checked the same way and written out for the client.
//!
//! Everything here is pure: bytes in, bytes out.

use std::mem::MaybeUninit;

use crate::h1::body::Framing;
use crate::proxy::{ConnInfo, forwarded_value, plain_host};

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
    pub target: &'b str,
    /// The path (no query), for routing.
    pub path: &'b str,
    pub framing: Framing,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// The `Upgrade` value of an upgrade request.
    pub upgrade: Option<&'b [u8]>,
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
        (host, raw_target)
    } else if let Some(rest) = raw_target
        .strip_prefix("http://")
        .or_else(|| raw_target.strip_prefix("https://"))
    {
        // Absolute form: the target's authority wins over Host.
        let slash = rest.find(['/', '?']).unwrap_or(rest.len());
        let target = &rest[slash..];
        let target = if target.is_empty() { "/" } else { target };
        (&rest[..slash], target)
    } else if raw_target == "*" && method == "OPTIONS" {
        let host = host_header
            .and_then(|h| std::str::from_utf8(h).ok())
            .unwrap_or_default();
        (host, "*")
    } else {
        return Err(Refusal::BadRequest("malformed request target"));
    };
    let host = request_host(authority).ok_or(Refusal::BadRequest("malformed Host"))?;
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let keep_alive = !close && (minor >= 1 || keep_alive_token);
    let upgrade = if minor >= 1 && upgrade_token {
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
        headers,
        connection_named,
    })
}

/// The host to route on from an authority: lower-case, port and IPv6
/// brackets removed; `None` if it is not an authority. An empty authority
/// (an HTTP/1.0 request without Host) is the empty host.
pub fn request_host(authority: &str) -> Option<String> {
    if authority.is_empty() {
        return Some(String::new());
    }
    if let Some(host) = plain_host(authority) {
        return Some(host.to_ascii_lowercase());
    }
    let parsed: http::uri::Authority = authority.parse().ok()?;
    Some(parsed.host().trim_matches(['[', ']']).to_ascii_lowercase())
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

/// Headers that describe one hop only (RFC 9110 section 7.6.1), never
/// forwarded, and those the proxy sets itself.
fn is_hop_by_hop(name: &str) -> bool {
    const DROPPED: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    DROPPED.iter().any(|d| d.eq_ignore_ascii_case(name))
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
        header(
            out,
            "forwarded",
            forwarded_value(conn, self.authority).as_bytes(),
        );
        match self.framing {
            Framing::Length(length) => content_length(out, length),
            Framing::Chunked => header(out, "transfer-encoding", b"chunked"),
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
        matches!(
            self.method,
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
        )
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
        reusable: !close && framing.is_delimited() && !switching,
        client_keep_alive: !client_close && !switching,
    }))
}

/// A response the proxy makes itself: status, a plain-text body and
/// optionally a Location; `close` adds `Connection: close`.
pub fn write_local(
    out: &mut Vec<u8>,
    status: u16,
    body: &str,
    location: Option<&str>,
    close: bool,
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
    if close {
        header(out, "connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}
