//! `epsim imbalance`: expert load imbalance per layer over many iterations, with or without
//! EPLB.

use super::output::{UsageError, emit, json};
use super::{limits, lookup};
use clap::{Args, ValueEnum};
use epsim::model::{Precision, Usage};
use epsim::moe::imbalance::{self, ImbalanceReport, ImbalanceSetup};
use epsim::moe::placement::ReplicaSplit;
use epsim::moe::policy::EplbMode;
use epsim::moe::policy::OnlineStyle;
use epsim::moe::popularity::Popularity;
use epsim::moe::replay::Recording;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImbalanceFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnlineKind {
    /// TensorRT-LLM: a few layers re-planned every iteration from decayed counts
    Layerwise,
    /// SGLang / vLLM: all layers every N iterations from a window of counts
    Periodic,
}

#[derive(Debug, Args)]
pub struct ImbalanceArgs {
    /// Model name (a file in --models-dir) or path to a model YAML
    #[arg(long)]
    model: String,
    /// Expert-parallel size
    #[arg(long, value_parser = limits::usize_in(1, limits::MAX_EP))]
    ep: usize,
    #[arg(long, value_enum, default_value_t = EplbMode::None)]
    eplb: EplbMode,
    /// Expert slots per layer [default: the model's routed experts]
    #[arg(long, value_parser = limits::usize_in(1, limits::MAX_EXPERTS))]
    slots: Option<usize>,
    /// Tokens each rank sends into every MoE layer per iteration (TensorRT-LLM wide-EP
    /// runs up to 256 per rank)
    #[arg(long, default_value_t = 256, value_parser = limits::u64_in(1, limits::MAX_BATCH))]
    batch: u64,
    /// Measured iterations
    #[arg(long, default_value_t = 200, value_parser = limits::u64_in(1, limits::MAX_ITERATIONS))]
    iterations: u64,
    /// Iterations routed before measuring; static EPLB plans from their counts
    #[arg(long, default_value_t = 100, value_parser = limits::u64_in(0, limits::MAX_ITERATIONS))]
    warmup: u64,
    /// Expert popularity: uniform, zipf:S, dirichlet:A or calibrated
    #[arg(long, default_value = "calibrated", value_parser = parse_popularity)]
    popularity: Popularity,
    /// Replay recorded counts (CSV: iteration,layer,expert,tokens) instead of --popularity
    #[arg(long, conflicts_with = "popularity")]
    replay: Option<PathBuf>,
    /// Plan static EPLB from this load profile (JSON: {"weight": [[tokens per expert] per
    /// MoE layer]}) instead of the warm-up iterations
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Iterations over which popularity drifts to a new draw (0 = it never changes)
    #[arg(long, default_value_t = 0)]
    drift_period: u64,
    #[arg(long, value_enum, default_value_t = OnlineKind::Layerwise)]
    online: OnlineKind,
    /// Layerwise online EPLB: layers re-planned per iteration (TensorRT-LLM: 1-2)
    #[arg(long, default_value_t = 2, value_parser = limits::usize_in(1, limits::MAX_EXPERTS))]
    layers_per_iteration: usize,
    /// Layerwise online EPLB: decay of the counts per iteration (TensorRT-LLM: 0.95)
    #[arg(long, default_value_t = 0.95)]
    decay: f64,
    /// Periodic online EPLB: iterations between re-plans (SGLang: 1000)
    #[arg(long, default_value_t = 1000, value_parser = limits::u64_in(1, limits::MAX_ITERATIONS))]
    rebalance_every: u64,
    /// Periodic online EPLB: iterations of counts a re-plan looks at (SGLang: 1000)
    #[arg(long, default_value_t = 1000, value_parser = limits::u64_in(1, limits::MAX_WINDOW))]
    window: u64,
    /// Hardware the EP group runs on: migrations move weights at its first GPU's NVLink
    /// bandwidth (blocking, GPU to GPU) or host link (background: NVLink-C2C, else PCIe)
    #[arg(long, default_value = "topologies/gb200-nvl72.yaml")]
    topology: PathBuf,
    #[arg(long, value_enum, default_value_t = ReplicaSplit::Even)]
    split: ReplicaSplit,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Expert weight precision, for migration bytes [default: the model's native]
    #[arg(long, value_enum)]
    weights: Option<Precision>,
    #[arg(long, value_enum, default_value_t = ImbalanceFormat::Table)]
    format: ImbalanceFormat,
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
}

fn parse_popularity(text: &str) -> Result<Popularity, String> {
    text.parse()
}

/// `{"weight": [[...]]}`, as `epsim eplb` takes (other fields are ignored).
fn read_profile(file: &std::path::Path) -> anyhow::Result<Vec<Vec<f64>>> {
    #[derive(serde::Deserialize)]
    struct Profile {
        weight: Vec<Vec<f64>>,
    }
    let text = epsim::input::read_text(file)?;
    let p: Profile = serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "{}:{}:{}: {e}",
            file.display(),
            e.line(),
            e.column()
        ))
    })?;
    Ok(p.weight)
}

