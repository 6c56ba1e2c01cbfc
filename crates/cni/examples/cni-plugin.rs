//! A CNI plugin executable for tests: installed (symlinked) as `bridge`,
//! `host-local`, `loopback`, `portmap`, or any of them with a `weft-` prefix, it
//! acts as that plugin, exactly as the `weft` multi-call binary does.

#![forbid(unsafe_code)]

use std::path::Path;

fn main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default()
        .to_owned();
    std::process::exit(weft_cni::main_for(&name));
}
