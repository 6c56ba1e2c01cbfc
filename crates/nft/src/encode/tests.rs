//! Byte-level tests of the batch compiler. Expected bytes are written out
//! from the kernel's attribute layout (nf_tables.h) and match what
//! `nft --debug=netlink` sends for the same objects.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::*;
use crate::expr::{DynsetOp, Expr, NatFlags, NumgenKind, Reg, RejectKind};
use crate::list;
use crate::model::{ChainType, Family, Hook};
use crate::wire::{Attrs, Msgs};

fn weft() -> TableRef {
    TableRef::new(Family::Ip, "weft")
}

/// (type, flags, seq, attributes after the nfgenmsg header) of every
/// message of the batch, including BATCH_BEGIN and BATCH_END.
fn messages(batch: &Batch) -> Vec<(u16, u16, u32, Vec<u8>)> {
    Msgs::new(batch.bytes())
        .map(|m| (m.ty, m.flags, m.seq, m.payload[4..].to_vec()))
        .collect()
}

fn vip_key() -> Vec<Value> {
    vec![
        Value::Ipv4(Ipv4Addr::new(10, 96, 0, 10)),
        Value::TCP,
        Value::Port(80),
    ]
}

#[test]
fn table_batch_is_framed_by_begin_and_end_and_only_the_last_message_asks_for_an_ack() {
    let mut tx = Transaction::new();
    tx.add_table(&weft()).flush_table(&weft());
    let batch = encode(&tx, 100).expect("encodes");
    let msgs = messages(&batch);
    assert_eq!(msgs.len(), 4);
    // BATCH_BEGIN: type 16, res_id = NFNL_SUBSYS_NFTABLES (big-endian).
    let begin = Msgs::new(batch.bytes()).next().expect("begin");
    assert_eq!((begin.ty, begin.seq), (16, 100));
    assert_eq!(begin.payload, [0, 0, 0, 10]);
    // NEWTABLE: 0x0a00, REQUEST|CREATE, no ACK (not last).
    assert_eq!((msgs[1].0, msgs[1].1, msgs[1].2), (0x0a00, 0x401, 101));
    #[rustfmt::skip]
    assert_eq!(msgs[1].3, [
        9, 0, 1, 0, b'w', b'e', b'f', b't', 0, 0, 0, 0, // NFTA_TABLE_NAME "weft"
        8, 0, 2, 0, 0, 0, 0, 0,                         // NFTA_TABLE_FLAGS 0
    ]);
    // flush table = DELRULE with only the table: REQUEST|ACK as last message.
    assert_eq!((msgs[2].0, msgs[2].1, msgs[2].2), (0x0a08, 0x5, 102));
    assert_eq!(msgs[3].0, 17);
    assert_eq!(msgs[3].2, 103);
    assert_eq!(batch.message_count(), 2);
}

#[test]
fn base_chain_carries_hook_priority_policy_and_type() {
    let mut tx = Transaction::new();
    tx.add_chain(
        &weft(),
        Chain::base("pre", ChainType::Nat, Hook::Prerouting, -100),
    );
    let batch = encode(&tx, 1).expect("encodes");
    let msgs = messages(&batch);
    assert_eq!(msgs[1].0, 0x0a03);
    #[rustfmt::skip]
    assert_eq!(msgs[1].3, [
        9, 0, 1, 0, b'w', b'e', b'f', b't', 0, 0, 0, 0, // NFTA_CHAIN_TABLE
        8, 0, 3, 0, b'p', b'r', b'e', 0,                // NFTA_CHAIN_NAME
        20, 0, 4, 0x80,                                 // NFTA_CHAIN_HOOK (nested)
          8, 0, 1, 0, 0, 0, 0, 0,                       //   HOOKNUM prerouting
          8, 0, 2, 0, 0xff, 0xff, 0xff, 0x9c,           //   PRIORITY -100
        8, 0, 5, 0, 0, 0, 0, 1,                         // NFTA_CHAIN_POLICY accept
        8, 0, 7, 0, b'n', b'a', b't', 0,                // NFTA_CHAIN_TYPE "nat"
    ]);
}

