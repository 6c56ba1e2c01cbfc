//! Delegation to stand-in plugins (shell scripts) on a temporary `CNI_PATH`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::CniArgs;

/// A directory holding one executable shell script `name`.
fn script_dir(name: &str, body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn args_for(dir: &Path) -> CmdArgs {
    CmdArgs {
        command: Command::Add,
        container_id: "c1".into(),
        netns: Some("/run/netns/x".into()),
        ifname: "eth0".into(),
        args: CniArgs::parse("IgnoreUnknown=1").unwrap(),
        path: format!("/nonexistent:{}", dir.display()),
    }
}

#[test]
fn delegated_add_sees_the_same_environment_and_stdin_and_its_result_is_parsed() {
    let dir = script_dir(
        "fake-ipam",
        r#"read conf
[ "$conf" = '{"x":1}' ] || exit 3
[ "$CNI_COMMAND/$CNI_CONTAINERID/$CNI_IFNAME/$CNI_NETNS/$CNI_ARGS" = "ADD/c1/eth0//run/netns/x/IgnoreUnknown=1" ] || exit 4
echo '{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.9.0.2/24","gateway":"10.9.0.1"}]}'"#,
    );
    let result = add("fake-ipam", &args_for(dir.path()), b"{\"x\":1}\n").unwrap();
    assert_eq!(result.ips[0].address.to_string(), "10.9.0.2/24");
    assert_eq!(result.ips[0].gateway, Some("10.9.0.1".parse().unwrap()));
}

#[test]
fn delegated_plugin_error_keeps_its_code_and_message() {
    let dir = script_dir(
        "fake-ipam",
        r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"range full","details":"d"}'; exit 1"#,
    );
    let err = run("fake-ipam", Command::Del, &args_for(dir.path()), b"{}").unwrap_err();
    assert_eq!(err.code, ErrorCode::TryAgainLater);
    assert_eq!(err.msg, "range full");
}

#[test]
fn delegated_plugin_failing_without_json_is_reported_with_its_output() {
    let dir = script_dir("fake-ipam", "echo boom >&2; exit 2");
    let err = run("fake-ipam", Command::Del, &args_for(dir.path()), b"{}").unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal);
    assert!(err.details.contains("boom"), "{}", err.details);
}

#[test]
fn plugin_missing_from_cni_path_is_error_7() {
    let dir = tempfile::tempdir().unwrap();
    let err = run("nothere", Command::Add, &args_for(dir.path()), b"{}").unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidNetworkConfig);
    let err = run("../bin/sh", Command::Add, &args_for(dir.path()), b"{}").unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidNetworkConfig);
}
