//! weft's CNI plugins (bridge, host-local, loopback, portmap), speaking CNI spec 1.1.0 (and 0.3.0 to 1.0.0) as
//! drop-in replacements for the reference plugins of
//! containernetworking/plugins: same configuration keys, same results, and
//! for host-local the same files on disk.
//!
//! The protocol ([`run_plugin`], [`NetConf`], [`CmdArgs`], [`CniResult`],
//! [`CniError`]) is pure; plugins are [`Plugin`] implementations looked up
//! by name with [`plugin_by_name`]. The `weft` multi-call binary calls
//! [`main_for`] with the name it was invoked as.
//!
//! Everything here is synchronous: a plugin is a process exec'ed for every
//! pod and must start and finish fast. This crate must not run an async
//! runtime, and must not touch namespaces other than the node's (the one it
//! runs in) and the container's (`CNI_NETNS`).

#![forbid(unsafe_code)]

pub mod bridge;
mod config;
pub mod delegate;
mod env;
mod error;
pub mod host_local;
mod kernel;
pub mod loopback;
mod nat_rules;
pub mod portmap;
mod result;
mod skel;
mod version;

use std::io;

pub use config::{Attachment, NetConf};
pub use env::{CmdArgs, CniArgs, Command};
pub use error::{CniError, ErrorCode};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use skel::{Plugin, run_plugin};
pub use version::{SUPPORTED_VERSIONS, Version, VersionInfo};

/// Names the plugins answer to: the reference names, and the same with a
/// `weft-` prefix so both can sit in one directory.
pub const PLUGIN_NAMES: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// The plugin called `name`: one of [`PLUGIN_NAMES`], optionally with a
/// `weft-` prefix.
pub fn plugin_by_name(name: &str) -> Option<Box<dyn Plugin>> {
    match name.strip_prefix("weft-").unwrap_or(name) {
        "bridge" => Some(Box::new(bridge::Bridge)),
        "host-local" => Some(Box::new(host_local::HostLocal)),
        "loopback" => Some(Box::new(loopback::Loopback)),
        "portmap" => Some(Box::new(portmap::Portmap)),
        _ => None,
    }
}

/// The whole `main` of a plugin binary invoked as `plugin_name` (the base
/// name of argv\[0\]): reads the process environment and stdin, writes to
/// stdout, returns the exit code. An unknown name prints error code 7.
pub fn main_for(plugin_name: &str) -> i32 {
    let env = |key: &str| std::env::var(key).ok();
    match plugin_by_name(plugin_name) {
        Some(plugin) => run_plugin(
            plugin.as_ref(),
            env,
            io::stdin().lock(),
            io::stdout().lock(),
        ),
        None => {
            let error = CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("unknown CNI plugin {plugin_name:?}"),
            )
            .with_details(format!("known plugins: {}", PLUGIN_NAMES.join(", ")));
            println!("{}", error.to_json(Version::LATEST.as_str()));
            1
        }
    }
}
