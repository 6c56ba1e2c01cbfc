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
    assert_eq!(err.code, ErrorCode::TryAgainLater, "{err:?}");
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

#[test]
fn only_the_same_file_counts_as_this_executable() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("weft");
    fs::write(&binary, b"binary").unwrap();
    let link = dir.path().join("host-local");
    std::os::unix::fs::symlink(&binary, &link).unwrap();
    let copy = dir.path().join("copy");
    fs::copy(&binary, &copy).unwrap();
    assert!(is_this_executable(&link, &binary));
    assert!(is_this_executable(&binary, &binary));
    assert!(!is_this_executable(&copy, &binary));
    assert!(!is_this_executable(&dir.path().join("missing"), &binary));
}

#[test]
fn only_host_local_runs_in_process() {
    assert!(runs_in_process("host-local"));
    assert!(runs_in_process("weft-host-local"));
    for other in ["bridge", "weft-portmap", "loopback", "static", "dhcp"] {
        assert!(!runs_in_process(other), "{other}");
    }
}

/// A bridge configuration delegating to host-local on a /30 (one free
/// address) under `data`.
fn host_local_conf(data: &Path) -> Vec<u8> {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"inproc","type":"bridge","ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.9.0.0/30"}}]],"dataDir":"{}"}}}}"#,
        data.display()
    )
    .into_bytes()
}

#[test]
fn host_local_in_process_allocates_releases_and_reports_errors_like_the_process() {
    let data = tempfile::tempdir().unwrap();
    let conf = host_local_conf(data.path());
    let mut args = args_for(data.path());
    let binary = Path::new("/proc/self/exe");
    let start = |command, args: &CmdArgs, conf: &[u8]| {
        start_in_process("host-local", binary, command, args, conf).unwrap()
    };
    let result = start(Command::Add, &args, &conf).wait_result().unwrap();
    assert_eq!(result.ips[0].address.to_string(), "10.9.0.2/30");
    let file = data.path().join("inproc").join("10.9.0.2");
    assert_eq!(fs::read_to_string(&file).unwrap(), "c1\r\neth0");

    // The range is full now: the spec's code 11 comes back through the JSON.
    args.container_id = "c2".into();
    let err = start(Command::Add, &args, &conf).wait_result().unwrap_err();
    assert_eq!(err.code, ErrorCode::TryAgainLater, "{err:?}");

    args.container_id = "c1".into();
    start(Command::Del, &args, &conf).wait().unwrap();
    assert!(!file.exists());

    // Bad input is reported as the plugin reports it, nothing allocated.
    let err = start(Command::Add, &args, b"{not json").wait().unwrap_err();
    assert_eq!(err.code, ErrorCode::Decode);
    let allocations = fs::read_dir(data.path().join("inproc"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("10.")
        })
        .count();
    assert_eq!(allocations, 0);
}

#[test]
fn a_plugin_file_still_open_for_writing_is_started_once_it_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy");
    let mut writer = fs::File::create(&path).unwrap();
    writer.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    // While the file is open for writing, exec fails with ETXTBSY.
    let busy = Process::new(&path).status().unwrap_err();
    assert_eq!(busy.kind(), std::io::ErrorKind::ExecutableFileBusy);
    let closer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(writer);
    });
    let status = spawn(&mut Process::new(&path)).unwrap().wait().unwrap();
    assert!(status.success());
    closer.join().unwrap();
}
