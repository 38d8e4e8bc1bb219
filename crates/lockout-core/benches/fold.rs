//! Decode + fold throughput on one core.
//!
//! 100 000 `attempt` events for 10 000 users, pre-encoded in postcard and in JSON, are
//! decoded with `Event::decode` and folded with the default policy into a
//! `HashMap<String, UserState>`, as the projector does minus I/O. Throughput is in events.
//!
//! Run: `cargo bench -p lockout-core` (or `cargo bench -p lockout-core --bench fold -- --noplot`;
//! the library's own libtest bench harness refuses criterion flags such as `--noplot`).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lockout_core::{fold, UserState};
use lockout_proto::event::{Attempt, Event, EventKind, Factor, Outcome};
use lockout_proto::{Encoding, Millis, Policy};
use uuid::Uuid;

const EVENTS: usize = 100_000;
const USERS: u64 = 10_000;
const T0: Millis = 1_714_953_600_000;

const CLIENTS: [Option<&str>; 8] = [
    None,
    Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"),
    Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"),
    Some("IT Glue"),
    Some("VSA"),
    Some("ConnectBooster"),
    Some("MS Outlook Extension"),
    Some("QuickBooks Online"),
];

/// 100k attempts: mostly successes, a few users hammered by a stale integration (which
/// lock), the rest with occasional typos; about 20 events a second.
fn stream() -> Vec<Event> {
    // Seeded, so every run folds the same stream.
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let mut at = T0;
    (0..EVENTS)
        .map(|i| {
            at += rng.u64(..100);
            let user = rng.u64(..USERS);
            let stale = user % 50 == 0; // 2% of the users have an integration with an old password
            let failure = if stale { rng.u64(..10) < 9 } else { rng.u64(..10) < 1 };
            let client = if stale { Some("IT Glue") } else { CLIENTS[rng.u64(..CLIENTS.len() as u64) as usize] };
            let ip = if stale {
                format!("52.94.{}.{}", user % 256, 10)
            } else if rng.u64(..4) == 0 {
                format!("2001:db8:{:x}::{:x}", user % 4096, rng.u64(..65_536))
            } else {
                format!("{}.{}.{}.{}", 10 + user % 200, rng.u64(..256), rng.u64(..256), 1 + rng.u64(..254))
            };
            let factor = match rng.u64(..20) {
                0 => Factor::Mfa,
                1 => Factor::RecoveryCode,
                _ => Factor::Password,
            };
            Event::Attempt(Attempt {
                id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | i as u128),
                at,
                tenant: "acme-corp".into(),
                user: format!("user-{user:05}@acme-corp.example").into(),
                outcome: if failure { Outcome::Failure } else { Outcome::Success },
                factor,
                source_ip: ip.into(),
                client: client.map(Into::into),
                credential: failure.then(|| format!("{:016x}", if stale { user } else { rng.u64(..) }).into()),
                account: None,
                is_final: true,
            })
        })
        .collect()
}

/// Decodes every payload and folds it into a fresh store, as a projector would.
fn decode_and_fold(policy: &Policy, encoding: Encoding, payloads: &[Vec<u8>]) -> HashMap<String, UserState> {
    let mut store: HashMap<String, UserState> = HashMap::with_capacity(USERS as usize);
    for bytes in payloads {
        let event = Event::decode(EventKind::Attempt, encoding, bytes).expect("bench payloads decode");
        let Some(user) = event.user() else { continue };
        let now = event.at();
        let slot = store.entry(user.to_owned()).or_default();
        let state = std::mem::take(slot);
        *slot = fold(policy, state, &event, now).state;
    }
    store
}

fn bench(c: &mut Criterion, name: &str, encoding: Encoding) {
    let policy = Policy::default();
    let payloads: Vec<Vec<u8>> = stream().iter().map(|e| e.encode(encoding)).collect();
    // sanity: the stream decodes, folds and locks some users
    let store = decode_and_fold(&policy, encoding, &payloads);
    let locked = store.values().filter(|s| s.is_locked()).count();
    assert!(store.len() > 9_000 && locked > 0, "users {}, locked {locked}", store.len());

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(payloads.len() as u64));
    group.bench_function("decode+fold", |b| {
        b.iter(|| black_box(decode_and_fold(&policy, encoding, black_box(&payloads))))
    });
    group.finish();
}

fn fold_postcard(c: &mut Criterion) {
    bench(c, "fold_postcard", Encoding::Postcard);
}

fn fold_json(c: &mut Criterion) {
    bench(c, "fold_json", Encoding::Json);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = fold_postcard, fold_json
}
criterion_main!(benches);
