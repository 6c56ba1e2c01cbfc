//! Reading `CNI_*` variables: what each command requires, and syntax checks.

use std::collections::HashMap;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |key| map.get(key).cloned()
}

const ADD: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "abc123"),
    ("CNI_NETNS", "/run/netns/blue"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
];

#[test]
fn add_environment_is_read_completely() {
    let args = CmdArgs::from_env(env_of(ADD)).unwrap();
    assert_eq!(args.command, Command::Add);
    assert_eq!(args.container_id, "abc123");
    assert_eq!(args.netns, Some(PathBuf::from("/run/netns/blue")));
    assert_eq!(args.ifname, "eth0");
    assert_eq!(args.args.get("K8S_POD_NAME"), Some("web"));
    assert_eq!(
        args.path_dirs(),
        vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
    );
}

#[test]
fn add_without_netns_is_error_4_naming_the_variable() {
    let pairs: Vec<_> = ADD
        .iter()
        .copied()
        .filter(|(k, _)| *k != "CNI_NETNS")
        .collect();
    let err = CmdArgs::from_env(env_of(&pairs)).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidEnvironment);
    assert_eq!(err.msg, "required env variables [CNI_NETNS] missing");
}

#[test]
fn del_without_netns_is_accepted() {
    let pairs: Vec<_> = ADD
        .iter()
        .copied()
        .filter(|(k, _)| *k != "CNI_NETNS" && *k != "CNI_COMMAND")
        .chain([("CNI_COMMAND", "DEL")])
        .collect();
    let args = CmdArgs::from_env(env_of(&pairs)).unwrap();
    assert_eq!(args.netns, None);
    assert_eq!(
        args.require_netns().unwrap_err().code,
        ErrorCode::InvalidEnvironment
    );
}

#[test]
fn status_and_gc_need_no_container_variables() {
    for command in ["STATUS", "GC"] {
        let args = CmdArgs::from_env(env_of(&[("CNI_COMMAND", command)])).unwrap();
        assert_eq!(args.command.as_str(), command);
    }
}

#[test]
fn unknown_command_is_error_4() {
    let err = CmdArgs::from_env(env_of(&[("CNI_COMMAND", "FROB")])).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidEnvironment);
    assert!(err.msg.contains("FROB"), "{}", err.msg);
}

#[test]
fn container_ids_and_interface_names_that_could_escape_a_path_are_refused() {
    for (key, value) in [
        ("CNI_CONTAINERID", "../etc"),
        ("CNI_CONTAINERID", "-abc"),
        ("CNI_IFNAME", "eth0/x"),
        ("CNI_IFNAME", "an-interface-name-too-long"),
        ("CNI_IFNAME", ".."),
    ] {
        let pairs: Vec<_> = ADD
            .iter()
            .copied()
            .filter(|(k, _)| *k != key)
            .chain([(key, value)])
            .collect();
        let err = CmdArgs::from_env(env_of(&pairs)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{key}={value}");
    }
}

#[test]
fn unknown_cni_args_are_refused_unless_ignore_unknown_is_set() {
    let strict = CniArgs::parse("IP=10.1.0.9;FOO=bar").unwrap();
    let err = strict.check_known(&["IP"]).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidEnvironment);
    assert!(err.msg.contains("FOO"), "{}", err.msg);
    let lenient = CniArgs::parse("IgnoreUnknown=true;FOO=bar").unwrap();
    assert_eq!(lenient.check_known(&["IP"]), Ok(()));
    assert_eq!(lenient.as_raw(), "IgnoreUnknown=true;FOO=bar");
}

#[test]
fn cni_args_pair_without_equals_or_key_is_error_4() {
    for raw in ["IgnoreUnknown=1;oops", "=x"] {
        let err = CniArgs::parse(raw).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{raw}");
        assert!(err.msg.contains("KEY=VALUE"), "{}", err.msg);
    }
}
