//! Number formats and their storage cost. Bytes are computed from the format (element bits
//! plus the scale shared by each block of elements), never typed in, and depend on where the
//! numbers live: weights are scaled in 2-D tiles, activations and transport per row block,
//! the KV cache per tensor.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// bfloat16.
    Bf16,
    /// FP8 E4M3 with block scales (per 128 x 128 tile of weights, per 32 activations)
    Fp8,
    /// NVIDIA NVFP4: E2M1 with one E4M3 scale per 16 values.
    Nvfp4,
    /// OCP MXFP4: E2M1 with one E8M0 scale per 32 values.
    Mxfp4,
}

/// Where numbers are stored, which decides how their scales are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Weights,
    /// Activations, including tokens sent in the MoE all-to-all.
    Activations,
    KvCache,
}

impl Precision {
    /// Average bits per element, scales included.
    /// - FP8 weights: one FP32 scale per 128 x 128 tile (DeepSeek-V3 tech report, 3.3.1);
    ///   FP8 activations: one E8M0 scale per 32 (MXFP8), which gives the 7,392 B per token
    ///   of hidden 7,168 quoted in reference section 2 (TensorRT-LLM tech blog 18); FP8 KV
    ///   cache: a per-tensor scale, so exactly half of BF16 (reference section 3: 35,136 B).
    /// - NVFP4: 4-bit E2M1 + one 8-bit E4M3 scale per 16 = 4.5 bits (reference sections 2-3:
    ///   4,032 B per token of hidden 7,168).
    /// - MXFP4: 4-bit E2M1 + one 8-bit E8M0 scale per 32 = 4.25 bits (OCP MX spec v1.0).
    pub fn bits_per_element(self, usage: Usage) -> f64 {
        match (self, usage) {
            (Precision::Bf16, _) => 16.0,
            (Precision::Fp8, Usage::Weights) => 8.0 + 32.0 / (128.0 * 128.0),
            (Precision::Fp8, Usage::Activations) => 8.0 + 8.0 / 32.0,
            (Precision::Fp8, Usage::KvCache) => 8.0,
            (Precision::Nvfp4, _) => 4.0 + 8.0 / 16.0,
            (Precision::Mxfp4, _) => 4.0 + 8.0 / 32.0,
        }
    }

    /// Bytes to store `elements` numbers.
    pub fn bytes(self, elements: f64, usage: Usage) -> f64 {
        elements * self.bits_per_element(usage) / 8.0
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16",
            Precision::Fp8 => "fp8",
            Precision::Nvfp4 => "nvfp4",
            Precision::Mxfp4 => "mxfp4",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_bytes_per_token_match_the_reference() {
        let hidden = 7168.0;
        assert_eq!(Precision::Bf16.bytes(hidden, Usage::Activations), 14_336.0);
        assert_eq!(Precision::Fp8.bytes(hidden, Usage::Activations), 7_392.0);
        assert_eq!(Precision::Nvfp4.bytes(hidden, Usage::Activations), 4_032.0);
        assert_eq!(Precision::Mxfp4.bytes(hidden, Usage::Activations), 3_808.0);
    }

    #[test]
    fn one_deepseek_expert_in_each_format() {
        // Reference section 3: ~42 MiB in FP8 (block scales aside), ~24 MiB in NVFP4.
        let params = 3.0 * 7168.0 * 2048.0;
        let mib = |p: Precision| p.bytes(params, Usage::Weights) / (1u64 << 20) as f64;
        assert!(
            (mib(Precision::Fp8) - 42.0).abs() < 0.1,
            "{}",
            mib(Precision::Fp8)
        );
        assert!(
            (mib(Precision::Nvfp4) - 23.6).abs() < 0.1,
            "{}",
            mib(Precision::Nvfp4)
        );
        assert!(mib(Precision::Mxfp4) < mib(Precision::Nvfp4));
    }

    #[test]
    fn fp8_kv_cache_is_half_of_bf16() {
        assert_eq!(
            Precision::Fp8.bytes(576.0, Usage::KvCache) * 2.0,
            Precision::Bf16.bytes(576.0, Usage::KvCache)
        );
    }
}
