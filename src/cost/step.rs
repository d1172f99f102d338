//! One iteration of one rank (decode, optionally with a prefill chunk mixed in), priced op
//! by op and summed by op class, with balanced routing (every expert slot gets the same
//! share of tokens). It shows where the time of a
//! step goes and how it moves from EP8 to EP32: the MoE GroupGEMM reads the weights of every
//! local expert that gets a token, so fewer experts per GPU, fewer bytes per step.

use super::compute::{OpCost, ffn_gemms};
use super::kernels::{Kernels, Priced, balanced};
use super::profile::{MoeShape, Source};
use crate::model::memory::{AttentionLayout, Deployment};
use crate::model::{ModelConfig, Precision, Usage};
use serde::Serialize;
use std::collections::BTreeMap;

/// How many op classes there are.
const CLASSES: usize = 7;

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
    /// All-reduces of a tensor-parallel group: after attention, and after the FFN or experts.
    TpAllReduce,
    /// Routers, norms, sampling, fixed per-iteration overhead.
    Other,
}

impl OpClass {
    fn index(self) -> usize {
        self as usize
    }

    pub const ALL: [OpClass; CLASSES] = [
        OpClass::Attention,
        OpClass::DenseGemm,
        OpClass::MoeGroupGemm,
        OpClass::Dispatch,
        OpClass::Combine,
        OpClass::TpAllReduce,
        OpClass::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            OpClass::Attention => "attention",
            OpClass::DenseGemm => "dense GEMMs",
            OpClass::MoeGroupGemm => "MoE GroupGEMM",
            OpClass::Dispatch => "dispatch",
            OpClass::Combine => "combine",
            OpClass::TpAllReduce => "TP all-reduce",
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
    /// The least measured source among each class's ops (classes with no op are absent).
    pub sources: BTreeMap<OpClass, Source>,
    /// Every op, merged over layers; empty unless asked for ([`iteration_detail`]).
    pub ops: Vec<OpLine>,
    /// The routed experts of the main model's MoE layers under balanced routing, seconds
    /// (the serving loop replaces them with the routing draw's).
    pub routed_main_s: f64,
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

/// One op of the step as priced: name, class, how often it ran, its total time and source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpLine {
    pub op: &'static str,
    pub class: OpClass,
    /// Calls per iteration (layers times runs per layer).
    pub calls: f64,
    pub seconds: f64,
    pub source: Source,
}

/// Prices one decode iteration of one rank. Communication (dispatch, combine) is not part of
/// the compute model: those classes stay at zero here. Layers of one kind cost the same, so
/// one dense and one MoE layer are priced and multiplied by their counts.
pub fn iteration_cost(
    model: &ModelConfig,
    kernels: &Kernels,
    d: &Deployment,
    load: &StepLoad,
) -> StepCost {
    price(model, kernels, d, load, false)
}

/// [`iteration_cost`] with every op listed in [`StepCost::ops`] (for `epsim step`).
pub fn iteration_detail(
    model: &ModelConfig,
    kernels: &Kernels,
    d: &Deployment,
    load: &StepLoad,
) -> StepCost {
    price(model, kernels, d, load, true)
}

/// The parts of iterations already priced: the context-independent part by (tokens, batch,
/// prefill chunks), since the serving loop prices many ranks with equal token counts and
/// differing contexts; and a decode rank's context part by (batch, mean context), which
/// hovers near its steady state (9 in 10 lookups hit at EP32). A hit returns exactly what
/// pricing would, so results do not depend on it.
#[derive(Debug, Default)]
pub struct StepMemo {
    entries: Vec<(TokenCounts, TokenPart)>,
    /// Decode ranks' context parts (no prompt chunks), by (batch, context) hashed into
    /// 2^[`CONTEXT_SLOT_BITS`] slots, each holding the last one priced there.
    contexts: Vec<Option<((u64, u64), ContextPart)>>,
}

impl StepMemo {
    /// A decode rank's context part, from the memo or priced (and kept).
    fn context_part(&mut self, step: &Step, load: &StepLoad) -> ContextPart {
        if self.contexts.is_empty() {
            self.contexts = vec![None; 1 << CONTEXT_SLOT_BITS];
        }
        let key = (load.batch, load.context);
        // Fibonacci hashing of the pair: neighbouring pairs land in different slots.
        const PHI: u64 = 0x9E37_79B9_7F4A_7C15;
        let mixed = (load.batch.wrapping_mul(PHI) ^ load.context).wrapping_mul(PHI);
        let slot = (mixed >> (u64::BITS - CONTEXT_SLOT_BITS)) as usize;
        match self.contexts[slot] {
            Some((k, v)) if k == key => v,
            _ => {
                let v = step.context_seconds();
                self.contexts[slot] = Some((key, v));
                v
            }
        }
    }
}

/// The context part: (seconds, of which the main MoE layers' attention blocks).
type ContextPart = (f64, f64);

/// Slots of the context-part memo, as bits: the ranks of a decode instance sit at a few
/// hundred (batch, mean context) pairs near their steady state.
const CONTEXT_SLOT_BITS: u32 = 10;

/// (tokens through the GEMMs, decode batch, prefill chunks).
type TokenCounts = (u64, u64, u64);
/// The token-count part: (seconds, of which the main layers' routed experts, of which the
/// MoE layers' FFN side with their overhead).
type TokenPart = (f64, f64, f64);

/// Distinct token counts kept: a decode instance cycles through a few batch sizes.
const MEMO_ENTRIES: usize = 64;

/// An iteration's seconds on one rank, split the way micro-batch overlap needs them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IterationSeconds {
    pub total_s: f64,
    /// The main model's routed experts (all MoE layers).
    pub routed_main_s: f64,
    /// Everything inside the main model's MoE layers (attention block, router, shared
    /// expert, routed experts, TP all-reduces, per-layer overhead): the part two
    /// micro-batches can interleave with the all-to-all. The rest (dense layers, LM head,
    /// MTP drafts) runs once per micro-batch with nothing to hide.
    pub moe_layers_s: f64,
}

