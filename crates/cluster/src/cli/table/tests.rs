//! Cell formats and alignment of the tables.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;

fn created(secs_ago: i64) -> (ObjectMeta, jiff::Timestamp) {
    let now = jiff::Timestamp::from_second(1_800_000_000).expect("timestamp");
    let then = jiff::Timestamp::from_second(1_800_000_000 - secs_ago).expect("timestamp");
    (
        ObjectMeta {
            creation_timestamp: Some(Time(then)),
            ..ObjectMeta::default()
        },
        now,
    )
}

#[test]
fn ages_read_like_kubectls() {
    let cases = [
        (5, "5s"),
        (119, "119s"),
        (150, "2m30s"),
        (1800, "30m"),
        (4 * 3600 + 120, "4h2m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 3600, "3d1h"),
        (40 * 86400, "40d"),
    ];
    for (secs, want) in cases {
        let (meta, now) = created(secs);
        assert_eq!(age(&meta, now), want, "{secs}s");
    }
    assert_eq!(
        age(&ObjectMeta::default(), jiff::Timestamp::UNIX_EPOCH),
        "<unknown>"
    );
}

#[test]
fn columns_are_padded_to_the_widest_cell() {
    let rows = vec![
        vec!["a-long-name".to_owned(), "x".to_owned()],
        vec!["b".to_owned(), String::new()],
    ];
    assert_eq!(
        align(&["NAME", "V"], &rows),
        "NAME          V\na-long-name   x\nb\n"
    );
}
