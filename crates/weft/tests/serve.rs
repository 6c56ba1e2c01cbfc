//! `weft serve` answers HTTP, TCP echo and UDP echo from inside a pod-like
//! namespace, and reports the client address it saw.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;
use std::time::{Duration, Instant};

use weft_testhost::{TestNs, connect, net, require_root};

fn wait_for_http(client: &TestNs, url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = client.exec("curl", &["-sf", "--max-time", "2", url]);
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).into_owned();
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_answers_http_tcp_and_udp_and_sees_the_client_address() {
    require_root!();
    let client = TestNs::new();
    let server = TestNs::new();
    connect(
        &client,
        "eth0",
        net("10.0.0.1/24"),
        &server,
        "eth0",
        net("10.0.0.2/24"),
    );
    server.spawn(Command::new(env!("CARGO_BIN_EXE_weft")).args([
        "serve",
        "--http",
        "8080",
        "--tcp-echo",
        "9000",
        "--udp-echo",
        "9001",
        "--hostname",
        "web-0",
    ]));

    assert_eq!(
        wait_for_http(&client, "http://10.0.0.2:8080/hostname"),
        "web-0"
    );
    let seen = wait_for_http(&client, "http://10.0.0.2:8080/clientip");
    assert!(seen.starts_with("10.0.0.1:"), "server saw {seen}");
    assert_eq!(
        wait_for_http(&client, "http://10.0.0.2:8080/echo?msg=hi%21"),
        "hi!"
    );
    assert_eq!(wait_for_http(&client, "http://10.0.0.2:8080/healthz"), "ok");

    let tcp = client.sh("printf 'ping-tcp' | socat -T 2 - TCP:10.0.0.2:9000");
    assert_eq!(String::from_utf8_lossy(&tcp.stdout), "ping-tcp");
    let udp = client.sh("printf 'ping-udp' | socat -T 2 - UDP:10.0.0.2:9001");
    assert_eq!(String::from_utf8_lossy(&udp.stdout), "ping-udp");
}
