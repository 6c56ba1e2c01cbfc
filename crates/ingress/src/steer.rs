//! Which worker takes the next client connection.
//!
//! Every worker has its own listener on the same address (`SO_REUSEPORT`),
//! and the kernel picks one of them for each new connection. By default it
//! picks by a hash of the connection's addresses, which spreads connections
//! evenly over the workers however light the load ([`AcceptPolicy::Hash`]).
//!
//! [`AcceptPolicy::Pack`] gives new connections to the first worker that
//! was idle more than half of the last [`TICK`], and spreads them
//! by the hash only when every worker has been busier than that. A light
//! load then keeps to one worker: fewer threads compete with the backends
//! for the CPUs, and a busy worker handles more ready connections per wake
//! instead of each worker waking for a few. It is what nginx's workers get
//! from their `accept_mutex`, or from `EPOLLEXCLUSIVE`, which wakes one idle
//! worker per new connection.
//!
//! The choice is a classic BPF program on the listeners' `SO_REUSEPORT`
//! group (`SO_ATTACH_REUSEPORT_CBPF`) that returns the chosen listener's
//! index in the group, or an index past the end, which makes the kernel
//! fall back to the hash. [`Steering::run`] measures how long each worker's
//! runtime was awake (its park and unpark hooks keep a [`WorkerClock`]) and
//! attaches a new program when the choice changes. Per connection the
//! kernel runs that program; the workers' only added work is reading the
//! clock when they park and wake.
//!
//! Index `k` is worker `k` while the workers' listeners are the only
//! members of their groups. Another process listening on the same port
//! with `SO_REUSEPORT` under the same user (two controllers on one host
//! network) joins the groups and shares the program: use `hash` there.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::socket::{setsockopt, sockopt};

/// How the kernel's choice of listener for a new connection is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AcceptPolicy {
    /// To the first worker that was idle more than half of the last 10
    /// ms; spread by hash when every worker was busier.
    Pack,
    /// Spread over the workers by a hash of the connection's addresses.
    Hash,
}

/// How often [`Steering::run`] measures the workers.
pub const TICK: Duration = Duration::from_millis(10);

/// A worker busier than this share of a [`TICK`] gets no new connections
/// while another is less busy.
pub const BUSY: f64 = 0.5;

/// One worker runtime's time awake (running tasks, or ready to), kept by
/// the runtime's park and unpark hooks and read from another thread.
/// Aligned to its own cache lines: each worker writes only its own.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerClock {
    origin: Instant,
    /// Nanoseconds since `origin` at which the runtime last woke; 0 while
    /// it is parked.
    awake_since: AtomicU64,
    /// Nanoseconds awake up to the last park.
    awake_before: AtomicU64,
    /// Set when the worker's thread ends.
    ended: AtomicBool,
}

impl WorkerClock {
    /// A clock whose worker is awake from now.
    pub fn new(origin: Instant) -> WorkerClock {
        let clock = WorkerClock {
            origin,
            awake_since: AtomicU64::new(0),
            awake_before: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        };
        clock.woke();
        clock
    }

    fn now(&self) -> u64 {
        // Never 0, which means "parked"; u64 nanoseconds last 584 years.
        u64::try_from(self.origin.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Called by the worker's runtime after it unparks.
    pub fn woke(&self) {
        self.awake_since.store(self.now(), Ordering::Release);
    }

    /// Called by the worker's runtime before it parks.
    pub fn parks(&self) {
        // `awake_since` is cleared before the wake is added: a reader in
        // between misses this wake (the next reading has it) instead of
        // counting it twice.
        let since = self.awake_since.swap(0, Ordering::AcqRel);
        if since != 0 {
            let awake = self.now().saturating_sub(since);
            self.awake_before.fetch_add(awake, Ordering::AcqRel);
        }
    }

    /// Marks the worker ended when the returned guard is dropped: hold it
    /// for the life of the worker's thread.
    pub fn until_ended(self: &Arc<Self>) -> WorkerEnded {
        WorkerEnded(self.clone())
    }

    fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Nanoseconds awake so far, counting the current wake.
    pub fn awake(&self) -> u64 {
        loop {
            // A park or a wake between the two reads of `awake_since`
            // changes it (times only grow), so an unchanged value means
            // `awake_before` belongs to it.
            let since = self.awake_since.load(Ordering::Acquire);
            let before = self.awake_before.load(Ordering::Acquire);
            let now = self.now();
            if self.awake_since.load(Ordering::Acquire) == since {
                let current = if since == 0 {
                    0
                } else {
                    now.saturating_sub(since)
                };
                return before + current;
            }
        }
    }
}

/// Marks its worker ended when dropped ([`WorkerClock::until_ended`]).
#[derive(Debug)]
pub struct WorkerEnded(Arc<WorkerClock>);

impl Drop for WorkerEnded {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Release);
    }
}

