//! The projector's cache of recent user states, in front of the store.
//!
//! Only the projector writes user states, so the state it folded last for a user is what the
//! store holds, or will hold once the commit in flight lands. Reading it from here instead of
//! sled is what lets the projector fold the next batch while the last one is being committed.
//!
//! Two generations approximate LRU at the cost of two hash lookups: when the current
//! generation outgrows half the budget it becomes the previous one and the old previous one is
//! dropped; a hit in the previous generation moves the entry back. Dropping a generation is
//! only safe once every commit that wrote its states has landed (else a miss would read an
//! older state from the store), so the caller rotates only when it knows that.

use lockout_core::state::heap_bytes;
use lockout_core::UserState;
use lockout_proto::CompactString;

/// (tenant, user): ids of up to 24 bytes are held inline, so most keys allocate nothing and
/// compare without following a pointer.
pub type UserKey = (CompactString, CompactString);

/// The projector's hash maps: foldhash, seeded per process (user ids come from outside, so a
/// fixed seed would invite collisions), several times cheaper than std's SipHash on these keys.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Recent user states within a memory budget (see the module docs).
#[derive(Debug)]
pub struct StateCache {
    // Boxed: a state is a few hundred bytes, and growing a map moves every entry. Each entry
    // keeps the bytes it was counted with, so taking it back does not walk the state again.
    current: HashMap<UserKey, Entry>,
    previous: HashMap<UserKey, Entry>,
    /// Approximate bytes held by `current`.
    current_bytes: usize,
    /// Budget of both generations together.
    budget: usize,
}

#[derive(Debug)]
struct Entry {
    state: Box<UserState>,
    bytes: usize,
}

/// Per-entry overhead of the map itself, on top of the key's and the state's bytes.
const ENTRY_OVERHEAD: usize = 48;

fn key_bytes(k: &UserKey) -> usize {
    ENTRY_OVERHEAD + std::mem::size_of::<UserKey>() + std::mem::size_of::<Entry>() + heap_bytes(&k.0) + heap_bytes(&k.1)
}

fn entry_bytes(k: &UserKey, s: &UserState) -> usize {
    key_bytes(k) + s.approx_bytes()
}

impl StateCache {
    pub fn new(budget_bytes: usize) -> StateCache {
        StateCache { current: HashMap::default(), previous: HashMap::default(), current_bytes: 0, budget: budget_bytes }
    }

    /// Removes and returns the cached state of `key`, if any.
    pub fn take(&mut self, key: &UserKey) -> Option<Box<UserState>> {
        if let Some(e) = self.current.remove(key) {
            self.current_bytes = self.current_bytes.saturating_sub(e.bytes);
            return Some(e.state);
        }
        self.previous.remove(key).map(|e| e.state)
    }

    /// Caches `state` as the latest of `key`.
    pub fn put(&mut self, key: UserKey, state: Box<UserState>) {
        let bytes = entry_bytes(&key, &state);
        self.current_bytes += bytes;
        if let Some(old) = self.current.insert(key, Entry { state, bytes }) {
            self.current_bytes = self.current_bytes.saturating_sub(old.bytes);
        }
    }

    /// Whether the current generation outgrew its half of the budget.
    pub fn wants_rotation(&self) -> bool {
        self.current_bytes > self.budget / 2
    }

    /// Drops the previous generation and makes the current one previous. Call only when every
    /// state folded so far is in the store.
    pub fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
        self.current_bytes = 0;
    }

    /// Forgets everything (the store is the truth again).
    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
        self.current_bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(u: &str) -> UserKey {
        ("acme".into(), u.into())
    }

    fn state(failures: u64) -> Box<UserState> {
        Box::new(UserState { last_failure_at: Some(failures), ..UserState::default() })
    }

    #[test]
    fn take_returns_the_latest_put_from_either_generation() {
        let mut c = StateCache::new(1 << 20);
        c.put(key("a"), state(1));
        c.put(key("a"), state(2));
        c.rotate();
        c.put(key("b"), state(3));
        assert_eq!(c.take(&key("a")), Some(state(2)));
        assert_eq!(c.take(&key("a")), None, "take removes");
        assert_eq!(c.take(&key("b")), Some(state(3)));
        assert!(c.is_empty());
    }

    #[test]
    fn rotation_is_wanted_past_half_the_budget_and_drops_the_oldest_generation() {
        let one = entry_bytes(&key("u0000"), &state(0));
        let mut c = StateCache::new(one * 10);
        for i in 0..5 {
            c.put(key(&format!("u{i:04}")), state(i));
        }
        assert!(!c.wants_rotation());
        c.put(key("u0005"), state(5));
        assert!(c.wants_rotation());
        c.rotate();
        c.put(key("new"), state(9));
        c.rotate();
        assert_eq!(c.len(), 1, "the first generation is gone");
        assert_eq!(c.take(&key("new")), Some(state(9)));
    }

    #[test]
    fn taking_back_every_entry_returns_the_account_to_zero() {
        let mut c = StateCache::new(1 << 20);
        let big = |i: u64| {
            let mut s = state(i);
            s.last_source_ip = Some("203.0.113.7".repeat(i as usize + 1).into());
            s
        };
        for i in 0..10 {
            c.put(key(&format!("u{i}")), big(i));
        }
        assert!(c.current_bytes > 10 * entry_bytes(&key("u0"), &state(0)));
        for i in 0..10 {
            // What an entry was counted with goes, even after its state changed in between.
            let mut s = c.take(&key(&format!("u{i}"))).unwrap();
            s.last_source_ip = None;
            c.put(key(&format!("v{i}")), s);
        }
        for i in 0..10 {
            assert!(c.take(&key(&format!("v{i}"))).is_some());
        }
        assert_eq!(c.current_bytes, 0);
    }

    #[test]
    fn replacing_an_entry_does_not_inflate_the_account() {
        let mut c = StateCache::new(1 << 20);
        for i in 0..1000 {
            c.put(key("same"), state(i));
        }
        assert!(c.current_bytes <= 2 * entry_bytes(&key("same"), &state(0)));
    }
}
