//! The nftables layer of weft: a typed model of the ruleset (tables, chains,
//! sets, maps and verdict maps with concatenated keys and timeouts, rules
//! made of kernel expressions), a pure compiler from a [`Transaction`] to one
//! nfnetlink batch, and an applier ([`Nft`]) that commits the batch
//! atomically inside a chosen network namespace, lists what is there, and
//! updates map elements incrementally. [`Conntrack`] deletes stale
//! conntrack entries over ctnetlink.
//!
//! It speaks nf_tables netlink directly: no `nft` binary, no libnftnl. A
//! whole transaction is one `sendmsg`, so tens of thousands of map elements
//! commit in one kernel transaction.
//!
//! It must not touch tables it does not own: every transaction is refused
//! unless all its tables are named `weft*` ([`OWNED_TABLE_PREFIX`]). Listing
//! other tables is allowed, writing them is not.
//!
//! Deliberately not here: anonymous (inline) sets, stateful objects,
//! flowtables and concatenated interval sets. `docs/nftables.md` shows how
//! to inspect the result with `nft`.

#![forbid(unsafe_code)]

mod applier;
mod conntrack;
mod encode;
mod error;
pub mod expr;
mod list;
mod model;
mod socket;
mod sys;
mod transaction;
mod wire;

pub use applier::{Applied, Nft};
pub use conntrack::{Conntrack, CtEntry, CtTuple};
pub use encode::{Batch, encode};
pub use error::Error;
pub use expr::{Expr, Reg, Rule};
pub use list::{ChainInfo, RuleInfo, SetInfo, TableInfo};
pub use model::{
    BaseChain, Chain, ChainType, Element, ElementData, Family, Hook, KeyType, MapData,
    OWNED_TABLE_PREFIX, Policy, Set, TableRef, Value, Values, Verdict,
};
pub use transaction::{ElementList, Op, SharedElements, Transaction};
