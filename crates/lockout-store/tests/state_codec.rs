//! The stored form of a user state: exact round trips, the old format still read, compact
//! for the common state, and clear errors (never a panic) for damaged bytes.

use lockout_core::state::{
    BlockedSource, CountedCredential, FamiliarIp, KnownClient, ScopeCounter, StreakSource, Unlisted,
};
use lockout_core::{LockState, UserState};
use lockout_proto::status::LockReason;
use lockout_store::state_codec::{decode, encode, COMPACT};
use lockout_store::{Commit, StateChange, Store};
use proptest::prelude::*;
use uuid::Uuid;

mod support;

/// IP-ish texts: canonical v4 and v6 (stored as bytes), and spellings that must come back
/// exactly as they were (stored as text).
fn ip() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
        any::<[u8; 16]>().prop_map(|o| std::net::Ipv6Addr::from(o).to_string()),
        any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_ipv6_mapped().to_string()),
        Just("010.0.0.1".to_owned()),
        Just("::FFFF:1.2.3.4".to_owned()),
        Just("2001:DB8::1".to_owned()),
        Just("2001:0db8:0000:0000:0000:0000:0000:0001".to_owned()),
        Just("1.2.3".to_owned()),
        Just(String::new()),
        ".{0,40}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn lock() -> impl Strategy<Value = LockState> {
    (
        any::<bool>(),
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        any::<u128>(),
        any::<u32>(),
        proptest::collection::vec((ip(), proptest::option::of(text()), any::<u32>()), 0..4),
        proptest::option::of(ip()),
    )
        .prop_map(|(admin, locked_at, locked_until, id, blocked, sources, tripped_by)| LockState {
            tripped_by: tripped_by.map(Into::into),
            reason: if admin { LockReason::Admin } else { LockReason::Failures },
            locked_at,
            locked_until,
            event_id: Uuid::from_u128(id),
            blocked,
            blocked_sources: sources
                .into_iter()
                .map(|(ip, client, attempts)| BlockedSource { ip: ip.into(), client: client.map(Into::into), attempts })
                .collect(),
        })
}

prop_compose! {
    fn state()(
        streak in proptest::collection::vec((ip(), proptest::option::of(text()), any::<u32>(), any::<u32>()), 0..5),
        unlisted in (any::<u32>(), any::<u32>()),
        credentials in proptest::collection::vec((text(), any::<bool>()), 0..3),
        last_failure_at in proptest::option::of(any::<u64>()),
        last_source_ip in proptest::option::of(ip()),
        lock in proptest::option::of(lock()),
        unlocked_at in proptest::option::of(any::<u64>()),
        unlocked_by in proptest::option::of(text()),
        mfa_reset_at in proptest::option::of(any::<u64>()),
        mfa_reset_by in proptest::option::of(text()),
        mfa_reenrol in any::<bool>(),
        lock_count in prop_oneof![Just(0u32), any::<u32>()],
        recent_locks in proptest::collection::vec(any::<u64>(), 0..4),
        callers in (proptest::option::of(text()), proptest::option::of(text())),
        v2 in (Just(()), proptest::collection::vec((ip(), any::<u64>()), 0..3), counter(), proptest::collection::vec((text(), any::<u64>(), counter()), 0..3)),
    ) -> UserState {
        UserState {
            streak: streak.into_iter().map(|(ip, client, password, mfa)| StreakSource { ip: ip.into(), client: client.map(Into::into), password, mfa }).collect(),
            unlisted: Unlisted { password: unlisted.0, mfa: unlisted.1 },
            credentials: credentials.into_iter().map(|(fingerprint, mfa)| CountedCredential { fingerprint: fingerprint.into(), mfa }).collect(),
            last_failure_at,
            last_source_ip: last_source_ip.map(Into::into),
            lock: lock.map(Box::new),
            unlocked_at,
            unlocked_by: unlocked_by.map(Into::into),
            mfa_reset_at,
            mfa_reset_by: mfa_reset_by.map(Into::into),
            mfa_reenrol,
            lock_count,
            recent_locks,
            unlocked_caller: callers.0.map(Into::into),
            mfa_reset_caller: callers.1.map(Into::into),
            familiar: v2.1.into_iter().map(|(ip, at)| FamiliarIp { ip: ip.into(), at }).collect(),
            unfamiliar: v2.2,
            clients: v2.3.into_iter().map(|(client, at, counter)| KnownClient { client: client.into(), at, counter }).collect(),
        }
    }
}

