//! Simulated time, the event queue, the run loop and seeded random streams. Knows nothing
//! about GPUs: the serving model brings its own closed event enum.

mod queue;
mod rng;
mod sim;
mod time;

pub use queue::{EarlierThanLastPop, EventQueue};
pub use rng::RandomStreams;
pub use sim::{Control, Model, ScheduleError, Scheduler, StopReason};
pub use time::{SimDuration, SimTime, TimeError};