/// The worker that should take new connections: the first whose share of
/// time awake is below `busy`, or `None` (spread by hash) when there is
/// none.
pub fn choose(awake_shares: &[f64], busy: f64) -> Option<usize> {
    awake_shares.iter().position(|share| *share < busy)
}

/// The classic BPF program that sends every new connection of a
/// `SO_REUSEPORT` group to its listener at `index` (the order in which the
/// listeners started listening); `None` returns an index past any group,
/// which leaves the choice to the hash.
pub fn program(index: Option<usize>) -> [libc::sock_filter; 1] {
    let k = index
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(u32::MAX);
    // `ret #k`
    [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    }]
}

/// Sends the new connections of `group`'s `SO_REUSEPORT` group to its
/// listener at `index` (`None`: by hash).
pub fn steer(group: &TcpListener, index: Option<usize>) -> std::io::Result<()> {
    let mut filter = program(index);
    let fprog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // The kernel copies the program during the call; `filter` outlives it.
    setsockopt(group, sockopt::AttachReusePortCbpf, &fprog).map_err(std::io::Error::from)
}

/// Measures the workers and steers new connections (see the module docs).
#[derive(Debug)]
pub struct Steering {
    clocks: Vec<Arc<WorkerClock>>,
    /// One listener of each `SO_REUSEPORT` group (HTTP, HTTPS), whose
    /// members are the workers' listeners in order of listening.
    group_members: Vec<TcpListener>,
}

impl Steering {
    /// Steering for `clocks.len()` workers whose listeners, in order, form
    /// the groups of `groups`; sends new connections to the first worker
    /// until the first measurement.
    pub fn start(
        clocks: Vec<Arc<WorkerClock>>,
        groups: Vec<TcpListener>,
    ) -> std::io::Result<Steering> {
        for (steered, group) in groups.iter().enumerate() {
            if let Err(error) = steer(group, Some(0)) {
                // No group is left steered to a worker with nothing to
                // follow its load.
                for group in &groups[..steered] {
                    let _ = steer(group, None);
                }
                return Err(error);
            }
        }
        Ok(Steering {
            clocks,
            group_members: groups,
        })
    }

    /// Measures the workers every [`TICK`] and changes the program when
    /// the choice changes, until the task is dropped. Drop it when the
    /// workers stop accepting: it holds a descriptor of one listener per
    /// group.
    ///
    /// If a worker's thread ends before (it could not start), the kernel
    /// is left to the hash and this ends, closing those descriptors: a
    /// listener whose worker is gone then leaves its group instead of
    /// taking connections that nobody accepts.
    pub async fn run(self) {
        let mut chosen = Some(0);
        let mut last_awake: Vec<u64> = self.clocks.iter().map(|c| c.awake()).collect();
        let mut shares = vec![0.0; self.clocks.len()];
        let mut last = Instant::now();
        // The first measurement after a whole tick, not at once.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if self.clocks.iter().any(|clock| clock.has_ended()) {
                for group in &self.group_members {
                    if let Err(error) = steer(group, None) {
                        tracing::warn!(%error, "cannot stop steering new connections");
                    }
                }
                tracing::warn!("an ingress worker ended; new connections are spread by hash");
                return;
            }
            let now = Instant::now();
            let window = now.duration_since(last).as_nanos().max(1) as f64;
            last = now;
            for ((clock, last), share) in self.clocks.iter().zip(&mut last_awake).zip(&mut shares) {
                let awake = clock.awake();
                *share = awake.saturating_sub(*last) as f64 / window;
                *last = awake;
            }
            let choice = choose(&shares, BUSY);
            if choice == chosen {
                continue;
            }
            for group in &self.group_members {
                if let Err(error) = steer(group, choice) {
                    tracing::warn!(%error, "cannot steer new connections");
                }
            }
            chosen = choice;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_worker_with_spare_time_takes_new_connections() {
        assert_eq!(choose(&[0.1, 0.0], BUSY), Some(0));
        assert_eq!(choose(&[0.9, 0.2, 0.0], BUSY), Some(1));
        assert_eq!(choose(&[0.9, 0.7, 0.3], BUSY), Some(2));
        // Exactly half is busy.
        assert_eq!(choose(&[0.5, 0.49], BUSY), Some(1));
    }

    #[test]
    fn every_worker_busy_spreads_by_hash() {
        assert_eq!(choose(&[0.9, 0.6], BUSY), None);
        assert_eq!(choose(&[], BUSY), None);
    }

