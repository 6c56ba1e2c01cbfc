//! Privileged tests: every transaction goes into a throwaway namespace
//! (`weft-t-*`, deleted on drop and on panic) and is checked with real
//! packets, with our own listing, and with `nft list` as an independent
//! reader of what the kernel holds. The host's own ruleset is never touched.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use weft_nft::expr::{Expr, NatFlags, NumgenKind, Reg, RejectKind, Rule, ct_state, matches};
use weft_nft::{
    Chain, ChainType, Conntrack, Element, ElementData, Error, Family, Hook, KeyType, MapData, Nft,
    Set, TableRef, Transaction, Value, Verdict,
};
use weft_testhost::{TestNs, connect, net, require_root};

fn weft() -> TableRef {
    TableRef::new(Family::Ip, "weft")
}

fn nft_list(ns: &TestNs, what: &[&str]) -> String {
    let mut args = vec!["list"];
    args.extend_from_slice(what);
    let out = ns.exec("nft", &args);
    assert!(
        out.status.success(),
        "nft {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(ns: &TestNs, script: &str) {
    let out = ns.sh(script);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The kernel's own dump of every rule `tx` added to `table` decodes back
/// to exactly the applied expressions (same order within each chain).
fn assert_rules_read_back(nft: &mut Nft, table: &TableRef, tx: &Transaction) {
    let mut applied: Vec<(String, Vec<Expr>)> = tx
        .ops()
        .iter()
        .filter_map(|op| match op {
            weft_nft::Op::AddRule(t, rule) if t == table => {
                Some((rule.chain.clone(), rule.exprs.clone()))
            }
            _ => None,
        })
        .collect();
    let mut listed: Vec<(String, Vec<Expr>)> = nft
        .rules(table, None)
        .expect("rules")
        .into_iter()
        .map(|r| {
            let exprs = r
                .decoded
                .clone()
                .unwrap_or_else(|| panic!("undecodable rule {r:?}"));
            (r.chain, exprs)
        })
        .collect();
    applied.sort_by(|a, b| a.0.cmp(&b.0));
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed, applied);
}

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// The proxy's shape in miniature: a nat output/prerouting dispatch through
/// one verdict map keyed by `ip daddr . meta l4proto . th dport`, a service
/// chain picking an endpoint with `numgen` from a data map, DNAT to it.
fn service_table(endpoints: &[(Ipv4Addr, u16)]) -> Transaction {
    let t = weft();
    let mut tx = Transaction::new();
    tx.recreate_table(&t)
        .add_chain(
            &t,
            Chain::base("nat-output", ChainType::Nat, Hook::Output, -100),
        )
        .add_chain(
            &t,
            Chain::base("nat-prerouting", ChainType::Nat, Hook::Prerouting, -100),
        )
        .add_chain(
            &t,
            Chain::base("nat-postrouting", ChainType::Nat, Hook::Postrouting, 100),
        )
        .add_chain(
            &t,
            Chain::base("filter-output", ChainType::Filter, Hook::Output, 0),
        )
        .add_chain(&t, Chain::regular("services"))
        .add_chain(&t, Chain::regular("svc-a"))
        .add_chain(&t, Chain::regular("reject-chain"))
        .add_set(
            &t,
            Set::verdict_map(
                "service-ips",
                vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
            ),
        )
        .add_set(
            &t,
            Set::map(
                "svc-a-endpoints",
                vec![KeyType::Integer],
                vec![KeyType::Ipv4Addr, KeyType::InetService],
            ),
        )
        .add_set(
            &t,
            Set::new("affinity", vec![KeyType::Ipv4Addr])
                .with_timeout(Duration::from_secs(10800))
                .dynamic(),
        )
        .add_set(
            &t,
            Set::verdict_map(
                "no-endpoints",
                vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
            ),
        );
    for chain in ["nat-output", "nat-prerouting"] {
        tx.add_rule(&t, Rule::new(chain).push(Expr::jump("services")));
    }
    tx.add_rule(
        &t,
        Rule::new("services")
            .push(Expr::ip_daddr(Reg::R0))
            .push(Expr::l4proto(Reg::R1))
            .push(Expr::th_dport(Reg::R2))
            .push(Expr::vmap("service-ips", Reg::R0))
            .comment("dispatch by ip . proto . port"),
    );
    tx.add_rule(
        &t,
        Rule::new("svc-a")
            .push(Expr::Counter)
            .push(Expr::ip_saddr(Reg::R0))
            .push(Expr::Dynset {
                set: "affinity".into(),
                op: weft_nft::expr::DynsetOp::Update,
                sreg_key: Reg::R0,
                timeout: None,
            })
            .push(Expr::Numgen {
                dreg: Reg::R0,
                modulus: endpoints.len() as u32,
                kind: NumgenKind::Random,
                offset: 0,
            })
            .push(Expr::map("svc-a-endpoints", Reg::R0, Reg::R0))
            .push(Expr::dnat_ipv4(Reg::R0, Some(Reg::R1))),
    );
    tx.add_rule(
        &t,
        Rule::new("nat-postrouting")
            .extend(matches::ct_status(weft_nft::expr::ct_status::DNAT, Reg::R0))
            .extend(matches::mark_bits(0x4000, Reg::R0))
            .push(Expr::Masquerade(NatFlags::FULLY_RANDOM)),
    );
    tx.add_rule(
        &t,
        Rule::new("filter-output")
            .extend(matches::ct_state(ct_state::NEW, Reg::R0))
            .push(Expr::ip_daddr(Reg::R0))
            .push(Expr::l4proto(Reg::R1))
            .push(Expr::th_dport(Reg::R2))
            .push(Expr::vmap("no-endpoints", Reg::R0)),
    );
    tx.add_rule(
        &t,
        Rule::new("reject-chain").push(Expr::Reject(RejectKind::PortUnreachable)),
    );
    tx.add_elements(
        &t,
        "svc-a-endpoints",
        endpoints
            .iter()
            .enumerate()
            .map(|(i, (ip, port))| {
                Element::value(
                    vec![Value::Integer(i as u32)],
                    vec![Value::Ipv4(*ip), Value::Port(*port)],
                )
            })
            .collect(),
    );
    tx.add_elements(
        &t,
        "service-ips",
        vec![Element::verdict(
            vec![Value::Ipv4(VIP), Value::TCP, Value::Port(80)],
            Verdict::Goto("svc-a".into()),
        )],
    );
    tx
}

/// Client and server namespaces joined by a veth pair; the client routes
/// the service range to the server (so nothing ever leaves the pair).
fn client_server() -> (TestNs, TestNs) {
    let client = TestNs::new();
    let server = TestNs::new();
    connect(
        &client,
        "c0",
        net("10.77.0.1/24"),
        &server,
        "s0",
        net("10.77.0.2/24"),
    );
    sh(&client, "ip route add 10.96.0.0/16 dev c0");
    (client, server)
}

/// Serves `name` to every TCP connection on `port` inside `ns`, on a
/// background thread, until the process ends.
fn serve_tcp(ns: &TestNs, port: u16, name: &'static str) {
    let listener = ns.run(move || TcpListener::bind((BACKEND, port)).expect("bind backend"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(name.as_bytes());
        }
    });
}