/// The seconds of [`iteration_cost`], split as [`IterationSeconds`], for the serving loop's
/// inner call: no per-class sums, the token-count part priced once per distinct count.
pub fn iteration_seconds(
    model: &ModelConfig,
    kernels: &Kernels,
    d: &Deployment,
    load: &StepLoad,
    memo: &mut StepMemo,
) -> IterationSeconds {
    let step = Step::new(model, kernels, d, load, false);
    let key = (step.tokens(), load.batch, step.chunks());
    let (token_s, routed_s, moe_ffn_s) = match memo.entries.iter().find(|(k, _)| *k == key) {
        Some(&(_, v)) => v,
        None => {
            let (part, routed, moe_ffn) = step.token_part();
            let v = (part.seconds(), routed, moe_ffn);
            if memo.entries.len() == MEMO_ENTRIES {
                memo.entries.remove(0);
            }
            memo.entries.push((key, v));
            v
        }
    };
    let (context_s, moe_attention_s) = if load.prefill.is_empty() {
        memo.context_part(&step, load)
    } else {
        step.context_seconds()
    };
    IterationSeconds {
        total_s: context_s + token_s,
        routed_main_s: routed_s,
        moe_layers_s: moe_attention_s + moe_ffn_s,
    }
}

fn price(
    model: &ModelConfig,
    kernels: &Kernels,
    d: &Deployment,
    load: &StepLoad,
    detail: bool,
) -> StepCost {
    let step = Step::new(model, kernels, d, load, detail);
    let (mut total, _) = step.context_part();
    let (tokens_part, routed_main_s, _) = step.token_part();
    total.add_all(&tokens_part, 1);
    StepCost {
        by_class: OpClass::ALL
            .iter()
            .map(|&c| (c, total.costs[c.index()]))
            .collect(),
        sources: OpClass::ALL
            .iter()
            .filter_map(|&c| total.sources[c.index()].map(|s| (c, s)))
            .collect(),
        ops: total.log.unwrap_or_default(),
        routed_main_s,
        tokens_per_expert: step.tokens_per_local_expert(step.tokens()),
        experts_per_gpu: step.experts_per_gpu(),
    }
}

