//! Compute cost of one op on one GPU: a roofline, the larger of the time to move its bytes
//! through HBM and the time to do its arithmetic, each at the fraction of peak that real
//! kernels achieve (`Efficiency`, one set per GPU family). A GEMM's token rows are computed
//! in MMA tiles and padded up to the tile height, so a GEMM with few tokens per expert
//! wastes most of its arithmetic; with few tokens it is bound by reading its weights anyway.

use crate::hardware::GpuSpec;
use crate::model::{Attention, ModelConfig, Precision, Usage};
use serde::Serialize;
use std::ops::AddAssign;

/// Time, bytes and arithmetic of one op or a sum of ops run one after another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OpCost {
    pub seconds: f64,
    /// Bytes read from and written to HBM.
    pub bytes: f64,
    /// Useful floating-point operations (padding excluded).
    pub flops: f64,
    /// Seconds the op would take if only its memory traffic counted.
    pub memory_seconds: f64,
}

impl AddAssign for OpCost {
    fn add_assign(&mut self, other: OpCost) {
        self.seconds += other.seconds;
        self.bytes += other.bytes;
        self.flops += other.flops;
        self.memory_seconds += other.memory_seconds;
    }
}

impl OpCost {
    /// `n` runs of the same op one after another.
    pub fn times(self, n: f64) -> OpCost {
        OpCost {
            seconds: self.seconds * n,
            bytes: self.bytes * n,
            flops: self.flops * n,
            memory_seconds: self.memory_seconds * n,
        }
    }

    /// Whether time went to memory traffic rather than arithmetic.
    pub fn memory_bound(&self) -> bool {
        self.memory_seconds >= self.seconds * (1.0 - 1e-12)
    }
}

/// The matrices of one expert (or dense FFN) for `hidden` and `intermediate` sizes: the
/// fused gate and up projection, then the down projection, as (n, k) of each GEMM.
pub fn ffn_gemms(hidden: u64, intermediate: u64) -> [(u64, u64); 2] {
    [(2 * intermediate, hidden), (hidden, intermediate)]
}

/// Costs of ops on one GPU.
#[derive(Debug, Clone, Copy)]
pub struct Roofline<'a> {
    gpu: &'a GpuSpec,
}

impl<'a> Roofline<'a> {
    pub fn new(gpu: &'a GpuSpec) -> Self {
        Roofline { gpu }
    }

    /// Achieved HBM bandwidth, bytes per second.
    fn hbm_bytes_per_s(&self) -> f64 {
        self.gpu.hbm_bandwidth_tb_s * 1e12 * self.gpu.efficiency.hbm_fraction
    }

    /// Dense tensor peak for GEMMs whose weights are in `precision`, FLOP/s. FP4 weights
    /// run on FP4 tensor cores where the GPU has them, otherwise on FP8 ones (Hopper).
    pub fn peak_flops(&self, precision: Precision) -> f64 {
        let t = &self.gpu.dense_tflops;
        let tflops = match precision {
            Precision::Bf16 => t.bf16,
            Precision::Fp8 => t.fp8,
            Precision::Nvfp4 | Precision::Mxfp4 => t.fp4.unwrap_or(t.fp8),
        };
        tflops * 1e12
    }

    /// The gap between two ops of a CUDA-graph-replayed iteration, seconds.
    pub fn launch_gap_s(&self) -> f64 {
        self.gpu.efficiency.launch_gap_us * 1e-6
    }

    fn padded_rows(&self, m: u64) -> u64 {
        let tile = u64::from(self.gpu.efficiency.mma_tile_rows);
        m.div_ceil(tile) * tile
    }

    /// A roofline over summed memory and arithmetic times of work done in one kernel.
    fn roofline(&self, bytes: f64, flops: f64, compute_seconds: f64) -> OpCost {
        let memory_seconds = bytes / self.hbm_bytes_per_s();
        OpCost {
            seconds: memory_seconds.max(compute_seconds),
            bytes,
            flops,
            memory_seconds,
        }
    }

    /// `m` tokens times an `n x k` weight matrix in `precision`; activations travel in the
    /// same format, results leave in BF16.
    pub fn gemm(&self, m: u64, n: u64, k: u64, precision: Precision) -> OpCost {
        self.grouped_gemm(&[m], &[(n, k)], precision)
    }

