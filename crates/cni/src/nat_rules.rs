//! nftables rules that belong to one attachment (NAT for `ipMasq` and
//! portmap, Ethernet filtering for `macspoofchk`), in tables weft owns in
//! the node's namespace. Every rule carries the comment
//! `weft-<plugin> <network> <containerID> <ifname>`: ADD replaces the
//! attachment's rules in one transaction, DEL removes them, CHECK compares
//! them with what ADD would install, GC removes those of attachments the
//! runtime no longer knows.

use std::collections::HashSet;

use weft_nft::{Chain, ChainType, Family, Hook, Nft, Rule, RuleInfo, TableRef, Transaction};

use crate::error::error_chain;
use crate::{CniError, ErrorCode};

/// A table (created in each of `families` on demand) and its base chains.
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    /// Table name (must start with `weft`).
    pub name: &'static str,
    /// Families the table exists in (`ip` and `ip6` for NAT, `bridge` for
    /// Ethernet-level filtering).
    pub families: &'static [Family],
    /// Type of the base chains.
    pub kind: ChainType,
    /// Base chains: name, hook, priority.
    pub chains: &'static [(&'static str, Hook, i32)],
}

/// The attachment rules belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag<'a> {
    /// Plugin name, e.g. `bridge`.
    pub plugin: &'static str,
    /// Network name.
    pub network: &'a str,
    /// Container ID.
    pub container_id: &'a str,
    /// Interface in the container.
    pub ifname: &'a str,
}

impl Tag<'_> {
    /// The comment rules of this attachment carry.
    pub fn comment(&self) -> String {
        format!(
            "{}{} {}",
            network_prefix(self.plugin, self.network),
            self.container_id,
            self.ifname
        )
    }
}

fn network_prefix(plugin: &str, network: &str) -> String {
    format!("weft-{plugin} {network} ")
}

fn nft_error(what: &str, err: &weft_nft::Error) -> CniError {
    CniError::new(ErrorCode::Io, what.to_owned()).with_details(error_chain(err))
}

fn open() -> Result<Nft, CniError> {
    Nft::open().map_err(|err| nft_error("opening nftables in the node namespace", &err))
}

/// The rules whose comment `pick` selects, with their family.
fn find_rules(
    nft: &mut Nft,
    tables: &Tables,
    pick: &dyn Fn(&str) -> bool,
) -> Result<Vec<(Family, RuleInfo)>, CniError> {
    let mut found = Vec::new();
    for &family in tables.families {
        let table = TableRef::new(family, tables.name);
        let listed = nft
            .table_exists(&table)
            .and_then(|exists| {
                if exists {
                    nft.rules(&table, None)
                } else {
                    Ok(Vec::new())
                }
            })
            .map_err(|err| nft_error("listing nftables rules", &err))?;
        found.extend(
            listed
                .into_iter()
                .filter(|rule| rule.comment.as_deref().is_some_and(pick))
                .map(|rule| (family, rule)),
        );
    }
    Ok(found)
}

/// (family, chain, handle) of the rules whose comment `pick` selects.
fn find(
    nft: &mut Nft,
    tables: &Tables,
    pick: &dyn Fn(&str) -> bool,
) -> Result<Vec<(Family, String, u64)>, CniError> {
    Ok(find_rules(nft, tables, pick)?
        .into_iter()
        .map(|(family, rule)| (family, rule.chain, rule.handle))
        .collect())
}

/// Makes `rules` the attachment's only rules (each rule's comment is set to
/// the tag): one atomic transaction, tables and chains created as needed.
pub fn replace(tables: &Tables, tag: &Tag<'_>, rules: Vec<(Family, Rule)>) -> Result<(), CniError> {
    let mut nft = open()?;
    let comment = tag.comment();
    let stale = find(&mut nft, tables, &|c| c == comment)?;
    let mut tx = Transaction::new();
    for &family in tables.families {
        let used =
            rules.iter().any(|(f, _)| *f == family) || stale.iter().any(|(f, ..)| *f == family);
        if !used {
            continue;
        }
        let table = TableRef::new(family, tables.name);
        tx.add_table(&table);
        for (name, hook, priority) in tables.chains {
            tx.add_chain(&table, Chain::base(*name, tables.kind, *hook, *priority));
        }
    }
    for (family, chain, handle) in stale {
        tx.delete_rule(&TableRef::new(family, tables.name), chain, handle);
    }
    for (family, rule) in rules {
        tx.add_rule(
            &TableRef::new(family, tables.name),
            rule.comment(comment.clone()),
        );
    }
    nft.apply(&tx)
        .map(|_| ())
        .map_err(|err| nft_error("installing nftables rules", &err))
}

fn remove(tables: &Tables, pick: &dyn Fn(&str) -> bool) -> Result<usize, CniError> {
    let mut nft = open()?;
    let found = find(&mut nft, tables, pick)?;
    let mut tx = Transaction::new();
    for (family, chain, handle) in &found {
        tx.delete_rule(&TableRef::new(*family, tables.name), chain.clone(), *handle);
    }
    nft.apply(&tx)
        .map(|_| ())
        .map_err(|err| nft_error("removing nftables rules", &err))?;
    Ok(found.len())
}

/// Removes the attachment's rules (none is success); returns how many.
pub fn remove_attachment(tables: &Tables, tag: &Tag<'_>) -> Result<usize, CniError> {
    let comment = tag.comment();
    remove(tables, &|c| c == comment)
}

/// What differs between the attachment's rules and `expected` (CHECK):
/// `None` when each expected rule is installed, in its family and chain,
/// with the same expressions, and the attachment has no other rule;
/// otherwise a sentence saying how many are missing or extra.
pub fn mismatch(
    tables: &Tables,
    tag: &Tag<'_>,
    expected: &[(Family, Rule)],
) -> Result<Option<String>, CniError> {
    let comment = tag.comment();
    let mut installed = find_rules(&mut open()?, tables, &|c| c == comment)?;
    let mut missing = 0;
    for (family, rule) in expected {
        let found = installed.iter().position(|(installed_family, info)| {
            installed_family == family
                && info.chain == rule.chain
                && info.decoded.as_deref() == Some(rule.exprs.as_slice())
        });
        match found {
            Some(at) => {
                installed.swap_remove(at);
            }
            None => missing += 1,
        }
    }
    let extra = installed.len();
    Ok(match (missing, extra) {
        (0, 0) => None,
        (0, extra) => Some(format!(
            "{extra} rule(s) carry the attachment's comment that ADD would not install"
        )),
        (missing, 0) => Some(format!(
            "{} of the attachment's {} rules present",
            expected.len() - missing,
            expected.len()
        )),
        (missing, extra) => Some(format!(
            "{} of the attachment's {} rules present, and {extra} it should not have",
            expected.len() - missing,
            expected.len()
        )),
    })
}

/// Removes the network's rules whose attachment is not in `valid`.
pub fn gc(
    tables: &Tables,
    plugin: &'static str,
    network: &str,
    valid: &HashSet<(&str, &str)>,
) -> Result<usize, CniError> {
    let prefix = network_prefix(plugin, network);
    remove(tables, &|comment| {
        comment
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once(' '))
            .is_some_and(|(id, ifname)| !valid.contains(&(id, ifname)))
    })
}