fn fetch(ns: &TestNs, addr: SocketAddr) -> std::io::Result<String> {
    ns.run(move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })
}

#[test]
fn dnat_through_verdict_map_spreads_tcp_connections_over_endpoints() {
    require_root!();
    let (client, server) = client_server();
    serve_tcp(&server, 8080, "one");
    serve_tcp(&server, 8081, "two");
    let mut nft = Nft::open_in(client.ns()).expect("open nft");
    nft.apply(&service_table(&[(BACKEND, 8080), (BACKEND, 8081)]))
        .expect("apply service table");

    let vip = SocketAddr::from((VIP, 80));
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let answer = fetch(&client, vip).expect("connect through the service IP");
        *seen.entry(answer).or_insert(0) += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["one", "two"],
        "both endpoints answer: {seen:?}"
    );
    // The dynset put the client into the affinity set.
    let affinity = nft.elements(&weft(), "affinity").expect("list affinity");
    assert_eq!(affinity.len(), 1);
    assert_eq!(
        affinity[0].key,
        vec![Value::Ipv4(Ipv4Addr::new(10, 77, 0, 1))]
    );
}

#[test]
fn map_elements_update_incrementally_and_reject_refuses_at_once() {
    require_root!();
    let (client, server) = client_server();
    serve_tcp(&server, 8080, "one");
    let mut nft = Nft::open_in(client.ns()).expect("open nft");
    let t = weft();
    nft.apply(&service_table(&[(BACKEND, 8080)]))
        .expect("apply");
    let vip = SocketAddr::from((VIP, 80));
    assert_eq!(fetch(&client, vip).expect("served"), "one");

    // Endpoint gone: the service key moves from the dispatch map to the
    // "no endpoints" map, whose verdict rejects in the filter chain.
    let key = vec![Value::Ipv4(VIP), Value::TCP, Value::Port(80)];
    let mut tx = Transaction::new();
    tx.delete_elements(&t, "service-ips", vec![Element::key(key.clone())])
        .add_elements(
            &t,
            "no-endpoints",
            vec![Element::verdict(
                key.clone(),
                Verdict::Goto("reject-chain".into()),
            )],
        );
    nft.apply(&tx).expect("incremental update");
    // Changing an element's verdict in place is refused; nothing changes.
    let mut tx = Transaction::new();
    tx.add_elements(
        &t,
        "no-endpoints",
        vec![Element::verdict(key.clone(), Verdict::Drop)],
    );
    let err = nft.apply(&tx).expect_err("element exists with other data");
    assert!(err.to_string().contains("add element"), "{err}");
    let started = Instant::now();
    let err = fetch(&client, vip).expect_err("no endpoints left");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    assert!(nft.elements(&t, "service-ips").expect("list").is_empty());

    // And back.
    let mut tx = Transaction::new();
    tx.delete_elements(&t, "no-endpoints", vec![Element::key(key.clone())])
        .add_elements(
            &t,
            "service-ips",
            vec![Element::verdict(key, Verdict::Goto("svc-a".into()))],
        );
    nft.apply(&tx).expect("incremental update back");
    assert_eq!(fetch(&client, vip).expect("served again"), "one");
}