/// A scope counter (contract v2): often empty, as most are.
fn counter() -> impl Strategy<Value = ScopeCounter> {
    prop_oneof![
        Just(ScopeCounter::default()),
        (
            proptest::collection::vec((ip(), proptest::option::of(text()), any::<u32>(), any::<u32>()), 0..3),
            proptest::option::of(any::<u64>()),
            proptest::option::of(lock()),
        )
            .prop_map(|(streak, last_failure_at, lock)| ScopeCounter {
                streak: streak
                    .into_iter()
                    .map(|(ip, client, password, mfa)| StreakSource {
                        ip: ip.into(),
                        client: client.map(Into::into),
                        password,
                        mfa
                    })
                    .collect(),
                unlisted: Unlisted::default(),
                credentials: Vec::new(),
                last_failure_at,
                lock: lock.map(Box::new),
            }),
    ]
}

/// A state as format 1 (plain postcard of the state's v1 layout, before the callers) held it.
fn format_1(s: &UserState) -> Vec<u8> {
    lockout_proto::layout::with(lockout_proto::layout::Layout::V1, || postcard::to_allocvec(s).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_state_round_trips_exactly(s in state()) {
        let bytes = encode(&s);
        prop_assert_eq!(bytes[0], COMPACT);
        prop_assert_eq!(decode(&bytes).unwrap(), s);
    }

    #[test]
    fn states_stored_by_the_previous_format_still_read(s in state()) {
        let s = UserState {
            unlocked_caller: None,
            mfa_reset_caller: None,
            familiar: Vec::new(),
            unfamiliar: ScopeCounter::default(),
            clients: Vec::new(),
            ..s
        };
        // Format 1 predates the tripping IPs: they read as unknown.
        let s = lockout_store::state_codec::without_trips(s);
        prop_assert_eq!(decode(&format_1(&s)).unwrap(), s);
    }

    #[test]
    fn damaged_bytes_give_an_error_never_a_panic(s in state(), cut in any::<prop::sample::Index>(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
        let bytes = encode(&s);
        // Cut short: always an error (every part is needed).
        let cut = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..cut]).is_err());
        // Arbitrary bytes after the tag: whatever they are, no panic.
        let mut garbage = vec![COMPACT];
        garbage.extend_from_slice(&junk);
        let _ = decode(&garbage);
        let _ = decode(&junk);
    }
}

/// A lock's tripping IP is stored beside the locks, 5 bytes for IPv4, and left out of the
/// digest's encoding.
#[test]
fn tripping_ips_round_trip_and_cost_little() {
    let lock = |ip: Option<&str>| {
        Some(Box::new(LockState {
            reason: LockReason::Failures,
            locked_at: 1,
            locked_until: None,
            event_id: Uuid::from_u128(1),
            blocked: 0,
            blocked_sources: vec![],
            tripped_by: ip.map(Into::into),
        }))
    };
    let mut s = UserState { lock: lock(None), ..UserState::default() };
    s.unfamiliar.lock = lock(Some("203.0.113.9"));
    let bytes = encode(&s);
    assert_eq!(decode(&bytes).unwrap(), s);
    let without = encode(&lockout_store::state_codec::without_trips(s.clone()));
    // The flags stay 3 bytes (bit 16 is set already); the list: its length 2, None, then
    // Some, V4 and 4 bytes.
    assert_eq!(bytes.len(), without.len() + 1 + 1 + 1 + 1 + 4, "{bytes:?} vs {without:?}");
}

/// The common stored state, one failure from one source, costs half of plain postcard.
#[test]
fn a_one_failure_state_is_compact() {
    let s = UserState {
        streak: vec![StreakSource { ip: "198.51.100.7".into(), client: Some("IT Glue".into()), password: 1, mfa: 0 }],
        last_failure_at: Some(1_764_633_600_000),
        last_source_ip: Some("198.51.100.7".into()),
        ..UserState::default()
    };
    let bytes = encode(&s);
    // tag, flags (streak | last_failure_at | last_source_ip = 0b11001: one varint byte),
    // 1 source: V4 (tag 1) + 4 bytes, Some("IT Glue"), 1, 0; the time (6-byte varint);
    // V4 + 4 bytes.
    let time = postcard::to_allocvec(&1_764_633_600_000u64).unwrap();
    #[rustfmt::skip]
    let parts: [&[u8]; 6] = [
        &[COMPACT, 0b11001],
        &[1, 1, 198, 51, 100, 7, 1, 7], b"IT Glue", &[1, 0],
        &time,
        &[1, 198, 51, 100, 7],
    ];
    let want = parts.concat();
    assert_eq!(bytes, want);
    let legacy = format_1(&s);
    assert!(bytes.len() * 3 < legacy.len() * 2, "{} bytes vs {} in plain postcard", bytes.len(), legacy.len());
}

