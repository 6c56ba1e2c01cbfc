//! Decoding of nf_tables dump replies into listing types: tables, chains,
//! sets (with their key and data layout), elements and rules. Pure
//! functions over reply messages, so they are tested by feeding them the
//! encoder's own messages (the kernel's replies use the same attributes).

use std::time::Duration;

use crate::expr::Expr;
use crate::model::{
    BaseChain, ChainType, Element, ElementData, Family, Hook, KeyType, MapData, Policy, TableRef,
    Value, Values, Verdict, split_concat_type,
};
use crate::sys;
use crate::wire::{Attr, Attrs};

/// A table as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Family and name.
    pub table: TableRef,
    /// Kernel handle.
    pub handle: u64,
    /// Table flags (`dormant`, ...).
    pub flags: u32,
    /// Number of chains.
    pub chains: u32,
}

/// A chain as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// Chain name.
    pub name: String,
    /// Kernel handle.
    pub handle: u64,
    /// Hook attachment of a base chain.
    pub base: Option<BaseChain>,
    /// References to the chain (jumps, gotos, map elements) plus its rules.
    pub uses: u32,
}

/// A set or map as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    /// Set name.
    pub name: String,
    /// Kernel handle.
    pub handle: u64,
    /// Kernel flags (`NFT_SET_*`).
    pub flags: u32,
    /// Key fields, when the key type is one weft knows.
    pub key: Option<Vec<KeyType>>,
    /// Key length in bytes.
    pub key_len: u32,
    /// Map data kind; `None` for a plain set.
    pub data: Option<MapData>,
    /// Default timeout.
    pub timeout: Option<Duration>,
    /// The size the set was created with ([`crate::Set::size`]): the most
    /// elements it takes.
    pub size: Option<u32>,
}

/// A rule as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// Chain of the rule.
    pub chain: String,
    /// Kernel handle (for [`crate::Transaction::delete_rule`]).
    pub handle: u64,
    /// Expression names in order (`payload`, `cmp`, `lookup`, ...).
    pub exprs: Vec<String>,
    /// The expressions decoded back into the model; `None` when the rule
    /// uses an expression weft does not model (a rule written by `nft`).
    /// A rule weft applied reads back equal to its [`crate::Rule::exprs`].
    pub decoded: Option<Vec<Expr>>,
    /// The rule comment, if any.
    pub comment: Option<String>,
}

pub(crate) fn parse_table(family: u8, attrs: Attrs<'_>) -> Option<TableInfo> {
    let mut name = None;
    let mut info = TableInfo {
        table: TableRef::new(Family::from_nfproto(family)?, ""),
        handle: 0,
        flags: 0,
        chains: 0,
    };
    for attr in attrs {
        match attr.ty {
            sys::NFTA_TABLE_NAME => name = Some(attr.string()),
            sys::NFTA_TABLE_HANDLE => info.handle = attr.be64().unwrap_or(0),
            sys::NFTA_TABLE_FLAGS => info.flags = attr.be32().unwrap_or(0),
            sys::NFTA_TABLE_USE => info.chains = attr.be32().unwrap_or(0),
            _ => {}
        }
    }
    info.table.name = name?;
    Some(info)
}