#[test]
fn applied_ruleset_reads_back_identically_through_nft_and_our_listing() {
    require_root!();
    let ns = TestNs::new();
    let mut nft = Nft::open_in(ns.ns()).expect("open nft");
    let tx = service_table(&[(BACKEND, 8080), (Ipv4Addr::new(10, 77, 0, 3), 9090)]);
    nft.apply(&tx).expect("apply");
    let t = weft();

    assert_rules_read_back(&mut nft, &t, &tx);

    let listing = nft_list(&ns, &["table", "ip", "weft"]);
    for expected in [
        "type nat hook output priority -100; policy accept;",
        "type nat hook prerouting priority dstnat; policy accept;",
        "type nat hook postrouting priority srcnat; policy accept;",
        "type ipv4_addr . inet_proto . inet_service : verdict",
        "10.96.0.10 . tcp . 80 : goto svc-a",
        ": ipv4_addr . inet_service",
        "0 : 10.77.0.2 . 8080",
        "1 : 10.77.0.3 . 9090",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        "comment \"dispatch by ip . proto . port\"",
        "update @affinity { ip saddr }",
        "dnat ip to numgen random mod 2 map @svc-a-endpoints",
        "masquerade fully-random",
        "ct state new ip daddr . meta l4proto . th dport vmap @no-endpoints",
        "ct status dnat meta mark & 0x00004000 != 0x00000000 masquerade fully-random",
        "flags dynamic,timeout",
        "reject",
        "timeout 3h",
    ] {
        assert!(
            listing.contains(expected),
            "missing {expected:?} in:\n{listing}"
        );
    }

    let chains = nft.chains(&t).expect("chains");
    let mut names: Vec<_> = chains.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "filter-output",
            "nat-output",
            "nat-postrouting",
            "nat-prerouting",
            "reject-chain",
            "services",
            "svc-a"
        ]
    );
    let output = chains
        .iter()
        .find(|c| c.name == "nat-output")
        .expect("nat-output");
    let base = output.base.expect("base chain");
    assert_eq!(
        (base.kind, base.hook, base.priority),
        (ChainType::Nat, Hook::Output, -100)
    );

    let sets = nft.sets(&t).expect("sets");
    let map = sets
        .iter()
        .find(|s| s.name == "svc-a-endpoints")
        .expect("map listed");
    assert_eq!(map.key.as_deref(), Some(&[KeyType::Integer][..]));
    assert_eq!(
        map.data,
        Some(MapData::Value(vec![
            KeyType::Ipv4Addr,
            KeyType::InetService
        ]))
    );
    let affinity = sets
        .iter()
        .find(|s| s.name == "affinity")
        .expect("affinity");
    assert_eq!(affinity.timeout, Some(Duration::from_secs(10800)));

    let mut elements = nft.elements(&t, "svc-a-endpoints").expect("elements");
    elements.sort_by_key(|e| e.key.clone());
    assert_eq!(
        elements[1].data,
        Some(ElementData::Value(
            vec![Value::Ipv4(Ipv4Addr::new(10, 77, 0, 3)), Value::Port(9090)].into()
        ))
    );
    let rules = nft.rules(&t, None).expect("rules");
    assert_eq!(rules.len(), 7);
    let dispatch = rules
        .iter()
        .find(|r| r.chain == "services")
        .expect("dispatch rule");
    assert_eq!(dispatch.exprs, ["payload", "meta", "payload", "lookup"]);
    assert_eq!(
        dispatch.comment.as_deref(),
        Some("dispatch by ip . proto . port")
    );

    // Deleting a rule by the handle the listing reports.
    let mut tx = Transaction::new();
    tx.delete_rule(&t, "services", dispatch.handle);
    nft.apply(&tx).expect("delete rule");
    assert!(nft.rules(&t, Some("services")).expect("rules").is_empty());
}