/// Costs per op class, indexed by [`OpClass::index`], the weakest source of each class,
/// and (when asked) every op.
#[derive(Default)]
struct ClassCosts {
    costs: [OpCost; CLASSES],
    sources: [Option<Source>; CLASSES],
    log: Option<Vec<OpLine>>,
}

impl ClassCosts {
    fn seconds(&self) -> f64 {
        self.costs.iter().map(|c| c.seconds).sum()
    }

    fn add(&mut self, op: &'static str, class: OpClass, p: Priced) {
        let i = class.index();
        self.costs[i] += p.cost;
        self.sources[i] = weaker(self.sources[i], Some(p.source));
        if let Some(log) = &mut self.log {
            log.push(OpLine {
                op,
                class,
                calls: 1.0,
                seconds: p.cost.seconds,
                source: p.source,
            });
        }
    }

    /// Adds `n` copies of `other`.
    fn add_all(&mut self, other: &ClassCosts, n: u64) {
        if n == 0 {
            return;
        }
        for (mine, theirs) in self.costs.iter_mut().zip(&other.costs) {
            *mine += theirs.times(n as f64);
        }
        for (mine, theirs) in self.sources.iter_mut().zip(&other.sources) {
            *mine = weaker(*mine, *theirs);
        }
        if let (Some(log), Some(theirs)) = (&mut self.log, &other.log) {
            for line in theirs {
                let scaled = OpLine {
                    calls: line.calls * n as f64,
                    seconds: line.seconds * n as f64,
                    ..line.clone()
                };
                match log
                    .iter_mut()
                    .find(|l| l.op == line.op && l.source == line.source)
                {
                    Some(l) => {
                        l.calls += scaled.calls;
                        l.seconds += scaled.seconds;
                    }
                    None => log.push(scaled),
                }
            }
        }
    }
}

/// The less measured of two sources, either of which may be absent.
fn weaker(a: Option<Source>, b: Option<Source>) -> Option<Source> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.worst(b)),
        (a, b) => a.or(b),
    }
}

struct Step<'a> {
    kernels: &'a Kernels<'a>,
    model: &'a ModelConfig,
    d: &'a Deployment,
    load: &'a StepLoad<'a>,
    /// Ranks sharing one request batch's attention.
    tp: u64,
    detail: bool,
}

impl<'a> Step<'a> {
    fn new(
        model: &'a ModelConfig,
        kernels: &'a Kernels<'a>,
        d: &'a Deployment,
        load: &'a StepLoad<'a>,
        detail: bool,
    ) -> Self {
        Step {
            kernels,
            model,
            d,
            load,
            tp: match d.attention {
                AttentionLayout::Dp => 1,
                AttentionLayout::Tp(n) => n.max(1),
            },
            detail,
        }
    }

    fn costs(&self) -> ClassCosts {
        ClassCosts {
            log: self.detail.then(Vec::new),
            ..ClassCosts::default()
        }
    }

    /// Tokens through the layers' GEMMs: decode tokens (verified drafts included) and
    /// prompt chunks together, so weights are read once.
    fn tokens(&self) -> u64 {
        let chunk: u64 = self.load.prefill.iter().map(|p| p.tokens).sum();
        self.load
            .batch
            .saturating_mul(1 + self.load.mtp)
            .saturating_add(chunk)
    }

    /// Prompt chunks of the iteration (each gets its next token from the LM head).
    fn chunks(&self) -> u64 {
        self.load.prefill.iter().filter(|p| p.tokens > 0).count() as u64
    }