/// Returns the chain's table name and the chain.
pub(crate) fn parse_chain(attrs: Attrs<'_>) -> Option<(String, ChainInfo)> {
    let mut table = None;
    let mut name = None;
    let mut hook = None;
    let mut priority = 0i32;
    let mut policy = Policy::Accept;
    let mut kind = ChainType::Filter;
    let mut info = ChainInfo {
        name: String::new(),
        handle: 0,
        base: None,
        uses: 0,
    };
    for attr in attrs {
        match attr.ty {
            sys::NFTA_CHAIN_TABLE => table = Some(attr.string()),
            sys::NFTA_CHAIN_NAME => name = Some(attr.string()),
            sys::NFTA_CHAIN_HANDLE => info.handle = attr.be64().unwrap_or(0),
            sys::NFTA_CHAIN_USE => info.uses = attr.be32().unwrap_or(0),
            sys::NFTA_CHAIN_POLICY if attr.be32() == Some(sys::NF_DROP as u32) => {
                policy = Policy::Drop;
            }
            sys::NFTA_CHAIN_TYPE => kind = ChainType::parse(&attr.string()).unwrap_or(kind),
            sys::NFTA_CHAIN_HOOK => {
                for h in attr.nested() {
                    match h.ty {
                        sys::NFTA_HOOK_HOOKNUM => hook = h.be32().and_then(Hook::from_number),
                        sys::NFTA_HOOK_PRIORITY => priority = h.be32().unwrap_or(0) as i32,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    info.name = name?;
    info.base = hook.map(|hook| BaseChain {
        kind,
        hook,
        priority,
        policy,
    });
    Some((table?, info))
}

/// Returns the set's table name and the set.
pub(crate) fn parse_set(attrs: Attrs<'_>) -> Option<(String, SetInfo)> {
    let mut table = None;
    let mut name = None;
    let mut key_type = 0;
    let mut data_type = None;
    let mut info = SetInfo {
        name: String::new(),
        handle: 0,
        flags: 0,
        key: None,
        key_len: 0,
        data: None,
        timeout: None,
        size: None,
    };
    for attr in attrs {
        match attr.ty {
            sys::NFTA_SET_TABLE => table = Some(attr.string()),
            sys::NFTA_SET_NAME => name = Some(attr.string()),
            sys::NFTA_SET_HANDLE => info.handle = attr.be64().unwrap_or(0),
            sys::NFTA_SET_FLAGS => info.flags = attr.be32().unwrap_or(0),
            sys::NFTA_SET_KEY_TYPE => key_type = attr.be32().unwrap_or(0),
            sys::NFTA_SET_KEY_LEN => info.key_len = attr.be32().unwrap_or(0),
            sys::NFTA_SET_DESC => {
                info.size = attr
                    .nested()
                    .find(|field| field.ty == sys::NFTA_SET_DESC_SIZE)
                    .and_then(|field| field.be32());
            }
            sys::NFTA_SET_DATA_TYPE => data_type = attr.be32(),
            sys::NFTA_SET_TIMEOUT => info.timeout = attr.be64().map(Duration::from_millis),
            _ => {}
        }
    }
    info.name = name?;
    info.key = split_concat_type(key_type).filter(|fields| !fields.is_empty());
    if info.flags & sys::NFT_SET_MAP != 0 {
        info.data = match data_type {
            Some(sys::NFT_DATA_VERDICT) => Some(MapData::Verdict),
            Some(ty) => split_concat_type(ty).map(MapData::Value),
            None => None,
        };
    }
    Some((table?, info))
}

pub(crate) fn parse_rule(family: Family, attrs: Attrs<'_>) -> Option<RuleInfo> {
    let mut info = RuleInfo {
        chain: String::new(),
        handle: 0,
        exprs: Vec::new(),
        decoded: Some(Vec::new()),
        comment: None,
    };
    for attr in attrs {
        match attr.ty {
            sys::NFTA_RULE_CHAIN => info.chain = attr.string(),
            sys::NFTA_RULE_HANDLE => info.handle = attr.be64().unwrap_or(0),
            sys::NFTA_RULE_EXPRESSIONS => {
                for expr in attr.nested() {
                    if let Some(name) = expr.nested().find(|a| a.ty == sys::NFTA_EXPR_NAME) {
                        info.exprs.push(name.string());
                    }
                    let decoded = exprs::decode_expr(expr, family);
                    info.decoded = info.decoded.take().zip(decoded).map(|(mut all, one)| {
                        all.push(one);
                        all
                    });
                }
            }
            sys::NFTA_RULE_USERDATA => info.comment = parse_comment(attr.payload),
            _ => {}
        }
    }
    Some(info)
}

fn parse_comment(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while let [ty, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let value = tail.get(..len)?;
        if *ty == sys::NFTNL_UDATA_RULE_COMMENT {
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return Some(String::from_utf8_lossy(&value[..end]).into_owned());
        }
        rest = &tail[len..];
    }
    None
}

/// One kernel element: for interval sets, a range start or a range end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelElement {
    pub(crate) element: Element,
    /// Flagged `NFT_SET_ELEM_INTERVAL_END`: the exclusive end of a range.
    pub(crate) interval_end: bool,
}

/// Decodes the elements of one `NEWSETELEM` message (or dump reply) of a
/// set with the given layout. Elements that do not decode are skipped and
/// counted in the second return value.
pub(crate) fn parse_elements(
    attrs: Attrs<'_>,
    key: &[KeyType],
    data: Option<&MapData>,
) -> (Vec<KernelElement>, usize) {
    let mut elements = Vec::new();
    let mut bad = 0;
    for attr in attrs {
        if attr.ty != sys::NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for elem in attr.nested() {
            match parse_element(elem, key, data) {
                Some(element) => elements.push(element),
                None => bad += 1,
            }
        }
    }
    (elements, bad)
}

/// Turns kernel elements into model elements: for an interval set, each
/// range start is paired with the end element that follows it in key order
/// (a start with none reaches the maximum value).
pub(crate) fn assemble(mut raw: Vec<KernelElement>, interval: bool) -> Vec<Element> {
    if !interval {
        return raw.into_iter().map(|k| k.element).collect();
    }
    // At equal keys the end of one range sorts before the start of the next.
    raw.sort_by(|a, b| (&a.element.key, !a.interval_end).cmp(&(&b.element.key, !b.interval_end)));
    let mut out = Vec::new();
    for (i, k) in raw.iter().enumerate() {
        if k.interval_end {
            continue;
        }
        let Some(start) = k.element.key.first() else {
            continue;
        };
        let end = match raw.get(i + 1) {
            Some(next) if next.interval_end => next
                .element
                .key
                .first()
                .and_then(Value::predecessor)
                .unwrap_or(*start),
            _ => start.max_of(),
        };
        let mut element = k.element.clone();
        element.key_end = Some(Box::new(Values::from([end])));
        out.push(element);
    }
    out
}

fn parse_element(elem: Attr<'_>, key: &[KeyType], data: Option<&MapData>) -> Option<KernelElement> {
    let mut element = Element::key(Vec::new());
    let mut interval_end = false;
    for attr in elem.nested() {
        match attr.ty {
            sys::NFTA_SET_ELEM_KEY => {
                let value = attr.nested().find(|a| a.ty == sys::NFTA_DATA_VALUE)?;
                element.key = Value::read_concat(key, value.payload)?;
            }
            sys::NFTA_SET_ELEM_DATA => {
                element.data = Some(match data? {
                    MapData::Verdict => ElementData::Verdict(parse_verdict(attr)?),
                    MapData::Value(fields) => {
                        let value = attr.nested().find(|a| a.ty == sys::NFTA_DATA_VALUE)?;
                        ElementData::Value(Value::read_concat(fields, value.payload)?)
                    }
                });
            }
            sys::NFTA_SET_ELEM_TIMEOUT => {
                element.timeout = attr.be64().map(Duration::from_millis);
            }
            sys::NFTA_SET_ELEM_FLAGS => {
                interval_end = attr.be32().unwrap_or(0) & sys::NFT_SET_ELEM_INTERVAL_END != 0;
            }
            _ => {}
        }
    }
    if element.key.is_empty() {
        return None;
    }
    Some(KernelElement {
        element,
        interval_end,
    })
}

/// Decodes an attribute whose nest holds `NFTA_DATA_VERDICT`.
pub(crate) fn parse_verdict(data: Attr<'_>) -> Option<Verdict> {
    let verdict = data.nested().find(|a| a.ty == sys::NFTA_DATA_VERDICT)?;
    let mut code = None;
    let mut chain = None;
    for attr in verdict.nested() {
        match attr.ty {
            sys::NFTA_VERDICT_CODE => code = attr.be32().map(|c| c as i32),
            sys::NFTA_VERDICT_CHAIN => chain = Some(attr.string()),
            _ => {}
        }
    }
    Some(match code? {
        sys::NF_ACCEPT => Verdict::Accept,
        sys::NF_DROP => Verdict::Drop,
        sys::NFT_CONTINUE => Verdict::Continue,
        sys::NFT_RETURN => Verdict::Return,
        sys::NFT_JUMP => Verdict::Jump(chain?),
        sys::NFT_GOTO => Verdict::Goto(chain?),
        _ => return None,
    })
}

mod exprs;
