//! Per-IP counting, blocks and their notices (contract v2, "IP blocks"), rule by rule, and over
//! random streams (proptest): a block is decided exactly at `ip_max_failures` failures in the
//! window, applies until it ends, and each block has one `ip_blocked` and at most one
//! `ip_unblocked`, whichever event ends it.

use lockout_core::ids::{ip_block_event_id, scoped_notice_id, NoticeKind};
use lockout_core::ip::{count_failure, fold_ip_event, IpBlockState, IpCount, SCOPE_IP};
use lockout_core::EXPIRED_EARLY_ALLOWANCE_MS;
use lockout_proto::event::{Event, IpBlock, IpExpired, IpUnblock};
use lockout_proto::notice::{How, Notice};
use lockout_proto::{Millis, Policy};
use proptest::prelude::*;
use uuid::Uuid;

const TENANT: &str = "acme";
const IP: &str = "203.0.113.66";
const T0: Millis = 1_722_110_078_539;

fn policy(max: u32, window: u32, block: u32) -> Policy {
    Policy { ip_max_failures: max, ip_window_seconds: window, ip_block_seconds: block, ..Policy::default() }
}

fn cause(n: u64) -> Uuid {
    Uuid::from_u64_pair(7, n)
}

/// One IP's counting and applying, as the projector drives them.
#[derive(Default)]
struct Ip {
    count: IpCount,
    block: Option<IpBlockState>,
    notices: Vec<Notice>,
    n: u64,
}

impl Ip {
    /// A failure of `user` at `at`; the `ip_block` it decides, if any.
    fn fail(&mut self, p: &Policy, user: &str, at: Millis) -> Option<IpBlock> {
        self.n += 1;
        count_failure(p, &mut self.count, self.block.as_ref(), TENANT, IP, user, cause(self.n), at)
    }

    fn fold(&mut self, e: Event, at: Millis) -> Vec<Notice> {
        let n = fold_ip_event(&mut self.block, &mut self.count, &e, at);
        self.notices.extend(n.clone());
        n
    }

    fn unblock(&mut self, at: Millis) -> Vec<Notice> {
        let e = IpUnblock {
            id: Uuid::from_u64_pair(9, at),
            at,
            tenant: TENANT.into(),
            ip: IP.into(),
            actor: "sec".into(),
            caller: None,
            reason: None,
        };
        self.fold(Event::IpUnblock(e), at)
    }

    fn expire(&mut self, block_event: Uuid, at: Millis) -> Vec<Notice> {
        let e = IpExpired { id: Uuid::from_u64_pair(8, at), at, tenant: TENANT.into(), ip: IP.into(), block_event };
        self.fold(Event::IpExpired(e), at)
    }
}

#[test]
fn off_counts_nothing() {
    let mut ip = Ip::default();
    for i in 0..100 {
        assert_eq!(ip.fail(&policy(0, 3600, 3600), &format!("u{i}"), T0 + i), None);
    }
    assert!(ip.count.is_empty(), "no state at all while off");
}

#[test]
fn the_failure_reaching_ip_max_failures_decides_the_block() {
    let p = policy(5, 60, 600);
    let mut ip = Ip::default();
    for (i, user) in ["a", "b", "a", "c"].iter().enumerate() {
        assert_eq!(ip.fail(&p, user, T0 + i as u64 * 1000), None);
    }
    let block = ip.fail(&p, "d", T0 + 4000).expect("the fifth failure blocks");
    assert_eq!(block.id, ip_block_event_id(TENANT, IP, cause(5)), "derived from the tripping failure");
    assert_eq!((block.failures, block.users), (5, 4), "failures, not users; users distinct");
    assert_eq!(block.sample_users, vec!["a", "b", "c", "d"]);
    assert_eq!((block.at, block.blocked_until), (T0 + 4000, Some(T0 + 4000 + 600_000)));
    assert_eq!(ip.count.pending.as_deref(), Some(&block), "held until its event is folded");
    assert_eq!(ip.fail(&p, "e", T0 + 5000), None, "nothing counted while the decision is pending");
    assert_eq!(ip.count.window(&p, T0 + 5000, None), (5, 4));
}

#[test]
fn sample_users_stop_at_ten() {
    let p = policy(30, 60, 600);
    let mut ip = Ip::default();
    let mut block = None;
    for i in 0..30 {
        block = block.or(ip.fail(&p, &format!("u{i:02}"), T0 + i));
    }
    let block = block.unwrap();
    assert_eq!(block.users, 30);
    assert_eq!(block.sample_users, (0..10).map(|i| format!("u{i:02}")).collect::<Vec<_>>());
}

