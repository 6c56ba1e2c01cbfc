//! `weft cni install` puts one binary and the plugin names into a bin dir,
//! and the installed names answer as CNI plugins.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Write;
use std::process::{Command, Stdio};

fn version_of(plugin: &std::path::Path) -> serde_json::Value {
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // VERSION may answer without reading its config: a closed pipe is fine.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"cniVersion":"1.1.0"}"#);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn installed_names_answer_version_and_foreign_plugins_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    // A "reference" plugin already installed under a plain name.
    std::fs::write(dir.path().join("portmap"), "#!/bin/sh\necho reference\n").unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["cni", "install", "--bin-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("portmap: left alone"), "{report}");

    for name in [
        "bridge",
        "host-local",
        "loopback",
        "weft-bridge",
        "weft-host-local",
        "weft-loopback",
        "weft-portmap",
    ] {
        let answer = version_of(&dir.path().join(name));
        let versions = answer["supportedVersions"].as_array().unwrap();
        assert!(versions.iter().any(|v| v == "1.1.0"), "{name}: {answer}");
        assert!(versions.iter().any(|v| v == "0.3.0"), "{name}: {answer}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("portmap")).unwrap(),
        "#!/bin/sh\necho reference\n"
    );

    // Installing again is a no-op; --force takes the plain name over.
    let again = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["cni", "install", "--force", "--bin-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&again.stdout);
    assert!(report.contains("bridge: already linked"), "{report}");
    assert!(report.contains("portmap -> weft"), "{report}");
    version_of(&dir.path().join("portmap"));
}
