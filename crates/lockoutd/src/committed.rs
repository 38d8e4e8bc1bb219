//! What the store holds for recently committed users, and every tenant's policy, in memory:
//! what `status` reads.
//!
//! sled 0.34 guards every tree with one process-wide reader-writer lock: each commit
//! (`apply_batch`) holds it for writing, each read for reading. Under live traffic the
//! projector commits about every millisecond, and a `status` that read sled then waited for
//! the commit. The committer records here what each commit wrote, after it landed and in
//! commit order, so a user's state here is the one sled holds. A user not here (not committed
//! by this process, or dropped with an old generation) is read from sled, which then holds the
//! latest. Only the committer writes here, so dropping a generation is always safe; the store
//! loses nothing this holds except in a failure that makes the projector fold the same events
//! into the same states again. Policies are loaded from the store at start and kept by the same
//! commits (only the projector writes them), so every tenant's policy is here.

use std::sync::{Arc, RwLock};

use lockout_core::UserState;
use lockout_proto::Policy;
use lockout_store::{Commit, Store};

use crate::cache::{key_bytes, HashMap, UserKey};

/// Recently committed user states within a memory budget, and every tenant's policy.
#[derive(Debug)]
pub struct Committed {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Two generations, as the projector's cache (crate::cache): when the current one outgrows
    /// half the budget it becomes the previous one and the old previous one is dropped.
    current: HashMap<UserKey, Arc<UserState>>,
    previous: HashMap<UserKey, Arc<UserState>>,
    current_bytes: usize,
    budget: usize,
    /// Every tenant with a stored policy.
    policies: HashMap<String, Policy>,
}

impl Committed {
    /// Loads the store's policies; users are recorded as commits land.
    pub fn load(store: &Store, budget_bytes: usize) -> Result<Committed, lockout_store::Error> {
        let policies = store.all_policies().collect::<Result<HashMap<_, _>, _>>()?;
        Ok(Committed { inner: RwLock::new(Inner { budget: budget_bytes, policies, ..Inner::default() }) })
    }

    /// Records what a commit that landed wrote. Call in commit order.
    pub fn record(&self, commit: &Commit) {
        let mut g = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in &commit.states {
            let key = (s.tenant.clone(), s.user.clone());
            let key_bytes = key_bytes(&key);
            g.current_bytes += key_bytes + s.state.approx_bytes();
            if let Some(old) = g.current.insert(key, s.state.clone()) {
                g.current_bytes = g.current_bytes.saturating_sub(key_bytes + old.approx_bytes());
            }
            if g.current_bytes > g.budget / 2 {
                g.previous = std::mem::take(&mut g.current);
                g.current_bytes = 0;
            }
        }
        for (tenant, policy) in &commit.policies {
            g.policies.insert(tenant.clone(), *policy);
        }
    }

    /// The committed state of `user`, when this process committed it recently; `None` means
    /// "read the store", not "no state".
    pub fn user(&self, tenant: &str, user: &str) -> Option<Arc<UserState>> {
        let key: UserKey = (tenant.into(), user.into());
        let g = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        g.current.get(&key).or_else(|| g.previous.get(&key)).cloned()
    }

    /// The tenant's policy (the default when it never set one).
    pub fn policy(&self, tenant: &str) -> Policy {
        let g = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        g.policies.get(tenant).copied().unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        let g = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        g.current.len() + g.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockout_store::StateChange;

    fn state(n: u64) -> UserState {
        UserState { last_failure_at: Some(n), ..UserState::default() }
    }

    fn commit(users: &[(&str, u64)], policies: &[(&str, u32)]) -> Commit {
        Commit {
            states: users
                .iter()
                .map(|(u, n)| StateChange {
                    tenant: "acme".into(),
                    user: (*u).into(),
                    before: None,
                    state: Arc::new(state(*n)),
                })
                .collect(),
            policies: policies
                .iter()
                .map(|(t, max)| ((*t).to_owned(), Policy { max_failures: *max, ..Policy::default() }))
                .collect(),
            ..Commit::default()
        }
    }

    fn empty_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        (dir, store)
    }

    #[test]
    fn the_latest_commit_wins_and_unknown_users_are_for_the_store() {
        let (_dir, store) = empty_store();
        let c = Committed::load(&store, 1 << 20).unwrap();
        c.record(&commit(&[("alice", 1), ("bob", 1)], &[]));
        c.record(&commit(&[("alice", 2)], &[]));
        assert_eq!(c.user("acme", "alice").as_deref(), Some(&state(2)));
        assert_eq!(c.user("acme", "bob").as_deref(), Some(&state(1)));
        assert_eq!(c.user("acme", "carol"), None);
        assert_eq!(c.user("globex", "alice"), None, "tenants are apart");
    }

    #[test]
    fn policies_come_from_the_store_then_from_commits() {
        let (_dir, store) = empty_store();
        let stored = Policy { max_failures: 9, ..Policy::default() };
        store.commit(&Commit { policies: vec![("acme".into(), stored)], checkpoint: 1, ..Commit::default() }).unwrap();
        let c = Committed::load(&store, 1 << 20).unwrap();
        assert_eq!(c.policy("acme"), stored);
        assert_eq!(c.policy("globex"), Policy::default());
        c.record(&commit(&[], &[("globex", 3)]));
        assert_eq!(c.policy("globex").max_failures, 3);
    }

    #[test]
    fn past_its_budget_the_oldest_generation_goes() {
        let (_dir, store) = empty_store();
        let one = key_bytes(&("acme".into(), "u000".into())) + state(0).approx_bytes();
        let c = Committed::load(&store, one * 10).unwrap();
        for i in 0..100u64 {
            c.record(&commit(&[(&format!("u{i:03}"), i)], &[]));
        }
        assert!(c.len() <= 10, "{} entries kept", c.len());
        assert_eq!(c.user("acme", "u099").as_deref(), Some(&state(99)), "the latest stays");
        assert_eq!(c.user("acme", "u000"), None, "the oldest went");
    }
}
