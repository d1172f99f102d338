//! A MoE model's architecture as read from `models/*.yaml`: enough structure to count the
//! parameters of each component and the KV cache per token.

use super::acceptance::{Acceptance, AcceptanceFile};
use super::precision::Precision;
use crate::input::{self, At, Diagnostics, Problem};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub name: String,
    pub description: String,
    pub vocab_size: u64,
    pub hidden_size: u64,
    /// Transformer layers, dense and MoE (the MTP module not included).
    pub layers: u64,
    /// The first `dense_layers` layers have a dense FFN instead of experts.
    pub dense_layers: u64,
    pub dense_intermediate_size: u64,
    pub tie_embeddings: bool,
    pub attention: Attention,
    pub moe: Moe,
    /// Multi-token-prediction modules (each one MoE transformer layer plus a projection).
    pub mtp_modules: u64,
    /// Chance that each MTP draft token is accepted, by draft position, where the model has
    /// MTP modules.
    pub mtp_acceptance: Option<Acceptance>,
    /// Precisions of the released checkpoint.
    pub native_precision: NativePrecision,
    /// The longest context the model serves, prompt and answer together, tokens (its
    /// `max_position_embeddings`); `None`: not given, no limit.
    pub context_tokens: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Attention {
    /// Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds one compressed
    /// latent plus the decoupled RoPE key per token per layer, shared by all heads.
    Mla {
        heads: u64,
        /// 0 when queries are not low-rank compressed.
        q_lora_rank: u64,
        kv_lora_rank: u64,
        qk_nope_head_dim: u64,
        qk_rope_head_dim: u64,
        v_head_dim: u64,
    },
    /// Grouped-query attention (MHA when `kv_heads == heads`).
    Gqa {
        heads: u64,
        kv_heads: u64,
        head_dim: u64,
        /// RMS norms on queries and keys per head (Qwen3).
        #[serde(default)]
        qk_norm: bool,
        #[serde(default)]
        sliding_window: Option<SlidingWindow>,
    },
}

/// Some layers attend only to the last `tokens` tokens, so they cache no more than that.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlidingWindow {
    pub tokens: u64,
    /// How many of the layers use the window.
    pub layers: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Moe {
    pub routed_experts: u64,
    pub experts_per_token: u64,
    #[serde(default)]
    pub shared_experts: u64,
    pub expert_intermediate_size: u64,
    /// Expert groups for group-limited routing (1 = none).
    #[serde(default = "one")]
    pub groups: u64,
    /// Groups a token may choose its experts from.
    #[serde(default = "one")]
    pub groups_per_token: u64,
    pub scoring: Scoring,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    Softmax,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NativePrecision {
    /// Routed and shared expert weights.
    pub experts: Precision,
    /// Attention and dense FFN weights.
    pub other: Precision,
}

/// The file as written, with positions for the checks made after parsing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    name: String,
    #[serde(default)]
    description: String,
    vocab_size: At<u64>,
    hidden_size: At<u64>,
    layers: At<u64>,
    #[serde(default)]
    dense_layers: Option<At<u64>>,
    #[serde(default)]
    dense_intermediate_size: u64,
    tie_embeddings: bool,
    #[serde(deserialize_with = "input::recovering")]
    attention: At<Attention>,
    #[serde(deserialize_with = "input::recovering")]
    moe: At<Moe>,
    #[serde(default)]
    mtp_modules: u64,
    #[serde(default, deserialize_with = "input::recovering")]
    mtp_acceptance: Option<At<AcceptanceFile>>,
    native_precision: NativePrecision,
    #[serde(default)]
    context_tokens: Option<At<u64>>,
}

/// Placeholders for sections with recorded problems (the file is refused; see
/// [`input::recovering`]).
impl input::Placeholder for Attention {
    fn placeholder() -> Self {
        Attention::Gqa {
            heads: 0,
            kv_heads: 0,
            head_dim: 0,
            qk_norm: false,
            sliding_window: None,
        }
    }
}

