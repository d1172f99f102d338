//! The `instances` section: GPUs, replicas, tensor parallelism, slots, and each
//! instance's memory plan on its GPUs.

use super::check::Checks;
use super::*;
use crate::cost::profile::MoeShape;

/// Every instance (replicas expanded) that passes its checks.
pub(super) fn instances(
    c: &mut Checks,
    raw: &ScenarioFile,
    topology: Option<&Topology>,
    model: Option<&ModelConfig>,
    mtp: Mtp,
    precision: PrecisionSettings,
    what_if: WhatIf,
) -> Vec<InstanceSpec> {
    let w = &raw.workload;
    let mut placer = Placer {
        owner: topology.map_or_else(Vec::new, |t| vec![None; t.gpus.len()]),
        // Capped: lengths past the limit are reported by the workload check.
        context: (w.input.value.typical())
            .saturating_add(w.output.value.typical())
            .clamp(1, 2 * super::check::MAX_REQUEST_TOKENS),
        mtp,
        precision,
        overlap: raw.scheduling.micro_batch_overlap,
        step_time_scale: what_if.step_time_scale,
    };
    if raw.instances.value.is_empty() {
        c.problem(
            raw.instances.loc,
            "instances",
            "needs at least one instance".into(),
        );
    }
    let mut instances = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, item) in raw.instances.value.iter().enumerate() {
        let Some(inst) = &item.0 else { continue };
        let at = |field: &str| format!("instances[{i}].{field}");
        let f = &inst.value;
        // Results and requests.csv name instances: two of one name could not be told apart.
        if !names.insert(f.name.clone()) {
            c.problem(
                inst.loc,
                &at("name"),
                format!("`{}` names another instance too", f.name),
            );
        }
        let Some(shape) = shape(c, inst, &at, mtp) else {
            continue;
        };
        let (Some(topo), Some(model)) = (topology, model) else {
            continue;
        };
        let expert_ranks = shape.first.len() as u64 / shape.moe_tp;
        let Some(slots) = slots(c, inst, &at, model, expert_ranks) else {
            continue;
        };
        for k in 0..shape.replicas as usize {
            let one = Replica {
                index: i,
                k,
                shape: &shape,
                slots,
            };
            match placer.place(c, inst, &at, topo, model, &one) {
                Some(spec) => instances.push(spec),
                None => break,
            }
        }
    }
    instances
}

/// An instance's GPUs (of its first replica), replicas, attention and expert TP sizes.
struct Shape {
    first: Vec<usize>,
    replicas: u64,
    tp: u64,
    moe_tp: u64,
}

