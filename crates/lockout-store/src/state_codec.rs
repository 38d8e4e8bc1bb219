//! How a [`UserState`] is stored: compact, because a store holds one per user (millions).
//!
//! Format 2, what is written, is the tag byte [`COMPACT`], then:
//!
//! | part | encoding |
//! |---|---|
//! | presence flags | postcard varint `u32`, one bit per field below that differs from its default (written as a `u16` before contract v2's fields: the same bytes below 2¹⁶) |
//! | each present field, in `UserState` order | postcard, except that IP addresses are [`Ip`] |
//! | the locks' tripping IPs (flag 1 << 18, when any lock has one) | `Vec<Option<Ip>>`, one per lock slot (account, unfamiliar, each known client) |
//!
//! An IP address in its canonical text form (what Rust's `Ipv4Addr` / `Ipv6Addr` print) is 4
//! or 16 bytes; any other text is kept as it came, so decoding gives back the exact string.
//! Most stored states are a streak of a source or two: these two choices halve them (62.5 →
//! 33.2 bytes on average for the store-size workload: `lockout-bench disk`).
//!
//! Format 1 is plain postcard of `UserState`. It is still read — its first byte is the
//! streak's length, at most [`lockout_core::state::STREAK_SOURCES_MAX`], never [`COMPACT`] —
//! so a store written before keeps working and each state is rewritten compactly when it
//! next changes.

use compact_str::{CompactString, ToCompactString as _};
use std::net::{Ipv4Addr, Ipv6Addr};

use lockout_core::state::{
    CountedCredential, FamiliarIp, KnownClient, LockState, ScopeCounter, StreakSource, Unlisted,
};
use lockout_core::UserState;
use lockout_proto::layout::{self, Layout};
use lockout_proto::Millis;
use serde::{Deserialize, Serialize};

/// First byte of a format-2 state.
pub const COMPACT: u8 = 0xC2;

// Presence flags, one per field of `UserState`, in its order.
const STREAK: u32 = 1 << 0;
const UNLISTED: u32 = 1 << 1;
const CREDENTIALS: u32 = 1 << 2;
const LAST_FAILURE_AT: u32 = 1 << 3;
const LAST_SOURCE_IP: u32 = 1 << 4;
const LOCK: u32 = 1 << 5;
const UNLOCKED_AT: u32 = 1 << 6;
const UNLOCKED_BY: u32 = 1 << 7;
const MFA_RESET_AT: u32 = 1 << 8;
const MFA_RESET_BY: u32 = 1 << 9;
const MFA_REENROL: u32 = 1 << 10;
const LOCK_COUNT: u32 = 1 << 11;
const RECENT_LOCKS: u32 = 1 << 12;
const UNLOCKED_CALLER: u32 = 1 << 13;
const MFA_RESET_CALLER: u32 = 1 << 14;
const FAMILIAR: u32 = 1 << 15;
const UNFAMILIAR: u32 = 1 << 16;
const CLIENTS: u32 = 1 << 17;
/// Not a field: the tripping IP of each lock ([`LockState::tripped_by`]), in
/// [`UserState::lock_slots`] order, after every field.
const TRIPS: u32 = 1 << 18;
const KNOWN: u32 = (1 << 19) - 1;

/// An IP address as stored: 4 or 16 bytes when the text is an address in canonical form,
/// else the text itself.
#[derive(Serialize, Deserialize)]
enum Ip<'a> {
    Text(&'a str),
    V4([u8; 4]),
    V6([u8; 16]),
}

impl<'a> Ip<'a> {
    fn of(text: &'a str) -> Ip<'a> {
        // Only the canonical text round-trips. The IPv4 parser accepts nothing else (four
        // decimal octets, no leading zeros); IPv6 has many spellings ("::FFFF:1.2.3.4").
        if let Ok(a) = text.parse::<Ipv4Addr>() {
            return Ip::V4(a.octets());
        }
        if let Ok(a) = text.parse::<Ipv6Addr>() {
            use std::io::Write as _;
            let mut buf = [0u8; 64];
            let mut w = &mut buf[..];
            if write!(w, "{a}").is_ok() {
                let n = 64 - w.len();
                if &buf[..n] == text.as_bytes() {
                    return Ip::V6(a.octets());
                }
            }
        }
        Ip::Text(text)
    }

    fn into_text(self) -> CompactString {
        match self {
            Ip::Text(t) => t.into(),
            Ip::V4(o) => Ipv4Addr::from(o).to_compact_string(),
            Ip::V6(o) => Ipv6Addr::from(o).to_compact_string(),
        }
    }
}

#[derive(Serialize)]
struct SourceOut<'a> {
    ip: Ip<'a>,
    client: &'a Option<CompactString>,
    password: u32,
    mfa: u32,
}

