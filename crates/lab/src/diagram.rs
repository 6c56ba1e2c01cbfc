//! `weft lab diagram`: the lab's topology as an SVG picture, the drawing
//! the seed notes make by hand — the LAN with its gateway, the external
//! host, each node with its address, bridge and pod subnet, the pods with
//! their IPs, and the Services with their ClusterIPs and NodePorts.
//! [`render`] is a pure function of a [`Picture`]; [`picture`] reads one
//! from the lab's store.

use std::fmt::Write as _;

use weft_cluster::model::pod_is_ready;
use weft_cluster::{Kind, Object, Store};

use crate::LabError;
use crate::layout::{EXTERNAL_IP, LAN, LAN_GATEWAY, Layout};
use crate::ops::Settings;

/// One pod in the picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodBox {
    /// `namespace/name`.
    pub name: String,
    /// Its IP, if it has one.
    pub ip: Option<String>,
    /// Whether it is Ready.
    pub ready: bool,
}

/// One node in the picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBox {
    /// Node name.
    pub name: String,
    /// LAN address.
    pub address: String,
    /// Pod subnet.
    pub pod_cidr: String,
    /// Its pods.
    pub pods: Vec<PodBox>,
}

/// Everything drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// Lab name.
    pub lab: String,
    /// Pod network mode.
    pub mode: String,
    /// Nodes, in order.
    pub nodes: Vec<NodeBox>,
    /// Services: `namespace/name  clusterIP  ports`.
    pub services: Vec<String>,
}

