//! A [`Transaction`]: an ordered list of changes to owned tables that the
//! kernel commits all together or not at all. Building one is pure; the
//! [`crate::Nft`] handle sends it.
//!
//! Order matters exactly as in an nft script: create a table before its
//! chains, a chain before the rules that jump to it, a set before the rules
//! that look it up.
//!
//! Elements are owned by the transaction ([`Op::AddElements`]) or, for
//! large loads, shared with the caller's own state
//! ([`Op::AddSharedElements`], an [`ElementList`]) and encoded from there.

use std::fmt;
use std::sync::Arc;

use crate::expr::Rule;
use crate::model::{Chain, Element, Set, TableRef};

/// A list of elements that the caller keeps (its own state), for a
/// transaction to add without copying them: see
/// [`Transaction::add_shared_elements`]. A full load of a large table adds
/// hundreds of thousands of elements; a copy of them all, made only to be
/// encoded once and dropped, was a fifth of the time before the commit.
pub trait ElementList: fmt::Debug + Send + Sync {
    /// Number of elements.
    fn len(&self) -> usize;

    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element at `index` (`None` past the end).
    fn get(&self, index: usize) -> Option<&Element>;
}

impl ElementList for Vec<Element> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn get(&self, index: usize) -> Option<&Element> {
        self.as_slice().get(index)
    }
}

/// An [`ElementList`] shared with the caller, inside an [`Op`]. Two
/// compare equal when they hold equal elements in the same order.
#[derive(Clone)]
pub struct SharedElements(Arc<dyn ElementList>);

impl SharedElements {
    /// Wraps a shared list.
    pub fn new(list: Arc<dyn ElementList>) -> SharedElements {
        SharedElements(list)
    }

