//! One iteration of one rank (decode, optionally with a prefill chunk mixed in), priced op
//! by op and summed by op class, with balanced routing (every expert slot gets the same
//! share of tokens). It shows where the time of a
//! step goes and how it moves from EP8 to EP32: the MoE GroupGEMM reads the weights of every
//! local expert that gets a token, so fewer experts per GPU, fewer bytes per step.
//!
//! A layer is priced as the engines run it inside a CUDA graph (reference section 8):
//! - each op costs its measured time plus one launch gap (`launch_gap_us` of the GPU
//!   family): the tables time each op in its own graph, so the gaps inside it are in its
//!   row and only the boundaries between ops are added;
//! - the shared expert runs on a second stream beside the router and the routed experts
//!   (and, in serving, their all-to-all), so a MoE layer pays max(shared expert, router +
//!   routed experts), shown as a negative "hidden" line;
//! - under tensor-parallel attention the all-reduce is fused with the residual add and
//!   the RMS norm after it (one kernel, no separate norm).

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

/// What the token-count part of an iteration gives the serving loop, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct TokenPart {
    /// All of it, the main MoE layers' shared experts left out (the serving loop sets
    /// them beside its own routed experts and all-to-all).
    rest_s: f64,
    /// The main model's routed experts under balanced routing, all MoE layers, without
    /// their launch gaps (the routing draw replaces them).
    routed_main_s: f64,
    /// The main MoE layers' FFN side without their shared experts, all layers.
    moe_ffn_s: f64,
    /// One main MoE layer: its shared expert on the second stream, and what runs beside
    /// it on the main stream besides the routed experts (router, gaps, gathers).
    shared_layer_s: f64,
    router_layer_s: f64,
}

/// One MoE layer's two streams, seconds, launch gaps included: the shared expert on the
/// second; on the main one the router, routed experts (balanced routing; `routed_s`
/// without its gap) and gathers beside it.
#[derive(Debug, Clone, Copy, Default)]
struct Streams {
    shared_s: f64,
    beside_s: f64,
    routed_s: f64,
}

impl Streams {
    /// What of the shared expert the main stream hides: all of it, or as long as it runs.
    fn hidden_s(&self) -> f64 {
        self.shared_s.min(self.beside_s)
    }
}

/// Slots of the context-part memo, as bits: the ranks of a decode instance sit at a few
/// hundred (batch, mean context) pairs near their steady state.
const CONTEXT_SLOT_BITS: u32 = 10;

/// (tokens through the GEMMs, decode batch, prefill chunks).
type TokenCounts = (u64, u64, u64);

/// Distinct token counts kept: a decode instance cycles through a few batch sizes.
const MEMO_ENTRIES: usize = 64;

