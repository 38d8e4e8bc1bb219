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

#[cfg(test)]
mod tests {
    use super::*;

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
