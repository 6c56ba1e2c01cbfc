//! The configuration file (TOML): where to listen, the cluster zone, the
//! upstreams, the hosts file, cache and connection limits; every key has a
//! default so an empty file is a working configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::records::{PodMode, ZoneSettings};

/// How the next upstream is chosen (CoreDNS `forward … policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The first healthy upstream in the listed order.
    #[default]
    Sequential,
    /// A random healthy upstream per query.
    Random,
}

/// The whole configuration; see docs/dns.md for each key.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP and TCP address of the DNS service.
    pub listen: SocketAddr,
    /// HTTP address of `/healthz`, `/ready` and `/metrics`.
    pub ops_listen: SocketAddr,
    /// The cluster domain.
    pub zone: String,
    /// TTL of cluster records, seconds.
    pub ttl: u32,
    pub pods: PodMode,
    /// Upstream servers (`ip` or `ip:port`); empty means the nameservers
    /// of `resolv_conf`.
    pub upstreams: Vec<String>,
    pub resolv_conf: PathBuf,
    pub policy: Policy,
    /// How long one upstream has to answer, milliseconds.
    pub upstream_timeout_ms: u64,
    /// How often an upstream that failed is probed, milliseconds; it is
    /// skipped until a probe gets an answer. 0: no probes, a failed upstream
    /// is skipped for 5 s.
    pub health_check_ms: u64,
    /// An /etc/hosts-format file answered before forwarding.
    pub hosts_file: Option<PathBuf>,
    /// TTL of answers from the hosts file.
    pub hosts_ttl: u32,
    pub cache: CacheConfig,
    pub limits: Limits,
}

/// The cache of forwarded answers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Entries kept at most; 0 disables the cache.
    pub max_entries: usize,
    /// Longest time a positive answer is kept, seconds.
    pub max_positive_ttl: u32,
    /// Longest time NXDOMAIN / NODATA is kept, seconds.
    pub max_negative_ttl: u32,
}

/// What one client may hold.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open TCP connections at most; more are closed on accept.
    pub max_tcp_connections: usize,
    /// A TCP connection that sends nothing for this long is closed, ms.
    pub tcp_idle_timeout_ms: u64,
    /// Queries of one TCP connection answered concurrently (pipelining).
    pub tcp_pipeline: usize,
    /// UDP queries being answered at once; more are dropped.
    pub max_udp_in_flight: usize,
    /// Largest UDP answer whatever the client's EDNS buffer says.
    pub max_udp_payload: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 53)),
            ops_listen: SocketAddr::from(([0, 0, 0, 0], 9153)),
            zone: "cluster.local".to_owned(),
            ttl: 30,
            pods: PodMode::Insecure,
            upstreams: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            policy: Policy::Sequential,
            upstream_timeout_ms: 2000,
            health_check_ms: 500,
            hosts_file: None,
            hosts_ttl: 3600,
            cache: CacheConfig::default(),
            limits: Limits::default(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        // kubeadm's Corefile: `cache 30`.
        CacheConfig {
            max_entries: 10_000,
            max_positive_ttl: 30,
            max_negative_ttl: 30,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tcp_connections: 1000,
            tcp_idle_timeout_ms: 10_000,
            tcp_pipeline: 16,
            max_udp_in_flight: 4096,
            max_udp_payload: 4096,
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("upstream {0:?} is neither an IP address nor ip:port")]
    Upstream(String),
    #[error("no upstream: {path} lists no nameserver")]
    NoUpstream { path: PathBuf },
    /// A value that parses but cannot work.
    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        reason: String,
    },
}

impl Config {
    /// Reads a TOML file; a missing key takes its default.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config
            .check()
            .map_err(|(field, reason)| ConfigError::Invalid {
                path: path.to_owned(),
                field,
                reason,
            })?;
        Ok(config)
    }

    /// Refuses values that parse but cannot work, and writes the zone in
    /// lower case (names are compared without case).
    pub fn check(&mut self) -> Result<(), (&'static str, String)> {
        self.zone = self.zone.trim_end_matches('.').to_ascii_lowercase();
        if weft_cluster::store::dns_subdomain(&self.zone).is_err() {
            return Err(("zone", format!("{:?} is not a DNS name", self.zone)));
        }
        if self.limits.max_udp_payload < 512 {
            return Err((
                "limits.max_udp_payload",
                format!(
                    "{} is below 512, the size every DNS client takes",
                    self.limits.max_udp_payload
                ),
            ));
        }
        for (field, value) in [
            ("limits.tcp_pipeline", self.limits.tcp_pipeline),
            (
                "limits.max_tcp_connections",
                self.limits.max_tcp_connections,
            ),
            ("limits.max_udp_in_flight", self.limits.max_udp_in_flight),
        ] {
            if value == 0 {
                return Err((field, "must be at least 1".to_owned()));
            }
        }
        Ok(())
    }

    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn zone_settings(&self) -> ZoneSettings {
        ZoneSettings {
            zone: self.zone.clone(),
            ttl: self.ttl,
            pods: self.pods,
        }
    }

    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    /// The interval of upstream health probes, `None` when off.
    pub fn health_check_interval(&self) -> Option<Duration> {
        (self.health_check_ms > 0).then(|| Duration::from_millis(self.health_check_ms))
    }

    /// The upstream addresses: the configured list, else the nameservers of
    /// `resolv_conf` (port 53).
    pub fn upstream_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        if !self.upstreams.is_empty() {
            return self.upstreams.iter().map(|u| parse_upstream(u)).collect();
        }
        let text =
            std::fs::read_to_string(&self.resolv_conf).map_err(|source| ConfigError::Read {
                path: self.resolv_conf.clone(),
                source,
            })?;
        let addrs = resolv_conf_nameservers(&text);
        if addrs.is_empty() {
            return Err(ConfigError::NoUpstream {
                path: self.resolv_conf.clone(),
            });
        }
        Ok(addrs)
    }
}

fn parse_upstream(text: &str) -> Result<SocketAddr, ConfigError> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| ConfigError::Upstream(text.to_owned()))
}

/// The `nameserver` lines of a resolv.conf, as port-53 addresses.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|ip| ip.split('%').next()?.parse().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests;
