//! Compiles a [`Transaction`] into one nfnetlink batch: `BATCH_BEGIN`, one
//! message per change (element lists split so that each nested list stays
//! under netlink's 64 KiB attribute limit), `BATCH_END`. Pure: no I/O, so
//! the exact bytes are unit-tested and benchmarked.
//!
//! The batch remembers which change (and which element or expression) each
//! message carries, so a kernel error pointing at a sequence number and an
//! attribute offset can be turned back into the object that failed.

use std::collections::HashMap;

use crate::Error;
use crate::expr::Rule;
use crate::model::{
    BaseChain, Chain, Element, ElementData, KeyType, MapData, Policy, Set, TableRef, Value, Values,
    Verdict, concat_type,
};
use crate::sys;
use crate::transaction::{ElementList, Op, Transaction};
use crate::wire::{Msgs, Writer};
use exprs::{encode_expr, expr_name};

/// Keep each element list well under the 65535-byte nested attribute limit.
const MAX_ELEMENTS_NEST: usize = 60_000;

/// An encoded transaction, ready to send.
#[derive(Debug)]
pub struct Batch {
    bytes: Vec<u8>,
    /// One entry per message between `BATCH_BEGIN` and `BATCH_END`.
    messages: Vec<MessageInfo>,
    /// Sequence number of `BATCH_BEGIN`; message `i` has `first_seq + 1 + i`.
    first_seq: u32,
}

/// What one message of a batch carries.
#[derive(Debug, Clone, Copy)]
struct MessageInfo {
    /// Offset of the message in `bytes`.
    start: usize,
    /// Index of the change in the transaction.
    op: usize,
    /// For element messages: index (in the change) of the first element.
    first_element: usize,
}

impl Batch {
    /// The bytes to send in one `sendmsg`.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Messages between `BATCH_BEGIN` and `BATCH_END`.
    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    /// Sequence number of `BATCH_END`.
    pub(crate) fn last_seq(&self) -> u32 {
        self.first_seq
            .wrapping_add(self.messages.len() as u32)
            .wrapping_add(1)
    }

    /// Describes the object a kernel error for `seq` refers to; `offset` is
    /// the extended-ack attribute offset within that message, if any.
    pub(crate) fn describe(&self, tx: &Transaction, seq: u32, offset: Option<usize>) -> String {
        let index = seq.wrapping_sub(self.first_seq).wrapping_sub(1) as usize;
        let Some(info) = self.messages.get(index) else {
            return "the batch as a whole".to_owned();
        };
        let Some(op) = tx.ops().get(info.op) else {
            return format!("message {seq}");
        };
        let child = offset.and_then(|offset| self.list_child(info, offset));
        describe_op(op, info.first_element, child)
    }

    /// Index of the element (or expression) of the message's list attribute
    /// that contains the attribute at `offset` (relative to the message).
    fn list_child(&self, info: &MessageInfo, offset: usize) -> Option<usize> {
        let msg = Msgs::new(self.bytes.get(info.start..)?).next()?;
        let attrs_start = sys::NLMSG_HDRLEN + sys::NFGENMSG_LEN;
        for attr in msg.attrs() {
            let list = matches!(
                (msg.ty & 0xff, attr.ty),
                (
                    sys::NFT_MSG_NEWSETELEM | sys::NFT_MSG_DELSETELEM,
                    sys::NFTA_SET_ELEM_LIST_ELEMENTS
                ) | (sys::NFT_MSG_NEWRULE, sys::NFTA_RULE_EXPRESSIONS)
            );
            if !list {
                continue;
            }
            let payload_start = attrs_start + attr.offset + 4;
            for (i, child) in attr.nested().enumerate() {
                let start = payload_start + child.offset;
                if (start..start + child.len).contains(&offset) {
                    return Some(i);
                }
            }
        }
        None
    }
}

