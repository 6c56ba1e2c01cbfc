//! The plugin skeleton: the [`Plugin`] trait every plugin implements, and
//! [`run_plugin`], which reads the environment and stdin, negotiates the
//! version, dispatches the command and prints the result or the spec's JSON
//! error, returning the process exit code. A plugin binary's `main` is one
//! call to it.

use std::io::{Read, Write};

use serde_json::Value;

use crate::{CmdArgs, CniError, CniResult, Command, ErrorCode, NetConf, Version, VersionInfo};

/// One CNI plugin. Every method runs synchronously in the plugin process.
pub trait Plugin {
    /// The plugin's name (its reference binary's name).
    fn name(&self) -> &'static str;

    /// `CNI_ARGS` keys the plugin understands, when it reads `CNI_ARGS` at
    /// all: then other keys are error code 4 unless `IgnoreUnknown` is set.
    /// `None` (the default) ignores `CNI_ARGS`, as reference plugins that do
    /// not read it do.
    fn known_args(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// ADD: attach, and return the result to print.
    fn add(&self, args: &CmdArgs, conf: &NetConf) -> Result<CniResult, CniError>;

    /// DEL: detach; succeeds when there is nothing left to detach.
    fn del(&self, args: &CmdArgs, conf: &NetConf) -> Result<(), CniError>;

    /// CHECK: error when the attachment is not as ADD left it.
    fn check(&self, args: &CmdArgs, conf: &NetConf) -> Result<(), CniError>;

    /// STATUS: error 50 or 51 when ADDs cannot be served.
    fn status(&self, _args: &CmdArgs, _conf: &NetConf) -> Result<(), CniError> {
        Ok(())
    }

    /// GC: remove what belongs to no attachment in
    /// [`NetConf::valid_attachments`].
    fn gc(&self, _args: &CmdArgs, _conf: &NetConf) -> Result<(), CniError> {
        Ok(())
    }
}

/// Runs one plugin call as the spec describes it: `env` looks up the
/// `CNI_*` variables, the configuration is read from `stdin`, the result
/// (ADD), the version reply (VERSION) or the JSON error goes to `stdout`.
/// Returns the exit code: 0 on success, 1 after printing an error.
///
/// Without `CNI_COMMAND` it prints what the plugin is to stderr and returns
/// 0, like the reference plugins.
pub fn run_plugin(
    plugin: &dyn Plugin,
    env: impl Fn(&str) -> Option<String>,
    mut stdin: impl Read,
    mut stdout: impl Write,
) -> i32 {
    if env("CNI_COMMAND").is_none_or(|command| command.is_empty()) {
        eprintln!(
            "CNI {} plugin (weft)\nCNI protocol versions supported: {}",
            plugin.name(),
            VersionInfo::current().supported_versions.join(", ")
        );
        return 0;
    }
    if env("CNI_COMMAND").as_deref() == Some("VERSION") {
        return print_json(&mut stdout, &version_reply());
    }
    let mut bytes = Vec::new();
    if let Err(err) = stdin.read_to_end(&mut bytes) {
        let error =
            CniError::new(ErrorCode::Io, "error reading from stdin").with_details(err.to_string());
        return print_error(&mut stdout, &error, Version::LATEST);
    }
    // Errors are reported in the configuration's version when it has one we speak.
    let reply_version = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|raw| NetConf::version_of(&raw).ok())
        .unwrap_or(Version::LATEST);
    match dispatch(plugin, &env, &bytes) {
        Ok(Some((result, version))) => print_json(&mut stdout, &result.to_json(version)),
        Ok(None) => 0,
        Err(error) => print_error(&mut stdout, &error, reply_version),
    }
}

fn dispatch(
    plugin: &dyn Plugin,
    env: &dyn Fn(&str) -> Option<String>,
    bytes: &[u8],
) -> Result<Option<(CniResult, Version)>, CniError> {
    let args = CmdArgs::from_env(env)?;
    let conf = NetConf::parse(bytes)?;
    if let Some(known) = plugin.known_args() {
        args.args.check_known(known)?;
    }
    let version = conf.cni_version;
    let refuse = |what: &str| {
        CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("config version does not allow {what}"),
        )
        .with_details(format!("config is {version}"))
    };
    match args.command {
        Command::Add => plugin
            .add(&args, &conf)
            .map(|result| Some((result, version))),
        Command::Del => plugin.del(&args, &conf).map(|()| None),
        Command::Check if version.allows_check() => plugin.check(&args, &conf).map(|()| None),
        Command::Check => Err(refuse("CHECK")),
        Command::Status if version.allows_status_and_gc() => {
            plugin.status(&args, &conf).map(|()| None)
        }
        Command::Status => Err(refuse("STATUS")),
        Command::Gc if version.allows_status_and_gc() => plugin.gc(&args, &conf).map(|()| None),
        Command::Gc => Err(refuse("GC")),
        Command::Version => Ok(None),
    }
}

fn version_reply() -> Value {
    serde_json::to_value(VersionInfo::current()).unwrap_or(Value::Null)
}

fn print_json(stdout: &mut dyn Write, value: &Value) -> i32 {
    let written = serde_json::to_writer(&mut *stdout, value)
        .map_err(std::io::Error::from)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn print_error(stdout: &mut dyn Write, error: &CniError, version: Version) -> i32 {
    print_json(stdout, &error.to_json(version.as_str()));
    1
}

#[cfg(test)]
mod tests;
