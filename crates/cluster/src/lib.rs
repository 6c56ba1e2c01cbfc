//! The cluster model every weft component reads, and the two sources that
//! fill it.
//!
//! - [`model`]: the Kubernetes kinds weft reads (`k8s-openapi`, Kubernetes
//!   1.35 API) in one [`Object`] enum, named by [`ObjectKey`].
//! - [`index`]: the in-memory [`Index`] components query (Services by cluster
//!   IP, EndpointSlices by Service, Pods by IP, Ingress rules by host, Nodes,
//!   Secrets) behind the shared [`Cluster`] handle, and its coalesced change
//!   stream ([`Subscription`]) that wakes level-triggered reconcilers.
//! - [`controlplane`]: pure functions doing what the API server and its
//!   controllers would do: allocate ClusterIPs, NodePorts and node pod CIDRs,
//!   derive EndpointSlices from Pods.
//! - [`kubernetes`]: the Kubernetes source, watching an API server with
//!   `kube` reflectors.
//! - [`store`]: the embedded store, a directory of objects that the lab uses
//!   instead of a Kubernetes API server, with kubectl's apply conventions.
//! - [`cli`]: `weft lab apply|delete|get` as library functions.
//!
//! # Example
//! A lab component keeps a [`Cluster`] current with the embedded store and
//! recomputes whenever it changes:
//! ```
//! use std::net::IpAddr;
//! use std::time::Duration;
//! use weft_cluster::manifest::Manifest;
//! use weft_cluster::{store::WATCH_INTERVAL, Cluster, Store};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("store"))?;
//! let cluster = Cluster::new();
//! let _watcher = store.watch(&cluster, WATCH_INTERVAL)?;
//! let mut changes = cluster.subscribe();
//!
//! // Elsewhere (another process, `weft lab apply -f`), someone applies:
//! let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";
//! store.apply(&[Manifest { origin: "web.yaml".into(), text: text.into() }])?;
//!
//! // The reconciler wakes and reads the whole state.
//! changes.wait_timeout(Duration::from_secs(1)).expect("woken by the apply");
//! let ip: IpAddr = "10.96.0.2".parse()?;
//! let index = cluster.read();
//! let web = index.service_by_cluster_ip(ip).expect("allocated by the store");
//! assert_eq!(web.metadata.name.as_deref(), Some("web"));
//! # Ok(())
//! # }
//! ```
//!
//! This crate touches no kernel state: the embedded store only reads and
//! writes its directory, the Kubernetes source only lists and watches.

#![forbid(unsafe_code)]

mod changes;
pub mod cli;
pub mod controlplane;
pub mod index;
pub mod kubernetes;
pub mod manifest;
pub mod model;
pub mod store;
pub mod testing;

pub use changes::{Follower, Subscription};
pub use controlplane::ClusterConfig;
pub use index::{Cluster, Index, IngressRuleRef};
pub use kubernetes::{Health, HealthReport, KubernetesSource};
pub use model::{Kind, Object, ObjectKey};
pub use store::Store;
