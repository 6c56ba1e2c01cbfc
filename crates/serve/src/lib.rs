//! `weft serve`: the workload every lab pod runs (the lab runs no container
//! images), in the spirit of Kubernetes' agnhost `netexec`: an HTTP server
//! answering `/hostname`, `/clientip` (the source address it saw — the way to
//! prove "no NAT" or "source preserved"), `/echo?msg=…` and `/healthz`, plus
//! TCP and UDP echo servers, on ports given by flags.
//!
//! It is long-running, so it uses tokio (a current-thread runtime: one pod,
//! little load). Every listener binds the IPv6 wildcard, which also accepts
//! IPv4, falling back to the IPv4 wildcard where IPv6 is off.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

/// Command-line flags of `weft serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// HTTP port (repeatable). 8080 when no port of any kind is given.
    #[arg(long = "http", value_name = "PORT")]
    pub http: Vec<u16>,
    /// TCP echo port (repeatable): every byte received is sent back.
    #[arg(long = "tcp-echo", value_name = "PORT")]
    pub tcp_echo: Vec<u16>,
    /// UDP echo port (repeatable): every datagram is sent back to its sender.
    #[arg(long = "udp-echo", value_name = "PORT")]
    pub udp_echo: Vec<u16>,
    /// Name answered on /hostname; defaults to $POD_NAME, then the host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Address to listen on; the IPv6 wildcard (which also takes IPv4) by default.
    #[arg(long)]
    pub bind: Option<IpAddr>,
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A listener could not be opened.
    #[error("cannot listen on {proto} port {port}")]
    Bind {
        /// `tcp` or `udp`.
        proto: &'static str,
        /// The port.
        port: u16,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] io::Error),
}

/// What the servers answer with; cheap to clone into every connection.
#[derive(Debug, Clone)]
struct Identity {
    hostname: String,
}

/// Runs the servers until `shutdown` completes.
pub async fn serve(args: &ServeArgs, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let identity = Identity {
        hostname: hostname(args),
    };
    let mut http = args.http.clone();
    if http.is_empty() && args.tcp_echo.is_empty() && args.udp_echo.is_empty() {
        http.push(8080);
    }
    let mut tasks = JoinSet::new();
    for port in http {
        let listener = bind_tcp(args.bind, port).await?;
        tasks.spawn(serve_http(listener, identity.clone()));
    }
    for port in &args.tcp_echo {
        let listener = bind_tcp(args.bind, *port).await?;
        tasks.spawn(serve_tcp_echo(listener));
    }
    for port in &args.udp_echo {
        let socket = bind_udp(args.bind, *port).await?;
        tasks.spawn(serve_udp_echo(socket));
    }
    shutdown.await;
    tasks.abort_all();
    Ok(())
}

/// Runs [`serve`] on a current-thread runtime until SIGTERM or Ctrl-C.
pub fn run(args: &ServeArgs) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(serve(args, termination()))
}

async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn hostname(args: &ServeArgs) -> String {
    args.hostname
        .clone()
        .or_else(|| {
            std::env::var("POD_NAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn wildcards(bind: Option<IpAddr>) -> Vec<IpAddr> {
    match bind {
        Some(ip) => vec![ip],
        None => vec![
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ],
    }
}

async fn bind_tcp(bind: Option<IpAddr>, port: u16) -> Result<TcpListener, ServeError> {
    let mut last = io::Error::other("no address to bind");
    for ip in wildcards(bind) {
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(listener) => return Ok(listener),
            Err(err) => last = err,
        }
    }
    Err(ServeError::Bind {
        proto: "tcp",
        port,
        source: last,
    })
}

async fn bind_udp(bind: Option<IpAddr>, port: u16) -> Result<UdpSocket, ServeError> {
    let mut last = io::Error::other("no address to bind");
    for ip in wildcards(bind) {
        match UdpSocket::bind(SocketAddr::new(ip, port)).await {
            Ok(socket) => return Ok(socket),
            Err(err) => last = err,
        }
    }
    Err(ServeError::Bind {
        proto: "udp",
        port,
        source: last,
    })
}

/// The client's address as a person writes it: IPv4-mapped IPv6 addresses
/// (an IPv4 client of a dual-stack socket) shown as plain IPv4.
fn client_address(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => peer,
        },
        SocketAddr::V4(_) => peer,
    }
}

async fn serve_http(listener: TcpListener, identity: Identity) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let identity = identity.clone();
        tokio::spawn(async move {
            let client = client_address(peer);
            let service = service_fn(move |request| {
                let identity = identity.clone();
                async move {
                    let request: Request<Incoming> = request;
                    Ok::<_, Infallible>(route(request.method(), request.uri(), &identity, client))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, body: String, identity: &Identity) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) = hyper::header::HeaderValue::from_str(&identity.hostname) {
        headers.insert("x-served-by", value);
    }
    response
}

/// The answer to one request: a pure function of the request line, who we
/// are and who asked.
fn route(
    method: &Method,
    uri: &hyper::Uri,
    identity: &Identity,
    client: SocketAddr,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET\n".to_owned(),
            identity,
        );
    }
    match uri.path() {
        "/hostname" | "/" => text(StatusCode::OK, identity.hostname.clone(), identity),
        "/clientip" => text(StatusCode::OK, client.to_string(), identity),
        "/healthz" => text(StatusCode::OK, "ok".to_owned(), identity),
        "/echo" => {
            let message = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .find(|(key, _)| key == "msg")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
            text(StatusCode::OK, message, identity)
        }
        other => text(
            StatusCode::NOT_FOUND,
            format!("no handler for {other}\n"),
            identity,
        ),
    }
}

async fn serve_tcp_echo(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(echo_stream(stream));
    }
}

async fn echo_stream(mut stream: TcpStream) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                if stream.write_all(&buffer[..read]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn serve_udp_echo(socket: UdpSocket) {
    let mut buffer = vec![0u8; 65536];
    loop {
        if let Ok((read, peer)) = socket.recv_from(&mut buffer).await {
            let _ = socket.send_to(&buffer[..read], peer).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: Response<Full<Bytes>>) -> String {
        use http_body_util::BodyExt;
        let bytes = block_on(response.into_body().collect());
        String::from_utf8(bytes.unwrap().to_bytes().to_vec()).unwrap()
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn get(path: &str) -> (StatusCode, String) {
        let identity = Identity {
            hostname: "web-0".to_owned(),
        };
        let client: SocketAddr = "10.244.1.7:43210".parse().unwrap();
        let response = route(&Method::GET, &path.parse().unwrap(), &identity, client);
        (response.status(), body(response))
    }

    #[test]
    fn answers_hostname_clientip_echo_and_healthz() {
        assert_eq!(get("/hostname"), (StatusCode::OK, "web-0".to_owned()));
        assert_eq!(
            get("/clientip"),
            (StatusCode::OK, "10.244.1.7:43210".to_owned())
        );
        assert_eq!(
            get("/echo?msg=hello%20there"),
            (StatusCode::OK, "hello there".to_owned())
        );
        assert_eq!(get("/healthz"), (StatusCode::OK, "ok".to_owned()));
        assert_eq!(get("/nope").0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn ipv4_clients_of_a_dual_stack_socket_show_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.244.1.7]:80".parse().unwrap();
        assert_eq!(client_address(mapped).to_string(), "10.244.1.7:80");
        let v6: SocketAddr = "[fd00::7]:80".parse().unwrap();
        assert_eq!(client_address(v6), v6);
    }
}