/// Checks the GPU list, replicas, TP size, batch and token limits; `None` when the instance
/// cannot be placed at all.
fn shape(
    c: &mut Checks,
    inst: &At<InstanceFile>,
    at: &dyn Fn(&str) -> String,
    mtp: Mtp,
) -> Option<Shape> {
    let f = &inst.value;
    let first = match &f.gpus.value {
        GpuList::Indices(v) => match v.iter().find(|&&g| g > MAX_GPU_INDEX) {
            Some(g) => Err(format!(
                "GPU {g} is beyond the largest index {MAX_GPU_INDEX}"
            )),
            None => Ok(v.clone()),
        },
        GpuList::Ranges(s) => parse_ranges(s),
    };
    let first = match first {
        Ok(v) if !v.is_empty() => v,
        Ok(_) => {
            c.problem(f.gpus.loc, &at("gpus"), "lists no GPUs".into());
            return None;
        }
        Err(e) => {
            c.problem(f.gpus.loc, &at("gpus"), e);
            return None;
        }
    };
    let replicas = f.replicas.as_ref().map_or(1, |r| r.value);
    if replicas == 0 {
        let loc = f.replicas.as_ref().map_or(inst.loc, |r| r.loc);
        c.problem(loc, &at("replicas"), "must be at least 1".into());
        return None;
    }
    let tp = f.attention_tp.as_ref().map_or(1, |t| t.value);
    if tp == 0 || !(first.len() as u64).is_multiple_of(tp) {
        let loc = f.attention_tp.as_ref().map_or(inst.loc, |t| t.loc);
        c.problem(
            loc,
            &at("attention_tp"),
            format!("{tp} does not divide the instance's {} GPUs", first.len()),
        );
        return None;
    }
    let moe_tp = f.moe_tp.as_ref().map_or(1, |t| t.value);
    let moe_tp_loc = f.moe_tp.as_ref().map_or(inst.loc, |t| t.loc);
    if moe_tp == 0 || !(first.len() as u64).is_multiple_of(moe_tp) {
        c.problem(
            moe_tp_loc,
            &at("moe_tp"),
            format!(
                "{moe_tp} does not divide the instance's {} GPUs",
                first.len()
            ),
        );
        return None;
    }
    // Tensor-parallel experts take their tokens from data-parallel ranks (gathered) or from
    // the attention group that is their expert group, or that holds every token of the
    // instance (TensorRT-LLM's minimum-latency TP8 attention with MoE TP4 x EP2).
    let whole = tp == first.len() as u64;
    if moe_tp > 1 && tp > 1 && tp != moe_tp && !(whole && tp.is_multiple_of(moe_tp)) {
        c.problem(
            moe_tp_loc,
            &at("moe_tp"),
            format!(
                "with attention_tp {tp}, moe_tp must be 1, {tp}, or a divisor of {tp} when attention_tp spans the instance, got {moe_tp}"
            ),
        );
        return None;
    }
    if f.max_batch.value == 0 {
        c.problem(
            f.max_batch.loc,
            &at("max_batch"),
            "must be at least 1".into(),
        );
    }
    let step = mtp.drafts.saturating_add(1).saturating_mul(tp);
    if f.max_tokens.value < step {
        c.problem(
            f.max_tokens.loc,
            &at("max_tokens"),
            format!(
                "must hold at least one decode step ({step} tokens), got {}",
                f.max_tokens.value
            ),
        );
    }
    Some(Shape {
        first,
        replicas,
        tp,
        moe_tp,
    })
}

/// The most expert slots per MoE layer an instance may have (as `epsim eplb` allows):
/// thousands of times any model's experts.
pub const MAX_EXPERT_SLOTS: u64 = 1_000_000;

/// Expert slots per MoE layer: given, or the experts plus redundant ones per GPU.
fn slots(
    c: &mut Checks,
    inst: &At<InstanceFile>,
    at: &dyn Fn(&str) -> String,
    model: &ModelConfig,
    gpus: u64,
) -> Option<u64> {
    let f = &inst.value;
    let slots = match (f.slots, f.redundant_experts_per_gpu) {
        (Some(_), Some(_)) => {
            c.problem(
                inst.loc,
                &at("slots"),
                "give slots or redundant_experts_per_gpu, not both".into(),
            );
            return None;
        }
        (Some(s), None) => s,
        (None, r) => model
            .moe
            .routed_experts
            .saturating_add(r.unwrap_or(0).saturating_mul(gpus)),
    };
    if slots > MAX_EXPERT_SLOTS {
        c.problem(
            inst.loc,
            &at("slots"),
            format!("{slots} expert slots per layer: at most {MAX_EXPERT_SLOTS}"),
        );
        return None;
    }
    if f.eplb.unwrap_or(EplbMode::None) == EplbMode::None && slots != model.moe.routed_experts {
        c.problem(
            inst.loc,
            &at("slots"),
            format!(
                "{slots} slots for {} experts: redundant slots need eplb static or online",
                model.moe.routed_experts
            ),
        );
        return None;
    }
    Some(slots)
}

/// Replica `k` of instance `index`.
struct Replica<'a> {
    index: usize,
    k: usize,
    shape: &'a Shape,
    slots: u64,
}

/// What decides whose MoE kernels an instance can run.
struct Engine<'a> {
    gpu: &'a GpuSpec,
    model: &'a ModelConfig,
    precision: Precision,
    algorithm: A2aAlgorithm,
    moe_tp: u64,
}

