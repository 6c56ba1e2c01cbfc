//! The execution environment of one plugin call: `CNI_COMMAND`,
//! `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` and `CNI_PATH`,
//! read through a lookup function so tests need not touch the process
//! environment, and checked the way the reference skel checks them (the
//! variables each command requires, container ID and interface name syntax).

use std::fmt;
use std::path::PathBuf;

use crate::{CniError, ErrorCode};

/// The operation the runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach it; must succeed when already detached.
    Del,
    /// Verify the attachment is as ADD left it.
    Check,
    /// Report whether ADDs can be served.
    Status,
    /// Report the supported spec versions.
    Version,
    /// Remove everything not belonging to a valid attachment.
    Gc,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(text: &str) -> Result<Command, CniError> {
        match text {
            "ADD" => Ok(Command::Add),
            "DEL" => Ok(Command::Del),
            "CHECK" => Ok(Command::Check),
            "STATUS" => Ok(Command::Status),
            "VERSION" => Ok(Command::Version),
            "GC" => Ok(Command::Gc),
            other => Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("unknown CNI_COMMAND: {other}"),
            )),
        }
    }

    /// The command as the runtime spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
            Command::Gc => "GC",
        }
    }

    /// Variables the command cannot do without.
    fn required(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Status | Command::Version | Command::Gc => &[],
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the environment says about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdArgs {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for STATUS, GC and VERSION).
    pub container_id: String,
    /// `CNI_NETNS`: the container's namespace file; optional for DEL.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (empty for STATUS, GC and VERSION).
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: CniArgs,
    /// `CNI_PATH`, as given (`:`-separated directories).
    pub path: String,
}

impl CmdArgs {
    /// Reads and checks the variables for the command in `CNI_COMMAND`.
    /// Missing required variables, a malformed container ID, interface name
    /// or `CNI_ARGS` are error code 4.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<CmdArgs, CniError> {
        let get = |key: &str| env(key).filter(|value| !value.is_empty());
        let command = match get("CNI_COMMAND") {
            Some(text) => Command::parse(&text)?,
            None => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    "required env variables [CNI_COMMAND] missing",
                ));
            }
        };
        let missing: Vec<&str> = command
            .required()
            .iter()
            .copied()
            .filter(|key| get(key).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("required env variables [{}] missing", missing.join(",")),
            ));
        }
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        if command.required().contains(&"CNI_CONTAINERID") {
            validate_container_id(&container_id)?;
        }
        if command.required().contains(&"CNI_IFNAME") {
            validate_ifname(&ifname)?;
        }
        Ok(CmdArgs {
            command,
            container_id,
            netns: get("CNI_NETNS").map(PathBuf::from),
            ifname,
            args: CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?,
            path: get("CNI_PATH").unwrap_or_default(),
        })
    }

    /// The directories of `CNI_PATH`.
    pub fn path_dirs(&self) -> Vec<PathBuf> {
        self.path
            .split(':')
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .collect()
    }

    /// `CNI_NETNS`, or error code 4 when it is absent.
    pub fn require_netns(&self) -> Result<&PathBuf, CniError> {
        self.netns.as_ref().ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                "required env variables [CNI_NETNS] missing",
            )
        })
    }
}

/// Container IDs as the reference plugins accept them: an alphanumeric
/// first character, then alphanumerics, `_`, `.` or `-`.
fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            "invalid characters in containerID",
        )
        .with_details(id.to_owned()))
    }
}

/// Interface names the kernel accepts: 1 to 15 bytes, not `.` or `..`, no
/// `/`, `:` or whitespace.
fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(
            CniError::new(ErrorCode::InvalidEnvironment, "invalid interface name")
                .with_details(name.to_owned()),
        );
    }
    Ok(())
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// The pairs, in order.
    pairs: Vec<(String, String)>,
    /// The variable as given, passed on unchanged to delegated plugins.
    raw: String,
}

impl CniArgs {
    /// Parses `CNI_ARGS`; a pair without `=` or without a key is error
    /// code 4.
    pub fn parse(raw: &str) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        for item in raw.split(';').filter(|item| !item.is_empty()) {
            let Some((key, value)) = item.split_once('=').filter(|(key, _)| !key.is_empty()) else {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("CNI_ARGS: invalid pair {item:?} (KEY=VALUE expected)"),
                ));
            };
            pairs.push((key.to_owned(), value.to_owned()));
        }
        Ok(CniArgs {
            pairs,
            raw: raw.to_owned(),
        })
    }

    /// The variable as given.
    pub fn as_raw(&self) -> &str {
        &self.raw
    }

    /// The value of `key` (the last one when repeated).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `IgnoreUnknown` is set to `1` or `true`.
    pub fn ignore_unknown(&self) -> bool {
        self.get("IgnoreUnknown")
            .is_some_and(|value| value == "1" || value.eq_ignore_ascii_case("true"))
    }

    /// Error code 4 naming the keys outside `known`, unless `IgnoreUnknown`
    /// is set.
    pub fn check_known(&self, known: &[&str]) -> Result<(), CniError> {
        if self.ignore_unknown() {
            return Ok(());
        }
        let unknown: Vec<&str> = self
            .pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| *k != "IgnoreUnknown" && !known.contains(k))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_ARGS: unknown args [{}]", unknown.join(",")),
            ))
        }
    }
}

#[cfg(test)]
mod tests;
