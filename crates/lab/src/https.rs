//! A minimal HTTPS client for `lab check`: one HTTP/1.0 GET over TLS from
//! inside a namespace, with SNI, trusting only the given certificate (the
//! lab's own, so the check proves the ingress served the right one).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use weft_linux::NetNs;

/// GET `path` from `target` over TLS with server name `host`, verifying
/// the server's certificate against `trusted_pem` only. The body of a 200,
/// or what went wrong.
pub fn get(
    ns: &NetNs,
    target: SocketAddr,
    host: &str,
    path: &str,
    trusted_pem: &str,
) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trusted_pem.as_bytes()) {
        let cert = cert.map_err(|err| format!("lab certificate: {err}"))?;
        roots
            .add(cert)
            .map_err(|err| format!("lab certificate: {err}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(|err| err.to_string())?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let response = ns
        .run(|| -> Result<Vec<u8>, String> {
            let tcp = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                .map_err(|err| err.to_string())?;
            tcp.set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|err| err.to_string())?;
            let conn = rustls::ClientConnection::new(Arc::new(config), name)
                .map_err(|err| err.to_string())?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(request.as_bytes())
                .map_err(|err| format!("TLS: {err}"))?;
            let mut response = Vec::new();
            match tls.read_to_end(&mut response) {
                Ok(_) => Ok(response),
                // A server closing without close_notify after a complete
                // HTTP/1.0 response is fine here.
                Err(err)
                    if err.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() =>
                {
                    Ok(response)
                }
                Err(err) => Err(format!("TLS: {err}")),
            }
        })
        .map_err(|err| err.to_string())??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_owned());
    }
    Ok(body.trim().to_owned())
}
