//! The Service proxy: Kubernetes Services and EndpointSlices in, an
//! nftables ruleset out, committed as one atomic transaction per change.
//!
//! Three steps, each its own module: [`service`] reads the cluster objects
//! into Service ports with resolved endpoints (skipping, with a reason,
//! what it cannot program); [`compile`] turns them into the desired
//! [`Ruleset`] of one address family (pure, unit-tested against expected
//! rulesets); [`sync`] diffs that against what was last applied and commits
//! only the difference, flushing stale UDP conntrack entries.
//!
//! Service lookup is one verdict-map lookup keyed by address, protocol and
//! port, so per-packet cost does not grow with the number of Services.
//! Only the tables `ip weft` and `ip6 weft` are written.

#![forbid(unsafe_code)]

pub mod compile;
pub mod service;
pub mod sync;

pub use compile::{ProxyConfig, Ruleset, compile};
pub use service::{Endpoint, PortName, Protocol, ServicePort, Skipped, service_ports};
pub use sync::{SyncError, SyncReport, Syncer, diff};