    #[test]
    fn the_program_returns_the_index_or_one_past_any_group() {
        let ret = (libc::BPF_RET | libc::BPF_K) as u16;
        assert_eq!((program(Some(3))[0].code, program(Some(3))[0].k), (ret, 3));
        assert_eq!(program(None)[0].k, u32::MAX);
    }

    #[test]
    fn a_clock_counts_awake_time_only() {
        let clock = WorkerClock::new(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        clock.parks();
        let awake = clock.awake();
        assert!(awake >= 20_000_000, "awake {awake} ns");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(clock.awake(), awake, "time parked was counted");
        clock.woke();
        std::thread::sleep(Duration::from_millis(10));
        assert!(clock.awake() >= awake + 10_000_000);
    }

    /// Accepts from both listeners until `expected` connections came,
    /// or 5 s passed; how many each had.
    fn accepted(listeners: [&TcpListener; 2], expected: usize) -> [usize; 2] {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut counts = [0, 0];
        while counts[0] + counts[1] < expected && Instant::now() < deadline {
            for (listener, count) in listeners.iter().zip(counts.iter_mut()) {
                while listener.accept().is_ok() {
                    *count += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        counts
    }

    /// Two listeners in one `SO_REUSEPORT` group, not blocking on accept.
    fn group() -> [TcpListener; 2] {
        let first = crate::server::reuseport_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let second = crate::server::reuseport_listener(first.local_addr().unwrap()).unwrap();
        for listener in [&first, &second] {
            listener.set_nonblocking(true).unwrap();
        }
        [first, second]
    }

    fn connect(addr: std::net::SocketAddr, count: usize) -> Vec<std::net::TcpStream> {
        (0..count)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect()
    }

    /// Steering for two workers, both awake, whose listeners are
    /// `first`'s group.
    fn steering_two_workers(first: &TcpListener) -> (Vec<Arc<WorkerClock>>, Steering) {
        let clocks: Vec<Arc<WorkerClock>> = (0..2)
            .map(|_| Arc::new(WorkerClock::new(Instant::now())))
            .collect();
        let steering = Steering::start(clocks.clone(), vec![first.try_clone().unwrap()]).unwrap();
        (clocks, steering)
    }

    /// Opens 64 connections and checks that both listeners got some (by
    /// hash, all 64 on one would be a 1 in 2^63 chance).
    fn assert_spread(listeners: [&TcpListener; 2], when: &str) {
        let clients = connect(listeners[0].local_addr().unwrap(), 64);
        let [a, b] = accepted(listeners, 64);
        assert_eq!(a + b, 64, "{when}");
        assert!(a > 0 && b > 0, "{when}: {a} and {b}");
        drop(clients);
    }

    #[tokio::test]
    async fn steered_connections_go_to_the_chosen_listener() {
        let [first, second] = group();
        let addr = first.local_addr().unwrap();
        let connect = |count| connect(addr, count);
        for (index, expected) in [(1, [0, 16]), (0, [16, 0])] {
            steer(&first, Some(index)).unwrap();
            let clients = connect(16);
            assert_eq!(
                accepted([&first, &second], 16),
                expected,
                "steered to {index}"
            );
            drop(clients);
        }
        steer(&first, None).unwrap();
        assert_spread([&first, &second], "no index");
    }

    #[tokio::test]
    async fn a_worker_that_ended_leaves_new_connections_to_the_hash() {
        let [first, second] = group();
        let (clocks, steering) = steering_two_workers(&first);
        drop(clocks[1].until_ended());
        tokio::time::timeout(Duration::from_secs(5), steering.run())
            .await
            .expect("steering went on after a worker ended");
        assert_spread([&first, &second], "after the end");
    }

    #[tokio::test]
    async fn new_connections_follow_the_workers_load() {
        let [first, second] = group();
        let addr = first.local_addr().unwrap();
        let (clocks, steering) = steering_two_workers(&first);
        let steering = tokio::spawn(steering.run());
        let measured = || tokio::time::sleep(TICK * 5);
        // Worker 0 stays awake, worker 1 sleeps.
        clocks[1].parks();
        measured().await;
        let busy_first = connect(addr, 16);
        assert_eq!(accepted([&first, &second], 16), [0, 16], "worker 0 busy");
        // Both awake: by hash.
        clocks[1].woke();
        measured().await;
        assert_spread([&first, &second], "both busy");
        // Worker 0 sleeps again: back to it.
        clocks[0].parks();
        measured().await;
        let idle_first = connect(addr, 16);
        assert_eq!(accepted([&first, &second], 16), [16, 0], "worker 0 idle");
        steering.abort();
        drop((busy_first, idle_first));
    }
}