fn describe_op(op: &Op, first_element: usize, child: Option<usize>) -> String {
    match op {
        Op::AddTable(t) => format!("add {t}"),
        Op::DeleteTable(t) => format!("delete {t}"),
        Op::FlushTable(t) => format!("flush {t}"),
        Op::AddChain(t, c) => format!("add chain {} {}/{}", t.family, t.name, c.name),
        Op::FlushChain(t, c) => format!("flush chain {} {}/{c}", t.family, t.name),
        Op::DeleteChain(t, c) => format!("delete chain {} {}/{c}", t.family, t.name),
        Op::AddSet(t, s) => format!("add set {} {}/{}", t.family, t.name, s.name),
        Op::FlushSet(t, s) => format!("flush set {} {}/{s}", t.family, t.name),
        Op::DeleteSet(t, s) => format!("delete set {} {}/{s}", t.family, t.name),
        Op::AddElements { .. }
        | Op::AddSharedElements { .. }
        | Op::DeleteElements { .. }
        | Op::DestroyElements { .. } => {
            let Some((table, set, elements, kind)) = element_op(op) else {
                return "elements".to_owned();
            };
            let verb = match kind {
                ElementOp::Add => "add",
                ElementOp::Delete => "delete",
                ElementOp::Destroy => "destroy",
            };
            let element = child.and_then(|child| {
                let mut seen = 0;
                (first_element..elements.len())
                    .map_while(|index| elements.get(index))
                    .find(|e| {
                        seen += kernel_elements(e);
                        seen > child
                    })
            });
            match element {
                Some(element) => format!(
                    "{verb} element {{ {element} }} in set {} {}/{set}",
                    table.family, table.name
                ),
                None => format!(
                    "{verb} elements (from #{first_element}) in set {} {}/{set}",
                    table.family, table.name
                ),
            }
        }
        Op::AddRule(t, rule) => {
            let what = rule
                .comment
                .as_ref()
                .map(|c| format!(" \"{c}\""))
                .unwrap_or_default();
            let expr = child
                .and_then(|i| {
                    rule.exprs
                        .get(i)
                        .map(|e| format!(" at expression #{i} ({})", expr_name(e)))
                })
                .unwrap_or_default();
            format!(
                "add rule{what} in chain {} {}/{}{expr}",
                t.family, t.name, rule.chain
            )
        }
        Op::DeleteRule {
            table,
            chain,
            handle,
        } => format!(
            "delete rule handle {handle} in chain {} {}/{chain}",
            table.family, table.name
        ),
    }
}

fn msg_type(ty: u16) -> u16 {
    (sys::NFNL_SUBSYS_NFTABLES << 8) | ty
}

/// Key and data layout of a set, as far as the transaction knows it.
struct SetShape {
    key: Vec<KeyType>,
    data: Option<MapData>,
    interval: bool,
}

/// Compiles `tx` into a batch whose `BATCH_BEGIN` has sequence `first_seq`.
/// Fails without sending anything when the transaction touches a foreign
/// table or is inconsistent.
pub fn encode(tx: &Transaction, first_seq: u32) -> Result<Batch, Error> {
    let estimate = 64 + tx.ops().iter().map(estimate_op).sum::<usize>();
    let mut w = Writer::with_capacity(estimate);
    let mut messages = Vec::with_capacity(tx.ops().len());
    let mut seq = first_seq;
    let mut shapes: HashMap<(&TableRef, &str), SetShape> = HashMap::new();

    let begin = w.begin_msg(
        sys::NFNL_MSG_BATCH_BEGIN,
        sys::NLM_F_REQUEST,
        seq,
        sys::NFPROTO_UNSPEC,
        sys::NFNL_SUBSYS_NFTABLES,
    );
    w.end_msg(begin);

    for (index, op) in tx.ops().iter().enumerate() {
        let table = op_table(op);
        if !table.is_owned() {
            return Err(Error::ForeignTable(table.to_string()));
        }
        match op {
            Op::AddSet(t, set) => {
                validate_set(t, set)?;
                shapes.insert(
                    (t, set.name.as_str()),
                    SetShape {
                        key: set.key.clone(),
                        data: set.data.clone(),
                        interval: set.interval,
                    },
                );
            }
            Op::DeleteTable(t) => shapes.retain(|(table, _), _| *table != t),
            Op::DeleteSet(t, name) => {
                shapes.remove(&(t, name.as_str()));
            }
            _ => {}
        }
        match element_op(op) {
            Some((table, set, elements, kind)) => {
                let shape = shapes.get(&(table, set));
                let all = (0..elements.len()).map_while(|index| elements.get(index));
                for element in all {
                    validate_element(table, set, shape, element, kind == ElementOp::Add)?;
                }
                let mut first = 0;
                while first < elements.len() {
                    seq = seq.wrapping_add(1);
                    let start = w.len();
                    let done = encode_elements(&mut w, seq, table, set, elements, first, kind);
                    messages.push(MessageInfo {
                        start,
                        op: index,
                        first_element: first,
                    });
                    // At least one element per message: never stuck.
                    first += done.max(1);
                }
            }
            None => {
                seq = seq.wrapping_add(1);
                let start = w.len();
                encode_op(&mut w, seq, op);
                messages.push(MessageInfo {
                    start,
                    op: index,
                    first_element: 0,
                });
            }
        }
        if w.overflowed() {
            return Err(Error::Invalid {
                object: describe_op(op, 0, None),
                reason: "an attribute exceeds netlink's 64 KiB limit".to_owned(),
            });
        }
    }

    // Ask for an acknowledgement of the last message only: errors are
    // always reported, and the ack proves the whole batch was processed.
    if let Some(last) = messages.last() {
        let flags_at = last.start + 6;
        let flags = u16::from_ne_bytes([w.buf[flags_at], w.buf[flags_at + 1]]) | sys::NLM_F_ACK;
        w.buf[flags_at..flags_at + 2].copy_from_slice(&flags.to_ne_bytes());
    }

    seq = seq.wrapping_add(1);
    let end = w.begin_msg(
        sys::NFNL_MSG_BATCH_END,
        sys::NLM_F_REQUEST,
        seq,
        sys::NFPROTO_UNSPEC,
        sys::NFNL_SUBSYS_NFTABLES,
    );
    w.end_msg(end);

    Ok(Batch {
        bytes: w.buf,
        messages,
        first_seq,
    })
}

