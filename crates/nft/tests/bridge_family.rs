//! The `bridge` family in a throwaway namespace: a table of Ethernet-level
//! rules (`meta iifname`, `ether saddr`) applies, reads back through our
//! listing and through `nft list`, and drops the frames it says it drops.
//! The host's own ruleset is never touched.

use weft_nft::expr::{Expr, Reg, Rule, matches};
use weft_nft::{Chain, ChainType, Family, Hook, Nft, TableRef, Transaction};
use weft_testhost::{TestNs, net, plug, require_root};

const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];

fn spoof_check(table: &TableRef) -> Transaction {
    let mut tx = Transaction::new();
    tx.add_table(table);
    tx.add_chain(
        table,
        Chain::base("prerouting", ChainType::Filter, Hook::Prerouting, -300),
    );
    let mut rule = Rule::new("prerouting").comment("weft-test spoofchk");
    for expr in matches::iifname("port1", Reg::R0)
        .into_iter()
        .chain(matches::ether_saddr(MAC, true, Reg::R1))
    {
        rule = rule.push(expr);
    }
    tx.add_rule(table, rule.push(Expr::drop()));
    tx
}

#[test]
fn bridge_table_rules_read_back_and_show_in_nft_as_written() {
    require_root!();
    let ns = TestNs::new();
    let table = TableRef::new(Family::Bridge, "weft-test");
    let mut nft = Nft::open_in(ns.ns()).expect("open nft");
    nft.apply(&spoof_check(&table)).expect("apply");

    let listed = nft.rules(&table, None).expect("rules");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].comment.as_deref(), Some("weft-test spoofchk"));
    let expected: Vec<Expr> = matches::iifname("port1", Reg::R0)
        .into_iter()
        .chain(matches::ether_saddr(MAC, true, Reg::R1))
        .chain([Expr::drop()])
        .collect();
    assert_eq!(listed[0].decoded.as_ref(), Some(&expected));
    assert!(
        nft.owned_tables(Some(Family::Bridge))
            .expect("tables")
            .contains(&table)
    );

    let out = ns.exec("nft", &["list", "table", "bridge", "weft-test"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#"iifname "port1" ether saddr != 02:00:5e:10:00:01 drop"#),
        "{text}"
    );
}

#[test]
fn frames_with_another_source_mac_are_dropped_on_their_port_only() {
    require_root!();
    let switch = TestNs::new();
    let (a, b) = (TestNs::new(), TestNs::new());
    let mut netlink = switch.netlink();
    netlink.ensure_bridge("br0", None).expect("bridge");
    netlink.set_up("br0").expect("bridge up");
    plug(
        &switch,
        "br0",
        "port0",
        &a,
        "eth0",
        Some(net("10.78.0.1/24")),
    );
    plug(
        &switch,
        "br0",
        "port1",
        &b,
        "eth0",
        Some(net("10.78.0.2/24")),
    );
    b.netlink().set_down("eth0").expect("down");
    b.netlink().set_mac("eth0", MAC).expect("mac");
    b.netlink().set_up("eth0").expect("up");
    let table = TableRef::new(Family::Bridge, "weft-test");
    let mut nft = Nft::open_in(switch.ns()).expect("open nft");
    nft.apply(&spoof_check(&table)).expect("apply");
    assert!(
        b.ping("10.78.0.1".parse().expect("ip")),
        "b with its own MAC"
    );

    b.netlink()
        .set_mac("eth0", [0x02, 0, 0x5e, 0x10, 0, 0x99])
        .expect("spoofed mac");
    assert!(
        !b.ping("10.78.0.1".parse().expect("ip")),
        "spoofed frames pass"
    );
}
