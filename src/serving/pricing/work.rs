//! What each rank runs in an iteration, its split into micro-batches, and what the
//! iteration costs.

use crate::cost::step::PrefillChunk;
use crate::serving::overlap::MicroBatch;

/// What one DP rank runs in the iteration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RankWork {
    /// Requests decoding.
    pub batch: u64,
    /// Their mean context, tokens.
    pub context: u64,
    pub chunks: Vec<PrefillChunk>,
}

impl RankWork {
    pub(super) fn tokens(&self, drafts: u64) -> u64 {
        self.batch * (1 + drafts) + self.chunks.iter().map(|c| c.tokens).sum::<u64>()
    }

    /// Two halves for two micro-batches: decoding requests by count, prompt tokens at
    /// their midpoint, splitting the one chunk that straddles it (its second part keeps
    /// the first as prefix). SGLang's two-batch overlap splits by tokens the same way
    /// (`--tbo-token-distribution-threshold`, reference engines.md).
    pub(super) fn halves(&self) -> [RankWork; 2] {
        let mut h = [RankWork::default(), RankWork::default()];
        h[0].batch = self.batch.div_ceil(2);
        h[1].batch = self.batch / 2;
        let total: u64 = self.chunks.iter().map(|c| c.tokens).sum();
        let mut room = total.div_ceil(2);
        for c in &self.chunks {
            let first = c.tokens.min(room);
            room -= first;
            if first > 0 {
                h[0].chunks.push(PrefillChunk {
                    tokens: first,
                    prefix: c.prefix,
                });
            }
            if first < c.tokens {
                h[1].chunks.push(PrefillChunk {
                    tokens: c.tokens - first,
                    prefix: c.prefix + first,
                });
            }
        }
        for half in &mut h {
            half.context = self.context;
        }
        h
    }
}

/// An iteration's price and what went into it, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Price {
    pub seconds: f64,
    /// Slowest rank's work outside the routed experts.
    pub dense_s: f64,
    /// Routed GroupGEMM of the slowest rank, all MoE layers.
    pub moe_s: f64,
    /// Dispatch and combine, all MoE layers.
    pub all_to_all_s: f64,
    /// Time serving waited for EPLB weight moves.
    pub eplb_stall_s: f64,
    /// Mean over the sampled layers of (max - mean) / mean routed tokens per GPU.
    pub rank_imbalance: f64,
}

impl Price {
    /// Every time in it `k` times as long (a what-if; the imbalance is a ratio, unmoved).
    pub(super) fn scaled(self, k: f64) -> Price {
        Price {
            seconds: self.seconds * k,
            dense_s: self.dense_s * k,
            moe_s: self.moe_s * k,
            all_to_all_s: self.all_to_all_s * k,
            eplb_stall_s: self.eplb_stall_s * k,
            rank_imbalance: self.rank_imbalance,
        }
    }
}

/// One pass of all ranks in lock step, seconds, all layers together.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Pass {
    /// Slowest rank's work outside the routed experts.
    pub(super) dense_s: f64,
    /// Of which inside the MoE layers (what interleaves with the all-to-all).
    pub(super) layer_dense_s: f64,
    /// Routed GroupGEMM of the slowest rank.
    pub(super) moe_s: f64,
    pub(super) dispatch_s: f64,
    pub(super) combine_s: f64,
    /// The MTP draft layers' all-to-alls.
    pub(super) draft_a2a_s: f64,
    pub(super) rank_imbalance: f64,
}

impl Pass {
    pub(super) fn micro_batch(&self) -> MicroBatch {
        MicroBatch {
            attention_s: self.layer_dense_s,
            experts_s: self.moe_s,
            dispatch_s: self.dispatch_s,
            combine_s: self.combine_s,
            serial_s: self.dense_s - self.layer_dense_s + self.draft_a2a_s,
        }
    }

    pub(super) fn price(&self, seconds: f64) -> Price {
        Price {
            seconds,
            dense_s: self.dense_s,
            moe_s: self.moe_s,
            all_to_all_s: self.dispatch_s + self.combine_s + self.draft_a2a_s,
            eplb_stall_s: 0.0,
            rank_imbalance: self.rank_imbalance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_batches_split_requests_by_count_and_prompts_by_tokens() {
        let chunk = |tokens, prefix| PrefillChunk { tokens, prefix };
        let work = RankWork {
            batch: 5,
            context: 900,
            chunks: vec![chunk(1000, 0), chunk(300, 64)],
        };
        let [a, b] = work.halves();
        assert_eq!((a.batch, b.batch), (3, 2));
        assert_eq!(a.chunks, vec![chunk(650, 0)]);
        assert_eq!(b.chunks, vec![chunk(350, 650), chunk(300, 64)]);
        assert_eq!((a.context, b.context), (900, 900));
        let one = RankWork {
            chunks: vec![chunk(8192, 0)],
            ..RankWork::default()
        };
        let [a, b] = one.halves();
        assert_eq!(
            (a.chunks, b.chunks),
            (vec![chunk(4096, 0)], vec![chunk(4096, 4096)])
        );
    }
}
