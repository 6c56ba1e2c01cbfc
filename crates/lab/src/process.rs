//! The lab's long-running processes (agents, kubelets, pod workloads):
//! started detached inside a namespace with output to a log file, recorded
//! in a pid file together with the process's start time, and stopped only
//! if the pid still names the process the lab started (a recycled pid is
//! left alone).

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use weft_linux::NetNs;

/// A recorded process: pid and kernel start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Process id.
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`.
    pub start_time: u64,
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

impl Recorded {
    /// Whether the recorded process is still the one running under its pid
    /// (and is not a zombie).
    pub fn is_alive(&self) -> bool {
        let state = fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            });
        start_time(self.pid) == Some(self.start_time) && state == Some(false)
    }

    /// Reads a pid file written by [`spawn`]; `None` when absent or garbled.
    pub fn read(pid_file: &Path) -> Option<Recorded> {
        let text = fs::read_to_string(pid_file).ok()?;
        let (pid, start) = text.trim().split_once(' ')?;
        Some(Recorded {
            pid: pid.parse().ok()?,
            start_time: start.parse().ok()?,
        })
    }

    /// Stops the process (SIGTERM, then SIGKILL after `grace`) if it is
    /// still the one recorded; returns whether it was running.
    pub fn stop(&self, grace: Duration) -> bool {
        stop_all(std::slice::from_ref(self), grace) > 0
    }

    fn signal(&self, signal: Signal) {
        if let Ok(raw) = i32::try_from(self.pid) {
            let _ = kill(Pid::from_raw(raw), signal);
        }
    }
}

/// Stops every process that is still the one recorded, all at once:
/// SIGTERM to each, one wait of at most `grace` for all of them, then
/// SIGKILL to those left. Returns how many were running.
pub fn stop_all(processes: &[Recorded], grace: Duration) -> usize {
    let running: Vec<Recorded> = processes
        .iter()
        .filter(|process| process.is_alive())
        .copied()
        .collect();
    for process in &running {
        process.signal(Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let mut left = running.clone();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left.retain(Recorded::is_alive);
    }
    for process in &left {
        process.signal(Signal::SIGKILL);
    }
    running.len()
}

/// Every process whose network namespace is one of those at `ns_paths`
/// (lab namespaces: whatever runs there, the lab started), by its `/proc`
/// entry, in one pass over `/proc`.
pub fn in_namespaces(ns_paths: &[PathBuf]) -> Vec<Recorded> {
    use std::os::unix::fs::MetadataExt;
    let targets: HashSet<(u64, u64)> = ns_paths
        .iter()
        .filter_map(|path| fs::metadata(path).ok())
        .map(|meta| (meta.dev(), meta.ino()))
        .collect();
    if targets.is_empty() {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|meta| targets.contains(&(meta.dev(), meta.ino())))
        })
        .filter_map(|pid| {
            Some(Recorded {
                pid,
                start_time: start_time(pid)?,
            })
        })
        .collect()
}

/// Starts `command` inside `ns` in a process group of its own (so it
/// outlives the `weft lab` command that started it and ignores its
/// terminal), with stdout and stderr appended to `log`, and records it in
/// `pid_file`. The caller keeps the [`Child`] to reap it, or drops it to
/// leave the process to init once the caller exits.
pub fn spawn(
    ns: &NetNs,
    command: &mut Command,
    log: &Path,
    pid_file: &Path,
) -> io::Result<(Recorded, Child)> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let child = ns.spawn(command).map_err(io::Error::other)?;
    let pid = child.id();
    let recorded = Recorded {
        pid,
        start_time: start_time(pid).unwrap_or_default(),
    };
    let temporary = pid_file.with_extension("tmp");
    fs::write(
        &temporary,
        format!("{} {}\n", recorded.pid, recorded.start_time),
    )?;
    fs::rename(&temporary, pid_file)?;
    Ok((recorded, child))
}
