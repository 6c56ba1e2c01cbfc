//! Delegation to another plugin, the way the bridge plugin calls its IPAM
//! plugin: find the executable named `ipam.type` on `CNI_PATH`, run it with
//! the same `CNI_*` environment (only the command may differ) and the same
//! stdin, and read back its result or its JSON error. Works with any
//! spec-conforming plugin, including the reference ones.
//!
//! One shortcut, invisible in the outcome: when the executable found is
//! this very binary (weft's multi-call binary, installed under the IPAM
//! plugin's name) and the plugin is weft's host-local, the plugin runs in
//! this process on a thread, through the same [`run_plugin`] entry with the
//! same environment and stdin, and its stdout and exit code are read back
//! as a child's would be. That saves a process creation on every ADD and
//! DEL (2 ms of a bridge ADD's 6 on a quiet machine, more on a busy one).
//! Any other plugin, or a host-local that is another file (the reference
//! plugin, a copy), is exec'ed.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::thread::JoinHandle;

use crate::{CmdArgs, CniError, CniResult, Command, ErrorCode, host_local, run_plugin};

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

/// Whether `binary` is the file this process runs (same device and inode,
/// symlinks followed): then running it would run this program again.
fn is_this_executable(binary: &Path, this_executable: &Path) -> bool {
    match (
        std::fs::metadata(binary),
        std::fs::metadata(this_executable),
    ) {
        (Ok(found), Ok(this)) => found.dev() == this.dev() && found.ino() == this.ino(),
        _ => false,
    }
}

/// Whether `plugin` (the name it is installed under) may run in-process
/// when its executable is this binary: host-local only, which touches
/// nothing but its data directory (no namespaces, no process-wide state).
fn runs_in_process(plugin: &str) -> bool {
    plugin.strip_prefix("weft-").unwrap_or(plugin) == "host-local"
}

/// How a started delegated plugin runs.
#[derive(Debug)]
enum Runner {
    /// An exec'ed process, stdin already written and closed.
    Child(std::process::Child),
    /// weft's own plugin on a thread of this process: its exit code and
    /// stdout.
    Thread(JoinHandle<(i32, Vec<u8>)>),
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
    /// The process or thread.
    runner: Runner,
}

fn io_error(what: &str, binary: &Path, err: &std::io::Error) -> CniError {
    CniError::new(
        ErrorCode::Io,
        format!("{what} delegated plugin {}", binary.display()),
    )
    .with_details(err.to_string())
}

/// Attempts at starting a plugin whose file is busy.
const BUSY_ATTEMPTS: u32 = 10;

/// Spawns `process`, trying again for a short while when its file is
/// busy (`ETXTBSY`): the plugin was just written, and another thread's
/// child inherited the writing descriptor between its fork and exec (or
/// an installer is replacing the binary). That state passes in
/// microseconds.
fn spawn(process: &mut Process) -> std::io::Result<std::process::Child> {
    let mut attempt = 1;
    loop {
        match process.spawn() {
            Err(err)
                if err.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && attempt < BUSY_ATTEMPTS =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5 * u64::from(attempt)));
                attempt += 1;
            }
            spawned => return spawned,
        }
    }
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
    if runs_in_process(plugin) && is_this_executable(&binary, Path::new("/proc/self/exe")) {
        if let Some(running) = start_in_process(plugin, &binary, command, args, stdin) {
            return Ok(running);
        }
    }
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
    let mut child = spawn(&mut process).map_err(|err| io_error("starting", &binary, &err))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin that exits without reading its stdin closes the pipe: not an error of ours.
        // Configurations are far smaller than a pipe buffer, so this does not block.
        let _ = pipe.write_all(stdin);
    }
    Ok(Running {
        plugin: plugin.to_owned(),
        binary,
        runner: Runner::Child(child),
    })
}

/// Runs weft's host-local on a thread with exactly the environment and
/// stdin [`start`] would give the process. `None` when the namespace path
/// is not UTF-8 (the environment of a process carries it as it is, so that
/// call is left to one) or no thread can be started.
fn start_in_process(
    plugin: &str,
    binary: &Path,
    command: Command,
    args: &CmdArgs,
    stdin: &[u8],
) -> Option<Running> {
    let mut env: HashMap<&'static str, String> = HashMap::from([
        ("CNI_COMMAND", command.as_str().to_owned()),
        ("CNI_CONTAINERID", args.container_id.clone()),
        ("CNI_IFNAME", args.ifname.clone()),
        ("CNI_ARGS", args.args.as_raw().to_owned()),
        ("CNI_PATH", args.path.clone()),
    ]);
    if let Some(netns) = &args.netns {
        env.insert("CNI_NETNS", netns.to_str()?.to_owned());
    }
    let stdin = stdin.to_vec();
    // A thread that cannot be started leaves the call to a process.
    let thread = std::thread::Builder::new()
        .name("host-local".to_owned())
        .spawn(move || {
            let mut stdout = Vec::new();
            let code = run_plugin(
                &host_local::HostLocal,
                |key: &str| env.get(key).cloned(),
                stdin.as_slice(),
                &mut stdout,
            );
            (code, stdout)
        })
        .ok()?;
    Some(Running {
        plugin: plugin.to_owned(),
        binary: binary.to_owned(),
        runner: Runner::Thread(thread),
    })
}

impl Running {
    /// Waits for the plugin; returns its stdout on success, its error otherwise.
    pub fn wait(self) -> Result<Vec<u8>, CniError> {
        let Running {
            plugin,
            binary,
            runner,
        } = self;
        let (status, stdout, stderr) = match runner {
            Runner::Child(child) => {
                let output = child
                    .wait_with_output()
                    .map_err(|err| io_error("waiting for", &binary, &err))?;
                if output.status.success() {
                    return Ok(output.stdout);
                }
                (output.status.to_string(), output.stdout, output.stderr)
            }
            Runner::Thread(thread) => match thread.join() {
                Ok((0, stdout)) => return Ok(stdout),
                Ok((code, stdout)) => (format!("exit status: {code}"), stdout, Vec::new()),
                Err(_) => ("panicked".to_owned(), Vec::new(), Vec::new()),
            },
        };
        Err(CniError::from_json(&stdout).unwrap_or_else(|| {
            CniError::internal(format!("delegated plugin {plugin} failed ({status})")).with_details(
                format!(
                    "stdout: {} stderr: {}",
                    String::from_utf8_lossy(&stdout).trim(),
                    String::from_utf8_lossy(&stderr).trim()
                ),
            )
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
