//! Pieces the privileged proxy tests share: a UDP backend served from a
//! thread of the test inside a pod's namespace, and the TCP and UDP
//! clients the tests send their requests with (either family).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};
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

/// One TCP request from `from`: the answer (what the server wrote before
/// closing), or the error.
pub fn tcp(from: &TestNs, target: &SocketAddr) -> io::Result<String> {
    from.run(|| {
        let mut stream = TcpStream::connect_timeout(target, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer.trim().to_owned())
    })
}

/// `count` TCP requests from `from`: how many times each answer (or
/// error) came back.
pub fn tcp_many(from: &TestNs, target: &SocketAddr, count: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..count {
        let answer = tcp(from, target).unwrap_or_else(|err| format!("error: {err}"));
        *counts.entry(answer).or_insert(0) += 1;
    }
    counts
}

/// A UDP query from `from`: the first answer, or "" when three tries of
/// two seconds each go unanswered (a loaded machine can be slow to
/// answer).
pub fn udp(from: &TestNs, target: &SocketAddr) -> String {
    from.run(|| {
        let any: SocketAddr = if target.is_ipv6() {
            "[::]:0".parse().unwrap()
        } else {
            "0.0.0.0:0".parse().unwrap()
        };
        let socket = UdpSocket::bind(any).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buffer = [0u8; 512];
        for _ in 0..3 {
            socket.send_to(b"q\n", target).unwrap();
            if let Ok(read) = socket.recv(&mut buffer) {
                return String::from_utf8_lossy(&buffer[..read]).trim().to_owned();
            }
        }
        String::new()
    })
}
