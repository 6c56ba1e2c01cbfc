//! CNI spec versions: the ones weft's plugins speak, parsing a configuration's
//! `cniVersion`, which commands each version allows, and the VERSION reply.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::{CniError, ErrorCode};

/// A spec version weft's plugins support. Versions before 0.3.0 (results
/// with `ip4`/`ip6` keys) are not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 0.3.0
    V0_3_0,
    /// 0.3.1
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: drops `version` from result IPs.
    V1_0_0,
    /// 1.1.0: adds STATUS and GC, interface `mtu`/`socketPath`/`pciID`, route attributes.
    V1_1_0,
}

/// Every version, oldest first.
pub const SUPPORTED_VERSIONS: [Version; 5] = [
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

impl Version {
    /// The newest version.
    pub const LATEST: Version = Version::V1_1_0;

    /// The version as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Whether results carry `"version": "4"|"6"` in each IP entry.
    pub fn ips_carry_version(self) -> bool {
        self < Version::V1_0_0
    }

    /// Whether CHECK exists in this version.
    pub fn allows_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// Whether STATUS and GC exist in this version.
    pub fn allows_status_and_gc(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Version {
    type Err = CniError;

    /// Parses a `cniVersion`; anything unsupported (including the
    /// pre-0.3.0 versions) is error code 1 naming what is supported.
    fn from_str(text: &str) -> Result<Version, CniError> {
        SUPPORTED_VERSIONS
            .iter()
            .copied()
            .find(|version| version.as_str() == text)
            .ok_or_else(|| {
                CniError::new(ErrorCode::IncompatibleVersion, "incompatible CNI versions")
                    .with_details(format!(
                        "config is {text:?}, plugin supports {}",
                        supported_list()
                    ))
            })
    }
}

fn supported_list() -> String {
    let names: Vec<&str> = SUPPORTED_VERSIONS.iter().map(|v| v.as_str()).collect();
    format!("[{}]", names.join(" "))
}

/// The reply to `CNI_COMMAND=VERSION`.
#[derive(Debug, Serialize)]
pub struct VersionInfo {
    /// The version of this reply.
    #[serde(rename = "cniVersion")]
    pub cni_version: &'static str,
    /// Every version the plugin supports.
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<&'static str>,
}

impl VersionInfo {
    /// The reply for weft's plugins.
    pub fn current() -> VersionInfo {
        VersionInfo {
            cni_version: Version::LATEST.as_str(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.as_str()).collect(),
        }
    }
}
