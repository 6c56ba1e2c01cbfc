//! Address ranges as the reference host-local understands them: a subnet
//! with an inclusive `rangeStart`..`rangeEnd` and a gateway (defaults: the
//! subnet's first host address as gateway and start, its last address as end,
//! minus the broadcast for IPv4), range sets (ranges of one family, tried in
//! order), and the round-robin iteration order the reference allocator uses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// One range of allocatable addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet (host bits cleared); results carry its prefix length.
    pub subnet: IpNet,
    /// First allocatable address (inclusive).
    pub start: IpAddr,
    /// Last allocatable address (inclusive).
    pub end: IpAddr,
    /// The subnet's gateway, never allocated.
    pub gateway: IpAddr,
}

/// Why a range is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// /31, /32, /127, /128: no room for a gateway and an address.
    #[error("network {0} too small to allocate from")]
    TooSmall(IpNet),
    /// `rangeStart`, `rangeEnd` or `gateway` outside the subnet or of the
    /// other family.
    #[error("{what} {addr} not in network {subnet}")]
    Outside {
        /// Which key.
        what: &'static str,
        /// Its value.
        addr: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },
    /// `rangeStart` after `rangeEnd`.
    #[error("range start {start} is after range end {end}")]
    Reversed {
        /// Start.
        start: IpAddr,
        /// End.
        end: IpAddr,
    },
    /// A range set mixes IPv4 and IPv6.
    #[error("range set mixes IPv4 and IPv6 ranges")]
    MixedFamilies,
    /// Two ranges share addresses.
    #[error("ranges {0} and {1} overlap")]
    Overlap(String, String),
    /// A range set without ranges.
    #[error("empty range set")]
    Empty,
}

impl Range {
    /// Builds a range, filling the defaults the reference fills.
    pub fn new(
        subnet: IpNet,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Range, RangeError> {
        let subnet = subnet.trunc();
        if subnet.prefix_len() + 2 > subnet.max_prefix_len() {
            return Err(RangeError::TooSmall(subnet));
        }
        let inside = |what: &'static str, addr: IpAddr| {
            if subnet.contains(&addr) {
                Ok(addr)
            } else {
                Err(RangeError::Outside { what, addr, subnet })
            }
        };
        let first_host = next_ip(subnet.network());
        let gateway = match gateway {
            Some(addr) => inside("gateway", addr)?,
            None => first_host,
        };
        let start = match start {
            Some(addr) => inside("rangeStart", addr)?,
            None => first_host,
        };
        let end = match end {
            Some(addr) => inside("rangeEnd", addr)?,
            None => last_ip(subnet),
        };
        if to_u128(start) > to_u128(end) {
            return Err(RangeError::Reversed { start, end });
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    /// Whether `addr` is between start and end (inclusive).
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.start.is_ipv4()
            && to_u128(addr) >= to_u128(self.start)
            && to_u128(addr) <= to_u128(self.end)
    }

    /// Whether `addr` may be handed out: in the range and not the gateway,
    /// the subnet's network address or (IPv4) its broadcast address.
    pub fn allocatable(&self, addr: IpAddr) -> bool {
        self.contains(addr)
            && addr != self.gateway
            && addr != self.subnet.network()
            && !(addr.is_ipv4() && addr == self.subnet.broadcast())
    }

    /// How many addresses [`Range::allocatable`] accepts.
    pub fn capacity(&self) -> u128 {
        let span = to_u128(self.end) - to_u128(self.start) + 1;
        let mut excluded = [self.gateway, self.subnet.network()]
            .into_iter()
            .filter(|addr| self.contains(*addr))
            .collect::<Vec<_>>();
        if self.start.is_ipv4() && self.contains(self.subnet.broadcast()) {
            excluded.push(self.subnet.broadcast());
        }
        excluded.sort();
        excluded.dedup();
        span.saturating_sub(excluded.len() as u128)
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Ranges of one family; one address is allocated per set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    /// A set of non-overlapping ranges of one family.
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, RangeError> {
        let first = ranges.first().ok_or(RangeError::Empty)?;
        if ranges
            .iter()
            .any(|range| range.start.is_ipv4() != first.start.is_ipv4())
        {
            return Err(RangeError::MixedFamilies);
        }
        check_disjoint(&ranges)?;
        Ok(RangeSet(ranges))
    }

    /// The range holding `addr`.
    pub fn range_for(&self, addr: IpAddr) -> Option<&Range> {
        self.0.iter().find(|range| range.contains(addr))
    }

    /// The iteration order of the reference allocator: starting after
    /// `last_reserved` when it lies in the set (otherwise at the first
    /// range's start), walking each range to its end, then the next range,
    /// wrapping around, and stopping before coming back to where it
    /// started. Addresses that are not allocatable are skipped.
    pub fn candidates(&self, last_reserved: Option<IpAddr>) -> Candidates<'_> {
        let resume = last_reserved.and_then(|addr| {
            self.0
                .iter()
                .position(|range| range.contains(addr))
                .map(|index| (index, addr))
        });
        Candidates {
            set: self,
            range_index: resume.map_or(0, |(index, _)| index),
            current: resume.map(|(_, addr)| addr),
            first: None,
            done: false,
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(Range::to_string).collect();
        f.write_str(&names.join(","))
    }
}

/// Error when any two ranges (of any sets) overlap.
pub fn check_disjoint(ranges: &[Range]) -> Result<(), RangeError> {
    for (index, range) in ranges.iter().enumerate() {
        if let Some(other) = ranges[index + 1..]
            .iter()
            .find(|other| range.overlaps(other))
        {
            return Err(RangeError::Overlap(range.to_string(), other.to_string()));
        }
    }
    Ok(())
}

/// Iterator over allocation candidates; see [`RangeSet::candidates`].
pub struct Candidates<'a> {
    /// The set walked.
    set: &'a RangeSet,
    /// Range of `current`.
    range_index: usize,
    /// Last address produced (or the resume point).
    current: Option<IpAddr>,
    /// First address visited: coming back to it ends the walk.
    first: Option<IpAddr>,
    /// Whether the walk has wrapped around.
    done: bool,
}

impl<'a> Iterator for Candidates<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let range = self.set.0.get(self.range_index)?;
            let next = match self.current {
                None => range.start,
                Some(addr) if addr == range.end => {
                    self.range_index = (self.range_index + 1) % self.set.0.len();
                    self.set.0.get(self.range_index)?.start
                }
                Some(addr) => next_ip(addr),
            };
            self.current = Some(next);
            match self.first {
                None => self.first = Some(next),
                Some(first) if first == next => {
                    self.done = true;
                    return None;
                }
                Some(_) => {}
            }
            let range = self.set.0.get(self.range_index)?;
            if range.allocatable(next) {
                return Some((next, range));
            }
        }
        None
    }
}

/// The address as a number (IPv4 in the low 32 bits).
pub fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The next address of the same family (wrapping at the top).
pub fn next_ip(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(1))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_add(1))),
    }
}

/// The subnet's last address, minus one for IPv4 (the broadcast).
fn last_ip(subnet: IpNet) -> IpAddr {
    match subnet.broadcast() {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_sub(1))),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests;
