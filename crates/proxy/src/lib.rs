//! The Service proxy: Kubernetes Services and EndpointSlices in, an
//! nftables ruleset out, committed as one atomic transaction per change.
//!
//! Three steps, each its own module: [`service`] reads the cluster objects
//! into Service ports with resolved endpoints (skipping, with a reason,
//! what it cannot program); [`compile`] turns them into the desired
//! [`Ruleset`] of one address family (pure, unit-tested against expected
//! rulesets); [`sync`] diffs that against what was last applied and commits
//! only the difference, flushing stale UDP conntrack entries;
//! [`incremental`] keeps the compiled ruleset per Service port so that
//! [`ServiceSyncer`] recompiles and diffs only the ports that changed.
//!
//! Service lookup is one verdict-map lookup keyed by address, protocol and
//! port, so per-packet cost does not grow with the number of Services.
//! Only the tables `ip weft` and `ip6 weft` are written.

#![forbid(unsafe_code)]

pub mod compile;
pub mod incremental;
pub mod service;
pub mod sync;
pub mod testing;

pub use compile::{ProxyConfig, Ruleset, compile};
pub use incremental::ServiceTable;
pub use service::{
    Endpoint, PortName, Protocol, ServicePort, Skipped, service_ports, service_ports_of,
};
pub use sync::{ServiceSyncer, SyncError, SyncReport, Syncer, diff};
