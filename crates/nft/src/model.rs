//! The typed ruleset model: tables, chains, sets and maps, their elements and
//! values, and verdicts. These are plain data with no I/O; a
//! [`crate::Transaction`] strings them together and `encode` turns them into
//! netlink bytes. Rules and their expressions live in [`crate::expr`].
//!
//! Only tables whose name starts with [`OWNED_TABLE_PREFIX`] can be
//! addressed by a transaction: weft never writes to tables it does not own.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::sys;

/// Every table weft writes to starts with this (`weft`, `weft-portmap`, ...).
pub const OWNED_TABLE_PREFIX: &str = "weft";

/// An nftables address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `ip`: IPv4 only.
    Ip,
    /// `ip6`: IPv6 only.
    Ip6,
    /// `inet`: both, one table.
    Inet,
    /// `bridge`: Ethernet frames crossing a Linux bridge (its hooks see
    /// bridged traffic before the IP stack does).
    Bridge,
}

impl Family {
    pub(crate) fn nfproto(self) -> u8 {
        match self {
            Family::Ip => sys::NFPROTO_IPV4,
            Family::Ip6 => sys::NFPROTO_IPV6,
            Family::Inet => sys::NFPROTO_INET,
            Family::Bridge => sys::NFPROTO_BRIDGE,
        }
    }

    pub(crate) fn from_nfproto(value: u8) -> Option<Family> {
        match value {
            sys::NFPROTO_IPV4 => Some(Family::Ip),
            sys::NFPROTO_IPV6 => Some(Family::Ip6),
            sys::NFPROTO_INET => Some(Family::Inet),
            sys::NFPROTO_BRIDGE => Some(Family::Bridge),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
            Family::Bridge => "bridge",
        })
    }
}

/// Names a table: `ip weft`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    /// Address family of the table.
    pub family: Family,
    /// Table name; must start with [`OWNED_TABLE_PREFIX`] to be written.
    pub name: String,
}

impl TableRef {
    /// A table reference.
    pub fn new(family: Family, name: impl Into<String>) -> TableRef {
        TableRef {
            family,
            name: name.into(),
        }
    }

    /// Whether weft may write to this table.
    pub fn is_owned(&self) -> bool {
        self.name.starts_with(OWNED_TABLE_PREFIX)
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table {} {}", self.family, self.name)
    }
}

/// A chain: a regular chain (a jump target) or a base chain attached to a
/// netfilter hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Chain name, unique in its table.
    pub name: String,
    /// Hook attachment; `None` for a regular chain.
    pub base: Option<BaseChain>,
}

impl Chain {
    /// A regular chain, reachable only by `jump`/`goto`.
    pub fn regular(name: impl Into<String>) -> Chain {
        Chain {
            name: name.into(),
            base: None,
        }
    }

    /// A base chain on `hook` with the given type and priority, policy accept.
    pub fn base(name: impl Into<String>, kind: ChainType, hook: Hook, priority: i32) -> Chain {
        Chain {
            name: name.into(),
            base: Some(BaseChain {
                kind,
                hook,
                priority,
                policy: Policy::Accept,
            }),
        }
    }
}

/// How a base chain hangs off a netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// `filter`, `nat` or `route`.
    pub kind: ChainType,
    /// The netfilter hook.
    pub hook: Hook,
    /// Priority; lower runs first (`dstnat` is -100, `srcnat` 100, `filter` 0).
    pub priority: i32,
    /// What happens to packets that fall off the end of the chain.
    pub policy: Policy,
}

/// Base chain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    /// Filtering (accept/drop/reject).
    Filter,
    /// NAT: sees the first packet of each connection only.
    Nat,
    /// Rerouting after mark changes (output hook).
    Route,
}

impl ChainType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }

    pub(crate) fn parse(value: &str) -> Option<ChainType> {
        match value {
            "filter" => Some(ChainType::Filter),
            "nat" => Some(ChainType::Nat),
            "route" => Some(ChainType::Route),
            _ => None,
        }
    }
}

/// Netfilter hooks of the ip/ip6/inet families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Before routing, for packets arriving on an interface.
    Prerouting,
    /// Packets for a local socket.
    Input,
    /// Packets routed through the host.
    Forward,
    /// Locally generated packets.
    Output,
    /// All packets leaving, after routing.
    Postrouting,
}

impl Hook {
    pub(crate) fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }

    pub(crate) fn from_number(value: u32) -> Option<Hook> {
        Some(match value {
            0 => Hook::Prerouting,
            1 => Hook::Input,
            2 => Hook::Forward,
            3 => Hook::Output,
            4 => Hook::Postrouting,
            _ => return None,
        })
    }
}

