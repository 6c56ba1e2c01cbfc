//! [`Nft`]: the handle that commits transactions and lists nf_tables state
//! inside one network namespace. It owns one netlink socket, opened inside
//! the namespace and bound to it for its whole life, so it can be used from
//! any thread (including a tokio worker) without ever switching namespace.

use crate::Error;
use crate::encode::encode;
use crate::list::{self, ChainInfo, RuleInfo, SetInfo, TableInfo};
use crate::model::{Element, Family, TableRef};
use crate::socket::{NfSocket, OwnedMsg};
use crate::sys;
use crate::transaction::Transaction;
use crate::wire::Writer;

/// What a successful [`Nft::apply`] sent (for logs and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Netlink messages in the batch (without the batch framing).
    pub messages: usize,
    /// Bytes of the batch.
    pub bytes: usize,
}

/// Commits transactions and lists nf_tables state in one network namespace.
///
/// # Guarantees
/// [`Nft::apply`] sends the whole transaction as one nfnetlink batch: the
/// kernel applies all of it or, if any message fails, none of it.
///
/// # Caveats
/// Not `Sync`: use one handle per thread, or wrap it in a mutex. Listings
/// are snapshots; another writer may change the table right after.
#[derive(Debug)]
pub struct Nft {
    sock: NfSocket,
}

impl Nft {
    /// A handle on the namespace of the calling thread.
    pub fn open() -> Result<Nft, Error> {
        Ok(Nft {
            sock: NfSocket::open("current".to_owned())?,
        })
    }

    /// A handle on `ns`; the socket is created inside it.
    pub fn open_in(ns: &weft_linux::NetNs) -> Result<Nft, Error> {
        Ok(Nft {
            sock: NfSocket::open_in(ns)?,
        })
    }

    /// Name of the namespace, as used in errors.
    pub fn namespace(&self) -> &str {
        &self.sock.ns
    }

