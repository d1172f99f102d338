//! The run loop: a clock, the pending events, and a model that handles them one at a time.
//! The model's events are a closed enum of its own (`Model::Event`); the engine knows
//! nothing about GPUs or requests.

use super::queue::{EarlierThanLastPop, EventQueue};
use super::time::{SimDuration, SimTime, TimeError};

/// What a model's handler tells the loop after each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Why a run returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The next event lies after the horizon (or there is none and the horizon was reached).
    Horizon,
    /// The model returned [`Control::Stop`].
    Stopped,
    /// No events are left.
    Drained,
}

/// A simulation model: its events and how it reacts to each.
pub trait Model {
    type Event;
    type Error: From<ScheduleError>;

    fn handle(
        &mut self,
        scheduler: &mut Scheduler<Self::Event>,
        event: Self::Event,
    ) -> Result<Control, Self::Error>;
}

/// Scheduling an event in the past, or past the end of representable time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    #[error("cannot schedule an event at {at}, before the current time {now}")]
    InThePast { at: SimTime, now: SimTime },
    #[error(transparent)]
    Time(#[from] TimeError),
    #[error(transparent)]
    Queue(#[from] EarlierThanLastPop),
}

/// The clock and the pending events; handed to the model so it can schedule more.
#[derive(Debug)]
pub struct Scheduler<E> {
    now: SimTime,
    queue: EventQueue<E>,
    handled: u64,
}

impl<E> Default for Scheduler<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Scheduler<E> {
    pub fn new() -> Self {
        Scheduler {
            now: SimTime::ZERO,
            queue: EventQueue::new(),
            handled: 0,
        }
    }

    pub fn now(&self) -> SimTime {
        self.now
    }

    /// Events handled since the start.
    pub fn events_handled(&self) -> u64 {
        self.handled
    }

    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    pub fn schedule_at(&mut self, at: SimTime, event: E) -> Result<(), ScheduleError> {
        if at < self.now {
            return Err(ScheduleError::InThePast { at, now: self.now });
        }
        Ok(self.queue.push(at, event)?)
    }

    pub fn schedule_in(&mut self, delay: SimDuration, event: E) -> Result<(), ScheduleError> {
        let at = self.now.checked_add(delay)?;
        Ok(self.queue.push(at, event)?)
    }

    /// Handles events in (time, push order) until the model stops, no events are left, or
    /// the next event lies after `horizon`. Events at exactly `horizon` run. When the
    /// horizon is what stopped the run, the clock ends at `horizon`, so that a later call
    /// continues from there.
    pub fn run_until<M>(&mut self, model: &mut M, horizon: SimTime) -> Result<StopReason, M::Error>
    where
        M: Model<Event = E>,
    {
        loop {
            match self.queue.peek_time() {
                None => return Ok(StopReason::Drained),
                Some(next) if next > horizon => {
                    self.now = self.now.max(horizon);
                    return Ok(StopReason::Horizon);
                }
                Some(_) => {}
            }
            let Some((time, event)) = self.queue.pop() else {
                return Ok(StopReason::Drained);
            };
            self.now = time;
            self.handled += 1;
            if model.handle(self, event)? == Control::Stop {
                return Ok(StopReason::Stopped);
            }
        }
    }

    /// Runs until the model stops or no events are left.
    pub fn run<M>(&mut self, model: &mut M) -> Result<StopReason, M::Error>
    where
        M: Model<Event = E>,
    {
        self.run_until(model, SimTime::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny model: `Tick(n)` reschedules itself every 10 ps until n reaches a limit,
    /// recording every (time, event) it sees.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Ev {
        Tick(u32),
        Halt,
    }

    struct Ticker {
        limit: u32,
        seen: Vec<(u64, Ev)>,
    }

    impl Model for Ticker {
        type Event = Ev;
        type Error = ScheduleError;

        fn handle(&mut self, s: &mut Scheduler<Ev>, ev: Ev) -> Result<Control, ScheduleError> {
            self.seen.push((s.now().as_ps(), ev));
            match ev {
                Ev::Tick(n) if n < self.limit => {
                    s.schedule_in(SimDuration::from_ps(10), Ev::Tick(n + 1))?;
                    Ok(Control::Continue)
                }
                Ev::Tick(_) => Ok(Control::Continue),
                Ev::Halt => Ok(Control::Stop),
            }
        }
    }

    fn ticker(limit: u32) -> Ticker {
        Ticker {
            limit,
            seen: Vec::new(),
        }
    }

    #[test]
    fn runs_until_drained() {
        let mut s = Scheduler::new();
        let mut m = ticker(3);
        s.schedule_at(SimTime::ZERO, Ev::Tick(0)).unwrap();
        assert_eq!(s.run(&mut m).unwrap(), StopReason::Drained);
        assert_eq!(
            m.seen,
            vec![
                (0, Ev::Tick(0)),
                (10, Ev::Tick(1)),
                (20, Ev::Tick(2)),
                (30, Ev::Tick(3))
            ]
        );
        assert_eq!(s.events_handled(), 4);
        assert_eq!(s.now().as_ps(), 30);
    }

    #[test]
    fn horizon_is_inclusive_and_resumable() {
        let mut s = Scheduler::new();
        let mut m = ticker(10);
        s.schedule_at(SimTime::ZERO, Ev::Tick(0)).unwrap();
        let reason = s.run_until(&mut m, SimTime::from_ps(20)).unwrap();
        assert_eq!(reason, StopReason::Horizon);
        assert_eq!(m.seen.len(), 3, "events at 0, 10 and exactly 20 run");
        assert_eq!(s.now().as_ps(), 20);
        let reason = s.run_until(&mut m, SimTime::from_ps(25)).unwrap();
        assert_eq!(reason, StopReason::Horizon);
        assert_eq!(s.now().as_ps(), 25, "the clock advances to the horizon");
        assert_eq!(s.run(&mut m).unwrap(), StopReason::Drained);
        assert_eq!(m.seen.len(), 11);
    }

    #[test]
    fn the_model_can_stop_the_run() {
        let mut s = Scheduler::new();
        let mut m = ticker(100);
        s.schedule_at(SimTime::ZERO, Ev::Tick(0)).unwrap();
        s.schedule_at(SimTime::from_ps(15), Ev::Halt).unwrap();
        assert_eq!(s.run(&mut m).unwrap(), StopReason::Stopped);
        assert_eq!(m.seen.last(), Some(&(15, Ev::Halt)));
        assert_eq!(s.pending(), 1, "the tick due at 20 stays queued");
    }

    #[test]
    fn same_time_events_are_handled_in_schedule_order() {
        let mut s = Scheduler::new();
        let mut m = ticker(0);
        for n in [5, 3, 9] {
            s.schedule_at(SimTime::from_ps(7), Ev::Tick(n)).unwrap();
        }
        s.run(&mut m).unwrap();
        let order: Vec<Ev> = m.seen.iter().map(|(_, e)| *e).collect();
        assert_eq!(order, vec![Ev::Tick(5), Ev::Tick(3), Ev::Tick(9)]);
    }

    #[test]
    fn scheduling_in_the_past_or_beyond_time_is_an_error() {
        let mut s = Scheduler::new();
        let mut m = ticker(0);
        s.schedule_at(SimTime::from_ps(50), Ev::Tick(0)).unwrap();
        s.run(&mut m).unwrap();
        assert!(matches!(
            s.schedule_at(SimTime::from_ps(49), Ev::Halt),
            Err(ScheduleError::InThePast { .. })
        ));
        assert!(matches!(
            s.schedule_in(SimDuration::from_ps(u64::MAX), Ev::Halt),
            Err(ScheduleError::Time(TimeError::Overflow(..)))
        ));
    }

    #[test]
    fn handler_errors_end_the_run() {
        let mut s = Scheduler::new();
        let mut m = ticker(u32::MAX);
        s.schedule_at(SimTime::from_ps(u64::MAX - 15), Ev::Tick(0))
            .unwrap();
        let err = s.run(&mut m).unwrap_err();
        assert!(matches!(err, ScheduleError::Time(TimeError::Overflow(..))));
    }
}