/// Base chain policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Accept packets no rule decided on.
    Accept,
    /// Drop packets no rule decided on.
    Drop,
}

/// The type of one field of a set key or map value. Concatenated keys are a
/// list of these; each field occupies a whole number of 32-bit registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `ipv4_addr`, 4 bytes, network order.
    Ipv4Addr,
    /// `ipv6_addr`, 16 bytes, network order.
    Ipv6Addr,
    /// `inet_proto`, 1 byte (6 = TCP, 17 = UDP, 132 = SCTP).
    InetProto,
    /// `inet_service`, a port: 2 bytes, network order.
    InetService,
    /// `mark`, 4 bytes, host order.
    Mark,
    /// `integer`, 4 bytes, host order (for example a `numgen` result).
    Integer,
}

impl KeyType {
    /// nft's datatype number (`enum datatypes` in nftables' datatype.h).
    pub(crate) fn nft_type(self) -> u32 {
        match self {
            KeyType::Integer => 4,
            KeyType::Ipv4Addr => 7,
            KeyType::Ipv6Addr => 8,
            KeyType::InetProto => 12,
            KeyType::InetService => 13,
            KeyType::Mark => 19,
        }
    }

    pub(crate) fn from_nft_type(value: u32) -> Option<KeyType> {
        Some(match value {
            4 => KeyType::Integer,
            7 => KeyType::Ipv4Addr,
            8 => KeyType::Ipv6Addr,
            12 => KeyType::InetProto,
            13 => KeyType::InetService,
            19 => KeyType::Mark,
            _ => return None,
        })
    }

    /// Bytes of the value itself.
    pub fn byte_len(self) -> usize {
        match self {
            KeyType::Ipv4Addr | KeyType::Mark | KeyType::Integer => 4,
            KeyType::Ipv6Addr => 16,
            KeyType::InetProto => 1,
            KeyType::InetService => 2,
        }
    }

    /// Bytes the value takes inside a (concatenated) register area.
    pub fn register_len(self) -> usize {
        crate::wire::align(self.byte_len())
    }

    pub(crate) fn big_endian(self) -> bool {
        !matches!(self, KeyType::Mark | KeyType::Integer)
    }
}

/// Bits per datatype in a concatenated type number (nft's `TYPE_BITS`).
const CONCAT_TYPE_BITS: u32 = 6;

/// The kernel-side type number of a (possibly concatenated) key.
pub(crate) fn concat_type(fields: &[KeyType]) -> u32 {
    fields
        .iter()
        .fold(0, |acc, field| (acc << CONCAT_TYPE_BITS) | field.nft_type())
}

/// Splits a concatenated type number back into fields.
pub(crate) fn split_concat_type(mut value: u32) -> Option<Vec<KeyType>> {
    let mut fields = Vec::new();
    while value != 0 {
        fields.push(KeyType::from_nft_type(
            value & ((1 << CONCAT_TYPE_BITS) - 1),
        )?);
        value >>= CONCAT_TYPE_BITS;
    }
    fields.reverse();
    Some(fields)
}

/// Total register bytes of a concatenation.
pub(crate) fn concat_len(fields: &[KeyType]) -> usize {
    fields.iter().map(|f| f.register_len()).sum()
}

/// What a map maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapData {
    /// A verdict map (`vmap`): elements carry accept/drop/jump/goto.
    Verdict,
    /// A data map: elements carry values of these types (for example
    /// `ipv4_addr . inet_service` for DNAT targets).
    Value(Vec<KeyType>),
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Name, unique in its table.
    pub name: String,
    /// Key fields; more than one makes a concatenated key.
    pub key: Vec<KeyType>,
    /// `None` for a set, `Some` for a map.
    pub data: Option<MapData>,
    /// Default element timeout; also enables per-element timeouts.
    pub timeout: Option<Duration>,
    /// Whether rules add or update elements from the packet path
    /// (`update @set { ip saddr }`, the `dynset` expression).
    pub dynamic: bool,
    /// Size of the set (`size` in nft): the kernel then picks a hash table
    /// of that size, allocated at once, instead of one that grows while
    /// elements go in (much cheaper for large loads). It is also the most
    /// elements the set takes: an element beyond it fails the transaction
    /// (`ENFILE`), and a set's size cannot change, so a full set has to be
    /// replaced by a larger one.
    pub size: Option<u32>,
    /// Elements are ranges (`flags interval`): CIDR prefixes, port ranges.
    /// Only single-field keys of network byte order types.
    pub interval: bool,
}