    /// Commits `tx` atomically. On error nothing of `tx` is applied and the
    /// error names the change that the kernel refused (down to the element
    /// or expression when the kernel says which).
    pub fn apply(&mut self, tx: &Transaction) -> Result<Applied, Error> {
        if tx.is_empty() {
            return Ok(Applied::default());
        }
        let first_seq = self.sock.reserve_seq(0);
        let batch = encode(tx, first_seq)?;
        self.sock.reserve_seq(batch.message_count() as u32 + 2);
        self.sock.send(batch.bytes())?;
        let last_msg_seq = batch.last_seq().wrapping_sub(1);
        let (mut errors, acked) = self.sock.drain_batch_replies(last_msg_seq)?;
        errors.sort_by_key(|e| e.seq.wrapping_sub(first_seq));
        if let Some(first) = errors.first() {
            return Err(Error::Rejected {
                ns: self.sock.ns.clone(),
                object: batch.describe(tx, first.seq, first.offset),
                message: first.message.clone().filter(|m| !m.is_empty()),
                more: errors.len() - 1,
                source: std::io::Error::from_raw_os_error(first.errno),
            });
        }
        if !acked {
            return Err(Error::Socket {
                ns: self.sock.ns.clone(),
                op: "confirm batch",
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the kernel did not acknowledge the batch",
                ),
            });
        }
        Ok(Applied {
            messages: batch.message_count(),
            bytes: batch.bytes().len(),
        })
    }

    fn dump(
        &mut self,
        op: &str,
        msg: u16,
        family: u8,
        attrs: &[(u16, &str)],
    ) -> Result<Vec<OwnedMsg>, Error> {
        self.sock.dump(op, |seq| {
            let mut w = Writer::with_capacity(128);
            let m = w.begin_msg(
                (sys::NFNL_SUBSYS_NFTABLES << 8) | msg,
                sys::NLM_F_REQUEST | sys::NLM_F_DUMP,
                seq,
                family,
                0,
            );
            for (ty, value) in attrs {
                w.attr_str(*ty, value);
            }
            w.end_msg(m);
            w.buf
        })
    }

    /// All tables of all families (including ones weft does not own).
    pub fn tables(&mut self) -> Result<Vec<TableInfo>, Error> {
        let msgs = self.dump(
            "list tables",
            sys::NFT_MSG_GETTABLE,
            sys::NFPROTO_UNSPEC,
            &[],
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| list::parse_table(m.family()?, m.attrs()))
            .collect())
    }

    /// Whether `table` exists.
    pub fn table_exists(&mut self, table: &TableRef) -> Result<bool, Error> {
        Ok(self.tables()?.iter().any(|t| &t.table == table))
    }

    /// Chains of `table` (empty if the table does not exist).
    pub fn chains(&mut self, table: &TableRef) -> Result<Vec<ChainInfo>, Error> {
        let op = format!("list chains of {table}");
        let msgs = self.dump(&op, sys::NFT_MSG_GETCHAIN, table.family.nfproto(), &[])?;
        Ok(msgs
            .iter()
            .filter_map(|m| list::parse_chain(m.attrs()))
            .filter(|(t, _)| *t == table.name)
            .map(|(_, chain)| chain)
            .collect())
    }

    /// Sets and maps of `table`.
    pub fn sets(&mut self, table: &TableRef) -> Result<Vec<SetInfo>, Error> {
        let op = format!("list sets of {table}");
        let msgs = self.dump(
            &op,
            sys::NFT_MSG_GETSET,
            table.family.nfproto(),
            &[(sys::NFTA_SET_TABLE, &table.name)],
        );
        let msgs = match msgs {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
            other => other?,
        };
        Ok(msgs
            .iter()
            .filter_map(|m| list::parse_set(m.attrs()))
            .filter(|(t, _)| *t == table.name)
            .map(|(_, set)| set)
            .collect())
    }

    /// Elements of set or map `set` of `table`. Fails if the set does not
    /// exist or has a key type weft does not model.
    pub fn elements(&mut self, table: &TableRef, set: &str) -> Result<Vec<Element>, Error> {
        let op = format!("list elements of set {} {}/{set}", table.family, table.name);
        let info = self
            .sets(table)?
            .into_iter()
            .find(|s| s.name == set)
            .ok_or_else(|| Error::Request {
                ns: self.sock.ns.clone(),
                op: op.clone(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            })?;
        let key = info.key.clone().ok_or_else(|| Error::Decode {
            ns: self.sock.ns.clone(),
            op: op.clone(),
            detail: "key type not modelled by weft".to_owned(),
        })?;
        let msgs = self.dump(
            &op,
            sys::NFT_MSG_GETSETELEM,
            table.family.nfproto(),
            &[
                (sys::NFTA_SET_ELEM_LIST_TABLE, &table.name),
                (sys::NFTA_SET_ELEM_LIST_SET, set),
            ],
        )?;
        let mut raw = Vec::new();
        let mut bad = 0;
        for msg in &msgs {
            let (mut decoded, skipped) =
                list::parse_elements(msg.attrs(), &key, info.data.as_ref());
            raw.append(&mut decoded);
            bad += skipped;
        }
        let elements = list::assemble(raw, info.flags & sys::NFT_SET_INTERVAL != 0);
        if bad > 0 {
            return Err(Error::Decode {
                ns: self.sock.ns.clone(),
                op,
                detail: format!("{bad} element(s) did not decode"),
            });
        }
        Ok(elements)
    }

    /// Rules of `table`, of one chain or of all chains.
    pub fn rules(&mut self, table: &TableRef, chain: Option<&str>) -> Result<Vec<RuleInfo>, Error> {
        let op = format!("list rules of {table}");
        let mut attrs = vec![(sys::NFTA_RULE_TABLE, table.name.as_str())];
        if let Some(chain) = chain {
            attrs.push((sys::NFTA_RULE_CHAIN, chain));
        }
        let msgs = self.dump(&op, sys::NFT_MSG_GETRULE, table.family.nfproto(), &attrs);
        let msgs = match msgs {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
            other => other?,
        };
        Ok(msgs
            .iter()
            .filter(|m| m.family() == Some(table.family.nfproto()))
            .filter(|m| {
                m.attrs()
                    .any(|a| a.ty == sys::NFTA_RULE_TABLE && a.string() == table.name)
            })
            .filter_map(|m| list::parse_rule(table.family, m.attrs()))
            .filter(|r| chain.is_none_or(|c| r.chain == c))
            .collect())
    }

    /// Tables weft owns, of `family` (or all families).
    pub fn owned_tables(&mut self, family: Option<Family>) -> Result<Vec<TableRef>, Error> {
        Ok(self
            .tables()?
            .into_iter()
            .map(|t| t.table)
            .filter(|t| t.is_owned() && family.is_none_or(|f| t.family == f))
            .collect())
    }
}