#[test]
fn batch_with_a_bad_element_applies_nothing_and_names_the_element() {
    require_root!();
    let ns = TestNs::new();
    let mut nft = Nft::open_in(ns.ns()).expect("open nft");
    let t = weft();
    nft.apply(&service_table(&[(BACKEND, 8080)]))
        .expect("apply");
    let before = nft_list(&ns, &["ruleset"]);

    let good = |port| {
        Element::verdict(
            vec![Value::Ipv4(VIP), Value::UDP, Value::Port(port)],
            Verdict::Goto("svc-a".into()),
        )
    };
    let bad = Element::verdict(
        vec![Value::Ipv4(VIP), Value::UDP, Value::Port(53)],
        Verdict::Goto("no-such-chain".into()),
    );
    let mut tx = Transaction::new();
    tx.add_chain(&t, Chain::regular("svc-b"))
        .add_elements(&t, "service-ips", vec![good(1), good(2), bad, good(3)])
        .add_rule(&t, Rule::new("svc-b").push(Expr::accept()));
    let err = nft
        .apply(&tx)
        .expect_err("the kernel refuses a jump to a missing chain");
    let text = err.to_string();
    assert!(matches!(err, Error::Rejected { .. }), "{err:?}");
    assert!(
        text.contains("10.96.0.10 . udp . 53 : goto no-such-chain")
            && text.contains(&ns.name().to_string()),
        "error names the element and namespace: {text}"
    );
    assert_eq!(err.raw_os_error(), Some(libc_enoent()), "{err:?}");

    // Nothing of the batch is there: no svc-b chain, no udp elements.
    assert_eq!(nft_list(&ns, &["ruleset"]), before);
    assert!(
        !nft.chains(&t)
            .expect("chains")
            .iter()
            .any(|c| c.name == "svc-b")
    );
    assert_eq!(nft.elements(&t, "service-ips").expect("elements").len(), 1);
}

fn libc_enoent() -> i32 {
    2
}

#[test]
fn a_sized_set_lists_its_size_and_refuses_elements_beyond_it() {
    require_root!();
    let ns = TestNs::new();
    let mut nft = Nft::open_in(ns.ns()).expect("open nft");
    let t = weft();
    let element = |n: u8| Element::key([Value::Ipv4(Ipv4Addr::new(10, 0, 0, n))]);
    let mut tx = Transaction::new();
    tx.add_table(&t)
        .add_set(&t, Set::new("small", vec![KeyType::Ipv4Addr]).with_size(2))
        .add_elements(&t, "small", vec![element(1), element(2)]);
    nft.apply(&tx).expect("two elements fit");
    let info = nft
        .sets(&t)
        .expect("sets")
        .into_iter()
        .find(|set| set.name == "small")
        .expect("the set");
    assert_eq!(info.size, Some(2));
    assert!(nft_list(&ns, &["set", "ip", "weft", "small"]).contains("size 2"));

    let mut tx = Transaction::new();
    tx.add_elements(&t, "small", vec![element(3)]);
    let err = nft.apply(&tx).expect_err("a third one does not");
    assert!(matches!(err, Error::Rejected { .. }), "{err:?}");
    assert_eq!(err.raw_os_error(), Some(23), "ENFILE: {err:?}");
    // Replacing one is fine: a deleted element frees its place in the
    // same transaction.
    let mut tx = Transaction::new();
    tx.delete_elements(&t, "small", vec![element(1)])
        .add_elements(&t, "small", vec![element(3)]);
    nft.apply(&tx).expect("replace one");
    assert_eq!(nft.elements(&t, "small").expect("elements").len(), 2);
}

