//! The memory plan of one GPU in a deployment: its share of the weights by class, what is
//! kept back for activations and workspace, and how much KV cache (tokens, requests) fits
//! in the rest. This is the first of wide EP's mechanisms: fewer experts per GPU leave more
//! HBM for KV cache, so more requests per GPU.

use super::{ModelConfig, Precision, Usage};
use crate::hardware::GpuSpec;
use serde::Serialize;
use std::fmt;

/// Share of the memory left after weights that goes to the KV cache; the rest is kept for
/// activations, workspace and the CUDA context. TensorRT-LLM's default
/// (`KvCacheConfig.free_gpu_memory_fraction` = 0.9, TensorRT-LLM LLM API reference).
pub const DEFAULT_KV_SHARE_OF_FREE_MEMORY: f64 = 0.9;

const GIB: f64 = (1u64 << 30) as f64;

/// How attention is laid out over the GPUs of the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionLayout {
    /// Data parallel: every GPU has all attention weights and its own requests.
    Dp,
    /// Tensor parallel over this many GPUs.
    Tp(u64),
}

impl AttentionLayout {
    /// GPUs that share one set of requests: the TP group, or 1.
    pub fn ways(self) -> u64 {
        match self {
            AttentionLayout::Dp => 1,
            AttentionLayout::Tp(n) => n,
        }
    }
}

impl fmt::Display for AttentionLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttentionLayout::Dp => f.write_str("dp"),
            AttentionLayout::Tp(n) => write!(f, "tp:{n}"),
        }
    }
}

/// One deployment's choices.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deployment {
    /// Expert-parallel ranks: groups of `moe_tp` GPUs, each group holding its experts.
    pub ep: u64,
    /// GPUs each expert's intermediate dimension is split over (tensor-parallel experts, as
    /// SGLang and vLLM run them with `--tp`); 1 = expert parallelism alone. The instance
    /// has `ep x moe_tp` GPUs.
    pub moe_tp: u64,
    /// Expert slots per MoE layer over the EP group (>= routed experts; extra slots hold
    /// redundant copies of hot experts).
    pub slots: u64,
    pub attention: AttentionLayout,
    /// Routed and shared experts.
    pub expert_precision: Precision,
    /// Dense FFN and MTP projection (and attention, unless `attention_precision` differs).
    pub other_precision: Precision,
    /// Attention projections (MLA down/up projections; the measured MLA block's GEMMs).
    /// Checkpoints keep them apart: NVIDIA's DeepSeek-R1 FP4 keeps them in BF16.
    pub attention_precision: Precision,
    pub kv_precision: Precision,
    /// Whether the MTP module is loaded (speculative decoding with MTP).
    pub mtp: bool,
    pub kv_share_of_free_memory: f64,
}

/// Weight bytes on one GPU, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WeightBytes {
    pub routed_experts: f64,
    pub shared_experts: f64,
    pub attention: f64,
    pub dense_ffn: f64,
    /// Input embedding and LM head.
    pub embedding_and_head: f64,
    /// Routers, norms and the MTP projection.
    pub other: f64,
}