impl Set {
    /// A set with the given key fields.
    pub fn new(name: impl Into<String>, key: Vec<KeyType>) -> Set {
        Set {
            name: name.into(),
            key,
            data: None,
            timeout: None,
            dynamic: false,
            size: None,
            interval: false,
        }
    }

    /// A verdict map (`vmap`) with the given key fields.
    pub fn verdict_map(name: impl Into<String>, key: Vec<KeyType>) -> Set {
        Set {
            data: Some(MapData::Verdict),
            ..Set::new(name, key)
        }
    }

    /// A data map from `key` to `value` fields.
    pub fn map(name: impl Into<String>, key: Vec<KeyType>, value: Vec<KeyType>) -> Set {
        Set {
            data: Some(MapData::Value(value)),
            ..Set::new(name, key)
        }
    }

    /// Sets the default element timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Set {
        self.timeout = Some(timeout);
        self
    }

    /// Makes the set an interval set (see [`Set::interval`]).
    pub fn with_intervals(mut self) -> Set {
        self.interval = true;
        self
    }

    /// Sets the size (see [`Set::size`]).
    pub fn with_size(mut self, size: u32) -> Set {
        self.size = Some(size);
        self
    }

    /// Marks the set as updated from the packet path.
    pub fn dynamic(mut self) -> Set {
        self.dynamic = true;
        self
    }
}

/// One field value of a key or map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address.
    Ipv6(Ipv6Addr),
    /// An IP protocol number.
    Proto(u8),
    /// A port.
    Port(u16),
    /// A packet or connection mark.
    Mark(u32),
    /// A 32-bit integer (host order).
    Integer(u32),
}

impl Value {
    /// TCP as an [`Value::Proto`].
    pub const TCP: Value = Value::Proto(6);
    /// UDP as an [`Value::Proto`].
    pub const UDP: Value = Value::Proto(17);
    /// SCTP as an [`Value::Proto`].
    pub const SCTP: Value = Value::Proto(132);

    /// The type this value has.
    pub fn key_type(&self) -> KeyType {
        match self {
            Value::Ipv4(_) => KeyType::Ipv4Addr,
            Value::Ipv6(_) => KeyType::Ipv6Addr,
            Value::Proto(_) => KeyType::InetProto,
            Value::Port(_) => KeyType::InetService,
            Value::Mark(_) => KeyType::Mark,
            Value::Integer(_) => KeyType::Integer,
        }
    }

    /// The next value of the same type (`None` past the maximum); the
    /// exclusive end of an interval element.
    pub(crate) fn successor(&self) -> Option<Value> {
        Some(match self {
            Value::Ipv4(a) => Value::Ipv4(Ipv4Addr::from(u32::from(*a).checked_add(1)?)),
            Value::Ipv6(a) => Value::Ipv6(Ipv6Addr::from(u128::from(*a).checked_add(1)?)),
            Value::Proto(p) => Value::Proto(p.checked_add(1)?),
            Value::Port(p) => Value::Port(p.checked_add(1)?),
            Value::Mark(v) => Value::Mark(v.checked_add(1)?),
            Value::Integer(v) => Value::Integer(v.checked_add(1)?),
        })
    }

    /// The previous value of the same type (`None` below zero).
    pub(crate) fn predecessor(&self) -> Option<Value> {
        Some(match self {
            Value::Ipv4(a) => Value::Ipv4(Ipv4Addr::from(u32::from(*a).checked_sub(1)?)),
            Value::Ipv6(a) => Value::Ipv6(Ipv6Addr::from(u128::from(*a).checked_sub(1)?)),
            Value::Proto(p) => Value::Proto(p.checked_sub(1)?),
            Value::Port(p) => Value::Port(p.checked_sub(1)?),
            Value::Mark(v) => Value::Mark(v.checked_sub(1)?),
            Value::Integer(v) => Value::Integer(v.checked_sub(1)?),
        })
    }

    /// The largest value of this value's type.
    pub(crate) fn max_of(&self) -> Value {
        match self {
            Value::Ipv4(_) => Value::Ipv4(Ipv4Addr::BROADCAST),
            Value::Ipv6(_) => Value::Ipv6(Ipv6Addr::from(u128::MAX)),
            Value::Proto(_) => Value::Proto(u8::MAX),
            Value::Port(_) => Value::Port(u16::MAX),
            Value::Mark(_) => Value::Mark(u32::MAX),
            Value::Integer(_) => Value::Integer(u32::MAX),
        }
    }