#[test]
fn verdict_map_with_concatenated_key_matches_nft_encoding() {
    let mut tx = Transaction::new();
    tx.add_set(
        &weft(),
        Set::verdict_map(
            "m",
            vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
        ),
    );
    let batch = encode(&tx, 1).expect("encodes");
    let msgs = messages(&batch);
    assert_eq!(msgs[1].0, 0x0a09);
    #[rustfmt::skip]
    assert_eq!(msgs[1].3, [
        9, 0, 1, 0, b'w', b'e', b'f', b't', 0, 0, 0, 0, // NFTA_SET_TABLE
        6, 0, 2, 0, b'm', 0, 0, 0,                      // NFTA_SET_NAME
        8, 0, 3, 0, 0, 0, 0, 8,                         // NFTA_SET_FLAGS map
        8, 0, 4, 0, 0, 0, 0x73, 0x0d,                   // KEY_TYPE (7<<12)|(12<<6)|13
        8, 0, 5, 0, 0, 0, 0, 12,                        // KEY_LEN 3 registers
        8, 0, 6, 0, 0xff, 0xff, 0xff, 0x00,             // DATA_TYPE verdict
        8, 0, 10, 0, 0, 0, 0, 2,                        // NFTA_SET_ID (= seq)
    ]);
}

#[test]
fn single_field_keys_are_unpadded_and_carry_byte_order_hints() {
    let mut tx = Transaction::new();
    tx.add_set(
        &weft(),
        Set::map("p", vec![KeyType::InetService], vec![KeyType::Ipv4Addr])
            .with_timeout(Duration::from_secs(3)),
    );
    let batch = encode(&tx, 1).expect("encodes");
    let attrs = &messages(&batch)[1].3;
    let find = |ty: u16| {
        Attrs::new(attrs)
            .find(|a| a.ty == ty)
            .map(|a| a.payload.to_vec())
    };
    assert_eq!(find(sys::NFTA_SET_KEY_LEN), Some(vec![0, 0, 0, 2]));
    assert_eq!(find(sys::NFTA_SET_DATA_LEN), Some(vec![0, 0, 0, 4]));
    assert_eq!(
        find(sys::NFTA_SET_FLAGS),
        Some(vec![0, 0, 0, 0x18]),
        "map|timeout"
    );
    assert_eq!(
        find(sys::NFTA_SET_TIMEOUT),
        Some(3000u64.to_be_bytes().to_vec())
    );
    let mut udata = vec![0, 4];
    udata.extend_from_slice(&2u32.to_ne_bytes());
    udata.extend_from_slice(&[1, 4]);
    udata.extend_from_slice(&2u32.to_ne_bytes());
    assert_eq!(find(sys::NFTA_SET_USERDATA), Some(udata), "both big-endian");
    assert_eq!(value_bytes(&[Value::Port(80)]), [0, 80]);
    assert_eq!(
        value_bytes(&[Value::Proto(6), Value::Port(80)]),
        [6, 0, 0, 0, 0, 80, 0, 0]
    );
}

#[test]
fn verdict_map_element_has_padded_concatenated_key_and_goto_chain() {
    let mut tx = Transaction::new();
    tx.add_elements(
        &weft(),
        "m",
        vec![Element::verdict(vip_key(), Verdict::Goto("svc-a".into()))],
    );
    let batch = encode(&tx, 1).expect("encodes");
    let msgs = messages(&batch);
    assert_eq!((msgs[1].0, msgs[1].1), (0x0a0c, 0x405));
    #[rustfmt::skip]
    assert_eq!(msgs[1].3, [
        9, 0, 1, 0, b'w', b'e', b'f', b't', 0, 0, 0, 0, // LIST_TABLE
        6, 0, 2, 0, b'm', 0, 0, 0,                      // LIST_SET
        56, 0, 3, 0x80,                                 // LIST_ELEMENTS
          52, 0, 1, 0x80,                               //   element
            20, 0, 1, 0x80,                             //     KEY
              16, 0, 1, 0,                              //       DATA_VALUE
                10, 96, 0, 10,  6, 0, 0, 0,  0, 80, 0, 0,
            28, 0, 2, 0x80,                             //     DATA
              24, 0, 2, 0x80,                           //       VERDICT
                8, 0, 1, 0, 0xff, 0xff, 0xff, 0xfc,     //         CODE goto (-4)
                10, 0, 2, 0, b's', b'v', b'c', b'-', b'a', 0, 0, 0, // CHAIN
    ]);
}

