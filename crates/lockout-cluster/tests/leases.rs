//! Leases, fences and the coordinator against a real nats-server.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use lockout_cluster::lease::{LeaseError, Leases};
use lockout_cluster::{setup, ClusterConfig, Coordinator, Handle, Owned, SetupError};
use nats_harness::NatsServer;

const N: u32 = 64;

async fn buckets(server: &NatsServer, lease_seconds: u64) -> setup::Buckets {
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    setup::open(&js, "LOCKOUT", ClusterConfig { partitions: N, lease_seconds }, 1).await.unwrap()
}

async fn coordinator(b: &setup::Buckets, instance: &str) -> Handle {
    let leases = Leases::new(b.leases.clone(), Duration::from_secs(b.config.lease_seconds), instance);
    Coordinator::new(leases, N).auto_drain(true).spawn().await.unwrap()
}

/// Polls until `f` holds for the current ownership of every handle, or panics after `secs`.
async fn wait_for(handles: &[&Handle], secs: u64, what: &str, f: impl Fn(&[Owned]) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let now: Vec<Owned> = handles.iter().map(|h| h.owned().borrow().clone()).collect();
        if f(&now) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}: not within {secs} s; last seen {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn held(o: &Owned) -> BTreeSet<u32> {
    o.fences.keys().copied().collect()
}

fn split_evenly(now: &[Owned]) -> bool {
    let sets: Vec<BTreeSet<u32>> = now.iter().map(held).collect();
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<u32> = sets.iter().flatten().copied().collect();
    total == N as usize && union.len() == N as usize && now.iter().all(|o| o.members.len() == now.len())
}

#[tokio::test]
async fn two_processes_split_the_partitions_and_a_graceful_stop_hands_over_at_once() {
    let server = NatsServer::start();
    let b = buckets(&server, 6).await;
    let a = coordinator(&b, "a").await;
    wait_for(&[&a], 10, "a alone holds everything", |o| held(&o[0]).len() == N as usize).await;
    let c = coordinator(&b, "c").await;
    wait_for(&[&a, &c], 10, "a and c split the partitions", split_evenly).await;
    let (ha, hc) = (held(&a.owned().borrow()), held(&c.owned().borrow()));
    assert!(ha.is_disjoint(&hc));
    // Rendezvous hashing decides, not the order of arrival.
    let names = ["a", "c"];
    assert_eq!(ha, lockout_cluster::rendezvous::assigned(&names, "a", N).into_iter().collect());
    assert!(ha.len() >= 16 && hc.len() >= 16, "balanced: {} / {}", ha.len(), hc.len());

    a.stop().await.unwrap();
    // Released, not expired: far sooner than the 6 s lease.
    let took = wait_for(&[&c], 10, "c takes over a's partitions", |o| held(&o[0]).len() == N as usize).await;
    assert!(took < Duration::from_secs(4), "a graceful stop hands over at once; it took {took:?}");
    assert_eq!(c.owned().borrow().members, vec!["c".to_string()]);
    c.stop().await.unwrap();
}

#[tokio::test]
async fn a_crashed_processs_partitions_move_once_its_leases_expire() {
    let server = NatsServer::start();
    let b = buckets(&server, 2).await;
    let a = coordinator(&b, "a").await;
    let c = coordinator(&b, "c").await;
    wait_for(&[&a, &c], 10, "a and c split the partitions", split_evenly).await;
    let lost = held(&a.owned().borrow());
    a.abort();
    let took = wait_for(&[&c], 15, "c takes over after a's leases expire", |o| {
        held(&o[0]).len() == N as usize && o[0].members == vec!["c".to_string()]
    })
    .await;
    assert!(!lost.is_empty());
    // Not before the crashed process's leases could have expired: 2 s after their last
    // renewal, which is renewed every third of that (600 ms leaves room for a late tick).
    assert!(took >= Duration::from_millis(600), "took over after {took:?}, before the leases expired");
    c.stop().await.unwrap();
}

/// A lease that runs out is seen by every watcher at once (a delete marker), not on the next
/// renewal tick, including in a leases bucket an earlier version created without markers.
#[tokio::test]
async fn an_expired_lease_is_seen_by_watchers_when_it_runs_out() {
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    // The bucket as versions before markers created it.
    let old = async_nats::jetstream::kv::Config {
        bucket: "LOCKOUT_LEASES".into(),
        history: 1,
        max_age: Duration::from_secs(2),
        ..Default::default()
    };
    js.create_key_value(old).await.unwrap();
    let b = setup::open(&js, "LOCKOUT", ClusterConfig { partitions: N, lease_seconds: 2 }, 1).await.unwrap();
    let info = js.get_stream("KV_LOCKOUT_LEASES").await.unwrap().info().await.unwrap().config.clone();
    assert_eq!(info.subject_delete_marker_ttl, Some(Duration::from_secs(2)), "markers switched on in place");
    let mut watch = b.leases.watch("part.7").await.unwrap();
    b.leases.put("part.7", "x".into()).await.unwrap();
    let put = tokio::time::timeout(Duration::from_secs(1), watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(put.operation, async_nats::jetstream::kv::Operation::Put);
    let start = Instant::now();
    let gone = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("no event for the expiry");
    let gone = gone.unwrap().unwrap();
    assert_eq!(gone.operation, async_nats::jetstream::kv::Operation::Purge, "{gone:?}");
    assert!(start.elapsed() < Duration::from_millis(3_500), "seen {:?} after the put", start.elapsed());
    assert!(b.leases.get("part.7").await.unwrap().is_none());
}

/// A process paused past its lease: its fence is closed when it wakes, another process has
/// acquired the partition under a higher revision, and its renewal fails.
#[tokio::test]
async fn a_paused_holders_fence_closes_and_its_renewal_fails() {
    let server = NatsServer::start();
    let b = buckets(&server, 2).await;
    let lease = Duration::from_secs(2);
    let paused = Leases::new(b.leases.clone(), lease, "paused");
    let other = Leases::new(b.leases.clone(), lease, "other");
    let fence = paused.acquire(7).await.unwrap().expect("partition 7 is free");
    assert!(fence.is_open());
    assert_eq!(other.acquire(7).await.unwrap(), None, "a held lease cannot be taken");

    // The fault itself (the one deliberate wait): nothing renews for longer than the lease.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    assert!(!fence.is_open(), "the fence closes before the server may drop the key");
    let taken = loop {
        // The server drops the key once its max_age passes (its expiry timer may lag a little).
        if let Some(f) = other.acquire(7).await.unwrap() {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(taken.revision > fence.revision, "a later holder has a higher revision");
    assert_eq!(paused.renew(&fence).await.unwrap(), None, "the woken holder's renewal is refused");
    let (holder, rev) = paused.holder(7).await.unwrap().unwrap();
    assert_eq!((holder.instance.as_str(), rev), ("other", taken.revision));
    // Its release cannot remove the new holder's lease either.
    paused.release(fence).await.unwrap();
    assert_eq!(paused.holder(7).await.unwrap().unwrap().1, taken.revision);
}

#[tokio::test]
async fn a_process_with_another_partition_count_is_refused() {
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    setup::open(&js, "LOCKOUT", ClusterConfig { partitions: 64, lease_seconds: 10 }, 1).await.unwrap();
    let again = setup::open(&js, "LOCKOUT", ClusterConfig { partitions: 64, lease_seconds: 10 }, 1).await.unwrap();
    assert_eq!(again.config.partitions, 64);
    let err = match setup::open(&js, "LOCKOUT", ClusterConfig { partitions: 32, lease_seconds: 10 }, 1).await {
        Err(e @ SetupError::Mismatch { .. }) => e.to_string(),
        other => panic!("expected a mismatch, got {:?}", other.map(|b| b.config)),
    };
    assert!(err.contains("--partitions 64") && err.contains("--partitions 32"), "{err}");
}

#[tokio::test]
async fn two_processes_with_one_instance_name_are_told_apart() {
    let server = NatsServer::start();
    let b = buckets(&server, 10).await;
    let first = Leases::new(b.leases.clone(), Duration::from_secs(10), "same");
    let second = Leases::new(b.leases.clone(), Duration::from_secs(10), "same");
    let rev = first.join().await.unwrap();
    let rev = first.heartbeat(rev).await.unwrap();
    second.join().await.unwrap();
    match first.heartbeat(rev).await {
        Err(LeaseError::DuplicateInstance { instance, other_run }) => {
            assert_eq!(instance, "same");
            assert_eq!(other_run, second.me().run);
        }
        other => panic!("expected a duplicate instance, got {other:?}"),
    }
}
