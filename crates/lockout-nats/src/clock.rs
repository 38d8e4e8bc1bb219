//! The wall clock, injected: lockoutd reads the time only through a [`Clock`], so tests can
//! pass a [`ManualClock`] and move time on instead of sleeping. (The fold never reads a clock:
//! its time is each event's JetStream stored time.)

use std::sync::atomic::{AtomicU64, Ordering};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// Milliseconds since the Unix epoch by the system's clock (for tools and tests).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The system's clock plus an offset the caller moves forward: time passes as usual, and
/// [`ManualClock::advance`] jumps ahead (a lock's expiry without waiting for it).
#[derive(Debug, Default)]
pub struct ManualClock {
    offset_ms: AtomicU64,
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        now_ms().saturating_add(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// How far the local clock runs ahead of the NATS server's (negative: behind), estimated from
/// server times: the stored times of messages that arrive live and the time the server states
/// in a stream's info ([`crate::server_time_ms`]). Each gives (local time at receipt − server
/// time) = the offset plus a transit, so the smallest of the recent ones is the closest
/// estimate. Samples are kept for two windows of [`SkewEstimate::WINDOW_MS`]: a changed clock
/// shows within two windows. Messages of a backlog must not be offered (their transit is
/// their age).
#[derive(Debug)]
pub struct SkewEstimate {
    /// (start of the current window by the local clock, its minimum, the previous window's).
    windows: std::sync::Mutex<(u64, Option<i64>, Option<i64>)>,
}

impl Default for SkewEstimate {
    fn default() -> Self {
        SkewEstimate { windows: std::sync::Mutex::new((0, None, None)) }
    }
}

impl SkewEstimate {
    /// The length of one window of samples.
    pub const WINDOW_MS: u64 = 5_000;

    /// One live message stored at `stored_ms` (the server's clock), received at `local_ms`.
    pub fn observe(&self, local_ms: u64, stored_ms: u64) {
        let sample = i64::try_from(i128::from(local_ms) - i128::from(stored_ms)).unwrap_or(i64::MAX);
        let mut w = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if local_ms.saturating_sub(w.0) >= Self::WINDOW_MS {
            // A new window; the previous one is kept only when it just ended.
            let previous = if local_ms.saturating_sub(w.0) < 2 * Self::WINDOW_MS { w.1 } else { None };
            *w = (local_ms, None, previous);
        }
        w.1 = Some(w.1.map_or(sample, |m| m.min(sample)));
    }

    /// The estimate in ms (local − server), `None` before any live message.
    pub fn skew_ms(&self) -> Option<i64> {
        let w = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match (w.1, w.2) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The server's time now by `clock` corrected with the estimate (`clock`'s own time
    /// before any estimate).
    pub fn server_now_ms(&self, clock: &dyn Clock) -> u64 {
        let local = clock.now_ms();
        match self.skew_ms() {
            Some(skew) => u64::try_from(i128::from(local) - i128::from(skew)).unwrap_or(0),
            None => local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skew_is_the_smallest_recent_sample_and_follows_a_changed_clock() {
        let s = SkewEstimate::default();
        assert_eq!(s.skew_ms(), None);
        let (t, w) = (1_700_000_000_000, SkewEstimate::WINDOW_MS);
        // a clock 5 s ahead; transits of 3, 1 and 7 ms
        s.observe(t + 5_003, t);
        s.observe(t + 10 + 5_001, t + 10);
        s.observe(t + 20 + 5_007, t + 20);
        assert_eq!(s.skew_ms(), Some(5_001));
        // the clock is stepped back to 2 ms behind: a smaller sample wins at once
        let t = t + w;
        s.observe(t, t + 2);
        assert_eq!(s.skew_ms(), Some(-2));
        // stepped forward to 4 s ahead: shown once the smaller samples' windows have passed
        s.observe(t + w + 4_001, t + w);
        assert_eq!(s.skew_ms(), Some(-2), "the previous window still counts");
        s.observe(t + 2 * w + 4_002, t + 2 * w);
        assert_eq!(s.skew_ms(), Some(4_001));
        // a sample after two silent windows starts afresh
        s.observe(t + 10 * w + 300, t + 10 * w);
        assert_eq!(s.skew_ms(), Some(300));
    }

    #[test]
    fn server_now_subtracts_the_skew() {
        let (s, c) = (SkewEstimate::default(), ManualClock::new());
        let local = c.now_ms();
        assert!(s.server_now_ms(&c) >= local, "no estimate: the local clock");
        s.observe(local, local - 60_000);
        let server = s.server_now_ms(&c);
        assert!(server >= local - 60_000 && server < local - 59_000, "{server} vs {local}");
    }

    #[test]
    fn a_manual_clock_runs_with_the_system_clock_and_jumps_when_advanced() {
        let c = ManualClock::new();
        let before = now_ms();
        let t = c.now_ms();
        assert!(t >= before && t <= now_ms());
        c.advance(60_000);
        assert!(c.now_ms() >= before + 60_000);
    }
}