impl Engine<'_> {
    /// The instance's `kernels`; `None` (after recording why) when the engine's tables do
    /// not measure its routed experts: pricing them from another engine's kernels would
    /// answer a different question without saying so.
    fn kernels(
        &self,
        c: &mut Checks,
        f: &InstanceFile,
        at: &dyn Fn(&str) -> String,
        name: &str,
    ) -> Option<Backend> {
        let Some(kernels) = &f.kernels else {
            return Some(Backend::Trtllm);
        };
        let backend = kernels.value;
        let shape = MoeShape::of(self.model, self.precision);
        let dir = self.gpu.profile.as_deref();
        match crate::cost::profile::engine_gap(dir, backend, self.algorithm, shape, self.moe_tp) {
            Ok(None) => Some(backend),
            Ok(Some(gap)) => {
                c.problem(
                    kernels.loc,
                    &at("kernels"),
                    format!(
                        "{name}: {} kernels on {} ({} all-to-all): {gap}; `kernels: trtllm` prices them from TensorRT-LLM's",
                        backend.name(),
                        self.gpu.name,
                        self.algorithm
                    ),
                );
                None
            }
            Err(e) => {
                c.diags.append(e);
                None
            }
        }
    }
}

/// Hands GPUs to replicas (each GPU to one) and plans each replica's memory.
struct Placer {
    /// Which instance holds each GPU of the topology.
    owner: Vec<Option<String>>,
    /// Tokens of a typical request, for the memory plan.
    context: u64,
    mtp: Mtp,
    /// The scenario's precisions and overlap: each instance's defaults.
    precision: PrecisionSettings,
    overlap: bool,
    step_time_scale: f64,
}

impl Placer {
    /// The replica's spec; `None` (after recording why) when its GPUs or memory do not work.
    fn place(
        &mut self,
        c: &mut Checks,
        inst: &At<InstanceFile>,
        at: &dyn Fn(&str) -> String,
        topo: &Topology,
        model: &ModelConfig,
        r: &Replica,
    ) -> Option<InstanceSpec> {
        let f = &inst.value;
        let first = &r.shape.first;
        let gpus: Vec<usize> = first.iter().map(|g| g + r.k * first.len()).collect();
        let name = if r.shape.replicas == 1 {
            f.name.clone()
        } else {
            format!("{}#{}", f.name, r.k)
        };
        self.claim(c, f, at, topo, &gpus, &name)?;
        let specs: std::collections::BTreeSet<&str> = gpus
            .iter()
            .filter_map(|&g| topo.graph[topo.gpus[g]].gpu_spec.as_deref())
            .collect();
        let Some(gpu) = specs
            .iter()
            .next()
            .and_then(|s| topo.gpu_specs.get(*s))
            .filter(|_| specs.len() == 1)
        else {
            c.problem(
                f.gpus.loc,
                &at("gpus"),
                format!("{name}: its GPUs must share one GPU spec, found {specs:?}"),
            );
            return None;
        };
        // A GPU spec's kernel profile is input too: its problems are reported here, at
        // validation, with their own file, line and column (exit 2), not when pricing starts.
        if let Some(dir) = &gpu.profile
            && let Err(e) = crate::cost::profile::cached(dir)
                .map(|_| ())
                .and_then(|()| crate::cost::profile::physics::check(dir, gpu))
        {
            c.diags.append(e);
            return None;
        }
        let tp = r.shape.tp;
        let precision = self.precision.over(&f.precision);
        let algorithm = f.all_to_all.algorithm.unwrap_or_else(|| {
            topo.collectives
                .as_ref()
                .map_or(A2aAlgorithm::Direct, |c| c.algorithm)
        });
        let engine = Engine {
            gpu,
            model,
            precision: precision.experts,
            algorithm,
            moe_tp: r.shape.moe_tp,
        };
        let kernels = engine.kernels(c, f, at, &name)?;
        let deployment = Deployment {
            ep: gpus.len() as u64 / r.shape.moe_tp,
            moe_tp: r.shape.moe_tp,
            slots: r.slots,
            attention: if tp == 1 {
                AttentionLayout::Dp
            } else {
                AttentionLayout::Tp(tp)
            },
            expert_precision: precision.experts,
            other_precision: precision.other,
            attention_precision: precision.attention,
            kv_precision: precision.kv,
            mtp: self.mtp.drafts > 0,
            kv_share_of_free_memory: memory::DEFAULT_KV_SHARE_OF_FREE_MEMORY,
        };
        match memory::plan(model, gpu, &deployment, self.context, 0) {
            Ok(plan) => Some(InstanceSpec {
                name,
                role: f.role,
                gpus,
                attention_tp: tp,
                moe_tp: r.shape.moe_tp,
                slots: r.slots,
                eplb: f.eplb.unwrap_or(EplbMode::None),
                max_batch: f.max_batch.value,
                max_tokens: f.max_tokens.value,
                precision,
                micro_batch_overlap: f.micro_batch_overlap.unwrap_or(self.overlap),
                all_to_all: AllToAll {
                    algorithm,
                    dispatch: f.all_to_all.dispatch.unwrap_or(AllToAll::DEFAULT_DISPATCH),
                    combine: f.all_to_all.combine.unwrap_or(AllToAll::DEFAULT_COMBINE),
                },
                kernels,
                step_time_scale: self.step_time_scale,
                plan,
                gpu: gpu.clone(),
            }),
            Err(e) => {
                for reason in e.0 {
                    c.problem(
                        inst.loc,
                        &format!("instances[{}]", r.index),
                        format!("{name}: {reason}"),
                    );
                }
                None
            }
        }
    }