    /// One grouped GEMM kernel over several experts, each applying the same chain of
    /// matrices (`gemms`, as (n, k)) to its own tokens. Experts that receive no token are
    /// skipped and their weights never read: fewer experts per GPU, fewer bytes per step.
    pub fn grouped_gemm(
        &self,
        tokens_per_expert: &[u64],
        gemms: &[(u64, u64)],
        precision: Precision,
    ) -> OpCost {
        self.grouped_gemm_from(tokens_per_expert, |m| self.expert_sums(m, gemms, precision))
    }

    /// [`Roofline::grouped_gemm`] with each expert's sums from `sums(m)` (a memo of
    /// [`Roofline::expert_sums`]).
    pub fn grouped_gemm_from(
        &self,
        tokens_per_expert: &[u64],
        mut sums: impl FnMut(u64) -> (f64, f64, f64),
    ) -> OpCost {
        let (mut bytes, mut flops, mut compute_seconds) = (0.0, 0.0, 0.0);
        for &m in tokens_per_expert.iter().filter(|&&m| m > 0) {
            let (b, f, c) = sums(m);
            bytes += b;
            flops += f;
            compute_seconds += c;
        }
        self.roofline(bytes, flops, compute_seconds)
    }

    /// [`Roofline::grouped_gemm`] over `rows` spread as evenly as integers allow over
    /// `experts`, in constant time: the experts hold one of two row counts.
    pub fn balanced_grouped_gemm(
        &self,
        rows: u64,
        experts: u64,
        gemms: &[(u64, u64)],
        precision: Precision,
    ) -> OpCost {
        let experts = experts.max(1);
        let (each, extra) = (rows / experts, rows % experts);
        let (mut bytes, mut flops, mut compute_seconds) = (0.0, 0.0, 0.0);
        for (m, count) in [(each, experts - extra), (each + 1, extra)] {
            if m > 0 && count > 0 {
                let (b, f, c) = self.expert_sums(m, gemms, precision);
                let n = count as f64;
                bytes += b * n;
                flops += f * n;
                compute_seconds += c * n;
            }
        }
        self.roofline(bytes, flops, compute_seconds)
    }

    /// Bytes, useful FLOPs and padded compute seconds of one expert's `gemms` over `m` rows.
    pub fn expert_sums(
        &self,
        m: u64,
        gemms: &[(u64, u64)],
        precision: Precision,
    ) -> (f64, f64, f64) {
        let peak = self.peak_flops(precision) * self.gpu.efficiency.gemm_peak_fraction;
        let (mut bytes, mut flops, mut compute_seconds) = (0.0, 0.0, 0.0);
        for &(n, k) in gemms {
            let (mf, nf, kf) = (m as f64, n as f64, k as f64);
            bytes += precision.bytes(nf * kf, Usage::Weights)
                + precision.bytes(mf * kf, Usage::Activations)
                + Precision::Bf16.bytes(mf * nf, Usage::Activations);
            flops += 2.0 * mf * nf * kf;
            compute_seconds += 2.0 * self.padded_rows(m) as f64 * nf * kf / peak;
        }
        (bytes, flops, compute_seconds)
    }

    /// A ring all-reduce of `elements` BF16 values over `gpus` GPUs of one NVLink domain:
    /// each GPU sends and receives 2 (n - 1) / n of the data at the family's achieved
    /// all-to-all NVLink fraction (no latency term: the measured table supplies floors).
    pub fn all_reduce(&self, gpus: u64, elements: u64) -> OpCost {
        let n = gpus.max(1) as f64;
        let data = Precision::Bf16.bytes(elements as f64, Usage::Activations);
        let wire = 2.0 * (n - 1.0) / n * data;
        let bps = self.gpu.nvlink_gb_s * 1e9 * self.gpu.efficiency.nvlink_efficiency;
        OpCost {
            seconds: if gpus > 1 { wire / bps } else { 0.0 },
            bytes: wire,
            flops: 0.0,
            memory_seconds: 0.0,
        }
    }

    /// Streaming `bytes` through HBM and back (norms, sampling, small element-wise kernels).
    pub fn memory_pass(&self, bytes: f64) -> OpCost {
        self.roofline(bytes, 0.0, 0.0)
    }

