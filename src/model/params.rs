//! Parameter counts per component, derived from the architecture. Biases (gpt-oss has some)
//! are left out: under 0.1% of any model here.

use super::config::{Attention, ModelConfig};
use serde::Serialize;

/// Parameters of one MTP module, or of the whole model without it, by component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ComponentParams {
    pub embedding: f64,
    pub lm_head: f64,
    /// Attention projections and their norms, over all layers.
    pub attention: f64,
    /// Per-layer RMS norms outside attention, and the final norm.
    pub norms: f64,
    pub dense_ffn: f64,
    pub shared_experts: f64,
    pub routed_experts: f64,
    pub router: f64,
    /// MTP modules' own projection and norms (their layers are counted in the other fields
    /// of [`ModelParams::mtp`]).
    pub mtp_projection: f64,
}

impl ComponentParams {
    pub fn total(&self) -> f64 {
        self.embedding
            + self.lm_head
            + self.attention
            + self.norms
            + self.dense_ffn
            + self.shared_experts
            + self.routed_experts
            + self.router
            + self.mtp_projection
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelParams {
    /// The main model (no MTP).
    pub main: ComponentParams,
    /// All MTP modules together (they share the main model's embedding and LM head).
    pub mtp: ComponentParams,
    /// Parameters one token uses in the main model: everything but the input embedding (a
    /// table lookup, no arithmetic) and the routed experts it was not sent to. The
    /// convention of the published "active" figures (see the tests).
    pub active: f64,
}

impl ModelConfig {
    /// Parameters of one routed or shared expert: gate, up and down projections.
    pub fn expert_params(&self) -> f64 {
        // In floating point: a product of two sizes can pass u64 (a wrapped one read 0 GiB).
        3.0 * self.hidden_size as f64 * self.moe.expert_intermediate_size as f64
    }

    /// The attention projections of one layer as (n, k) weight matrices (outputs x inputs),
    /// over `1/tp` of the heads. MLA: q down and up (or one q matrix without q_lora), the
    /// joint KV down projection with the RoPE key, the KV up projection, the output.
    pub fn attention_projections(&self, tp: u64) -> Vec<(u64, u64)> {
        let h = self.hidden_size;
        match self.attention {
            Attention::Mla {
                heads,
                q_lora_rank,
                kv_lora_rank,
                qk_nope_head_dim,
                qk_rope_head_dim,
                v_head_dim,
            } => {
                let heads = heads.div_ceil(tp);
                let qk = qk_nope_head_dim + qk_rope_head_dim;
                let mut gemms = Vec::with_capacity(5);
                if q_lora_rank > 0 {
                    gemms.push((q_lora_rank, h));
                    gemms.push((heads * qk, q_lora_rank));
                } else {
                    gemms.push((heads * qk, h));
                }
                gemms.push((kv_lora_rank + qk_rope_head_dim, h));
                gemms.push((heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank));
                gemms.push((h, heads * v_head_dim));
                gemms
            }
            Attention::Gqa {
                heads,
                kv_heads,
                head_dim,
                ..
            } => {
                let (heads, kv_heads) = (heads.div_ceil(tp), kv_heads.div_ceil(tp));
                vec![
                    (heads * head_dim, h),
                    (2 * kv_heads * head_dim, h),
                    (h, heads * head_dim),
                ]
            }
        }
    }

    /// Attention parameters of one layer: its projections and their norms.
    pub fn attention_params_per_layer(&self) -> f64 {
        let matrices: u64 = self
            .attention_projections(1)
            .iter()
            .map(|(n, k)| n * k)
            .sum();
        let norms = match self.attention {
            // RMS norms after the q and KV down projections.
            Attention::Mla {
                q_lora_rank,
                kv_lora_rank,
                ..
            } => q_lora_rank + kv_lora_rank,
            Attention::Gqa {
                qk_norm, head_dim, ..
            } => {
                if qk_norm {
                    2 * head_dim
                } else {
                    0
                }
            }
        };
        (matrices + norms) as f64
    }

    /// One MoE layer's router (a linear map from the hidden state to expert scores).
    pub fn router_params(&self) -> f64 {
        self.moe.routed_experts as f64 * self.hidden_size as f64
    }

    pub fn params(&self) -> ModelParams {
        let h = self.hidden_size as f64;
        let layers = self.layers as f64;
        let moe_layers = self.moe_layers() as f64;
        let table = self.vocab_size as f64 * self.hidden_size as f64;
        let expert = self.expert_params();
        let main = ComponentParams {
            embedding: table,
            lm_head: if self.tie_embeddings { 0.0 } else { table },
            attention: layers * self.attention_params_per_layer(),
            norms: layers * 2.0 * h + h,
            dense_ffn: self.dense_layers as f64 * 3.0 * h * self.dense_intermediate_size as f64,
            shared_experts: moe_layers * self.moe.shared_experts as f64 * expert,
            routed_experts: moe_layers * self.moe.routed_experts as f64 * expert,
            router: moe_layers * self.router_params(),
            mtp_projection: 0.0,
        };
        // An MTP module: norms of the embedding and hidden state, a projection of their
        // concatenation (2h -> h), one MoE transformer layer, and a norm before the shared
        // LM head (DeepSeek-V3 tech report, 2.2).
        let modules = self.mtp_modules as f64;
        let mtp = ComponentParams {
            attention: modules * self.attention_params_per_layer(),
            norms: modules * (2.0 * h + 3.0 * h),
            shared_experts: modules * self.moe.shared_experts as f64 * expert,
            routed_experts: modules * self.moe.routed_experts as f64 * expert,
            router: modules * self.router_params(),
            mtp_projection: modules * 2.0 * h * h,
            ..ComponentParams::default()
        };
        let unused_experts =
            moe_layers * (self.moe.routed_experts - self.moe.experts_per_token) as f64 * expert;
        ModelParams {
            main,
            mtp,
            active: main.total() - main.embedding - unused_experts,
        }
    }

    /// Layers that attend to the whole context, layers that attend to a sliding window,
    /// and the window's length in tokens (0 when there is none).
    pub fn attention_layer_split(&self) -> (u64, u64, u64) {
        match &self.attention {
            Attention::Gqa {
                sliding_window: Some(w),
                ..
            } => (self.layers - w.layers, w.layers, w.tokens),
            _ => (self.layers, 0, 0),
        }
    }

    /// KV-cache elements one token adds in one full-attention layer.
    pub fn kv_elements_per_token_per_layer(&self) -> u64 {
        match self.attention {
            // One latent and one shared RoPE key per token, for all heads.
            Attention::Mla {
                kv_lora_rank,
                qk_rope_head_dim,
                ..
            } => kv_lora_rank + qk_rope_head_dim,
            Attention::Gqa {
                kv_heads, head_dim, ..
            } => 2 * kv_heads * head_dim,
        }
    }

    /// KV-cache elements held for one request of `context` tokens, over `extra_layers`
    /// full-attention layers on top of the model's own (an MTP module adds one).
    pub fn kv_elements(&self, context: u64, extra_layers: u64) -> f64 {
        let (full, windowed, window) = self.attention_layer_split();
        let per_layer = self.kv_elements_per_token_per_layer() as f64;
        per_layer
            * ((full + extra_layers) as f64 * context as f64
                + windowed as f64 * context.min(window) as f64)
    }
}

#[cfg(test)]
mod tests {
    fn model(name: &str) -> crate::model::ModelConfig {
        crate::testing::model(name)
    }

    fn assert_within(what: &str, got: f64, published: f64, tolerance: f64) {
        let error = (got - published).abs() / published;
        assert!(
            error <= tolerance,
            "{what}: {:.3}B vs published {:.3}B ({:.2}% off)",
            got / 1e9,
            published / 1e9,
            error * 100.0
        );
    }

    /// Sizes whose product passes u64 still count (a wrapped product read 0 GiB).
    #[test]
    fn huge_sizes_do_not_wrap() {
        let mut m = model("deepseek-r1");
        m.moe.expert_intermediate_size = 1 << 52;
        let expert = m.expert_params();
        assert!((expert / (3.0 * 7168.0 * 2f64.powi(52)) - 1.0).abs() < 1e-12);
    }

    /// Published totals and active counts (reference section 3; Kimi-K2's total is its
    /// tech report's 1.04T, which the reference rounds to ~1T), within 2%.
    #[test]
    fn totals_reproduce_the_published_figures() {
        let cases = [
            ("deepseek-r1", 671e9, 36.7e9),
            ("kimi-k2", 1.04e12, 32e9),
            ("qwen3-235b-a22b", 235e9, 22e9),
            ("mixtral-8x7b", 46.7e9, 12.9e9),
            ("gpt-oss-120b", 117e9, 5.1e9),
        ];
        for (name, total, active) in cases {
            let p = model(name).params();
            assert_within(&format!("{name} total"), p.main.total(), total, 0.02);
            assert_within(&format!("{name} active"), p.active, active, 0.02);
        }
    }

    #[test]
    fn deepseek_mtp_module_is_11_5b() {
        let p = model("deepseek-r1").params();
        assert_within("MTP", p.mtp.total(), 11.5e9, 0.02);
        assert_eq!(
            p.mtp.embedding, 0.0,
            "MTP shares the main embedding and head"
        );
    }

    #[test]
    fn deepseek_moe_weights_are_97_percent() {
        // Reference section 3: "MoE weights ~97% of the model".
        let p = model("deepseek-r1").params();
        let moe = p.main.routed_experts + p.main.shared_experts + p.main.router;
        let share = moe / p.main.total();
        assert!((0.96..0.985).contains(&share), "{share}");
    }

    #[test]
    fn kv_cache_per_token() {
        let ds = model("deepseek-r1");
        assert_eq!(ds.kv_elements_per_token_per_layer(), 576);
        // Reference section 3: 70,272 B per token in BF16 over 61 layers.
        assert_eq!(ds.kv_elements(1, 0) * 2.0, 70_272.0);
        let oss = model("gpt-oss-120b");
        // 18 full layers x 2 x 8 heads x 64; 18 windowed layers stop growing at 128 tokens.
        assert_eq!(oss.kv_elements(100, 0), 100.0 * 36.0 * 1024.0);
        assert_eq!(
            oss.kv_elements(1000, 0),
            1024.0 * (18.0 * 1000.0 + 18.0 * 128.0)
        );
    }
}
