//! Keeps the routing table current with the cluster model: a thread waits on
//! the [`Cluster`]'s coalesced change stream, rebuilds the whole table from
//! a read snapshot and swaps it in atomically (requests in flight keep the
//! table they started with; nothing is dropped), logs new problems, marks
//! the controller ready after the first synced build, and publishes the
//! controller's addresses into each served Ingress's
//! `status.loadBalancer.ingress`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::networking::v1::{
    IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use weft_cluster::model::Ingress;
use weft_cluster::{Cluster, Kind, Object, ObjectKey, Store};

use crate::ops::Metrics;
use crate::routes::{ClassSettings, IngressName, RouteTable};

/// Where `status.loadBalancer.ingress` is written.
#[derive(Clone)]
pub enum StatusWriter {
    /// Not written (no addresses to publish).
    Off,
    /// The lab's embedded store.
    Store(Store),
    /// The Kubernetes API (a merge patch of the status subresource).
    Kubernetes {
        client: kube::Client,
        runtime: tokio::runtime::Handle,
    },
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StatusWriter::Off => "Off",
            StatusWriter::Store(_) => "Store",
            StatusWriter::Kubernetes { .. } => "Kubernetes",
        })
    }
}

/// The entries to publish: IPs as `ip`, anything else as `hostname`.
pub fn status_entries(addresses: &[String]) -> Vec<IngressLoadBalancerIngress> {
    addresses
        .iter()
        .map(|address| match address.parse::<IpAddr>() {
            Ok(ip) => IngressLoadBalancerIngress {
                ip: Some(ip.to_string()),
                ..Default::default()
            },
            Err(_) => IngressLoadBalancerIngress {
                hostname: Some(address.clone()),
                ..Default::default()
            },
        })
        .collect()
}

fn current_entries(ingress: &Ingress) -> Vec<IngressLoadBalancerIngress> {
    ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default()
}

impl StatusWriter {
    fn publish(&self, name: &IngressName, entries: &[IngressLoadBalancerIngress]) {
        let status = IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: Some(entries.to_vec()),
            }),
        };
        match self {
            StatusWriter::Off => {}
            StatusWriter::Store(store) => {
                let key = ObjectKey::new(Kind::Ingress, &name.namespace, &name.name);
                let result = store.modify(&key, |object| {
                    if let Object::Ingress(ingress) = object {
                        ingress.status = Some(status);
                    }
                });
                if let Err(error) = result {
                    tracing::warn!(ingress = %name, %error, "cannot write the Ingress status");
                }
            }
            StatusWriter::Kubernetes { client, runtime } => {
                let api: kube::Api<Ingress> =
                    kube::Api::namespaced(client.clone(), &name.namespace);
                let patch = serde_json::json!({ "status": status });
                let name = name.clone();
                runtime.spawn(async move {
                    let params = kube::api::PatchParams::default();
                    if let Err(error) = api
                        .patch_status(&name.name, &params, &kube::api::Patch::Merge(&patch))
                        .await
                    {
                        tracing::warn!(ingress = %name, %error, "cannot write the Ingress status");
                    }
                });
            }
        }
    }
}

/// The rebuilding thread ([`weft_cluster::Follower`]); stops when dropped.
#[derive(Debug)]
pub struct Follower {
    _thread: weft_cluster::Follower,
}

/// What the follower needs besides the cluster.
#[derive(Debug)]
pub struct FollowerParts {
    pub classes: ClassSettings,
    pub table: Arc<ArcSwap<RouteTable>>,
    pub metrics: Arc<Metrics>,
    pub status: StatusWriter,
    /// Addresses published into Ingress status (empty: status untouched).
    pub publish: Vec<String>,
}

impl Follower {
    /// Builds the table now, then rebuilds after every change.
    pub fn start(cluster: Cluster, parts: FollowerParts) -> std::io::Result<Follower> {
        let changes = cluster.subscribe();
        let entries = status_entries(&parts.publish);
        let mut reported: BTreeSet<String> = BTreeSet::new();
        let mut rebuild = move || {
            let (table, stale) = {
                let index = cluster.read();
                let table = RouteTable::build(&index, &parts.classes);
                let stale: Vec<IngressName> = if entries.is_empty() {
                    Vec::new()
                } else {
                    table
                        .ingresses
                        .iter()
                        .filter(|name| {
                            index
                                .ingress(&name.namespace, &name.name)
                                .is_some_and(|i| current_entries(i) != entries)
                        })
                        .cloned()
                        .collect()
                };
                (table, stale)
            };
            let warnings: BTreeSet<String> = table.warnings.iter().cloned().collect();
            for warning in warnings.difference(&reported) {
                tracing::warn!("{warning}");
            }
            reported = warnings;
            tracing::debug!(
                hosts = table.host_count(),
                ingresses = table.ingresses.len(),
                "routing table rebuilt"
            );
            parts
                .metrics
                .table(table.host_count(), table.certificates.len());
            parts.table.store(Arc::new(table));
            if cluster.is_synced() {
                parts.metrics.set_ready();
                for name in &stale {
                    parts.status.publish(name, &entries);
                }
            }
        };
        rebuild();
        Ok(Follower {
            _thread: weft_cluster::Follower::spawn("weft-ingress-routes", changes, rebuild)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use std::time::Duration;
    use tower_test::mock;

    #[test]
    fn addresses_become_ip_or_hostname_entries() {
        let entries = status_entries(&["192.0.2.1".to_owned(), "lb.example.com".to_owned()]);
        assert_eq!(entries[0].ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(entries[0].hostname, None);
        assert_eq!(entries[1].hostname.as_deref(), Some("lb.example.com"));
    }

    #[test]
    fn kubernetes_status_is_a_merge_patch_of_the_status_subresource() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        runtime.block_on(async {
            let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
            let client = kube::Client::new(service, "default");
            let writer = StatusWriter::Kubernetes {
                client,
                runtime: tokio::runtime::Handle::current(),
            };
            let name = IngressName {
                namespace: "shop".to_owned(),
                name: "web".to_owned(),
            };
            writer.publish(&name, &status_entries(&["192.0.2.7".to_owned()]));
            let (request, send) =
                tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                    .await
                    .unwrap_or_else(|_| panic!("no request"))
                    .unwrap_or_else(|| panic!("client gone"));
            assert_eq!(request.method(), http::Method::PATCH);
            assert_eq!(
                request.uri().path(),
                "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web/status"
            );
            assert_eq!(
                request.headers()["content-type"],
                "application/merge-patch+json"
            );
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap_or_else(|e| panic!("body: {e}"))
                .to_bytes();
            let patch: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or_else(|e| panic!("json: {e}"));
            assert_eq!(
                patch,
                serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}})
            );
            send.send_response(
                Response::builder()
                    .body(Body::from(b"{}".to_vec()))
                    .unwrap_or_else(|e| panic!("response: {e}")),
            );
        });
    }
}
