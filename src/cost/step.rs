//! One iteration of one rank (decode, optionally with a prefill chunk mixed in), priced op
//! by op and summed by op class, with balanced routing (every expert slot gets the same
//! share of tokens). It shows where the time of a
//! step goes and how it moves from EP8 to EP32: the MoE GroupGEMM reads the weights of every
//! local expert that gets a token, so fewer experts per GPU, fewer bytes per step.

use super::compute::{OpCost, Roofline, ffn_gemms};
use crate::hardware::GpuSpec;
use crate::model::memory::{AttentionLayout, Deployment};
use crate::model::{ModelConfig, Precision, Usage};
use serde::Serialize;
use std::collections::BTreeMap;

/// Op classes of a step, in the order they are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    /// Attention over the KV cache.
    Attention,
    /// Attention projections, dense FFN layers, shared experts, MTP projection, LM head.
    DenseGemm,
    /// Routed experts.
    MoeGroupGemm,
    /// MoE all-to-all, token dispatch (the communication issue prices it).
    Dispatch,
    /// MoE all-to-all, combine.
    Combine,
    /// Routers, norms, sampling, fixed per-iteration overhead.
    Other,
}

impl OpClass {
    fn index(self) -> usize {
        self as usize
    }

    pub const ALL: [OpClass; 6] = [
        OpClass::Attention,
        OpClass::DenseGemm,
        OpClass::MoeGroupGemm,
        OpClass::Dispatch,
        OpClass::Combine,
        OpClass::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            OpClass::Attention => "attention",
            OpClass::DenseGemm => "dense GEMMs",
            OpClass::MoeGroupGemm => "MoE GroupGEMM",
            OpClass::Dispatch => "dispatch",
            OpClass::Combine => "combine",
            OpClass::Other => "other",
        }
    }
}

/// What one rank is doing in the step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepLoad<'a> {
    /// Requests in the rank's attention group (one GPU with DP attention).
    pub batch: u64,
    /// Tokens of context each request has.
    pub context: u64,
    /// MTP draft tokens per request: the main model verifies 1 + `mtp` tokens per request,
    /// and the MTP module runs `mtp` times.
    pub mtp: u64,
    /// Prompt chunks prefilled in the same iteration (chunked prefill in aggregated
    /// serving), or alone when `batch` is 0.
    pub prefill: &'a [PrefillChunk],
}

/// `tokens` prompt tokens of one request, after `prefix` of its tokens already in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrefillChunk {
    pub tokens: u64,
    pub prefix: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepCost {
    pub by_class: BTreeMap<OpClass, OpCost>,
    /// Tokens each local expert receives (balanced routing), per MoE layer of the main model.
    pub tokens_per_expert: Vec<u64>,
    pub experts_per_gpu: u64,
}

impl StepCost {
    pub fn total(&self) -> OpCost {
        let mut sum = OpCost::default();
        for c in self.by_class.values() {
            sum += *c;
        }
        sum
    }
}

/// Balanced routing: `assignments` token-expert pairs spread as evenly as integers allow.
fn balanced(assignments: u64, experts: u64) -> Vec<u64> {
    let (each, extra) = (assignments / experts, assignments % experts);
    (0..experts).map(|i| each + u64::from(i < extra)).collect()
}

/// Prices one decode iteration of one rank. Communication (dispatch, combine) is not part of
/// the compute model: those classes stay at zero here. Layers of one kind cost the same, so
/// one dense and one MoE layer are priced and multiplied by their counts.
pub fn iteration_cost(
    model: &ModelConfig,
    gpu: &GpuSpec,
    d: &Deployment,
    load: &StepLoad,
) -> StepCost {
    let step = Step {
        roofline: Roofline::new(gpu),
        model,
        d,
        load,
        tp: match d.attention {
            AttentionLayout::Dp => 1,
            AttentionLayout::Tp(n) => n.max(1),
        },
    };
    let mut total = ClassCosts::default();
    let chunk: u64 = load.prefill.iter().map(|p| p.tokens).sum();
    let chunks = load.prefill.iter().filter(|p| p.tokens > 0).count() as u64;
    // The layers' GEMMs run over decode and prefill tokens together: weights read once.
    let verify_tokens = load.batch.saturating_mul(1 + load.mtp);
    let tokens = verify_tokens.saturating_add(chunk);
    let queries = 1 + load.mtp;
    total.add_all(&step.layer(tokens, queries, false), model.dense_layers);
    total.add_all(&step.layer(tokens, queries, true), model.moe_layers());
    // The LM head runs for every decode token, and once for a chunk (its next token).
    let heads = verify_tokens + chunks;
    total.add_all(&step.lm_head_and_sampling(heads), 1);
    // Each MTP draft: project [embedding; hidden] (2h -> h), one MoE layer, the LM head.
    let h = model.hidden_size;
    let mut draft = step.layer(load.batch, 1, true);
    draft.add(
        OpClass::DenseGemm,
        step.roofline.gemm(load.batch, h, 2 * h, d.other_precision),
    );
    draft.add_all(&step.lm_head_and_sampling(load.batch), 1);
    total.add_all(&draft, load.mtp);
    total.add(
        OpClass::Other,
        OpCost {
            seconds: gpu.efficiency.layer_overhead_us * 1e-6 * (model.layers + load.mtp) as f64,
            ..OpCost::default()
        },
    );
    StepCost {
        by_class: OpClass::ALL
            .iter()
            .map(|&c| (c, total.0[c.index()]))
            .collect(),
        tokens_per_expert: step.tokens_per_local_expert(tokens),
        experts_per_gpu: step.experts_per_gpu(),
    }
}

