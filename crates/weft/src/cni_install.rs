//! `weft cni install --bin-dir DIR`: puts the weft binary into a CNI bin
//! directory once and links every plugin name to it, both the reference
//! names (`bridge`, `host-local`, `loopback`, `portmap`, so existing
//! conflists use weft unchanged) and the `weft-` names (so weft's plugins
//! can sit beside the reference ones).
//!
//! Writes are atomic (copy to a temporary name, then rename) so a runtime
//! exec'ing a plugin during the install sees the old or the new binary,
//! never half of one. A plain name held by a file that is not weft's (a
//! reference plugin) is left alone unless `--force` is given.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// File name of the installed binary inside the bin dir.
const INSTALLED_BINARY: &str = "weft";

/// Flags of `weft cni install`.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The CNI bin directory (for example /opt/cni/bin).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: PathBuf,
    /// Also replace plain-named plugins that are not weft's (the reference
    /// plugins); without it only the weft-* names are added next to them.
    #[arg(long)]
    pub force: bool,
}

/// Installs the running binary and the plugin links; prints one line per name.
pub fn install(args: &InstallArgs, out: &mut dyn Write) -> Result<()> {
    let dir = &args.bin_dir;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let source = std::env::current_exe().context("finding the running weft binary")?;
    let target = dir.join(INSTALLED_BINARY);
    copy_atomically(&source, &target)?;
    writeln!(out, "installed {}", target.display())?;

    for plugin in weft_cni::PLUGIN_NAMES {
        link(dir, &format!("weft-{plugin}"), true, out)?;
        link(dir, plugin, args.force, out)?;
    }
    Ok(())
}

fn copy_atomically(source: &Path, target: &Path) -> Result<()> {
    if fs::canonicalize(source).ok() == fs::canonicalize(target).ok() {
        return Ok(()); // installing the installed binary onto itself
    }
    let temporary =
        target.with_file_name(format!(".{INSTALLED_BINARY}.{}.tmp", std::process::id()));
    fs::copy(source, &temporary)
        .with_context(|| format!("copying {} to {}", source.display(), temporary.display()))?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(0o755))?;
    fs::rename(&temporary, target)
        .with_context(|| format!("renaming into {}", target.display()))?;
    Ok(())
}

/// Whether `path` is one of ours: a link to the installed binary.
fn is_ours(path: &Path) -> bool {
    fs::read_link(path).is_ok_and(|to| to == Path::new(INSTALLED_BINARY))
}

fn link(dir: &Path, name: &str, replace_foreign: bool, out: &mut dyn Write) -> Result<()> {
    let path = dir.join(name);
    let exists = fs::symlink_metadata(&path).is_ok();
    if exists && is_ours(&path) {
        writeln!(out, "{name}: already linked")?;
        return Ok(());
    }
    if exists && !replace_foreign {
        writeln!(
            out,
            "{name}: left alone (another plugin of that name is installed; --force replaces it)"
        )?;
        return Ok(());
    }
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&temporary);
    symlink(INSTALLED_BINARY, &temporary)
        .with_context(|| format!("linking {}", temporary.display()))?;
    fs::rename(&temporary, &path).with_context(|| format!("renaming into {}", path.display()))?;
    writeln!(out, "{name} -> {INSTALLED_BINARY}")?;
    Ok(())
}