#[test]
fn foreign_tables_are_refused_and_left_untouched() {
    require_root!();
    let ns = TestNs::new();
    sh(
        &ns,
        "nft add table ip filter && nft add chain ip filter input",
    );
    let mut nft = Nft::open_in(ns.ns()).expect("open nft");
    let foreign = TableRef::new(Family::Ip, "filter");
    let mut tx = Transaction::new();
    tx.add_table(&weft()).delete_table(&foreign);
    let err = nft.apply(&tx).expect_err("refused");
    assert!(matches!(err, Error::ForeignTable(_)), "{err:?}");
    let tables: Vec<_> = nft
        .tables()
        .expect("tables")
        .into_iter()
        .map(|t| t.table)
        .collect();
    assert_eq!(tables, [foreign], "weft table not created, filter kept");

    // Cleanup of our own table is idempotent.
    let mut tx = Transaction::new();
    tx.delete_table_if_exists(&weft());
    nft.apply(&tx).expect("delete missing table");
    nft.apply(&tx).expect("and again");
    assert_eq!(
        nft.owned_tables(None).expect("owned"),
        Vec::<TableRef>::new()
    );
}

#[test]
fn udp_conntrack_entries_are_deleted_by_service_and_by_endpoint() {
    require_root!();
    let (client, server) = client_server();
    let mut tx = service_table(&[(BACKEND, 5353)]);
    tx.add_elements(
        &weft(),
        "service-ips",
        vec![Element::verdict(
            vec![Value::Ipv4(VIP), Value::UDP, Value::Port(53)],
            Verdict::Goto("svc-a".into()),
        )],
    );
    Nft::open_in(client.ns())
        .expect("nft")
        .apply(&tx)
        .expect("apply");
    let _echo = server.run(|| UdpSocket::bind((BACKEND, 5353)).expect("bind udp backend"));
    let send = |port: u16| {
        client.run(move || {
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind client");
            sock.send_to(b"q", (VIP, 53)).expect("send");
        })
    };
    send(40001);
    send(40002);
    let mut ct = Conntrack::open_in(client.ns()).expect("conntrack");
    let udp_to_vip = |ct: &mut Conntrack| {
        ct.entries(Family::Ip)
            .expect("entries")
            .into_iter()
            .filter(|e| e.original.proto == 17 && e.original.dst == IpAddr::V4(VIP))
            .collect::<Vec<_>>()
    };
    let entries = udp_to_vip(&mut ct);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries.iter().all(|e| e.reply.src == IpAddr::V4(BACKEND)),
        "DNATed: {entries:?}"
    );

    // By endpoint (reply source), then by service address.
    assert_eq!(
        ct.delete_udp_from_endpoint(IpAddr::V4(BACKEND))
            .expect("delete"),
        2
    );
    assert!(udp_to_vip(&mut ct).is_empty());
    send(40003);
    assert_eq!(udp_to_vip(&mut ct).len(), 1);
    assert_eq!(ct.delete_udp_to(IpAddr::V4(VIP), 53).expect("delete"), 1);
    assert!(udp_to_vip(&mut ct).is_empty());
    assert_eq!(
        ct.delete_udp_to(IpAddr::V4(VIP), 53).expect("nothing left"),
        0
    );
}

