//! Delegation to another plugin, the way the bridge plugin calls its IPAM
//! plugin: find the executable named `ipam.type` on `CNI_PATH`, run it with
//! the same `CNI_*` environment (only the command may differ) and the same
//! stdin, and read back its result or its JSON error. Works with any
//! spec-conforming plugin, including the reference ones.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use crate::{CmdArgs, CniError, CniResult, Command, ErrorCode};

/// Finds the executable `plugin` in `dirs` (the first match wins). A name
/// with a `/` or no match is error code 7.
pub fn find_in_path(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("invalid plugin name {plugin:?}"),
        ));
    }
    dirs.iter()
        .map(|dir| dir.join(plugin))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("failed to find plugin {plugin:?} in path {dirs:?}"),
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `plugin` with `command`, the rest of the environment from `args`,
/// and `stdin`; returns its stdout on success, its error otherwise.
pub fn exec(
    plugin: &str,
    command: Command,
    args: &CmdArgs,
    stdin: &[u8],
) -> Result<Vec<u8>, CniError> {
    let binary = find_in_path(plugin, &args.path_dirs())?;
    let mut process = Process::new(&binary);
    process
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", &args.container_id)
        .env("CNI_IFNAME", &args.ifname)
        .env("CNI_ARGS", args.args.as_raw())
        .env("CNI_PATH", &args.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match &args.netns {
        Some(netns) => process.env("CNI_NETNS", netns),
        None => process.env_remove("CNI_NETNS"),
    };
    let io_error = |what: &str, err: std::io::Error| {
        CniError::new(
            ErrorCode::Io,
            format!("{what} delegated plugin {}", binary.display()),
        )
        .with_details(err.to_string())
    };
    let mut child = process.spawn().map_err(|err| io_error("starting", err))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin that exits without reading its stdin closes the pipe: not an error of ours.
        let _ = pipe.write_all(stdin);
    }
    let output = child
        .wait_with_output()
        .map_err(|err| io_error("waiting for", err))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(CniError::from_json(&output.stdout).unwrap_or_else(|| {
        CniError::internal(format!(
            "delegated plugin {plugin} failed ({})",
            output.status
        ))
        .with_details(format!(
            "stdout: {} stderr: {}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }))
}

/// ADD through `plugin`, returning its parsed result.
pub fn add(plugin: &str, args: &CmdArgs, stdin: &[u8]) -> Result<CniResult, CniError> {
    let stdout = exec(plugin, Command::Add, args, stdin)?;
    let value: serde_json::Value = serde_json::from_slice(&stdout).map_err(|err| {
        CniError::new(
            ErrorCode::Decode,
            format!("undecodable result from delegated plugin {plugin}"),
        )
        .with_details(err.to_string())
    })?;
    CniResult::from_value(&value)
}

/// DEL, CHECK, STATUS or GC through `plugin`.
pub fn run(plugin: &str, command: Command, args: &CmdArgs, stdin: &[u8]) -> Result<(), CniError> {
    exec(plugin, command, args, stdin).map(|_| ())
}

#[cfg(test)]
mod tests;
