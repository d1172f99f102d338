//! `epsim step`: the time of one decode iteration of one rank, by op class.

use super::memory::{DeploymentArgs, TableFormat};
use super::output::{UsageError, emit, json};
use epsim::cost::compute::OpCost;
use epsim::cost::kernels::Kernels;
use epsim::cost::profile::{self, Backend, MoeShape};
use epsim::cost::step::{self, OpClass, PrefillChunk, StepCost, StepLoad};
use epsim::model::memory;
use epsim::model::{Acceptance, AcceptanceFile};
use epsim::topology::A2aAlgorithm;
use std::fmt::Write;
use std::process::ExitCode;

pub struct StepArgs<'a> {
    pub deployment: &'a DeploymentArgs,
    pub batch: u64,
    pub context: u64,
    pub prefill_chunk: u64,
    pub prefill_prefix: u64,
    pub acceptance: Option<f64>,
    pub roofline: bool,
    pub kernels: Backend,
    pub format: TableFormat,
}

/// Where the all-to-all is priced instead: it needs a topology.
const COMMUNICATION_NOTE: &str = "one rank's compute, balanced routing: the MoE all-to-all needs a topology (epsim a2a; epsim iteration prices both)";

pub fn run(a: &StepArgs) -> anyhow::Result<ExitCode> {
    let (model, gpu, deployment) = a.deployment.resolve()?;
    // --mtp-acceptance gives every draft the same chance; else the model file's per draft.
    let acceptance = match (a.acceptance, model.mtp_acceptance) {
        (Some(x), _) => Acceptance::from_file(&AcceptanceFile::One(x))
            .map_err(|e| UsageError(format!("--mtp-acceptance {e}")))?,
        (None, Some(per_draft)) => per_draft,
        (None, None) => Acceptance::uniform(0.0),
    };
    // The same checks as the memory plan (slots, EP, fit), and how many requests fit.
    let plan = memory::plan(&model, &gpu, &deployment, a.context, 0)
        .map_err(|e| UsageError(format!("this deployment cannot work:\n  {e}")))?;
    if a.batch == 0 && a.prefill_chunk == 0 {
        return Err(UsageError(
            "nothing to price: give --batch above 0, or a --prefill-chunk".into(),
        )
        .into());
    }
    let prefill = (a.prefill_chunk > 0).then_some(PrefillChunk {
        tokens: a.prefill_chunk,
        prefix: a.prefill_prefix,
    });
    let chunks: Vec<PrefillChunk> = prefill.into_iter().collect();
    let load = StepLoad {
        batch: a.batch,
        context: a.context,
        mtp: a.deployment.mtp,
        prefill: &chunks,
    };
    let (kernels, moe_table) = kernels(a, &model, &gpu, &deployment)?;
    let cost = step::iteration_detail(&model, &kernels, &deployment, &load);
    let total = cost.total();
    let tokens = acceptance.tokens_per_step(load.mtp);
    let tok_s_per_user = tokens / total.seconds;
    let requests_fit = plan.max_requests;
    // Under TP attention the batch is the group's: every GPU of it runs all the requests
    // over its share of the heads, so the group's GPUs share their output.
    let tp = deployment.attention.ways();
    let output_per_gpu = tok_s_per_user * a.batch as f64 / tp as f64;
    let batch_is = match tp {
        1 => "per GPU".to_owned(),
        n => format!("per TP{n} group, each of its {n} GPUs running all of them"),
    };
    let text = match a.format {
        TableFormat::Json => json(&serde_json::json!({
            "model": model.name,
            "gpu": gpu.name,
            "ep": deployment.ep,
            "slots": deployment.slots,
            "experts_per_gpu": cost.experts_per_gpu,
            "batch": a.batch,
            "batch_is": batch_is,
            "context": a.context,
            "prefill_chunk": a.prefill_chunk,
            "prefill_prefix": a.prefill_prefix,
            "mtp": load.mtp,
            "mtp_acceptance": acceptance,
            "expert_precision": deployment.expert_precision,
            "kernels": a.kernels.name(),
            "moe_table": moe_table,
            "step_us": total.seconds * 1e6,
            "classes": classes_json(&cost),
            "ops": cost.ops,
            "communication_modelled": false,
            "tokens_per_expert": cost.tokens_per_expert,
            "tokens_per_step_per_request": tokens,
            "tok_s_per_user": tok_s_per_user,
            "output_tok_s_per_gpu": output_per_gpu,
            "kv_requests_that_fit": requests_fit,
            "kv_fits": a.batch as f64 <= requests_fit,
        }))?,
        TableFormat::Table => {
            let mut t = String::new();
            let tpe = &cost.tokens_per_expert;
            let _ = writeln!(
                t,
                "{} on {}: EP {} ({} slots, {} experts per GPU), batch {} ({batch_is}) x context {}, MTP {}, experts {}",
                model.name,
                gpu.name,
                deployment.ep,
                deployment.slots,
                cost.experts_per_gpu,
                a.batch,
                a.context,
                load.mtp,
                deployment.expert_precision
            );
            let what = match prefill {
                Some(p) if a.batch > 0 => format!(
                    "one iteration of one rank, with a prefill chunk of {} tokens after {}",
                    p.tokens, p.prefix
                ),
                Some(p) => format!(
                    "one prefill chunk of {} tokens after {}, one rank",
                    p.tokens, p.prefix
                ),
                None => "one decode iteration of one rank".to_owned(),
            };
            let _ = writeln!(t, "{what} ({COMMUNICATION_NOTE})");
            if let Some(table) = &moe_table {
                let _ = writeln!(
                    t,
                    "{} kernels: routed experts from {table}",
                    a.kernels.name()
                );
            }
            let _ = writeln!(
                t,
                "  {:<15} {:>10} {:>7} {:>12} {:>10}  bound",
                "op class", "time us", "share", "HBM GB", "TFLOP"
            );
            for class in OpClass::ALL {
                let c = cost.by_class[&class];
                if matches!(class, OpClass::Dispatch | OpClass::Combine) {
                    let _ = writeln!(t, "  {:<15} {:>10}", class.label(), "-");
                    continue;
                }
                let _ = writeln!(t, "  {}", row(class.label(), &c, total.seconds, bound(&c)));
            }
            // A sum of memory- and compute-bound ops has no single bound.
            let _ = writeln!(t, "  {}", row("total", &total, total.seconds, ""));
            ops_table(&mut t, &cost, total.seconds);
            let _ = writeln!(
                t,
                "  routed tokens per local expert per MoE layer: {} to {} (balanced routing)",
                tpe.iter().min().unwrap_or(&0),
                tpe.iter().max().unwrap_or(&0)
            );
            if a.batch > 0 {
                let _ = writeln!(
                    t,
                    "  {:.2} tokens per request per step (MTP {}, acceptance {}): {:.0} tok/s per user, {:.0} output tok/s per GPU",
                    tokens, load.mtp, acceptance, tok_s_per_user, output_per_gpu
                );
            }
            if (a.batch as f64) > requests_fit {
                let _ = writeln!(
                    t,
                    "  warning: the KV cache holds only {requests_fit:.0} requests of {} tokens per GPU, not {}",
                    a.context, a.batch
                );
            }
            t
        }
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The op prices: the roofline alone, or the GPU's profile as `--kernels` runs it, with the
/// engine's own MoE table where it has one (`None`: the profile's own). SGLang's
/// `--deepep-mode auto` feeds decode-only batches through DeepEP's low-latency kernels and
/// any batch with a prefill chunk through its normal ones, and each has its own MoE kernel.
fn kernels<'g>(
    a: &StepArgs,
    model: &epsim::model::ModelConfig,
    gpu: &'g epsim::hardware::GpuSpec,
    d: &memory::Deployment,
) -> anyhow::Result<(Kernels<'g>, Option<String>)> {
    if a.roofline {
        if a.kernels != Backend::Trtllm {
            return Err(
                UsageError("--roofline prices no engine's kernels: drop --kernels".into()).into(),
            );
        }
        return Ok((Kernels::roofline_only(gpu), None));
    }
    let feed = if a.prefill_chunk == 0 {
        A2aAlgorithm::LowLatency
    } else {
        A2aAlgorithm::Hierarchical
    };
    let shape = MoeShape::of(model, d.expert_precision);
    let dir = gpu.profile.as_deref();
    let gap = profile::engine_gap(dir, a.kernels, feed, shape, d.moe_tp)
        .map_err(|e| UsageError(e.to_string()))?;
    if let Some(gap) = gap {
        return Err(UsageError(format!(
            "--kernels {} on {}: {gap}; --kernels trtllm prices them from TensorRT-LLM's",
            a.kernels.name(),
            gpu.name
        ))
        .into());
    }
    let table =
        (a.kernels.moe_table(feed).zip(dir)).map(|(t, dir)| dir.join(t).display().to_string());
    let k = Kernels::for_engine(gpu, a.kernels, feed).map_err(UsageError)?;
    Ok((k, table))
}

/// Every op with its calls per iteration and where its time came from.
fn ops_table(t: &mut String, cost: &StepCost, total_s: f64) {
    let _ = writeln!(
        t,
        "  {:<32} {:<14} {:>7} {:>10} {:>7}  source",
        "op", "class", "calls", "time us", "share"
    );
    for op in &cost.ops {
        let _ = writeln!(
            t,
            "  {:<32} {:<14} {:>7} {:>10.1} {:>6.1}%  {}",
            op.op,
            op.class.label(),
            op.calls,
            op.seconds * 1e6,
            100.0 * op.seconds / total_s,
            op.source.label()
        );
    }
}

fn row(label: &str, c: &OpCost, total: f64, bound: &str) -> String {
    let line = format!(
        "{:<15} {:>10.1} {:>6.1}% {:>12.3} {:>10.3}  {bound}",
        label,
        c.seconds * 1e6,
        100.0 * c.seconds / total,
        c.bytes / 1e9,
        c.flops / 1e12,
    );
    line.trim_end().to_owned()
}

fn bound(c: &OpCost) -> &'static str {
    match (c.seconds == 0.0, c.memory_bound()) {
        (true, _) => "",
        (false, true) => "memory",
        (false, false) => "compute",
    }
}

fn classes_json(cost: &StepCost) -> serde_json::Value {
    let total = cost.total().seconds;
    let mut map = serde_json::Map::new();
    for class in OpClass::ALL {
        let c = cost.by_class[&class];
        let key = serde_json::to_value(class)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        map.insert(
            key,
            serde_json::json!({
                "us": c.seconds * 1e6,
                "share": if total > 0.0 { c.seconds / total } else { 0.0 },
                "hbm_gb": c.bytes / 1e9,
                "tflop": c.flops / 1e12,
                "memory_bound": c.seconds > 0.0 && c.memory_bound(),
                "source": cost.sources.get(&class),
            }),
        );
    }
    serde_json::Value::Object(map)
}
