use std::collections::BTreeMap;

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weft_cluster::testing::{mk_pod, mk_service, set_cluster_ip};

use super::{Answer, Index, PodMode, ZoneSettings};

fn slice(
    ns: &str,
    svc: &str,
    endpoints: &[(&str, Option<&str>, bool)],
    ports: &[(&str, i32)],
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{svc}-abc")),
            namespace: Some(ns.to_owned()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_owned(),
                svc.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".to_owned(),
        endpoints: endpoints
            .iter()
            .map(|(ip, hostname, ready)| Endpoint {
                addresses: vec![(*ip).to_owned()],
                hostname: hostname.map(str::to_owned),
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(name, port)| EndpointPort {
                    name: Some((*name).to_owned()),
                    port: Some(*port),
                    protocol: Some("TCP".to_owned()),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    }
}

fn kubernetes_svc() -> Service {
    let mut svc = mk_service("default", "kubernetes", &[], &[("https", 443, "6443")]);
    set_cluster_ip(&mut svc, "10.3.0.1");
    svc
}

fn headless() -> Service {
    let mut svc = mk_service(
        "default",
        "headless",
        &[("app", "pet")],
        &[("https", 443, "")],
    );
    set_cluster_ip(&mut svc, "None");
    svc
}

fn external() -> Service {
    let mut svc = mk_service("default", "foo", &[], &[]);
    if let Some(spec) = svc.spec.as_mut() {
        spec.type_ = Some("ExternalName".to_owned());
        spec.external_name = Some("www.example.com".to_owned());
    }
    svc
}

fn index_with(
    settings: &ZoneSettings,
    services: &[Service],
    slices: &[EndpointSlice],
    pods: &[Pod],
) -> Index {
    Index::build(settings, services, slices, pods)
}

fn cluster() -> Index {
    let slices = [slice(
        "default",
        "headless",
        &[
            ("10.3.0.100", Some("my-pet"), true),
            ("10.3.0.101", Some("my-pet-2"), true),
            ("10.3.0.102", None, true),
            ("10.3.0.103", None, false),
        ],
        &[("https", 443)],
    )];
    index_with(
        &ZoneSettings::default(),
        &[kubernetes_svc(), headless(), external()],
        &slices,
        &[],
    )
}

/// What a client sees: rcode, answer records as text, and whether the
/// authority section carries the zone SOA.
fn ask(index: &Index, name: &str, qtype: RecordType) -> (ResponseCode, Vec<String>, bool) {
    let query = Query::query(Name::from_ascii(name).expect("test name"), qtype);
    match index.answer(&query) {
        Answer::Authoritative {
            rcode,
            answers,
            authority,
            ..
        } => {
            let mut texts: Vec<String> = answers
                .iter()
                .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
                .collect();
            texts.sort();
            let soa = authority
                .iter()
                .any(|r| matches!(r.data, RData::SOA(_)) && r.name.to_ascii() == "cluster.local.");
            (rcode, texts, soa)
        }
        Answer::NotOurs => (ResponseCode::Unknown(0xfff), Vec::new(), false),
    }
}

#[test]
fn cluster_ip_service_answers_its_a_record_from_the_spec_example() {
    let (rcode, answers, _) = ask(
        &cluster(),
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(rcode, ResponseCode::NoError);
    assert_eq!(
        answers,
        ["kubernetes.default.svc.cluster.local. 30 A 10.3.0.1"]
    );
}

#[test]
fn named_port_has_srv_record_pointing_at_the_service() {
    let (rcode, answers, _) = ask(
        &cluster(),
        "_https._tcp.kubernetes.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(rcode, ResponseCode::NoError);
    assert_eq!(
        answers,
        [
            "_https._tcp.kubernetes.default.svc.cluster.local. 30 SRV 0 100 443 kubernetes.default.svc.cluster.local."
        ]
    );
}

#[test]
fn srv_answer_carries_target_addresses_in_additional_section() {
    let query = Query::query(
        Name::from_ascii("_https._tcp.kubernetes.default.svc.cluster.local.").expect("name"),
        RecordType::SRV,
    );
    let Answer::Authoritative { additionals, .. } = cluster().answer(&query) else {
        panic!("in-zone name answered NotOurs");
    };
    let texts: Vec<String> = additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    assert_eq!(texts, ["kubernetes.default.svc.cluster.local. 10.3.0.1"]);
}

#[test]
fn service_cluster_ip_has_ptr_record() {
    let (_, answers, _) = ask(&cluster(), "1.0.3.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        answers,
        ["1.0.3.10.in-addr.arpa. 30 PTR kubernetes.default.svc.cluster.local."]
    );
}

#[test]
fn headless_service_answers_every_ready_endpoint_only() {
    let (_, answers, _) = ask(
        &cluster(),
        "headless.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(
        answers,
        [
            "headless.default.svc.cluster.local. 30 A 10.3.0.100",
            "headless.default.svc.cluster.local. 30 A 10.3.0.101",
            "headless.default.svc.cluster.local. 30 A 10.3.0.102",
        ]
    );
}

#[test]
fn headless_endpoint_with_hostname_has_its_own_name_and_ptr() {
    let index = cluster();
    let (_, answers, _) = ask(
        &index,
        "my-pet.headless.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(
        answers,
        ["my-pet.headless.default.svc.cluster.local. 30 A 10.3.0.100"]
    );
    let (_, ptr, _) = ask(&index, "100.0.3.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        ptr,
        ["100.0.3.10.in-addr.arpa. 30 PTR my-pet.headless.default.svc.cluster.local."]
    );
}

#[test]
fn headless_endpoint_without_hostname_is_named_by_its_dashed_address() {
    let index = cluster();
    let (_, answers, _) = ask(
        &index,
        "10-3-0-102.headless.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(
        answers,
        ["10-3-0-102.headless.default.svc.cluster.local. 30 A 10.3.0.102"]
    );
}

#[test]
fn headless_srv_has_one_record_per_ready_endpoint() {
    let (_, answers, _) = ask(
        &cluster(),
        "_https._tcp.headless.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        answers,
        [
            "_https._tcp.headless.default.svc.cluster.local. 30 SRV 0 33 443 10-3-0-102.headless.default.svc.cluster.local.",
            "_https._tcp.headless.default.svc.cluster.local. 30 SRV 0 33 443 my-pet-2.headless.default.svc.cluster.local.",
            "_https._tcp.headless.default.svc.cluster.local. 30 SRV 0 33 443 my-pet.headless.default.svc.cluster.local.",
        ]
    );
}

#[test]
fn not_ready_endpoint_is_published_when_the_service_asks() {
    let mut svc = headless();
    if let Some(spec) = svc.spec.as_mut() {
        spec.publish_not_ready_addresses = Some(true);
    }
    let slices = [slice(
        "default",
        "headless",
        &[("10.3.0.103", None, false)],
        &[],
    )];
    let index = index_with(&ZoneSettings::default(), &[svc], &slices, &[]);
    let (_, answers, _) = ask(&index, "headless.default.svc.cluster.local.", RecordType::A);
    assert_eq!(
        answers,
        ["headless.default.svc.cluster.local. 30 A 10.3.0.103"]
    );
}

#[test]
fn headless_service_without_ready_endpoints_is_nxdomain() {
    let slices = [slice(
        "default",
        "headless",
        &[("10.3.0.103", None, false)],
        &[],
    )];
    let index = index_with(&ZoneSettings::default(), &[headless()], &slices, &[]);
    let (rcode, answers, soa) = ask(&index, "headless.default.svc.cluster.local.", RecordType::A);
    assert_eq!(
        (rcode, answers.len(), soa),
        (ResponseCode::NXDomain, 0, true)
    );
}

#[test]
fn external_name_service_is_a_cname_for_any_type() {
    let index = cluster();
    for qtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
        let (rcode, answers, _) = ask(&index, "foo.default.svc.cluster.local.", qtype);
        assert_eq!(rcode, ResponseCode::NoError);
        assert_eq!(
            answers,
            ["foo.default.svc.cluster.local. 30 CNAME www.example.com."]
        );
    }
}

#[test]
fn dns_version_is_schema_1_1_0() {
    let (_, answers, _) = ask(&cluster(), "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(answers, ["dns-version.cluster.local. 30 TXT 1.1.0"]);
}

#[test]
fn unknown_service_is_nxdomain_with_soa() {
    let (rcode, answers, soa) = ask(&cluster(), "nope.default.svc.cluster.local.", RecordType::A);
    assert_eq!(
        (rcode, answers.len(), soa),
        (ResponseCode::NXDomain, 0, true)
    );
}

#[test]
fn existing_name_without_the_type_is_nodata_with_soa() {
    let (rcode, answers, soa) = ask(
        &cluster(),
        "kubernetes.default.svc.cluster.local.",
        RecordType::AAAA,
    );
    assert_eq!(
        (rcode, answers.len(), soa),
        (ResponseCode::NoError, 0, true)
    );
}

#[test]
fn namespace_and_svc_labels_are_empty_non_terminals() {
    let index = cluster();
    for name in [
        "default.svc.cluster.local.",
        "svc.cluster.local.",
        "_tcp.kubernetes.default.svc.cluster.local.",
    ] {
        let (rcode, answers, soa) = ask(&index, name, RecordType::A);
        assert_eq!(
            (rcode, answers.len(), soa),
            (ResponseCode::NoError, 0, true),
            "{name}"
        );
    }
    let (rcode, _, _) = ask(&index, "other.svc.cluster.local.", RecordType::A);
    assert_eq!(rcode, ResponseCode::NXDomain);
}

#[test]
fn names_match_case_insensitively_and_echo_the_question_case() {
    let (rcode, answers, _) = ask(
        &cluster(),
        "KuberNetes.DEFAULT.svc.Cluster.Local.",
        RecordType::A,
    );
    assert_eq!(rcode, ResponseCode::NoError);
    assert_eq!(
        answers,
        ["KuberNetes.DEFAULT.svc.Cluster.Local. 30 A 10.3.0.1"]
    );
}

#[test]
fn names_outside_the_zone_are_not_ours() {
    let query = Query::query(
        Name::from_ascii("example.com.").expect("name"),
        RecordType::A,
    );
    assert_eq!(cluster().answer(&query), Answer::NotOurs);
    let query = Query::query(
        Name::from_ascii("9.9.9.9.in-addr.arpa.").expect("name"),
        RecordType::PTR,
    );
    assert_eq!(cluster().answer(&query), Answer::NotOurs);
}

#[test]
fn zone_apex_answers_soa_and_ns() {
    let index = cluster();
    let (_, soa, _) = ask(&index, "cluster.local.", RecordType::SOA);
    assert_eq!(soa.len(), 1);
    assert!(
        soa[0].starts_with("cluster.local. 30 SOA ns.dns.cluster.local. hostmaster.cluster.local."),
        "{soa:?}"
    );
    let (_, ns, _) = ask(&index, "cluster.local.", RecordType::NS);
    assert_eq!(ns, ["cluster.local. 30 NS ns.dns.cluster.local."]);
}

#[test]
fn insecure_pod_records_answer_any_address() {
    let (rcode, answers, _) = ask(
        &cluster(),
        "10-244-1-7.anything.pod.cluster.local.",
        RecordType::A,
    );
    assert_eq!(rcode, ResponseCode::NoError);
    assert_eq!(
        answers,
        ["10-244-1-7.anything.pod.cluster.local. 30 A 10.244.1.7"]
    );
    let (rcode, _, _) = ask(
        &cluster(),
        "not-an-ip.anything.pod.cluster.local.",
        RecordType::A,
    );
    assert_eq!(rcode, ResponseCode::NXDomain);
}

#[test]
fn verified_pod_records_answer_only_existing_pods_in_their_namespace() {
    let settings = ZoneSettings {
        pods: PodMode::Verified,
        ..ZoneSettings::default()
    };
    let pods = [mk_pod("web", "a", &[], "10.244.1.7")];
    let index = index_with(&settings, &[], &[], &pods);
    let (_, answers, _) = ask(&index, "10-244-1-7.web.pod.cluster.local.", RecordType::A);
    assert_eq!(
        answers,
        ["10-244-1-7.web.pod.cluster.local. 30 A 10.244.1.7"]
    );
    let (rcode, _, _) = ask(&index, "10-244-1-7.other.pod.cluster.local.", RecordType::A);
    assert_eq!(rcode, ResponseCode::NXDomain);
    let (rcode, _, _) = ask(&index, "10-244-1-8.web.pod.cluster.local.", RecordType::A);
    assert_eq!(rcode, ResponseCode::NXDomain);
}

#[test]
fn disabled_pod_records_are_nxdomain() {
    let settings = ZoneSettings {
        pods: PodMode::Disabled,
        ..ZoneSettings::default()
    };
    let index = index_with(&settings, &[], &[], &[]);
    let (rcode, _, _) = ask(&index, "10-244-1-7.web.pod.cluster.local.", RecordType::A);
    assert_eq!(rcode, ResponseCode::NXDomain);
}

#[test]
fn configured_zone_and_ttl_are_used() {
    let settings = ZoneSettings {
        zone: "Corp.Example.".to_owned(),
        ttl: 5,
        pods: PodMode::Insecure,
    };
    let index = index_with(&settings, &[kubernetes_svc()], &[], &[]);
    let (_, answers, _) = ask(
        &index,
        "kubernetes.default.svc.corp.example.",
        RecordType::A,
    );
    assert_eq!(
        answers,
        ["kubernetes.default.svc.corp.example. 5 A 10.3.0.1"]
    );
    let query = Query::query(
        Name::from_ascii("kubernetes.default.svc.cluster.local.").expect("name"),
        RecordType::A,
    );
    assert_eq!(index.answer(&query), Answer::NotOurs);
}

#[test]
fn dual_stack_service_answers_a_and_aaaa() {
    let mut svc = kubernetes_svc();
    if let Some(spec) = svc.spec.as_mut() {
        spec.cluster_ips = Some(vec!["10.3.0.1".to_owned(), "fd00::1".to_owned()]);
    }
    let index = index_with(&ZoneSettings::default(), &[svc], &[], &[]);
    let (_, aaaa, _) = ask(
        &index,
        "kubernetes.default.svc.cluster.local.",
        RecordType::AAAA,
    );
    assert_eq!(
        aaaa,
        ["kubernetes.default.svc.cluster.local. 30 AAAA fd00::1"]
    );
    let (_, ptr, _) = ask(
        &index,
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
        RecordType::PTR,
    );
    assert_eq!(ptr.len(), 1, "{ptr:?}");
}
