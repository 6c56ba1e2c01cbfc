//! Network namespaces: named ones compatible with `ip netns` (a bind mount of
//! the namespace file under `/run/netns/NAME`), and any namespace given by path
//! (`/proc/PID/ns/net`, as a container runtime passes in `CNI_NETNS`).
//!
//! Work is done *inside* a namespace by [`NetNs::run`], which runs a closure on
//! a dedicated thread that first joins the namespace with `setns(2)`; the
//! caller's thread never changes namespace, so a bug cannot leave a long-lived
//! thread (or a tokio worker) in the wrong namespace. Sockets and child
//! processes created inside the closure stay bound to the namespace after it
//! returns, which is how [`crate::Netlink::in_namespace`] and
//! [`NetNs::spawn`] work.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::Error;

/// Where `ip netns` keeps its bind mounts; we use the same place so that
/// `ip netns list` / `ip netns exec` see our namespaces and we see theirs.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A handle on one network namespace, by path. Holding it does not keep the
/// namespace alive: a named namespace lives until [`NetNs::delete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    /// Human name used in errors and logs (`ip netns` name, or the path).
    name: String,
    /// The namespace file that `setns` is called on.
    path: PathBuf,
}

impl NetNs {
    /// The namespace of the calling process (for a node agent: the node).
    pub fn current() -> NetNs {
        NetNs {
            name: "current".to_owned(),
            path: PathBuf::from("/proc/thread-self/ns/net"),
        }
    }

    /// A namespace given by the path of its namespace file (for example
    /// `CNI_NETNS`). The path is not opened until it is used.
    pub fn from_path(path: impl Into<PathBuf>) -> NetNs {
        let path = path.into();
        NetNs {
            name: path.display().to_string(),
            path,
        }
    }

    /// The named namespace `/run/netns/NAME`, which must exist.
    pub fn open(name: &str) -> Result<NetNs, Error> {
        validate_name(name)?;
        let ns = Self::named(name);
        if !ns.path.exists() {
            return Err(Error::NamespaceNotFound(name.to_owned()));
        }
        Ok(ns)
    }

    fn named(name: &str) -> NetNs {
        NetNs {
            name: name.to_owned(),
            path: Path::new(NETNS_RUN_DIR).join(name),
        }
    }

    /// Creates the named namespace; fails with [`Error::NamespaceExists`] if
    /// one of that name exists already.
    pub fn create(name: &str) -> Result<NetNs, Error> {
        validate_name(name)?;
        make_run_dir_shared()?;
        let ns = Self::named(name);
        // O_EXCL makes "exists" race-free between concurrent creators.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&ns.path)
        {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::NamespaceExists(name.to_owned()));
            }
            Err(err) => return Err(ns.io_error("create mount point", err)),
        }
        let mount_point = ns.path.clone();
        let made = std::thread::scope(|scope| {
            scope
                .spawn(move || -> nix::Result<()> {
                    // This thread alone moves to a fresh namespace, which the
                    // bind mount then keeps alive after the thread exits.
                    nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
                    nix::mount::mount(
                        Some("/proc/thread-self/ns/net"),
                        &mount_point,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                })
                .join()
        });
        match made {
            Ok(Ok(())) => Ok(ns),
            Ok(Err(errno)) => {
                let _ = fs::remove_file(&ns.path);
                Err(ns.io_error("unshare and bind-mount", errno.into()))
            }
            Err(_) => {
                let _ = fs::remove_file(&ns.path);
                Err(Error::ThreadPanicked(ns.name.clone()))
            }
        }
    }

    /// Opens the named namespace, creating it when absent.
    pub fn ensure(name: &str) -> Result<NetNs, Error> {
        match Self::create(name) {
            Err(Error::NamespaceExists(_)) => Self::open(name),
            other => other,
        }
    }

    /// Deletes the named namespace (unmounts and removes `/run/netns/NAME`).
    /// The kernel frees it, and every link inside it, once no process or
    /// socket uses it any more. Deleting a namespace that does not exist is
    /// [`Error::NamespaceNotFound`]; use [`NetNs::delete_if_exists`] for
    /// teardown paths.
    pub fn delete(name: &str) -> Result<(), Error> {
        validate_name(name)?;
        let ns = Self::named(name);
        if !ns.path.exists() {
            return Err(Error::NamespaceNotFound(name.to_owned()));
        }
        match nix::mount::umount2(&ns.path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (a half-created namespace); remove the file anyway.
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(errno) => return Err(ns.io_error("unmount", errno.into())),
        }
        match fs::remove_file(&ns.path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(ns.io_error("remove mount point", err)),
        }
    }

    /// Like [`NetNs::delete`], but a missing namespace is success; returns
    /// whether something was deleted.
    pub fn delete_if_exists(name: &str) -> Result<bool, Error> {
        match Self::delete(name) {
            Ok(()) => Ok(true),
            Err(Error::NamespaceNotFound(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Names of all namespaces under `/run/netns`, sorted.
    pub fn list() -> Result<Vec<String>, Error> {
        let entries = match fs::read_dir(NETNS_RUN_DIR) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Namespace {
                    name: NETNS_RUN_DIR.to_owned(),
                    op: "list",
                    source,
                });
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Name used in errors and logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the namespace file exists.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Runs `work` on a new thread that has joined this namespace, and returns
    /// its result. The calling thread never changes namespace. `work` may
    /// borrow from the caller. A panic inside `work` is reported as
    /// [`Error::ThreadPanicked`].
    pub fn run<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = File::open(&self.path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => Error::NamespaceNotFound(self.name.clone()),
            _ => self.io_error("open", err),
        })?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || -> Result<T, Error> {
                    nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|errno| self.io_error("setns", errno.into()))?;
                    Ok(work())
                })
                .join()
                .map_err(|_| Error::ThreadPanicked(self.name.clone()))?
        })
    }

    /// Starts `command` inside this namespace: the child is forked from a
    /// thread that has joined it, so it inherits the namespace. Only the
    /// network namespace changes (unlike `ip netns exec`, `/etc/netns/NAME`
    /// files are not bind-mounted).
    pub fn spawn(&self, command: &mut Command) -> Result<Child, Error> {
        self.run(|| command.spawn())?
            .map_err(|err| self.io_error("spawn command", err))
    }

    pub(crate) fn io_error(&self, op: &'static str, source: io::Error) -> Error {
        Error::Namespace {
            name: self.name.clone(),
            op,
            source,
        }
    }
}

/// Rejects names that would escape `/run/netns` or that `ip netns` refuses.
fn validate_name(name: &str) -> Result<(), Error> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.len() > 255;
    if bad {
        return Err(Error::InvalidName {
            kind: "network namespace",
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Makes `/run/netns` a shared mount point (bind-mounting it on itself first
/// when it is not a mount point yet), exactly as `ip netns add` does, so the
/// bind mounts below it propagate to every mount namespace.
fn make_run_dir_shared() -> Result<(), Error> {
    let dir = Path::new(NETNS_RUN_DIR);
    let fail = |op: &'static str, source: io::Error| Error::Namespace {
        name: NETNS_RUN_DIR.to_owned(),
        op,
        source,
    };
    fs::create_dir_all(dir).map_err(|err| fail("create directory", err))?;
    let shared = || {
        nix::mount::mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            nix::mount::mount(
                Some(dir),
                dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|errno| fail("bind-mount on itself", errno.into()))?;
            shared().map_err(|errno| fail("make shared", errno.into()))
        }
        Err(errno) => Err(fail("make shared", errno.into())),
    }
}