pub fn run(a: &ImbalanceArgs) -> anyhow::Result<ExitCode> {
    let model = lookup::model(&a.model, &a.models_dir)?;
    let m = &model.moe;
    let topo = epsim::topology::load(&super::lookup::topology_path(&a.topology)?)?;
    let gpu = *topo
        .gpus
        .first()
        .ok_or_else(|| UsageError("the topology has no GPUs".into()))?;
    let nvlink_gb_s = topo.nvlink_gb_s(gpu);
    let host_copy_gb_s = topo.host_link_gb_s(gpu).ok_or_else(|| {
        UsageError(format!(
            "{}: the first GPU has no C2C or PCIe link to copy weights from host memory",
            a.topology.display()
        ))
    })?;
    if nvlink_gb_s <= 0.0 {
        return Err(UsageError(format!(
            "{}: the first GPU has no NVLink to move weights between GPUs",
            a.topology.display()
        ))
        .into());
    }
    if !(a.decay > 0.0 && a.decay <= 1.0) {
        return Err(UsageError(format!("--decay must be in (0, 1], got {}", a.decay)).into());
    }
    let slots = a.slots.unwrap_or(m.routed_experts as usize);
    let (layers, experts) = (model.moe_layers() as usize, m.routed_experts as usize);
    let replay = a
        .replay
        .as_deref()
        .map(|f| Recording::read(f, layers, experts))
        .transpose()?;
    let profile = a.profile.as_deref().map(read_profile).transpose()?;
    let precision = a.weights.unwrap_or(model.native_precision.experts);
    let setup = ImbalanceSetup {
        layers,
        experts,
        top_k: m.experts_per_token as usize,
        groups: m.groups as usize,
        groups_per_token: m.groups_per_token as usize,
        ep: a.ep,
        slots,
        eplb: a.eplb,
        online: match a.online {
            OnlineKind::Layerwise => OnlineStyle::Layerwise {
                layers_per_iteration: a.layers_per_iteration,
                decay: a.decay,
            },
            OnlineKind::Periodic => OnlineStyle::Periodic {
                every: a.rebalance_every,
                window: a.window,
            },
        },
        popularity: a.popularity.clone(),
        replay,
        profile,
        drift_period: a.drift_period,
        tokens_per_rank: a.batch,
        iterations: a.iterations,
        warmup: a.warmup,
        split: a.split,
        seed: a.seed,
        expert_bytes: precision.bytes(model.expert_params(), Usage::Weights),
        nvlink_gb_s,
        host_copy_gb_s,
    };
    let report = imbalance::simulate(&setup)
        .map_err(|e| UsageError(format!("this setup cannot run:\n  {e}")))?;
    let first_moe_layer = model.dense_layers as usize;
    let text = match a.format {
        ImbalanceFormat::Json => json(&serde_json::json!({
            "model": model.name,
            "setup": setup,
            "mean_rank_imbalance": report.mean_rank_imbalance,
            "mean_balancedness": report.mean_balancedness,
            "mean_expert_imbalance": report.mean_expert_imbalance,
            "layer_replans": report.layer_replans,
            "migrated_slots": report.migrated_slots,
            "migrated_gib": report.migrated_gib,
            "max_rank_migration_gib": report.max_rank_migration_gib,
            "blocking_stall_ms": report.blocking_stall_ms,
            "max_background_copy_ms": report.max_background_copy_ms,
            "first_moe_layer": first_moe_layer,
            "layers": report.layers,
        }))?,
        ImbalanceFormat::Csv => {
            let mut t = String::from(
                "layer,mean_rank_imbalance,max_rank_imbalance,mean_balancedness,mean_expert_imbalance\n",
            );
            for (i, l) in report.layers.iter().enumerate() {
                let _ = writeln!(
                    t,
                    "{},{:.6},{:.6},{:.6},{:.6}",
                    first_moe_layer + i,
                    l.mean_rank_imbalance,
                    l.max_rank_imbalance,
                    l.mean_balancedness,
                    l.mean_expert_imbalance
                );
            }
            t
        }
        ImbalanceFormat::Table => table(&model.name, &setup, &report, first_moe_layer),
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn table(model: &str, s: &ImbalanceSetup, r: &ImbalanceReport, first_layer: usize) -> String {
    let mut t = String::new();
    let eplb = match (s.eplb, s.online) {
        (EplbMode::None, _) => "none".to_owned(),
        (EplbMode::Static, _) => format!("static (planned from {} warm-up iterations)", s.warmup),
        (
            EplbMode::Online,
            OnlineStyle::Layerwise {
                layers_per_iteration,
                decay,
            },
        ) => {
            format!(
                "online, layerwise: {layers_per_iteration} layers per iteration, counts decayed by {decay}"
            )
        }
        (EplbMode::Online, OnlineStyle::Periodic { every, window }) => {
            format!("online, periodic: every {every} iterations from the last {window}")
        }
    };
    let _ = writeln!(
        t,
        "{model}: EP {}, {} slots, EPLB {eplb}\n  popularity {}, {} tokens per rank, {} iterations, seed {}",
        s.ep, s.slots, s.popularity, s.tokens_per_rank, s.iterations, s.seed
    );
    let _ = writeln!(
        t,
        "  {:>5}  {:>15} {:>14} {:>13} {:>17}",
        "layer", "rank imbalance", "max imbalance", "balancedness", "expert imbalance"
    );
    for (i, l) in r.layers.iter().enumerate() {
        let _ = writeln!(
            t,
            "  {:>5}  {:>15.3} {:>14.3} {:>13.3} {:>17.2}",
            first_layer + i,
            l.mean_rank_imbalance,
            l.max_rank_imbalance,
            l.mean_balancedness,
            l.mean_expert_imbalance
        );
    }
    let (lo, hi) = r
        .layers
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), l| {
            (lo.min(l.mean_rank_imbalance), hi.max(l.mean_rank_imbalance))
        });
    let _ = writeln!(
        t,
        "  mean rank imbalance (max - mean)/mean: {:.3} (layers {lo:.2} to {hi:.2})",
        r.mean_rank_imbalance
    );
    let _ = writeln!(
        t,
        "  mean balancedness mean/max:            {:.3}",
        r.mean_balancedness
    );
    let _ = writeln!(
        t,
        "  mean expert imbalance:                 {:.2}",
        r.mean_expert_imbalance
    );
    if s.eplb == EplbMode::Online {
        let _ = writeln!(
            t,
            "  migration: {} layer re-plans, {} slots changed ({:.2} GiB); at most {:.3} GiB into one rank at once",
            r.layer_replans, r.migrated_slots, r.migrated_gib, r.max_rank_migration_gib
        );
        let _ = writeln!(
            t,
            "  migration time: {:.1} ms of blocked serving (GPU to GPU); longest background copy {:.2} ms per iteration (host)",
            r.blocking_stall_ms, r.max_background_copy_ms
        );
    }
    t
}
