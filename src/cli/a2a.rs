//! `epsim a2a`: MoE dispatch and combine times over a topology, for a grid of EP sizes and
//! tokens per rank.

use super::limits;
use super::output::{UsageError, emit, json};
use clap::{Args, ValueEnum};
use epsim::cost::collective::{self, EpGroup, Phase};
use epsim::cost::network::LinkEfficiency;
use epsim::engine::RandomStreams;
use epsim::model::{Precision, Usage};
use epsim::moe::traffic::{self, TokenRouting};
use epsim::topology::{self, A2aAlgorithm};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Solver {
    /// Busiest port's bytes over its achieved bandwidth (microseconds to compute)
    Fast,
    /// Every leg a max-min fair flow over its ECMP route, run to completion (slow, exact)
    Flow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum A2aFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct A2aArgs {
    /// Topology file (YAML) with a `collectives` section
    #[arg(long)]
    topology: PathBuf,
    /// EP sizes, comma-separated
    #[arg(long, value_delimiter = ',', required = true, value_parser = limits::usize_in(1, limits::MAX_EP))]
    ep: Vec<usize>,
    /// Tokens per rank, comma-separated
    #[arg(long, value_delimiter = ',', required = true, value_parser = limits::usize_in(1, 1_000_000))]
    tokens_per_rank: Vec<usize>,
    #[arg(long, default_value_t = 7168, value_parser = limits::u64_in(1, 1_000_000))]
    hidden: u64,
    #[arg(long, default_value_t = 8, value_parser = limits::usize_in(1, 64))]
    topk: usize,
    /// Routed experts (placed contiguously: expert e on rank e x EP / experts)
    #[arg(long, default_value_t = 256, value_parser = limits::usize_in(1, limits::MAX_EXPERTS))]
    experts: usize,
    /// Dispatch transport format
    #[arg(long, value_enum, default_value_t = Precision::Fp8)]
    dtype: Precision,
    /// Combine transport format
    #[arg(long, value_enum, default_value_t = Precision::Bf16)]
    combine_dtype: Precision,
    /// uniform, zipf:S, dirichlet:A, calibrated, or spread (every token reaches min(EP, top-k)
    /// ranks, as in TensorRT-LLM's benchmark)
    #[arg(long, default_value = "uniform", value_parser = parse_routing)]
    routing: TokenRouting,
    /// GPUs of the EP group: indices or ranges in topology order, e.g. 0-7,64-71 [default:
    /// the first N GPUs]
    #[arg(long)]
    ranks: Option<String>,
    /// All-to-all kernel [default: the topology's]
    #[arg(long, value_enum)]
    algorithm: Option<A2aAlgorithm>,
    #[arg(long, value_enum, default_value_t = Solver::Fast)]
    solver: Solver,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Override a topology parameter (repeatable)
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = crate::parse_assignment)]
    set: Vec<(String, String)>,
    #[arg(long, value_enum, default_value_t = A2aFormat::Table)]
    format: A2aFormat,
}

fn parse_routing(text: &str) -> Result<TokenRouting, String> {
    text.parse()
}

/// "0-7,64-71" -> [0..=7, 64..=71].
fn parse_ranks(text: &str, gpus: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
            None => (part.parse::<usize>(), part.parse::<usize>()),
        };
        match (lo, hi) {
            (Ok(lo), Ok(hi)) if lo <= hi && hi < gpus => out.extend(lo..=hi),
            _ => {
                return Err(format!(
                    "--ranks: \"{part}\" is not an index or range of GPUs 0 to {}",
                    gpus.saturating_sub(1)
                ));
            }
        }
    }
    let mut seen = out.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != out.len() {
        return Err("--ranks lists a GPU twice".into());
    }
    Ok(out)
}

#[derive(Debug, serde::Serialize)]
struct Row {
    ep: usize,
    tokens_per_rank: usize,
    dtype: Precision,
    combine_dtype: Precision,
    algorithm: A2aAlgorithm,
    routing: String,
    nvlink_domains: usize,
    dispatch_us: f64,
    combine_us: f64,
    /// Dispatch bytes leaving a rank, mean over ranks (tokens that stay home excluded).
    bytes_per_rank: f64,
    dispatch_gb_s: f64,
    combine_gb_s: f64,
}

