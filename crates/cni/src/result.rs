//! The result of ADD (interfaces, ips, routes, dns), parsed from any
//! supported version (a `prevResult`, or a delegated IPAM plugin's output) and
//! emitted in the version the configuration asked for: 0.3.x and 0.4.0 put
//! `"version"` in each IP entry, 1.x does not, and only 1.1.0 carries the
//! interface and route attributes that version introduced.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{CniError, ErrorCode, Version};

/// A plugin's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CniResult {
    /// Interfaces the plugin created or configured.
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    pub ips: Vec<IpConfig>,
    /// Routes installed (or, for IPAM, to install).
    pub routes: Vec<Route>,
    /// DNS information.
    pub dns: Dns,
}

/// One interface of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// MTU (1.1.0).
    pub mtu: Option<u32>,
    /// Namespace path for interfaces inside the container.
    pub sandbox: Option<String>,
    /// vhost-user socket path (1.1.0).
    pub socket_path: Option<String>,
    /// PCI ID (1.1.0).
    #[serde(rename = "pciID")]
    pub pci_id: Option<String>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpConfig {
    /// Address with its prefix length, e.g. `10.1.0.5/24`.
    pub address: IpNet,
    /// Default gateway for this subnet, if any.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

/// One route of a result (or of an IPAM configuration).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent means the IP config's gateway (plugin specific).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Metric (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Route scope (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    /// A route to `dst` via `gw` with no other attribute.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS information of a result or configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// Parses a result printed by a plugin or passed as `prevResult`, in
    /// any supported version (`version` keys in IP entries are ignored).
    pub fn from_value(value: &Value) -> Result<CniResult, CniError> {
        CniResult::deserialize(value).map_err(|err| {
            CniError::new(ErrorCode::Decode, "failed to decode result")
                .with_details(err.to_string())
        })
    }

    /// The result as JSON in `version`.
    pub fn to_json(&self, version: Version) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !self.interfaces.is_empty() {
            let list = self
                .interfaces
                .iter()
                .map(|iface| iface.to_json(version))
                .collect();
            out.insert("interfaces".into(), Value::Array(list));
        }
        if !self.ips.is_empty() {
            let list = self.ips.iter().map(|ip| ip.to_json(version)).collect();
            out.insert("ips".into(), Value::Array(list));
        }
        if !self.routes.is_empty() {
            let list = self
                .routes
                .iter()
                .map(|route| route_to_json(route, version))
                .collect();
            out.insert("routes".into(), Value::Array(list));
        }
        out.insert(
            "dns".into(),
            serde_json::to_value(&self.dns).unwrap_or_else(|_| json!({})),
        );
        Value::Object(out)
    }
}

impl Interface {
    fn to_json(&self, version: Version) -> Value {
        let mut out = Map::new();
        out.insert("name".into(), json!(self.name));
        if let Some(mac) = &self.mac {
            out.insert("mac".into(), json!(mac));
        }
        if version >= Version::V1_1_0 {
            if let Some(mtu) = self.mtu {
                out.insert("mtu".into(), json!(mtu));
            }
        }
        if let Some(sandbox) = &self.sandbox {
            out.insert("sandbox".into(), json!(sandbox));
        }
        if version >= Version::V1_1_0 {
            if let Some(path) = &self.socket_path {
                out.insert("socketPath".into(), json!(path));
            }
            if let Some(pci) = &self.pci_id {
                out.insert("pciID".into(), json!(pci));
            }
        }
        Value::Object(out)
    }
}

impl IpConfig {
    fn to_json(&self, version: Version) -> Value {
        let mut out = Map::new();
        if version.ips_carry_version() {
            let family = if self.address.addr().is_ipv4() {
                "4"
            } else {
                "6"
            };
            out.insert("version".into(), json!(family));
        }
        if let Some(index) = self.interface {
            out.insert("interface".into(), json!(index));
        }
        out.insert("address".into(), json!(self.address.to_string()));
        if let Some(gateway) = self.gateway {
            out.insert("gateway".into(), json!(gateway.to_string()));
        }
        Value::Object(out)
    }
}

fn route_to_json(route: &Route, version: Version) -> Value {
    let kept = if version >= Version::V1_1_0 {
        route.clone()
    } else {
        Route::new(route.dst, route.gw)
    };
    serde_json::to_value(kept).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests;