    /// Appends the value, zero-padded to its register width.
    pub(crate) fn write_padded(&self, out: &mut Vec<u8>) {
        match self {
            Value::Ipv4(addr) => out.extend_from_slice(&addr.octets()),
            Value::Ipv6(addr) => out.extend_from_slice(&addr.octets()),
            Value::Proto(proto) => out.extend_from_slice(&[*proto, 0, 0, 0]),
            Value::Port(port) => {
                out.extend_from_slice(&port.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Value::Mark(v) | Value::Integer(v) => out.extend_from_slice(&v.to_ne_bytes()),
        }
    }

    /// Reads a value of type `ty` from the start of `data`.
    pub(crate) fn read(ty: KeyType, data: &[u8]) -> Option<Value> {
        let bytes = data.get(..ty.byte_len())?;
        Some(match ty {
            KeyType::Ipv4Addr => Value::Ipv4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
            KeyType::Ipv6Addr => Value::Ipv6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
            KeyType::InetProto => Value::Proto(bytes[0]),
            KeyType::InetService => Value::Port(u16::from_be_bytes(bytes.try_into().ok()?)),
            KeyType::Mark => Value::Mark(u32::from_ne_bytes(bytes.try_into().ok()?)),
            KeyType::Integer => Value::Integer(u32::from_ne_bytes(bytes.try_into().ok()?)),
        })
    }

    /// Reads a concatenation of `types` from `data`.
    pub(crate) fn read_concat(types: &[KeyType], data: &[u8]) -> Option<Values> {
        let mut offset = 0;
        let mut values = Values::new();
        for ty in types {
            values.push(Value::read(*ty, data.get(offset..)?)?);
            offset += ty.register_len();
        }
        Some(values)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Ipv4(addr) => write!(f, "{addr}"),
            Value::Ipv6(addr) => write!(f, "{addr}"),
            Value::Proto(6) => f.write_str("tcp"),
            Value::Proto(17) => f.write_str("udp"),
            Value::Proto(132) => f.write_str("sctp"),
            Value::Proto(p) => write!(f, "{p}"),
            Value::Port(port) => write!(f, "{port}"),
            Value::Mark(mark) => write!(f, "{mark:#x}"),
            Value::Integer(v) => write!(f, "{v}"),
        }
    }
}

/// Fields kept inline by [`Values`].
const INLINE_VALUES: usize = 4;

/// The values of a key, a map value or a range end, one per field. Up to
/// four fields are kept inline, without an allocation (a Service table has
/// hundreds of thousands of elements, each copied a few times on their way
/// to the kernel); longer concatenations go to the heap. Compares, hashes
/// and prints as the slice of its values.
#[derive(Clone)]
pub struct Values(ValuesRepr);

#[derive(Clone)]
enum ValuesRepr {
    Inline {
        len: u8,
        items: [Value; INLINE_VALUES],
    },
    Heap(Vec<Value>),
}

impl Values {
    /// No values.
    pub const fn new() -> Values {
        Values(ValuesRepr::Inline {
            len: 0,
            items: [Value::Integer(0); INLINE_VALUES],
        })
    }

    /// The values of `values`.
    pub fn from_slice(values: &[Value]) -> Values {
        if values.len() <= INLINE_VALUES {
            let mut items = [Value::Integer(0); INLINE_VALUES];
            items[..values.len()].copy_from_slice(values);
            Values(ValuesRepr::Inline {
                len: values.len() as u8,
                items,
            })
        } else {
            Values(ValuesRepr::Heap(values.to_vec()))
        }
    }

    /// Appends a value.
    pub fn push(&mut self, value: Value) {
        match &mut self.0 {
            ValuesRepr::Inline { len, items } => {
                let used = usize::from(*len);
                if used < INLINE_VALUES {
                    items[used] = value;
                    *len += 1;
                } else {
                    let mut heap = items.to_vec();
                    heap.push(value);
                    self.0 = ValuesRepr::Heap(heap);
                }
            }
            ValuesRepr::Heap(heap) => heap.push(value),
        }
    }

    /// The values as a slice.
    pub fn as_slice(&self) -> &[Value] {
        match &self.0 {
            ValuesRepr::Inline { len, items } => &items[..usize::from(*len)],
            ValuesRepr::Heap(heap) => heap,
        }
    }
}

impl Default for Values {
    fn default() -> Values {
        Values::new()
    }
}

impl std::ops::Deref for Values {
    type Target = [Value];

