//! Running CNI plugin executables the way a container runtime does: a bin
//! directory filled by `weft cni install`, the `CNI_*` environment, the
//! configuration on stdin, the JSON on stdout.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Where Debian's `containernetworking-plugins` installs the reference plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// A directory with weft's plugins under their reference names and their
/// `weft-` names.
pub struct PluginDir {
    /// The temporary directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl PluginDir {
    pub fn new() -> PluginDir {
        let dir = tempfile::tempdir().unwrap();
        let installed = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["cni", "install", "--bin-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            installed.status.success(),
            "weft cni install: {}",
            String::from_utf8_lossy(&installed.stderr)
        );
        PluginDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn plugin(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// One plugin call's environment.
#[derive(Clone, Debug)]
pub struct Call {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

impl Call {
    pub fn new(command: &str, container_id: &str, path: &str) -> Call {
        Call {
            command: command.to_owned(),
            container_id: container_id.to_owned(),
            netns: "/run/netns/unused".to_owned(),
            ifname: "eth0".to_owned(),
            args: "IgnoreUnknown=1".to_owned(),
            path: path.to_owned(),
        }
    }

    pub fn ifname(mut self, ifname: &str) -> Call {
        self.ifname = ifname.to_owned();
        self
    }

    pub fn netns(mut self, netns: &str) -> Call {
        self.netns = netns.to_owned();
        self
    }

    pub fn command_for(&self, binary: &Path) -> Command {
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", &self.command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_ARGS", &self.args)
            .env("CNI_PATH", &self.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !self.netns.is_empty() {
            command.env("CNI_NETNS", &self.netns);
        }
        command
    }
}

/// What a plugin call printed.
#[derive(Debug)]
pub struct Reply {
    /// Exit code.
    pub code: i32,
    /// Stdout parsed as JSON (`Null` when empty or not JSON).
    pub json: Value,
    /// Stderr, for failure messages.
    pub stderr: String,
}

impl Reply {
    pub fn from_output(output: Output) -> Reply {
        Reply {
            code: output.status.code().unwrap_or(-1),
            json: serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with everything printed unless the call succeeded.
    pub fn ok(self) -> Value {
        assert_eq!(self.code, 0, "plugin failed: {} {}", self.json, self.stderr);
        self.json
    }
}

/// Runs `binary` with `call`'s environment and `stdin` in the current namespace.
pub fn exec(binary: &Path, call: &Call, stdin: &Value) -> Reply {
    let child = call.command_for(binary).spawn().unwrap();
    finish(child, stdin)
}

/// Feeds stdin to a started plugin and collects its reply.
pub fn finish(mut child: std::process::Child, stdin: &Value) -> Reply {
    if let Some(mut pipe) = child.stdin.take() {
        // VERSION need not read stdin: a closed pipe is not a failure.
        let _ = pipe.write_all(stdin.to_string().as_bytes());
    }
    Reply::from_output(child.wait_with_output().unwrap())
}

/// Runs `binary` inside `node` (the namespace standing in for the node), as
/// a runtime on that node would.
pub fn exec_in(node: &weft_linux::NetNs, binary: &Path, call: &Call, stdin: &Value) -> Reply {
    let child = node.spawn(&mut call.command_for(binary)).unwrap();
    finish(child, stdin)
}

/// Whether the test can run: privileged tests print a skip line without root.
pub fn root() -> bool {
    if weft_testhost::is_root() {
        true
    } else {
        println!("skipped: needs root");
        false
    }
}

/// A node namespace, a host-local data dir and weft's plugins.
pub struct Node {
    pub ns: weft_testhost::TestNs,
    pub plugins: PluginDir,
    pub data: tempfile::TempDir,
}

impl Node {
    pub fn new() -> Node {
        Node {
            ns: weft_testhost::TestNs::new(),
            plugins: PluginDir::new(),
            data: tempfile::tempdir().unwrap(),
        }
    }

    /// The plugin dir, as `CNI_PATH`.
    pub fn path(&self) -> String {
        self.plugins.path().display().to_string()
    }

    /// A call of `command` for a container namespace, plugins on CNI_PATH.
    pub fn call(&self, command: &str, container: &weft_testhost::TestNs, id: &str) -> Call {
        Call::new(command, id, &self.path()).netns(&container.ns().path().display().to_string())
    }

    /// Links of the node namespace, sorted.
    pub fn links(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .ns
            .netlink()
            .links()
            .unwrap()
            .into_iter()
            .map(|link| link.name)
            .collect();
        names.sort();
        names
    }

    /// Addresses host-local holds for `network`, sorted.
    pub fn allocations(&self, network: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.data.path().join(network))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}
