//! Scale-out groundwork against real nats-server: the partition function equals the server's
//! subject mapping, and the 3-node cluster of the deploy template keeps acknowledged events
//! through the loss and return of its stream leader.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use lockout_proto::ids::{Tenant, UserId};
use lockout_proto::partition;
use nats_harness::{Cluster, NatsServer};

/// A mirror of an events stream whose transform puts `{{partition(n,1,3)}}` into the subject
/// (as `<PREFIX>_PARTS` does) files every user where `lockout_proto::partition::of` says, and
/// keeps the origin's sequence numbers.
#[tokio::test]
async fn partition_function_equals_the_servers_partition_mapping() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "LOCKOUT_EVENTS".into(),
        subjects: vec!["lockout.events.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let n = 64;
    let transform = |src: &str, dest: &str| stream::SubjectTransform { source: src.into(), destination: dest.into() };
    js.create_stream(stream::Config {
        name: "LOCKOUT_PARTS".into(),
        mirror: Some(stream::Source {
            name: "LOCKOUT_EVENTS".into(),
            subject_transforms: vec![
                transform(
                    "lockout.events.*.*.*.*",
                    &format!("lockout.parts.{{{{partition({n},1,3)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{wildcard(3)}}}}.{{{{wildcard(4)}}}}"),
                ),
                transform("lockout.events.*.*.*", "lockout.parts.t.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}"),
            ],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();

    let tenants = ["acme", "globex", "t-1"];
    let mut expected = Vec::new();
    // Users of every shape the protocol allows: ASCII, e-mail, non-ASCII, long.
    for i in 0..300 {
        let tenant = Tenant::parse(tenants[i % tenants.len()]).unwrap();
        let user = match i % 4 {
            0 => format!("user{i}"),
            1 => format!("u{i}@example.com"),
            2 => format!("ünïcødé-{i}"),
            _ => "x".repeat(40 + i % 50),
        };
        let user = UserId::parse(&user).unwrap();
        let subject = format!("lockout.events.{}.u.{}.attempt", tenant.as_str(), user.token());
        let ack = js.publish(subject, "{}".into()).await.unwrap().await.unwrap();
        expected.push((ack.sequence, partition::of(&tenant, &user, n), tenant, user));
    }
    let tenant_seq = js.publish("lockout.events.acme.t.policy", "{}".into()).await.unwrap().await.unwrap().sequence;

    let mut parts = js.get_stream("LOCKOUT_PARTS").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while parts.info().await.unwrap().state.messages < expected.len() as u64 + 1 {
        assert!(Instant::now() < deadline, "the mirror did not catch up within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (seq, part, tenant, user) in &expected {
        let m = parts.get_raw_message(*seq).await.unwrap();
        let want = format!("lockout.parts.{part}.{}.u.{}.attempt", tenant.as_str(), user.token());
        assert_eq!(m.subject.as_str(), want, "user {user} of {tenant} at seq {seq}");
    }
    let m = parts.get_raw_message(tenant_seq).await.unwrap();
    assert_eq!(m.subject.as_str(), "lockout.parts.t.acme.t.policy");
}

/// The deploy template's 3-node cluster: a replicated stream keeps every acknowledged
/// message when its leader is killed (`kill -9`), serves writes meanwhile, and the node
/// comes back and catches up.
#[tokio::test]
async fn cluster_keeps_acknowledged_events_through_its_leaders_death() {
    let mut cluster = Cluster::start(3);
    let client =
        async_nats::ConnectOptions::new().retry_on_initial_connect().connect(cluster.urls().as_slice()).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "LOCKOUT_EVENTS".into(),
        subjects: vec!["lockout.events.>".into()],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..100 {
        js.publish("lockout.events.acme.u.dTE.attempt", format!("{i}").into()).await.unwrap().await.unwrap();
    }
    let leader = cluster.stream_leader("LOCKOUT_EVENTS").expect("the stream has a leader");
    cluster.node(leader).stop();

    // Writes go on once the two others elect a leader; a publish during the election may
    // time out, and is retried with the same message id (deduplicated if it had landed).
    for i in 100..200 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", format!("m{i}").as_str());
            match js.publish_with_headers("lockout.events.acme.u.dTE.attempt", h, format!("{i}").into()).await {
                Ok(ack) => match ack.await {
                    Ok(_) => break,
                    Err(e) => assert!(Instant::now() < deadline, "publish {i} not acknowledged within 30 s: {e}"),
                },
                Err(e) => assert!(Instant::now() < deadline, "publish {i} refused for 30 s: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let new_leader = cluster.stream_leader("LOCKOUT_EVENTS").expect("a new leader");
    assert_ne!(new_leader, leader, "the dead node cannot lead");

    cluster.node(leader).kill_and_restart();
    cluster.wait_healthy(Duration::from_secs(60));
    let mut s = js.get_stream("LOCKOUT_EVENTS").await.unwrap();
    assert_eq!(s.info().await.unwrap().state.messages, 200, "every acknowledged message, once");
    // The restarted node catches up: once it leads, it serves all 200.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = cluster.monitor(leader, "/jsz?streams=true").expect("the restarted node answers /jsz");
        let msgs = v["account_details"][0]["stream_detail"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "LOCKOUT_EVENTS"))
            .map(|s| s["state"]["messages"].as_u64().unwrap_or(0));
        if msgs == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted node did not catch up within 30 s ({msgs:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One lockoutd with `--replicas 3` on the 3-node cluster: the node that leads
/// `LOCKOUT_EVENTS` is killed (`kill -9`) and restarted, and lockoutd itself is killed and
/// restarted, at seeded points of a load. Every user's state equals the fold of all events
/// and every notice exists once.
#[tokio::test]
async fn one_lockoutd_on_3_nodes_loses_nothing_when_the_leader_node_and_lockoutd_die() {
    use crate::oracle::{assert_nothing_lost_nothing_twice, load, publish};
    use crate::support::Lockout;

    let seed = std::env::var("LOCKOUT_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x005e_edc1_u64);
    eprintln!("fault schedule seed {seed} (set LOCKOUT_FAULT_SEED to repeat it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let events = 6_000u64;
    let mut points: Vec<u64> = (0..3).map(|_| rng.u64(500..events - 500)).collect();
    points.sort_unstable();

    let mut l = Lockout::start_process_on_cluster().await;
    let load = load(events as usize, 200);
    let js = l.js.clone();
    let publisher = tokio::spawn(async move { publish(&js, &load).await });

    let wait_published = |l: &Lockout, seq: u64| {
        let js = l.js.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                if let Ok(mut s) = js.get_stream("LOCKOUT_EVENTS").await {
                    if s.info().await.is_ok_and(|i| i.state.last_sequence >= seq) {
                        return;
                    }
                }
                assert!(Instant::now() < deadline, "the load did not reach sequence {seq} within 120 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    wait_published(&l, points[0]).await;
    let leader = l.nats.cluster().stream_leader("LOCKOUT_EVENTS").expect("the events stream has a leader");
    eprintln!("killing node n{} (the stream leader) at sequence {}", leader + 1, points[0]);
    l.nats.cluster().node(leader).stop();

    wait_published(&l, points[1]).await;
    eprintln!("killing lockoutd at sequence {}", points[1]);
    l.kill_daemon();
    l.spawn_daemon().await;

    wait_published(&l, points[2]).await;
    eprintln!("restarting node n{} at sequence {}", leader + 1, points[2]);
    l.nats.cluster().node(leader).kill_and_restart();

    let last = publisher.await.unwrap();
    l.nats.cluster().wait_healthy(Duration::from_secs(60));
    l.wait_folded(last).await;
    assert_nothing_lost_nothing_twice(&mut l).await;
}
