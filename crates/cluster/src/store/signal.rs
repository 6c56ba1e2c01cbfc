//! What wakes a store watcher: inotify on the store's directory, for the
//! `generation` file every commit renames into place last, and an eventfd
//! that stops it. A watcher sleeps until one of them fires, so an idle
//! store costs its readers nothing; only when inotify cannot watch the
//! directory does the watcher fall back to looking at a fixed interval.
//!
//! Only the store's top directory is watched: object files live in
//! subdirectories that appear with namespaces and are never watched, and
//! the generation number read after waking, not the events, decides
//! whether anything changed (one catch-up per commit however many files
//! it touched; events queued while the reader was busy wake it again).

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// The file whose renaming into place ends every commit.
const GENERATION: &str = "generation";

/// How long a watcher with a working inotify watch sleeps without an
/// event before it looks anyway: a safety net, not the way commits are
/// seen.
pub(super) const SAFETY_NET: Duration = Duration::from_secs(1);

/// Why a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wake {
    /// A commit may have landed: look at the generation.
    Look,
    /// The watcher is asked to stop.
    Stop,
}

/// Ends a watcher's wait from another thread.
#[derive(Clone, Debug)]
pub(super) struct Stopper(Arc<EventFd>);

impl Stopper {
    pub(super) fn stop(&self) {
        // Cannot fail short of a counter overflow, which one write per
        // watcher never reaches; the stop flag is set beside it anyway.
        let _ = self.0.write(1);
    }
}

/// Sleeps until the store may have changed.
#[derive(Debug)]
pub(super) struct CommitSignal {
    dir: PathBuf,
    /// `None` when inotify is not available (no instance could be made).
    inotify: Option<Inotify>,
    /// Whether the directory is watched now; `false` after it was deleted
    /// or moved away, until it can be watched again.
    watching: bool,
    /// How long to sleep without an event while watching: [`SAFETY_NET`].
    safety_net: Duration,
    stop: Arc<EventFd>,
}