#[test]
fn thirty_thousand_services_with_five_endpoints_commit_in_one_transaction() {
    require_root!();
    let ns = TestNs::new();
    let mut nft = Nft::open_in(ns.ns()).expect("open nft");
    let t = weft();
    const SERVICES: u32 = 30_000;
    let mut tx = Transaction::new();
    tx.recreate_table(&t)
        .add_chain(&t, Chain::regular("services"))
        .add_chain(&t, Chain::regular("endpoints"))
        .add_set(
            &t,
            Set::verdict_map(
                "service-ips",
                vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
            ),
        )
        .add_set(
            &t,
            Set::map(
                "service-endpoints",
                vec![KeyType::Mark, KeyType::Integer],
                vec![KeyType::Ipv4Addr, KeyType::InetService],
            ),
        );
    let ip = |i: u32| Ipv4Addr::from(0x0a60_0000 + i);
    tx.add_elements(
        &t,
        "service-ips",
        (0..SERVICES)
            .map(|i| {
                Element::verdict(
                    vec![Value::Ipv4(ip(i)), Value::TCP, Value::Port(80)],
                    Verdict::Goto("endpoints".into()),
                )
            })
            .collect(),
    );
    tx.add_elements(
        &t,
        "service-endpoints",
        (0..SERVICES)
            .flat_map(|i| {
                (0..5).map(move |e| {
                    Element::value(
                        vec![Value::Mark(i), Value::Integer(e)],
                        vec![
                            Value::Ipv4(Ipv4Addr::from(0x0af4_0000 + i * 5 + e)),
                            Value::Port(8080),
                        ],
                    )
                })
            })
            .collect(),
    );
    let started = Instant::now();
    nft.apply(&tx).expect("apply 180k elements");
    let elapsed = started.elapsed();
    println!("30k services x 5 endpoints (180k elements) committed in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(
        nft.elements(&t, "service-ips").expect("list").len(),
        SERVICES as usize
    );

    // One endpoint change at that size.
    let mut tx = Transaction::new();
    tx.delete_elements(
        &t,
        "service-endpoints",
        vec![Element::key(vec![Value::Mark(7), Value::Integer(4)])],
    )
    .add_elements(
        &t,
        "service-endpoints",
        vec![Element::value(
            vec![Value::Mark(7), Value::Integer(4)],
            vec![Value::Ipv4(Ipv4Addr::new(10, 244, 9, 9)), Value::Port(8080)],
        )],
    );
    let started = Instant::now();
    nft.apply(&tx).expect("one change");
    println!(
        "one endpoint change at 30k services committed in {:?}",
        started.elapsed()
    );
}

#[test]
fn ip6_table_dnats_tcp_through_a_verdict_map_to_an_immediate_target() {
    require_root!();
    let (client, server) = client_server();
    sh(
        &client,
        "ip addr add fd00:77::1/64 dev c0 nodad && ip route add fd00:96::/64 dev c0",
    );
    sh(&server, "ip addr add fd00:77::2/64 dev s0 nodad");
    let backend: std::net::Ipv6Addr = "fd00:77::2".parse().expect("ip");
    let vip6: std::net::Ipv6Addr = "fd00:96::10".parse().expect("ip");
    let listener = server.run(move || TcpListener::bind((backend, 8080)).expect("bind v6 backend"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"six");
        }
    });

    // ip6 daddr fills R0..R3, so the protocol goes to R4 and the port to R5.
    let t = TableRef::new(Family::Ip6, "weft");
    let mut tx = Transaction::new();
    tx.recreate_table(&t)
        .add_chain(
            &t,
            Chain::base("nat-output", ChainType::Nat, Hook::Output, -100),
        )
        .add_chain(&t, Chain::regular("svc6"))
        .add_set(
            &t,
            Set::verdict_map(
                "service-ips",
                vec![KeyType::Ipv6Addr, KeyType::InetProto, KeyType::InetService],
            ),
        )
        .add_rule(
            &t,
            Rule::new("nat-output")
                .push(Expr::ip6_daddr(Reg::R0))
                .push(Expr::l4proto(Reg::R4))
                .push(Expr::th_dport(Reg::R5))
                .push(Expr::vmap("service-ips", Reg::R0)),
        )
        .add_rule(
            &t,
            Rule::new("svc6")
                .push(Expr::Immediate {
                    dreg: Reg::R0,
                    data: backend.octets().to_vec(),
                })
                .push(Expr::Immediate {
                    dreg: Reg::R4,
                    data: 8080u16.to_be_bytes().to_vec(),
                })
                .push(Expr::dnat_ipv6(Reg::R0, Some(Reg::R4))),
        )
        .add_elements(
            &t,
            "service-ips",
            vec![Element::verdict(
                vec![Value::Ipv6(vip6), Value::TCP, Value::Port(80)],
                Verdict::Goto("svc6".into()),
            )],
        );
    let mut nft = Nft::open_in(client.ns()).expect("open nft");
    nft.apply(&tx).expect("apply ip6 table");
    assert_rules_read_back(&mut nft, &t, &tx);
    assert_eq!(
        fetch(&client, SocketAddr::from((vip6, 80))).expect("connect through the v6 service IP"),
        "six"
    );
    let listing = nft_list(&client, &["table", "ip6", "weft"]);
    for expected in [
        "type ipv6_addr . inet_proto . inet_service : verdict",
        "fd00:96::10 . tcp . 80 : goto svc6",
        "ip6 daddr . meta l4proto . th dport vmap @service-ips",
        "dnat to [fd00:77::2]:8080",
    ] {
        assert!(
            listing.contains(expected),
            "missing {expected:?} in:\n{listing}"
        );
    }
    let elements = nft.elements(&t, "service-ips").expect("elements");
    assert_eq!(
        elements[0].key,
        vec![Value::Ipv6(vip6), Value::TCP, Value::Port(80)]
    );
}