/// The parts of an element change: table, set, elements, which change.
fn element_op(op: &Op) -> Option<(&TableRef, &str, &dyn ElementList, ElementOp)> {
    match op {
        Op::AddElements {
            table,
            set,
            elements,
        } => Some((table, set, elements, ElementOp::Add)),
        Op::AddSharedElements {
            table,
            set,
            elements,
        } => Some((table, set, elements.list(), ElementOp::Add)),
        Op::DeleteElements {
            table,
            set,
            elements,
        } => Some((table, set, elements, ElementOp::Delete)),
        Op::DestroyElements {
            table,
            set,
            elements,
        } => Some((table, set, elements, ElementOp::Destroy)),
        _ => None,
    }
}

fn estimate_op(op: &Op) -> usize {
    match op {
        Op::AddElements { elements, .. }
        | Op::DeleteElements { elements, .. }
        | Op::DestroyElements { elements, .. } => 64 + elements.len() * 72,
        Op::AddSharedElements { elements, .. } => 64 + elements.len() * 72,
        Op::AddRule(_, rule) => 96 + rule.exprs.len() * 64,
        _ => 96,
    }
}

fn op_table(op: &Op) -> &TableRef {
    match op {
        Op::AddTable(t)
        | Op::DeleteTable(t)
        | Op::FlushTable(t)
        | Op::AddChain(t, _)
        | Op::FlushChain(t, _)
        | Op::DeleteChain(t, _)
        | Op::AddSet(t, _)
        | Op::FlushSet(t, _)
        | Op::DeleteSet(t, _)
        | Op::AddRule(t, _) => t,
        Op::AddElements { table, .. }
        | Op::AddSharedElements { table, .. }
        | Op::DeleteElements { table, .. }
        | Op::DestroyElements { table, .. }
        | Op::DeleteRule { table, .. } => table,
    }
}

fn validate_set(table: &TableRef, set: &Set) -> Result<(), Error> {
    let invalid = |reason: &str| Error::Invalid {
        object: format!("set {} {}/{}", table.family, table.name, set.name),
        reason: reason.to_owned(),
    };
    if set.key.is_empty() {
        return Err(invalid("a set needs at least one key field"));
    }
    if crate::model::concat_len(&set.key) > 64 {
        return Err(invalid("key longer than 64 bytes"));
    }
    if let Some(MapData::Value(fields)) = &set.data {
        if fields.is_empty() {
            return Err(invalid("a data map needs at least one value field"));
        }
    }
    if set.interval && !matches!(set.key.as_slice(), [single] if single.big_endian()) {
        return Err(invalid(
            "interval sets need a single key field of an address, protocol or port type",
        ));
    }
    Ok(())
}