    /// Decode attention of one layer for `requests` requests of `context` tokens each, with
    /// `queries` new tokens per request (1, or more when MTP drafts are verified), over
    /// `1/tp` of the heads. Reads every request's KV cache; MLA runs in its absorbed form,
    /// attending over the 576-wide latent (DeepSeek FlashMLA).
    pub fn decode_attention(
        &self,
        model: &ModelConfig,
        requests: u64,
        context: u64,
        queries: u64,
        kv: Precision,
        tp: u64,
    ) -> OpCost {
        let kv_per_layer = model.kv_elements_per_token_per_layer() as f64;
        let (r, c, q) = (requests as f64, context as f64, queries as f64);
        let flops_per_token_and_query = match model.attention {
            // QK^T over latent + RoPE (576), then PV over the latent (512), per head.
            Attention::Mla {
                heads,
                kv_lora_rank,
                qk_rope_head_dim,
                ..
            } => 2.0 * (heads as f64 / tp as f64) * (2 * kv_lora_rank + qk_rope_head_dim) as f64,
            Attention::Gqa {
                heads, head_dim, ..
            } => 2.0 * 2.0 * (heads as f64 / tp as f64) * head_dim as f64,
        };
        let kv_split = match model.attention {
            Attention::Mla { .. } => 1.0,
            Attention::Gqa { kv_heads, .. } => tp.min(kv_heads) as f64,
        };
        let bytes = kv.bytes(r * c * kv_per_layer / kv_split, Usage::KvCache);
        let flops = flops_per_token_and_query * r * c * q;
        let peak = self.gpu.dense_tflops.bf16 * 1e12 * self.gpu.efficiency.attention_peak_fraction;
        self.roofline(bytes, flops, flops / peak)
    }
}