pub fn run(a: &A2aArgs) -> anyhow::Result<ExitCode> {
    let topo = topology::load_with(
        &super::lookup::topology_path(&a.topology)?,
        &a.set.iter().cloned().collect::<BTreeMap<_, _>>(),
    )?;
    let Some(c) = topo.collectives.clone() else {
        return Err(UsageError(format!(
            "{}: the topology has no `collectives` section (algorithm, network_efficiency, dispatch/combine latency)",
            a.topology.display()
        ))
        .into());
    };
    let order: Vec<usize> = match &a.ranks {
        Some(text) => parse_ranks(text, topo.gpus.len()).map_err(UsageError)?,
        None => (0..topo.gpus.len()).collect(),
    };
    let max_ep = a.ep.iter().copied().max().unwrap_or(0);
    if a.ep.contains(&0) || max_ep > order.len() {
        return Err(UsageError(format!(
            "EP sizes must be 1 to {} (the GPUs {}), got {:?}",
            order.len(),
            if a.ranks.is_some() {
                "--ranks lists"
            } else {
                "in the topology"
            },
            a.ep
        ))
        .into());
    }
    // Per-token routing is held in memory: bound tokens x top-k over the whole grid point.
    const MAX_PICKS: usize = 50_000_000;
    let largest = max_ep
        .saturating_mul(a.tokens_per_rank.iter().copied().max().unwrap_or(0))
        .saturating_mul(a.topk);
    if largest > MAX_PICKS {
        return Err(UsageError(format!(
            "EP x tokens per rank x top-k = {largest} token-expert picks; at most {MAX_PICKS} fit in one run"
        ))
        .into());
    }
    let first = topo.gpus[order[0]];
    let efficiency = LinkEfficiency::for_gpu(&topo, first)
        .ok_or_else(|| UsageError(format!("{} has no GPU spec", topo.graph[first].id)))?;
    let algorithm = a.algorithm.unwrap_or(c.algorithm);
    let mut rows = Vec::new();
    for &ep in &a.ep {
        let group = EpGroup::new(&topo, order[..ep].iter().map(|&i| topo.gpus[i]).collect());
        for &tokens in &a.tokens_per_rank {
            // One stream per grid point: a point's numbers do not depend on the others.
            let mut rng = RandomStreams::new(a.seed).stream(&format!("a2a/ep{ep}/tokens{tokens}"));
            let destinations =
                traffic::destinations(&a.routing, ep, tokens, a.experts, a.topk, &mut rng)
                    .map_err(UsageError)?;
            let price = |precision: Precision,
                         phase: Phase,
                         latency_us: f64|
             -> anyhow::Result<(f64, f64)> {
                let bytes = precision.bytes(a.hidden as f64, Usage::Activations);
                let legs =
                    collective::all_to_all_legs(&group, &destinations, algorithm, bytes, phase);
                let seconds = match a.solver {
                    Solver::Fast => collective::fast_path_seconds(&group, &legs, efficiency),
                    Solver::Flow => collective::solver_seconds(&group, &legs, efficiency),
                }
                .map_err(UsageError)?;
                let sent = legs.sent_by(&group.ranks);
                Ok((
                    latency_us + seconds * 1e6,
                    sent.iter().sum::<f64>() / ep as f64,
                ))
            };
            let (dispatch_us, bytes_per_rank) =
                price(a.dtype, Phase::Dispatch, c.dispatch_latency_us)?;
            let (combine_us, combine_bytes) =
                price(a.combine_dtype, Phase::Combine, c.combine_latency_us)?;
            rows.push(Row {
                ep,
                tokens_per_rank: tokens,
                dtype: a.dtype,
                combine_dtype: a.combine_dtype,
                algorithm,
                routing: a.routing.to_string(),
                nvlink_domains: group.domains(),
                dispatch_us,
                combine_us,
                bytes_per_rank,
                dispatch_gb_s: bytes_per_rank / dispatch_us / 1e3,
                combine_gb_s: combine_bytes / combine_us / 1e3,
            });
        }
    }
    let text = match a.format {
        A2aFormat::Json => json(&rows)?,
        A2aFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            for r in &rows {
                w.serialize(r)?;
            }
            String::from_utf8(w.into_inner()?)?
        }
        A2aFormat::Table => {
            let mut t = format!(
                "{}: {} all-to-all, {} routing, hidden {}, top-{}, dispatch {}, combine {}, {} solver\n",
                topo.name,
                algorithm,
                a.routing,
                a.hidden,
                a.topk,
                a.dtype,
                a.combine_dtype,
                match a.solver {
                    Solver::Fast => "fast",
                    Solver::Flow => "flow",
                }
            );
            let _ = writeln!(
                t,
                "  {:>4} {:>8} {:>8} {:>12} {:>12} {:>14} {:>13} {:>13}",
                "EP",
                "tokens",
                "domains",
                "dispatch us",
                "combine us",
                "MB per rank",
                "dispatch GB/s",
                "combine GB/s"
            );
            for r in &rows {
                let _ = writeln!(
                    t,
                    "  {:>4} {:>8} {:>8} {:>12.1} {:>12.1} {:>14.2} {:>13.1} {:>13.1}",
                    r.ep,
                    r.tokens_per_rank,
                    r.nvlink_domains,
                    r.dispatch_us,
                    r.combine_us,
                    r.bytes_per_rank / 1e6,
                    r.dispatch_gb_s,
                    r.combine_gb_s
                );
            }
            t
        }
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}
