//! Coalescing: bursts of changes wake a reconciler a handful of times.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::*;

#[test]
fn a_burst_of_changes_before_a_look_wakes_once() {
    let changes = Arc::new(Changes::default());
    let mut sub = Subscription::new(changes.clone());
    for _ in 0..10_000 {
        changes.bump();
    }
    assert_eq!(sub.wait(), 10_000);
    assert!(!sub.has_changed());
    assert_eq!(sub.wait_timeout(Duration::from_millis(10)), None);
}

#[test]
fn a_concurrent_burst_causes_a_handful_of_recomputes() {
    let changes = Arc::new(Changes::default());
    let mut sub = Subscription::new(changes.clone());
    let writer = {
        let changes = changes.clone();
        thread::spawn(move || {
            for _ in 0..10_000 {
                changes.bump();
            }
        })
    };
    let mut recomputes = 0;
    while let Some(generation) = sub.wait_timeout(Duration::from_millis(500)) {
        recomputes += 1;
        // A recompute takes a while; writes meanwhile coalesce.
        thread::sleep(Duration::from_millis(20));
        if generation == 10_000 {
            break;
        }
    }
    writer.join().expect("writer thread");
    assert!(!sub.has_changed(), "the last generation was seen");
    assert!(
        recomputes <= 20,
        "{recomputes} recomputes for 10000 changes"
    );
}

#[test]
fn a_waiting_reconciler_is_woken_by_a_change() {
    let changes = Arc::new(Changes::default());
    let mut sub = Subscription::new(changes.clone());
    let waiter = thread::spawn(move || sub.wait());
    thread::sleep(Duration::from_millis(20));
    changes.bump();
    assert_eq!(waiter.join().expect("waiter thread"), 1);
}

#[tokio::test]
async fn an_async_reconciler_is_woken_once_per_burst() {
    let changes = Arc::new(Changes::default());
    let mut sub = Subscription::new(changes.clone());
    let waiter = tokio::spawn(async move {
        let first = sub.changed().await;
        (first, sub)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..10_000 {
        changes.bump();
    }
    let (first, mut sub) = waiter.await.expect("waiter task");
    assert!(first >= 1);
    if first < 10_000 {
        assert_eq!(sub.changed().await, 10_000);
    }
    assert!(!sub.has_changed());
    // A look through the blocking API counts for the async one too.
    changes.bump();
    assert_eq!(sub.wait(), 10_001);
    let pending = tokio::time::timeout(Duration::from_millis(20), sub.changed()).await;
    assert!(pending.is_err(), "nothing new to see");
}
