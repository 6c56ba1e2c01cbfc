//! Keeps the routing table current with the cluster model: a thread waits on
//! the [`Cluster`]'s coalesced change stream, rebuilds the whole table from
//! a read snapshot and swaps it in atomically (requests in flight keep the
//! table they started with; nothing is dropped), logs new problems, marks
//! the controller ready after the first synced build, and publishes the
//! controller's addresses into each served Ingress's
//! `status.loadBalancer.ingress` (adding its own to those of other
//! controllers, and taking them out again on shutdown).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

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

fn current_entries(ingress: &Ingress) -> &[IngressLoadBalancerIngress] {
    ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
}

/// `current` with `own` added (`publishing`) or taken out, in a stable
/// order. Each controller only adds or removes its own entries, so two
/// controllers publishing different addresses converge on both instead of
/// overwriting each other on every change.
pub fn merged(
    current: &[IngressLoadBalancerIngress],
    own: &[IngressLoadBalancerIngress],
    publishing: bool,
) -> Vec<IngressLoadBalancerIngress> {
    let mut out: Vec<IngressLoadBalancerIngress> = current
        .iter()
        .filter(|entry| !own.contains(entry))
        .cloned()
        .collect();
    if publishing {
        out.extend(own.iter().cloned());
    }
    let order = |entry: &IngressLoadBalancerIngress| {
        (
            entry.ip.clone().unwrap_or_default(),
            entry.hostname.clone().unwrap_or_default(),
        )
    };
    out.sort_by_key(order);
    out.dedup();
    out
}

/// Whether `ingress`'s status lacks one of `own`.
fn lacks_own(ingress: &Ingress, own: &[IngressLoadBalancerIngress]) -> bool {
    let current = current_entries(ingress);
    own.iter().any(|entry| !current.contains(entry))
}

impl StatusWriter {
    /// Adds `own` to each Ingress's `status.loadBalancer.ingress`
    /// (`publishing`) or takes it out; each Ingress comes with the status
    /// the caller last saw. The store gets one commit for all of them;
    /// each write to the API runs on the runtime and its handle is returned.
    fn publish(
        &self,
        due: Vec<(IngressName, Vec<IngressLoadBalancerIngress>)>,
        own: &[IngressLoadBalancerIngress],
        publishing: bool,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let status = |entries: Vec<IngressLoadBalancerIngress>| IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: Some(entries),
            }),
        };
        match self {
            StatusWriter::Off => Vec::new(),
            StatusWriter::Store(store) => {
                if due.is_empty() {
                    return Vec::new();
                }
                // Merged under the store's lock, from what it holds now; an
                // Ingress deleted meanwhile is skipped.
                let edits = due
                    .iter()
                    .map(|(name, _)| {
                        let key = ObjectKey::new(Kind::Ingress, &name.namespace, &name.name);
                        let edit = |object: &mut Object| {
                            if let Object::Ingress(ingress) = object {
                                let entries = merged(current_entries(ingress), own, publishing);
                                ingress.status = Some(status(entries));
                            }
                        };
                        (key, edit)
                    })
                    .collect();
                if let Err(error) = store.modify_many(edits) {
                    tracing::warn!(ingresses = due.len(), %error, "cannot write the Ingress status");
                }
                Vec::new()
            }
            StatusWriter::Kubernetes { client, runtime } => due
                .into_iter()
                .map(|(name, current)| {
                    let api: kube::Api<Ingress> =
                        kube::Api::namespaced(client.clone(), &name.namespace);
                    // A merge patch replaces the list: a write that crossed
                    // another controller's is seen on the next change and
                    // merged again.
                    let patch =
                        serde_json::json!({ "status": status(merged(&current, own, publishing)) });
                    runtime.spawn(async move {
                        let params = kube::api::PatchParams::default();
                        if let Err(error) = api
                            .patch_status(&name.name, &params, &kube::api::Patch::Merge(&patch))
                            .await
                        {
                            tracing::warn!(ingress = %name, %error, "cannot write the Ingress status");
                        }
                    })
                })
                .collect(),
        }
    }
}

/// What publishing and withdrawing the controller's addresses need.
#[derive(Debug, Clone)]
struct Publisher {
    cluster: Cluster,
    table: Arc<ArcSwap<RouteTable>>,
    status: StatusWriter,
    own: Vec<IngressLoadBalancerIngress>,
    /// Held while writes are issued, so none starts after the withdrawal.
    state: Arc<Mutex<Publishing>>,
}

/// Whether the controller still publishes, and its API writes in flight.
#[derive(Debug, Default)]
struct Publishing {
    withdrawn: bool,
    in_flight: Vec<tokio::task::JoinHandle<()>>,
}

