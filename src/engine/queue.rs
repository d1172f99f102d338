//! The pending-event set: a radix heap. Simulated time never runs backwards (every event is
//! scheduled at or after the one being handled), and a monotone queue can exploit that: an
//! event waits in bucket `b` = the bit length of `time XOR last`, where `last` only grows.
//! The lowest non-empty bucket holds the next events. A small one is sorted once into the
//! `ready` stack; a large one is spread into lower buckets around its minimum (each event
//! moves down at most 64 times, usually a few, every move an append). Sorting is stable and
//! buckets keep push order, so same-time events run first-in first-out without a sequence
//! number. Measured in `benches/engine.rs` at 10^4 pending: std's `BinaryHeap` keyed on
//! (time, seq) ran ~21 M events/s, a 4-ary heap ~12 M, this queue ~37 M.

use super::time::SimTime;

/// Buckets 1..=64 by the highest differing bit; bucket 0 holds events at exactly `last`.
const BUCKETS: usize = 65;

/// A lowest bucket up to this size is sorted into `ready` rather than spread. Chosen with
/// `cargo bench --bench engine` at 10^4 pending: 16 -> 30 M events/s, 48 -> 33 M,
/// 128 -> 36 M, 256 -> 37 M, 1024 -> 38 M but 1,000 pending drops from 45 M to 24 M, as
/// pushes then insert into a long sorted stack.
const SORT_AT_MOST: usize = 256;

/// Events waiting to run, earliest first; ties run in the order they were pushed. Pushing an
/// event earlier than the last one popped is refused.
#[derive(Debug)]
pub struct EventQueue<E> {
    buckets: Vec<Vec<(u64, E)>>,
    /// The next events, sorted so that the top (last element) is the next to pop. Every
    /// event in `ready` precedes every event in the buckets; all are at most `last`.
    ready: Vec<(u64, E)>,
    /// Bit `b` set when bucket `b` is non-empty.
    occupied: u128,
    /// The bucket reference point, in picoseconds: every bucketed event is at or after it.
    last: u64,
    /// Time of the latest pop: the floor for new pushes.
    popped: u64,
    len: usize,
    /// Reused buffer for the bucket being spread, so no spill allocates.
    scratch: Vec<(u64, E)>,
}

