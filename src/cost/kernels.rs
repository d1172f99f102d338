//! Ops priced from a GPU's kernel profile where it measures them, by the roofline where it
//! does not. Each price says where it came from ([`Source`]). Outside the measured range the
//! nearest measurement is scaled by the roofline's ratio between the two shapes, so the
//! measured efficiency carries over and the roofline supplies only the trend.

use super::compute::{OpCost, Roofline, ffn_gemms};
use super::profile::{self, Backend, KernelProfile, MlaShape, MoeShape, Source};
use crate::hardware::GpuSpec;
use crate::model::{Attention, ModelConfig, Precision};
use crate::topology::A2aAlgorithm;
use std::collections::HashMap;
use std::sync::Arc;

/// An op's cost and where its time came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Priced {
    pub cost: OpCost,
    pub source: Source,
}

impl Priced {
    /// A roofline's price.
    pub fn roofline(cost: OpCost) -> Priced {
        Priced {
            cost,
            source: Source::Roofline,
        }
    }

    /// The roofline's bytes and FLOPs with the measured time.
    fn measured(roof: OpCost, seconds: f64, source: Source) -> Priced {
        Priced {
            cost: OpCost { seconds, ..roof },
            source,
        }
    }
}

/// The op prices of one GPU.
#[derive(Debug, Clone)]
pub struct Kernels<'a> {
    pub roofline: Roofline<'a>,
    profile: Option<Arc<KernelProfile>>,
}

impl<'a> Kernels<'a> {
    /// Prices from `gpu`'s kernel profile (read once per process), or the roofline alone
    /// when the spec names none.
    pub fn for_gpu(gpu: &'a GpuSpec) -> Result<Self, String> {
        Self::for_engine(gpu, Backend::Trtllm, A2aAlgorithm::Direct)
    }