impl Publisher {
    fn lock(&self) -> std::sync::MutexGuard<'_, Publishing> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds the controller's addresses to every served Ingress that lacks
    /// them, unless it withdrew.
    fn publish(&self) {
        let mut state = self.lock();
        if state.withdrawn {
            return;
        }
        let writes = self.writes(true);
        state.in_flight.retain(|write| !write.is_finished());
        state.in_flight.extend(writes);
    }

    /// Stops publishing, waits for writes in flight, then takes the
    /// controller's addresses out again; API writes are waited for up to
    /// `timeout` in all.
    async fn withdraw(&self, timeout: std::time::Duration) {
        let earlier = {
            let mut state = self.lock();
            state.withdrawn = true;
            std::mem::take(&mut state.in_flight)
        };
        let all = async {
            for write in earlier {
                let _ = write.await;
            }
            for write in self.writes(false) {
                let _ = write.await;
            }
        };
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("withdrawing the Ingress status timed out");
        }
    }

    /// Writes to every served Ingress whose status needs it. A withdrawal
    /// does not trust the cluster view, which may not show this
    /// controller's last write yet: it writes every served Ingress (the
    /// store merges under its lock; a patch to the API takes the view's
    /// entries without this controller's).
    fn writes(&self, publishing: bool) -> Vec<tokio::task::JoinHandle<()>> {
        if self.own.is_empty() {
            return Vec::new();
        }
        let table = self.table.load();
        let due: Vec<(IngressName, Vec<IngressLoadBalancerIngress>)> = {
            let index = self.cluster.read();
            table
                .ingresses
                .iter()
                .filter_map(|name| {
                    let ingress = index.ingress(&name.namespace, &name.name)?;
                    (!publishing || lacks_own(ingress, &self.own))
                        .then(|| (name.clone(), current_entries(ingress).to_vec()))
                })
                .collect()
        };
        self.status.publish(due, &self.own, publishing)
    }
}

/// The rebuilding thread ([`weft_cluster::Follower`]); stops when dropped.
#[derive(Debug)]
pub struct Follower {
    _thread: weft_cluster::Follower,
    publisher: Publisher,
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
        let publisher = Publisher {
            cluster: cluster.clone(),
            table: parts.table.clone(),
            status: parts.status.clone(),
            own: status_entries(&parts.publish),
            state: Arc::default(),
        };
        let rebuilding = publisher.clone();
        let mut reported: BTreeSet<String> = BTreeSet::new();
        let mut rebuild = move || {
            let table = RouteTable::build(&cluster.read(), &parts.classes);
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
                rebuilding.publish();
            }
        };
        rebuild();
        Ok(Follower {
            _thread: weft_cluster::Follower::spawn("weft-ingress-routes", changes, rebuild)?,
            publisher,
        })
    }

    /// Takes the controller's addresses out of the status of every Ingress
    /// it serves (on shutdown, as ingress-nginx does), waiting up to
    /// `timeout` for writes to the API.
    pub async fn withdraw(&self, timeout: std::time::Duration) {
        self.publisher.withdraw(timeout).await;
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
            let own = status_entries(&["192.0.2.7".to_owned()]);
            let current = status_entries(&["192.0.2.9".to_owned()]);
            let writes = writer.publish(vec![(name, current)], &own, true);
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
                serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}, {"ip": "192.0.2.9"}]}}})
            );
            send.send_response(
                Response::builder()
                    .body(Body::from(b"{}".to_vec()))
                    .unwrap_or_else(|e| panic!("response: {e}")),
            );
            for write in writes {
                let _ = write.await;
            }
        });
    }

    #[test]
    fn controllers_add_and_withdraw_only_their_own_entries() {
        let a = status_entries(&["192.0.2.1".to_owned()]);
        let b = status_entries(&["192.0.2.2".to_owned(), "lb.example.com".to_owned()]);
        let with_a = merged(&[], &a, true);
        let with_both = merged(&with_a, &b, true);
        assert_eq!(with_both.len(), 3);
        // Publishing again changes nothing: the two do not take turns.
        assert_eq!(merged(&with_both, &a, true), with_both);
        assert_eq!(merged(&with_both, &b, true), with_both);
        // The order does not depend on who wrote last.
        assert_eq!(merged(&merged(&[], &b, true), &a, true), with_both);
        assert_eq!(merged(&with_both, &a, false), merged(&[], &b, true));
        assert!(merged(&merged(&with_both, &a, false), &b, false).is_empty());
    }
}
