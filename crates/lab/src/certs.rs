//! The lab's TLS certificate: one self-signed certificate for
//! `lab.example` and `*.lab.example`, made on the first `lab up` and kept
//! in the store as the `kubernetes.io/tls` Secret `default/lab-tls` (so a
//! second `lab up` changes nothing). The sample app's Ingress serves it,
//! and `lab check` trusts exactly it when it proves the HTTPS path.

use weft_cluster::{Kind, Object, ObjectKey, Store};

use crate::LabError;

/// The domain the lab's Ingress hosts live under.
pub const LAB_DOMAIN: &str = "lab.example";
/// Namespace and name of the lab's TLS Secret.
pub const TLS_SECRET: (&str, &str) = ("default", "lab-tls");

fn key() -> ObjectKey {
    ObjectKey::new(Kind::Secret, TLS_SECRET.0, TLS_SECRET.1)
}

/// A new certificate and key (PEM) for the lab domain and its subdomains.
fn generate() -> Result<(String, String), LabError> {
    let invalid =
        |err: rcgen::Error| LabError::Invalid(format!("making the lab certificate: {err}"));
    let key = rcgen::KeyPair::generate().map_err(invalid)?;
    let mut params =
        rcgen::CertificateParams::new(vec![LAB_DOMAIN.to_owned(), format!("*.{LAB_DOMAIN}")])
            .map_err(invalid)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("weft lab {LAB_DOMAIN}"));
    let cert = params.self_signed(&key).map_err(invalid)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The Secret manifest to apply when the store has no lab certificate
/// yet; `None` when it has one (kept as is).
pub fn secret_manifest(store: &Store) -> Result<Option<String>, LabError> {
    if store.get(&key())?.is_some() {
        return Ok(None);
    }
    let (crt, key) = generate()?;
    let indent = |pem: &str| {
        pem.lines()
            .map(|line| format!("    {line}\n"))
            .collect::<String>()
    };
    Ok(Some(format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {}, namespace: {}}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        TLS_SECRET.1,
        TLS_SECRET.0,
        indent(&crt),
        indent(&key)
    )))
}

/// The lab certificate (PEM) from the store, for clients to trust.
pub fn certificate_pem(store: &Store) -> Result<Option<String>, LabError> {
    let Some(Object::Secret(secret)) = store.get(&key())? else {
        return Ok(None);
    };
    let from_string = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get("tls.crt"))
        .cloned();
    let from_data = || {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get("tls.crt"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    Ok(from_string.or_else(from_data))
}