#[test]
fn cni_style_per_container_chain_is_added_and_removed_atomically() {
    require_root!();
    let node = TestNs::new();
    let mut nft = Nft::open_in(node.ns()).expect("open nft");
    let t = TableRef::new(Family::Ip, "weft-portmap");
    let mut setup = Transaction::new();
    setup
        .add_table(&t)
        .add_chain(
            &t,
            Chain::base("prerouting", ChainType::Nat, Hook::Prerouting, -100),
        )
        .add_chain(
            &t,
            Chain::base("output", ChainType::Nat, Hook::Output, -100),
        )
        .add_set(
            &t,
            Set::verdict_map("hostports", vec![KeyType::InetProto, KeyType::InetService]),
        );
    for chain in ["prerouting", "output"] {
        setup.add_rule(
            &t,
            Rule::new(chain)
                .extend(matches::daddr_is_local(Reg::R0))
                .push(Expr::l4proto(Reg::R0))
                .push(Expr::th_dport(Reg::R1))
                .push(Expr::vmap("hostports", Reg::R0)),
        );
    }
    // Idempotent: a second plugin run re-applies the same skeleton.
    nft.apply(&setup).expect("skeleton");
    assert_rules_read_back(&mut nft, &t, &setup);
    nft.apply(&setup).expect("skeleton again");
    assert_eq!(
        nft.rules(&t, Some("prerouting")).expect("rules").len(),
        2,
        "append duplicates rules"
    );

    let add = |id: &str, port: u16, ip: Ipv4Addr| {
        let chain = format!("cni-{id}");
        let mut tx = Transaction::new();
        tx.add_chain(&t, Chain::regular(chain.clone()))
            .add_rule(
                &t,
                Rule::new(chain.clone())
                    .push(Expr::Immediate {
                        dreg: Reg::R0,
                        data: ip.octets().to_vec(),
                    })
                    .push(Expr::Immediate {
                        dreg: Reg::R1,
                        data: 80u16.to_be_bytes().to_vec(),
                    })
                    .push(Expr::dnat_ipv4(Reg::R0, Some(Reg::R1)))
                    .comment(format!("container {id}")),
            )
            .add_elements(
                &t,
                "hostports",
                vec![Element::verdict(
                    vec![Value::TCP, Value::Port(port)],
                    Verdict::Goto(chain),
                )],
            );
        tx
    };
    nft.apply(&add("aaa", 8080, Ipv4Addr::new(10, 244, 0, 5)))
        .expect("ADD aaa");
    nft.apply(&add("bbb", 8081, Ipv4Addr::new(10, 244, 0, 6)))
        .expect("ADD bbb");
    let listing = nft_list(&node, &["table", "ip", "weft-portmap"]);
    assert!(listing.contains("tcp . 8080 : goto cni-aaa"), "{listing}");
    assert!(
        listing.contains("dnat to 10.244.0.5:80 comment \"container aaa\""),
        "{listing}"
    );

    // DEL aaa: element, rules and chain go in one commit.
    let mut del = Transaction::new();
    del.delete_elements(
        &t,
        "hostports",
        vec![Element::key(vec![Value::TCP, Value::Port(8080)])],
    )
    .flush_chain(&t, "cni-aaa")
    .delete_chain(&t, "cni-aaa");
    nft.apply(&del).expect("DEL aaa");
    let chains: Vec<String> = nft
        .chains(&t)
        .expect("chains")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(
        !chains.contains(&"cni-aaa".to_owned()) && chains.contains(&"cni-bbb".to_owned()),
        "{chains:?}"
    );
    assert_eq!(
        nft.elements(&t, "hostports").expect("elements"),
        [Element::verdict(
            vec![Value::TCP, Value::Port(8081)],
            Verdict::Goto("cni-bbb".into())
        )]
    );
    // A repeated DEL fails as a whole (the element is gone) and changes nothing.
    let err = nft.apply(&del).expect_err("element already deleted");
    assert!(
        err.to_string().contains("delete element { tcp . 8080 }"),
        "{err}"
    );
    assert!(
        nft.chains(&t)
            .expect("chains")
            .iter()
            .any(|c| c.name == "cni-bbb")
    );
}

