//! host-local's allocation directory, byte-compatible with the reference
//! plugin's disk backend so either plugin can take over from the other:
//! `<dataDir>/<network>/` holds one file per allocated address, named by the
//! address and containing `<containerID>\r\n<ifname>` (files of older
//! reference versions hold the container ID alone), `last_reserved_ip.<n>`
//! with the last address handed out from range set `n`, and `lock`, a file
//! held with `flock(LOCK_EX)` by whoever changes the directory. weft writes
//! each file aside and links or renames it into place, so a plugin killed
//! mid-write never leaves an address file without its owner.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Separator between container ID and interface name in an address file.
const LINE_BREAK: &str = "\r\n";
/// Prefix of the per-range-set round-robin cursor files.
const LAST_IP_PREFIX: &str = "last_reserved_ip.";
/// Suffix of files being written; one left behind belongs to a crashed
/// writer and is removed by the next lock holder.
const STAGING_SUFFIX: &str = ".weft-staging";

/// One address file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address (the file name).
    pub ip: IpAddr,
    /// First line: the container ID.
    pub container_id: String,
    /// Second line: the interface; `None` in files of old reference versions.
    pub ifname: Option<String>,
}

impl Allocation {
    /// Whether the file belongs to this attachment (old-format files belong
    /// to every interface of their container, as in the reference).
    pub fn belongs_to(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id.trim()
            && self.ifname.as_deref().is_none_or(|name| name == ifname)
    }
}

/// An open, locked allocation directory. The lock is held until drop.
pub struct Store {
    /// `<dataDir>/<network>`.
    dir: PathBuf,
    /// The held `lock` file.
    _lock: Flock<File>,
}

impl Store {
    /// Opens (creating it, mode 0755) the directory of `network` under
    /// `data_dir` and blocks until it holds the lock.
    pub fn open(data_dir: &Path, network: &str) -> io::Result<Store> {
        let dir = data_dir.join(network);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)?;
        // The reference opens it O_RDONLY|O_CREAT; std needs write access to create.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join("lock"))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io::Error::from(errno))?;
        let store = Store { dir, _lock: lock };
        store.remove_stale_staging();
        Ok(store)
    }

    /// Removes staging files of writers that died before finishing.
    fn remove_stale_staging(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .ends_with(STAGING_SUFFIX)
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records `ip` for the attachment unless some file holds it already;
    /// returns whether it did. Also moves range set `range_set`'s cursor.
    pub fn reserve(
        &self,
        container_id: &str,
        ifname: &str,
        ip: IpAddr,
        range_set: usize,
    ) -> io::Result<bool> {
        let path = self.dir.join(ip.to_string());
        if path.exists() {
            return Ok(false);
        }
        // Written aside, then linked into place: a crash never leaves an
        // address file without its owner in it.
        let content = format!("{}{LINE_BREAK}{ifname}", container_id.trim());
        let staged = self.write_staged(&ip.to_string(), content.as_bytes())?;
        let linked = fs::hard_link(&staged, &path);
        let _ = fs::remove_file(&staged);
        match linked {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(err) => return Err(err),
        }
        self.write_last_reserved(range_set, ip)?;
        Ok(true)
    }

    fn write_last_reserved(&self, range_set: usize, ip: IpAddr) -> io::Result<()> {
        let name = format!("{LAST_IP_PREFIX}{range_set}");
        let staged = self.write_staged(&name, ip.to_string().as_bytes())?;
        fs::rename(&staged, self.dir.join(name)).inspect_err(|_| {
            let _ = fs::remove_file(&staged);
        })
    }

    /// Writes `content` to a staging file for `name` (mode 0644). Only the
    /// lock holder writes, so one staging name per target is enough.
    fn write_staged(&self, name: &str, content: &[u8]) -> io::Result<PathBuf> {
        let staged = self.dir.join(format!(".{name}{STAGING_SUFFIX}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&staged)?;
        file.write_all(content)?;
        Ok(staged)
    }

    /// The cursor of range set `range_set`, if any (and readable).
    pub fn last_reserved(&self, range_set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_IP_PREFIX}{range_set}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Every address file in the directory (files that are not named by an
    /// address, or cannot be read, are left out).
    pub fn allocations(&self) -> io::Result<Vec<Allocation>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let Ok(content) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let content = content.trim();
            let (container_id, ifname) = match content.split_once(LINE_BREAK) {
                Some((id, ifname)) => (id.to_owned(), Some(ifname.to_owned())),
                None => (content.to_owned(), None),
            };
            found.push(Allocation {
                ip,
                container_id,
                ifname,
            });
        }
        found.sort_by_key(|allocation| allocation.ip);
        Ok(found)
    }

    /// Addresses held by the attachment. Files in the current format win:
    /// old-format files (container ID only) count only when there are none,
    /// as in the reference.
    pub fn find(&self, container_id: &str, ifname: &str) -> io::Result<Vec<IpAddr>> {
        Ok(self
            .owned_by(container_id, ifname)?
            .into_iter()
            .map(|a| a.ip)
            .collect())
    }

    fn owned_by(&self, container_id: &str, ifname: &str) -> io::Result<Vec<Allocation>> {
        let all = self.allocations()?;
        let id = container_id.trim();
        let exact: Vec<Allocation> = all
            .iter()
            .filter(|a| a.container_id == id && a.ifname.as_deref() == Some(ifname))
            .cloned()
            .collect();
        if !exact.is_empty() {
            return Ok(exact);
        }
        Ok(all
            .into_iter()
            .filter(|a| a.container_id == id && a.ifname.is_none())
            .collect())
    }

    /// Removes the attachment's address files; returns the addresses freed.
    /// Nothing to free is success.
    pub fn release(&self, container_id: &str, ifname: &str) -> io::Result<Vec<IpAddr>> {
        let mut freed = Vec::new();
        for allocation in self.owned_by(container_id, ifname)? {
            remove_if_exists(&self.dir.join(allocation.ip.to_string()))?;
            freed.push(allocation.ip);
        }
        Ok(freed)
    }

    /// Removes one address file (missing is success).
    pub fn remove(&self, ip: IpAddr) -> io::Result<()> {
        remove_if_exists(&self.dir.join(ip.to_string()))
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