#[test]
fn the_window_slides_by_stored_time() {
    let p = policy(3, 10, 600);
    let mut ip = Ip::default();
    assert_eq!(ip.fail(&p, "a", T0), None);
    assert_eq!(ip.fail(&p, "b", T0 + 5_000), None);
    // 10 s after the first: it left the window (which is (at − 10 s, at]).
    assert_eq!(ip.fail(&p, "c", T0 + 10_000), None);
    assert_eq!(ip.count.window(&p, T0 + 10_000, None), (2, 2));
    assert!(ip.count.sample_users.iter().all(|u| u != "a"), "a sample user leaves with its failures");
    assert!(ip.fail(&p, "d", T0 + 11_000).is_some());
}

#[test]
fn a_block_is_folded_once_and_stops_counting_until_it_ends() {
    let p = policy(2, 60, 10);
    let mut ip = Ip::default();
    ip.fail(&p, "a", T0);
    let block = ip.fail(&p, "b", T0 + 1).unwrap();
    let at = T0 + 50;
    let n = ip.fold(Event::IpBlock(block.clone()), at);
    let [Notice::IpBlocked(b)] = n.as_slice() else { panic!("{n:?}") };
    assert_eq!(b.id, scoped_notice_id(TENANT, IP, block.id, NoticeKind::IpBlocked, SCOPE_IP, None));
    assert_eq!((b.event_id, b.failures, b.users, b.blocked_until), (block.id, 2, 2, block.blocked_until));
    assert!(b.message.contains("blocked for 10 seconds: 2 failed sign-ins against 2 accounts"), "{}", b.message);
    assert!(ip.count.pending.is_none());
    assert_eq!(ip.fold(Event::IpBlock(block.clone()), at + 10), vec![], "the same decision twice: one block");
    for i in 0..10 {
        assert_eq!(ip.fail(&p, "c", at + 100 + i), None, "not counted while blocked");
    }
    assert_eq!(ip.count.window(&p, at + 200, ip.block.as_ref()), (2, 2), "the block's own failures stay listed");
    // It ran out: counting restarts at 0 even before its `ip_expired` is folded.
    let end = block.blocked_until.unwrap();
    assert_eq!(ip.count.window(&p, end, ip.block.as_ref()), (0, 0));
    assert_eq!(ip.fail(&p, "d", end), None);
    assert_eq!(ip.count.window(&p, end, ip.block.as_ref()), (1, 1));
}

#[test]
fn expiry_ends_a_block_once_with_an_id_from_the_block() {
    let p = policy(1, 60, 10);
    let mut ip = Ip::default();
    let block = ip.fail(&p, "a", T0).unwrap();
    ip.fold(Event::IpBlock(block.clone()), T0 + 5);
    let until = block.blocked_until.unwrap();
    assert_eq!(ip.expire(block.id, until - EXPIRED_EARLY_ALLOWANCE_MS - 1), vec![], "too early: ignored");
    let n = ip.expire(block.id, until + 200);
    let [Notice::IpUnblocked(u)] = n.as_slice() else { panic!("{n:?}") };
    assert_eq!((u.how, u.event_id, u.actor.as_deref()), (How::Expired, block.id, None));
    assert_eq!(u.id, scoped_notice_id(TENANT, IP, block.id, NoticeKind::IpExpired, SCOPE_IP, None));
    assert!(ip.block.is_none() && ip.count.is_empty());
    assert_eq!(ip.expire(block.id, until + 300), vec![], "a second copy ends nothing");
    assert_eq!(ip.unblock(until + 400), vec![], "nor does an unblock");
}

#[test]
fn an_unblock_after_the_end_reports_the_expiry_with_the_expirys_id() {
    let p = policy(1, 60, 10);
    let mut ip = Ip::default();
    let block = ip.fail(&p, "a", T0).unwrap();
    ip.fold(Event::IpBlock(block.clone()), T0 + 5);
    let until = block.blocked_until.unwrap();
    let n = ip.unblock(until + 1);
    let [Notice::IpUnblocked(u)] = n.as_slice() else { panic!("{n:?}") };
    assert_eq!(u.how, How::Expired, "it had ended by time");
    assert_eq!(u.id, scoped_notice_id(TENANT, IP, block.id, NoticeKind::IpExpired, SCOPE_IP, None));
    assert_eq!(ip.expire(block.id, until + 2), vec![], "the expiry event then ends nothing");
}

