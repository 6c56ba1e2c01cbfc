//! Range defaults and validation, and the reference allocator's walk order.

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn range(subnet: &str, start: Option<&str>, end: Option<&str>) -> Range {
    Range::new(subnet.parse().unwrap(), start.map(ip), end.map(ip), None).unwrap()
}

fn walk(set: &RangeSet, last: Option<&str>) -> Vec<String> {
    set.candidates(last.map(ip))
        .map(|(addr, _)| addr.to_string())
        .collect()
}

#[test]
fn ipv4_defaults_are_gateway_dot_1_and_range_dot_1_to_dot_254() {
    let r = range("10.1.2.0/24", None, None);
    assert_eq!(
        (r.gateway, r.start, r.end),
        (ip("10.1.2.1"), ip("10.1.2.1"), ip("10.1.2.254"))
    );
    assert_eq!(r.capacity(), 253);
}

#[test]
fn ipv6_range_ends_at_the_last_address_of_the_subnet() {
    let r = range("fd00:10::/120", None, None);
    assert_eq!((r.start, r.end), (ip("fd00:10::1"), ip("fd00:10::ff")));
    assert_eq!(r.capacity(), 254);
}

#[test]
fn host_bits_in_the_subnet_are_cleared() {
    assert_eq!(
        range("10.1.2.77/24", None, None).subnet.to_string(),
        "10.1.2.0/24"
    );
}

#[test]
fn subnets_too_small_or_bounds_outside_are_refused() {
    let err = Range::new("10.0.0.0/31".parse().unwrap(), None, None, None).unwrap_err();
    assert!(matches!(err, RangeError::TooSmall(_)));
    let err = Range::new(
        "10.0.0.0/24".parse().unwrap(),
        Some(ip("10.0.1.5")),
        None,
        None,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        RangeError::Outside {
            what: "rangeStart",
            ..
        }
    ));
    let err = Range::new(
        "10.0.0.0/24".parse().unwrap(),
        None,
        None,
        Some(ip("fd00::1")),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        RangeError::Outside {
            what: "gateway",
            ..
        }
    ));
}

#[test]
fn fresh_walk_starts_at_range_start_skipping_the_gateway() {
    let set = RangeSet::new(vec![range("10.1.2.0/29", None, None)]).unwrap();
    assert_eq!(
        walk(&set, None),
        ["10.1.2.2", "10.1.2.3", "10.1.2.4", "10.1.2.5", "10.1.2.6"]
    );
}

#[test]
fn walk_resumes_after_the_last_reserved_address_and_wraps_around() {
    let set = RangeSet::new(vec![range("10.1.2.0/29", None, None)]).unwrap();
    assert_eq!(
        walk(&set, Some("10.1.2.4")),
        ["10.1.2.5", "10.1.2.6", "10.1.2.2", "10.1.2.3", "10.1.2.4"]
    );
}

#[test]
fn walk_ignores_a_last_reserved_address_outside_the_set() {
    let set = RangeSet::new(vec![range("10.1.2.0/29", None, None)]).unwrap();
    assert_eq!(walk(&set, Some("192.168.0.9")), walk(&set, None));
}

#[test]
fn walk_moves_through_the_ranges_of_a_set_in_order() {
    let set = RangeSet::new(vec![
        range("10.1.2.0/24", Some("10.1.2.10"), Some("10.1.2.11")),
        range("10.1.3.0/24", Some("10.1.3.20"), Some("10.1.3.21")),
    ])
    .unwrap();
    assert_eq!(
        walk(&set, Some("10.1.2.11")),
        ["10.1.3.20", "10.1.3.21", "10.1.2.10", "10.1.2.11"]
    );
}

#[test]
fn network_and_broadcast_inside_an_explicit_range_are_never_candidates() {
    let set = RangeSet::new(vec![
        Range::new(
            "10.1.2.0/30".parse().unwrap(),
            Some(ip("10.1.2.0")),
            Some(ip("10.1.2.3")),
            Some(ip("10.1.2.2")),
        )
        .unwrap(),
    ])
    .unwrap();
    assert_eq!(walk(&set, None), ["10.1.2.1"]);
    assert_eq!(set.0[0].capacity(), 1);
}

#[test]
fn overlapping_or_mixed_family_sets_are_refused() {
    let overlap = RangeSet::new(vec![
        range("10.1.0.0/16", None, None),
        range("10.1.2.0/24", None, None),
    ]);
    assert!(matches!(overlap, Err(RangeError::Overlap(..))));
    let mixed = RangeSet::new(vec![
        range("10.1.0.0/16", None, None),
        range("fd00::/64", None, None),
    ]);
    assert_eq!(mixed, Err(RangeError::MixedFamilies));
}
