//! Picking an address from a range set and recording it in the [`Store`],
//! in the reference allocator's round-robin order (so a crash-looping
//! container does not get the same address back until the range has been
//! walked), refusing a second address for the same attachment.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;

use super::range::RangeSet;
use super::store::Store;
use crate::IpConfig;

/// Why no address was allocated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// Every allocatable address of the set is taken.
    #[error("no IP addresses available in range set: {0}")]
    Exhausted(String),
    /// The attachment already holds an address of this set.
    #[error("{ip} has been allocated to {container_id}, duplicate allocation is not allowed")]
    Duplicate {
        /// The address held.
        ip: IpAddr,
        /// The container.
        container_id: String,
    },
    /// A requested address is taken.
    #[error("requested IP address {ip} is not available in range set {set}")]
    RequestedTaken {
        /// The address.
        ip: IpAddr,
        /// The set.
        set: String,
    },
    /// A requested address is not allocatable (gateway, network, broadcast).
    #[error("requested IP address {0} is not allocatable (gateway, network or broadcast address)")]
    RequestedReserved(IpAddr),
    /// Reading or writing the directory failed.
    #[error("allocation directory")]
    Io(#[from] io::Error),
}

/// Allocates one address of `set` (range set number `index`) to the
/// attachment: `requested` when given, otherwise the next free address after
/// the set's cursor.
pub fn allocate(
    store: &Store,
    set: &RangeSet,
    index: usize,
    container_id: &str,
    ifname: &str,
    requested: Option<IpAddr>,
) -> Result<IpConfig, AllocError> {
    if let Some(ip) = requested {
        let range = set
            .range_for(ip)
            .filter(|range| range.allocatable(ip))
            .ok_or(AllocError::RequestedReserved(ip))?;
        if !store.reserve(container_id, ifname, ip, index)? {
            return Err(AllocError::RequestedTaken {
                ip,
                set: set.to_string(),
            });
        }
        return Ok(ip_config(ip, range.subnet, range.gateway));
    }
    if let Some(ip) = store
        .find(container_id, ifname)?
        .into_iter()
        .find(|ip| set.range_for(*ip).is_some())
    {
        return Err(AllocError::Duplicate {
            ip,
            container_id: container_id.to_owned(),
        });
    }
    for (ip, range) in set.candidates(store.last_reserved(index)) {
        if store.reserve(container_id, ifname, ip, index)? {
            return Ok(ip_config(ip, range.subnet, range.gateway));
        }
    }
    Err(AllocError::Exhausted(set.to_string()))
}

fn ip_config(ip: IpAddr, subnet: IpNet, gateway: IpAddr) -> IpConfig {
    IpConfig {
        // The prefix length of a subnet is valid for any address of its family.
        address: IpNet::new(ip, subnet.prefix_len()).unwrap_or(subnet),
        gateway: Some(gateway),
        interface: None,
    }
}

#[cfg(test)]
mod tests;