impl CommitSignal {
    /// Watches `dir` (when inotify allows; otherwise the watcher polls).
    pub(super) fn new(dir: &Path) -> io::Result<Self> {
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(io::Error::from)?;
        let inotify = match Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK) {
            Ok(inotify) => Some(inotify),
            Err(e) => {
                tracing::warn!(store = %dir.display(), error = %e, "no inotify: the store watcher polls instead");
                None
            }
        };
        let mut signal = CommitSignal {
            dir: dir.to_owned(),
            inotify,
            watching: false,
            safety_net: SAFETY_NET,
            stop: Arc::new(stop),
        };
        // Watched from before the caller's first look: no wake owed.
        signal.rewatch();
        Ok(signal)
    }

    pub(super) fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Watches the directory if it is not watched yet; true when a watch
    /// was just added (anything may have changed while none was).
    fn rewatch(&mut self) -> bool {
        let Some(inotify) = &self.inotify else {
            return false;
        };
        if self.watching {
            return false;
        }
        let events = AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        match inotify.add_watch(&self.dir, events) {
            Ok(_) => {
                self.watching = true;
                true
            }
            Err(e) => {
                tracing::debug!(store = %self.dir.display(), error = %e, "cannot watch the store directory; polling");
                false
            }
        }
    }

    /// Waits until a commit may have landed, `poll_interval` passes while
    /// the directory is not watched ([`SAFETY_NET`] while it is), or the
    /// stopper is used. Events on other files of the directory (the lock,
    /// the journal) do not end the wait.
    pub(super) fn wait(&mut self, poll_interval: Duration) -> Wake {
        let started = Instant::now();
        loop {
            if self.rewatch() {
                // The directory was not watched until now: a commit made
                // meanwhile sent no event.
                return Wake::Look;
            }
            let limit = if self.watching {
                self.safety_net
            } else {
                poll_interval
            };
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Wake::Look;
            }
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let mut fds = vec![PollFd::new(self.stop.as_fd(), PollFlags::POLLIN)];
            if let Some(inotify) = self.inotify.as_ref().filter(|_| self.watching) {
                fds.push(PollFd::new(inotify.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(0) => return Wake::Look,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    // Not expected with valid descriptors; do not spin.
                    tracing::warn!(error = %e, "poll on the store watcher failed");
                    std::thread::sleep(poll_interval);
                    return Wake::Look;
                }
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
            let stopped = ready(&fds[0]);
            let notified = fds.get(1).is_some_and(ready);
            drop(fds);
            if stopped {
                return Wake::Stop;
            }
            if notified && self.drain() {
                return Wake::Look;
            }
        }
    }

    /// Reads the queued events, leaving the queue empty so that the next
    /// wait sleeps. True when one may mean a commit: the generation file
    /// was written or renamed into place, events were lost, or the
    /// directory itself went away (then it is watched again when it can be).
    fn drain(&mut self) -> bool {
        let Some(inotify) = &self.inotify else {
            return true;
        };
        let mut commit = false;
        loop {
            match inotify.read_events() {
                Ok(events) => {
                    for event in events {
                        let gone = event.mask.intersects(
                            AddWatchFlags::IN_DELETE_SELF
                                | AddWatchFlags::IN_MOVE_SELF
                                | AddWatchFlags::IN_IGNORED,
                        );
                        if gone {
                            self.watching = false;
                        }
                        commit |= gone
                            || event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                            || event.name.as_deref() == Some(OsStr::new(GENERATION));
                    }
                }
                Err(Errno::EAGAIN) => return commit,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read inotify events; polling");
                    self.inotify = None;
                    self.watching = false;
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::mpsc;
    use std::thread;

    /// Runs `wait` on a thread, `act` on this one, and returns how the
    /// wait ended (or panics when it did not end within 10 s).
    fn wait_while(signal: CommitSignal, act: impl FnOnce()) -> (Wake, CommitSignal) {
        let (done, ended) = mpsc::channel();
        let waiter = thread::spawn(move || {
            let mut signal = signal;
            let wake = signal.wait(Duration::from_secs(3600));
            let _ = done.send(());
            (wake, signal)
        });
        thread::sleep(Duration::from_millis(50));
        act();
        ended
            .recv_timeout(Duration::from_secs(10))
            .expect("the wait never ended");
        waiter.join().expect("waiter panicked")
    }

    fn watched(dir: &Path) -> CommitSignal {
        let mut signal = CommitSignal::new(dir).expect("signal");
        assert!(signal.watching, "inotify cannot watch {}", dir.display());
        signal.safety_net = Duration::from_secs(3600);
        signal
    }

    #[test]
    fn a_generation_renamed_into_place_ends_the_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signal = watched(dir.path());
        let (wake, _) = wait_while(signal, || {
            let tmp = dir.path().join("next");
            fs::write(&tmp, "2\n").expect("write");
            fs::rename(&tmp, dir.path().join(GENERATION)).expect("rename");
        });
        assert_eq!(wake, Wake::Look);
    }

    #[test]
    fn other_files_do_not_end_the_wait_and_the_stopper_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signal = watched(dir.path());
        let stopper = signal.stopper();
        let (wake, _) = wait_while(signal, || {
            // What readers and writers do besides committing: open the
            // lock file for writing, append to the journal.
            fs::write(dir.path().join(".lock"), "").expect("lock");
            fs::write(dir.path().join("journal"), "1 a\n").expect("journal");
            thread::sleep(Duration::from_millis(100));
            stopper.stop();
        });
        assert_eq!(wake, Wake::Stop);
    }

    #[test]
    fn a_directory_made_anew_is_watched_again() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("store");
        fs::create_dir(&dir).expect("mkdir");
        let signal = watched(&dir);
        let (wake, mut signal) = wait_while(signal, || fs::remove_dir(&dir).expect("rmdir"));
        assert_eq!(wake, Wake::Look);
        assert!(!signal.watching);
        // Made anew with a commit in it before the watch is back: the
        // wait that adds the watch ends at once, to look.
        fs::create_dir(&dir).expect("mkdir again");
        fs::write(dir.join(GENERATION), "1\n").expect("write");
        assert_eq!(signal.wait(Duration::from_secs(3600)), Wake::Look);
        assert!(signal.watching);
        let (wake, _) = wait_while(signal, || {
            fs::write(dir.join(GENERATION), "1\n").expect("write");
        });
        assert_eq!(wake, Wake::Look);
    }
}