/// Costs per op class, indexed by [`OpClass::index`].
#[derive(Default)]
struct ClassCosts([OpCost; 6]);

impl ClassCosts {
    fn add(&mut self, class: OpClass, cost: OpCost) {
        self.0[class.index()] += cost;
    }

    /// Adds `n` copies of `other`.
    fn add_all(&mut self, other: &ClassCosts, n: u64) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine += theirs.times(n as f64);
        }
    }
}

struct Step<'a> {
    roofline: Roofline<'a>,
    model: &'a ModelConfig,
    d: &'a Deployment,
    load: &'a StepLoad<'a>,
    /// Ranks sharing one request batch's attention.
    tp: u64,
}

impl Step<'_> {
    fn experts_per_gpu(&self) -> u64 {
        self.d.slots / self.d.ep.max(1)
    }

    /// Tokens reaching each of this rank's experts when the attention group has `tokens`:
    /// every rank sends its own tokens (a TP group splits them over its ranks), each to
    /// top_k slots, spread evenly over all slots of the EP group.
    fn tokens_per_local_expert(&self, tokens: u64) -> Vec<u64> {
        let per_rank = tokens.div_ceil(self.tp);
        let experts = self.experts_per_gpu();
        let picks = per_rank
            .saturating_mul(self.model.moe.experts_per_token)
            .saturating_mul(self.d.ep);
        let routed_here =
            (u128::from(picks) * u128::from(experts) / u128::from(self.d.slots.max(1))) as u64;
        balanced(routed_here, experts)
    }

    /// One transformer layer for `m` tokens of the batch, `queries` per request.
    fn layer(&self, m: u64, queries: u64, moe: bool) -> ClassCosts {
        let (model, d, r) = (self.model, self.d, self.roofline);
        let h = model.hidden_size;
        let mut c = ClassCosts::default();
        for (n, k) in model.attention_projections(self.tp) {
            c.add(OpClass::DenseGemm, r.gemm(m, n, k, d.other_precision));
        }
        c.add(OpClass::Attention, self.attention(queries));
        // Draft layers (m == batch) see no prompt chunks.
        if m > self.load.batch {
            for &p in self.load.prefill.iter().filter(|p| p.tokens > 0) {
                c.add(OpClass::Attention, self.prefill_attention(p));
            }
        }
        // Two RMS norms, each reading and writing the hidden state.
        let hidden_bytes = Precision::Bf16.bytes((m * h) as f64, Usage::Activations);
        c.add(OpClass::Other, r.memory_pass(4.0 * hidden_bytes));
        if moe {
            c.add(
                OpClass::Other,
                r.gemm(m, model.moe.routed_experts, h, Precision::Bf16),
            );
            let expert = ffn_gemms(h, model.moe.expert_intermediate_size);
            let shared = r.grouped_gemm(&[m], &expert, d.expert_precision);
            c.add(
                OpClass::DenseGemm,
                shared.times(model.moe.shared_experts as f64),
            );
            let routed = r.grouped_gemm(
                &self.tokens_per_local_expert(m),
                &expert,
                d.expert_precision,
            );
            c.add(OpClass::MoeGroupGemm, routed);
        } else {
            for (n, k) in ffn_gemms(h, model.dense_intermediate_size) {
                c.add(
                    OpClass::DenseGemm,
                    r.gemm(m, n.div_ceil(self.tp), k, d.other_precision),
                );
            }
        }
        c
    }

    /// Decode attention of one layer, averaged over the model's layers: sliding-window layers
    /// (gpt-oss) read no more than their window of each request's cache.
    fn attention(&self, queries: u64) -> OpCost {
        let (full, windowed, window) = self.model.attention_layer_split();
        let at = |context: u64| {
            self.roofline.decode_attention(
                self.model,
                self.load.batch,
                context,
                queries,
                self.d.kv_precision,
                self.tp,
            )
        };
        let mut cost = at(self.load.context).times(full as f64);
        cost += at(self.load.context.min(window)).times(windowed as f64);
        cost.times(1.0 / self.model.layers as f64)
    }

    /// Prefill attention of one layer for the iteration's chunk, averaged over the model's
    /// layers; a sliding-window layer attends to at most its window of earlier tokens.
    fn prefill_attention(&self, p: PrefillChunk) -> OpCost {
        let (full, windowed, window) = self.model.attention_layer_split();
        let at = |prefix: u64| {
            self.roofline.prefill_attention(
                self.model,
                p.tokens,
                prefix,
                self.d.kv_precision,
                self.tp,
            )
        };
        let mut cost = at(p.prefix).times(full as f64);
        cost += at(p.prefix.min(window)).times(windowed as f64);
        cost.times(1.0 / self.model.layers as f64)
    }

    /// The LM head over `m` tokens, then sampling, which reads the FP32 logits once.
    fn lm_head_and_sampling(&self, m: u64) -> ClassCosts {
        let (model, r) = (self.model, self.roofline);
        let vocab = model.vocab_size.div_ceil(self.tp);
        let mut c = ClassCosts::default();
        c.add(
            OpClass::DenseGemm,
            r.gemm(m, vocab, model.hidden_size, Precision::Bf16),
        );
        c.add(OpClass::Other, r.memory_pass(4.0 * (m * vocab) as f64));
        c
    }
}

