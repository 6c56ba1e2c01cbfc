//! The EndpointSlice controller's rules, one behaviour per test.

use super::*;
use crate::testing::{
    add_container_port, mk_pod, mk_service, set_cluster_ip, set_node, set_phase, set_ready,
    set_terminating,
};

fn addresses(slices: &[EndpointSlice]) -> Vec<String> {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .flat_map(|e| e.addresses.iter().cloned())
        .collect()
}

fn conditions(slice: &EndpointSlice, ip: &str) -> (bool, bool, bool) {
    let ep = slice
        .endpoints
        .iter()
        .find(|e| e.addresses.iter().any(|a| a == ip))
        .expect("endpoint present");
    let c = ep.conditions.clone().unwrap_or_default();
    (
        c.ready.unwrap_or(false),
        c.serving.unwrap_or(false),
        c.terminating.unwrap_or(false),
    )
}

fn ports(slice: &EndpointSlice) -> Vec<(String, i32)> {
    slice
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port.unwrap_or(0)))
        .collect()
}

#[test]
fn selected_pods_become_endpoints_and_others_do_not() {
    let svc = mk_service("default", "web", &[("app", "web")], &[("http", 80, "8080")]);
    let mut on_node = mk_pod(
        "default",
        "web-a",
        &[("app", "web"), ("tier", "x")],
        "10.244.1.2",
    );
    set_node(&mut on_node, "node-1");
    let pods = [
        on_node,
        mk_pod("default", "api", &[("app", "api")], "10.244.1.3"),
        mk_pod("other", "web-b", &[("app", "web")], "10.244.1.4"),
        mk_pod("default", "web-no-ip", &[("app", "web")], ""),
    ];
    let slices = derive_endpoint_slices(&svc, &pods);
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    assert_eq!(addresses(&slices), ["10.244.1.2"]);
    assert_eq!(ports(slice), [("http".to_owned(), 8080)]);
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.metadata.name.as_deref(), Some("web-0"));
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(SERVICE_NAME_LABEL).map(String::as_str),
        Some("web")
    );
    assert_eq!(
        labels.get(MANAGED_BY_LABEL).map(String::as_str),
        Some(ENDPOINTSLICE_CONTROLLER)
    );
    let ep = &slice.endpoints[0];
    assert_eq!(ep.node_name.as_deref(), Some("node-1"));
    let target = ep.target_ref.clone().unwrap_or_default();
    assert_eq!(
        (target.kind.as_deref(), target.name.as_deref()),
        (Some("Pod"), Some("web-a"))
    );
}

#[test]
fn a_service_without_selector_gets_no_managed_slices() {
    let svc = mk_service("default", "external-db", &[], &[("", 5432, "")]);
    let pods = [mk_pod("default", "db", &[("app", "db")], "10.244.1.2")];
    assert!(derive_endpoint_slices(&svc, &pods).is_empty());
}

#[test]
fn a_selected_service_without_pods_gets_an_empty_placeholder_slice() {
    let svc = mk_service("default", "web", &[("app", "web")], &[("", 80, "")]);
    let slices = derive_endpoint_slices(&svc, &[]);
    assert_eq!(slices.len(), 1);
    assert!(slices[0].endpoints.is_empty());
    assert_eq!(slices[0].metadata.name.as_deref(), Some("web-0"));
}

#[test]
fn named_target_ports_resolve_per_pod_and_split_slices_by_port_number() {
    let svc = mk_service("default", "web", &[("app", "web")], &[("http", 80, "web")]);
    let mut a = mk_pod("default", "a", &[("app", "web")], "10.244.1.2");
    add_container_port(&mut a, "web", 8080, "TCP");
    let mut b = mk_pod("default", "b", &[("app", "web")], "10.244.1.3");
    add_container_port(&mut b, "web", 9090, "TCP");
    let mut c = mk_pod("default", "c", &[("app", "web")], "10.244.1.4");
    add_container_port(&mut c, "web", 8080, "TCP");
    let mut slices = derive_endpoint_slices(&svc, &[a, b, c]);
    slices.sort_by_key(ports);
    assert_eq!(slices.len(), 2);
    assert_eq!(ports(&slices[0]), [("http".to_owned(), 8080)]);
    assert_eq!(addresses(&slices[..1]), ["10.244.1.2", "10.244.1.4"]);
    assert_eq!(ports(&slices[1]), [("http".to_owned(), 9090)]);
    assert_eq!(addresses(&slices[1..]), ["10.244.1.3"]);
}

#[test]
fn a_pod_without_the_named_port_is_an_endpoint_without_that_port() {
    let svc = mk_service(
        "default",
        "web",
        &[("app", "web")],
        &[("http", 80, "web"), ("metrics", 9100, "9100")],
    );
    let pod = mk_pod("default", "a", &[("app", "web")], "10.244.1.2");
    let slices = derive_endpoint_slices(&svc, &[pod]);
    assert_eq!(ports(&slices[0]), [("metrics".to_owned(), 9100)]);
}

