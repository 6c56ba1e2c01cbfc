//! The one error type of the Linux layer: every variant names the object and
//! the namespace it concerns, so a failure deep in a reconcile loop can be
//! read without a debugger.

use std::io;

/// Errors from namespace, netlink and sysctl operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A namespace-level operation (create, open, setns, unmount) failed.
    #[error("network namespace {name}: {op} failed")]
    Namespace {
        /// Namespace name or path.
        name: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The named network namespace does not exist.
    #[error("network namespace {0} does not exist")]
    NamespaceNotFound(String),
    /// A network namespace of that name exists already.
    #[error("network namespace {0} already exists")]
    NamespaceExists(String),
    /// A name that the kernel or `ip` would refuse.
    #[error("invalid {kind} name {name:?}")]
    InvalidName {
        /// What the name is for.
        kind: &'static str,
        /// The rejected name.
        name: String,
    },
    /// The closure run inside a namespace panicked.
    #[error("work inside network namespace {0} panicked")]
    ThreadPanicked(String),
    /// The kernel refused a netlink request.
    #[error("{op} {object} in network namespace {ns}")]
    Netlink {
        /// The request, e.g. "create link".
        op: &'static str,
        /// The object, e.g. `link veth0`.
        object: String,
        /// Namespace the request was sent to.
        ns: String,
        /// The errno from the kernel (or the socket error).
        #[source]
        source: io::Error,
    },
    /// A reply the kernel sent could not be decoded.
    #[error("undecodable netlink reply to {op} in network namespace {ns}: {detail}")]
    Decode {
        /// The request.
        op: &'static str,
        /// Namespace the request was sent to.
        ns: String,
        /// Decoder message.
        detail: String,
    },
    /// The object exists with settings other than the ones asked for.
    #[error("{object} in network namespace {ns} exists with different settings: {detail}")]
    Conflict {
        /// The object, e.g. `link br0`.
        object: String,
        /// Namespace.
        ns: String,
        /// What differs.
        detail: String,
    },
    /// An object the operation needs does not exist.
    #[error("{object} not found in network namespace {ns}")]
    NotFound {
        /// The object, e.g. `link eth0`.
        object: String,
        /// Namespace.
        ns: String,
    },
    /// Reading or writing a sysctl failed.
    #[error("sysctl {key} in network namespace {ns}")]
    Sysctl {
        /// The key, e.g. `net.ipv4.ip_forward`.
        key: String,
        /// Namespace.
        ns: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Whether the error means "the object is not there" (useful for
    /// idempotent teardown).
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NamespaceNotFound(_) | Error::NotFound { .. } => true,
            Error::Netlink { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENODEV)
                    | Some(libc::ENOENT)
                    | Some(libc::ESRCH)
                    | Some(libc::EADDRNOTAVAIL)
            ),
            _ => false,
        }
    }
}