/// Reads the picture of a lab from its store.
pub fn picture(layout: &Layout) -> Result<Picture, LabError> {
    let settings = Settings::require(layout)?;
    let store = Store::open(layout.store_dir())?;
    let mut nodes = Vec::new();
    for object in store.list(Kind::Node, None)? {
        let Object::Node(node) = object else { continue };
        nodes.push(NodeBox {
            name: node.metadata.name.clone().unwrap_or_default(),
            address: node
                .status
                .as_ref()
                .and_then(|status| status.addresses.as_ref())
                .and_then(|addresses| addresses.iter().find(|a| a.type_ == "InternalIP"))
                .map(|a| a.address.clone())
                .unwrap_or_default(),
            pod_cidr: node
                .spec
                .as_ref()
                .and_then(|spec| spec.pod_cidr.clone())
                .unwrap_or_default(),
            pods: Vec::new(),
        });
    }
    for object in store.list(Kind::Pod, None)? {
        let Object::Pod(pod) = object else { continue };
        let node = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .unwrap_or_default();
        if let Some(node) = nodes.iter_mut().find(|candidate| candidate.name == node) {
            node.pods.push(PodBox {
                name: format!(
                    "{}/{}",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default()
                ),
                ip: pod.status.as_ref().and_then(|status| status.pod_ip.clone()),
                ready: pod_is_ready(&pod),
            });
        }
    }
    let mut services = Vec::new();
    for object in store.list(Kind::Service, None)? {
        let Object::Service(service) = object else {
            continue;
        };
        let spec = service.spec.unwrap_or_default();
        let ports: Vec<String> = spec
            .ports
            .unwrap_or_default()
            .iter()
            .map(|port| {
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                match port.node_port {
                    Some(node_port) => format!("{}/{protocol}→NodePort {node_port}", port.port),
                    None => format!("{}/{protocol}", port.port),
                }
            })
            .collect();
        services.push(format!(
            "{}/{}  {}  {}",
            service.metadata.namespace.as_deref().unwrap_or_default(),
            service.metadata.name.as_deref().unwrap_or_default(),
            spec.cluster_ip.unwrap_or_default(),
            ports.join(", ")
        ));
    }
    Ok(Picture {
        lab: layout.name.clone(),
        mode: settings.mode,
        nodes,
        services,
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const NODE_WIDTH: usize = 260;
const POD_HEIGHT: usize = 44;

/// The SVG document.
pub fn render(picture: &Picture) -> String {
    let columns = picture.nodes.len() + 1; // nodes, then the external host
    let width = 40 + columns * (NODE_WIDTH + 30);
    let most_pods = picture
        .nodes
        .iter()
        .map(|node| node.pods.len())
        .max()
        .unwrap_or(0);
    let node_height = 130 + most_pods * (POD_HEIGHT + 10);
    let services_top = 170 + node_height + 30;
    let height = services_top + 40 + picture.services.len() * 22;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="20" y="28" font-size="16" font-weight="bold">weft lab {} ({} mode)</text>"#,
        escape(&picture.lab),
        escape(&picture.mode)
    );
    // The LAN.
    let _ = writeln!(
        svg,
        r##"<rect x="20" y="50" width="{}" height="40" rx="6" fill="#e8f0fe" stroke="#4a6fa5"/>"##,
        width - 40
    );
    let _ = writeln!(
        svg,
        r#"<text x="32" y="75">LAN {LAN}: bridge lan0, gateway {LAN_GATEWAY} (weft-{}-lan)</text>"#,
        escape(&picture.lab)
    );
    let top = 130;
    for (column, node) in picture.nodes.iter().enumerate() {
        let x = 20 + column * (NODE_WIDTH + 30);
        let center = x + NODE_WIDTH / 2;
        let _ = writeln!(
            svg,
            r##"<line x1="{center}" y1="90" x2="{center}" y2="{top}" stroke="#4a6fa5"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{x}" y="{top}" width="{NODE_WIDTH}" height="{node_height}" rx="8" fill="#f4f4f4" stroke="#333"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-weight="bold">{}  eth0 {}</text>"#,
            x + 10,
            top + 20,
            escape(&node.name),
            escape(&node.address)
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{}" y="{}" width="{}" height="30" rx="4" fill="#fff3d6" stroke="#b58900"/>"##,
            x + 10,
            top + 35,
            NODE_WIDTH - 20
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">bridge cni0, pods {}</text>"#,
            x + 18,
            top + 55,
            escape(&node.pod_cidr)
        );
        for (row, pod) in node.pods.iter().enumerate() {
            let y = top + 80 + row * (POD_HEIGHT + 10);
            let fill = if pod.ready { "#e3f6e3" } else { "#fbe3e3" };
            // A veth from the bridge down the node's left margin to the pod.
            let bus = x + 14;
            let middle = y + POD_HEIGHT / 2;
            let _ = writeln!(
                svg,
                r##"<polyline points="{bus},{} {bus},{middle} {},{middle}" fill="none" stroke="#b58900" stroke-dasharray="3 2"/>"##,
                top + 65,
                x + 20
            );
            let _ = writeln!(
                svg,
                r##"<rect x="{}" y="{y}" width="{}" height="{POD_HEIGHT}" rx="4" fill="{fill}" stroke="#2e7d32"/>"##,
                x + 20,
                NODE_WIDTH - 40
            );
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}">{}</text>"#,
                x + 28,
                y + 18,
                escape(&pod.name)
            );
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}">eth0 {}</text>"#,
                x + 28,
                y + 34,
                escape(pod.ip.as_deref().unwrap_or("(no IP yet)"))
            );
        }
    }
    // The external host.
    let x = 20 + picture.nodes.len() * (NODE_WIDTH + 30);
    let center = x + NODE_WIDTH / 2;
    let _ = writeln!(
        svg,
        r##"<line x1="{center}" y1="90" x2="{center}" y2="{top}" stroke="#4a6fa5"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{x}" y="{top}" width="{NODE_WIDTH}" height="50" rx="8" fill="#efe6f7" stroke="#6a3d9a"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-weight="bold">external  eth0 {EXTERNAL_IP}</text>"#,
        x + 10,
        top + 30
    );
    // Services.
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{services_top}" font-weight="bold">Services</text>"#
    );
    for (row, service) in picture.services.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="20" y="{}">{}</text>"#,
            services_top + 22 * (row + 1),
            escape(service)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_picture_shows_nodes_pods_addresses_and_services() {
        let picture = Picture {
            lab: "demo".into(),
            mode: "vxlan".into(),
            nodes: vec![NodeBox {
                name: "node-1".into(),
                address: "192.168.10.11".into(),
                pod_cidr: "10.244.0.0/24".into(),
                pods: vec![PodBox {
                    name: "default/web-0".into(),
                    ip: Some("10.244.0.2".into()),
                    ready: true,
                }],
            }],
            services: vec!["default/web  10.96.0.2  80→NodePort 30080".into()],
        };
        let svg = render(&picture);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for text in [
            "node-1",
            "192.168.10.11",
            "10.244.0.0/24",
            "default/web-0",
            "10.244.0.2",
            "NodePort 30080",
            "vxlan",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn names_are_escaped() {
        let picture = Picture {
            lab: "a<b".into(),
            mode: "host-gw".into(),
            nodes: vec![],
            services: vec![],
        };
        assert!(render(&picture).contains("a&lt;b"));
    }
}
