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

/// A delegated plugin that has been started and given its stdin, so the
/// caller can do other work while it runs (the bridge plugin sets up links
/// while its IPAM plugin allocates).
#[derive(Debug)]
pub struct Running {
    /// The plugin's `type`, for error messages.
    plugin: String,
    /// Its executable, for error messages.
    binary: PathBuf,
    /// The process, stdin already written and closed.
    child: std::process::Child,
}

fn io_error(what: &str, binary: &Path, err: &std::io::Error) -> CniError {
    CniError::new(
        ErrorCode::Io,
        format!("{what} delegated plugin {}", binary.display()),
    )
    .with_details(err.to_string())
}

/// Starts `plugin` with `command`, the rest of the environment from `args`,
/// and `stdin`; [`Running::wait`] collects the outcome.
pub fn start(
    plugin: &str,
    command: Command,
    args: &CmdArgs,
    stdin: &[u8],
) -> Result<Running, CniError> {
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
    let mut child = process
        .spawn()
        .map_err(|err| io_error("starting", &binary, &err))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin that exits without reading its stdin closes the pipe: not an error of ours.
        // Configurations are far smaller than a pipe buffer, so this does not block.
        let _ = pipe.write_all(stdin);
    }
    Ok(Running {
        plugin: plugin.to_owned(),
        binary,
        child,
    })
}

impl Running {
    /// Waits for the plugin; returns its stdout on success, its error otherwise.
    pub fn wait(self) -> Result<Vec<u8>, CniError> {
        let Running {
            plugin,
            binary,
            child,
        } = self;
        let output = child
            .wait_with_output()
            .map_err(|err| io_error("waiting for", &binary, &err))?;
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

    /// Waits for an ADD and parses its result.
    pub fn wait_result(self) -> Result<CniResult, CniError> {
        let plugin = self.plugin.clone();
        let stdout = self.wait()?;
        let value: serde_json::Value = serde_json::from_slice(&stdout).map_err(|err| {
            CniError::new(
                ErrorCode::Decode,
                format!("undecodable result from delegated plugin {plugin}"),
            )
            .with_details(err.to_string())
        })?;
        CniResult::from_value(&value)
    }
}

/// Runs `plugin` with `command`, the rest of the environment from `args`,
/// and `stdin`; returns its stdout on success, its error otherwise.
pub fn exec(
    plugin: &str,
    command: Command,
    args: &CmdArgs,
    stdin: &[u8],
) -> Result<Vec<u8>, CniError> {
    start(plugin, command, args, stdin)?.wait()
}

/// ADD through `plugin`, returning its parsed result.
pub fn add(plugin: &str, args: &CmdArgs, stdin: &[u8]) -> Result<CniResult, CniError> {
    start(plugin, Command::Add, args, stdin)?.wait_result()
}

/// DEL, CHECK, STATUS or GC through `plugin`.
pub fn run(plugin: &str, command: Command, args: &CmdArgs, stdin: &[u8]) -> Result<(), CniError> {
    exec(plugin, command, args, stdin).map(|_| ())
}

#[cfg(test)]
mod tests;