#[test]
fn vmap_dispatch_rule_encodes_payload_meta_and_lookup_into_32_bit_registers() {
    let rule = Rule::new("services")
        .push(Expr::ip_daddr(Reg::R0))
        .push(Expr::l4proto(Reg::R1))
        .push(Expr::vmap("m", Reg::R0));
    let mut tx = Transaction::new();
    tx.add_rule(&weft(), rule);
    let batch = encode(&tx, 1).expect("encodes");
    let msgs = messages(&batch);
    assert_eq!(
        (msgs[1].0, msgs[1].1),
        (0x0a06, 0xc05),
        "NEWRULE create|append|ack"
    );
    let exprs = Attrs::new(&msgs[1].3)
        .find(|a| a.ty == sys::NFTA_RULE_EXPRESSIONS)
        .expect("expressions");
    let bodies: Vec<Vec<u8>> = exprs.nested().map(|e| e.payload.to_vec()).collect();
    #[rustfmt::skip]
    assert_eq!(bodies[0], [
        12, 0, 1, 0, b'p', b'a', b'y', b'l', b'o', b'a', b'd', 0,
        36, 0, 2, 0x80,
          8, 0, 1, 0, 0, 0, 0, 8,   // DREG NFT_REG32_00
          8, 0, 2, 0, 0, 0, 0, 1,   // BASE network
          8, 0, 3, 0, 0, 0, 0, 16,  // OFFSET 16 (daddr)
          8, 0, 4, 0, 0, 0, 0, 4,   // LEN 4
    ]);
    #[rustfmt::skip]
    assert_eq!(bodies[1], [
        9, 0, 1, 0, b'm', b'e', b't', b'a', 0, 0, 0, 0,
        20, 0, 2, 0x80,
          8, 0, 2, 0, 0, 0, 0, 16,  // KEY l4proto
          8, 0, 1, 0, 0, 0, 0, 9,   // DREG NFT_REG32_01
    ]);
    #[rustfmt::skip]
    assert_eq!(bodies[2], [
        11, 0, 1, 0, b'l', b'o', b'o', b'k', b'u', b'p', 0, 0,
        28, 0, 2, 0x80,
          6, 0, 1, 0, b'm', 0, 0, 0, // SET
          8, 0, 2, 0, 0, 0, 0, 8,   // SREG
          8, 0, 3, 0, 0, 0, 0, 0,   // DREG verdict register
    ]);
}

