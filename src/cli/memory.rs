//! `epsim memory`: one GPU's memory plan in a deployment.

use super::output::{UsageError, emit, json};
use super::{limits, lookup};
use clap::{Args, ValueEnum};
use epsim::model::Precision;
use epsim::model::memory::{self, AttentionLayout, DEFAULT_KV_SHARE_OF_FREE_MEMORY, Deployment};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    /// A human table
    Table,
    /// One JSON object
    Json,
}

/// What a deployment is made of; shared by `memory` and `step`.
#[derive(Debug, Args)]
pub struct DeploymentArgs {
    /// Model name (a file in --models-dir) or path to a model YAML
    #[arg(long)]
    pub model: String,
    /// GPU spec name (a file in --gpus-dir) or path to a GPU spec YAML
    #[arg(long)]
    pub gpu: String,
    /// Expert-parallel size (GPUs that share the experts)
    #[arg(long, value_parser = limits::u64_in(1, limits::MAX_EP))]
    pub ep: u64,
    /// Expert slots per MoE layer over the EP group [default: the model's routed experts]
    #[arg(long, value_parser = limits::u64_in(1, limits::MAX_EXPERTS))]
    pub slots: Option<u64>,
    /// Precision of routed and shared experts [default: the model's native]
    #[arg(long, value_enum)]
    pub weights: Option<Precision>,
    /// Precision of dense FFN and MTP projection (and attention unless --attention-weights)
    /// [default: the model's native]
    #[arg(long, value_enum)]
    pub other_weights: Option<Precision>,
    /// Precision of the attention projections [default: as --other-weights]
    #[arg(long, value_enum)]
    pub attention_weights: Option<Precision>,
    /// KV-cache precision
    #[arg(long, value_enum, default_value_t = Precision::Fp8)]
    pub kv: Precision,
    /// Attention layout: dp (data parallel) or tp:N (tensor parallel over N GPUs)
    #[arg(long, default_value = "dp", value_parser = parse_attention)]
    pub attention: AttentionLayout,
    /// MTP draft tokens per step (0 = off; > 0 loads the MTP module)
    #[arg(long, default_value_t = 0, value_parser = limits::u64_in(0, limits::MAX_MTP))]
    pub mtp: u64,
    /// Share of the memory left after weights given to the KV cache
    #[arg(long, default_value_t = DEFAULT_KV_SHARE_OF_FREE_MEMORY)]
    pub kv_share: f64,
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    #[arg(long, default_value = "topologies/gpus")]
    pub gpus_dir: PathBuf,
}

pub fn parse_attention(text: &str) -> Result<AttentionLayout, String> {
    match text {
        "dp" => Ok(AttentionLayout::Dp),
        _ => match text.strip_prefix("tp:").map(str::parse::<u64>) {
            Some(Ok(n)) if n >= 1 => Ok(AttentionLayout::Tp(n)),
            _ => Err(format!("expected dp or tp:N with N >= 1, got \"{text}\"")),
        },
    }
}

impl DeploymentArgs {
    /// The model, the GPU and the deployment, with the model's defaults filled in.
    pub fn resolve(
        &self,
    ) -> anyhow::Result<(
        epsim::model::ModelConfig,
        epsim::hardware::GpuSpec,
        Deployment,
    )> {
        let model = lookup::model(&self.model, &self.models_dir)?;
        let gpu = lookup::gpu(&self.gpu, &self.gpus_dir)?;
        let other_precision = self.other_weights.unwrap_or(model.native_precision.other);
        let deployment = Deployment {
            ep: self.ep,
            moe_tp: 1,
            slots: self.slots.unwrap_or(model.moe.routed_experts),
            attention: self.attention,
            expert_precision: self.weights.unwrap_or(model.native_precision.experts),
            other_precision,
            attention_precision: self.attention_weights.unwrap_or(other_precision),
            kv_precision: self.kv,
            mtp: self.mtp > 0,
            kv_share_of_free_memory: self.kv_share,
        };
        Ok((model, gpu, deployment))
    }
}

pub fn run(
    args: &DeploymentArgs,
    isl: u64,
    osl: u64,
    format: TableFormat,
) -> anyhow::Result<ExitCode> {
    let (model, gpu, deployment) = args.resolve()?;
    let plan = memory::plan(&model, &gpu, &deployment, isl, osl)
        .map_err(|e| UsageError(format!("this deployment cannot work:\n  {e}")))?;
    emit(&match format {
        TableFormat::Table => plan.to_string(),
        TableFormat::Json => json(&plan.to_json())?,
    })?;
    Ok(ExitCode::SUCCESS)
}