impl input::Placeholder for Moe {
    fn placeholder() -> Self {
        Moe {
            routed_experts: 0,
            experts_per_token: 0,
            shared_experts: 0,
            expert_intermediate_size: 0,
            groups: 1,
            groups_per_token: 1,
            scoring: Scoring::Softmax,
        }
    }
}

/// Reads and checks a model file, reporting every problem at once.
pub fn load_model(file: &Path) -> Result<ModelConfig, Diagnostics> {
    let raw: ModelFile = input::read_yaml(file)?;
    let mut diags = Diagnostics::new();
    let mut check = |ok: bool, loc, path: &str, message: String| {
        if !ok {
            diags.push(file, Problem::new(loc, path, message));
        }
    };
    for (path, v) in [
        ("vocab_size", &raw.vocab_size),
        ("hidden_size", &raw.hidden_size),
        ("layers", &raw.layers),
    ]
    .into_iter()
    .chain(raw.context_tokens.as_ref().map(|c| ("context_tokens", c)))
    {
        check(v.value > 0, v.loc, path, "must be at least 1".into());
    }
    let dense_layers = raw.dense_layers.as_ref().map_or(0, |d| d.value);
    if let Some(d) = &raw.dense_layers {
        check(
            d.value <= raw.layers.value,
            d.loc,
            "dense_layers",
            format!(
                "{} dense layers but only {} layers",
                d.value, raw.layers.value
            ),
        );
        check(
            d.value == 0 || raw.dense_intermediate_size > 0,
            d.loc,
            "dense_intermediate_size",
            "dense layers need a dense_intermediate_size".into(),
        );
    }
    let m = &raw.moe.value;
    let moe_loc = raw.moe.loc;
    check(
        m.routed_experts > 0 && m.expert_intermediate_size > 0,
        moe_loc,
        "moe",
        "needs routed_experts and expert_intermediate_size >= 1".into(),
    );
    check(
        (1..=m.routed_experts).contains(&m.experts_per_token),
        moe_loc,
        "moe.experts_per_token",
        format!(
            "must be 1 to routed_experts ({}), got {}",
            m.routed_experts, m.experts_per_token
        ),
    );
    check(
        m.groups >= 1 && m.routed_experts.is_multiple_of(m.groups.max(1)),
        moe_loc,
        "moe.groups",
        format!(
            "{} experts do not divide into {} groups",
            m.routed_experts, m.groups
        ),
    );
    check(
        (1..=m.groups).contains(&m.groups_per_token),
        moe_loc,
        "moe.groups_per_token",
        format!(
            "must be 1 to groups ({}), got {}",
            m.groups, m.groups_per_token
        ),
    );
    let acceptance = raw
        .mtp_acceptance
        .as_ref()
        .map(|a| (a.loc, Acceptance::from_file(&a.value)));
    match (&acceptance, raw.mtp_modules) {
        (Some((loc, Err(e))), _) => check(false, *loc, "mtp_acceptance", e.clone()),
        (Some(_), _) => {}
        (None, n) => check(
            n == 0,
            raw.moe.loc,
            "mtp_acceptance",
            format!("{n} MTP modules need an mtp_acceptance"),
        ),
    }
    // Sizes that must not be zero (a zero would price attention as free).
    let sizes: Vec<(&str, u64)> = match &raw.attention.value {
        Attention::Mla {
            heads,
            kv_lora_rank,
            qk_nope_head_dim,
            qk_rope_head_dim,
            v_head_dim,
            ..
        } => vec![
            ("heads", *heads),
            ("kv_lora_rank", *kv_lora_rank),
            ("qk_nope_head_dim", *qk_nope_head_dim),
            ("qk_rope_head_dim", *qk_rope_head_dim),
            ("v_head_dim", *v_head_dim),
        ],
        Attention::Gqa {
            heads, head_dim, ..
        } => vec![("heads", *heads), ("head_dim", *head_dim)],
    };
    for (name, v) in sizes {
        check(
            v >= 1,
            raw.attention.loc,
            &format!("attention.{name}"),
            "must be at least 1".into(),
        );
    }
    if let Attention::Gqa {
        heads,
        kv_heads,
        sliding_window,
        ..
    } = &raw.attention.value
    {
        check(
            *kv_heads >= 1 && heads.is_multiple_of((*kv_heads).max(1)),
            raw.attention.loc,
            "attention.kv_heads",
            format!("{heads} query heads do not divide into {kv_heads} KV heads"),
        );
        if let Some(w) = sliding_window {
            check(
                w.layers <= raw.layers.value && w.tokens > 0,
                raw.attention.loc,
                "attention.sliding_window",
                format!("needs tokens >= 1 and layers <= {}", raw.layers.value),
            );
        }
    }
    diags.into_result(ModelConfig {
        name: raw.name,
        description: raw.description,
        vocab_size: raw.vocab_size.value,
        hidden_size: raw.hidden_size.value,
        layers: raw.layers.value,
        dense_layers,
        dense_intermediate_size: raw.dense_intermediate_size,
        tie_embeddings: raw.tie_embeddings,
        attention: raw.attention.value,
        moe: raw.moe.value,
        mtp_modules: raw.mtp_modules,
        mtp_acceptance: acceptance.and_then(|(_, a)| a.ok()),
        native_precision: raw.native_precision,
        context_tokens: raw.context_tokens.map(|c| c.value),
    })
}