    /// [`Step::context_part`] in seconds: (all of it, the main MoE layers' share).
    fn context_seconds(&self) -> ContextPart {
        let (c, moe_attention_s) = self.context_part();
        (c.seconds(), moe_attention_s)
    }

    /// What depends on the requests' contexts: every layer's attention block, the main
    /// model's and the MTP drafts'; and the seconds of those in the main MoE layers.
    fn context_part(&self) -> (ClassCosts, f64) {
        let mut c = self.costs();
        let layer = self.attention_block(self.tokens(), 1 + self.load.mtp);
        c.add_all(&layer, self.model.layers);
        c.add_all(&self.attention_block(self.load.batch, 1), self.load.mtp);
        (c, layer.seconds() * self.model.moe_layers() as f64)
    }

    /// What depends on token counts alone: FFNs and experts, LM heads, MTP projections and
    /// the per-layer overhead; and, seconds, the main layers' routed experts and the main
    /// MoE layers' whole FFN side with their overhead.
    fn token_part(&self) -> (ClassCosts, f64, f64) {
        let (model, load, k) = (self.model, self.load, self.kernels);
        let tokens = self.tokens();
        let mut total = self.costs();
        total.add_all(&self.ffn(tokens, false), model.dense_layers);
        let moe = self.ffn(tokens, true);
        let routed_main_s =
            moe.costs[OpClass::MoeGroupGemm.index()].seconds * model.moe_layers() as f64;
        total.add_all(&moe, model.moe_layers());
        // The LM head runs for every decode token, and once for a chunk (its next token).
        let heads = load.batch.saturating_mul(1 + load.mtp) + self.chunks();
        total.add_all(&self.lm_head_and_sampling(heads), 1);
        // Each MTP draft: project [embedding; hidden] (2h -> h), one MoE layer, the LM head.
        let h = model.hidden_size;
        let mut draft = self.ffn(load.batch, true);
        draft.add(
            "mtp projection",
            OpClass::DenseGemm,
            k.gemm(load.batch, h, 2 * h, self.d.other_precision),
        );
        draft.add_all(&self.lm_head_and_sampling(load.batch), 1);
        total.add_all(&draft, load.mtp);
        let overhead = OpCost {
            seconds: k.roofline.layer_overhead_s() * (model.layers + load.mtp) as f64,
            ..OpCost::default()
        };
        total.add(
            "layer overhead (named constant)",
            OpClass::Other,
            Priced::roofline(overhead),
        );
        let moe_ffn_s = (moe.seconds() + k.roofline.layer_overhead_s()) * model.moe_layers() as f64;
        (total, routed_main_s, moe_ffn_s)
    }

    fn experts_per_gpu(&self) -> u64 {
        self.d.slots / self.d.ep.max(1)
    }

    /// Tokens reaching each of this rank's experts when the attention group has `tokens`:
    /// every rank sends its own tokens (a TP group splits them over its ranks), each to
    /// top_k slots, spread evenly over all slots of the EP group.
    fn tokens_per_local_expert(&self, tokens: u64) -> Vec<u64> {
        // With tensor-parallel experts an expert group computes a slice of its every token:
        // a data-parallel rank's tokens are gathered over the group; a TP attention group
        // that is the expert group shares its tokens already.
        let per_rank = match (self.tp, self.d.moe_tp) {
            (tp, 1) => tokens.div_ceil(tp),
            (1, n) => tokens.saturating_mul(n),
            _ => tokens,
        };
        let experts = self.experts_per_gpu();
        let picks = per_rank
            .saturating_mul(self.model.moe.experts_per_token)
            .saturating_mul(self.d.ep);
        let routed_here =
            (u128::from(picks) * u128::from(experts) / u128::from(self.d.slots.max(1))) as u64;
        balanced(routed_here, experts)
    }

