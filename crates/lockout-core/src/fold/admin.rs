//! The fold of the events the service writes: admin locks, unlocks, MFA and password resets,
//! `forget` and `expired`.

use super::*;

impl Folder<'_> {
    pub(super) fn lock(&mut self, l: &Lock) -> Effect {
        let replaced = self.state.lock.is_some();
        let seconds = l.seconds.map(u64::from);
        self.state.lock = Some(self.new_lock(LockReason::Admin, seconds, None));
        let sources = self.state.ranked_sources();
        self.notices.push(Notice::Locked(LockedNotice {
            id: notice_id(&l.tenant, &l.user, self.event_id, NoticeKind::Locked),
            event_id: self.event_id,
            tenant: l.tenant.clone(),
            user: l.user.clone(),
            at: self.now,
            reason: LockReason::Admin,
            locked_until: seconds.map(|s| until(self.now, s)),
            lock_seconds: seconds,
            failures: self.state.failures(),
            source_ip: None,
            client: None,
            sources,
            actor: Some(l.actor.clone()),
            message: message::admin_locked(seconds, l.reason.as_deref()),
            scope: Scope::Account,
            caller: l.caller.clone(),
        }));
        Effect::Locked { replaced }
    }

    /// The event that started a lock in force: the account's, or a scope's.
    fn lock_started_by(&self, event: Uuid) -> bool {
        let st = &*self.state;
        std::iter::once(&st.lock)
            .chain(std::iter::once(&st.unfamiliar.lock))
            .chain(st.clients.iter().map(|c| &c.counter.lock))
            .any(|l| l.as_ref().is_some_and(|l| l.event_id == event))
    }

    pub(super) fn unlock(&mut self, u: &Unlock) -> Effect {
        if let Some(want) = u.lock_event {
            if !self.lock_started_by(want) {
                return Effect::UnlockRefused;
            }
        }
        let account = self.state.lock.take();
        self.state.restart_streak();
        self.state.unlocked_at = Some(self.now);
        self.state.unlocked_by = Some(u.actor.clone());
        self.state.unlocked_caller = u.caller.clone();
        let mut was_locked = false;
        if let Some(lock) = account {
            self.unlocked_notice(
                &u.tenant,
                &u.user,
                Target::Account,
                &lock,
                How::Admin,
                Some(&u.actor),
                u.caller.as_ref(),
            );
            was_locked = true;
        }
        let scoped: Vec<Target> = self.scope_targets().collect();
        for t in scoped {
            was_locked |= self.end_scope(&u.tenant, &u.user, t, How::Admin, Some(&u.actor), u.caller.as_ref());
            self.counter(t).restart();
        }
        Effect::Unlocked { was_locked }
    }

    pub(super) fn password_reset(&mut self, r: &PasswordReset) -> Effect {
        let st = &*self.state;
        if !self.policy.unlock_on_password_reset {
            if st.any_lock() {
                return Effect::PasswordReset { ended: 0, kept: true };
            }
            self.clear_counters();
            return Effect::PasswordReset { ended: 0, kept: false };
        }
        let kept = st.lock.as_ref().is_some_and(|l| l.reason == LockReason::Admin || self.permanent(l));
        let mut ended = 0;
        if !kept {
            if let Some(lock) = self.state.lock.take() {
                self.state.unlocked_at = Some(self.now);
                self.state.unlocked_by = r.actor.clone();
                self.state.unlocked_caller = r.caller.clone();
                let how = How::PasswordReset;
                self.unlocked_notice(
                    &r.tenant,
                    &r.user,
                    Target::Account,
                    &lock,
                    how,
                    r.actor.as_ref(),
                    r.caller.as_ref(),
                );
                ended += 1;
            }
            self.state.restart_streak();
        }
        let scoped: Vec<Target> = self.scope_targets().collect();
        for t in scoped {
            let how = How::PasswordReset;
            ended += u32::from(self.end_scope(&r.tenant, &r.user, t, how, r.actor.as_ref(), r.caller.as_ref()));
            self.counter(t).restart();
        }
        Effect::PasswordReset { ended, kept }
    }

    /// Whether the account lock `l` is permanent: an automatic lock without end that
    /// `permanent_after` made (as opposed to one of `lock_seconds: 0`). Judged from the
    /// automatic locks the state remembers before it, by the policy in force now, so a state
    /// folded before contract v2 needs nothing new.
    fn permanent(&self, l: &LockState) -> bool {
        let p = self.policy;
        if l.reason != LockReason::Failures || l.locked_until.is_some() || p.permanent_after == 0 {
            return false;
        }
        let history_ms = u64::from(p.history_seconds) * 1000;
        let earlier =
            self.state.recent_locks.iter().filter(|&&t| t < l.locked_at && l.locked_at - t < history_ms).count();
        u32::try_from(earlier).unwrap_or(u32::MAX) >= p.permanent_after
    }

    /// Restarts every counter (no lock is in force).
    fn clear_counters(&mut self) {
        self.state.restart_streak();
        let scoped: Vec<Target> = self.scope_targets().collect();
        for t in scoped {
            self.counter(t).restart();
        }
    }

    pub(super) fn mfa_reset(&mut self, m: &MfaReset) -> Effect {
        let mut removed = self.counter(Target::Account).remove_mfa();
        let scoped: Vec<Target> = self.scope_targets().collect();
        for t in scoped {
            if self.lock_of(t).is_none() {
                removed = removed.saturating_add(self.counter(t).remove_mfa());
            }
        }
        let st = &mut self.state;
        st.mfa_reset_at = Some(self.now);
        st.mfa_reset_by = Some(m.actor.clone());
        st.mfa_reset_caller = m.caller.clone();
        st.mfa_reenrol = true;
        self.notices.push(Notice::MfaReset(MfaResetNotice {
            id: notice_id(&m.tenant, &m.user, self.event_id, NoticeKind::MfaReset),
            event_id: self.event_id,
            tenant: m.tenant.clone(),
            user: m.user.clone(),
            at: self.now,
            actor: m.actor.clone(),
            caller: m.caller.clone(),
        }));
        Effect::MfaReset { removed }
    }

    /// A `forget` event drops the state unless a lock is in force or the state recorded
    /// something after the event's `last_activity` (see [`UserState::last_activity`]).
    pub(super) fn forget(&mut self, x: &Forget) -> Effect {
        let forgot = if self.state.any_lock() {
            Forgot::Locked
        } else {
            match self.state.last_activity() {
                Some(t) if t > x.last_activity => Forgot::ActiveSince(t),
                _ if *self.state == UserState::default() => Forgot::Nothing,
                _ => {
                    *self.state = UserState::default();
                    Forgot::Dropped
                }
            }
        };
        Effect::Forget(forgot)
    }

    /// An `expired` event ends the timed lock it names (the account's or a scope's), even when
    /// folded a little (up to [`EXPIRED_EARLY_ALLOWANCE_MS`]) before `locked_until`; one stored
    /// earlier than that (lockoutd's clock running ahead of the server's) leaves the lock in
    /// force. Otherwise it does nothing. An `expired` event whose id is not
    /// [`expired_event_id`]'s (those written before it, with
    /// [`crate::ids::expired_event_id_v1`]) ends the lock it names whenever it is folded, as it
    /// always did: stored history folds the same.
    pub(super) fn expired(&mut self, x: &Expired) -> Effect {
        let targets: Vec<Target> = std::iter::once(Target::Account).chain(self.scope_targets()).collect();
        let Some(t) =
            targets.into_iter().find(|&t| self.lock_of(t).as_ref().is_some_and(|l| l.event_id == x.lock_event))
        else {
            return Effect::Expired { ended: None };
        };
        let Some(until) = self.lock_of(t).as_ref().and_then(|l| l.locked_until) else {
            return Effect::Expired { ended: None };
        };
        let held_to_until = || x.id == expired_event_id(&x.tenant, &x.user, x.lock_event);
        if self.now.saturating_add(EXPIRED_EARLY_ALLOWANCE_MS) < until && held_to_until() {
            return Effect::ExpiredEarly { until };
        }
        let ended = match t {
            Target::Account => self.end_by_expiry(&x.tenant, &x.user),
            t => self.end_scope(&x.tenant, &x.user, t, How::Expired, None, None).then_some(until),
        };
        Effect::Expired { ended }
    }
}