    fn deref(&self) -> &[Value] {
        self.as_slice()
    }
}

impl PartialEq for Values {
    fn eq(&self, other: &Values) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Values {}

impl PartialEq<[Value]> for Values {
    fn eq(&self, other: &[Value]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<&[Value]> for Values {
    fn eq(&self, other: &&[Value]) -> bool {
        self.as_slice() == *other
    }
}

impl<const N: usize> PartialEq<[Value; N]> for Values {
    fn eq(&self, other: &[Value; N]) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl std::borrow::Borrow<[Value]> for Values {
    fn borrow(&self) -> &[Value] {
        self.as_slice()
    }
}

impl PartialEq<Vec<Value>> for Values {
    fn eq(&self, other: &Vec<Value>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl std::hash::Hash for Values {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialOrd for Values {
    fn partial_cmp(&self, other: &Values) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Values {
    fn cmp(&self, other: &Values) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl fmt::Debug for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl From<Vec<Value>> for Values {
    fn from(values: Vec<Value>) -> Values {
        if values.len() <= INLINE_VALUES {
            Values::from_slice(&values)
        } else {
            Values(ValuesRepr::Heap(values))
        }
    }
}

impl From<&[Value]> for Values {
    fn from(values: &[Value]) -> Values {
        Values::from_slice(values)
    }
}

impl<const N: usize> From<[Value; N]> for Values {
    fn from(values: [Value; N]) -> Values {
        Values::from_slice(&values)
    }
}

impl FromIterator<Value> for Values {
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> Values {
        let mut values = Values::new();
        for value in iter {
            values.push(value);
        }
        values
    }
}

impl<'a> IntoIterator for &'a Values {
    type Item = &'a Value;
    type IntoIter = std::slice::Iter<'a, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

/// A verdict: the end of a rule's evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Accept the packet (in this base chain).
    Accept,
    /// Drop the packet.
    Drop,
    /// Go on with the next rule.
    Continue,
    /// Return to the calling chain.
    Return,
    /// Evaluate the named chain, then come back.
    Jump(String),
    /// Evaluate the named chain and do not come back.
    Goto(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
            Verdict::Goto(chain) => write!(f, "goto {chain}"),
        }
    }
}

/// What a map element maps its key to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ElementData {
    /// For verdict maps.
    Verdict(Verdict),
    /// For data maps: one value per value field.
    Value(Values),
}

/// One set or map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Element {
    /// One value per key field.
    pub key: Values,
    /// `None` in a set, `Some` in a map.
    pub data: Option<ElementData>,
    /// Per-element timeout (the set needs a timeout or `timeout` flag).
    pub timeout: Option<Duration>,
    /// Inclusive end of a range, for [`Set::interval`] sets (where every
    /// element is a range; a single value is the range `v..=v`). Boxed:
    /// most sets have no ranges, and every element carries the field.
    pub key_end: Option<Box<Values>>,
}

impl Element {
    /// A set element.
    pub fn key(key: impl Into<Values>) -> Element {
        Element {
            key: key.into(),
            data: None,
            timeout: None,
            key_end: None,
        }
    }

    /// A range element `start..=end` of an interval set.
    pub fn range(start: Value, end: Value) -> Element {
        Element {
            key_end: Some(Box::new(Values::from([end]))),
            ..Element::key([start])
        }
    }

    /// The range covered by an IP prefix, for an interval set of addresses.
    pub fn prefix(net: ipnet::IpNet) -> Element {
        match net {
            ipnet::IpNet::V4(net) => {
                Element::range(Value::Ipv4(net.network()), Value::Ipv4(net.broadcast()))
            }
            ipnet::IpNet::V6(net) => {
                Element::range(Value::Ipv6(net.network()), Value::Ipv6(net.broadcast()))
            }
        }
    }

    /// Sets the data of a map element (builder style).
    pub fn with_data(mut self, data: ElementData) -> Element {
        self.data = Some(data);
        self
    }

    /// A verdict map element.
    pub fn verdict(key: impl Into<Values>, verdict: Verdict) -> Element {
        Element {
            data: Some(ElementData::Verdict(verdict)),
            ..Element::key(key)
        }
    }

    /// A data map element.
    pub fn value(key: impl Into<Values>, value: impl Into<Values>) -> Element {
        Element {
            data: Some(ElementData::Value(value.into())),
            ..Element::key(key)
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_concat(f, &self.key)?;
        if let Some(end) = &self.key_end {
            f.write_str("-")?;
            write_concat(f, end)?;
        }
        match &self.data {
            None => {}
            Some(ElementData::Verdict(verdict)) => write!(f, " : {verdict}")?,
            Some(ElementData::Value(values)) => {
                f.write_str(" : ")?;
                write_concat(f, values)?;
            }
        }
        Ok(())
    }
}

fn write_concat(f: &mut fmt::Formatter<'_>, values: &[Value]) -> fmt::Result {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(" . ")?;
        }
        write!(f, "{value}")?;
    }
    Ok(())
}