#[test]
fn nat_masquerade_reject_and_numgen_use_kernel_values() {
    let expr_body = |family: Family, expr: Expr| {
        let mut w = Writer::default();
        encode_expr(&mut w, family, &expr);
        w.buf
    };
    #[rustfmt::skip]
    assert_eq!(expr_body(Family::Ip, Expr::dnat_ipv4(Reg::R0, Some(Reg::R1))), [
        8, 0, 1, 0, 0, 0, 0, 1,   // TYPE dnat
        8, 0, 2, 0, 0, 0, 0, 2,   // FAMILY ipv4
        8, 0, 3, 0, 0, 0, 0, 8,   // REG_ADDR_MIN
        8, 0, 5, 0, 0, 0, 0, 9,   // REG_PROTO_MIN
    ]);
    assert_eq!(
        expr_body(Family::Ip, Expr::Masquerade(NatFlags::FULLY_RANDOM)),
        [8, 0, 1, 0, 0, 0, 0, 0x10]
    );
    assert_eq!(
        expr_body(Family::Ip, Expr::Reject(RejectKind::PortUnreachable)),
        [8, 0, 1, 0, 0, 0, 0, 0, 5, 0, 2, 0, 3, 0, 0, 0]
    );
    assert_eq!(
        expr_body(Family::Ip6, Expr::Reject(RejectKind::PortUnreachable)),
        [8, 0, 1, 0, 0, 0, 0, 0, 5, 0, 2, 0, 4, 0, 0, 0]
    );
    assert_eq!(
        expr_body(Family::Inet, Expr::Reject(RejectKind::PortUnreachable)),
        [8, 0, 1, 0, 0, 0, 0, 2, 5, 0, 2, 0, 1, 0, 0, 0]
    );
    assert_eq!(
        expr_body(Family::Ip, Expr::Reject(RejectKind::TcpReset)),
        [8, 0, 1, 0, 0, 0, 0, 1]
    );
    #[rustfmt::skip]
    assert_eq!(
        expr_body(Family::Ip, Expr::Numgen { dreg: Reg::R2, modulus: 3, kind: NumgenKind::Random, offset: 0 }),
        [
            8, 0, 1, 0, 0, 0, 0, 10,
            8, 0, 2, 0, 0, 0, 0, 3,
            8, 0, 3, 0, 0, 0, 0, 1,
            8, 0, 4, 0, 0, 0, 0, 0,
        ]
    );
    #[rustfmt::skip]
    assert_eq!(
        expr_body(Family::Ip, Expr::Dynset {
            set: "a".into(), op: DynsetOp::Update, sreg_key: Reg::R0,
            timeout: Some(Duration::from_secs(10)),
        }),
        [
            6, 0, 1, 0, b'a', 0, 0, 0,
            8, 0, 3, 0, 0, 0, 0, 1,
            8, 0, 4, 0, 0, 0, 0, 8,
            12, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0x27, 0x10,
        ]
    );
}

#[test]
fn large_element_lists_split_into_messages_under_the_attribute_limit_and_parse_back() {
    let key = vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService];
    let elements: Vec<Element> = (0..10_000u32)
        .map(|i| {
            let mut e = Element::verdict(
                vec![
                    Value::Ipv4(Ipv4Addr::from(0x0a60_0000 + i)),
                    Value::UDP,
                    Value::Port(53),
                ],
                Verdict::Jump(format!("svc-{i}")),
            );
            e.timeout = (i % 2 == 0).then(|| Duration::from_secs(5));
            e
        })
        .collect();
    let mut tx = Transaction::new();
    tx.add_set(
        &weft(),
        Set::verdict_map("m", key.clone()).with_timeout(Duration::from_secs(9)),
    )
    .add_elements(&weft(), "m", elements.clone());
    let batch = encode(&tx, 1).expect("encodes");
    assert!(
        batch.message_count() > 5,
        "{} messages",
        batch.message_count()
    );
    let mut parsed = Vec::new();
    for msg in Msgs::new(batch.bytes()).filter(|m| m.ty == 0x0a0c) {
        let list = msg
            .attrs()
            .find(|a| a.ty == sys::NFTA_SET_ELEM_LIST_ELEMENTS)
            .expect("list");
        assert!(list.len < 65_536);
        let (elems, bad) = list::parse_elements(msg.attrs(), &key, Some(&MapData::Verdict));
        assert_eq!(bad, 0);
        parsed.append(&mut list::assemble(elems, false));
    }
    assert_eq!(parsed, elements);
}

