//! The lab kubelet's container-runtime half: calling CNI plugins exactly as
//! a runtime does (libcni's rules): the node's conflist is read from its
//! config dir, each plugin is exec'ed from the bin dir with the `CNI_*`
//! environment and its config on stdin — `cniVersion` and `name` from the
//! list, the previous plugin's result as `prevResult`, `runtimeConfig` for
//! the capabilities it declares — ADD in order, DEL in reverse. The
//! loopback config beside the list is called for `lo`. Plugins run inside
//! the node's namespace, like a runtime on that node.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Map, Value, json};
use weft_linux::NetNs;

/// A failed plugin call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CniError {
    /// The node's CNI config is missing or unreadable.
    #[error("reading CNI config {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The plugin could not be run, or answered with an error.
    #[error("CNI {command} with plugin {plugin}: {message}")]
    Plugin {
        /// ADD or DEL.
        command: &'static str,
        /// Plugin type.
        plugin: String,
        /// The plugin's error message (or the exec failure).
        message: String,
    },
}

/// One container attachment.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// `CNI_CONTAINERID` (the pod's uid).
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: PathBuf,
    /// Pod namespace and name, passed in `CNI_ARGS` as Kubernetes runtimes do.
    pub pod: (String, String),
    /// `portMappings` capability: (hostPort, containerPort, protocol).
    pub port_mappings: Vec<(u16, u16, String)>,
}

/// The runtime for one node.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Plugin binaries (`CNI_PATH`).
    pub bin_dir: PathBuf,
    /// The node's CNI config dir.
    pub conf_dir: PathBuf,
    /// The node's namespace, where plugins run.
    pub node: NetNs,
}

/// The conflist the agent writes into each node's CNI config dir.
pub(crate) const CONFLIST: &str = "10-weft.conflist";
const LOOPBACK: &str = "99-loopback.conf";

fn read_json(path: &Path) -> Result<Value, CniError> {
    let text = std::fs::read_to_string(path).map_err(|err| CniError::Config {
        path: path.to_owned(),
        reason: err.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|err| CniError::Config {
        path: path.to_owned(),
        reason: err.to_string(),
    })
}

/// The stdin config of one plugin of a list (pure).
pub fn plugin_config(
    list: &Value,
    plugin: &Value,
    prev_result: Option<&Value>,
    attachment: &Attachment,
) -> Value {
    let mut config: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
    config.insert("cniVersion".into(), list["cniVersion"].clone());
    config.insert("name".into(), list["name"].clone());
    if let Some(prev) = prev_result {
        config.insert("prevResult".into(), prev.clone());
    }
    let wants_ports = plugin["capabilities"]["portMappings"] == json!(true);
    if wants_ports && !attachment.port_mappings.is_empty() {
        let mappings: Vec<Value> = attachment
            .port_mappings
            .iter()
            .map(|(host, container, protocol)| {
                json!({"hostPort": host, "containerPort": container, "protocol": protocol.to_lowercase()})
            })
            .collect();
        config.insert("runtimeConfig".into(), json!({ "portMappings": mappings }));
    }
    config.remove("capabilities");
    Value::Object(config)
}

impl Runtime {
    fn exec(
        &self,
        command: &'static str,
        config: &Value,
        attachment: &Attachment,
        ifname: &str,
    ) -> Result<Value, CniError> {
        let plugin = config["type"].as_str().unwrap_or_default().to_owned();
        let fail = |message: String| CniError::Plugin {
            command,
            plugin: plugin.clone(),
            message,
        };
        if plugin.is_empty() || plugin.contains('/') {
            return Err(fail("the config has no usable plugin type".into()));
        }
        let mut process = Command::new(self.bin_dir.join(&plugin));
        process
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &attachment.container_id)
            .env("CNI_NETNS", &attachment.netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.bin_dir)
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                    attachment.pod.0, attachment.pod.1
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .node
            .spawn(&mut process)
            .map_err(|err| fail(err.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin may answer without reading its config; a closed pipe is fine.
            let _ = stdin.write_all(config.to_string().as_bytes());
        }
        let output = child
            .wait_with_output()
            .map_err(|err| fail(err.to_string()))?;
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if !output.status.success() {
            let message = answer["msg"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&output.stderr).trim().to_owned());
            return Err(fail(message));
        }
        Ok(answer)
    }

    /// CNI ADD: loopback for `lo`, then the list for `eth0`; returns the
    /// final result and the pod's first IP.
    pub fn add(&self, attachment: &Attachment) -> Result<(Value, IpAddr), CniError> {
        let loopback = read_json(&self.conf_dir.join(LOOPBACK))?;
        self.exec("ADD", &loopback, attachment, "lo")?;
        let list = read_json(&self.conf_dir.join(CONFLIST))?;
        let mut result: Option<Value> = None;
        for plugin in list["plugins"].as_array().into_iter().flatten() {
            let config = plugin_config(&list, plugin, result.as_ref(), attachment);
            result = Some(self.exec("ADD", &config, attachment, "eth0")?);
        }
        let result = result.unwrap_or(Value::Null);
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|cidr| cidr.split('/').next())
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| CniError::Plugin {
                command: "ADD",
                plugin: "chain".into(),
                message: format!("the result has no IP address: {result}"),
            })?;
        Ok((result, ip))
    }

    /// CNI DEL in reverse order with the ADD result as `prevResult`; every
    /// plugin is called even if one fails, and the first failure returned.
    pub fn del(
        &self,
        attachment: &Attachment,
        prev_result: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut first_error = None;
        match read_json(&self.conf_dir.join(CONFLIST)) {
            Ok(list) => {
                let plugins: Vec<&Value> =
                    list["plugins"].as_array().into_iter().flatten().collect();
                for plugin in plugins.into_iter().rev() {
                    let config = plugin_config(&list, plugin, prev_result, attachment);
                    if let Err(err) = self.exec("DEL", &config, attachment, "eth0") {
                        first_error.get_or_insert(err);
                    }
                }
            }
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
        if let Ok(loopback) = read_json(&self.conf_dir.join(LOOPBACK)) {
            if let Err(err) = self.exec("DEL", &loopback, attachment, "lo") {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(ports: Vec<(u16, u16, String)>) -> Attachment {
        Attachment {
            container_id: "uid-1".into(),
            netns: "/run/netns/x".into(),
            pod: ("default".into(), "web-0".into()),
            port_mappings: ports,
        }
    }

    #[test]
    fn each_plugin_gets_the_list_version_name_and_previous_result() {
        let list = json!({"cniVersion": "1.1.0", "name": "weft", "plugins": [{"type": "bridge"}]});
        let prev = json!({"cniVersion": "1.1.0", "ips": []});
        let config = plugin_config(&list, &list["plugins"][0], Some(&prev), &attachment(vec![]));
        assert_eq!(
            config,
            json!({"type": "bridge", "cniVersion": "1.1.0", "name": "weft", "prevResult": prev})
        );
    }

    #[test]
    fn port_mappings_go_to_plugins_declaring_the_capability_only() {
        let list = json!({"cniVersion": "1.1.0", "name": "weft", "plugins": [
            {"type": "bridge"},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]});
        let ports = attachment(vec![(8080, 80, "TCP".into())]);
        let bridge = plugin_config(&list, &list["plugins"][0], None, &ports);
        assert!(bridge.get("runtimeConfig").is_none());
        let portmap = plugin_config(&list, &list["plugins"][1], None, &ports);
        assert_eq!(
            portmap["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
        assert!(portmap.get("capabilities").is_none());
    }
}
