//! The pod network half of the node agent: every node gets a pod subnet
//! carved from one cluster CIDR, a bridge (`cni0`) holding the subnet's
//! gateway address, IP forwarding, a CNI config pointing the runtime at that
//! subnet, and a way to reach every other node's subnet without NAT —
//! `host-gw` routes or a `vxlan` overlay.
//!
//! [`plan()`] computes the whole desired state from the cluster's nodes (pure),
//! [`apply()`] makes one node's kernel match it and removes what departed peers
//! left, and [`conflist`] writes the node's CNI config. The same code runs in
//! a lab node namespace and on a real node (the agent's own namespace).
//!
//! [`masquerade`] keeps pod egress leaving the cluster CIDR masqueraded.
//! Not here: watching the cluster (the agent feeds [`plan()`] from the
//! cluster model).

#![forbid(unsafe_code)]

pub mod apply;
pub mod conflist;
pub mod masquerade;
pub mod plan;

pub use apply::{ApplyError, Changes, apply};
pub use plan::{
    Config, LEGACY_GSO_MAX_SIZE, Mode, NodeNet, Peer, Plan, PlanError, Vtep, plan, vtep_mac,
};
