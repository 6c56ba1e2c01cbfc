//! The Linux networking layer every other weft crate builds on: network
//! namespaces ([`NetNs`]), and, inside any namespace, links, addresses,
//! routes, neighbours, bridge FDB entries ([`Netlink`]) and namespace-local
//! sysctls ([`sysctl`]), all over netlink or procfs; nothing here runs `ip` or
//! `sysctl` binaries.
//!
//! The API is synchronous on purpose: CNI plugins are short-lived processes
//! exec'ed per pod and must not pay for an async runtime; long-running agents
//! call it from a blocking thread.
//!
//! Set-up operations are idempotent `ensure_*` calls: ensuring what exists
//! with the same settings is a no-op, and an existing object with different
//! settings is [`Error::Conflict`] naming the object and the namespace.
//! Teardown operations (`delete_*`) treat "already gone" as success.
//!
//! This crate must not touch the namespace it is not asked to: every call
//! acts on the namespace its [`Netlink`] handle or [`NetNs`] names.

#![forbid(unsafe_code)]

mod error;
pub mod netlink;
pub mod netns;
pub mod sysctl;

pub use error::Error;
pub use netlink::{
    Address, FdbEntry, Link, LinkKind, Neighbour, Netlink, Route, RouteSpec, VethSpec, VxlanSpec,
};
pub use netns::NetNs;