#[test]
fn an_admin_unblock_ends_the_block_and_restarts_the_count() {
    let p = policy(2, 60, 0);
    let mut ip = Ip::default();
    ip.fail(&p, "a", T0);
    let block = ip.fail(&p, "b", T0 + 1).unwrap();
    assert_eq!(block.blocked_until, None, "ip_block_seconds 0: until an admin unblocks");
    ip.fold(Event::IpBlock(block.clone()), T0 + 2);
    assert!(ip.block.as_ref().unwrap().in_force(T0 + 365 * 86_400_000));
    assert_eq!(ip.expire(block.id, T0 + 86_400_000), vec![], "an untimed block does not expire");
    let n = ip.unblock(T0 + 3);
    let [Notice::IpUnblocked(u)] = n.as_slice() else { panic!("{n:?}") };
    assert_eq!((u.how, u.actor.as_deref(), u.event_id), (How::Admin, Some("sec"), Uuid::from_u64_pair(9, T0 + 3)));
    assert!(ip.block.is_none() && ip.count.failures.is_empty());
    assert_eq!(ip.fail(&p, "c", T0 + 4), None, "counting from 0 again");
    assert!(ip.fail(&p, "d", T0 + 5).is_some());
}

/// Failures counted after a block ran out survive the end's event (counting restarted at
/// `blocked_until`, not at the `ip_expired` fold).
#[test]
fn failures_after_a_blocks_end_survive_its_expiry_event() {
    let p = policy(3, 3600, 10);
    let mut ip = Ip::default();
    for (i, u) in ["a", "b"].iter().enumerate() {
        ip.fail(&p, u, T0 + i as u64);
    }
    let block = ip.fail(&p, "c", T0 + 2).unwrap();
    ip.fold(Event::IpBlock(block.clone()), T0 + 3);
    let until = block.blocked_until.unwrap();
    assert_eq!(ip.fail(&p, "d", until + 5), None);
    assert_eq!(ip.count.window(&p, until + 6, ip.block.as_ref()), (1, 1));
    let n = ip.expire(block.id, until + 10);
    assert!(matches!(n.as_slice(), [Notice::IpUnblocked(_)]), "{n:?}");
    assert_eq!(ip.count.window(&p, until + 11, None), (1, 1), "the failure after the end still counts");
    assert_eq!(ip.count.failures.len(), 1, "the block's own failures are gone");
}

/// A copy of a decision stored after its block would have ended does nothing, and a decision
/// of another id does not clear the one pending.
#[test]
fn late_or_foreign_block_events_change_nothing_pending() {
    let p = policy(1, 60, 10);
    let mut ip = Ip::default();
    let first = ip.fail(&p, "a", T0).unwrap();
    let late_at = first.blocked_until.unwrap() + 1;
    assert_eq!(ip.fold(Event::IpBlock(first.clone()), late_at), vec![], "over before it was stored");
    assert!(ip.block.is_none() && ip.count.pending.is_none(), "its own decision is no longer pending");
    let second = ip.fail(&p, "b", late_at + 1).unwrap();
    let foreign = IpBlock { id: Uuid::from_u128(42), blocked_until: Some(late_at + 60_000), ..first };
    ip.fold(Event::IpBlock(foreign), late_at + 2);
    assert_eq!(ip.count.pending.as_deref(), Some(&second), "another decision stays pending");
}

/// The sweep keeps a count for 7 days after its last failure, whatever the window.
#[test]
fn a_count_is_stale_only_past_the_window_and_the_horizon() {
    let p = policy(10, 60, 10);
    let mut ip = Ip::default();
    ip.fail(&p, "a", T0);
    assert!(!ip.count.is_stale(&p, T0 + 61_000), "out of the window, inside the horizon");
    assert!(ip.count.is_stale(&p, T0 + lockout_core::ip::SWEEP_HORIZON_MS), "past both");
    let long = policy(10, 30 * 86_400, 10);
    assert!(!ip.count.is_stale(&long, T0 + lockout_core::ip::SWEEP_HORIZON_MS + 1), "inside a 30-day window");
}

