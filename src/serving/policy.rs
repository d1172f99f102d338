//! Scheduling policies: in what order waiting requests are admitted, and which instance and
//! DP rank each one goes to. Chosen by name in the scenario (`scheduling.policy`); this is
//! what users regression-test.

use super::scenario::PolicyName;
use super::workload::RequestSpec;

/// What a policy sees of one place a request could go (an instance or a DP rank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// Index of the instance or rank.
    pub index: usize,
    /// KV cache tokens reserved there.
    pub kv_used: u64,
    /// KV cache tokens the requests queued for it will reserve (0 for a DP rank: requests
    /// queue at their instance).
    pub kv_queued: u64,
    pub kv_capacity: u64,
}

impl Choice {
    /// The share of its KV cache in use or promised to queued requests: the load a
    /// KV-aware router balances (Dynamo's counts active and incoming blocks alike).
    fn kv_share(&self) -> f64 {
        self.kv_used.saturating_add(self.kv_queued) as f64 / self.kv_capacity.max(1) as f64
    }
}

pub trait SchedulingPolicy {
    /// Order of a waiting queue: lower first; equal keys in the order they joined.
    fn queue_key(&self, request: &RequestSpec) -> u64;

    /// Picks one of `choices` (never empty), returning its position in `choices`.
    /// `cursor` is the index that follows the last one picked here (for round robin).
    fn place(&self, choices: &[Choice], cursor: usize) -> usize;
}

/// The policy a scenario names.
pub fn by_name(name: PolicyName) -> Box<dyn SchedulingPolicy> {
    match name {
        PolicyName::Fcfs => Box::new(Fcfs),
        PolicyName::ShortestPromptFirst => Box::new(ShortestPromptFirst),
        PolicyName::KvAware => Box::new(KvAware),
    }
}

/// The first choice at or after `cursor`, wrapping around.
fn round_robin(choices: &[Choice], cursor: usize) -> usize {
    choices.iter().position(|c| c.index >= cursor).unwrap_or(0)
}

/// First come, first served; round robin placement.
pub struct Fcfs;

impl SchedulingPolicy for Fcfs {
    fn queue_key(&self, _: &RequestSpec) -> u64 {
        0
    }

    fn place(&self, choices: &[Choice], cursor: usize) -> usize {
        round_robin(choices, cursor)
    }
}

/// Shortest prompt first (less prefill ahead of each request); round robin placement.
pub struct ShortestPromptFirst;

impl SchedulingPolicy for ShortestPromptFirst {
    fn queue_key(&self, request: &RequestSpec) -> u64 {
        request.input_tokens - request.cached_tokens
    }

    fn place(&self, choices: &[Choice], cursor: usize) -> usize {
        round_robin(choices, cursor)
    }
}

/// First come, first served; each request to the place with the smallest share of its KV
/// cache in use or queued for (ties to the lowest index): least-loaded DP routing. Counting
/// the queue keeps an overloaded instance from taking every arrival while the KV it has
/// reserved so far is small.
pub struct KvAware;

impl SchedulingPolicy for KvAware {
    fn queue_key(&self, _: &RequestSpec) -> u64 {
        0
    }

    fn place(&self, choices: &[Choice], _: usize) -> usize {
        let mut best = 0;
        for (i, c) in choices.iter().enumerate() {
            if c.kv_share() < choices[best].kv_share() {
                best = i;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SimTime;

    fn choice(index: usize, kv_used: u64) -> Choice {
        Choice {
            index,
            kv_used,
            kv_queued: 0,
            kv_capacity: 100,
        }
    }

    /// An instance with little KV reserved but a long queue is not the least loaded.
    #[test]
    fn kv_aware_counts_what_is_queued() {
        let idle_but_queued = Choice {
            kv_queued: 60,
            ..choice(0, 5)
        };
        let busy = choice(1, 40);
        assert_eq!(KvAware.place(&[idle_but_queued, busy], 0), 1);
        assert_eq!(KvAware.place(&[choice(0, 5), busy], 0), 0);
    }

    #[test]
    fn round_robin_wraps_and_kv_aware_takes_the_emptiest() {
        let c = [choice(1, 50), choice(3, 10), choice(4, 10)];
        assert_eq!(Fcfs.place(&c, 2), 1);
        assert_eq!(Fcfs.place(&c, 5), 0);
        assert_eq!(KvAware.place(&c, 0), 1, "ties go to the lowest index");
    }

    #[test]
    fn shortest_prompt_first_orders_by_uncached_prompt() {
        let r = |input, cached| RequestSpec {
            arrival: SimTime::ZERO,
            input_tokens: input,
            output_tokens: 1,
            cached_tokens: cached,
        };
        assert!(
            ShortestPromptFirst.queue_key(&r(100, 0)) < ShortestPromptFirst.queue_key(&r(300, 100))
        );
        assert_eq!(Fcfs.queue_key(&r(1, 0)), Fcfs.queue_key(&r(9, 0)));
    }
}
