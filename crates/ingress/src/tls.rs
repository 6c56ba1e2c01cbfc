//! TLS: certificates from `kubernetes.io/tls` Secrets (PEM `tls.crt` chain
//! and `tls.key`), and the rustls server configuration whose certificate
//! resolver reads the current routing table on every handshake — so a
//! rotated Secret serves new handshakes as soon as the table is rebuilt,
//! without a restart. ALPN offers `h2` and `http/1.1`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::CipherSuite;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use weft_cluster::model::Secret;

use crate::routes::RouteTable;

/// The Secret type holding a certificate and its key.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Why a Secret cannot serve TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("type is {0:?}, not {TLS_SECRET_TYPE:?}")]
    WrongType(String),
    #[error("data has no {0:?}")]
    Missing(&'static str),
    #[error("tls.crt holds no PEM certificate")]
    NoCertificate,
    #[error("tls.crt is not valid PEM: {0}")]
    Certificate(rustls_pki_types::pem::Error),
    #[error("tls.key is not a PEM private key: {0}")]
    Key(rustls_pki_types::pem::Error),
    #[error("tls.key is not a supported key type: {0}")]
    KeyType(rustls::Error),
    #[error("tls.key does not belong to the certificate: {0}")]
    Mismatch(rustls::Error),
}

/// The certificate chain and signing key of a `kubernetes.io/tls` Secret.
pub fn certified_key(secret: &Secret) -> Result<CertifiedKey, TlsError> {
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    if kind != TLS_SECRET_TYPE {
        return Err(TlsError::WrongType(kind.to_owned()));
    }
    // `stringData` is what the API server merges into `data` on write; the
    // lab's store keeps it as written, so it is read too and wins.
    let field = |name: &'static str| {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(String::as_bytes)
            .or_else(|| {
                secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(name))
                    .map(|b| b.0.as_slice())
            })
            .ok_or(TlsError::Missing(name))
    };
    certified_key_from_pem(field("tls.crt")?, field("tls.key")?)
}

/// A certified key from PEM text: the chain (leaf first) and the key.
pub fn certified_key_from_pem(chain: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<_, _>>()
        .map_err(TlsError::Certificate)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(TlsError::Key)?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::KeyType)?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(TlsError::Mismatch)?;
    Ok(certified)
}

/// Picks the certificate by SNI from the routing table current at
/// handshake time.
#[derive(Debug)]
pub struct SniResolver {
    table: Arc<ArcSwap<RouteTable>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        let key = self.table.load().certificates.for_server_name(name);
        if key.is_none() {
            tracing::debug!(server_name = ?name, "no certificate for TLS server name");
        }
        key
    }
}

/// The cryptography of the HTTPS listener: ring, with AES-128-GCM and
/// SHA-256 suites first (the TLS 1.3 key schedule runs a dozen HMACs per
/// handshake, and SHA-256 has CPU instructions where SHA-384 has none) and
/// X25519 first among the key-exchange groups, as nginx has them.
pub fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::{self, kx_group};
    let base = ring::default_provider();
    let mut suites = base.cipher_suites.clone();
    // A stable sort: the other suites keep their order.
    suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    rustls::crypto::CryptoProvider {
        cipher_suites: suites,
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..base
    }
}

/// The HTTPS listener's rustls configuration ([`provider`], TLS 1.2 and
/// 1.3).
pub fn server_config(
    table: Arc<ArcSwap<RouteTable>>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { table }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The provider's suite order, not the client's (which usually puts
    // AES-256-GCM-SHA384 first).
    config.ignore_client_order = true;
    // Resumption without server state: session tickets encrypted with a
    // rotating key, one per handshake (each costs an encryption and a
    // record), so that reconnecting clients skip certificate signing.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes128_sha256_and_x25519_come_first() {
        let provider = provider();
        let suites: Vec<CipherSuite> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        // Nothing dropped.
        assert_eq!(
            suites.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
        assert!(suites.contains(&CipherSuite::TLS13_AES_256_GCM_SHA384));
        let groups: Vec<rustls::NamedGroup> = provider.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups,
            [
                rustls::NamedGroup::X25519,
                rustls::NamedGroup::secp256r1,
                rustls::NamedGroup::secp384r1
            ]
        );
    }
}