    /// The attention half of one transformer layer (through the post-attention norm) for `m`
    /// tokens of the batch, `queries` per request: the same in dense and MoE layers.
    fn attention_block(&self, m: u64, queries: u64) -> ClassCosts {
        let (model, d, k) = (self.model, self.d, self.kernels);
        let h = model.hidden_size;
        let mut c = self.costs();
        // Draft layers (m == batch) see no prompt chunks.
        let chunks = if m > self.load.batch {
            self.load.prefill
        } else {
            &[]
        };
        let hidden_bytes = Precision::Bf16.bytes((m * h) as f64, Usage::Activations);
        if !self.measured_attention_block(&mut c, queries, chunks) {
            for (n, kk) in model.attention_projections(self.tp) {
                c.add(
                    "attention projection",
                    OpClass::DenseGemm,
                    k.gemm(m, n, kk, d.other_precision),
                );
            }
            c.add(
                "attention",
                OpClass::Attention,
                Priced::roofline(self.attention(queries)),
            );
            for &p in chunks.iter().filter(|p| p.tokens > 0) {
                c.add(
                    "prefill attention",
                    OpClass::Attention,
                    Priced::roofline(self.prefill_attention(p)),
                );
            }
            // The input RMS norm, reading and writing the hidden state.
            c.add(
                "rms norm",
                OpClass::Other,
                Priced::roofline(k.roofline.memory_pass(2.0 * hidden_bytes)),
            );
        }
        // Tensor-parallel attention sums its heads' output projections.
        if self.tp > 1 {
            c.add(
                "attention all-reduce",
                OpClass::TpAllReduce,
                k.all_reduce(self.tp, m * h),
            );
        }
        // The post-attention RMS norm.
        c.add(
            "rms norm",
            OpClass::Other,
            Priced::roofline(k.roofline.memory_pass(2.0 * hidden_bytes)),
        );
        c
    }

    /// The FFN half of one layer for `m` tokens: routed and shared experts, or a dense FFN.
    fn ffn(&self, m: u64, moe: bool) -> ClassCosts {
        let (model, d, k) = (self.model, self.d, self.kernels);
        let h = model.hidden_size;
        let mut c = self.costs();
        if moe {
            c.add(
                "router",
                OpClass::Other,
                k.gemm(m, model.moe.routed_experts, h, Precision::Bf16),
            );
            // A tensor-parallel group splits the shared expert's intermediate dimension.
            let [(n1, k1), (n2, k2)] = ffn_gemms(h, model.moe.expert_intermediate_size);
            let (n1, k2) = (n1.div_ceil(self.tp), k2.div_ceil(self.tp));
            for _ in 0..model.moe.shared_experts {
                c.add(
                    "shared expert fc1",
                    OpClass::DenseGemm,
                    k.gemm(m, n1, k1, d.expert_precision),
                );
                c.add(
                    "shared expert fc2",
                    OpClass::DenseGemm,
                    k.gemm(m, n2, k2, d.expert_precision),
                );
            }
            let routed = k.routed_moe_split(
                MoeShape::of(model, d.expert_precision),
                &self.tokens_per_local_expert(m),
                d.moe_tp,
            );
            c.add("routed experts (fused MoE)", OpClass::MoeGroupGemm, routed);
            // Data-parallel attention with tensor-parallel experts: each GPU's tokens are
            // gathered by its expert group and the partial outputs reduce-scattered back,
            // together the traffic of one all-reduce of the group's tokens.
            if self.tp == 1 && d.moe_tp > 1 {
                c.add(
                    "MoE TP gather and reduce-scatter",
                    OpClass::TpAllReduce,
                    k.all_reduce(d.moe_tp, m.saturating_mul(d.moe_tp) * h),
                );
            }
        } else {
            let [(n1, k1), (n2, k2)] = ffn_gemms(h, model.dense_intermediate_size);
            let (n1, k2) = (n1.div_ceil(self.tp), k2.div_ceil(self.tp));
            for (n, kk) in [(n1, k1), (n2, k2)] {
                c.add(
                    "dense FFN",
                    OpClass::DenseGemm,
                    k.gemm(m, n, kk, d.other_precision),
                );
            }
        }
        // The group's partial outputs (split FFN, local experts) are summed.
        if self.tp > 1 {
            c.add(
                "FFN all-reduce",
                OpClass::TpAllReduce,
                k.all_reduce(self.tp, m * h),
            );
        }
        c
    }