fn validate_element(
    table: &TableRef,
    set: &str,
    shape: Option<&SetShape>,
    element: &Element,
    add: bool,
) -> Result<(), Error> {
    let invalid = |reason: String| Error::Invalid {
        object: format!(
            "element {{ {element} }} in set {} {}/{set}",
            table.family, table.name
        ),
        reason,
    };
    if element.key.is_empty() {
        return Err(invalid("empty key".to_owned()));
    }
    if let Some(end) = &element.key_end {
        match (element.key.as_slice(), end.as_slice()) {
            ([start], [end]) if start.key_type() == end.key_type() && start <= end => {}
            _ => {
                return Err(invalid(
                    "a range needs one start and one end value of the same type, start <= end"
                        .to_owned(),
                ));
            }
        }
    }
    let Some(shape) = shape else {
        return Ok(());
    };
    if shape.interval != element.key_end.is_some() {
        return Err(invalid(if shape.interval {
            "elements of an interval set are ranges (Element::range)".to_owned()
        } else {
            "ranges need an interval set".to_owned()
        }));
    }
    // Compared field by field: this runs for every element of a load.
    let types_match = |values: &[Value], want: &[KeyType]| {
        values.iter().map(Value::key_type).eq(want.iter().copied())
    };
    if !types_match(&element.key, &shape.key) {
        let key_types: Vec<KeyType> = element.key.iter().map(Value::key_type).collect();
        return Err(invalid(format!(
            "key has types {key_types:?}, the set wants {:?}",
            shape.key
        )));
    }
    if !add {
        return Ok(());
    }
    match (&shape.data, &element.data) {
        (None, None) | (Some(MapData::Verdict), Some(ElementData::Verdict(_))) => Ok(()),
        (Some(MapData::Value(want)), Some(ElementData::Value(values))) => {
            if types_match(values, want) {
                Ok(())
            } else {
                let have: Vec<KeyType> = values.iter().map(Value::key_type).collect();
                Err(invalid(format!(
                    "value has types {have:?}, the map wants {want:?}"
                )))
            }
        }
        (None, Some(_)) => Err(invalid("a set element cannot carry data".to_owned())),
        (Some(_), _) => Err(invalid("the map wants data of another kind".to_owned())),
    }
}

/// The register-layout bytes of a key or value: a single field unpadded,
/// a concatenation with every field padded to 4 bytes.
#[cfg(test)]
pub(crate) fn value_bytes(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    write_value_bytes(&mut out, values);
    out
}

/// Replaces the content of `out` by the bytes [`value_bytes`] describes (a
/// buffer reused for every element: no allocation per element).
fn write_value_bytes(out: &mut Vec<u8>, values: &[Value]) {
    out.clear();
    for value in values {
        value.write_padded(out);
    }
    if let [single] = values {
        out.truncate(single.key_type().byte_len());
    }
}

/// Byte length of a key or value of these field types (see [`value_bytes`]).
pub(crate) fn fields_len(fields: &[KeyType]) -> usize {
    match fields {
        [single] => single.byte_len(),
        _ => crate::model::concat_len(fields),
    }
}

/// A request that names a table (`table_attr`) and, for objects inside it,
/// one object (`object`: its attribute and name) — every delete and flush.
fn named_request(
    w: &mut Writer,
    seq: u32,
    message: u16,
    t: &TableRef,
    table_attr: u16,
    object: Option<(u16, &str)>,
) {
    let m = w.begin_msg(
        msg_type(message),
        sys::NLM_F_REQUEST,
        seq,
        t.family.nfproto(),
        0,
    );
    w.attr_str(table_attr, &t.name);
    if let Some((attr, name)) = object {
        w.attr_str(attr, name);
    }
    w.end_msg(m);
}