#[test]
fn a_named_port_must_match_the_protocol_too() {
    let svc = mk_service("default", "dns", &[("app", "dns")], &[("dns", 53, "dns")]);
    let mut pod = mk_pod("default", "a", &[("app", "dns")], "10.244.1.2");
    add_container_port(&mut pod, "dns", 5353, "UDP");
    add_container_port(&mut pod, "dns", 5354, "TCP");
    let slices = derive_endpoint_slices(&svc, &[pod]);
    assert_eq!(ports(&slices[0]), [("dns".to_owned(), 5354)]);
}

#[test]
fn readiness_transitions_flip_ready_and_serving() {
    let svc = mk_service("default", "web", &[("app", "web")], &[("", 80, "")]);
    let mut pod = mk_pod("default", "a", &[("app", "web")], "10.244.1.2");
    set_ready(&mut pod, false);
    let slices = derive_endpoint_slices(&svc, std::slice::from_ref(&pod));
    assert_eq!(conditions(&slices[0], "10.244.1.2"), (false, false, false));
    set_ready(&mut pod, true);
    let slices = derive_endpoint_slices(&svc, std::slice::from_ref(&pod));
    assert_eq!(conditions(&slices[0], "10.244.1.2"), (true, true, false));
}

#[test]
fn terminating_pods_stay_as_serving_but_not_ready() {
    let svc = mk_service("default", "web", &[("app", "web")], &[("", 80, "")]);
    let mut pod = mk_pod("default", "a", &[("app", "web")], "10.244.1.2");
    set_terminating(&mut pod);
    let slices = derive_endpoint_slices(&svc, &[pod]);
    assert_eq!(conditions(&slices[0], "10.244.1.2"), (false, true, true));
}

#[test]
fn finished_pods_are_not_endpoints() {
    let svc = mk_service("default", "web", &[("app", "web")], &[("", 80, "")]);
    let mut done = mk_pod("default", "job", &[("app", "web")], "10.244.1.2");
    set_phase(&mut done, "Succeeded");
    let slices = derive_endpoint_slices(&svc, &[done]);
    assert!(addresses(&slices).is_empty());
}

#[test]
fn publish_not_ready_addresses_marks_unready_pods_ready() {
    let mut svc = mk_service("default", "db", &[("app", "db")], &[("", 5432, "")]);
    if let Some(spec) = svc.spec.as_mut() {
        spec.publish_not_ready_addresses = Some(true);
    }
    let mut pod = mk_pod("default", "db-0", &[("app", "db")], "10.244.1.2");
    set_ready(&mut pod, false);
    let slices = derive_endpoint_slices(&svc, &[pod]);
    assert_eq!(conditions(&slices[0], "10.244.1.2"), (true, true, false));
}

#[test]
fn slices_are_split_at_one_hundred_endpoints() {
    let svc = mk_service("default", "web", &[("app", "web")], &[("", 80, "")]);
    let pods: Vec<Pod> = (0..250)
        .map(|i| {
            mk_pod(
                "default",
                &format!("p{i:03}"),
                &[("app", "web")],
                &format!("10.244.{}.{}", i / 200, i % 200 + 1),
            )
        })
        .collect();
    let slices = derive_endpoint_slices(&svc, &pods);
    let sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let names: Vec<_> = slices
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    assert_eq!(addresses(&slices).len(), 250);
}

#[test]
fn headless_services_get_the_headless_label_and_pod_hostnames() {
    let mut svc = mk_service("default", "db", &[("app", "db")], &[("", 5432, "")]);
    set_cluster_ip(&mut svc, "None");
    let mut pod = mk_pod("default", "db-0", &[("app", "db")], "10.244.1.2");
    if let Some(spec) = pod.spec.as_mut() {
        spec.hostname = Some("db-0".to_owned());
        spec.subdomain = Some("db".to_owned());
    }
    let slices = derive_endpoint_slices(&svc, &[pod]);
    let labels = slices[0].metadata.labels.clone().unwrap_or_default();
    assert!(labels.contains_key(HEADLESS_LABEL));
    assert_eq!(slices[0].endpoints[0].hostname.as_deref(), Some("db-0"));
}

#[test]
fn external_name_services_get_no_slices() {
    let mut svc = mk_service("default", "ext", &[("app", "web")], &[("", 80, "")]);
    if let Some(spec) = svc.spec.as_mut() {
        spec.type_ = Some("ExternalName".to_owned());
        spec.external_name = Some("example.com".to_owned());
    }
    let pods = [mk_pod("default", "a", &[("app", "web")], "10.244.1.2")];
    assert!(derive_endpoint_slices(&svc, &pods).is_empty());
}
