//! Event-queue throughput in the classic "hold" pattern: with N events pending, pop the
//! earliest and push one new event a pseudo-random delay later, so the queue stays at N.
//! One element = one event through the queue (one push and one pop).
//!
//! Run: `cargo bench --bench engine`. Goal (issue 2): >= 30 million events/s with 10^4
//! pending on the 2-core development machine.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use epsim::engine::{Control, EventQueue, Model, ScheduleError, Scheduler, SimDuration, SimTime};
use std::hint::black_box;

/// xorshift64: cheap delays so the bench measures the queue, not the generator.
fn next_delay(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % 1_000_000
}

fn filled_queue(pending: usize, state: &mut u64) -> EventQueue<u32> {
    let mut q = EventQueue::new();
    for i in 0..pending {
        q.push(SimTime::from_ps(next_delay(state)), i as u32)
            .expect("nothing popped yet");
    }
    q
}

fn queue_hold(c: &mut Criterion) {
    const BATCH: u64 = 100_000;
    let mut group = c.benchmark_group("event_queue_hold");
    group.throughput(Throughput::Elements(BATCH));
    for pending in [1_000usize, 10_000, 100_000] {
        group.bench_with_input(
            BenchmarkId::from_parameter(pending),
            &pending,
            |b, &pending| {
                let mut state = 0x2545_F491_4F6C_DD1D;
                let mut q = filled_queue(pending, &mut state);
                b.iter(|| {
                    for _ in 0..BATCH {
                        let (t, ev) = q.pop().expect("the queue never empties");
                        let at = SimTime::from_ps(t.as_ps() + next_delay(&mut state));
                        q.push(at, black_box(ev)).expect("later than the pop");
                    }
                });
            },
        );
    }
    group.finish();
}

/// The same hold pattern through the full run loop (`Scheduler::run_until` + `Model`).
struct Hold {
    state: u64,
    remaining: u64,
}

impl Model for Hold {
    type Event = u32;
    type Error = ScheduleError;

    fn handle(&mut self, s: &mut Scheduler<u32>, ev: u32) -> Result<Control, ScheduleError> {
        self.remaining -= 1;
        s.schedule_in(
            SimDuration::from_ps(next_delay(&mut self.state)),
            black_box(ev),
        )?;
        Ok(if self.remaining == 0 {
            Control::Stop
        } else {
            Control::Continue
        })
    }
}

fn run_loop(c: &mut Criterion) {
    const BATCH: u64 = 100_000;
    const PENDING: usize = 10_000;
    let mut group = c.benchmark_group("run_loop_hold");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function(BenchmarkId::from_parameter(PENDING), |b| {
        let mut model = Hold {
            state: 0x9E37_79B9_7F4A_7C15,
            remaining: 0,
        };
        let mut s = Scheduler::new();
        for i in 0..PENDING {
            s.schedule_at(SimTime::from_ps(next_delay(&mut model.state)), i as u32)
                .expect("start times are valid");
        }
        b.iter(|| {
            model.remaining = BATCH;
            s.run(&mut model)
                .expect("the hold model never overflows in a bench");
        });
    });
    group.finish();
}

criterion_group!(benches, queue_hold, run_loop);
criterion_main!(benches);
