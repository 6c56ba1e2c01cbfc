//! The CNI error: a spec error code plus a short message and optional
//! details, printed by the skel as the spec's JSON error object
//! (`{"cniVersion","code","msg","details"}`) on stdout.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The spec's well-known error codes (0-99), plus the generic code the
/// reference plugins use for anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 1: the configuration's `cniVersion` is not supported.
    IncompatibleVersion,
    /// 2: a configuration field the plugin does not support.
    UnsupportedField,
    /// 3: the container is unknown or does not exist.
    UnknownContainer,
    /// 4: a required environment variable is missing or invalid.
    InvalidEnvironment,
    /// 5: an I/O failure.
    Io,
    /// 6: the configuration or a result could not be decoded.
    Decode,
    /// 7: the network configuration is invalid.
    InvalidNetworkConfig,
    /// 11: a transient condition; the runtime should retry later.
    TryAgainLater,
    /// 50: STATUS: the plugin cannot serve ADDs now.
    NotAvailable,
    /// 51: STATUS: not available, and existing containers may have limited connectivity.
    LimitedConnectivity,
    /// 999: any other failure (the code the reference plugins use).
    Internal,
    /// Any other code, e.g. read back from a delegated plugin.
    Other(u32),
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidNetworkConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::LimitedConnectivity => 51,
            ErrorCode::Internal => 999,
            ErrorCode::Other(code) => code,
        }
    }

    /// The code for a number (known codes map to their variant).
    pub fn from_code(code: u32) -> ErrorCode {
        match code {
            1 => ErrorCode::IncompatibleVersion,
            2 => ErrorCode::UnsupportedField,
            3 => ErrorCode::UnknownContainer,
            4 => ErrorCode::InvalidEnvironment,
            5 => ErrorCode::Io,
            6 => ErrorCode::Decode,
            7 => ErrorCode::InvalidNetworkConfig,
            11 => ErrorCode::TryAgainLater,
            50 => ErrorCode::NotAvailable,
            51 => ErrorCode::LimitedConnectivity,
            999 => ErrorCode::Internal,
            other => ErrorCode::Other(other),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// A failure a plugin reports to the runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", details_suffix(.details))]
pub struct CniError {
    /// The spec error code.
    pub code: ErrorCode,
    /// Short message.
    pub msg: String,
    /// Longer explanation (may be empty).
    pub details: String,
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

impl CniError {
    /// An error with a message and no details.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// An error whose details are the chain of `source` messages.
    pub fn from_source(
        code: ErrorCode,
        msg: impl Into<String>,
        source: &dyn std::error::Error,
    ) -> CniError {
        CniError::new(code, msg).with_details(error_chain(source))
    }

    /// Code 999 with a message: the generic failure.
    pub fn internal(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::Internal, msg)
    }

    /// The spec's JSON error object for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let wire = WireError {
            cni_version: Some(cni_version.to_owned()),
            code: self.code.code(),
            msg: self.msg.clone(),
            details: (!self.details.is_empty()).then(|| self.details.clone()),
        };
        serde_json::to_value(wire).unwrap_or(serde_json::Value::Null)
    }

    /// Parses the JSON error object a plugin printed.
    pub fn from_json(bytes: &[u8]) -> Option<CniError> {
        let wire: WireError = serde_json::from_slice(bytes).ok()?;
        Some(CniError {
            code: ErrorCode::from_code(wire.code),
            msg: wire.msg,
            details: wire.details.unwrap_or_default(),
        })
    }
}

/// `a: b: c` from an error and its sources.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The error object as it is on the wire.
#[derive(Serialize, Deserialize)]
struct WireError {
    #[serde(
        rename = "cniVersion",
        skip_serializing_if = "Option::is_none",
        default
    )]
    cni_version: Option<String>,
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    details: Option<String>,
}