#[test]
fn an_unblock_of_an_ip_not_blocked_restarts_its_count() {
    let p = policy(3, 60, 10);
    let mut ip = Ip::default();
    ip.fail(&p, "a", T0);
    ip.fail(&p, "b", T0 + 1);
    assert_eq!(ip.unblock(T0 + 2), vec![]);
    assert_eq!(ip.count.window(&p, T0 + 2, None), (0, 0));
}

/// A step of a random stream for one IP.
#[derive(Debug, Clone)]
enum Step {
    Fail(u8),
    Unblock,
    /// The expiry timer's turn: appends `ip_expired` for the block if it is due.
    Timer,
    Wait(u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..8).prop_map(Step::Fail),
        1 => Just(Step::Unblock),
        2 => Just(Step::Timer),
        2 => (0u32..20_000).prop_map(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Over any stream where lockoutd appends each decided block right away: the block is
    /// decided exactly when the window holds `ip_max_failures` counted failures, the count never
    /// holds more, and each block has one `ip_blocked` and at most one `ip_unblocked`.
    #[test]
    fn every_block_is_decided_at_the_threshold_and_noticed_once(
        max in 1u32..6,
        window in 1u32..30,
        seconds in 0u32..20,
        steps in prop::collection::vec(step(), 1..80),
    ) {
        let p = policy(max, window, seconds);
        let mut ip = Ip::default();
        let mut now = T0;
        let mut decided = Vec::new();
        for s in steps {
            now += 1;
            match s {
                Step::Fail(u) => {
                    let blocked = ip.block.as_ref().is_some_and(|b| b.in_force(now));
                    let before = ip.count.window(&p, now, ip.block.as_ref()).0;
                    let d = ip.fail(&p, &format!("u{u}"), now);
                    prop_assert!(ip.count.failures.len() <= max as usize);
                    if let Some(d) = d {
                        prop_assert!(!blocked);
                        prop_assert_eq!(d.failures, max);
                        prop_assert_eq!(before + 1, max);
                        decided.push(d.id);
                        now += 1;
                        ip.fold(Event::IpBlock(d), now);
                    }
                }
                Step::Unblock => { ip.unblock(now); }
                Step::Timer => {
                    if let Some(b) = ip.block.clone().filter(|b| b.blocked_until.is_some_and(|u| u <= now)) {
                        ip.expire(b.block_event, now);
                    }
                }
                Step::Wait(ms) => now += u64::from(ms),
            }
        }
        let blocked: Vec<Uuid> = ip.notices.iter().filter_map(|n| match n {
            Notice::IpBlocked(b) => Some(b.event_id),
            _ => None,
        }).collect();
        prop_assert_eq!(&blocked, &decided, "one ip_blocked per decision");
        let ids: std::collections::HashSet<Uuid> = ip.notices.iter().map(Notice::id).collect();
        prop_assert_eq!(ids.len(), ip.notices.len(), "no notice id twice");
        let unblocked = ip.notices.iter().filter(|n| matches!(n, Notice::IpUnblocked(_))).count();
        prop_assert!(unblocked <= blocked.len() && unblocked + 1 >= blocked.len(), "{unblocked} ends of {} blocks", blocked.len());
    }
}

/// `explain` says which counted failures came from an IP blocked for the tenant at the time:
/// they count for the user, not towards the IP's block.
#[test]
fn explain_names_failures_from_blocked_ips() {
    use lockout_core::explain::Explainer;
    use lockout_proto::event::{Attempt, Outcome};
    let fail = |id: u64, ip: &str| {
        Event::Attempt(Attempt {
            id: Uuid::from_u64_pair(1, id),
            at: T0,
            tenant: TENANT.into(),
            user: "alice".into(),
            outcome: Outcome::Failure,
            factor: Default::default(),
            source_ip: ip.into(),
            client: None,
            credential: None,
            account: None,
            is_final: true,
        })
    };
    let mut x = Explainer::new(TENANT, "alice");
    x.push(1, T0, &fail(1, IP));
    let mut ip = Ip::default();
    let block = ip.fail(&policy(1, 60, 600), "bob", T0).unwrap();
    x.push(2, T0 + 1, &Event::IpBlock(block));
    x.push(3, T0 + 2, &fail(3, IP));
    x.push(4, T0 + 3, &fail(4, "198.51.100.1"));
    assert_eq!(x.from_blocked_ips(), &[3]);
    let reply = x.finish(T0 + 4);
    assert_eq!(reply.counted.len(), 3);
    assert!(
        reply.reason.contains("1 of the counted failures came from an IP blocked for the tenant"),
        "{}",
        reply.reason
    );
}
