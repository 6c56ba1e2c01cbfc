//! A plugin's network configuration from stdin: the well-known keys
//! (`cniVersion`, `name`, `type`, `ipam`, `dns`, `args`, `prevResult`,
//! `runtimeConfig`, GC's valid attachments) parsed here, every other key kept
//! in [`NetConf::raw`] for the plugin to read with [`NetConf::plugin_keys`].

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{CniError, CniResult, Dns, ErrorCode, Version};

/// One network configuration as a plugin receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// The negotiated version: results and errors are printed in it.
    pub cni_version: Version,
    /// Network name (host-local's directory name under its data dir).
    pub name: String,
    /// The plugin type (the executable's name).
    pub plugin_type: String,
    /// `ipam` as given; see [`NetConf::ipam_type`].
    pub ipam: Option<Value>,
    /// `dns` as given.
    pub dns: Dns,
    /// `prevResult`, parsed.
    pub prev_result: Option<CniResult>,
    /// `runtimeConfig` (capability arguments from the runtime).
    pub runtime_config: Map<String, Value>,
    /// `args` (arbitrary runtime data, e.g. `args.cni.ips`).
    pub args: Map<String, Value>,
    /// GC: `cni.dev/valid-attachments` (or the older `cni.dev/attachments`).
    pub valid_attachments: Vec<Attachment>,
    /// The whole object, for plugin-specific keys.
    pub raw: Value,
    /// The bytes read from stdin, passed unchanged to a delegated plugin.
    pub bytes: Vec<u8>,
}

/// One attachment a runtime still uses (GC input).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Attachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name inside the container.
    pub ifname: String,
}

/// The keys parsed here, as they are on the wire.
#[derive(Deserialize)]
struct WellKnown {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type", default)]
    plugin_type: Option<String>,
    #[serde(default)]
    ipam: Option<Value>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<Map<String, Value>>,
    #[serde(default)]
    args: Option<Map<String, Value>>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Vec<Attachment>>,
    #[serde(rename = "cni.dev/attachments", default)]
    attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parses stdin. Not JSON, or not an object: code 6. A missing or
    /// unsupported `cniVersion`: code 1. Well-known keys of the wrong shape
    /// or a bad `name`: code 7.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|err| {
            CniError::new(ErrorCode::Decode, "error unmarshalling network config")
                .with_details(err.to_string())
        })?;
        if !raw.is_object() {
            return Err(CniError::new(
                ErrorCode::Decode,
                "network config is not a JSON object",
            ));
        }
        let cni_version = Self::version_of(&raw)?;
        let known = WellKnown::deserialize(&raw).map_err(|err| invalid(err.to_string()))?;
        let name = known
            .name
            .ok_or_else(|| invalid("network config has no \"name\"".to_owned()))?;
        validate_network_name(&name)?;
        let prev_result = known
            .prev_result
            .as_ref()
            .map(CniResult::from_value)
            .transpose()?;
        Ok(NetConf {
            cni_version,
            name,
            plugin_type: known.plugin_type.unwrap_or_default(),
            ipam: known.ipam,
            dns: known.dns.unwrap_or_default(),
            prev_result,
            runtime_config: known.runtime_config.unwrap_or_default(),
            args: known.args.unwrap_or_default(),
            valid_attachments: known
                .valid_attachments
                .or(known.attachments)
                .unwrap_or_default(),
            raw,
            bytes: bytes.to_vec(),
        })
    }

    /// The `cniVersion` of a decoded configuration (code 1 when absent or
    /// unsupported).
    pub fn version_of(raw: &Value) -> Result<Version, CniError> {
        match raw.get("cniVersion") {
            Some(Value::String(text)) => text.parse(),
            Some(other) => Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                "incompatible CNI versions",
            )
            .with_details(format!(
                "cniVersion must be a string such as \"1.1.0\", not {other}"
            ))),
            None => Err(
                CniError::new(ErrorCode::IncompatibleVersion, "incompatible CNI versions")
                    .with_details(
                        "config has no cniVersion (taken as 0.1.0, which is not supported)",
                    ),
            ),
        }
    }

    /// Plugin-specific keys, deserialized from the whole object; a key of
    /// the wrong shape is code 7.
    pub fn plugin_keys<T: DeserializeOwned>(&self) -> Result<T, CniError> {
        T::deserialize(&self.raw).map_err(|err| invalid(err.to_string()))
    }

    /// `ipam.type`, when there is an `ipam` section.
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref()?.get("type")?.as_str()
    }
}

fn invalid(details: String) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, "invalid network config").with_details(details)
}

/// Network names as the spec defines them: an alphanumeric first
/// character, then alphanumerics, `_`, `.` or `-` (so a name is always a
/// safe directory name).
fn validate_network_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(invalid(format!("invalid network name {name:?}")))
    }
}

#[cfg(test)]
mod tests;
