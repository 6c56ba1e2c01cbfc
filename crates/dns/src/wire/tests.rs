use super::*;

/// A query for `name` of `qtype`, with an OPT record of `payload` if given.
fn query(name: &str, qtype: u16, opt: Option<(u16, u8)>) -> Vec<u8> {
    let mut out = vec![
        0x12,
        0x34,
        0x01,
        0x10,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(opt.is_some()),
    ];
    push_name(&mut out, name);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let Some((payload, version)) = opt {
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&payload.to_be_bytes());
        out.extend_from_slice(&[0, version, 0, 0, 0, 0]);
    }
    out
}

#[test]
fn reads_a_plain_query_and_lowercases_its_key() {
    let bytes = query("My-Svc.Default.svc.cluster.local", rtype::A, None);
    let view = QueryView::parse(&bytes).expect("a plain query");
    assert_eq!(view.id, [0x12, 0x34]);
    assert!(view.rd);
    assert!(view.cd);
    assert_eq!(view.key.as_str(), "my-svc.default.svc.cluster.local");
    assert_eq!(view.qtype, rtype::A);
    assert_eq!(view.qclass, CLASS_IN);
    assert_eq!(view.edns_payload, None);
    assert_eq!(HEADER_LEN + view.question_len, bytes.len());
}

#[test]
fn reads_the_edns_payload_and_refuses_other_versions() {
    let view = QueryView::parse(&query("a.b", rtype::SRV, Some((4096, 0)))).expect("EDNS query");
    assert_eq!(view.edns_payload, Some(4096));
    assert!(QueryView::parse(&query("a.b", rtype::SRV, Some((4096, 1)))).is_none());
}

#[test]
fn leaves_unusual_shapes_to_the_general_path() {
    // A response.
    let mut response = query("a.b", rtype::A, None);
    response[2] |= 0x80;
    assert!(QueryView::parse(&response).is_none());
    // Trailing garbage.
    let mut trailing = query("a.b", rtype::A, None);
    trailing.push(0);
    assert!(QueryView::parse(&trailing).is_none());
    // Truncated question.
    let whole = query("a.b", rtype::A, None);
    for len in 0..whole.len() {
        assert!(QueryView::parse(&whole[..len]).is_none(), "{len} bytes");
    }
    // A compression pointer and a label needing escapes.
    let mut pointer = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1];
    assert!(QueryView::parse(&pointer).is_none());
    pointer.truncate(12);
    pointer.extend_from_slice(&[3, b'a', b'.', b'b', 0, 0, 1, 0, 1]);
    assert!(QueryView::parse(&pointer).is_none());
}

#[test]
fn stored_records_round_trip() {
    let mut data = Vec::new();
    push_stored(&mut data, rtype::A, &[10, 0, 0, 1]);
    push_stored(&mut data, rtype::TXT, b"\x051.1.0");
    let records: Vec<_> = stored_records(&data).collect();
    assert_eq!(
        records,
        [
            StoredRecord {
                rtype: rtype::A,
                rdata: &[10, 0, 0, 1]
            },
            StoredRecord {
                rtype: rtype::TXT,
                rdata: b"\x051.1.0"
            },
        ]
    );
}

#[test]
fn pointers_only_reach_the_first_16k() {
    assert_eq!(pointer(12), Some([0xc0, 0x0c]));
    assert_eq!(pointer(0x3fff), Some([0xff, 0xff]));
    assert_eq!(pointer(0x4000), None);
}

#[test]
fn name_len_stops_at_the_zero_or_the_pointer() {
    let mut name = Vec::new();
    push_name(&mut name, "a.bc");
    assert_eq!(name_len(&name), Some(6));
    assert_eq!(name_len(&[1, b'x', 0xc0, 0x0c, 9]), Some(4));
    assert_eq!(name_len(&[1, b'x', 0xc0]), None);
    assert_eq!(name_len(&[0x40, 0]), None);
    assert_eq!(name_len(&[3, b'a']), None);
}
