//! Keeps the served index current with the cluster model: a thread waits on
//! the [`Cluster`]'s coalesced change stream, rebuilds the whole index from
//! a read snapshot and swaps it in atomically, so queries never wait on a
//! rebuild. Marks the server ready after the first synced build.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use weft_cluster::Cluster;

use crate::records::{Index, ZoneSettings};
use crate::server::Handler;

/// How often the thread looks for a stop request while nothing changes.
const POLL: Duration = Duration::from_millis(200);

/// The index as the cluster holds it now.
pub fn build_from(cluster: &Cluster, settings: &ZoneSettings) -> Index {
    let index = cluster.read();
    Index::build(
        settings,
        index.services(),
        index.endpoint_slices(),
        index.pods(),
    )
}

/// The rebuilding thread; stops when dropped.
#[derive(Debug)]
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Follower {
    /// Builds the index now, then rebuilds after every change.
    pub fn start(
        cluster: Cluster,
        settings: ZoneSettings,
        handler: Arc<Handler>,
    ) -> std::io::Result<Follower> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut changes = cluster.subscribe();
        let publish = move |handler: &Handler| {
            let index = build_from(&cluster, &settings);
            tracing::debug!(names = index.len(), "cluster zone rebuilt");
            handler.index.store(Arc::new(index));
            if cluster.is_synced() {
                handler.metrics.set_ready();
            }
        };
        publish(&handler);
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("weft-dns-index".to_owned())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        if changes.wait_timeout(POLL).is_some() {
                            publish(&handler);
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
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