    /// Prices as `backend`'s kernels run on `gpu` behind the all-to-all `feed`
    /// ([`profile::cached_for`]).
    pub fn for_engine(
        gpu: &'a GpuSpec,
        backend: Backend,
        feed: A2aAlgorithm,
    ) -> Result<Self, String> {
        let profile = match &gpu.profile {
            Some(dir) => {
                profile::physics::check(dir, gpu).map_err(|e| e.to_string())?;
                Some(profile::cached_for(dir, backend, feed).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        Ok(Kernels {
            roofline: Roofline::new(gpu),
            profile,
        })
    }

    /// The roofline alone, whatever the spec names.
    pub fn roofline_only(gpu: &'a GpuSpec) -> Self {
        Kernels {
            roofline: Roofline::new(gpu),
            profile: None,
        }
    }

    /// One dense GEMM of `m` tokens by an `n x k` matrix in `p`.
    pub fn gemm(&self, m: u64, n: u64, k: u64, p: Precision) -> Priced {
        let roof = self.roofline.gemm(m, n, k, p);
        let hit = self.profile.as_ref().and_then(|pr| pr.gemm(p, m, n, k));
        match hit {
            None => Priced::roofline(roof),
            Some(h) if h.source == Source::Extrapolated => {
                let [am, an, ak] = h.at.map(|v| v.round() as u64);
                let edge = self.roofline.gemm(am, an, ak, p).seconds;
                Priced::measured(roof, anchored(h.seconds, roof.seconds, edge), h.source)
            }
            Some(h) => Priced::measured(roof, h.seconds, h.source),
        }
    }

    /// The routed experts of one MoE layer on one rank holding `rows.len()` expert slots,
    /// which received `rows[i]` token rows for its slot i (the routing draw). Measured as
    /// the fused MoE block of an EP group with as many experts per rank and as many rows
    /// per rank under balanced routing: EP = experts / slots, tokens = rows x EP / top-k.
    pub fn routed_moe(&self, shape: MoeShape, rows: &[u64]) -> Priced {
        let roof = self.moe_roofline(shape, rows);
        match self.measured_moe(shape, rows, || roof.seconds) {
            Some((seconds, source)) => Priced::measured(roof, seconds, source),
            None => Priced::roofline(roof),
        }
    }

    /// The routed experts with each expert's intermediate dimension split over `moe_tp`
    /// GPUs (tensor-parallel experts): the measured split block where the profile has it
    /// (its moe_tp rows, written as the shape of inter / moe_tp: the fused block's fixed
    /// cost, ~21 us on B200, stays whole however thin the slice); elsewhere the measured
    /// full-width block scaled by the roofline's ratio of split to full width, which scales
    /// that fixed cost down too, so it is at best extrapolated.
    pub fn routed_moe_split(&self, shape: MoeShape, rows: &[u64], moe_tp: u64) -> Priced {
        if moe_tp > 1 && self.measures_moe(Self::split(shape, moe_tp)) {
            return self.routed_moe(Self::split(shape, moe_tp), rows);
        }
        let full = self.routed_moe(shape, rows);
        if moe_tp <= 1 {
            return full;
        }
        let split = self.moe_roofline(Self::split(shape, moe_tp), rows);
        match full.source {
            Source::Roofline => Priced::roofline(split),
            _ => {
                let roof_full = self.moe_roofline(shape, rows).seconds;
                let seconds = anchored(full.cost.seconds, split.seconds, roof_full);
                Priced::measured(split, seconds, Source::Extrapolated)
            }
        }
    }

    /// The seconds of [`Kernels::routed_moe_split`] alone (the serving loop's inner call),
    /// with the price's pure parts kept in `memo`: the same seconds, bit for bit.
    pub fn routed_moe_split_seconds(
        &self,
        shape: MoeShape,
        rows: &[u64],
        moe_tp: u64,
        memo: &mut MoeMemo,
    ) -> f64 {
        if moe_tp > 1 && self.measures_moe(Self::split(shape, moe_tp)) {
            return self.routed_moe_seconds(Self::split(shape, moe_tp), rows, memo);
        }
        let full_s = self.routed_moe_seconds(shape, rows, memo);
        if moe_tp <= 1 {
            return full_s;
        }
        let split_s = self.moe_roofline(Self::split(shape, moe_tp), rows).seconds;
        anchored(full_s, split_s, self.moe_roofline(shape, rows).seconds)
    }

    /// Whether the profile has a fused-MoE table for `shape`.
    fn measures_moe(&self, shape: MoeShape) -> bool {
        self.profile.as_ref().is_some_and(|p| p.measures_moe(shape))
    }

    fn split(shape: MoeShape, moe_tp: u64) -> MoeShape {
        MoeShape {
            inter: shape.inter.div_ceil(moe_tp),
            ..shape
        }
    }

    /// The seconds of [`Kernels::routed_moe`] alone: the serving loop's inner call, which
    /// needs no bytes or FLOPs and so runs the roofline only where no measurement answers.
    /// Its pure parts (the measured block by rows per rank, each expert's roofline sums by
    /// row count) are kept in `memo`.
    pub fn routed_moe_seconds(&self, shape: MoeShape, rows: &[u64], memo: &mut MoeMemo) -> f64 {
        memo.keep_to(shape);
        let total: u64 = rows.iter().sum();
        let measured = *memo
            .measured
            .entry((rows.len(), total))
            .or_insert_with(|| self.measured_moe_at(shape, rows.len(), total));
        let expert = ffn_gemms(shape.hidden, shape.inter);
        let sums = &mut memo.sums;
        let mut roof_s = || {
            self.roofline
                .grouped_gemm_from(rows, |m| {
                    let at = m as usize;
                    if at > MEMO_ROWS {
                        return self.roofline.expert_sums(m, &expert, shape.precision);
                    }
                    if sums.len() <= at {
                        sums.resize(at + 1, None);
                    }
                    *sums[at].get_or_insert_with(|| {
                        self.roofline.expert_sums(m, &expert, shape.precision)
                    })
                })
                .seconds
        };
        match measured {
            None => roof_s(),
            Some(m) => m.seconds(roof_s),
        }
    }

    fn moe_roofline(&self, shape: MoeShape, rows: &[u64]) -> OpCost {
        let expert = ffn_gemms(shape.hidden, shape.inter);
        self.roofline.grouped_gemm(rows, &expert, shape.precision)
    }

    /// The measured block's seconds and source; `None` where the profile has no table for
    /// `shape` or no neighbours around the point. `roof_s` is the roofline's time for
    /// `rows`, asked for only to carry a measurement beyond the measured range.
    fn measured_moe(
        &self,
        shape: MoeShape,
        rows: &[u64],
        roof_s: impl FnOnce() -> f64,
    ) -> Option<(f64, Source)> {
        let m = self.measured_moe_at(shape, rows.len(), rows.iter().sum())?;
        Some((m.seconds(roof_s), m.source))
    }

    /// What [`Self::measured_moe`] finds for `slots` slots and `total` rows, before the
    /// rows' spread enters: `None` without a table or neighbours.
    fn measured_moe_at(&self, shape: MoeShape, slots: usize, total: u64) -> Option<MeasuredMoe> {
        // No tokens: nothing runs (the roofline's zero); no table or neighbours: the roofline.
        if total == 0 {
            return None;
        }
        let topk = shape.topk as f64;
        let ep = shape.experts as f64 / slots as f64;
        let h = self
            .profile
            .as_ref()?
            .moe(shape, ep, total as f64 * ep / topk)?;
        if h.source != Source::Extrapolated {
            return Some(MeasuredMoe {
                seconds: h.seconds,
                source: h.source,
                edge_s: None,
                growth: 1.0,
            });
        }
        // The measured EP group at the clamped point, balanced, through the roofline.
        let [at_ep, at_tokens] = h.at;
        let tokens = total as f64 * ep / topk;
        let growth = if tokens > at_tokens {
            self.moe_growth(shape, at_ep, at_tokens, tokens)
        } else {
            1.0
        };
        let local = (shape.experts as f64 / at_ep).round().max(1.0) as u64;
        let at_rows = (at_tokens * topk / at_ep).round() as u64;
        let expert = ffn_gemms(shape.hidden, shape.inter);
        let edge_s = self
            .roofline
            .balanced_grouped_gemm(at_rows, local, &expert, shape.precision)
            .seconds;
        Some(MeasuredMoe {
            seconds: h.seconds,
            source: h.source,
            edge_s: Some(edge_s),
            growth,
        })
    }

    /// How much less each token costs at `tokens` than at `edge_tokens`, the table's largest
    /// measured count, at EP `ep`: a grouped GEMM's efficiency keeps rising with rows per
    /// expert, as each tile's fixed cost spreads over more rows, where the roofline's trend
    /// holds it at the edge's. The seconds per token are fitted as a + b / tokens over the
    /// table's [`GROWTH_POINTS`] largest counts (never the edge alone), with a no lower than
    /// the fastest dense GEMM of the format allows (the ceiling it rises toward). 1 where the
    /// fit finds no rise.
    fn moe_growth(&self, shape: MoeShape, ep: f64, edge_tokens: f64, tokens: f64) -> f64 {
        let Some(profile) = self.profile.as_ref() else {
            return 1.0;
        };
        let points = profile.moe_largest(shape, ep, GROWTH_POINTS);
        if points.len() < GROWTH_POINTS {
            return 1.0;
        }
        let n = points.len() as f64;
        let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
        for &(t, seconds) in &points {
            let (x, y) = (1.0 / t, seconds / t);
            (sx, sy, sxx, sxy) = (sx + x, sy + y, sxx + x * x, sxy + x * y);
        }
        let b = (n * sxy - sx * sy) / (n * sxx - sx * sx);
        let mut a = (sy - b * sx) / n;
        // Per token of the group, a rank computes top-k / EP rows of the expert's three
        // hidden x inter matrices.
        let flops_per_token =
            shape.topk as f64 / ep * 6.0 * shape.hidden as f64 * shape.inter as f64;
        if let Some(ceiling) = profile.gemm_ceiling_flops(shape.precision) {
            a = a.max(flops_per_token / ceiling);
        }
        if !(a > 0.0 && b > 0.0) {
            return 1.0;
        }
        ((a + b / tokens) / (a + b / edge_tokens)).min(1.0)
    }

    /// Heads per rank when `model`'s attention has the MLA shape the profile's MLA tables
    /// measured (any head count); `None` otherwise.
    fn mla_heads(&self, model: &ModelConfig, tp: u64) -> Option<u64> {
        let measured = self.profile.as_ref()?.mla_shape?;
        match model.attention {
            Attention::Mla {
                heads,
                q_lora_rank,
                kv_lora_rank,
                qk_nope_head_dim,
                qk_rope_head_dim,
                v_head_dim,
            } if MlaShape {
                hidden: model.hidden_size,
                q_lora_rank,
                kv_lora_rank,
                qk_nope_head_dim,
                qk_rope_head_dim,
                v_head_dim,
            } == measured =>
            {
                Some(heads.div_ceil(tp.max(1)))
            }
            _ => None,
        }
    }

    /// An all-reduce of `elements` BF16 values over a tensor-parallel group of `gpus` in one
    /// NVLink domain (TensorRT-LLM's custom all-reduce where measured).
    pub fn all_reduce(&self, gpus: u64, elements: u64) -> Priced {
        if gpus <= 1 || elements == 0 {
            return Priced::roofline(OpCost::default());
        }
        let roof = self.roofline.all_reduce(gpus, elements);
        let hit = self
            .profile
            .as_ref()
            .and_then(|pr| pr.all_reduce(Precision::Bf16, gpus, elements));
        match hit {
            None => Priced::roofline(roof),
            Some(h) if h.source == Source::Extrapolated => {
                let [g, e] = h.at.map(|v| v.round() as u64);
                let edge = self.roofline.all_reduce(g, e).seconds;
                // Never below the measured floor (tiny messages cost what the smallest did).
                let seconds = anchored(h.seconds, roof.seconds, edge).max(h.seconds);
                Priced::measured(roof, seconds, h.source)
            }
            Some(h) => Priced::measured(roof, h.seconds, h.source),
        }
    }

    /// The whole MLA block of one decode layer (projections, norms, RoPE, attention) for
    /// `batch` requests of `kv_len` tokens with `queries` new tokens each, over `1/tp` of
    /// the heads; `None` where the profile does not measure this model's MLA.
    pub fn mla_decode(
        &self,
        model: &ModelConfig,
        batch: u64,
        kv_len: u64,
        queries: u64,
        tp: u64,
        (kv, gemm): (Precision, Precision),
    ) -> Option<Priced> {
        let heads = self.mla_heads(model, tp)?;
        // MTP verification: each query is a row of the projections and, MLA decode being
        // compute-bound at 128 heads, of the attention too; priced as batch x queries rows.
        let rows = batch.saturating_mul(queries);
        let h = self
            .profile
            .as_ref()?
            .mla_decode(kv, gemm, heads, rows, kv_len.max(1))?;
        let roof = self
            .roofline
            .decode_attention(model, batch, kv_len, queries, kv, tp);
        Some(if h.source == Source::Extrapolated {
            let [b, l] = h.at.map(|v| v.round() as u64);
            let edge = self
                .roofline
                .decode_attention(model, b, l, 1, kv, tp)
                .seconds;
            Priced::measured(roof, anchored(h.seconds, roof.seconds, edge), h.source)
        } else {
            Priced::measured(roof, h.seconds, h.source)
        })
    }

    /// The whole MLA block of one prefill layer for `prompts` chunks of `tokens` after
    /// `prefix` cached ones each: the measured block for prompts of `tokens`, plus the
    /// roofline's extra attention over the prefix (the tables measure whole prompts only).
    pub fn mla_prefill(
        &self,
        model: &ModelConfig,
        prompts: u64,
        tokens: u64,
        prefix: u64,
        tp: u64,
        (kv, gemm): (Precision, Precision),
    ) -> Option<Priced> {
        let heads = self.mla_heads(model, tp)?;
        let h = self
            .profile
            .as_ref()?
            .mla_prefill(kv, gemm, heads, prompts, tokens)?;
        let r = &self.roofline;
        let n = prompts as f64;
        let roof = r.prefill_attention(model, tokens, prefix, kv, tp).times(n);
        let whole = r.prefill_attention(model, tokens, 0, kv, tp).times(n);
        let mut seconds = h.seconds;
        if h.source == Source::Extrapolated {
            let [b, l] = h.at;
            let edge = r
                .prefill_attention(model, l.round() as u64, 0, kv, tp)
                .times(b);
            seconds = anchored(seconds, whole.seconds, edge.seconds);
        }
        let source = if prefix > 0 {
            h.source.worst(Source::Interpolated)
        } else {
            h.source
        };
        Some(Priced::measured(
            roof,
            seconds + (roof.seconds - whole.seconds).max(0.0),
            source,
        ))
    }
}

/// A measured MoE block as [`Kernels::measured_moe`] finds it: its seconds and source and,
/// beyond the measured range, the roofline's time at the edge it was carried from.
#[derive(Debug, Clone, Copy)]
struct MeasuredMoe {
    seconds: f64,
    source: Source,
    edge_s: Option<f64>,
    /// Beyond the largest measured token count: the efficiency gained there
    /// ([`Kernels::moe_growth`]); 1 elsewhere.
    growth: f64,
}

/// Measured token counts a MoE table's growth beyond its range is fitted over: the three
/// largest, where compute dominates (below them the block streams its weights and the
/// curve bends: on H200 FP8 at EP8 a fit over four counts reads 7% growth at 4x the edge
/// where three read 4%; GB200 NVFP4 reads 17% either way).
const GROWTH_POINTS: usize = 3;

impl MeasuredMoe {
    /// The block's seconds for rows whose roofline time is `roof_s()` (asked for only to
    /// carry a measurement beyond the measured range).
    fn seconds(&self, roof_s: impl FnOnce() -> f64) -> f64 {
        match self.edge_s {
            None => self.seconds,
            Some(edge_s) => anchored(self.seconds, roof_s(), edge_s) * self.growth,
        }
    }
}

/// Row counts per expert the memo keeps sums for (a prefill chunk can put more on one
/// expert; those are computed each time).
const MEMO_ROWS: usize = 1 << 16;

/// Pure results of the routed-MoE price, kept between calls for one MoE shape: the serving
/// loop prices the same shape every layer of every iteration, and row counts repeat. Only
/// lookups go through it, so prices are the same, bit for bit, with or without it.
#[derive(Debug, Default)]
pub struct MoeMemo {
    shape: Option<MoeShape>,
    /// Per row count m of one expert: the roofline's (bytes, FLOPs, compute seconds).
    sums: Vec<Option<(f64, f64, f64)>>,
    /// Per (slots on the rank, rows on it): the measured block.
    measured: HashMap<(usize, u64), Option<MeasuredMoe>>,
}

impl MoeMemo {
    /// Forgets everything when asked about another shape.
    fn keep_to(&mut self, shape: MoeShape) {
        if self.shape != Some(shape) {
            *self = MoeMemo {
                shape: Some(shape),
                ..MoeMemo::default()
            };
        }
    }
}

/// A measurement at the edge of the measured range carried to a shape beyond it: scaled by
/// the roofline's ratio between the two shapes, so the measured efficiency carries over.
fn anchored(measured_s: f64, roofline_s: f64, roofline_edge_s: f64) -> f64 {
    if roofline_edge_s > 0.0 {
        measured_s * roofline_s / roofline_edge_s
    } else {
        measured_s
    }
}

/// `rows` spread as evenly as integers allow over `experts`.
pub fn balanced(rows: u64, experts: u64) -> Vec<u64> {
    let experts = experts.max(1);
    let (each, extra) = (rows / experts, rows % experts);
    (0..experts).map(|i| each + u64::from(i < extra)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{gpu, model};

    #[test]
    fn gemms_come_from_the_profile_and_say_so() {
        let b200 = gpu("b200-gb200");
        let k = Kernels::for_gpu(&b200).unwrap();
        let measured = k.gemm(8192, 8192, 8192, Precision::Bf16);
        assert_eq!(measured.source, Source::Measured);
        assert!((measured.cost.seconds - 781.2e-6).abs() < 1e-9);
        assert_eq!(
            k.gemm(40, 7168, 2048, Precision::Fp8).source,
            Source::Interpolated
        );
        // The LM head (n = 129,280) is wider than any measured GEMM.
        let head = k.gemm(64, 129_280, 7168, Precision::Bf16);
        assert_eq!(head.source, Source::Extrapolated);
        let edge = k.gemm(64, 65_536, 7168, Precision::Bf16).cost.seconds;
        assert!(head.cost.seconds > 1.5 * edge && head.cost.seconds < 2.5 * edge);
        // MXFP4 GEMMs are not in the profile.
        assert_eq!(
            k.gemm(64, 2880, 2880, Precision::Mxfp4).source,
            Source::Roofline
        );
    }

    #[test]
    fn a_balanced_moe_draw_reads_the_measured_block() {
        let (b200, ds) = (gpu("b200-gb200"), model("deepseek-r1"));
        let k = Kernels::for_gpu(&b200).unwrap();
        let fp4 = MoeShape::of(&ds, Precision::Nvfp4);
        // moe.csv: nvfp4, DeepSeek shape, EP8, 1,024 tokens -> 197.0 us; each of the 32
        // local experts gets 1,024 x 8 / 256 = 32 rows.
        let p = k.routed_moe(fp4, &[32; 32]);
        assert_eq!(p.source, Source::Measured);
        assert!(
            (p.cost.seconds - 197.0e-6).abs() < 1e-9,
            "{}",
            p.cost.seconds
        );
        // 288 slots at EP32: 9 per rank, between the measured EP16 and EP32.
        assert_eq!(k.routed_moe(fp4, &[32; 9]).source, Source::Interpolated);
        assert_eq!(k.routed_moe(fp4, &[0; 9]).cost.seconds, 0.0);
    }

    /// Tensor-parallel experts read the profile's moe_tp rows: the fused block's fixed
    /// cost stays whole in a thin slice, where scaling the full-width block by the
    /// roofline's width ratio would shrink it with the slice.
    #[test]
    fn a_split_moe_block_reads_its_measured_moe_tp_rows() {
        let (b200, ds) = (gpu("b200-gb200"), model("deepseek-r1"));
        let k = Kernels::for_gpu(&b200).unwrap();
        let fp4 = MoeShape::of(&ds, Precision::Nvfp4);
        // moe.csv: nvfp4, moe_tp 4 (inter 2,048 / 4 = 512), EP2, 4 tokens -> 38.24 us;
        // each of the 128 local experts of EP2 gets 4 x 8 / 256 of a row: 16 rows in all.
        let mut rows = [0; 128];
        rows[..16].fill(1);
        let split = k.routed_moe_split(fp4, &rows, 4);
        assert_eq!(split.source, Source::Measured);
        assert!((split.cost.seconds - 38.24e-6).abs() < 1e-9);
        let seconds = k.routed_moe_split_seconds(fp4, &rows, 4, &mut MoeMemo::default());
        assert_eq!(seconds, split.cost.seconds);
        // The roofline ratio of the full-width EP2 block would read about a third less.
        let full = k.routed_moe(fp4, &rows).cost.seconds;
        let ratio = k.moe_roofline(Kernels::split(fp4, 4), &rows).seconds
            / k.moe_roofline(fp4, &rows).seconds;
        assert!(full * ratio < 0.75 * split.cost.seconds, "{}", full * ratio);
    }

    /// An instance running SGLang prices its routed experts from SGLang's DeepGEMM rows,
    /// by the kernel its all-to-all feeds, and everything else from the folder's tables.
    #[test]
    fn sglang_kernels_price_the_moe_from_sglang_rows() {
        let (h100, ds) = (gpu("h100-sxm"), model("deepseek-r1"));
        let fp8 = MoeShape::of(&ds, Precision::Fp8);
        // EP64 (4 local experts), 64 tokens per rank: 64 x 8 / 4 = 128 rows per expert.
        let rows = [128; 4];
        let trtllm = Kernels::for_gpu(&h100).unwrap();
        let masked = Kernels::for_engine(&h100, Backend::Sglang, A2aAlgorithm::LowLatency).unwrap();
        let contiguous =
            Kernels::for_engine(&h100, Backend::Sglang, A2aAlgorithm::Hierarchical).unwrap();
        // sglang/moe_low_latency.csv: EP64, 64 tokens per rank -> 92.41 us.
        let p = masked.routed_moe(fp8, &rows);
        assert_eq!(p.source, Source::Measured);
        assert!(
            (p.cost.seconds - 92.41e-6).abs() < 1e-9,
            "{}",
            p.cost.seconds
        );
        // moe.csv (TensorRT-LLM): EP64, 4,096 tokens of the group, 165.2 us.
        let t = trtllm.routed_moe(fp8, &rows).cost.seconds;
        assert!((t - 165.2e-6).abs() < 1e-9, "{t}");
        // sglang/moe.csv, DeepEP normal's contiguous kernel: 398.6 us, a fixed ~0.4 ms.
        let c = contiguous.routed_moe(fp8, &rows);
        assert_eq!(c.source, Source::Measured);
        assert!(
            (c.cost.seconds - 398.6e-6).abs() < 1e-9,
            "{}",
            c.cost.seconds
        );
        // It measures EP16-EP64: EP8 is the EP16 block carried by the roofline's trend.
        assert_eq!(
            contiguous.routed_moe(fp8, &[64; 32]).source,
            Source::Extrapolated
        );
        // Between measured per-rank counts and EP sizes, interpolated in those axes.
        let between = masked.routed_moe(fp8, &[96; 6]);
        assert_eq!(between.source, Source::Interpolated);
        // Other ops: the folder's own.
        let g = |k: &Kernels| k.gemm(64, 7168, 2048, Precision::Fp8).cost.seconds;
        assert_eq!(g(&masked), g(&trtllm));
        let memo = &mut MoeMemo::default();
        assert_eq!(
            masked.routed_moe_split_seconds(fp8, &rows, 1, memo),
            p.cost.seconds
        );
    }

    /// Beyond the largest measured token count a grouped GEMM keeps gaining efficiency (its
    /// tiles' fixed cost spread over more rows), fitted over the table's top counts, up to
    /// the fastest dense GEMM of the format; the roofline's trend alone held the edge's.
    #[test]
    fn moe_efficiency_keeps_rising_beyond_the_measured_tokens() {
        let ds = model("deepseek-r1");
        let price = |gpu: &str, precision, tokens: u64| {
            let g = crate::testing::gpu(gpu);
            let k = Kernels::for_gpu(&g).unwrap();
            let shape = MoeShape::of(&ds, precision);
            // EP8: 32 local experts, tokens x 8 / 256 rows each.
            let rows = balanced(tokens * 8 / 8, 32);
            let p = k.routed_moe(shape, &rows);
            let held = k.moe_roofline(shape, &rows).seconds;
            let edge = k.routed_moe(shape, &balanced(16_384, 32)).cost.seconds;
            let edge_roof = k.moe_roofline(shape, &balanced(16_384, 32)).seconds;
            (p, p.cost.seconds / (edge * held / edge_roof))
        };
        // GB200, NVFP4: 1.16, 1.36, 1.23x more TFLOP/s per doubling up to 16,384 tokens.
        let (p, growth) = price("b200-gb200", Precision::Nvfp4, 65_536);
        assert_eq!(p.source, Source::Extrapolated);
        assert!(growth > 0.78 && growth < 0.88, "{growth}");
        // Still below the fastest NVFP4 GEMM GB200 measures.
        let ceiling = crate::testing::gpu("b200-gb200");
        let k = Kernels::for_gpu(&ceiling).unwrap();
        let c = k
            .profile
            .as_ref()
            .unwrap()
            .gemm_ceiling_flops(Precision::Nvfp4)
            .unwrap();
        assert!(
            p.cost.flops / p.cost.seconds < c,
            "{} vs {c}",
            p.cost.flops / p.cost.seconds
        );
        // H200, FP8: nearly flat at the edge (1.03x over the last doubling): little growth.
        let (_, growth) = price("h200-sxm", Precision::Fp8, 65_536);
        assert!(growth > 0.93 && growth < 0.99, "{growth}");
        // More tokens never cost less in all.
        let (a, _) = price("b200-gb200", Precision::Nvfp4, 32_768);
        assert!(a.cost.seconds < p.cost.seconds);
    }

    #[test]
    fn without_a_profile_everything_is_roofline() {
        let (b200, ds) = (gpu("b200-gb200"), model("deepseek-r1"));
        let k = Kernels::roofline_only(&b200);
        let fp4 = MoeShape::of(&ds, Precision::Nvfp4);
        assert_eq!(
            k.gemm(64, 7168, 2048, Precision::Fp8).source,
            Source::Roofline
        );
        assert_eq!(k.routed_moe(fp4, &[4; 32]).source, Source::Roofline);
        assert!(
            k.mla_decode(&ds, 64, 2048, 1, 1, (Precision::Fp8, Precision::Fp8))
                .is_none()
        );
    }

    #[test]
    fn all_reduces_are_measured_floors_and_bandwidth() {
        let b200 = gpu("b200-hgx");
        let k = Kernels::for_gpu(&b200).unwrap();
        // allreduce.csv (b200-hgx): 8 GPUs, 128 elements -> 5.0 us.
        let small = k.all_reduce(8, 128);
        assert_eq!(small.source, Source::Measured);
        assert!((small.cost.seconds - 5.0e-6).abs() < 0.2e-6);
        // Fewer elements than measured: the floor stands.
        assert!(k.all_reduce(8, 16).cost.seconds >= small.cost.seconds);
        assert_eq!(k.all_reduce(1, 1 << 20).cost.seconds, 0.0);
        // Beyond the largest message, the roofline's bandwidth trend.
        let big = k.all_reduce(8, 1 << 31);
        assert_eq!(big.source, Source::Extrapolated);
        assert!(big.cost.seconds > 4.0 * k.all_reduce(8, 1 << 29).cost.seconds * 0.99);
    }

    #[test]
    fn mla_blocks_only_for_deepseek_shaped_attention() {
        let b200 = gpu("b200-gb200");
        let k = Kernels::for_gpu(&b200).unwrap();
        let p = (Precision::Fp8, Precision::Fp8);
        let ds = model("deepseek-r1");
        let d = k.mla_decode(&ds, 64, 2048, 1, 1, p).unwrap();
        assert_eq!(d.source, Source::Measured);
        assert!(
            k.mla_decode(&model("qwen3-235b-a22b"), 64, 2048, 1, 1, p)
                .is_none()
        );
        // A prefix adds attention work on top of the measured whole-prompt block.
        let fresh = k.mla_prefill(&ds, 1, 2048, 0, 1, p).unwrap();
        let later = k.mla_prefill(&ds, 1, 2048, 8192, 1, p).unwrap();
        assert_eq!(fresh.source, Source::Measured);
        assert!(later.cost.seconds > fresh.cost.seconds);
    }
}
