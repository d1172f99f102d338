//! Scheduling policies: in what order waiting requests are admitted, and which instance and
//! DP rank each one goes to. Chosen by name in the scenario (`scheduling.policy`); this is
//! what users regression-test.

use super::scenario::{PolicyName, PolicyParameters};
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
    /// The share of its KV cache in use or promised to queued requests (those counted
    /// `queued_weight` each): the load a KV-aware router balances.
    fn kv_share(&self, queued_weight: f64) -> f64 {
        (self.kv_used as f64 + queued_weight * self.kv_queued as f64)
            / self.kv_capacity.max(1) as f64
    }
}

pub trait SchedulingPolicy {
    /// Order of a waiting queue: lower first; equal keys in the order they joined.
    fn queue_key(&self, request: &RequestSpec) -> u64;

    /// Picks one of `choices` (never empty), returning its position in `choices`.
    /// `cursor` is the index that follows the last one picked here (for round robin).
    fn place(&self, choices: &[Choice], cursor: usize) -> usize;
}

/// The policy a scenario names, with its parameters.
pub fn by_name(name: PolicyName, p: &PolicyParameters) -> Box<dyn SchedulingPolicy> {
    match name {
        PolicyName::Fcfs => Box::new(Fcfs),
        PolicyName::ShortestPromptFirst => Box::new(ShortestPromptFirst {
            aging_tokens_per_s: p.shortest_prompt_first.aging_tokens_per_s,
        }),
        PolicyName::KvAware => Box::new(KvAware {
            queued_weight: p.kv_aware.queued_weight,
        }),
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

/// Shortest prompt first (less prefill ahead of each request), a request gaining
/// `aging_tokens_per_s` of priority per second it waits; round robin placement. Waiting
/// lowers every queued key alike, so the order is that of prompt tokens plus
/// `aging_tokens_per_s` x arrival time, fixed when a request joins.
pub struct ShortestPromptFirst {
    pub aging_tokens_per_s: f64,
}

impl SchedulingPolicy for ShortestPromptFirst {
    fn queue_key(&self, request: &RequestSpec) -> u64 {
        let tokens = request.input_tokens - request.cached_tokens;
        let aged = self.aging_tokens_per_s * request.arrival.as_secs_f64();
        tokens.saturating_add(aged.round() as u64)
    }

    fn place(&self, choices: &[Choice], cursor: usize) -> usize {
        round_robin(choices, cursor)
    }
}

/// First come, first served; each request to the place with the smallest share of its KV
/// cache in use or queued for (ties to the lowest index): least-loaded DP routing. Counting
/// the queue keeps an overloaded instance from taking every arrival while the KV it has
/// reserved so far is small.
pub struct KvAware {
    pub queued_weight: f64,
}

impl SchedulingPolicy for KvAware {
    fn queue_key(&self, _: &RequestSpec) -> u64 {
        0
    }

    fn place(&self, choices: &[Choice], _: usize) -> usize {
        let share = |c: &Choice| c.kv_share(self.queued_weight);
        let mut best = 0;
        for (i, c) in choices.iter().enumerate() {
            if share(c) < share(&choices[best]) {
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

    const KV_AWARE: KvAware = KvAware { queued_weight: 1.0 };
    const SPF: ShortestPromptFirst = ShortestPromptFirst {
        aging_tokens_per_s: 0.0,
    };

    /// An instance with little KV reserved but a long queue is not the least loaded,
    /// unless the queue's weight says queued KV counts for little.
    #[test]
    fn kv_aware_counts_what_is_queued_by_its_weight() {
        let idle_but_queued = Choice {
            kv_queued: 60,
            ..choice(0, 5)
        };
        let busy = choice(1, 40);
        assert_eq!(KV_AWARE.place(&[idle_but_queued, busy], 0), 1);
        assert_eq!(KV_AWARE.place(&[choice(0, 5), busy], 0), 0);
        let light = KvAware { queued_weight: 0.5 };
        assert_eq!(light.place(&[idle_but_queued, busy], 0), 0, "5 + 30 < 40");
    }

    #[test]
    fn round_robin_wraps_and_kv_aware_takes_the_emptiest() {
        let c = [choice(1, 50), choice(3, 10), choice(4, 10)];
        assert_eq!(Fcfs.place(&c, 2), 1);
        assert_eq!(Fcfs.place(&c, 5), 0);
        assert_eq!(KV_AWARE.place(&c, 0), 1, "ties go to the lowest index");
    }

    #[test]
    fn shortest_prompt_first_orders_by_uncached_prompt_and_ages_the_waiting() {
        let r = |input, cached, arrival_s| RequestSpec {
            arrival: SimTime::ZERO
                .checked_add(crate::engine::SimDuration::from_secs_f64(arrival_s).unwrap())
                .unwrap(),
            input_tokens: input,
            output_tokens: 1,
            cached_tokens: cached,
        };
        assert!(SPF.queue_key(&r(100, 0, 0.0)) < SPF.queue_key(&r(300, 100, 0.0)));
        assert_eq!(Fcfs.queue_key(&r(1, 0, 0.0)), Fcfs.queue_key(&r(9, 0, 0.0)));
        // A 4,000-token prompt that arrived 2 s before a 100-token one: strict SPF serves
        // the short one first; at 2,000 tokens of priority a second, the long one.
        let (long, short) = (r(4000, 0, 0.0), r(100, 0, 2.0));
        assert!(SPF.queue_key(&short) < SPF.queue_key(&long));
        let aging = ShortestPromptFirst {
            aging_tokens_per_s: 2000.0,
        };
        assert!(aging.queue_key(&long) < aging.queue_key(&short));
    }
}