#[test]
fn kernel_error_offsets_map_back_to_the_failing_element() {
    let elements: Vec<Element> = (0..3000u16)
        .map(|p| Element::verdict(vec![Value::Port(p)], Verdict::Accept))
        .collect();
    let mut tx = Transaction::new();
    tx.add_table(&weft())
        .add_elements(&weft(), "ports", elements);
    let batch = encode(&tx, 50).expect("encodes");
    assert!(batch.message_count() >= 3, "elements split over messages");
    // Pretend the kernel pointed at element #1 of the second element message.
    let info = batch.messages[2];
    let msg = Msgs::new(&batch.bytes()[info.start..])
        .next()
        .expect("message");
    let list = msg
        .attrs()
        .find(|a| a.ty == sys::NFTA_SET_ELEM_LIST_ELEMENTS)
        .expect("list");
    let second = list.nested().nth(1).expect("second element");
    let offset = sys::NLMSG_HDRLEN + sys::NFGENMSG_LEN + list.offset + 4 + second.offset;
    let text = batch.describe(&tx, 50 + 3, Some(offset));
    let expected_port = info.first_element + 1;
    assert_eq!(
        text,
        format!("add element {{ {expected_port} : accept }} in set ip weft/ports")
    );
    assert_eq!(batch.describe(&tx, 50 + 1, None), "add table ip weft");
    assert_eq!(batch.describe(&tx, 50, None), "the batch as a whole");
}

#[test]
fn foreign_tables_and_mistyped_elements_are_refused_before_sending() {
    let mut tx = Transaction::new();
    tx.add_table(&TableRef::new(Family::Ip, "filter"));
    assert!(matches!(encode(&tx, 1), Err(Error::ForeignTable(t)) if t == "table ip filter"));

    let mut tx = Transaction::new();
    tx.add_set(
        &weft(),
        Set::verdict_map("m", vec![KeyType::Ipv4Addr, KeyType::InetService]),
    )
    .add_elements(
        &weft(),
        "m",
        vec![Element::verdict(
            vec![Value::Ipv4(Ipv4Addr::LOCALHOST), Value::TCP],
            Verdict::Accept,
        )],
    );
    let err = encode(&tx, 1).expect_err("key types differ");
    assert!(
        err.to_string()
            .starts_with("invalid element { 127.0.0.1 . tcp : accept } in set ip weft/m"),
        "{err}"
    );
}

#[test]
fn encoded_objects_parse_back_through_the_listing_decoders() {
    let mut tx = Transaction::new();
    tx.add_table(&weft())
        .add_chain(
            &weft(),
            Chain::base("out", ChainType::Filter, Hook::Output, 0),
        )
        .add_set(
            &weft(),
            Set::map(
                "eps",
                vec![KeyType::Mark, KeyType::Integer],
                vec![KeyType::Ipv4Addr, KeyType::InetService],
            )
            .with_timeout(Duration::from_secs(60)),
        )
        .add_rule(
            &weft(),
            Rule::new("out").push(Expr::Counter).comment("hello"),
        );
    let batch = encode(&tx, 1).expect("encodes");
    let msgs: Vec<_> = Msgs::new(batch.bytes()).collect();
    let table = list::parse_table(sys::NFPROTO_IPV4, msgs[1].attrs()).expect("table");
    assert_eq!(table.table, weft());
    let (table_name, chain) = list::parse_chain(msgs[2].attrs()).expect("chain");
    assert_eq!(table_name, "weft");
    assert_eq!(
        chain.base,
        Some(BaseChain {
            kind: ChainType::Filter,
            hook: Hook::Output,
            priority: 0,
            policy: Policy::Accept
        })
    );
    let (_, set) = list::parse_set(msgs[3].attrs()).expect("set");
    assert_eq!(set.key, Some(vec![KeyType::Mark, KeyType::Integer]));
    assert_eq!(
        set.data,
        Some(MapData::Value(vec![
            KeyType::Ipv4Addr,
            KeyType::InetService
        ]))
    );
    assert_eq!(set.timeout, Some(Duration::from_secs(60)));
    assert_eq!(set.key_len, 8);
    let rule = list::parse_rule(Family::Ip, msgs[4].attrs()).expect("rule");
    assert_eq!(rule.exprs, ["counter"]);
    assert_eq!(rule.comment.as_deref(), Some("hello"));
}