#[derive(Deserialize)]
struct SourceIn<'a> {
    #[serde(borrow)]
    ip: Ip<'a>,
    client: Option<CompactString>,
    password: u32,
    mfa: u32,
}

/// Why a stored state did not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Postcard(#[from] postcard::Error),
    #[error("unknown presence flags {0:#x} (written by a newer lockoutd?)")]
    UnknownFlags(u32),
    #[error("{0} bytes left over after the state")]
    Trailing(usize),
}

/// The stored bytes of `s` (format 2).
pub fn encode(s: &UserState) -> Vec<u8> {
    let mut flags = 0u32;
    for (present, flag) in [
        (!s.streak.is_empty(), STREAK),
        (s.unlisted != Unlisted::default(), UNLISTED),
        (!s.credentials.is_empty(), CREDENTIALS),
        (s.last_failure_at.is_some(), LAST_FAILURE_AT),
        (s.last_source_ip.is_some(), LAST_SOURCE_IP),
        (s.lock.is_some(), LOCK),
        (s.unlocked_at.is_some(), UNLOCKED_AT),
        (s.unlocked_by.is_some(), UNLOCKED_BY),
        (s.mfa_reset_at.is_some(), MFA_RESET_AT),
        (s.mfa_reset_by.is_some(), MFA_RESET_BY),
        (s.mfa_reenrol, MFA_REENROL),
        (s.lock_count != 0, LOCK_COUNT),
        (!s.recent_locks.is_empty(), RECENT_LOCKS),
        (s.unlocked_caller.is_some(), UNLOCKED_CALLER),
        (s.mfa_reset_caller.is_some(), MFA_RESET_CALLER),
        (!s.familiar.is_empty(), FAMILIAR),
        (!s.unfamiliar.is_default(), UNFAMILIAR),
        (!s.clients.is_empty(), CLIENTS),
        (s.lock_slots().flatten().any(|l| l.tripped_by.is_some()), TRIPS),
    ] {
        if present {
            flags |= flag;
        }
    }
    let mut out = Vec::with_capacity(64);
    out.push(COMPACT);
    let mut out = put(&flags, out);
    if flags & STREAK != 0 {
        // As postcard writes a sequence: its length, then the items.
        out = put(&s.streak.len(), out);
        for x in &s.streak {
            out = put(&SourceOut { ip: Ip::of(&x.ip), client: &x.client, password: x.password, mfa: x.mfa }, out);
        }
    }
    if flags & UNLISTED != 0 {
        out = put(&s.unlisted, out);
    }
    if flags & CREDENTIALS != 0 {
        out = put(&s.credentials, out);
    }
    if let Some(t) = s.last_failure_at {
        out = put(&t, out);
    }
    if let Some(ip) = &s.last_source_ip {
        out = put(&Ip::of(ip), out);
    }
    if let Some(lock) = &s.lock {
        out = put(lock, out);
    }
    if let Some(t) = s.unlocked_at {
        out = put(&t, out);
    }
    if let Some(by) = &s.unlocked_by {
        out = put(by, out);
    }
    if let Some(t) = s.mfa_reset_at {
        out = put(&t, out);
    }
    if let Some(by) = &s.mfa_reset_by {
        out = put(by, out);
    }
    if flags & LOCK_COUNT != 0 {
        out = put(&s.lock_count, out);
    }
    if flags & RECENT_LOCKS != 0 {
        out = put(&s.recent_locks, out);
    }
    if let Some(caller) = &s.unlocked_caller {
        out = put(caller, out);
    }
    if let Some(caller) = &s.mfa_reset_caller {
        out = put(caller, out);
    }
    if flags & FAMILIAR != 0 {
        out = put(&s.familiar.len(), out);
        for f in &s.familiar {
            out = put(&(Ip::of(&f.ip), f.at), out);
        }
    }
    if flags & UNFAMILIAR != 0 {
        out = put(&s.unfamiliar, out);
    }
    if flags & CLIENTS != 0 {
        out = put(&s.clients, out);
    }
    if flags & TRIPS != 0 {
        let trips: Vec<Option<Ip<'_>>> =
            s.lock_slots().map(|l| l.as_ref().and_then(|l| l.tripped_by.as_deref()).map(Ip::of)).collect();
        out = put(&trips, out);
    }
    out
}

