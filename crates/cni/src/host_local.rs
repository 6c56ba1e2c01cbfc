//! The host-local IPAM plugin: allocates one address per range set from
//! files under `<dataDir>/<network>/`, laid out exactly as the reference
//! plugin lays them out, so a node can switch between the two in either
//! direction without losing or double-allocating an address.
//!
//! Error codes: an exhausted range set is code 11 (try again later: the
//! condition clears when pods go away); invalid configuration is 7; a data
//! directory that cannot be read or written is 5; STATUS answers 50 when a
//! range set is exhausted or the data directory is not writable.

pub mod allocator;
pub mod config;
pub mod range;
pub mod store;

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use nix::unistd::AccessFlags;

use self::allocator::{AllocError, allocate};
use self::config::IpamConfig;
use self::store::Store;
use crate::{CmdArgs, CniError, CniResult, Dns, ErrorCode, IpConfig, NetConf, Plugin};

/// The host-local plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostLocal;

/// `CNI_ARGS` keys host-local reads (`IP`) or tolerates (Kubernetes').
const KNOWN_ARGS: &[&str] = &[
    "IP",
    "K8S_POD_NAME",
    "K8S_POD_NAMESPACE",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

impl Plugin for HostLocal {
    fn name(&self) -> &'static str {
        "host-local"
    }

    fn known_args(&self) -> Option<&'static [&'static str]> {
        Some(KNOWN_ARGS)
    }

    fn add(&self, args: &CmdArgs, conf: &NetConf) -> Result<CniResult, CniError> {
        let ipam = IpamConfig::load(conf, args)?;
        let dns = match &ipam.resolv_conf {
            Some(path) => parse_resolv_conf(path)?,
            None => Dns::default(),
        };
        let store = open_store(&ipam, conf)?;
        let mut requested = ipam.requested.clone();
        let mut ips = Vec::new();
        for (index, set) in ipam.range_sets.iter().enumerate() {
            let wanted = requested
                .iter()
                .position(|ip| set.range_for(*ip).is_some())
                .map(|position| requested.remove(position));
            match allocate(&store, set, index, &args.container_id, &args.ifname, wanted) {
                Ok(ip) => ips.push(ip),
                Err(err) => {
                    release_these(&store, &ips);
                    return Err(alloc_error(index, &err));
                }
            }
        }
        if !requested.is_empty() {
            release_these(&store, &ips);
            let list: Vec<String> = requested.iter().map(IpAddr::to_string).collect();
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("failed to allocate all requested IPs: {}", list.join(" ")),
            )
            .with_details("the addresses are outside every range"));
        }
        Ok(CniResult {
            interfaces: Vec::new(),
            ips,
            routes: ipam.routes,
            dns,
        })
    }

    fn del(&self, args: &CmdArgs, conf: &NetConf) -> Result<(), CniError> {
        let ipam = IpamConfig::load(conf, args)?;
        let store = open_store(&ipam, conf)?;
        store
            .release(&args.container_id, &args.ifname)
            .map_err(|err| io_error("releasing addresses", &err))?;
        Ok(())
    }

    fn check(&self, args: &CmdArgs, conf: &NetConf) -> Result<(), CniError> {
        let ipam = IpamConfig::load(conf, args)?;
        let store = open_store(&ipam, conf)?;
        let held = store
            .find(&args.container_id, &args.ifname)
            .map_err(|err| io_error("reading allocations", &err))?;
        if held.is_empty() {
            return Err(CniError::internal(format!(
                "host-local: failed to find address added by container {}",
                args.container_id
            )));
        }
        Ok(())
    }

    fn status(&self, args: &CmdArgs, conf: &NetConf) -> Result<(), CniError> {
        let ipam = IpamConfig::load(conf, args)?;
        let dir = ipam.data_dir.join(&conf.name);
        // A dangling symbolic link counts as there (ADD could not make it).
        let writable_dir = dir
            .ancestors()
            .find(|candidate| candidate.symlink_metadata().is_ok())
            .unwrap_or(Path::new("/"));
        if !writable_dir.is_dir() {
            return Err(CniError::new(
                ErrorCode::NotAvailable,
                format!(
                    "data directory {} cannot be made: {} is not a directory",
                    dir.display(),
                    writable_dir.display()
                ),
            ));
        }
        if let Err(errno) = nix::unistd::access(writable_dir, AccessFlags::W_OK) {
            return Err(CniError::new(
                ErrorCode::NotAvailable,
                format!("data directory {} is not writable", writable_dir.display()),
            )
            .with_details(errno.desc()));
        }
        if !dir.exists() {
            return Ok(());
        }
        let store = open_store(&ipam, conf)?;
        let taken = store
            .allocations()
            .map_err(|err| io_error("reading allocations", &err))?;
        for set in &ipam.range_sets {
            let capacity: u128 = set.0.iter().map(|range| range.capacity()).sum();
            let used = taken
                .iter()
                .filter(|a| set.0.iter().any(|range| range.allocatable(a.ip)))
                .count() as u128;
            if used >= capacity {
                return Err(CniError::new(
                    ErrorCode::NotAvailable,
                    format!("no IP addresses available in range set: {set}"),
                ));
            }
        }
        Ok(())
    }

    fn gc(&self, args: &CmdArgs, conf: &NetConf) -> Result<(), CniError> {
        let ipam = IpamConfig::load(conf, args)?;
        let store = open_store(&ipam, conf)?;
        let valid: HashSet<(&str, &str)> = conf
            .valid_attachments
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let valid_ids: HashSet<&str> = valid.iter().map(|(id, _)| *id).collect();
        let allocations = store
            .allocations()
            .map_err(|err| io_error("reading allocations", &err))?;
        let mut failures = Vec::new();
        for allocation in allocations {
            let keep = match &allocation.ifname {
                Some(ifname) => {
                    valid.contains(&(allocation.container_id.as_str(), ifname.as_str()))
                }
                None => valid_ids.contains(allocation.container_id.as_str()),
            };
            if !keep {
                if let Err(err) = store.remove(allocation.ip) {
                    failures.push(format!("{}: {err}", allocation.ip));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(
                CniError::new(ErrorCode::Io, "failed to remove some allocations")
                    .with_details(failures.join("; ")),
            )
        }
    }
}

fn open_store(ipam: &IpamConfig, conf: &NetConf) -> Result<Store, CniError> {
    Store::open(&ipam.data_dir, &conf.name).map_err(|err| {
        CniError::new(
            ErrorCode::Io,
            format!(
                "cannot open allocation directory {}",
                ipam.data_dir.join(&conf.name).display()
            ),
        )
        .with_details(err.to_string())
    })
}

fn io_error(what: &str, err: &io::Error) -> CniError {
    CniError::new(ErrorCode::Io, format!("host-local: {what}")).with_details(err.to_string())
}

/// Frees what a failed ADD reserved, and only that: addresses the
/// attachment held before (a repeated ADD refused as a duplicate) stay.
fn release_these(store: &Store, ips: &[IpConfig]) {
    for ip in ips {
        let _ = store.remove(ip.address.addr());
    }
}

fn alloc_error(index: usize, err: &AllocError) -> CniError {
    let code = match err {
        AllocError::Exhausted(_) => ErrorCode::TryAgainLater,
        AllocError::Io(_) => ErrorCode::Io,
        AllocError::Duplicate { .. } | AllocError::RequestedTaken { .. } => ErrorCode::Internal,
        AllocError::RequestedReserved(_) => ErrorCode::InvalidNetworkConfig,
    };
    CniError::new(
        code,
        format!(
            "failed to allocate for range {index}: {}",
            crate::error::error_chain(err)
        ),
    )
}

/// The DNS settings of a resolv.conf (`nameserver`, `domain`, `search`,
/// `options` lines).
fn parse_resolv_conf(path: &Path) -> Result<Dns, CniError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| io_error(&format!("reading {}", path.display()), &err))?;
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_owned)),
            Some("domain") => dns.domain = words.next().map(str::to_owned),
            Some("search") => dns.search = words.map(str::to_owned).collect(),
            Some("options") => dns.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    Ok(dns)
}

#[cfg(test)]
mod tests;
