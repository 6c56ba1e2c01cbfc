//! `weft lab exec POD -- CMD…`: runs a command inside a pod's network
//! namespace with the pod's `/etc/netns/<pod-netns>/` files (its
//! resolv.conf) bind-mounted over `/etc`, as `ip netns exec` does.
//!
//! The calling process becomes the command: its only thread joins the pod's
//! network namespace, takes a private mount namespace for the bind mounts,
//! and execs. It must therefore be called before the process starts any
//! other thread (`unshare(CLONE_NEWNS)` refuses multi-threaded callers).

use std::convert::Infallible;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

use crate::LabError;
use crate::layout::Layout;

fn os(what: &str) -> impl FnOnce(nix::errno::Errno) -> LabError + '_ {
    move |errno| LabError::Io {
        what: what.to_owned(),
        source: errno.into(),
    }
}

/// Replaces this process with `command` inside pod `namespace/name`.
pub fn exec(
    layout: &Layout,
    namespace: &str,
    pod: &str,
    command: &[String],
) -> Result<Infallible, LabError> {
    let Some((program, args)) = command.split_first() else {
        return Err(LabError::Invalid("no command given after --".into()));
    };
    let netns = layout.pod_ns(namespace, pod);
    let path = Path::new(weft_linux::netns::NETNS_RUN_DIR).join(&netns);
    let file = File::open(&path).map_err(|_| {
        LabError::Invalid(format!(
            "pod {namespace}/{pod} is not running in lab {}",
            layout.name
        ))
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(os("joining the pod's network namespace"))?;
    let etc = layout.etc_netns(&netns);
    if etc.is_dir() {
        unshare(CloneFlags::CLONE_NEWNS).map_err(os("creating a mount namespace"))?;
        // Keep the bind mounts below from propagating back to the host.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .map_err(os("making / a slave mount"))?;
        let entries =
            std::fs::read_dir(&etc).map_err(LabError::io(format!("reading {}", etc.display())))?;
        for entry in entries.filter_map(Result::ok) {
            let target = Path::new("/etc").join(entry.file_name());
            mount(
                Some(&entry.path()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(os("bind-mounting the pod's /etc files"))?;
        }
    }
    let error = Command::new(program).args(args).exec();
    Err(LabError::Io {
        what: format!("running {program}"),
        source: error,
    })
}
