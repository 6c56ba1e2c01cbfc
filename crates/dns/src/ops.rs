//! Operations: the Prometheus metrics the server records (queries by type
//! and rcode, latency, cache hits and misses, upstream errors) and the HTTP
//! endpoint serving `/healthz`, `/ready` (true after the first cluster sync)
//! and `/metrics` on its own port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::server::Transport;

type Labels = Vec<(String, String)>;

/// The labels of `weft_dns_queries_total`, kept as numbers so that counting
/// a query allocates nothing; spelled out only when the metrics are read.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct QueryLabels {
    /// `None`: a message without a readable question.
    qtype: Option<RecordType>,
    transport: Transport,
    rcode: ResponseCode,
}

/// The `type` label: the query type's mnemonic, `none` without a question.
struct TypeLabel(Option<RecordType>);

impl EncodeLabelValue for TypeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write as _;
        match self.0 {
            Some(t) => write!(encoder, "{t}"),
            None => encoder.write_str("none"),
        }
    }
}

/// The `rcode` label, as dig spells it.
struct RcodeLabel(ResponseCode);

impl EncodeLabelValue for RcodeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write as _;
        match rcode_name(self.0) {
            Some(name) => encoder.write_str(name),
            None => write!(encoder, "{}", u16::from(self.0)),
        }
    }
}

impl EncodeLabelSet for QueryLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        ("type", TypeLabel(self.qtype)).encode(encoder.encode_label())?;
        let transport = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        ("transport", transport).encode(encoder.encode_label())?;
        ("rcode", RcodeLabel(self.rcode)).encode(encoder.encode_label())
    }
}

/// The rcode as dig and CoreDNS's metrics spell it.
fn rcode_name(rcode: ResponseCode) -> Option<&'static str> {
    Some(match u16::from(rcode) {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        16 => "BADVERS",
        _ => return None,
    })
}

/// Every metric, registered once; shared by the servers and the forwarder.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    queries: Family<QueryLabels, Counter>,
    latency: Histogram,
    cache_hits: Counter,
    cache_misses: Counter,
    upstream_errors: Family<Labels, Counter>,
    upstream_up: Family<Labels, Gauge>,
    /// Set once the cluster source delivered its first complete state.
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("weft_dns");
        let queries = Family::<QueryLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.000_025, 2.0, 18));
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let upstream_errors = Family::<Labels, Counter>::default();
        let upstream_up = Family::<Labels, Gauge>::default();
        registry.register(
            "queries",
            "Queries answered, by query type, transport and rcode",
            queries.clone(),
        );
        registry.register(
            "query_duration_seconds",
            "Time to answer a query",
            latency.clone(),
        );
        registry.register(
            "cache_hits",
            "Forwarded questions answered from the cache",
            cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Forwarded questions not in the cache",
            cache_misses.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream queries that failed, by upstream",
            upstream_errors.clone(),
        );
        registry.register(
            "upstream_up",
            "1 while an upstream is considered healthy, 0 from a failure until a health probe succeeds",
            upstream_up.clone(),
        );
        Metrics {
            registry,
            queries,
            latency,
            cache_hits,
            cache_misses,
            upstream_errors,
            upstream_up,
            ready: AtomicBool::new(false),
        }
    }

    /// Counts one answered query (`qtype` `None` when it had no readable
    /// question) and its duration.
    pub fn query(
        &self,
        qtype: Option<RecordType>,
        transport: Transport,
        rcode: ResponseCode,
        took: Duration,
    ) {
        self.queries
            .get_or_create(&QueryLabels {
                qtype,
                transport,
                rcode,
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub fn upstream_error(&self, upstream: SocketAddr) {
        self.upstream_errors
            .get_or_create(&vec![("upstream".to_owned(), upstream.to_string())])
            .inc();
    }

    /// Records whether an upstream is considered healthy.
    pub fn upstream_up(&self, upstream: SocketAddr, up: bool) {
        self.upstream_up
            .get_or_create(&vec![("upstream".to_owned(), upstream.to_string())])
            .set(i64::from(up));
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/healthz`, `/ready` and `/metrics` on `listener` until the task
/// is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    weft_ops::serve_standard(listener, metrics, "waiting for the first cluster sync").await;
}

impl weft_ops::Health for Metrics {
    fn is_ready(&self) -> bool {
        Metrics::is_ready(self)
    }

    fn render(&self) -> String {
        Metrics::render(self)
    }
}