impl ModelConfig {
    pub fn moe_layers(&self) -> u64 {
        self.layers - self.dense_layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtp_needs_an_acceptance_in_range() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.yaml");
        let base =
            std::fs::read_to_string(crate::testing::repo("models/deepseek-r1.yaml")).unwrap();
        std::fs::write(
            &file,
            base.replace(
                "mtp_acceptance: [0.85, 0.54]",
                "mtp_acceptance: [0.85, 1.5]",
            ),
        )
        .unwrap();
        let e = load_model(&file).unwrap_err().to_string();
        assert!(
            e.contains("mtp_acceptance: must be a probability in [0, 1], got 1.5"),
            "{e}"
        );
        let without: String = base
            .lines()
            .filter(|l| !l.starts_with("mtp_acceptance"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&file, without).unwrap();
        assert!(
            load_model(&file)
                .unwrap_err()
                .to_string()
                .contains("1 MTP modules need an mtp_acceptance")
        );
        let ds = crate::testing::model("deepseek-r1").mtp_acceptance.unwrap();
        assert_eq!(ds.values(), [0.85, 0.54]);
    }

    #[test]
    fn zero_attention_sizes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.yaml");
        let base =
            std::fs::read_to_string(crate::testing::repo("models/deepseek-r1.yaml")).unwrap();
        let bad = base
            .replace("  heads: 128 ", "  heads: 0 ")
            .replace("kv_lora_rank: 512 ", "kv_lora_rank: 0 ");
        assert_ne!(bad, base);
        std::fs::write(&file, bad).unwrap();
        let e = load_model(&file).unwrap_err().to_string();
        assert!(e.contains("attention.heads: must be at least 1"), "{e}");
        assert!(
            e.contains("attention.kv_lora_rank: must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_kind_does_not_hide_the_problems_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.yaml");
        let base =
            std::fs::read_to_string(crate::testing::repo("models/deepseek-r1.yaml")).unwrap();
        let bad = base
            .replace("kind: mla", "kind: mlaa")
            .replace("scoring: sigmoid", "scoring: sigmoidd")
            .replace("routed_experts: 256", "routed_experts: many");
        assert_ne!(bad, base);
        std::fs::write(&file, bad).unwrap();
        let e = load_model(&file).unwrap_err().to_string();
        for needle in [
            "attention.kind: unknown value `mlaa` (did you mean `mla`?)",
            "moe.scoring: unknown value `sigmoidd` (did you mean `sigmoid`?)",
            "moe.routed_experts: expected a whole number >= 0, found the string \"many\"",
        ] {
            assert!(e.contains(needle), "{needle}\n{e}");
        }
    }
}
