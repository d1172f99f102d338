//! `epsim iteration`: one instance of a scenario at a fixed load, every DP rank decoding the
//! same batch (or prefilling the same chunk), priced as the serving loop prices it (routing
//! drawn each iteration, the all-to-all, EPLB), with one micro-batch and with two. The
//! engine-level benchmark of a decode or prefill step, prefill and scheduling left out.

use super::limits;
use super::memory::TableFormat;
use super::output::{UsageError, emit, json};
use clap::Args;
use epsim::cost::step::PrefillChunk;
use epsim::engine::RandomStreams;
use epsim::serving::pricing::{Price, Pricer, RankWork};
use epsim::serving::scenario::{InstanceSpec, LoadedScenario, Role};
use epsim::sweep::run as sweep;
use serde::Serialize;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Iterations one call may price (each costs tens of microseconds).
const MAX_PRICED: u64 = 100_000;

#[derive(Debug, Args)]
pub struct IterationArgs {
    /// Scenario file (with a sweep, its first point)
    scenario: PathBuf,
    /// The instance, by name (a replica as NAME#K) [default: the first decoding instance]
    #[arg(long)]
    instance: Option<String>,
    /// Requests decoding on every DP rank
    #[arg(long, default_value_t = 0, value_parser = limits::u64_in(0, limits::MAX_BATCH))]
    batch: u64,
    /// Context of each decoding request, tokens
    #[arg(long, default_value_t = 2048, value_parser = limits::u64_in(1, limits::MAX_TOKENS))]
    context: u64,
    /// A prompt chunk of this many tokens on every DP rank (a prefill step)
    #[arg(long, default_value_t = 0, value_parser = limits::u64_in(0, limits::MAX_TOKENS))]
    prefill_tokens: u64,
    /// Iterations priced, each with its own routing draw (the scenario's seed)
    #[arg(long, default_value_t = 50, value_parser = limits::u64_in(1, MAX_PRICED))]
    iterations: u64,
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    format: TableFormat,
}

/// Mean prices of one way of running the iteration, milliseconds.
#[derive(Debug, Serialize)]
struct Mode {
    iteration_ms: f64,
    /// Slowest rank's compute outside the routed experts.
    dense_ms: f64,
    /// Slowest rank's routed experts.
    moe_ms: f64,
    /// Dispatch and combine (with two micro-batches: both halves' together).
    all_to_all_ms: f64,
    /// Tokens through the model per second per GPU (MTP drafts and prefill tokens too).
    tok_s_per_gpu: f64,
    /// Output tokens per second per GPU: each decoding request's accepted tokens per step
    /// (1 + the drafts' expected acceptances), as `epsim run` counts them.
    output_tok_s_per_gpu: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: String,
    instance: String,
    gpus: usize,
    all_to_all: String,
    batch_per_rank: u64,
    context: u64,
    prefill_tokens_per_rank: u64,
    tokens_per_gpu: f64,
    iterations: u64,
    one_micro_batch: Mode,
    two_micro_batches: Mode,
    /// Throughput with two micro-batches over throughput with one.
    overlap_gain: f64,
    /// Tokens of KV cache one DP rank holds (the instance's memory plan), and whether the
    /// priced load's (decoding contexts and the prompt chunk) fit in it.
    kv_tokens_per_rank: f64,
    kv_fits: bool,
    /// The instance's batch limit per rank, and whether the priced batch is within it.
    max_batch: u64,
    batch_within_max: bool,
}

