//! Namespace-local sysctls (`net.*`), read and written through procfs from a
//! thread that has joined the namespace: `/proc/sys/net` shows the network
//! namespace of the thread that opens it, so no `sysctl` binary and no
//! process per call are needed.
//!
//! Keys use the `sysctl` spelling. Because interface names may contain dots
//! (`weft.vxlan`), a key may also be given in slash form
//! (`net/ipv4/conf/weft.vxlan/rp_filter`); [`iface_key`] builds that form.
//! Only `net.*` keys are accepted: everything else is global to the host.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::{Error, NetNs};

/// `net.ipv4.ip_forward`.
pub const IPV4_FORWARD: &str = "net.ipv4.ip_forward";
/// `net.ipv6.conf.all.forwarding`.
pub const IPV6_FORWARD: &str = "net.ipv6.conf.all.forwarding";

/// The slash-form key of a per-interface setting, e.g.
/// `iface_key("ipv4", "weft.vxlan", "rp_filter")` is
/// `net/ipv4/conf/weft.vxlan/rp_filter`. `iface` may be `all` or `default`.
pub fn iface_key(family: &str, iface: &str, setting: &str) -> String {
    format!("net/{family}/conf/{iface}/{setting}")
}

fn proc_path(key: &str) -> Result<PathBuf, Error> {
    let slash_form = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    let valid = slash_form.starts_with("net/")
        && slash_form
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if !valid {
        return Err(Error::InvalidName {
            kind: "namespace-local sysctl",
            name: key.to_owned(),
        });
    }
    Ok(PathBuf::from("/proc/sys").join(slash_form))
}

fn sysctl_error(key: &str, ns: &NetNs, source: io::Error) -> Error {
    Error::Sysctl {
        key: key.to_owned(),
        ns: ns.name().to_owned(),
        source,
    }
}

/// Reads a sysctl inside `ns`, without the trailing newline.
pub fn read(ns: &NetNs, key: &str) -> Result<String, Error> {
    let path = proc_path(key)?;
    ns.run(|| fs::read_to_string(&path))?
        .map(|value| value.trim_end().to_owned())
        .map_err(|err| sysctl_error(key, ns, err))
}

/// Sets a sysctl inside `ns` to `value` unless it already has it; returns
/// whether it was changed.
pub fn ensure(ns: &NetNs, key: &str, value: &str) -> Result<bool, Error> {
    let path = proc_path(key)?;
    ns.run(|| -> io::Result<bool> {
        let current = fs::read_to_string(&path)?;
        if current.trim_end() == value {
            return Ok(false);
        }
        fs::write(&path, value)?;
        Ok(true)
    })?
    .map_err(|err| sysctl_error(key, ns, err))
}

/// Sets a sysctl of the calling thread's own namespace to `value` unless it
/// already has it; returns whether it was changed. Same as [`ensure`] with
/// [`NetNs::current`], without starting a thread to join the namespace the
/// caller is already in (short-lived CNI plugins count every thread).
pub fn ensure_here(key: &str, value: &str) -> Result<bool, Error> {
    let path = proc_path(key)?;
    let changed = || -> io::Result<bool> {
        let current = fs::read_to_string(&path)?;
        if current.trim_end() == value {
            return Ok(false);
        }
        fs::write(&path, value)?;
        Ok(true)
    };
    changed().map_err(|err| sysctl_error(key, &NetNs::current(), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_keys_map_to_proc_paths() {
        assert_eq!(
            proc_path(IPV4_FORWARD).unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
    }

    #[test]
    fn slash_keys_keep_dotted_interface_names() {
        let key = iface_key("ipv4", "weft.vxlan", "rp_filter");
        assert_eq!(
            proc_path(&key).unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/weft.vxlan/rp_filter")
        );
    }

    #[test]
    fn non_network_and_escaping_keys_are_refused() {
        for key in ["kernel.hostname", "net/../kernel/hostname", "net//x", ""] {
            assert!(
                matches!(proc_path(key), Err(Error::InvalidName { .. })),
                "{key} accepted"
            );
        }
    }
}