fn encode_op(w: &mut Writer, seq: u32, op: &Op) {
    match op {
        Op::AddTable(t) => {
            let m = w.begin_msg(
                msg_type(sys::NFT_MSG_NEWTABLE),
                sys::NLM_F_REQUEST | sys::NLM_F_CREATE,
                seq,
                t.family.nfproto(),
                0,
            );
            w.attr_str(sys::NFTA_TABLE_NAME, &t.name);
            w.attr_be32(sys::NFTA_TABLE_FLAGS, 0);
            w.end_msg(m);
        }
        Op::DeleteTable(t) => {
            named_request(w, seq, sys::NFT_MSG_DELTABLE, t, sys::NFTA_TABLE_NAME, None)
        }
        Op::FlushTable(t) => {
            named_request(w, seq, sys::NFT_MSG_DELRULE, t, sys::NFTA_RULE_TABLE, None)
        }
        Op::AddChain(t, chain) => encode_chain(w, seq, t, chain),
        Op::FlushChain(t, chain) => named_request(
            w,
            seq,
            sys::NFT_MSG_DELRULE,
            t,
            sys::NFTA_RULE_TABLE,
            Some((sys::NFTA_RULE_CHAIN, chain)),
        ),
        Op::DeleteChain(t, chain) => named_request(
            w,
            seq,
            sys::NFT_MSG_DELCHAIN,
            t,
            sys::NFTA_CHAIN_TABLE,
            Some((sys::NFTA_CHAIN_NAME, chain)),
        ),
        Op::AddSet(t, set) => encode_set(w, seq, t, set),
        Op::FlushSet(t, set) => named_request(
            w,
            seq,
            sys::NFT_MSG_DELSETELEM,
            t,
            sys::NFTA_SET_ELEM_LIST_TABLE,
            Some((sys::NFTA_SET_ELEM_LIST_SET, set)),
        ),
        Op::DeleteSet(t, set) => named_request(
            w,
            seq,
            sys::NFT_MSG_DELSET,
            t,
            sys::NFTA_SET_TABLE,
            Some((sys::NFTA_SET_NAME, set)),
        ),
        Op::AddRule(t, rule) => encode_rule(w, seq, t, rule),
        Op::DeleteRule {
            table,
            chain,
            handle,
        } => {
            let m = w.begin_msg(
                msg_type(sys::NFT_MSG_DELRULE),
                sys::NLM_F_REQUEST,
                seq,
                table.family.nfproto(),
                0,
            );
            w.attr_str(sys::NFTA_RULE_TABLE, &table.name);
            w.attr_str(sys::NFTA_RULE_CHAIN, chain);
            w.attr_be64(sys::NFTA_RULE_HANDLE, *handle);
            w.end_msg(m);
        }
        Op::AddElements { .. }
        | Op::AddSharedElements { .. }
        | Op::DeleteElements { .. }
        | Op::DestroyElements { .. } => {
            unreachable!("element changes are encoded by encode_elements")
        }
    }
}

fn encode_chain(w: &mut Writer, seq: u32, t: &TableRef, chain: &Chain) {
    let m = w.begin_msg(
        msg_type(sys::NFT_MSG_NEWCHAIN),
        sys::NLM_F_REQUEST | sys::NLM_F_CREATE,
        seq,
        t.family.nfproto(),
        0,
    );
    w.attr_str(sys::NFTA_CHAIN_TABLE, &t.name);
    w.attr_str(sys::NFTA_CHAIN_NAME, &chain.name);
    if let Some(BaseChain {
        kind,
        hook,
        priority,
        policy,
    }) = chain.base
    {
        let nest = w.begin_nest(sys::NFTA_CHAIN_HOOK);
        w.attr_be32(sys::NFTA_HOOK_HOOKNUM, hook.number());
        w.attr_be32(sys::NFTA_HOOK_PRIORITY, priority as u32);
        w.end_nest(nest);
        let policy = match policy {
            Policy::Accept => sys::NF_ACCEPT,
            Policy::Drop => sys::NF_DROP,
        };
        w.attr_be32(sys::NFTA_CHAIN_POLICY, policy as u32);
        w.attr_str(sys::NFTA_CHAIN_TYPE, kind.as_str());
    }
    w.end_msg(m);
}