impl Roofline<'_> {
    /// Prefill attention of one full-attention layer for a chunk of `chunk` new tokens after
    /// `prefix` tokens already in the cache (chunked prefill; `prefix` = 0 for a whole
    /// prompt), over `1/tp` of the heads. Causal: new token i attends to `prefix + i + 1`
    /// tokens, so FLOPs grow with the square of the length. MLA runs uncompressed here
    /// (per-head 192-wide keys, 128-wide values), as prefill kernels do.
    pub fn prefill_attention(
        &self,
        model: &ModelConfig,
        chunk: u64,
        prefix: u64,
        kv: Precision,
        tp: u64,
    ) -> OpCost {
        let (c, p) = (chunk as f64, prefix as f64);
        let pairs = c * p + c * (c + 1.0) / 2.0;
        let (heads, qk, v) = match model.attention {
            Attention::Mla {
                heads,
                qk_nope_head_dim,
                qk_rope_head_dim,
                v_head_dim,
                ..
            } => (heads, qk_nope_head_dim + qk_rope_head_dim, v_head_dim),
            Attention::Gqa {
                heads, head_dim, ..
            } => (heads, head_dim, head_dim),
        };
        let flops = 2.0 * (heads as f64 / tp as f64) * (qk + v) as f64 * pairs;
        // Read the prefix's cache, write the chunk's.
        let bytes = kv.bytes(
            (p + c) * model.kv_elements_per_token_per_layer() as f64,
            Usage::KvCache,
        );
        let peak = self.gpu.dense_tflops.bf16 * 1e12 * self.gpu.efficiency.attention_peak_fraction;
        self.roofline(bytes, flops, flops / peak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{gpu, model};

    #[test]
    fn large_fp8_gemm_on_h800_runs_at_deepgemm_speed() {
        let h800 = gpu("h800-sxm");
        let r = Roofline::new(&h800);
        let c = r.gemm(4096, 7168, 2048, Precision::Fp8);
        assert!(!c.memory_bound());
        let tflops = c.flops / c.seconds / 1e12;
        assert!((tflops - 1350.0).abs() < 10.0, "{tflops}");
    }

    #[test]
    fn small_gemms_are_bound_by_reading_weights() {
        let h800 = gpu("h800-sxm");
        let r = Roofline::new(&h800);
        let c = r.gemm(8, 7168, 2048, Precision::Fp8);
        assert!(c.memory_bound());
        let gb_s = c.bytes / c.seconds / 1e9;
        assert!(
            (gb_s - 3015.0).abs() < 1.0,
            "FlashMLA-class 3000 GB/s: {gb_s}"
        );
    }

    #[test]
    fn padding_makes_efficiency_grow_with_tokens_per_expert() {
        let b200 = gpu("b200-gb200");
        let r = Roofline::new(&b200);
        let expert = ffn_gemms(7168, 2048);
        let achieved = |m: u64| {
            let c = r.grouped_gemm(&[m; 8], &expert, Precision::Nvfp4);
            c.flops / c.seconds
        };
        // More tokens per expert, more useful arithmetic per second, up to the peak.
        let (a1, a64, a512, a4096) = (achieved(1), achieved(64), achieved(512), achieved(4096));
        assert!(
            a1 < a64 && a64 < a512 && a512 <= a4096,
            "{a1} {a64} {a512} {a4096}"
        );
        assert!(
            (a4096 / (10_000e12 * 0.68) - 1.0).abs() < 1e-9,
            "compute-bound at the achieved peak"
        );
        // Compute-bound at 640 tokens; 641 pad to 704 rows (tiles of 64): 10% more time.
        let t = |m: u64| r.grouped_gemm(&[m], &expert, Precision::Nvfp4).seconds;
        assert!((t(641) / t(640) - 704.0 / 640.0).abs() < 1e-9);
    }

    #[test]
    fn balanced_grouped_gemm_equals_the_loop_over_experts() {
        let b200 = gpu("b200-gb200");
        let r = Roofline::new(&b200);
        let expert = ffn_gemms(7168, 2048);
        for (rows, experts) in [(0, 8), (5, 8), (1000, 9), (4096, 32), (7, 1)] {
            let each = rows / experts;
            let split: Vec<u64> = (0..experts)
                .map(|i| each + u64::from(i < rows % experts))
                .collect();
            let a = r.grouped_gemm(&split, &expert, Precision::Nvfp4);
            let b = r.balanced_grouped_gemm(rows, experts, &expert, Precision::Nvfp4);
            assert!(
                (a.seconds - b.seconds).abs() <= 1e-12 * a.seconds.max(1e-30),
                "{rows} {experts}"
            );
            assert!((a.bytes - b.bytes).abs() <= 1e-9 * a.bytes.max(1.0));
        }
    }

    #[test]
    fn experts_without_tokens_cost_nothing() {
        let b200 = gpu("b200-gb200");
        let r = Roofline::new(&b200);
        let expert = ffn_gemms(7168, 2048);
        let busy = r.grouped_gemm(&[3, 0, 0, 5], &expert, Precision::Nvfp4);
        let same = r.grouped_gemm(&[3, 5], &expert, Precision::Nvfp4);
        assert_eq!(busy, same);
        assert_eq!(
            r.grouped_gemm(&[0, 0], &expert, Precision::Nvfp4),
            OpCost::default()
        );
        // Two experts' weights in NVFP4: 2 x 44.04M params x 0.5625 B.
        let weights = 2.0 * 3.0 * 7168.0 * 2048.0 * 0.5625;
        assert!(busy.bytes > weights && busy.bytes < weights * 1.01);
    }

    #[test]
    fn prefill_attention_is_quadratic_and_chunking_conserves_work() {
        let b200 = gpu("b200-gb200");
        let ds = model("deepseek-r1");
        let r = Roofline::new(&b200);
        let whole = |n| r.prefill_attention(&ds, n, 0, Precision::Fp8, 1);
        let ratio = whole(8192).flops / whole(4096).flops;
        assert!((ratio - 4.0).abs() < 0.01, "{ratio}");
        assert!(!whole(8192).memory_bound());
        // Four chunks of 2,048 do the same arithmetic as one prompt of 8,192.
        let chunked: f64 = (0..4)
            .map(|i| {
                r.prefill_attention(&ds, 2048, 2048 * i, Precision::Fp8, 1)
                    .flops
            })
            .sum();
        assert!((chunked / whole(8192).flops - 1.0).abs() < 1e-12);
        // 128 heads x (192 + 128) x 2 per (query, key) pair.
        assert_eq!(whole(1).flops, 2.0 * 128.0 * 320.0);
    }

    #[test]
    fn mla_decode_attention_reads_the_latent_cache() {
        let h800 = gpu("h800-sxm");
        let ds = model("deepseek-r1");
        let r = Roofline::new(&h800);
        let c = r.decode_attention(&ds, 64, 4096, 1, Precision::Bf16, 1);
        assert_eq!(c.bytes, 64.0 * 4096.0 * 576.0 * 2.0);
        assert_eq!(c.flops, 2.0 * 128.0 * 1088.0 * 64.0 * 4096.0);
        // Two queries per request (MTP) double the arithmetic, not the bytes.
        let mtp = r.decode_attention(&ds, 64, 4096, 2, Precision::Bf16, 1);
        assert_eq!((mtp.bytes, mtp.flops), (c.bytes, 2.0 * c.flops));
        assert!(mtp.seconds >= c.seconds);
    }
}