    /// The list.
    pub fn list(&self) -> &dyn ElementList {
        &*self.0
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = &Element> {
        (0..self.0.len()).map_while(|index| self.0.get(index))
    }
}

impl fmt::Debug for SharedElements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for SharedElements {
    fn eq(&self, other: &SharedElements) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for SharedElements {}

/// One change inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create the table if it does not exist (`add table`).
    AddTable(TableRef),
    /// Delete the table and everything in it; fails if it does not exist.
    DeleteTable(TableRef),
    /// Delete every rule of every chain of the table (`flush table`).
    FlushTable(TableRef),
    /// Create the chain if it does not exist (`add chain`).
    AddChain(TableRef, Chain),
    /// Delete every rule of the chain (`flush chain`).
    FlushChain(TableRef, String),
    /// Delete the (empty, unreferenced) chain.
    DeleteChain(TableRef, String),
    /// Create the set or map if it does not exist (`add set`/`add map`).
    AddSet(TableRef, Set),
    /// Delete every element of the set (`flush set`).
    FlushSet(TableRef, String),
    /// Delete the (unreferenced) set.
    DeleteSet(TableRef, String),
    /// Add elements. An element that exists with the same data is kept; one
    /// that exists with other data fails the transaction (delete it first,
    /// in the same transaction, to change its data).
    AddElements {
        /// Table of the set.
        table: TableRef,
        /// Set or map name.
        set: String,
        /// Elements to add.
        elements: Vec<Element>,
    },
    /// [`Op::AddElements`] of a list the caller keeps, not copied (see
    /// [`ElementList`]).
    AddSharedElements {
        /// Table of the set.
        table: TableRef,
        /// Set or map name.
        set: String,
        /// Elements to add.
        elements: SharedElements,
    },
    /// Delete elements by key; a missing key fails the transaction.
    DeleteElements {
        /// Table of the set.
        table: TableRef,
        /// Set or map name.
        set: String,
        /// Elements to delete (only keys matter).
        elements: Vec<Element>,
    },
    /// Delete elements by key, ignoring keys that are not there (for
    /// idempotent teardown). Needs Linux 6.3 or later
    /// (`NFT_MSG_DESTROYSETELEM`); older kernels refuse the transaction.
    DestroyElements {
        /// Table of the set.
        table: TableRef,
        /// Set or map name.
        set: String,
        /// Elements to delete (only keys matter).
        elements: Vec<Element>,
    },
    /// Append a rule to its chain.
    AddRule(TableRef, Rule),
    /// Delete a rule by the handle the kernel gave it (see [`crate::RuleInfo`]).
    DeleteRule {
        /// Table of the chain.
        table: TableRef,
        /// Chain of the rule.
        chain: String,
        /// Kernel rule handle.
        handle: u64,
    },
}

/// An ordered, atomic list of changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    ops: Vec<Op>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Transaction {
        Transaction::default()
    }

    /// The changes, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends a raw change.
    pub fn push(&mut self, op: Op) -> &mut Transaction {
        self.ops.push(op);
        self
    }

    /// `add table`.
    pub fn add_table(&mut self, table: &TableRef) -> &mut Transaction {
        self.push(Op::AddTable(table.clone()))
    }

    /// `delete table` (fails when the table does not exist).
    pub fn delete_table(&mut self, table: &TableRef) -> &mut Transaction {
        self.push(Op::DeleteTable(table.clone()))
    }

    /// Deletes the table if it exists: `add table` then `delete table`, so a
    /// missing table is not an error on any kernel.
    pub fn delete_table_if_exists(&mut self, table: &TableRef) -> &mut Transaction {
        self.add_table(table).delete_table(table)
    }

    /// Replaces the table with an empty one: whatever was in it disappears
    /// in the same commit as the new content appears (the usual idiom for a
    /// full resync: `recreate_table`, then add everything). Packets never
    /// see a missing table, and conntrack NAT mappings survive; the content
    /// of dynamic sets (affinity entries added from the packet path) does
    /// not, so prefer incremental changes once in sync.
    pub fn recreate_table(&mut self, table: &TableRef) -> &mut Transaction {
        self.delete_table_if_exists(table).add_table(table)
    }

    /// `flush table`: deletes all rules, keeps chains and sets.
    pub fn flush_table(&mut self, table: &TableRef) -> &mut Transaction {
        self.push(Op::FlushTable(table.clone()))
    }

    /// `add chain`.
    pub fn add_chain(&mut self, table: &TableRef, chain: Chain) -> &mut Transaction {
        self.push(Op::AddChain(table.clone(), chain))
    }

    /// `flush chain`.
    pub fn flush_chain(&mut self, table: &TableRef, chain: impl Into<String>) -> &mut Transaction {
        self.push(Op::FlushChain(table.clone(), chain.into()))
    }

    /// `delete chain`.
    pub fn delete_chain(&mut self, table: &TableRef, chain: impl Into<String>) -> &mut Transaction {
        self.push(Op::DeleteChain(table.clone(), chain.into()))
    }

    /// `add set` / `add map`.
    pub fn add_set(&mut self, table: &TableRef, set: Set) -> &mut Transaction {
        self.push(Op::AddSet(table.clone(), set))
    }

    /// `flush set`.
    pub fn flush_set(&mut self, table: &TableRef, set: impl Into<String>) -> &mut Transaction {
        self.push(Op::FlushSet(table.clone(), set.into()))
    }

    /// `delete set`.
    pub fn delete_set(&mut self, table: &TableRef, set: impl Into<String>) -> &mut Transaction {
        self.push(Op::DeleteSet(table.clone(), set.into()))
    }

    /// `add element`.
    pub fn add_elements(
        &mut self,
        table: &TableRef,
        set: impl Into<String>,
        elements: Vec<Element>,
    ) -> &mut Transaction {
        if elements.is_empty() {
            return self;
        }
        self.push(Op::AddElements {
            table: table.clone(),
            set: set.into(),
            elements,
        })
    }

    /// `add element` of a list the caller keeps (and may change once the
    /// transaction is dropped): encoded from it directly, never copied.
    pub fn add_shared_elements(
        &mut self,
        table: &TableRef,
        set: impl Into<String>,
        elements: Arc<dyn ElementList>,
    ) -> &mut Transaction {
        if elements.is_empty() {
            return self;
        }
        self.push(Op::AddSharedElements {
            table: table.clone(),
            set: set.into(),
            elements: SharedElements::new(elements),
        })
    }

    /// `delete element`.
    pub fn delete_elements(
        &mut self,
        table: &TableRef,
        set: impl Into<String>,
        elements: Vec<Element>,
    ) -> &mut Transaction {
        if elements.is_empty() {
            return self;
        }
        self.push(Op::DeleteElements {
            table: table.clone(),
            set: set.into(),
            elements,
        })
    }

    /// `destroy element`: like [`Transaction::delete_elements`], but keys
    /// that are not there are no error (Linux 6.3+).
    pub fn destroy_elements(
        &mut self,
        table: &TableRef,
        set: impl Into<String>,
        elements: Vec<Element>,
    ) -> &mut Transaction {
        if elements.is_empty() {
            return self;
        }
        self.push(Op::DestroyElements {
            table: table.clone(),
            set: set.into(),
            elements,
        })
    }

    /// Deletes a regular chain and its rules if the chain exists: `add
    /// chain`, `flush chain`, `delete chain`, so a missing chain is no
    /// error on any kernel. The chain must not be referenced any more.
    pub fn delete_chain_if_exists(
        &mut self,
        table: &TableRef,
        chain: impl Into<String>,
    ) -> &mut Transaction {
        let chain = chain.into();
        self.add_chain(table, Chain::regular(chain.clone()))
            .flush_chain(table, chain.clone())
            .delete_chain(table, chain)
    }

    /// `add rule`.
    pub fn add_rule(&mut self, table: &TableRef, rule: Rule) -> &mut Transaction {
        self.push(Op::AddRule(table.clone(), rule))
    }

    /// `delete rule ... handle N`.
    pub fn delete_rule(
        &mut self,
        table: &TableRef,
        chain: impl Into<String>,
        handle: u64,
    ) -> &mut Transaction {
        self.push(Op::DeleteRule {
            table: table.clone(),
            chain: chain.into(),
            handle,
        })
    }
}
