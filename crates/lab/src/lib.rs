//! `weft lab`: a whole multi-node cluster network on one Linux machine, made
//! of network namespaces. A LAN namespace holds the underlay bridge; node
//! namespaces (`weft-<lab>-node-<i>`) and an external host sit on it; each
//! node runs the real node agent (`weft agent`: pod network + Service
//! proxy) and a minimal kubelet that gives Pods from ordinary Kubernetes
//! YAML a namespace, CNI networking and a workload. Cluster state lives in
//! the embedded store under `/var/lib/weft/lab/<lab>/store`.
//!
//! Nothing here touches the root namespace's network configuration: links
//! are created inside lab namespaces only, and `lab down` removes every
//! namespace, process (by recorded pid) and file the lab created.

#![forbid(unsafe_code)]

pub mod certs;
pub mod check;
pub mod cni;
pub mod diagram;
pub mod exec;
pub mod https;
pub mod kubelet;
pub mod layout;
pub mod ops;
pub mod process;
pub mod topology;

pub use layout::Layout;
pub use ops::{Settings, down, logs, settle_store, status, up};

/// Errors of lab operations; each names what it was doing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A namespace or link operation failed.
    #[error(transparent)]
    Linux(#[from] weft_linux::Error),
    /// The lab's object store refused or failed.
    #[error(transparent)]
    Store(#[from] weft_cluster::store::StoreError),
    /// A file or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The request does not fit this lab.
    #[error("{0}")]
    Invalid(String),
    /// The lab name is not usable.
    #[error(transparent)]
    Name(#[from] layout::InvalidLabName),
}

impl LabError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
        let what = what.into();
        move |source| LabError::Io { what, source }
    }
}