#[test]
fn unknown_flags_and_trailing_bytes_are_refused_with_a_reason() {
    let e = decode(&[COMPACT, 0x80, 0x80, 0x20]).unwrap_err(); // flag 1 << 19
    assert!(e.to_string().contains("unknown presence flags"), "{e}");
    let mut bytes = encode(&UserState { mfa_reenrol: true, ..UserState::default() });
    bytes.push(0);
    let e = decode(&bytes).unwrap_err();
    assert!(e.to_string().contains("left over"), "{e}");
}

/// A store written by the previous format: read as before, rewritten compactly when the
/// state changes, and its digest equals that of a store written in the new format.
#[test]
fn a_store_of_the_previous_format_reads_digests_alike_and_is_rewritten_on_change() {
    let states: Vec<(String, UserState)> = (0..20)
        .map(|i| {
            let s = UserState {
                streak: vec![StreakSource { ip: format!("192.0.2.{i}").into(), client: None, password: i + 1, mfa: 0 }],
                last_failure_at: Some(1_000 + u64::from(i)),
                last_source_ip: Some(format!("192.0.2.{i}").into()),
                ..UserState::default()
            };
            (format!("user{i:02}"), s)
        })
        .collect();

    // The previous format, written straight into sled as lockoutd did before.
    let old_dir = tempfile::tempdir().unwrap();
    {
        let db = support::raw_sled(old_dir.path(), lockout_store::SEGMENT_SIZE);
        for (user, s) in &states {
            let mut k = vec![b'u'];
            k.extend(lockout_store::user_key("acme", user));
            db.insert(k, format_1(s)).unwrap();
        }
        db.flush().unwrap();
    }
    let old = support::when_released(old_dir.path(), || Store::open(old_dir.path(), 16 << 20));
    let new_dir = tempfile::tempdir().unwrap();
    let new = Store::open(new_dir.path(), 16 << 20).unwrap();
    let changes = states
        .iter()
        .map(|(user, s)| StateChange {
            tenant: "acme".into(),
            user: user.clone().into(),
            before: None,
            before_scoped: Vec::new(),
            state: s.clone(),
        })
        .collect();
    new.commit(&Commit { states: changes, checkpoint: 20, ..Commit::default() }).unwrap();

    for (user, s) in &states {
        assert_eq!(old.user("acme", user).unwrap().as_ref(), Some(s));
    }
    assert_eq!(old.digest("acme").unwrap(), new.digest("acme").unwrap());
    assert_eq!(old.digest("acme").unwrap().0, 20);

    // A change to one old state writes it in the new format; the digests still agree.
    let (user, s) = &states[3];
    let changed = UserState { lock_count: 1, ..s.clone() };
    let commit = |store: &Store| {
        let change = StateChange {
            tenant: "acme".into(),
            user: user.clone().into(),
            before: None,
            before_scoped: Vec::new(),
            state: changed.clone(),
        };
        store.commit(&Commit { states: vec![change], checkpoint: 21, ..Commit::default() }).unwrap();
    };
    commit(&old);
    commit(&new);
    assert_eq!(old.user("acme", user).unwrap(), Some(changed));
    assert_eq!(old.digest("acme").unwrap(), new.digest("acme").unwrap());
    drop(old);
    let db = support::raw_sled(old_dir.path(), lockout_store::SEGMENT_SIZE);
    let stored = |u: &str| {
        let mut k = vec![b'u'];
        k.extend(lockout_store::user_key("acme", u));
        db.get(k).unwrap().unwrap()
    };
    assert_eq!(stored(user)[0], COMPACT, "a changed state is rewritten in the new format");
    assert_ne!(stored(&states[4].0)[0], COMPACT, "an unchanged one stays as it was");
}