#[test]
fn interval_set_of_prefixes_admits_sources_inside_and_rejects_the_rest() {
    require_root!();
    let (client, server) = client_server();
    sh(
        &client,
        "ip addr add 10.77.0.9/24 dev c0 && ip addr add 10.77.0.25/24 dev c0",
    );
    let echo = server.run(|| UdpSocket::bind((BACKEND, 9000)).expect("bind echo"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, peer)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], peer);
        }
    });
    let t = weft();
    let mut tx = Transaction::new();
    tx.recreate_table(&t)
        .add_chain(&t, Chain::base("input", ChainType::Filter, Hook::Input, 0))
        .add_set(
            &t,
            Set::new("allowed", vec![KeyType::Ipv4Addr]).with_intervals(),
        )
        .add_elements(
            &t,
            "allowed",
            vec![
                Element::prefix(net("10.77.0.0/29")),
                Element::prefix(net("192.0.2.0/24")),
                Element::range(
                    Value::Ipv4(Ipv4Addr::new(10, 77, 0, 20)),
                    Value::Ipv4(Ipv4Addr::new(10, 77, 0, 30)),
                ),
            ],
        )
        .add_rule(
            &t,
            Rule::new("input")
                .extend(matches::l4proto(17, Reg::R0))
                .push(Expr::ip_saddr(Reg::R0))
                .push(Expr::not_in_set("allowed", Reg::R0))
                .push(Expr::Reject(RejectKind::PortUnreachable)),
        );
    let mut nft = Nft::open_in(server.ns()).expect("open nft");
    nft.apply(&tx).expect("apply interval set");
    assert_rules_read_back(&mut nft, &t, &tx);

    // Sends one datagram from `src` and reports the echo or the error.
    let ask = |src: Ipv4Addr| {
        client.run(move || -> std::io::Result<Vec<u8>> {
            let sock = UdpSocket::bind((src, 0))?;
            sock.connect((BACKEND, 9000))?;
            sock.set_read_timeout(Some(Duration::from_secs(2)))?;
            sock.send(b"ping")?;
            let mut buf = [0u8; 16];
            let n = sock.recv(&mut buf)?;
            Ok(buf[..n].to_vec())
        })
    };
    assert_eq!(
        ask(Ipv4Addr::new(10, 77, 0, 1)).expect("inside /29"),
        b"ping"
    );
    assert_eq!(
        ask(Ipv4Addr::new(10, 77, 0, 25)).expect("inside the range"),
        b"ping"
    );
    let err = ask(Ipv4Addr::new(10, 77, 0, 9)).expect_err("outside every range");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    let listing = nft_list(&server, &["set", "ip", "weft", "allowed"]);
    assert!(listing.contains("10.77.0.0/29"), "{listing}");
    assert!(listing.contains("10.77.0.20-10.77.0.30"), "{listing}");
    assert!(listing.contains("192.0.2.0/24"), "{listing}");
    let mut elements = nft.elements(&t, "allowed").expect("elements");
    elements.sort_by_key(|e| e.key.clone());
    assert_eq!(elements.len(), 3, "{elements:?}");
    assert_eq!(elements[0], Element::prefix(net("10.77.0.0/29")));

    // Removing a range is incremental too.
    let mut tx = Transaction::new();
    tx.delete_elements(&t, "allowed", vec![Element::prefix(net("10.77.0.0/29"))]);
    nft.apply(&tx).expect("delete range");
    let err = ask(Ipv4Addr::new(10, 77, 0, 1)).expect_err("no longer allowed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(nft.elements(&t, "allowed").expect("elements").len(), 2);
}
