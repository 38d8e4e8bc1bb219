//! sled's I/O threads run as background threads (`SCHED_BATCH`), the caller's thread does not
//! change. A test binary of its own: sled's thread pool is created once per process, by the
//! first store opened in it.
#![cfg(target_os = "linux")]

#[allow(dead_code)] // not every helper is used here
mod support;

use lockout_store::Store;

/// (name, scheduling policy) of every thread of this process (`/proc/self/task/*/stat`).
fn threads() -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let Ok(stat) = std::fs::read_to_string(t.unwrap().path().join("stat")) else { continue };
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_owned();
        // Fields after the name start with the 3rd (state); the policy is the 41st.
        let policy = rest.split_whitespace().nth(41 - 3).unwrap().parse().unwrap();
        out.push((name, policy));
    }
    out
}

fn policy_of_this_thread() -> u32 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    stat.rsplit_once(')').unwrap().1.split_whitespace().nth(41 - 3).unwrap().parse().unwrap()
}

#[test]
fn sleds_threads_are_background_threads_and_the_callers_is_not() {
    let before = policy_of_this_thread();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let io: Vec<_> = threads().into_iter().filter(|(n, _)| n.starts_with("sled-io")).collect();
    assert!(!io.is_empty(), "no sled I/O thread after opening a store: {:?}", threads());
    for (name, policy) in &io {
        assert_eq!(*policy, libc::SCHED_BATCH as u32, "{name}");
    }
    let flusher: Vec<_> = threads().into_iter().filter(|(n, _)| n == "log flusher").collect();
    assert!(flusher.iter().all(|(_, p)| *p == libc::SCHED_BATCH as u32), "{flusher:?}");
    assert_eq!(policy_of_this_thread(), before, "opening a store changed the caller's thread");

    // Written to, reopened and written to again: still so.
    store.check_writable().unwrap();
    support::when_released(dir.path(), || store.reopen());
    store.check_writable().unwrap();
    for (name, policy) in threads().into_iter().filter(|(n, _)| n.starts_with("sled-io")) {
        assert_eq!(policy, libc::SCHED_BATCH as u32, "{name}");
    }
}