impl WeightBytes {
    pub fn total(&self) -> f64 {
        self.routed_experts
            + self.shared_experts
            + self.attention
            + self.dense_ffn
            + self.embedding_and_head
            + self.other
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryPlan {
    pub model: String,
    pub gpu: String,
    pub deployment: Deployment,
    pub experts_per_gpu_per_layer: u64,
    /// MoE layers holding routed experts (the MTP module's included when loaded).
    pub expert_layers: u64,
    pub hbm_usable_bytes: f64,
    pub weights: WeightBytes,
    pub reserve_bytes: f64,
    pub kv_bytes: f64,
    /// KV bytes one more token of context costs this GPU.
    pub kv_bytes_per_token: f64,
    pub kv_tokens: f64,
    pub isl: u64,
    pub osl: u64,
    /// Requests of `isl + osl` tokens whose KV cache fits on this GPU.
    pub max_requests: f64,
}

/// A deployment that cannot work, with every reason and by how much.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.join("\n  "))]
pub struct PlanError(pub Vec<String>);

/// Plans one GPU's memory. `isl + osl` is the context a request reaches.
pub fn plan(
    model: &ModelConfig,
    gpu: &GpuSpec,
    d: &Deployment,
    isl: u64,
    osl: u64,
) -> Result<MemoryPlan, PlanError> {
    let mut problems = Vec::new();
    let experts = model.moe.routed_experts;
    if d.ep == 0 {
        problems.push("EP size must be at least 1".to_owned());
    }
    if d.ep > d.slots {
        problems.push(format!(
            "EP {} exceeds the {} expert slots: every GPU needs at least one slot",
            d.ep, d.slots
        ));
    }
    if d.slots < experts {
        problems.push(format!(
            "{} expert slots are fewer than the model's {experts} routed experts: every expert needs a slot",
            d.slots
        ));
    }
    if d.ep > 0 && d.ep <= d.slots && !d.slots.is_multiple_of(d.ep) {
        // Nearest multiples of EP that still give every expert a slot.
        let above = d.slots.max(experts).div_ceil(d.ep).saturating_mul(d.ep);
        let below = d.slots / d.ep * d.ep;
        let options = if below >= experts && below > 0 {
            format!("{below} or {above}")
        } else {
            above.to_string()
        };
        problems.push(format!(
            "{} slots do not divide over EP {} ({} left over); use {options}",
            d.slots,
            d.ep,
            d.slots % d.ep
        ));
    }
    let tp = d.attention.ways();
    if tp == 0 {
        problems
            .push("tensor-parallel attention needs at least 1 GPU (tp:N with N >= 1)".to_owned());
    }
    if d.mtp && model.mtp_modules == 0 {
        problems.push(format!("{} has no MTP module", model.name));
    }
    if !(d.kv_share_of_free_memory > 0.0 && d.kv_share_of_free_memory <= 1.0) {
        problems.push(format!(
            "the KV share of free memory must be in (0, 1], got {}",
            d.kv_share_of_free_memory
        ));
    }
    if isl.saturating_add(osl) == 0 {
        problems.push("a request needs at least one token (ISL + OSL >= 1)".to_owned());
    }
    if !problems.is_empty() {
        return Err(PlanError(problems));
    }

    let experts_per_gpu = d.slots / d.ep;
    let mtp = if d.mtp { model.mtp_modules } else { 0 };
    let expert_layers = model.moe_layers() + mtp;
    let p = model.params();
    let mtp_share = if d.mtp { 1.0 } else { 0.0 };
    let w = |params: f64, precision: Precision| precision.bytes(params, Usage::Weights);
    let split = tp as f64;
    let weights = WeightBytes {
        routed_experts: w(
            (expert_layers * experts_per_gpu) as f64 * model.expert_params(),
            d.expert_precision,
        ) / d.moe_tp.max(1) as f64,
        shared_experts: w(
            p.main.shared_experts + mtp_share * p.mtp.shared_experts,
            d.expert_precision,
        ),
        attention: w(
            p.main.attention + mtp_share * p.mtp.attention,
            d.attention_precision,
        ) / split,
        dense_ffn: w(p.main.dense_ffn, d.other_precision) / split,
        embedding_and_head: w(p.main.embedding + p.main.lm_head, Precision::Bf16) / split,
        other: w(
            p.main.router + p.main.norms + mtp_share * (p.mtp.router + p.mtp.norms),
            Precision::Bf16,
        ) + w(mtp_share * p.mtp.mtp_projection, d.other_precision),
    };
    let usable = gpu.hbm_usable_gib.map_or(gpu.hbm_gb * 1e9, |gib| gib * GIB);
    let free = usable - weights.total();
    if free <= 0.0 {
        return Err(PlanError(vec![format!(
            "{} needs {:.1} GiB per GPU for weights at EP {} ({experts_per_gpu} experts per GPU per layer, {} experts), the GPU ({}) has {:.1} GiB",
            model.name,
            weights.total() / GIB,
            d.ep,
            d.expert_precision,
            gpu.name,
            usable / GIB
        )]));
    }
    let kv_bytes = free * d.kv_share_of_free_memory;
    // MLA's latent is shared by all heads, so tensor-parallel ranks each keep all of it;
    // GQA splits its KV heads over up to as many ranks.
    let kv_split = match model.attention {
        super::Attention::Mla { .. } => 1.0,
        super::Attention::Gqa { kv_heads, .. } => tp.min(kv_heads) as f64,
    };
    let kv_bytes_per_element = d.kv_precision.bits_per_element(Usage::KvCache) / 8.0;
    let context = isl.saturating_add(osl);
    let request_bytes = model.kv_elements(context, mtp) * kv_bytes_per_element / kv_split;
    let per_token = (model.kv_elements(1_000_000, mtp) - model.kv_elements(999_999, mtp))
        * kv_bytes_per_element
        / kv_split;
    // A tensor-parallel group shares its requests, so a GPU serves 1/tp of them.
    let max_requests = (kv_bytes / request_bytes).floor() / tp as f64;
    if max_requests < 1.0 / tp as f64 {
        return Err(PlanError(vec![format!(
            "one request of {} tokens needs {:.2} GiB of KV cache per GPU; only {:.2} GiB is left after weights and the activation reserve",
            context,
            request_bytes / GIB,
            kv_bytes / GIB
        )]));
    }
    Ok(MemoryPlan {
        model: model.name.clone(),
        gpu: gpu.name.clone(),
        deployment: d.clone(),
        experts_per_gpu_per_layer: experts_per_gpu,
        expert_layers,
        hbm_usable_bytes: usable,
        weights,
        reserve_bytes: free - kv_bytes,
        kv_bytes,
        kv_bytes_per_token: per_token,
        kv_tokens: (kv_bytes / per_token).floor(),
        isl,
        osl,
        max_requests,
    })
}

impl MemoryPlan {
    /// The JSON object of `epsim memory --format json`: GiB per GPU, field names with units.
    pub fn to_json(&self) -> serde_json::Value {
        let gib = |b: f64| (b / GIB * 1000.0).round() / 1000.0;
        let w = &self.weights;
        serde_json::json!({
            "model": self.model,
            "gpu": self.gpu,
            "ep": self.deployment.ep,
            "slots": self.deployment.slots,
            "attention": self.deployment.attention.to_string(),
            "expert_precision": self.deployment.expert_precision,
            "other_precision": self.deployment.other_precision,
            "attention_precision": self.deployment.attention_precision,
            "kv_precision": self.deployment.kv_precision,
            "mtp": self.deployment.mtp,
            "experts_per_gpu_per_layer": self.experts_per_gpu_per_layer,
            "expert_layers": self.expert_layers,
            "hbm_usable_gib": gib(self.hbm_usable_bytes),
            "weights_gib_per_gpu": gib(w.total()),
            "weights_gib_by_class": {
                "routed_experts": gib(w.routed_experts),
                "shared_experts": gib(w.shared_experts),
                "attention": gib(w.attention),
                "dense_ffn": gib(w.dense_ffn),
                "embedding_and_head": gib(w.embedding_and_head),
                "other": gib(w.other),
            },
            "reserve_gib_per_gpu": gib(self.reserve_bytes),
            "kv_gib_per_gpu": gib(self.kv_bytes),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_tokens_per_gpu": self.kv_tokens,
            "isl": self.isl,
            "osl": self.osl,
            "max_requests_per_gpu": self.max_requests,
        })
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.deployment;
        let gib = |b: f64| format!("{:>8.1} GiB", b / GIB);
        let w = &self.weights;
        writeln!(
            f,
            "{} on {}: EP {}, {} slots ({} experts per GPU per layer, {} layers), attention {}, MTP {}",
            self.model,
            self.gpu,
            d.ep,
            d.slots,
            self.experts_per_gpu_per_layer,
            self.expert_layers,
            d.attention,
            if d.mtp { "on" } else { "off" }
        )?;
        writeln!(
            f,
            "  precision: experts {}, attention {}, other weights {}, KV cache {}",
            d.expert_precision, d.attention_precision, d.other_precision, d.kv_precision
        )?;
        writeln!(f, "  HBM usable            {}", gib(self.hbm_usable_bytes))?;
        writeln!(f, "  weights               {}", gib(w.total()))?;
        writeln!(f, "    routed experts      {}", gib(w.routed_experts))?;
        writeln!(f, "    shared experts      {}", gib(w.shared_experts))?;
        writeln!(f, "    attention           {}", gib(w.attention))?;
        writeln!(f, "    dense FFN           {}", gib(w.dense_ffn))?;
        writeln!(f, "    embedding, LM head  {}", gib(w.embedding_and_head))?;
        writeln!(f, "    routers, norms, MTP {}", gib(w.other))?;
        writeln!(
            f,
            "  activation reserve    {}  ({:.0}% of what weights leave)",
            gib(self.reserve_bytes),
            (1.0 - d.kv_share_of_free_memory) * 100.0
        )?;
        writeln!(
            f,
            "  KV cache              {}  ({:.0} B per token)",
            gib(self.kv_bytes),
            self.kv_bytes_per_token
        )?;
        writeln!(f, "  KV tokens per GPU     {:>12.0}", self.kv_tokens)?;
        writeln!(
            f,
            "  max requests per GPU  {:>12.0}  (ISL {} + OSL {})",
            self.max_requests, self.isl, self.osl
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn inputs(model: &str, gpu: &str) -> (ModelConfig, GpuSpec) {
        (testing::model(model), testing::gpu(gpu))
    }

    fn deployment(ep: u64, slots: u64) -> Deployment {
        testing::nvfp4_deployment(ep, slots)
    }

    #[test]
    fn all_moe_weights_in_nvfp4_are_348_gib() {
        // Reference section 3: all MoE weights (58 layers + MTP) in NVFP4 ~348 GiB; at EP1
        // one GPU would hold them all.
        let (m, g) = inputs("deepseek-r1", "b200-gb200");
        let experts = 256 * 59;
        let bytes = Precision::Nvfp4.bytes(experts as f64 * m.expert_params(), Usage::Weights);
        assert!((bytes / GIB - 348.0).abs() < 1.0, "{}", bytes / GIB);
        let e = plan(&m, &g, &deployment(1, 256), 1024, 1024).unwrap_err();
        assert!(e.0[0].contains("needs 365.5 GiB per GPU"), "{e}");
    }

    #[test]
    fn wider_ep_leaves_more_kv_cache() {
        let (m, g) = inputs("deepseek-r1", "b200-gb200");
        let ep8 = plan(&m, &g, &deployment(8, 256), 1024, 1024).unwrap();
        let ep32 = plan(&m, &g, &deployment(32, 288), 1024, 1024).unwrap();
        assert_eq!(ep8.experts_per_gpu_per_layer, 32);
        assert_eq!(ep32.experts_per_gpu_per_layer, 9);
        assert_eq!(ep8.expert_layers, 59);
        // Routed experts scale with experts per GPU; everything else is replicated (DP).
        let ratio = ep8.weights.routed_experts / ep32.weights.routed_experts;
        assert!((ratio - 32.0 / 9.0).abs() < 1e-9);
        assert_eq!(ep8.weights.attention, ep32.weights.attention);
        assert!(ep32.kv_bytes > ep8.kv_bytes);
        assert!(ep32.max_requests > ep8.max_requests);
        // Conservation: weights + reserve + KV = usable HBM.
        for p in [&ep8, &ep32] {
            let sum = p.weights.total() + p.reserve_bytes + p.kv_bytes;
            assert!((sum - p.hbm_usable_bytes).abs() < 1.0);
            assert!((p.reserve_bytes / (p.reserve_bytes + p.kv_bytes) - 0.1).abs() < 1e-12);
        }
        // The MTP layer caches KV too: 62 x 576 B in FP8.
        assert_eq!(ep8.kv_bytes_per_token, 62.0 * 576.0);
    }

    #[test]
    fn tensor_parallel_attention_splits_weights_but_not_mla_kv() {
        let (m, g) = inputs("deepseek-r1", "b200-gb200");
        let dp = plan(&m, &g, &deployment(8, 256), 1024, 1024).unwrap();
        let tp = plan(
            &m,
            &g,
            &Deployment {
                attention: AttentionLayout::Tp(8),
                ..deployment(8, 256)
            },
            1024,
            1024,
        )
        .unwrap();
        assert!((tp.weights.attention * 8.0 - dp.weights.attention).abs() < 1.0);
        assert_eq!(
            tp.kv_bytes_per_token, dp.kv_bytes_per_token,
            "MLA's latent is replicated"
        );
        assert!(
            tp.max_requests < dp.max_requests,
            "DP attention serves more requests per GPU with MLA"
        );
        let (q, h) = inputs("qwen3-235b-a22b", "h200-sxm");
        let q_dp = plan(
            &q,
            &h,
            &Deployment {
                mtp: false,
                ..deployment(8, 128)
            },
            1024,
            1024,
        )
        .unwrap();
        let q_tp = plan(
            &q,
            &h,
            &Deployment {
                mtp: false,
                attention: AttentionLayout::Tp(8),
                ..deployment(8, 128)
            },
            1024,
            1024,
        )
        .unwrap();
        assert_eq!(
            q_tp.kv_bytes_per_token * 4.0,
            q_dp.kv_bytes_per_token,
            "4 KV heads split over up to 4 ranks"
        );
    }

    #[test]
    fn bad_combinations_say_why_and_by_how_much() {
        let (m, g) = inputs("deepseek-r1", "h100-sxm");
        let e = plan(
            &m,
            &g,
            &Deployment {
                expert_precision: Precision::Fp8,
                ..deployment(8, 256)
            },
            1024,
            1024,
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(
            e.0[0].contains("needs 95.5 GiB per GPU for weights")
                && e.0[0].contains("has 74.5 GiB"),
            "{e}"
        );
        let e = plan(&m, &g, &deployment(7, 200), 1024, 1024).unwrap_err();
        assert_eq!(
            e.0,
            vec![
                "200 expert slots are fewer than the model's 256 routed experts: every expert needs a slot".to_owned(),
                "200 slots do not divide over EP 7 (4 left over); use 259".to_owned(),
            ]
        );
        let e = plan(&m, &g, &deployment(32, 300), 1024, 1024).unwrap_err();
        assert_eq!(
            e.0,
            vec!["300 slots do not divide over EP 32 (12 left over); use 288 or 320".to_owned()]
        );
        let (mixtral, _) = inputs("mixtral-8x7b", "h100-sxm");
        let e = plan(&mixtral, &g, &deployment(8, 8), 1024, 1024).unwrap_err();
        assert!(e.0[0].contains("has no MTP module"));
    }
}
