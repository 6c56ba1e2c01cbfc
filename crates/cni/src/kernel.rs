//! The plugins' view of the Linux layer: opening the container's namespace
//! from `CNI_NETNS` and turning [`weft_linux::Error`]s into CNI errors with
//! the right code (a vanished namespace is "container unknown", code 3; a
//! `CNI_NETNS` that is not a network namespace, or is the plugin's own, is
//! code 4; everything else is an I/O failure, code 5), keeping the cause in
//! `details`.

use std::path::Path;

use weft_linux::{NetNs, Netlink};

use crate::error::error_chain;
use crate::{CniError, ErrorCode};

/// A Linux-layer failure while doing `what`, as a CNI error.
pub fn linux_error(what: &str, err: &weft_linux::Error) -> CniError {
    let code = match err {
        weft_linux::Error::NamespaceNotFound(_) => ErrorCode::UnknownContainer,
        _ => ErrorCode::Io,
    };
    CniError::new(code, what.to_owned()).with_details(error_chain(err))
}

/// The container's namespace named by `CNI_NETNS`; a path that does not
/// exist is code 3.
pub fn container_namespace(path: &Path) -> Result<NetNs, CniError> {
    let ns = NetNs::from_path(path);
    if !ns.exists() {
        return Err(CniError::new(
            ErrorCode::UnknownContainer,
            format!("network namespace {} does not exist", path.display()),
        ));
    }
    // Joining it on a scratch thread is the safe probe: anything but a
    // network namespace (a plain file, another kind of namespace) is refused.
    if let Err(err) = ns.run(|| ()) {
        if matches!(err, weft_linux::Error::NamespaceNotFound(_)) {
            return Err(linux_error("opening the container's namespace", &err));
        }
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_NETNS {} is not a network namespace", path.display()),
        )
        .with_details(error_chain(&err)));
    }
    let identity = |file: &Path| {
        nix::sys::stat::stat(file)
            .ok()
            .map(|stat| (stat.st_dev, stat.st_ino))
    };
    let own = identity(Path::new("/proc/thread-self/ns/net"));
    if own.is_some() && identity(path) == own {
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!(
                "CNI_NETNS {} is the network namespace the plugin runs in (the node's), not a container's",
                path.display()
            ),
        ));
    }
    Ok(ns)
}

/// A netlink handle inside `ns`.
pub fn netlink_in(ns: &NetNs) -> Result<Netlink, CniError> {
    Netlink::in_namespace(ns).map_err(|err| linux_error("opening netlink in the container", &err))
}
