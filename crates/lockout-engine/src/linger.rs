//! Commit lingering: folded batches that nobody waits for are held for a few milliseconds and
//! committed together with the batches after them.
//!
//! Under live traffic every fetch brings a handful of events, and each sled commit costs
//! about the same whatever its size (two log-buffer writes, each waking every sled I/O
//! thread), so committing each fetch on its own spends the cores on commits that the
//! `status` requests and the NATS server need. A batch is committed at once when someone
//! waits for it ([`Lingering::urgent`]: a notice to publish, a service request or an expiry
//! waiting for its event), when the held events reach the batch size, or when the oldest held
//! batch has waited `wait`.

use std::time::{Duration, Instant};

/// A folded batch a [`Linger`] can hold and merge.
pub trait Lingering {
    /// Whether someone waits for this batch to be committed.
    fn urgent(&self) -> bool;
    /// Merges `later`, the batch folded right after this one, into this one.
    fn absorb(&mut self, later: Self);
}

/// Holds the folded batches nobody waits for (see the module docs).
#[derive(Debug)]
pub struct Linger<B> {
    wait: Duration,
    max_events: usize,
    held: Option<Held<B>>,
}

#[derive(Debug)]
struct Held<B> {
    batch: B,
    events: usize,
    until: Instant,
}

impl<B: Lingering> Linger<B> {
    /// Holds batches for at most `wait` (zero: never) and `max_events` events.
    pub fn new(wait: Duration, max_events: usize) -> Self {
        Linger { wait, max_events, held: None }
    }

    /// Takes the next folded batch, of `events` messages, at `now`: returns what is to be
    /// committed now (merged with what was held), or `None` while it waits.
    pub fn offer(&mut self, batch: B, events: usize, now: Instant) -> Option<B> {
        let urgent = batch.urgent();
        let held = match self.held.take() {
            Some(mut h) => {
                h.batch.absorb(batch);
                h.events += events;
                h
            }
            None => Held { batch, events, until: now + self.wait },
        };
        if urgent || held.events >= self.max_events || now >= held.until {
            return Some(held.batch);
        }
        self.held = Some(held);
        None
    }

    /// When the held batch is due, if one is held.
    pub fn due(&self) -> Option<Instant> {
        self.held.as_ref().map(|h| h.until)
    }

    /// The held batch, to commit now (it is due, or the projector stops).
    pub fn take(&mut self) -> Option<B> {
        self.held.take().map(|h| h.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in batch: the sequences it holds, and whether one of them is urgent.
    #[derive(Debug, PartialEq, Eq)]
    struct B {
        seqs: Vec<u64>,
        urgent: bool,
    }

    impl Lingering for B {
        fn urgent(&self) -> bool {
            self.urgent
        }
        fn absorb(&mut self, later: B) {
            self.seqs.extend(later.seqs);
            self.urgent |= later.urgent;
        }
    }

    fn b(seqs: &[u64], urgent: bool) -> B {
        B { seqs: seqs.to_vec(), urgent }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn quiet_batches_wait_together_until_the_first_is_due() {
        let t0 = Instant::now();
        let mut l = Linger::new(5 * MS, 1000);
        assert_eq!(l.offer(b(&[1, 2], false), 2, t0), None);
        assert_eq!(l.due(), Some(t0 + 5 * MS));
        assert_eq!(l.offer(b(&[3], false), 1, t0 + 2 * MS), None);
        assert_eq!(l.due(), Some(t0 + 5 * MS), "the oldest batch sets the deadline");
        assert_eq!(l.take(), Some(b(&[1, 2, 3], false)));
        assert_eq!(l.due(), None);
        assert_eq!(l.take(), None);
    }

    #[test]
    fn an_urgent_batch_goes_at_once_with_what_was_held() {
        let t0 = Instant::now();
        let mut l = Linger::new(5 * MS, 1000);
        assert_eq!(l.offer(b(&[1], true), 1, t0), Some(b(&[1], true)));
        assert_eq!(l.offer(b(&[2], false), 1, t0), None);
        assert_eq!(l.offer(b(&[3], true), 1, t0 + MS), Some(b(&[2, 3], true)));
        assert_eq!(l.due(), None);
    }

    #[test]
    fn a_full_or_late_batch_goes_at_once() {
        let t0 = Instant::now();
        let mut l = Linger::new(5 * MS, 10);
        assert_eq!(l.offer(b(&[1], false), 10, t0), Some(b(&[1], false)), "a full batch");
        assert_eq!(l.offer(b(&[2], false), 6, t0), None);
        assert_eq!(l.offer(b(&[3], false), 4, t0 + MS), Some(b(&[2, 3], false)), "held events fill a batch");
        assert_eq!(l.offer(b(&[4], false), 1, t0), None);
        assert_eq!(l.offer(b(&[5], false), 1, t0 + 5 * MS), Some(b(&[4, 5], false)), "the held batch is due");
    }

    #[test]
    fn no_wait_never_holds() {
        let t0 = Instant::now();
        let mut l = Linger::new(Duration::ZERO, 1000);
        assert_eq!(l.offer(b(&[1], false), 1, t0), Some(b(&[1], false)));
        assert_eq!(l.due(), None);
    }
}
