//! The change stream that wakes reconcilers: a generation counter bumped once
//! per write to the index, and subscriptions that wait for it to move.
//!
//! Level-triggered and coalesced by construction: a subscription remembers
//! the last generation it saw and a wake-up only says "look again", so any
//! number of writes between two looks cost one recompute. Synchronous code
//! (the lab) blocks in [`Subscription::wait`] (a `Mutex` + `Condvar`); an
//! async task awaits [`Subscription::changed`] (a `tokio::sync::watch`).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The shared counter; owned by a [`crate::Cluster`].
#[derive(Debug)]
pub(crate) struct Changes {
    generation: Mutex<u64>,
    /// Wakes threads blocked in [`Subscription::wait`].
    changed: Condvar,
    /// The same generation, for tasks awaiting [`Subscription::changed`].
    async_generation: tokio::sync::watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            generation: Mutex::new(0),
            changed: Condvar::new(),
            async_generation: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Changes {
    pub(crate) fn bump(&self) {
        let mut generation = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *generation += 1;
        self.async_generation.send_replace(*generation);
        self.changed.notify_all();
    }

    pub(crate) fn generation(&self) -> u64 {
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One reconciler's view of the change stream.
///
/// Usage: subscribe, compute from the whole index, then loop on
/// [`Subscription::wait`] and compute again.
#[derive(Debug)]
pub struct Subscription {
    changes: Arc<Changes>,
    seen: u64,
    async_generation: tokio::sync::watch::Receiver<u64>,
}

impl Subscription {
    pub(crate) fn new(changes: Arc<Changes>) -> Self {
        let seen = changes.generation();
        let async_generation = changes.async_generation.subscribe();
        Subscription {
            changes,
            seen,
            async_generation,
        }
    }

    /// Waits, without blocking the thread, until the index changed since the
    /// last look, then returns the current generation and marks it seen.
    pub async fn changed(&mut self) -> u64 {
        loop {
            let generation = *self.async_generation.borrow_and_update();
            if generation != self.seen {
                self.seen = generation;
                return generation;
            }
            // The sender lives in `self.changes`, so this cannot fail.
            if self.async_generation.changed().await.is_err() {
                return self.seen;
            }
        }
    }

    /// Whether the index changed since this subscription last looked.
    pub fn has_changed(&self) -> bool {
        self.changes.generation() != self.seen
    }

    /// Blocks until the index changed since the last look, then returns the
    /// current generation and marks it seen.
    pub fn wait(&mut self) -> u64 {
        let guard = self
            .changes
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let guard = self
            .changes
            .changed
            .wait_while(guard, |g| *g == self.seen)
            .unwrap_or_else(PoisonError::into_inner);
        self.seen = *guard;
        self.seen
    }

    /// Like [`Subscription::wait`], but gives up after `timeout` and returns
    /// `None` if nothing changed; lets a loop check for shutdown.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        let mut guard = self
            .changes
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *guard == self.seen {
            let left = deadline.checked_duration_since(Instant::now())?;
            guard = self
                .changes
                .changed
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        self.seen = *guard;
        Some(self.seen)
    }
}

#[cfg(test)]
mod tests;

/// A thread that runs a callback after every change a [`Subscription`]
/// sees, until dropped: how a component keeps a derived view (the DNS
/// answer index, the ingress routing table) current off its request path.
#[derive(Debug)]
pub struct Follower {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    /// How often the thread looks for a stop request while nothing changes.
    const POLL: Duration = Duration::from_millis(200);

    /// Starts thread `name` calling `on_change` after each change seen by
    /// `changes` (take the subscription before the first build, so that no
    /// change in between is missed).
    pub fn spawn(
        name: &str,
        mut changes: Subscription,
        mut on_change: impl FnMut() + Send + 'static,
    ) -> std::io::Result<Follower> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        if changes.wait_timeout(Self::POLL).is_some() {
                            on_change();
                        }
                    }
                })?
        };
        Ok(Follower {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
