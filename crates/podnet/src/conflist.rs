//! The node's CNI configuration, the way flannel hands a node its subnet
//! through `subnet.env`: a conflist chaining `bridge` (with `host-local`
//! IPAM over this node's pod subnet) and `portmap`, plus a `loopback`
//! config beside it (runtimes call loopback as its own network, since it
//! configures `lo` rather than the pod's interface). Files are written
//! atomically (temporary file, then rename) and only when their content
//! changes, so a runtime never reads half a config.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::plan::Plan;

/// File name of the main conflist (sorted first, as runtimes pick the
/// first file in the directory).
pub const CONFLIST_FILE: &str = "10-weft.conflist";
/// File name of the loopback config.
pub const LOOPBACK_FILE: &str = "99-loopback.conf";

/// Choices that are not part of the pod network plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflistOptions {
    /// Network name (`name` in the conflist; host-local's data dir name).
    pub network: String,
    /// Prefix of the plugin names: empty for `bridge`, `host-local`, … (drop-in
    /// for the reference plugins), `weft-` to sit beside them.
    pub plugin_prefix: String,
    /// host-local `dataDir`; the plugin's default `/var/lib/cni/networks`
    /// when `None`.
    pub ipam_data_dir: Option<PathBuf>,
}

impl Default for ConflistOptions {
    fn default() -> Self {
        ConflistOptions {
            network: "weft".to_owned(),
            plugin_prefix: String::new(),
            ipam_data_dir: None,
        }
    }
}

/// The conflist for this node's plan.
pub fn conflist(plan: &Plan, options: &ConflistOptions) -> Value {
    let prefix = &options.plugin_prefix;
    let default_route = if plan.pod_cidr.addr().is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    let mut ipam = json!({
        "type": format!("{prefix}host-local"),
        "ranges": [[{
            "subnet": plan.pod_cidr.to_string(),
            "gateway": plan.gateway.addr().to_string(),
        }]],
        "routes": [{ "dst": default_route }],
    });
    if let (Some(dir), Some(object)) = (&options.ipam_data_dir, ipam.as_object_mut()) {
        object.insert("dataDir".to_owned(), json!(dir.display().to_string()));
    }
    let mut bridge = json!({
        "type": format!("{prefix}bridge"),
        "bridge": plan.config.bridge,
        "isGateway": true,
        "isDefaultGateway": true,
        "hairpinMode": true,
        "mtu": plan.mtu,
        "ipam": ipam,
    });
    if let (Some(size), Some(object)) = (plan.gso_max_size, bridge.as_object_mut()) {
        object.insert("gsoMaxSize".to_owned(), json!(size));
    }
    json!({
        "cniVersion": "1.1.0",
        "name": options.network,
        "plugins": [
            bridge,
            {
                "type": format!("{prefix}portmap"),
                "capabilities": { "portMappings": true },
            },
        ],
    })
}

/// The loopback network config.
pub fn loopback(options: &ConflistOptions) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "cni-loopback",
        "type": format!("{}loopback", options.plugin_prefix),
    })
}

/// Writes both files into `dir` (created if missing); returns whether any
/// file changed.
pub fn write(dir: &Path, plan: &Plan, options: &ConflistOptions) -> io::Result<bool> {
    fs::create_dir_all(dir)?;
    let main = write_if_changed(&dir.join(CONFLIST_FILE), &conflist(plan, options))?;
    let lo = write_if_changed(&dir.join(LOOPBACK_FILE), &loopback(options))?;
    Ok(main || lo)
}

fn write_if_changed(path: &Path, value: &Value) -> io::Result<bool> {
    let mut text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    text.push('\n');
    if fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(false);
    }
    let file_name = path
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "config path has no file name")
        })?;
    // A dot prefix and a non-.conf suffix keep runtimes from loading it half-written.
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut file = fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Config, Mode, NodeNet, plan};

    fn vxlan_plan() -> Plan {
        let nodes = [NodeNet {
            name: "node-1".into(),
            address: "192.168.10.11".parse().unwrap(),
            pod_cidr: Some("10.244.1.0/24".parse().unwrap()),
        }];
        let config = Config {
            mode: Mode::Vxlan,
            ..Config::default()
        };
        plan(&config, "node-1", &nodes).unwrap()
    }

    #[test]
    fn conflist_chains_bridge_with_host_local_on_the_node_subnet_then_portmap() {
        let options = ConflistOptions {
            ipam_data_dir: Some("/var/lib/weft/lab/x/node-1/ipam".into()),
            ..ConflistOptions::default()
        };
        let value = conflist(&vxlan_plan(), &options);
        assert_eq!(value["cniVersion"], "1.1.0");
        assert_eq!(value["name"], "weft");
        let bridge = &value["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "cni0");
        assert_eq!(bridge["mtu"], 1450);
        assert_eq!(bridge["isDefaultGateway"], true);
        assert_eq!(bridge["ipam"]["type"], "host-local");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.244.1.0/24");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["gateway"], "10.244.1.1");
        assert_eq!(bridge["ipam"]["dataDir"], "/var/lib/weft/lab/x/node-1/ipam");
        assert_eq!(value["plugins"][1]["type"], "portmap");
        assert_eq!(value["plugins"][1]["capabilities"]["portMappings"], true);
    }

    #[test]
    fn a_prefix_names_the_plugins_that_sit_beside_the_reference_ones() {
        let options = ConflistOptions {
            plugin_prefix: "weft-".into(),
            ..ConflistOptions::default()
        };
        let value = conflist(&vxlan_plan(), &options);
        assert_eq!(value["plugins"][0]["type"], "weft-bridge");
        assert_eq!(value["plugins"][0]["ipam"]["type"], "weft-host-local");
        assert_eq!(loopback(&options)["type"], "weft-loopback");
    }

    #[test]
    fn files_are_written_once_and_rewritten_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let plan = vxlan_plan();
        let options = ConflistOptions::default();
        assert!(write(dir.path(), &plan, &options).unwrap());
        assert!(!write(dir.path(), &plan, &options).unwrap());
        let written: Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join(CONFLIST_FILE)).unwrap())
                .unwrap();
        assert_eq!(written, conflist(&plan, &options));
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [CONFLIST_FILE, LOOPBACK_FILE],
            "temporary files left"
        );
    }

    #[test]
    fn gso_max_size_goes_to_the_bridge_plugin_only_when_raised() {
        let plain = conflist(&vxlan_plan(), &ConflistOptions::default());
        assert!(plain["plugins"][0].get("gsoMaxSize").is_none());
        let nodes = [NodeNet {
            name: "node-1".into(),
            address: "192.168.10.11".parse().unwrap(),
            pod_cidr: Some("10.244.1.0/24".parse().unwrap()),
        }];
        let config = Config {
            uplink_gso_max_size: 196_608,
            ..Config::default()
        };
        let plan = plan(&config, "node-1", &nodes).unwrap();
        let big = conflist(&plan, &ConflistOptions::default());
        assert_eq!(big["plugins"][0]["gsoMaxSize"], 196_608);
    }
}