fn encode_set(w: &mut Writer, seq: u32, t: &TableRef, set: &Set) {
    let m = w.begin_msg(
        msg_type(sys::NFT_MSG_NEWSET),
        sys::NLM_F_REQUEST | sys::NLM_F_CREATE,
        seq,
        t.family.nfproto(),
        0,
    );
    let mut flags = 0;
    if set.data.is_some() {
        flags |= sys::NFT_SET_MAP;
    }
    if set.timeout.is_some() {
        flags |= sys::NFT_SET_TIMEOUT;
    }
    if set.dynamic {
        flags |= sys::NFT_SET_EVAL;
    }
    if set.interval {
        flags |= sys::NFT_SET_INTERVAL;
    }
    w.attr_str(sys::NFTA_SET_TABLE, &t.name);
    w.attr_str(sys::NFTA_SET_NAME, &set.name);
    w.attr_be32(sys::NFTA_SET_FLAGS, flags);
    w.attr_be32(sys::NFTA_SET_KEY_TYPE, concat_type(&set.key));
    w.attr_be32(sys::NFTA_SET_KEY_LEN, fields_len(&set.key) as u32);
    match &set.data {
        None => {}
        Some(MapData::Verdict) => w.attr_be32(sys::NFTA_SET_DATA_TYPE, sys::NFT_DATA_VERDICT),
        Some(MapData::Value(fields)) => {
            w.attr_be32(sys::NFTA_SET_DATA_TYPE, concat_type(fields));
            w.attr_be32(sys::NFTA_SET_DATA_LEN, fields_len(fields) as u32);
        }
    }
    if let Some(timeout) = set.timeout {
        w.attr_be64(sys::NFTA_SET_TIMEOUT, timeout.as_millis() as u64);
    }
    // A transaction-local id; the kernel insists on one for new sets.
    w.attr_be32(sys::NFTA_SET_ID, seq);
    // Concatenated keys of hash sets need no field description: the kernel
    // wants `NFTA_SET_DESC_CONCAT` (with the `concat` flag) for interval
    // sets only, which weft does not create.
    if let Some(size) = set.size {
        let desc = w.begin_nest(sys::NFTA_SET_DESC);
        w.attr_be32(sys::NFTA_SET_DESC_SIZE, size);
        w.end_nest(desc);
    }
    // Byte order hints so that `nft list` prints single-field keys right.
    let mut udata = Vec::new();
    if let [single] = set.key.as_slice() {
        push_udata_u32(
            &mut udata,
            sys::NFTNL_UDATA_SET_KEYBYTEORDER,
            byteorder(*single),
        );
    }
    if let Some(MapData::Value(fields)) = &set.data {
        if let [single] = fields.as_slice() {
            push_udata_u32(
                &mut udata,
                sys::NFTNL_UDATA_SET_DATABYTEORDER,
                byteorder(*single),
            );
        }
    }
    if !udata.is_empty() {
        w.attr(sys::NFTA_SET_USERDATA, &udata);
    }
    w.end_msg(m);
}

fn byteorder(ty: KeyType) -> u32 {
    if ty.big_endian() {
        sys::NFT_BYTEORDER_BIG
    } else {
        sys::NFT_BYTEORDER_HOST
    }
}

fn push_udata_u32(out: &mut Vec<u8>, ty: u8, value: u32) {
    out.push(ty);
    out.push(4);
    out.extend_from_slice(&value.to_ne_bytes());
}

/// Which element message to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementOp {
    Add,
    Delete,
    Destroy,
}

/// Encodes as many of `elements` from `first` on as fit in one message;
/// returns how many.
fn encode_elements(
    w: &mut Writer,
    seq: u32,
    t: &TableRef,
    set: &str,
    elements: &dyn ElementList,
    first: usize,
    kind: ElementOp,
) -> usize {
    let add = kind == ElementOp::Add;
    let (ty, flags) = match kind {
        ElementOp::Add => (
            sys::NFT_MSG_NEWSETELEM,
            sys::NLM_F_REQUEST | sys::NLM_F_CREATE,
        ),
        ElementOp::Delete => (sys::NFT_MSG_DELSETELEM, sys::NLM_F_REQUEST),
        ElementOp::Destroy => (sys::NFT_MSG_DESTROYSETELEM, sys::NLM_F_REQUEST),
    };
    let m = w.begin_msg(msg_type(ty), flags, seq, t.family.nfproto(), 0);
    w.attr_str(sys::NFTA_SET_ELEM_LIST_TABLE, &t.name);
    w.attr_str(sys::NFTA_SET_ELEM_LIST_SET, set);
    let list = w.begin_nest(sys::NFTA_SET_ELEM_LIST_ELEMENTS);
    let mut count = 0;
    let mut bytes = Vec::with_capacity(64);
    for element in (first..elements.len()).map_while(|index| elements.get(index)) {
        let before = w.len();
        let elem = w.begin_nest(sys::NFTA_LIST_ELEM);
        let key = w.begin_nest(sys::NFTA_SET_ELEM_KEY);
        write_value_bytes(&mut bytes, &element.key);
        w.attr(sys::NFTA_DATA_VALUE, &bytes);
        w.end_nest(key);
        if add {
            match &element.data {
                None => {}
                Some(ElementData::Verdict(verdict)) => {
                    let data = w.begin_nest(sys::NFTA_SET_ELEM_DATA);
                    encode_verdict(w, verdict);
                    w.end_nest(data);
                }
                Some(ElementData::Value(values)) => {
                    let data = w.begin_nest(sys::NFTA_SET_ELEM_DATA);
                    write_value_bytes(&mut bytes, values);
                    w.attr(sys::NFTA_DATA_VALUE, &bytes);
                    w.end_nest(data);
                }
            }
            if let Some(timeout) = element.timeout {
                w.attr_be64(sys::NFTA_SET_ELEM_TIMEOUT, timeout.as_millis() as u64);
            }
        }
        w.end_nest(elem);
        // A range also needs its exclusive end, flagged as such; a range
        // reaching the maximum value has none.
        if let Some(end) = element.key_end.as_ref().and_then(|end| successor(end)) {
            let elem = w.begin_nest(sys::NFTA_LIST_ELEM);
            let key = w.begin_nest(sys::NFTA_SET_ELEM_KEY);
            write_value_bytes(&mut bytes, &end);
            w.attr(sys::NFTA_DATA_VALUE, &bytes);
            w.end_nest(key);
            w.attr_be32(sys::NFTA_SET_ELEM_FLAGS, sys::NFT_SET_ELEM_INTERVAL_END);
            w.end_nest(elem);
        }
        if count > 0 && w.len() - list.offset() > MAX_ELEMENTS_NEST {
            w.truncate_to(before);
            break;
        }
        count += 1;
    }
    w.end_nest(list);
    w.end_msg(m);
    count
}