/// An iteration's seconds on one rank, split the way micro-batch overlap needs them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IterationSeconds {
    pub total_s: f64,
    /// The main model's routed experts (all MoE layers).
    pub routed_main_s: f64,
    /// Everything inside the main model's MoE layers but their shared experts (attention
    /// block, router, routed experts, TP all-reduces, launch gaps): the part two
    /// micro-batches can interleave with the all-to-all. The rest (dense layers, LM head,
    /// MTP drafts) runs once per micro-batch with nothing to hide.
    pub moe_layers_s: f64,
    /// One main MoE layer's shared expert, on its own stream beside the router, routed
    /// experts and all-to-all (left out of `total_s` and `moe_layers_s`).
    pub shared_layer_s: f64,
    /// One main MoE layer's router and the other main-stream work beside the shared
    /// expert besides the routed experts and all-to-all.
    pub router_layer_s: f64,
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
    let t = match memo.entries.iter().find(|(k, _)| *k == key) {
        Some(&(_, v)) => v,
        None => {
            let v = step.token_part().1;
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
        total_s: context_s + t.rest_s,
        routed_main_s: t.routed_main_s,
        moe_layers_s: moe_attention_s + t.moe_ffn_s,
        shared_layer_s: t.shared_layer_s,
        router_layer_s: t.router_layer_s,
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
    let (tokens_part, t) = step.token_part();
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
        routed_main_s: t.routed_main_s,
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
    /// The launch gap each op pays at its boundary, seconds.
    gap_s: f64,
}

impl ClassCosts {
    fn seconds(&self) -> f64 {
        self.costs.iter().map(|c| c.seconds).sum()
    }

    /// Adds an op that runs, with its launch gap.
    fn add(&mut self, op: &'static str, class: OpClass, mut p: Priced) {
        if p.cost.seconds > 0.0 {
            p.cost.seconds += self.gap_s;
        }
        self.add_line(op, class, p.cost, p.source);
    }

    fn add_line(&mut self, op: &'static str, class: OpClass, cost: OpCost, source: Source) {
        let i = class.index();
        self.costs[i] += cost;
        self.sources[i] = weaker(self.sources[i], Some(source));
        if let Some(log) = &mut self.log {
            log.push(OpLine {
                op,
                class,
                calls: 1.0,
                seconds: cost.seconds,
                source,
            });
        }
    }

    /// Takes back `seconds` of `class` that ran on a second stream beside other work.
    fn hide(&mut self, op: &'static str, class: OpClass, seconds: f64) {
        if seconds <= 0.0 {
            return;
        }
        let source = self.sources[class.index()].unwrap_or(Source::Roofline);
        let cost = OpCost {
            seconds: -seconds,
            ..OpCost::default()
        };
        self.add_line(op, class, cost, source);
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
            gap_s: self.kernels.roofline.launch_gap_s(),
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

    /// What depends on token counts alone: FFNs and experts, LM heads and MTP
    /// projections; and its seconds as the serving loop needs them.
    fn token_part(&self) -> (ClassCosts, TokenPart) {
        let (model, load, k) = (self.model, self.load, self.kernels);
        let tokens = self.tokens();
        let mut total = self.costs();
        total.add_all(&self.ffn(tokens, false).0, model.dense_layers);
        let (moe, streams) = self.ffn(tokens, true);
        let layers = model.moe_layers() as f64;
        total.add_all(&moe, model.moe_layers());
        // The LM head runs for every decode token, and once for a chunk (its next token).
        let heads = load.batch.saturating_mul(1 + load.mtp) + self.chunks();
        total.add_all(&self.lm_head_and_sampling(heads), 1);
        // Each MTP draft: project [embedding; hidden] (2h -> h), one MoE layer, the LM head.
        let h = model.hidden_size;
        let mut draft = self.ffn(load.batch, true).0;
        draft.add(
            "mtp projection",
            OpClass::DenseGemm,
            k.gemm(load.batch, h, 2 * h, self.d.other_precision),
        );
        draft.add_all(&self.lm_head_and_sampling(load.batch), 1);
        total.add_all(&draft, load.mtp);
        // The main layers' shared experts, net of what hid beside the routed experts.
        let shared_net_s = (streams.shared_s - streams.hidden_s()) * layers;
        let part = TokenPart {
            rest_s: total.seconds() - shared_net_s,
            routed_main_s: streams.routed_s * layers,
            moe_ffn_s: moe.seconds() * layers - shared_net_s,
            shared_layer_s: streams.shared_s,
            router_layer_s: streams.beside_s - streams.routed_s,
        };
        (total, part)
    }

    fn experts_per_gpu(&self) -> u64 {
        self.d.slots / self.d.ep.max(1)
    }

    /// Tokens reaching each of this rank's experts when the attention group has `tokens`:
    /// every rank sends its own tokens (a TP group splits them over its ranks), each to
    /// top_k slots, spread evenly over all slots of the EP group.
    fn tokens_per_local_expert(&self, tokens: u64) -> Vec<u64> {
        // Every rank of a TP attention group holds all its tokens (a data-parallel rank's
        // are gathered over its group of tensor-parallel experts), so the instance's GPUs
        // (ep x moe_tp) hold gpus / tp token sets: one when the TP group spans them.
        let gpus = u128::from(self.d.ep) * u128::from(self.d.moe_tp.max(1));
        let group_tokens = u128::from(tokens) * gpus / u128::from(self.tp);
        let experts = self.experts_per_gpu();
        let picks = group_tokens * u128::from(self.model.moe.experts_per_token);
        let routed_here = (picks * u128::from(experts) / u128::from(self.d.slots.max(1))) as u64;
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
                    k.gemm(m, n, kk, d.attention_precision),
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
        // Tensor-parallel attention sums its heads' output projections, in one kernel
        // with the residual add and the post-attention RMS norm (reference section 8).
        if self.tp > 1 {
            c.add(
                "attention all-reduce (+ residual, norm)",
                OpClass::TpAllReduce,
                k.all_reduce(self.tp, m * h),
            );
        } else {
            c.add(
                "rms norm",
                OpClass::Other,
                Priced::roofline(k.roofline.memory_pass(2.0 * hidden_bytes)),
            );
        }
        c
    }

    /// The FFN half of one layer for `m` tokens: routed and shared experts, or a dense FFN;
    /// and, for a MoE layer, how its two streams line up.
    fn ffn(&self, m: u64, moe: bool) -> (ClassCosts, Streams) {
        let (model, d, k) = (self.model, self.d, self.kernels);
        let h = model.hidden_size;
        let mut c = self.costs();
        let mut streams = Streams::default();
        if moe {
            c.add(
                "router",
                OpClass::Other,
                k.gemm(m, model.moe.routed_experts, h, Precision::Bf16),
            );
            let routed = k.routed_moe_split(
                MoeShape::of(model, d.expert_precision),
                &self.tokens_per_local_expert(m),
                d.moe_tp,
            );
            streams.routed_s = routed.cost.seconds;
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
            streams.beside_s = c.seconds();
            // The shared expert, on its own stream (a tensor-parallel group splits its
            // intermediate dimension).
            let mut shared = self.costs();
            let [(n1, k1), (n2, k2)] = ffn_gemms(h, model.moe.expert_intermediate_size);
            let (n1, k2) = (n1.div_ceil(self.tp), k2.div_ceil(self.tp));
            for _ in 0..model.moe.shared_experts {
                shared.add(
                    "shared expert fc1",
                    OpClass::DenseGemm,
                    k.gemm(m, n1, k1, d.expert_precision),
                );
                shared.add(
                    "shared expert fc2",
                    OpClass::DenseGemm,
                    k.gemm(m, n2, k2, d.expert_precision),
                );
            }
            streams.shared_s = shared.seconds();
            c.add_all(&shared, 1);
            c.hide(
                "shared expert hidden (2nd stream)",
                OpClass::DenseGemm,
                streams.hidden_s(),
            );
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
        // The group's partial outputs (split FFN, local experts) are summed, fused with the
        // residual add and the next layer's input norm.
        if self.tp > 1 {
            c.add(
                "FFN all-reduce (+ residual, norm)",
                OpClass::TpAllReduce,
                k.all_reduce(self.tp, m * h),
            );
        }
        (c, streams)
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
        let formats = (d.kv_precision, d.attention_precision);
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
        // The iteration's prompt chunks run as one batched prefill (the tables measure
        // `batch` prompts of one length): priced at their mean length and mean prefix.
        let (prompts, tokens, prefix) = chunks
            .iter()
            .filter(|p| p.tokens > 0)
            .fold((0u64, 0u64, 0u64), |(n, t, x), p| {
                (n + 1, t + p.tokens, x + p.prefix)
            });
        if prompts > 0 {
            let (mean, mean_prefix) = (tokens.div_ceil(prompts), prefix / prompts);
            let Some(block) =
                k.mla_prefill(self.model, prompts, mean, mean_prefix, self.tp, formats)
            else {
                return false;
            };
            parts.push(("MLA prefill block (batched)", block));
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
mod tests;