/// An event pushed earlier than the last event popped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("an event at {at} is earlier than the event last taken from the queue ({last})")]
pub struct EarlierThanLastPop {
    pub at: SimTime,
    pub last: SimTime,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> EventQueue<E> {
    pub fn new() -> Self {
        EventQueue {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            ready: Vec::new(),
            occupied: 0,
            last: 0,
            popped: 0,
            len: 0,
            scratch: Vec::new(),
        }
    }

    /// Adds `event` at `time`, after every event already queued for the same time.
    pub fn push(&mut self, time: SimTime, event: E) -> Result<(), EarlierThanLastPop> {
        let t = time.as_ps();
        if t < self.popped {
            return Err(EarlierThanLastPop {
                at: time,
                last: SimTime::from_ps(self.popped),
            });
        }
        if t < self.last {
            // Earlier than the bucket floor, so among the ready events: after those at or
            // before `t` (first-in first-out), i.e. below them in the stack.
            let at = self.ready.partition_point(|&(r, _)| r > t);
            self.ready.insert(at, (t, event));
        } else {
            self.insert(t, event);
        }
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the earliest event.
    pub fn pop(&mut self) -> Option<(SimTime, E)> {
        self.settle_min();
        let (t, event) = self.ready.pop()?;
        self.popped = t;
        self.len -= 1;
        Some((SimTime::from_ps(t), event))
    }

    /// The time of the earliest event, without removing it. Takes `&mut self` because
    /// finding the minimum moves it (and its ties) into the ready stack.
    pub fn peek_time(&mut self) -> Option<SimTime> {
        self.settle_min();
        self.ready.last().map(|&(t, _)| SimTime::from_ps(t))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn insert(&mut self, t: u64, event: E) {
        let b = bucket_of(t, self.last);
        self.buckets[b].push((t, event));
        self.occupied |= 1 << b;
    }

    /// Refills the empty ready stack from the lowest non-empty bucket. Spreading a large
    /// bucket around its minimum leaves the minimum (and its ties) in bucket 0, and every
    /// other event in lower buckets than before; repeat until the lowest bucket is small.
    /// Moving `last` up to any time inside that bucket keeps every higher bucket's events
    /// where they are, because they differ from both in the same highest bit.
    fn settle_min(&mut self) {
        if !self.ready.is_empty() {
            return;
        }
        while self.occupied != 0 {
            let b = self.occupied.trailing_zeros() as usize;
            self.occupied &= !(1 << b);
            if b == 0 || self.buckets[b].len() <= SORT_AT_MOST {
                std::mem::swap(&mut self.ready, &mut self.buckets[b]);
                // Latest time at the bottom, earliest on top; reversing first and sorting
                // stably leaves same-time events with the first pushed on top.
                self.ready.reverse();
                self.ready.sort_by_key(|&(t, _)| std::cmp::Reverse(t));
                self.last = self.ready.first().map_or(self.last, |&(t, _)| t);
                return;
            }
            std::mem::swap(&mut self.scratch, &mut self.buckets[b]);
            self.last = self
                .scratch
                .iter()
                .map(|&(t, _)| t)
                .min()
                .unwrap_or(self.last);
            let mut spill = std::mem::take(&mut self.scratch);
            for (t, event) in spill.drain(..) {
                self.insert(t, event);
            }
            self.scratch = spill;
        }
    }
}

fn bucket_of(t: u64, last: u64) -> usize {
    (u64::BITS - (t ^ last).leading_zeros()) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(ps: u64) -> SimTime {
        SimTime::from_ps(ps)
    }

    #[test]
    fn pops_in_time_order() {
        let mut q = EventQueue::new();
        q.push(t(30), "c").unwrap();
        q.push(t(10), "a").unwrap();
        q.push(t(20), "b").unwrap();
        assert_eq!(q.peek_time(), Some(t(10)));
        assert_eq!(q.pop(), Some((t(10), "a")));
        assert_eq!(q.pop(), Some((t(20), "b")));
        assert_eq!(q.pop(), Some((t(30), "c")));
        assert_eq!(q.pop(), None);
        assert_eq!(q.peek_time(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn same_time_events_are_first_in_first_out() {
        let mut q = EventQueue::new();
        for i in 0..100 {
            q.push(t(5), i).unwrap();
        }
        q.push(t(1), -1).unwrap();
        assert_eq!(q.len(), 101);
        assert_eq!(q.pop(), Some((t(1), -1)));
        // Pushed after the pop moved the floor to 1: still behind the earlier 5s.
        q.push(t(5), 100).unwrap();
        for i in 0..=100 {
            assert_eq!(q.pop(), Some((t(5), i)));
        }
    }

    #[test]
    fn extreme_times_keep_their_order() {
        let mut q = EventQueue::new();
        q.push(SimTime::MAX, "last").unwrap();
        q.push(SimTime::ZERO, "first").unwrap();
        q.push(SimTime::MAX, "last-2").unwrap();
        assert_eq!(q.pop(), Some((SimTime::ZERO, "first")));
        assert_eq!(q.pop(), Some((SimTime::MAX, "last")));
        assert_eq!(q.pop(), Some((SimTime::MAX, "last-2")));
    }

    #[test]
    fn pushing_before_the_last_pop_is_refused() {
        let mut q = EventQueue::new();
        q.push(t(10), ()).unwrap();
        q.pop();
        let err = q.push(t(9), ()).unwrap_err();
        assert_eq!(
            err,
            EarlierThanLastPop {
                at: t(9),
                last: t(10)
            }
        );
        assert!(q.is_empty(), "a refused push leaves the queue unchanged");
        q.push(t(10), ()).unwrap();
    }

    proptest! {
        /// Whatever the interleaving of pushes (each at or after the last pop) and pops,
        /// every pop returns the smallest (time, push order) among the events present:
        /// checked against a sorted list.
        #[test]
        fn matches_a_sorted_reference(
            ops in prop::collection::vec(prop::option::of((0u64..4, 0u32..40)), 0..400)
        ) {
            let mut q = EventQueue::new();
            let mut reference: Vec<(u64, usize)> = Vec::new();
            let mut floor = 0u64;
            for (i, op) in ops.iter().enumerate() {
                match op {
                    Some((shift, delta)) => {
                        // Deltas from tiny to ~2^50 exercise low and high buckets.
                        let time = floor + (u64::from(*delta) << (shift * 16));
                        q.push(t(time), i).unwrap();
                        reference.push((time, i));
                    }
                    None => {
                        reference.sort();
                        let expected = if reference.is_empty() { None } else { Some(reference.remove(0)) };
                        if let Some((time, _)) = expected {
                            floor = time;
                        }
                        prop_assert_eq!(q.pop().map(|(time, i)| (time.as_ps(), i)), expected);
                    }
                }
                prop_assert_eq!(q.len(), reference.len());
            }
        }
    }
}
