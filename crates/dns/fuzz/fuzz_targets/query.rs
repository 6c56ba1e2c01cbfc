//! Fuzzes the query path: any bytes given to the handler, as a UDP or a TCP
//! message, must give no panic, and any answer must be valid DNS that fits
//! the transport.
#![no_main]

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use weft_cluster::testing::{mk_service, set_cluster_ip};
use weft_dns::config::Limits;
use weft_dns::hosts::Hosts;
use weft_dns::ops::Metrics;
use weft_dns::records::{Index, ZoneSettings};
use weft_dns::server::{Handler, Transport};

fn handler() -> &'static (Handler, tokio::runtime::Runtime) {
    static HANDLER: OnceLock<(Handler, tokio::runtime::Runtime)> = OnceLock::new();
    HANDLER.get_or_init(|| {
        let mut svc = mk_service("default", "kubernetes", &[], &[("https", 443, "6443")]);
        set_cluster_ip(&mut svc, "10.96.0.1");
        let handler = Handler {
            index: ArcSwap::from_pointee(Index::build(&ZoneSettings::default(), [&svc], [], [])),
            hosts: Some(Hosts::parse("192.0.2.1 db.example.test\n", 60)),
            forwarder: None,
            metrics: Arc::new(Metrics::new()),
            limits: Limits::default(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        (handler, runtime)
    })
}

fuzz_target!(|data: &[u8]| {
    let (handler, runtime) = handler();
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Some(out) = runtime.block_on(handler.handle(data, transport)) {
            assert!(Message::from_vec(&out).is_ok(), "an answer that is not DNS");
            if transport == Transport::Udp {
                assert!(out.len() <= usize::from(Limits::default().max_udp_payload));
            }
        }
    }
});