#[test]
fn interval_elements_become_start_and_flagged_exclusive_end_and_pair_back() {
    let key = vec![KeyType::Ipv4Addr];
    let ranges = vec![
        Element::prefix("10.0.0.0/24".parse().expect("net")),
        Element::prefix("10.0.1.0/24".parse().expect("net")),
        Element::range(
            Value::Ipv4(Ipv4Addr::new(192, 0, 2, 7)),
            Value::Ipv4(Ipv4Addr::new(192, 0, 2, 7)),
        ),
        Element::prefix("240.0.0.0/4".parse().expect("net")),
    ];
    let mut tx = Transaction::new();
    tx.add_set(&weft(), Set::new("allowed", key.clone()).with_intervals())
        .add_elements(&weft(), "allowed", ranges.clone());
    let batch = encode(&tx, 1).expect("encodes");
    let msgs: Vec<_> = Msgs::new(batch.bytes()).collect();
    let flags = Attrs::new(&msgs[1].payload[4..])
        .find(|a| a.ty == sys::NFTA_SET_FLAGS)
        .and_then(|a| a.be32());
    assert_eq!(flags, Some(sys::NFT_SET_INTERVAL));
    let (raw, bad) = list::parse_elements(msgs[2].attrs(), &key, None);
    assert_eq!(bad, 0);
    // 240.0.0.0/4 reaches the top of the address space: no end element.
    assert_eq!(raw.len(), 7);
    assert_eq!(
        raw[1],
        list::KernelElement {
            element: Element::key(vec![Value::Ipv4(Ipv4Addr::new(10, 0, 1, 0))]),
            interval_end: true
        }
    );
    assert_eq!(list::assemble(raw, true), ranges);

    let mut tx = Transaction::new();
    tx.add_set(&weft(), Set::new("allowed", key)).add_elements(
        &weft(),
        "allowed",
        vec![Element::prefix("10.0.0.0/8".parse().expect("net"))],
    );
    assert!(encode(&tx, 1).is_err(), "ranges need an interval set");
}

#[test]
fn every_modelled_expression_decodes_back_to_itself() {
    use crate::expr::{CtDirection, CtKey, LookupResult, MetaKey, NatFamily, NatKind, matches};
    let exprs: Vec<Expr> = [
        vec![
            Expr::ip_daddr(Reg::R0),
            Expr::ip6_saddr(Reg::R4),
            Expr::l4proto(Reg::R1),
            Expr::th_dport(Reg::R2),
            Expr::Meta {
                key: MetaKey::IifName,
                dreg: Reg::R3,
            },
            Expr::Ct {
                key: CtKey::ProtoDst,
                direction: Some(CtDirection::Original),
                dreg: Reg::R0,
            },
            Expr::CtSet {
                key: CtKey::Mark,
                sreg: Reg::R1,
            },
            Expr::in_set("s", Reg::R0),
            Expr::not_in_set("s", Reg::R0),
            Expr::map("m", Reg::R0, Reg::R1),
            Expr::Lookup {
                set: "v".into(),
                sreg: Reg::R0,
                result: LookupResult::Verdict,
            },
            Expr::Immediate {
                dreg: Reg::R2,
                data: vec![1, 2, 3, 4],
            },
            Expr::Numgen {
                dreg: Reg::R0,
                modulus: 7,
                kind: NumgenKind::Incremental,
                offset: 1,
            },
            Expr::Nat {
                kind: NatKind::Snat,
                family: NatFamily::Ipv4,
                addr: Some(Reg::R0),
                port: None,
                flags: NatFlags {
                    random: true,
                    fully_random: false,
                    persistent: true,
                },
            },
            Expr::Masquerade(NatFlags::default()),
            Expr::Reject(RejectKind::AdminProhibited),
            Expr::Counter,
            Expr::Dynset {
                set: "a".into(),
                op: DynsetOp::Add,
                sreg_key: Reg::R0,
                timeout: None,
            },
            Expr::FibDaddrType { dreg: Reg::R0 },
            Expr::FibSaddrType { dreg: Reg::R0 },
            Expr::goto("svc"),
            Expr::ret(),
        ],
        matches::ct_state(crate::expr::ct_state::NEW, Reg::R0),
        matches::set_mark_bits(0x4000, Reg::R0),
        matches::ip_saddr_in("10.244.0.0/16".parse().expect("net"), true, Reg::R0),
    ]
    .concat();
    let mut tx = Transaction::new();
    tx.add_rule(
        &weft(),
        Rule {
            chain: "c".into(),
            exprs: exprs.clone(),
            comment: None,
        },
    );
    let batch = encode(&tx, 1).expect("encodes");
    let msg = Msgs::new(batch.bytes()).nth(1).expect("rule message");
    let rule = list::parse_rule(Family::Ip, msg.attrs()).expect("rule");
    assert_eq!(rule.decoded, Some(exprs));
}