pub fn run(a: &IterationArgs) -> anyhow::Result<ExitCode> {
    if a.batch == 0 && a.prefill_tokens == 0 {
        return Err(UsageError("nothing to price: give --batch or --prefill-tokens".into()).into());
    }
    let file = sweep::load(&a.scenario)?;
    let loaded = file.scenario(&file.points[0])?;
    let spec = pick(&loaded, a.instance.as_deref())?;
    let chunks: Vec<PrefillChunk> = (a.prefill_tokens > 0)
        .then_some(PrefillChunk {
            tokens: a.prefill_tokens,
            prefix: 0,
        })
        .into_iter()
        .collect();
    let work = vec![
        RankWork {
            batch: a.batch,
            context: a.context,
            chunks,
        };
        spec.dp_ranks()
    ];
    let tokens = work[0].batch * (1 + loaded.scenario.mtp.drafts) + a.prefill_tokens;
    let tokens_per_gpu = (tokens * spec.dp_ranks() as u64) as f64 / spec.gpus.len() as f64;
    let mtp = loaded.scenario.mtp;
    let accepted_per_gpu = (work[0].batch * spec.dp_ranks() as u64) as f64
        * mtp.acceptance.tokens_per_step(mtp.drafts)
        / spec.gpus.len() as f64;
    let mode = |overlap| -> anyhow::Result<Mode> {
        let spec = InstanceSpec {
            micro_batch_overlap: overlap,
            ..spec.clone()
        };
        let mean = mean_price(&loaded, &spec, &work, a.iterations)?;
        Ok(Mode {
            iteration_ms: mean.seconds * 1e3,
            dense_ms: mean.dense_s * 1e3,
            moe_ms: mean.moe_s * 1e3,
            all_to_all_ms: mean.all_to_all_s * 1e3,
            tok_s_per_gpu: tokens_per_gpu / mean.seconds,
            output_tok_s_per_gpu: accepted_per_gpu / mean.seconds,
        })
    };
    let (one, two) = (mode(false)?, mode(true)?);
    let report = Report {
        scenario: loaded.scenario.name.clone(),
        instance: spec.name.clone(),
        gpus: spec.gpus.len(),
        all_to_all: spec.all_to_all.algorithm.to_string(),
        batch_per_rank: a.batch,
        context: a.context,
        prefill_tokens_per_rank: a.prefill_tokens,
        tokens_per_gpu,
        iterations: a.iterations,
        overlap_gain: one.iteration_ms / two.iteration_ms,
        kv_tokens_per_rank: spec.plan.kv_tokens,
        kv_fits: (a.batch * a.context + a.prefill_tokens) as f64 <= spec.plan.kv_tokens,
        max_batch: spec.max_batch,
        batch_within_max: a.batch <= spec.max_batch,
        one_micro_batch: one,
        two_micro_batches: two,
    };
    emit(&match a.format {
        TableFormat::Json => json(&report)?,
        TableFormat::Table => table(&report),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The named instance, or the first that decodes.
fn pick<'a>(
    loaded: &'a LoadedScenario,
    name: Option<&str>,
) -> Result<&'a InstanceSpec, UsageError> {
    let instances = &loaded.scenario.instances;
    let found = match name {
        Some(n) => instances.iter().find(|i| i.name == n),
        None => instances.iter().find(|i| i.role != Role::Prefill),
    };
    found.ok_or_else(|| {
        let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
        UsageError(format!(
            "--instance {}: the scenario's instances are {}",
            name.unwrap_or("(a decoding one)"),
            names.join(", ")
        ))
    })
}

/// The mean over `iterations` prices of `spec` running `work`, from the scenario's seed.
fn mean_price(
    loaded: &LoadedScenario,
    spec: &InstanceSpec,
    work: &[RankWork],
    iterations: u64,
) -> anyhow::Result<Price> {
    let sc = &loaded.scenario;
    let streams = RandomStreams::new(sc.seed);
    let mut pricer = Pricer::new(
        &loaded.topology,
        &loaded.model,
        spec,
        &sc.moe,
        sc.mtp,
        &streams,
    )
    .map_err(|e| UsageError(format!("instance {}: {e}", spec.name)))?;
    let mut sum = Price::default();
    for _ in 0..iterations {
        let p = pricer
            .price(work)
            .map_err(|e| UsageError(format!("instance {}: {e}", spec.name)))?;
        sum.seconds += p.seconds;
        sum.dense_s += p.dense_s;
        sum.moe_s += p.moe_s;
        sum.all_to_all_s += p.all_to_all_s;
    }
    let n = iterations as f64;
    Ok(Price {
        seconds: sum.seconds / n,
        dense_s: sum.dense_s / n,
        moe_s: sum.moe_s / n,
        all_to_all_s: sum.all_to_all_s / n,
        ..Price::default()
    })
}

fn table(r: &Report) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} / {}: {} GPUs, {} all-to-all, {} tokens per GPU ({} decoding x context {}, chunk {} per rank), {} iterations",
        r.scenario,
        r.instance,
        r.gpus,
        r.all_to_all,
        r.tokens_per_gpu,
        r.batch_per_rank,
        r.context,
        r.prefill_tokens_per_rank,
        r.iterations
    );
    let _ = writeln!(
        t,
        "{:<20} {:>12} {:>10} {:>10} {:>14} {:>13} {:>20}",
        "micro-batches",
        "iteration ms",
        "dense ms",
        "MoE ms",
        "all-to-all ms",
        "tok/s per GPU",
        "output tok/s per GPU"
    );
    for (label, m) in [
        ("one", &r.one_micro_batch),
        ("two (overlapped)", &r.two_micro_batches),
    ] {
        let _ = writeln!(
            t,
            "{:<20} {:>12.3} {:>10.3} {:>10.3} {:>14.3} {:>13.0} {:>20.0}",
            label,
            m.iteration_ms,
            m.dense_ms,
            m.moe_ms,
            m.all_to_all_ms,
            m.tok_s_per_gpu,
            m.output_tok_s_per_gpu
        );
    }
    let _ = writeln!(
        t,
        "overlap gain (two over one, throughput): {:.3}",
        r.overlap_gain
    );
    // A price of a load the instance cannot hold is no answer about serving: say so.
    if !r.kv_fits {
        let _ = writeln!(
            t,
            "warning: a rank's KV cache holds {:.0} tokens, not the {} this load needs ({} x context {} + chunk {}): `epsim run` never runs it",
            r.kv_tokens_per_rank,
            r.batch_per_rank * r.context + r.prefill_tokens_per_rank,
            r.batch_per_rank,
            r.context,
            r.prefill_tokens_per_rank
        );
    }
    if !r.batch_within_max {
        let _ = writeln!(
            t,
            "warning: the instance's max_batch is {} per rank, not {}: `epsim run` never runs this batch",
            r.max_batch, r.batch_per_rank
        );
    }
    t
}