/// `s` without what the digest leaves out: the tripping IPs of locks, which states stored
/// before they were recorded lack, so that old and new stores of the same events agree.
pub fn without_trips(s: UserState) -> UserState {
    s.without_trips()
}

fn put<T: Serialize + ?Sized>(value: &T, out: Vec<u8>) -> Vec<u8> {
    postcard::to_extend(value, out).expect("states always encode")
}

/// A stored state, in either format.
pub fn decode(bytes: &[u8]) -> Result<UserState, DecodeError> {
    let Some((&COMPACT, mut rest)) = bytes.split_first() else {
        // Format 1 predates the callers: the state's v1 layout.
        return Ok(layout::with(Layout::V1, || postcard::from_bytes(bytes))?);
    };
    let flags: u32 = take(&mut rest)?;
    if flags & !KNOWN != 0 {
        return Err(DecodeError::UnknownFlags(flags));
    }
    let mut s = UserState::default();
    if flags & STREAK != 0 {
        let sources: Vec<SourceIn<'_>> = take(&mut rest)?;
        s.streak = sources
            .into_iter()
            .map(|x| StreakSource { ip: x.ip.into_text(), client: x.client, password: x.password, mfa: x.mfa })
            .collect();
    }
    if flags & UNLISTED != 0 {
        s.unlisted = take::<Unlisted>(&mut rest)?;
    }
    if flags & CREDENTIALS != 0 {
        s.credentials = take::<Vec<CountedCredential>>(&mut rest)?;
    }
    if flags & LAST_FAILURE_AT != 0 {
        s.last_failure_at = Some(take(&mut rest)?);
    }
    if flags & LAST_SOURCE_IP != 0 {
        s.last_source_ip = Some(take::<Ip<'_>>(&mut rest)?.into_text());
    }
    if flags & LOCK != 0 {
        s.lock = Some(Box::new(take::<LockState>(&mut rest)?));
    }
    if flags & UNLOCKED_AT != 0 {
        s.unlocked_at = Some(take(&mut rest)?);
    }
    if flags & UNLOCKED_BY != 0 {
        s.unlocked_by = Some(take(&mut rest)?);
    }
    if flags & MFA_RESET_AT != 0 {
        s.mfa_reset_at = Some(take(&mut rest)?);
    }
    if flags & MFA_RESET_BY != 0 {
        s.mfa_reset_by = Some(take(&mut rest)?);
    }
    s.mfa_reenrol = flags & MFA_REENROL != 0;
    if flags & LOCK_COUNT != 0 {
        s.lock_count = take(&mut rest)?;
    }
    if flags & RECENT_LOCKS != 0 {
        s.recent_locks = take(&mut rest)?;
    }
    if flags & UNLOCKED_CALLER != 0 {
        s.unlocked_caller = Some(take(&mut rest)?);
    }
    if flags & MFA_RESET_CALLER != 0 {
        s.mfa_reset_caller = Some(take(&mut rest)?);
    }
    if flags & FAMILIAR != 0 {
        let familiar: Vec<(Ip<'_>, Millis)> = take(&mut rest)?;
        s.familiar = familiar.into_iter().map(|(ip, at)| FamiliarIp { ip: ip.into_text(), at }).collect();
    }
    if flags & UNFAMILIAR != 0 {
        s.unfamiliar = take::<ScopeCounter>(&mut rest)?;
    }
    if flags & CLIENTS != 0 {
        s.clients = take::<Vec<KnownClient>>(&mut rest)?;
    }
    if flags & TRIPS != 0 {
        let trips: Vec<Option<Ip<'_>>> = take(&mut rest)?;
        for (slot, ip) in s.lock_slots_mut().zip(trips) {
            if let (Some(l), Some(ip)) = (slot, ip) {
                l.tripped_by = Some(ip.into_text());
            }
        }
    }
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(s)
}

fn take<'a, T: Deserialize<'a>>(rest: &mut &'a [u8]) -> Result<T, postcard::Error> {
    let (value, tail) = postcard::take_from_bytes(rest)?;
    *rest = tail;
    Ok(value)
}
