//! The error type of the nftables layer. Every variant names the object
//! (table, set, element, rule) and, for kernel errors, the namespace, so a
//! failed sync can be read from one log line.

use std::io;

/// Errors from building, sending or listing nftables changes and from
/// conntrack requests.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A transaction addressed a table weft does not own.
    #[error("refusing to touch {0}: weft only writes tables named weft*")]
    ForeignTable(String),
    /// The transaction is inconsistent (for example an element whose key
    /// does not match its set's key type); nothing was sent.
    #[error("invalid {object}: {reason}")]
    Invalid {
        /// The object, e.g. `element 10.0.0.1 . tcp in set ip weft/services`.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// The kernel refused one message of a batch; the whole batch was
    /// aborted and nothing of it was applied.
    #[error("network namespace {ns}: kernel rejected {object}{}{}",
        message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default(),
        if *more > 0 { format!(", and {more} later message(s) failed too") } else { String::new() })]
    Rejected {
        /// Namespace the batch was sent to.
        ns: String,
        /// The change that failed, e.g. `add rule in chain ip weft/services`.
        object: String,
        /// The kernel's extended-ack message, when it sent one.
        message: Option<String>,
        /// How many other messages of the batch failed.
        more: usize,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// A netlink socket operation failed.
    #[error("network namespace {ns}: netlink {op} failed")]
    Socket {
        /// Namespace of the socket.
        ns: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A request (dump, conntrack delete) was refused by the kernel.
    #[error("network namespace {ns}: {op} refused")]
    Request {
        /// Namespace of the socket.
        ns: String,
        /// The request, e.g. `list chains of table ip weft`.
        op: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// A kernel reply could not be decoded.
    #[error("network namespace {ns}: undecodable reply to {op}: {detail}")]
    Decode {
        /// Namespace of the socket.
        ns: String,
        /// The request.
        op: String,
        /// What was wrong.
        detail: String,
    },
    /// Entering the network namespace failed.
    #[error("cannot open a netfilter socket in the namespace")]
    Namespace(#[from] weft_linux::Error),
}

impl Error {
    /// The errno of a kernel or socket error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Rejected { source, .. }
            | Error::Socket { source, .. }
            | Error::Request { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
