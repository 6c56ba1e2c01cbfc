//! Pieces the privileged proxy tests share: a UDP backend served from a
//! thread of the test inside a pod's namespace.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weft_testhost::TestNs;

/// A UDP server answering every datagram with a name, on a thread of the
/// test whose socket lives in the pod's namespace. (socat's forking UDP
/// server lets a child swallow datagrams meant for the next client.)
pub struct UdpBackend {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpBackend {
    /// Serves on `bind`:`port` in `pod` (`::` also takes IPv4 in a fresh
    /// namespace, where `bindv6only` is 0).
    pub fn start_on(bind: &str, pod: &TestNs, port: u16, name: &str) -> UdpBackend {
        let socket = pod.run(|| UdpSocket::bind((bind, port))).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let answer = format!("{name}\n");
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = socket.recv_from(&mut buffer) {
                    let _ = socket.send_to(answer.as_bytes(), peer);
                }
            }
        });
        UdpBackend {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