    /// Gives `gpus` to `name`; `None` (after recording why) when one is missing or taken.
    fn claim(
        &mut self,
        c: &mut Checks,
        f: &InstanceFile,
        at: &dyn Fn(&str) -> String,
        topo: &Topology,
        gpus: &[usize],
        name: &str,
    ) -> Option<()> {
        for &g in gpus {
            match self.owner.get_mut(g) {
                None => {
                    c.problem(
                        f.gpus.loc,
                        &at("gpus"),
                        format!(
                            "{name}: GPU {g} is not in the topology ({} GPUs, 0-{})",
                            topo.gpus.len(),
                            topo.gpus.len().saturating_sub(1)
                        ),
                    );
                    return None;
                }
                Some(Some(other)) => {
                    c.problem(
                        f.gpus.loc,
                        &at("gpus"),
                        format!("{name}: GPU {g} already belongs to {other}"),
                    );
                    return None;
                }
                Some(slot) => *slot = Some(name.to_owned()),
            }
        }
        Some(())
    }
}

/// The largest GPU index a scenario may name: far beyond any topology epsim builds, small
/// enough that a range is never an allocation the machine cannot make.
pub const MAX_GPU_INDEX: usize = 1 << 20;

/// `"0-7,16-23,40"` -> [0..=7, 16..=23, 40].
pub(super) fn parse_ranges(text: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("`{part}` is not a GPU index or a range like 0-7");
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a > b {
            return Err(format!("range {part} runs backwards"));
        }
        if b > MAX_GPU_INDEX {
            return Err(format!(
                "GPU {b} is beyond the largest index {MAX_GPU_INDEX}"
            ));
        }
        out.extend(a..=b);
    }
    let mut sorted = out.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != out.len() {
        return Err(format!("`{text}` names a GPU twice"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_gpu_ranges_are_errors_not_allocations() {
        let err = parse_ranges("0-18446744073709551615").unwrap_err();
        assert!(err.contains("beyond the largest index"), "{err}");
        assert!(parse_ranges("0-4000000000").is_err());
        assert_eq!(parse_ranges("1048575-1048576").unwrap().len(), 2);
    }

    #[test]
    fn gpu_ranges_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_ranges("0-3, 8,10-11").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert!(parse_ranges("3-1").unwrap_err().contains("backwards"));
        assert!(parse_ranges("a-b").unwrap_err().contains("not a GPU index"));
        assert!(parse_ranges("0-3,2").unwrap_err().contains("twice"));
    }
}
