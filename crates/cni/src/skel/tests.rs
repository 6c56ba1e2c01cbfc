//! The skeleton with a recording plugin: dispatch, version gates, output.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::{Value, json};

use super::*;
use crate::IpConfig;

/// Records the commands it receives; ADD returns one address.
#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<Command>>,
}

impl Plugin for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn add(&self, args: &CmdArgs, _conf: &NetConf) -> Result<CniResult, CniError> {
        self.calls.borrow_mut().push(args.command);
        Ok(CniResult {
            ips: vec![IpConfig {
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: None,
                interface: None,
            }],
            ..CniResult::default()
        })
    }
    fn del(&self, args: &CmdArgs, _conf: &NetConf) -> Result<(), CniError> {
        self.calls.borrow_mut().push(args.command);
        Err(CniError::new(ErrorCode::TryAgainLater, "busy").with_details("try later"))
    }
    fn check(&self, args: &CmdArgs, _conf: &NetConf) -> Result<(), CniError> {
        self.calls.borrow_mut().push(args.command);
        Ok(())
    }
}

fn call(plugin: &Recorder, command: &str, conf: &Value) -> (i32, Value, String) {
    let env: HashMap<&str, &str> = [
        ("CNI_ARGS", "K8S_POD_NAME=web"),
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/bin"),
    ]
    .into_iter()
    .collect();
    let mut out = Vec::new();
    let code = run_plugin(
        plugin,
        |key| env.get(key).map(|v| v.to_string()),
        conf.to_string().as_bytes(),
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (code, value, text)
}

#[test]
fn version_command_lists_every_supported_version() {
    let (code, out, _) = call(
        &Recorder::default(),
        "VERSION",
        &json!({"cniVersion": "1.1.0"}),
    );
    assert_eq!(code, 0);
    assert_eq!(
        out,
        json!({"cniVersion": "1.1.0",
               "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn add_prints_the_result_in_the_configured_version() {
    let plugin = Recorder::default();
    let (code, out, _) = call(&plugin, "ADD", &json!({"cniVersion": "0.3.1", "name": "n"}));
    assert_eq!(code, 0);
    assert_eq!(out["cniVersion"], "0.3.1");
    assert_eq!(
        out["ips"][0],
        json!({"version": "4", "address": "10.1.0.5/24"})
    );
    assert_eq!(*plugin.calls.borrow(), vec![Command::Add]);
}

#[test]
fn cni_args_are_not_checked_for_plugins_that_do_not_read_them() {
    let (code, _, _) = call(
        &Recorder::default(),
        "ADD",
        &json!({"cniVersion": "1.1.0", "name": "n"}),
    );
    assert_eq!(code, 0);
}

#[test]
fn plugin_errors_are_printed_as_spec_json_with_exit_code_1() {
    let (code, out, _) = call(
        &Recorder::default(),
        "DEL",
        &json!({"cniVersion": "1.0.0", "name": "n"}),
    );
    assert_eq!(code, 1);
    assert_eq!(
        out,
        json!({"cniVersion": "1.0.0", "code": 11, "msg": "busy", "details": "try later"})
    );
}

#[test]
fn check_is_refused_for_configs_older_than_0_4_0_without_calling_the_plugin() {
    let plugin = Recorder::default();
    let (code, out, _) = call(
        &plugin,
        "CHECK",
        &json!({"cniVersion": "0.3.1", "name": "n"}),
    );
    assert_eq!(code, 1);
    assert_eq!(out["code"], 1);
    assert!(plugin.calls.borrow().is_empty());
}

#[test]
fn gc_and_status_are_refused_before_1_1_0_and_succeed_silently_by_default() {
    for command in ["GC", "STATUS"] {
        let (code, out, _) = call(
            &Recorder::default(),
            command,
            &json!({"cniVersion": "1.0.0", "name": "n"}),
        );
        assert_eq!((code, out["code"].clone()), (1, json!(1)), "{command}");
        let (code, _, text) = call(
            &Recorder::default(),
            command,
            &json!({"cniVersion": "1.1.0", "name": "n"}),
        );
        assert_eq!((code, text.as_str()), (0, ""), "{command}");
    }
}

#[test]
fn malformed_config_is_error_6_reported_in_the_latest_version() {
    let plugin = Recorder::default();
    let mut out = Vec::new();
    let env = |key: &str| match key {
        "CNI_COMMAND" => Some("DEL".to_owned()),
        "CNI_CONTAINERID" => Some("c1".to_owned()),
        "CNI_IFNAME" => Some("eth0".to_owned()),
        "CNI_PATH" => Some("/bin".to_owned()),
        _ => None,
    };
    let code = run_plugin(&plugin, env, &b"{not json"[..], &mut out);
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(code, 1);
    assert_eq!(value["code"], 6);
    assert_eq!(value["cniVersion"], "1.1.0");
}

#[test]
fn without_cni_command_nothing_is_printed_on_stdout() {
    let mut out = Vec::new();
    let code = run_plugin(&Recorder::default(), |_| None, &b""[..], &mut out);
    assert_eq!(code, 0);
    assert!(out.is_empty());
}
