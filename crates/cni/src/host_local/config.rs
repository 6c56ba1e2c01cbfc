//! host-local's `ipam` section, with every key the reference plugin reads:
//! `ranges` (a list of range sets), the legacy single range `subnet`,
//! `rangeStart`, `rangeEnd`, `gateway` (which becomes the first range set),
//! `routes`, `dataDir`, `resolvConf`; and the addresses a runtime may request
//! through `CNI_ARGS` `IP=`, `args.cni.ips` or `runtimeConfig.ips`.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use super::range::{Range, RangeSet, check_disjoint};
use crate::{CmdArgs, CniError, ErrorCode, NetConf, Route};

/// Where allocations live when `dataDir` is not given (the reference's default).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The parsed `ipam` section.
#[derive(Debug, Clone, PartialEq)]
pub struct IpamConfig {
    /// Range sets, one address allocated from each.
    pub range_sets: Vec<RangeSet>,
    /// Routes returned in the result.
    pub routes: Vec<Route>,
    /// Parent of the network's allocation directory.
    pub data_dir: PathBuf,
    /// A resolv.conf whose contents become the result's DNS.
    pub resolv_conf: Option<PathBuf>,
    /// Addresses the runtime asked for.
    pub requested: Vec<IpAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIpam {
    #[serde(default)]
    ranges: Vec<Vec<WireRange>>,
    #[serde(flatten)]
    legacy: WireRange,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(default)]
    resolv_conf: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireRange {
    #[serde(default)]
    subnet: Option<IpNet>,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

impl WireRange {
    fn build(&self, subnet: IpNet) -> Result<Range, CniError> {
        Range::new(subnet, self.range_start, self.range_end, self.gateway)
            .map_err(|err| invalid(err.to_string()))
    }
}

fn invalid(details: String) -> CniError {
    CniError::new(
        ErrorCode::InvalidNetworkConfig,
        "invalid host-local IPAM config",
    )
    .with_details(details)
}

impl IpamConfig {
    /// Reads the `ipam` section of `conf` and the requested addresses.
    pub fn load(conf: &NetConf, args: &CmdArgs) -> Result<IpamConfig, CniError> {
        let section = conf.ipam.as_ref().ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "IPAM config missing 'ipam' key",
            )
        })?;
        let wire = WireIpam::deserialize(section).map_err(|err| invalid(err.to_string()))?;
        let mut range_sets = Vec::new();
        if let Some(subnet) = wire.legacy.subnet {
            range_sets.push(RangeSet(vec![wire.legacy.build(subnet)?]));
        }
        for wire_set in &wire.ranges {
            let ranges = wire_set
                .iter()
                .map(|wire_range| {
                    let subnet = wire_range
                        .subnet
                        .ok_or_else(|| invalid("a range has no subnet".to_owned()))?;
                    wire_range.build(subnet)
                })
                .collect::<Result<Vec<_>, _>>()?;
            range_sets.push(RangeSet::new(ranges).map_err(|err| invalid(err.to_string()))?);
        }
        if range_sets.is_empty() {
            return Err(invalid("no IP ranges specified".to_owned()));
        }
        let all: Vec<Range> = range_sets.iter().flat_map(|set| set.0.clone()).collect();
        check_disjoint(&all).map_err(|err| invalid(err.to_string()))?;
        Ok(IpamConfig {
            range_sets,
            routes: wire.routes,
            data_dir: PathBuf::from(
                wire.data_dir
                    .filter(|dir| !dir.is_empty())
                    .unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned()),
            ),
            resolv_conf: wire
                .resolv_conf
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            requested: requested_ips(conf, args)?,
        })
    }
}

/// Requested addresses from `CNI_ARGS` (`IP=a,b`), `args.cni.ips` and
/// `runtimeConfig.ips`; entries may carry a `/prefix`, which is ignored.
fn requested_ips(conf: &NetConf, args: &CmdArgs) -> Result<Vec<IpAddr>, CniError> {
    let mut texts: Vec<String> = Vec::new();
    if let Some(list) = args.args.get("IP") {
        texts.extend(list.split(',').map(str::to_owned));
    }
    let from_json = |value: Option<&Value>| -> Vec<String> {
        value
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    texts.extend(from_json(
        conf.args.get("cni").and_then(|cni| cni.get("ips")),
    ));
    texts.extend(from_json(conf.runtime_config.get("ips")));
    let mut ips = Vec::new();
    for text in texts.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let addr_text = text.split_once('/').map_or(text, |(addr, _)| addr);
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("invalid requested IP {text:?}"),
            )
        })?;
        if !ips.contains(&addr) {
            ips.push(addr);
        }
    }
    Ok(ips)
}