#[test]
fn legacy_register_numbers_in_kernel_dumps_name_the_right_32_bit_register() {
    // The kernel reports R0/R4/R8/R12 as NFT_REG_1..4.
    assert_eq!(Reg::from_wire(1), Some(Reg::R0));
    assert_eq!(Reg::from_wire(2), Some(Reg::R4));
    assert_eq!(Reg::from_wire(3), Some(Reg::R8));
    assert_eq!(Reg::from_wire(9), Some(Reg::R1));
    assert_eq!(Reg::from_wire(23), Reg::new(15));
    assert_eq!(Reg::from_wire(0), None);
    assert_eq!(Reg::from_wire(24), None);
}

#[test]
fn shared_elements_encode_like_copied_ones_split_across_messages_alike() {
    let set = Set::map(
        "endpoints",
        vec![KeyType::Ipv4Addr, KeyType::InetService],
        vec![KeyType::Ipv4Addr, KeyType::InetService],
    );
    // Enough elements for several messages.
    let elements: Vec<Element> = (0..5000u32)
        .map(|n| {
            Element::value(
                [
                    Value::Ipv4(Ipv4Addr::from(0x0a60_0000 + n)),
                    Value::Port(80),
                ],
                [
                    Value::Ipv4(Ipv4Addr::from(0x0af4_0000 + n)),
                    Value::Port(8080),
                ],
            )
        })
        .collect();
    let mut copied = Transaction::new();
    copied
        .add_table(&weft())
        .add_set(&weft(), set.clone())
        .add_elements(&weft(), "endpoints", elements.clone());
    let mut shared = Transaction::new();
    let list: std::sync::Arc<dyn ElementList> = std::sync::Arc::new(elements.clone());
    shared
        .add_table(&weft())
        .add_set(&weft(), set)
        .add_shared_elements(&weft(), "endpoints", list);
    let copied_batch = encode(&copied, 1).expect("encodes");
    let shared_batch = encode(&shared, 1).expect("encodes");
    assert!(copied_batch.message_count() > 3);
    assert_eq!(copied_batch.bytes(), shared_batch.bytes());
    // The op compares by content.
    let (
        Some(Op::AddElements { elements: a, .. }),
        Some(Op::AddSharedElements { elements: b, .. }),
    ) = (copied.ops().last(), shared.ops().last())
    else {
        panic!("element ops");
    };
    assert!(b.iter().eq(a.iter()));
    assert_eq!(b.clone(), *b);

    // A bad shared element is named like a copied one.
    let mut bad = elements;
    bad[4321].data = None;
    let mut tx = Transaction::new();
    let list: std::sync::Arc<dyn ElementList> = std::sync::Arc::new(bad);
    tx.add_table(&weft())
        .add_set(
            &weft(),
            Set::map(
                "endpoints",
                vec![KeyType::Ipv4Addr, KeyType::InetService],
                vec![KeyType::Ipv4Addr, KeyType::InetService],
            ),
        )
        .add_shared_elements(&weft(), "endpoints", list);
    let err = encode(&tx, 1).expect_err("a map element without data");
    assert!(err.to_string().contains("10.96.16.225 . 80"), "{err}");
}