/// The exclusive end of a range (`None` when the range reaches the max).
fn successor(end: &[Value]) -> Option<Values> {
    match end {
        [single] => single.successor().map(|v| Values::from([v])),
        _ => None,
    }
}

/// Kernel elements one model element becomes (a range: start and end).
fn kernel_elements(element: &Element) -> usize {
    1 + usize::from(
        element
            .key_end
            .as_ref()
            .and_then(|e| successor(e))
            .is_some(),
    )
}

/// `NFTA_DATA_VERDICT` nest with code and chain.
fn encode_verdict(w: &mut Writer, verdict: &Verdict) {
    let nest = w.begin_nest(sys::NFTA_DATA_VERDICT);
    let (code, chain) = match verdict {
        Verdict::Accept => (sys::NF_ACCEPT, None),
        Verdict::Drop => (sys::NF_DROP, None),
        Verdict::Continue => (sys::NFT_CONTINUE, None),
        Verdict::Return => (sys::NFT_RETURN, None),
        Verdict::Jump(chain) => (sys::NFT_JUMP, Some(chain)),
        Verdict::Goto(chain) => (sys::NFT_GOTO, Some(chain)),
    };
    w.attr_be32(sys::NFTA_VERDICT_CODE, code as u32);
    if let Some(chain) = chain {
        w.attr_str(sys::NFTA_VERDICT_CHAIN, chain);
    }
    w.end_nest(nest);
}

fn encode_rule(w: &mut Writer, seq: u32, t: &TableRef, rule: &Rule) {
    let m = w.begin_msg(
        msg_type(sys::NFT_MSG_NEWRULE),
        sys::NLM_F_REQUEST | sys::NLM_F_CREATE | sys::NLM_F_APPEND,
        seq,
        t.family.nfproto(),
        0,
    );
    w.attr_str(sys::NFTA_RULE_TABLE, &t.name);
    w.attr_str(sys::NFTA_RULE_CHAIN, &rule.chain);
    let list = w.begin_nest(sys::NFTA_RULE_EXPRESSIONS);
    for expr in &rule.exprs {
        let elem = w.begin_nest(sys::NFTA_LIST_ELEM);
        w.attr_str(sys::NFTA_EXPR_NAME, expr_name(expr));
        let data = w.begin_nest(sys::NFTA_EXPR_DATA);
        encode_expr(w, t.family, expr);
        w.end_nest(data);
        w.end_nest(elem);
    }
    w.end_nest(list);
    if let Some(comment) = &rule.comment {
        // libnftnl udata: type, length, NUL-terminated string.
        let bytes = comment.as_bytes();
        let len = bytes.len().min(254);
        let mut udata = Vec::with_capacity(len + 3);
        udata.push(sys::NFTNL_UDATA_RULE_COMMENT);
        udata.push((len + 1) as u8);
        udata.extend_from_slice(&bytes[..len]);
        udata.push(0);
        w.attr(sys::NFTA_RULE_USERDATA, &udata);
    }
    w.end_msg(m);
}

mod exprs;

#[cfg(test)]
mod tests;