/// Tokens a request gains per step with `mtp` drafts, each accepted with `acceptance` given
/// that the ones before it were: 1 + a + a^2 + ... + a^mtp.
pub fn tokens_per_step(mtp: u64, acceptance: f64) -> f64 {
    (0..=mtp).map(|i| acceptance.powi(i as i32)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn setup(ep: u64, slots: u64) -> (ModelConfig, GpuSpec, Deployment) {
        (
            testing::model("deepseek-r1"),
            testing::gpu("b200-gb200"),
            testing::nvfp4_deployment(ep, slots),
        )
    }

    const LOAD: StepLoad = StepLoad {
        batch: 32,
        context: 2048,
        mtp: 1,
        prefill: &[],
    };

    #[test]
    fn tokens_per_expert_sum_to_tokens_times_top_k() {
        for (ep, slots) in [(8, 256), (16, 256), (32, 288), (64, 256)] {
            let (m, g, d) = setup(ep, slots);
            let cost = iteration_cost(&m, &g, &d, &LOAD);
            let tokens = LOAD.batch * (1 + LOAD.mtp);
            // Balanced routing: this rank's share of all ranks' assignments.
            let expected = tokens * 8 * ep * (slots / ep) / slots;
            assert_eq!(
                cost.tokens_per_expert.iter().sum::<u64>(),
                expected,
                "EP{ep}"
            );
            assert_eq!(cost.tokens_per_expert.len() as u64, slots / ep);
            let (lo, hi) = (
                cost.tokens_per_expert.iter().min().unwrap(),
                cost.tokens_per_expert.iter().max().unwrap(),
            );
            assert!(hi - lo <= 1);
        }
    }

    #[test]
    fn wider_ep_reads_fewer_expert_weights_per_step() {
        let (m, g, d8) = setup(8, 256);
        let (_, _, d32) = setup(32, 288);
        let ep8 = iteration_cost(&m, &g, &d8, &LOAD);
        let ep32 = iteration_cost(&m, &g, &d32, &LOAD);
        let moe = |c: &StepCost| c.by_class[&OpClass::MoeGroupGemm];
        // Weight bytes scale with experts per GPU (32 vs 9); both memory-bound at this batch.
        let ratio = moe(&ep8).bytes / moe(&ep32).bytes;
        assert!(ratio > 3.0 && ratio < 32.0 / 9.0 + 0.01, "{ratio}");
        assert!(moe(&ep8).memory_bound() && moe(&ep32).memory_bound());
        assert!(moe(&ep32).seconds < moe(&ep8).seconds / 3.0);
        // Everything but the routed experts is the same work on every rank (DP attention).
        for class in [OpClass::Attention, OpClass::DenseGemm] {
            assert_eq!(ep8.by_class[&class], ep32.by_class[&class], "{class:?}");
        }
        assert_eq!(ep8.by_class[&OpClass::Dispatch], OpCost::default());
        assert!(ep32.total().seconds < ep8.total().seconds);
    }

    #[test]
    fn step_time_grows_with_batch_and_context() {
        let (m, g, d) = setup(32, 288);
        let cost = |batch, context| {
            iteration_cost(
                &m,
                &g,
                &d,
                &StepLoad {
                    batch,
                    context,
                    mtp: 1,
                    prefill: &[],
                },
            )
        };
        let t = |batch, context| cost(batch, context).total().seconds;
        assert!(t(64, 2048) > t(32, 2048));
        assert!(t(32, 8192) > t(32, 2048));
        // Attention reads every request's KV cache: linear in batch x context.
        let attention = |batch, context| cost(batch, context).by_class[&OpClass::Attention].bytes;
        assert_eq!(attention(64, 2048), 2.0 * attention(32, 2048));
        assert_eq!(attention(32, 4096), 2.0 * attention(32, 2048));
    }

    #[test]
    fn sliding_window_layers_read_only_their_window() {
        let oss = testing::model("gpt-oss-120b");
        let h200 = testing::gpu("h200-sxm");
        let d = Deployment {
            ep: 8,
            slots: 128,
            expert_precision: Precision::Mxfp4,
            other_precision: Precision::Bf16,
            mtp: false,
            ..setup(8, 256).2
        };
        let bytes = |context| {
            iteration_cost(
                &oss,
                &h200,
                &d,
                &StepLoad {
                    batch: 16,
                    context,
                    mtp: 0,
                    prefill: &[],
                },
            )
            .by_class[&OpClass::Attention]
                .bytes
        };
        // 18 full layers grow with the context; 18 windowed layers stop at 128 tokens.
        let per_token_layer = 2.0 * 8.0 * 64.0;
        assert!(
            (bytes(4096) - 16.0 * per_token_layer * (18.0 * 4096.0 + 18.0 * 128.0)).abs() < 1.0
        );
        assert!((bytes(100) - 16.0 * per_token_layer * 36.0 * 100.0).abs() < 1.0);
    }

    fn with_chunk(chunk: &[PrefillChunk], batch: u64) -> StepLoad<'_> {
        StepLoad {
            batch,
            context: 2048,
            mtp: 1,
            prefill: chunk,
        }
    }

    fn chunk(tokens: u64, prefix: u64) -> [PrefillChunk; 1] {
        [PrefillChunk { tokens, prefix }]
    }

    #[test]
    fn a_prefill_chunk_shares_the_weight_reads_of_decode() {
        let (m, g, d) = setup(8, 256);
        let total = |load: &StepLoad| iteration_cost(&m, &g, &d, load).total().seconds;
        let decode = total(&LOAD);
        let prefill = total(&with_chunk(&chunk(512, 0), 0));
        let mixed = total(&with_chunk(&chunk(512, 0), LOAD.batch));
        assert!(
            mixed < decode + prefill,
            "weights are read once: {mixed} vs {decode} + {prefill}"
        );
        assert!(mixed > decode.max(prefill));
    }

    #[test]
    fn prefill_is_quadratic_in_context_and_compute_bound_when_large() {
        let (m, g, d) = setup(8, 256);
        let attention = |prefix| {
            iteration_cost(&m, &g, &d, &with_chunk(&chunk(2048, prefix), 0)).by_class
                [&OpClass::Attention]
                .flops
        };
        let pairs = |prefix: f64| 2048.0 * prefix + 2048.0 * 2049.0 / 2.0;
        assert!((attention(6144) / attention(0) - pairs(6144.0) / pairs(0.0)).abs() < 1e-9);
        let big = iteration_cost(&m, &g, &d, &with_chunk(&chunk(8192, 0), 0));
        assert!(!big.by_class[&OpClass::MoeGroupGemm].memory_bound());
        assert!(!big.by_class[&OpClass::DenseGemm].memory_bound());
        assert_eq!(big.tokens_per_expert.iter().sum::<u64>(), 8192 * 8);
    }

    #[test]
    fn two_chunks_cost_their_own_attention_and_share_the_gemms() {
        let (m, g, d) = setup(8, 256);
        let cost = |c: &[PrefillChunk]| iteration_cost(&m, &g, &d, &with_chunk(c, 0));
        let both = [chunk(1024, 0)[0], chunk(1024, 0)[0]];
        let attention = |c: &StepCost| c.by_class[&OpClass::Attention].flops;
        let (one, two, merged) = (cost(&chunk(1024, 0)), cost(&both), cost(&chunk(2048, 0)));
        assert!((attention(&two) / attention(&one) - 2.0).abs() < 1e-9);
        assert!(
            attention(&merged) > attention(&two),
            "one long prompt is quadratic"
        );
        assert_eq!(two.tokens_per_expert, merged.tokens_per_expert);
    }

    #[test]
    fn mtp_tokens_per_step() {
        assert_eq!(tokens_per_step(0, 0.85), 1.0);
        assert!((tokens_per_step(1, 0.85) - 1.85).abs() < 1e-12);
        assert!((tokens_per_step(2, 0.5) - 1.75).abs() < 1e-12);
    }
}
