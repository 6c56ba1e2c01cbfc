//! Encoding cost of a proxy-sized transaction: 30,000 Services with 5
//! endpoints each (one dispatch verdict-map element per Service, one
//! endpoint map element per endpoint, 180,000 elements in all), compiled to
//! one nfnetlink batch. Kernel time is measured by the privileged test
//! `thirty_thousand_services_with_five_endpoints_commit_in_one_transaction`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use weft_nft::{
    Chain, Element, Family, KeyType, Set, TableRef, Transaction, Value, Verdict, encode,
};

fn proxy_sized(services: u32, endpoints: u32) -> Transaction {
    let t = TableRef::new(Family::Ip, "weft");
    let mut tx = Transaction::new();
    tx.recreate_table(&t)
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
    tx.add_elements(
        &t,
        "service-ips",
        (0..services)
            .map(|i| {
                Element::verdict(
                    vec![
                        Value::Ipv4(Ipv4Addr::from(0x0a60_0000 + i)),
                        Value::TCP,
                        Value::Port(80),
                    ],
                    Verdict::Goto("endpoints".into()),
                )
            })
            .collect(),
    );
    tx.add_elements(
        &t,
        "service-endpoints",
        (0..services)
            .flat_map(|i| {
                (0..endpoints).map(move |e| {
                    Element::value(
                        vec![Value::Mark(i), Value::Integer(e)],
                        vec![
                            Value::Ipv4(Ipv4Addr::from(0x0af4_0000 + i * endpoints + e)),
                            Value::Port(8080),
                        ],
                    )
                })
            })
            .collect(),
    );
    tx
}

fn bench(c: &mut Criterion) {
    let tx = proxy_sized(30_000, 5);
    let batch = encode(&tx, 1).expect("encodes");
    eprintln!(
        "30k x 5: {} messages, {} bytes",
        batch.message_count(),
        batch.bytes().len()
    );
    let mut group = c.benchmark_group("encode");
    group.sample_size(20);
    group.bench_function("30k_services_5_endpoints", |b| {
        b.iter(|| encode(black_box(&tx), 1).expect("encodes"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
