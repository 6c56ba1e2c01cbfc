//! Where everything of one lab lives, as pure naming rules: its state
//! directory, its namespaces (`weft-<lab>-…`), its addresses on the
//! underlay LAN. Every other module asks here instead of spelling a name.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

/// Root of every lab's state.
pub const STATE_ROOT: &str = "/var/lib/weft/lab";
/// The underlay LAN every node and the external host sit on.
pub const LAN: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 10, 0), 24);
/// The LAN's router (in the LAN namespace): the nodes' default gateway.
pub const LAN_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 1);
/// The external host's address.
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 100);
/// Name of the LAN bridge inside the LAN namespace.
pub const LAN_BRIDGE: &str = "lan0";
/// Most nodes a lab can have (addresses .11 to .99).
pub const MAX_NODES: u8 = 89;

/// The naming rules of one lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Lab name.
    pub name: String,
    /// State directory (`/var/lib/weft/lab/<name>`, or another root in tests).
    pub dir: PathBuf,
}

/// A name that is not usable for a lab.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lab name {0:?}: use 1-16 lowercase letters or digits")]
pub struct InvalidLabName(pub String);

impl Layout {
    /// The layout of lab `name` under `root`.
    pub fn new(root: &Path, name: &str) -> Result<Layout, InvalidLabName> {
        // No '-': "weft-<lab>-" must never be a prefix of another lab's names.
        let valid = !name.is_empty()
            && name.len() <= 16
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !valid {
            return Err(InvalidLabName(name.to_owned()));
        }
        Ok(Layout {
            name: name.to_owned(),
            dir: root.join(name),
        })
    }

    /// Prefix of every namespace of this lab.
    pub fn prefix(&self) -> String {
        format!("weft-{}-", self.name)
    }

    /// The LAN namespace (holds the LAN bridge and the gateway address).
    pub fn lan_ns(&self) -> String {
        format!("{}lan", self.prefix())
    }

    /// The external host's namespace.
    pub fn external_ns(&self) -> String {
        format!("{}external", self.prefix())
    }

    /// Node `i`'s name (1-based): `node-1`.
    pub fn node_name(i: u8) -> String {
        format!("node-{i}")
    }

    /// Node `i`'s namespace.
    pub fn node_ns(&self, i: u8) -> String {
        format!("{}node-{i}", self.prefix())
    }

    /// Node `i`'s LAN address.
    pub fn node_ip(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 10, 10 + i)
    }

    /// The namespace of pod `namespace/name`.
    pub fn pod_ns(&self, namespace: &str, name: &str) -> String {
        format!("{}pod-{namespace}-{name}", self.prefix())
    }

    /// The object store.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// The CNI bin dir shared by the nodes (weft's plugins).
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// Per-node state: CNI config, IPAM data, logs, pid files.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }

    /// The node's CNI config dir (the lab's `/etc/cni/net.d`).
    pub fn cni_conf_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("net.d")
    }

    /// The node's host-local data dir.
    pub fn ipam_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("ipam")
    }

    /// Where the pods' state files and logs go.
    pub fn pods_dir(&self) -> PathBuf {
        self.dir.join("pods")
    }

    /// The lab's settings file.
    pub fn settings_file(&self) -> PathBuf {
        self.dir.join("lab.json")
    }

    /// Directory of a pod's `/etc/netns` files (its resolv.conf).
    pub fn etc_netns(&self, pod_ns: &str) -> PathBuf {
        Path::new("/etc/netns").join(pod_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_follow_the_lab_name_and_node_index() {
        let layout = Layout::new(Path::new(STATE_ROOT), "demo").unwrap();
        assert_eq!(layout.node_ns(2), "weft-demo-node-2");
        assert_eq!(layout.lan_ns(), "weft-demo-lan");
        assert_eq!(layout.external_ns(), "weft-demo-external");
        assert_eq!(
            layout.pod_ns("default", "web-0"),
            "weft-demo-pod-default-web-0"
        );
        assert_eq!(Layout::node_ip(2), Ipv4Addr::new(192, 168, 10, 12));
        assert_eq!(
            layout.store_dir(),
            PathBuf::from("/var/lib/weft/lab/demo/store")
        );
        assert!(LAN.contains(&EXTERNAL_IP) && LAN.contains(&Layout::node_ip(MAX_NODES)));
    }

    #[test]
    fn lab_names_that_would_break_namespace_names_are_refused() {
        for bad in [
            "",
            "Demo",
            "a/b",
            "-x",
            "a_b",
            "demo-2",
            "thisnameisfartoolong",
        ] {
            assert!(
                Layout::new(Path::new("/x"), bad).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