    /// Prices the whole attention block (projections, norms, RoPE, attention) from the
    /// profile's measured MLA blocks, where it has this model's; false when it does not.
    fn measured_attention_block(
        &self,
        c: &mut ClassCosts,
        queries: u64,
        chunks: &[PrefillChunk],
    ) -> bool {
        let (k, d) = (self.kernels, self.d);
        let formats = (d.kv_precision, d.other_precision);
        let mut parts = Vec::with_capacity(1 + chunks.len());
        if self.load.batch > 0 {
            let Some(p) = k.mla_decode(
                self.model,
                self.load.batch,
                self.load.context,
                queries,
                self.tp,
                formats,
            ) else {
                return false;
            };
            parts.push(("MLA decode block", p));
        }
        for p in chunks.iter().filter(|p| p.tokens > 0) {
            let Some(block) = k.mla_prefill(self.model, 1, p.tokens, p.prefix, self.tp, formats)
            else {
                return false;
            };
            parts.push(("MLA prefill block", block));
        }
        if parts.is_empty() {
            return false;
        }
        for (op, p) in parts {
            c.add(op, OpClass::Attention, p);
        }
        true
    }
    /// Decode attention of one layer, averaged over the model's layers: sliding-window layers
    /// (gpt-oss) read no more than their window of each request's cache.
    fn attention(&self, queries: u64) -> OpCost {
        let (full, windowed, window) = self.model.attention_layer_split();
        let at = |context: u64| {
            self.kernels.roofline.decode_attention(
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
            self.kernels.roofline.prefill_attention(
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
        let (model, k) = (self.model, self.kernels);
        let vocab = model.vocab_size.div_ceil(self.tp);
        let mut c = self.costs();
        c.add(
            "LM head",
            OpClass::DenseGemm,
            k.gemm(m, vocab, model.hidden_size, Precision::Bf16),
        );
        c.add(
            "sampling",
            OpClass::Other,
            Priced::roofline(k.roofline.memory_pass(4.0 * (m * vocab) as f64)),
        );
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::GpuSpec;
    use crate::testing;

    /// The roofline alone: these tests check the fallback's structure (bytes, FLOPs, bounds).
    fn roofline_cost(m: &ModelConfig, g: &GpuSpec, d: &Deployment, load: &StepLoad) -> StepCost {
        iteration_cost(m, &Kernels::roofline_only(g), d, load)
    }

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
            let cost = roofline_cost(&m, &g, &d, &LOAD);
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
        let ep8 = roofline_cost(&m, &g, &d8, &LOAD);
        let ep32 = roofline_cost(&m, &g, &d32, &LOAD);
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
            roofline_cost(
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
            moe_tp: 1,
            slots: 128,
            expert_precision: Precision::Mxfp4,
            other_precision: Precision::Bf16,
            mtp: false,
            ..setup(8, 256).2
        };
        let bytes = |context| {
            roofline_cost(
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
        let total = |load: &StepLoad| roofline_cost(&m, &g, &d, load).total().seconds;
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
            roofline_cost(&m, &g, &d, &with_chunk(&chunk(2048, prefix), 0)).by_class
                [&OpClass::Attention]
                .flops
        };
        let pairs = |prefix: f64| 2048.0 * prefix + 2048.0 * 2049.0 / 2.0;
        assert!((attention(6144) / attention(0) - pairs(6144.0) / pairs(0.0)).abs() < 1e-9);
        let big = roofline_cost(&m, &g, &d, &with_chunk(&chunk(8192, 0), 0));
        assert!(!big.by_class[&OpClass::MoeGroupGemm].memory_bound());
        assert!(!big.by_class[&OpClass::DenseGemm].memory_bound());
        assert_eq!(big.tokens_per_expert.iter().sum::<u64>(), 8192 * 8);
    }

    #[test]
    fn two_chunks_cost_their_own_attention_and_share_the_gemms() {
        let (m, g, d) = setup(8, 256);
        let cost = |c: &[PrefillChunk]| roofline_cost(&m, &g, &d, &with_chunk(c, 0));
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
    fn the_profile_prices_the_deepseek_layer_from_measurements() {
        let (m, g, d) = setup(8, 256);
        let kernels = Kernels::for_gpu(&g).unwrap();
        let measured = iteration_detail(&m, &kernels, &d, &LOAD);
        let roofline = roofline_cost(&m, &g, &d, &LOAD);
        for class in [OpClass::Attention, OpClass::MoeGroupGemm] {
            assert!(
                measured.sources[&class] <= Source::Interpolated,
                "{class:?}"
            );
            // Measured kernels are slower than the roofline at decode sizes.
            assert!(
                measured.by_class[&class].seconds > roofline.by_class[&class].seconds,
                "{class:?}"
            );
        }
        assert_eq!(roofline.sources[&OpClass::MoeGroupGemm], Source::Roofline);
        // The detail lists every op once per (op, source), with its calls per iteration.
        let routed = measured
            .ops
            .iter()
            .find(|o| o.op == "routed experts (fused MoE)")
            .unwrap();
        assert_eq!(
            routed.calls,
            58.0 + 1.0,
            "58 MoE layers and one MTP draft layer"
        );
        let sum: f64 = measured.ops.iter().map(|o| o.seconds).sum();
        assert!((sum / measured.total().seconds - 1.0).abs() < 1e-9);
        assert!(iteration_cost(&m, &kernels, &d, &LOAD).ops.is_empty());
    }

    #[test]
    fn the_serving_loops_seconds_equal_the_full_price() {
        let (m, g, d) = setup(8, 256);
        let kernels = Kernels::for_gpu(&g).unwrap();
        let mut memo = StepMemo::default();
        let chunk = chunk(512, 1024);
        for load in [LOAD, with_chunk(&chunk, 16), with_chunk(&chunk, 0), LOAD] {
            let full = iteration_cost(&m, &kernels, &d, &load);
            let s = iteration_seconds(&m, &kernels, &d, &load, &mut memo);
            assert!((s.total_s / full.total().seconds - 1.0).abs() < 1e-12);
            assert_eq!(s.routed_main_s, full.routed_main_s);
            // The MoE layers hold the routed experts and most, not all, of the iteration:
            // the dense layers, LM head and MTP draft are outside.
            assert!(s.moe_layers_s > s.routed_main_s && s.moe_layers_s < 0.97 * s.total_s);
            assert!(s.moe_layers_s > 0.7 * s.total_s, "{s:?}");
        }
        assert_eq!(memo.entries.len(), 3, "the repeated load was a hit");
    }

    /// Decode ranks' context parts come from the memo exactly as priced, whichever pairs
    /// share a slot (a thousand pairs over 1,024 slots collide), hit or not.
    #[test]
    fn remembered_context_parts_are_the_priced_ones() {
        let (m, g, d) = setup(8, 256);
        let kernels = Kernels::for_gpu(&g).unwrap();
        let mut memo = StepMemo::default();
        let loads: Vec<StepLoad> = (1..=40)
            .flat_map(|batch| {
                (0..25).map(move |i| StepLoad {
                    batch,
                    context: 1000 + 37 * i,
                    ..LOAD
                })
            })
            .collect();
        for _ in 0..2 {
            for load in &loads {
                let remembered = iteration_seconds(&m, &kernels, &d, load, &mut memo);
                let priced = iteration_seconds(&m, &kernels, &d, load, &mut Default::default());
                assert_eq!(remembered, priced, "{load:?}");
            }
        }
        let kept = memo.contexts.iter().flatten().count();
        assert!(kept > 500 && kept < loads.len(), "{kept}");
    }

    /// Tensor-parallel experts (SGLang's `--tp 8` without EP): each GPU runs every token
    /// routed to its group through a slice of each expert, scaled from the measured
    /// full-width block, and data-parallel ranks gather and reduce-scatter over the group.
    #[test]
    fn tensor_parallel_experts_split_every_expert_and_gather_over_the_group() {
        let (m, g, _) = setup(8, 256);
        let kernels = Kernels::for_gpu(&g).unwrap();
        let ep8 = testing::nvfp4_deployment(8, 256);
        let tp8 = Deployment {
            ep: 1,
            moe_tp: 8,
            ..ep8
        };
        let load = StepLoad {
            batch: 64,
            context: 2048,
            mtp: 0,
            prefill: &[],
        };
        let (a, b) = (
            iteration_detail(&m, &kernels, &ep8, &load),
            iteration_detail(&m, &kernels, &tp8, &load),
        );
        let op = |c: &StepCost, name: &str| c.ops.iter().find(|o| o.op == name).cloned();
        let routed = op(&b, "routed experts (fused MoE)").unwrap();
        assert_eq!(routed.source, Source::Extrapolated);
        assert!(op(&a, "MoE TP gather and reduce-scatter").is_none());
        let gather = op(&b, "MoE TP gather and reduce-scatter").unwrap();
        assert_eq!(gather.calls, 58.0);
        // The same expert bytes per GPU: 32 whole experts, or an eighth of 256.
        let plan = |d: &Deployment| crate::model::memory::plan(&m, &g, d, 2048, 0).unwrap();
        let w = |d: &Deployment| plan(d).weights.routed_experts;
        assert!((w(&ep8) / w(&tp8) - 1.0).abs() < 1e-12);
        // Every token's 8 experts, each an eighth as wide: the rows are the group's 8 x 64
        // tokens times top-8 over 256 experts.
        assert_eq!(b.tokens_per_expert.iter().sum::<u64>(), 8 * 64 * 8);
    }

    #[test]
    fn tensor_parallel_attention_pays_two_all_reduces_per_layer_and_splits_the_shared_expert() {
        let (m, g, _) = setup(8, 256);
        let kernels = Kernels::for_gpu(&g).unwrap();
        let d = |attention| Deployment {
            attention,
            ..testing::nvfp4_deployment(8, 256)
        };
        let load = StepLoad {
            batch: 8,
            context: 2048,
            mtp: 0,
            prefill: &[],
        };
        let tp = iteration_detail(&m, &kernels, &d(AttentionLayout::Tp(8)), &load);
        let dp = iteration_detail(&m, &kernels, &d(AttentionLayout::Dp), &load);
        let op = |c: &StepCost, name: &str| c.ops.iter().find(|o| o.op == name).cloned();
        let reduces = op(&tp, "attention all-reduce").unwrap();
        assert_eq!(reduces.calls, 61.0);
        assert_eq!(op(&tp, "FFN all-reduce").unwrap().calls, 61.0);
        assert!(op(&dp, "attention all-reduce").is_none());
        assert_eq!(dp.by_class[&OpClass::TpAllReduce], OpCost::default());
        // An all-reduce of 8 tokens x 7,168 BF16 values costs the measured few microseconds.
        let each = reduces.seconds / reduces.calls;
        assert!(each > 3e-6 && each < 20e-6, "{each}");
        let shared = |c: &StepCost| op(c, "shared expert fc1").unwrap().seconds;
        assert!(shared(&tp) < shared(&dp));
    }
}
