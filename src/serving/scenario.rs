//! Scenario files: what to serve (model, workload), on what (topology), and how (instances
//! with their GPUs, EP, EPLB, batch limits; the scheduling policy). Loading checks every
//! field and reports every problem at once with file, line and column; the result is a
//! resolved [`Scenario`] whose every default is spelled out (it goes into manifest.json).

use super::workload::{Lengths, RequestSpec, read_trace};
use crate::hardware::GpuSpec;
use crate::input::{self, At, Diagnostics, Node, Problem, Recover};
use crate::model::memory::{self, AttentionLayout, Deployment, MemoryPlan};
use crate::model::{ModelConfig, Precision, load_model};
use crate::moe::imbalance::EplbMode;
use crate::moe::policy::OnlineStyle;
use crate::moe::popularity::Popularity;
use crate::topology::{self, Topology};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Share of the run excluded from statistics when `warmup_s` is not given.
pub const DEFAULT_WARMUP_SHARE: f64 = 0.2;
/// MoE layers priced with sampled routing each iteration when `moe.sampled_layers` is not
/// given; each stands for an equal share of the model's MoE layers.
pub const DEFAULT_SAMPLED_LAYERS: usize = 4;

// ---------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: String,
    topology: At<String>,
    model: At<String>,
    #[serde(default)]
    seed: Option<u64>,
    duration_s: At<f64>,
    #[serde(default)]
    warmup_s: Option<At<f64>>,
    workload: WorkloadFile,
    #[serde(default)]
    precision: PrecisionFile,
    #[serde(default)]
    mtp: Option<At<MtpFile>>,
    #[serde(default)]
    scheduling: SchedulingFile,
    #[serde(default)]
    moe: MoeFile,
    instances: At<Vec<Recover<At<InstanceFile>>>>,
    #[serde(default)]
    output: OutputSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadFile {
    arrivals: At<Arrivals>,
    input: At<Lengths>,
    output: At<Lengths>,
    #[serde(default)]
    prefix_hit: Option<At<f64>>,
}

/// Where requests come from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Arrivals {
    /// Open loop, exponential gaps.
    Poisson { rate_per_s: f64 },
    /// Open loop, gamma-distributed gaps with coefficient of variation `cv`.
    Gamma { rate_per_s: f64, cv: f64 },
    /// A fixed number of users, each sending its next request when its last one finishes.
    /// User u sends its first request at u x `ramp_up_s` / `users` (default 0: all at once).
    /// `users_per_gpu` instead sets users per GPU of the decoding instances (`decode` or
    /// `both`); the resolved scenario has both.
    ClosedLoop {
        #[serde(default)]
        users: u64,
        #[serde(default)]
        users_per_gpu: Option<u64>,
        #[serde(default)]
        ramp_up_s: f64,
    },
    /// Replay of `arrival_s,input_tokens,output_tokens` rows (path relative to the scenario).
    Trace { file: String },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PrecisionFile {
    #[serde(default)]
    experts: Option<Precision>,
    #[serde(default)]
    other: Option<Precision>,
    #[serde(default)]
    kv: Option<Precision>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MtpFile {
    drafts: u64,
    #[serde(default)]
    acceptance: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SchedulingFile {
    #[serde(default)]
    policy: Option<PolicyName>,
    #[serde(default)]
    micro_batch_overlap: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MoeFile {
    #[serde(default)]
    popularity: Option<At<String>>,
    #[serde(default)]
    sampled_layers: Option<At<usize>>,
    #[serde(default)]
    online: Option<At<OnlineStyle>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceFile {
    name: String,
    role: Role,
    gpus: At<GpuList>,
    #[serde(default)]
    replicas: Option<At<u64>>,
    #[serde(default)]
    attention_tp: Option<At<u64>>,
    #[serde(default)]
    slots: Option<u64>,
    #[serde(default)]
    redundant_experts_per_gpu: Option<u64>,
    #[serde(default)]
    eplb: Option<EplbMode>,
    max_batch: At<u64>,
    max_tokens: At<u64>,
}

/// GPU indices (in the topology's rank order): a list, or ranges like `"0-7,16-23"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum GpuList {
    Indices(Vec<usize>),
    Ranges(String),
}

/// What an instance does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Prefill only (disaggregated); hands each request's KV cache to a decode instance.
    Prefill,
    /// Decode only (disaggregated).
    Decode,
    /// Prefill chunks mixed into decode iterations (aggregated).
    Both,
}

/// The scheduling policies, by the names scenarios use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    /// First come, first served; instances and DP ranks taken round robin.
    #[default]
    Fcfs,
    /// Shortest prompt first (ties by arrival); round robin placement.
    ShortestPromptFirst,
    /// First come, first served; each request to the instance and DP rank with the least
    /// KV cache in use.
    KvAware,
}

/// What `epsim run` writes besides summary.csv and manifest.json.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSettings {
    /// One row per finished request (turn off for big runs).
    #[serde(default = "yes")]
    pub requests_csv: bool,
}

fn yes() -> bool {
    true
}

impl Default for OutputSettings {
    fn default() -> Self {
        OutputSettings { requests_csv: true }
    }
}

// ---------------------------------------------------------------------------------------
// The resolved scenario.

/// A scenario with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    pub topology_file: PathBuf,
    pub model_file: PathBuf,
    pub seed: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub workload: Workload,
    pub precision: PrecisionSettings,
    pub mtp: Mtp,
    pub policy: PolicyName,
    pub micro_batch_overlap: bool,
    pub moe: MoeSettings,
    pub instances: Vec<InstanceSpec>,
    pub output: OutputSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    pub arrivals: Arrivals,
    pub input: Lengths,
    pub output: Lengths,
    pub prefix_hit: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrecisionSettings {
    pub experts: Precision,
    pub other: Precision,
    pub kv: Precision,
}

/// Multi-token prediction: `drafts` draft tokens per decode step, each accepted with
/// `acceptance` given the ones before it were.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mtp {
    pub drafts: u64,
    pub acceptance: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeSettings {
    #[serde(serialize_with = "display")]
    pub popularity: Popularity,
    pub sampled_layers: usize,
    pub online: OnlineStyle,
}

fn display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// One instance: its GPUs (topology rank indices), layout and limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceSpec {
    pub name: String,
    pub role: Role,
    pub gpus: Vec<usize>,
    /// GPUs sharing one request batch's attention (1 = data-parallel attention).
    pub attention_tp: u64,
    pub slots: u64,
    pub eplb: EplbMode,
    /// Requests per DP rank.
    pub max_batch: u64,
    /// Tokens per DP rank per iteration (decode tokens plus prefill chunks).
    pub max_tokens: u64,
    /// The memory plan, with the deployment it plans (`plan.deployment`).
    #[serde(skip)]
    pub plan: MemoryPlan,
    #[serde(skip)]
    pub gpu: GpuSpec,
}

impl InstanceSpec {
    pub fn ep(&self) -> u64 {
        self.gpus.len() as u64
    }

    /// Attention groups: the ranks requests are placed on.
    pub fn dp_ranks(&self) -> usize {
        self.gpus.len() / self.attention_tp as usize
    }
}

/// A scenario with the inputs it names, loaded and checked.
#[derive(Debug, Clone)]
pub struct LoadedScenario {
    pub scenario: Scenario,
    pub topology: Topology,
    pub model: ModelConfig,
    /// The replayed requests, for trace arrivals.
    pub trace: Option<Vec<RequestSpec>>,
}

/// Reads and checks a scenario file and everything it names.
pub fn load(file: &Path) -> Result<LoadedScenario, Diagnostics> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        let mut d = Diagnostics::new();
        d.push_file(file, format!("cannot read the file: {e}"));
        d
    })?;
    let root = input::parse_tree(file, &text)?;
    from_tree(file, &root)
}

/// Checks a scenario given as a parsed tree (a sweep edits the tree before this).
pub fn from_tree(file: &Path, root: &Node) -> Result<LoadedScenario, Diagnostics> {
    let raw: ScenarioFile = input::from_node(root).map_err(|problems| {
        let mut d = Diagnostics::new();
        d.extend(file, problems);
        d
    })?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut diags = Diagnostics::new();
    let mut problem = |loc, path: &str, message: String| {
        diags.push(file, Problem::new(loc, path, message));
    };

    // The files it names: their own problems are reported against them.
    let topology_file = dir.join(&raw.topology.value);
    let model_file = dir.join(&raw.model.value);
    let mut named = Diagnostics::new();
    let topology = match topology::load(&topology_file) {
        Ok(t) => Some(t),
        Err(e) => {
            problem(
                raw.topology.loc,
                "topology",
                format!("cannot use {}", topology_file.display()),
            );
            named.append(e);
            None
        }
    };
    let model = match load_model(&model_file) {
        Ok(m) => Some(m),
        Err(e) => {
            problem(
                raw.model.loc,
                "model",
                format!("cannot use {}", model_file.display()),
            );
            named.append(e);
            None
        }
    };

    let duration_s = raw.duration_s.value;
    if !(duration_s.is_finite() && duration_s > 0.0) {
        problem(
            raw.duration_s.loc,
            "duration_s",
            format!("must be a number of seconds > 0, got {duration_s}"),
        );
    }
    let warmup_s = match &raw.warmup_s {
        Some(w) => {
            if !(w.value.is_finite() && w.value >= 0.0 && w.value < duration_s) {
                problem(
                    w.loc,
                    "warmup_s",
                    format!(
                        "must be at least 0 and below duration_s ({duration_s}), got {}",
                        w.value
                    ),
                );
            }
            w.value
        }
        None => DEFAULT_WARMUP_SHARE * duration_s,
    };

    // Workload.
    let w = &raw.workload;
    match &w.arrivals.value {
        Arrivals::Poisson { rate_per_s } | Arrivals::Gamma { rate_per_s, .. }
            if !(rate_per_s.is_finite() && *rate_per_s > 0.0) =>
        {
            problem(
                w.arrivals.loc,
                "workload.arrivals.rate_per_s",
                format!("must be > 0, got {rate_per_s}"),
            );
        }
        Arrivals::Gamma { cv, .. } if !(cv.is_finite() && *cv > 0.0) => problem(
            w.arrivals.loc,
            "workload.arrivals.cv",
            format!("must be > 0, got {cv}"),
        ),
        Arrivals::ClosedLoop {
            users,
            users_per_gpu,
            ..
        } if (*users == 0) == users_per_gpu.is_none_or(|u| u == 0) => problem(
            w.arrivals.loc,
            "workload.arrivals.users",
            "give users (at least 1) or users_per_gpu (at least 1), not both".into(),
        ),
        Arrivals::ClosedLoop { ramp_up_s, .. } if !(ramp_up_s.is_finite() && *ramp_up_s >= 0.0) => {
            problem(
                w.arrivals.loc,
                "workload.arrivals.ramp_up_s",
                format!("must be a number of seconds >= 0, got {ramp_up_s}"),
            )
        }
        _ => {}
    }
    for (path, lengths) in [("workload.input", &w.input), ("workload.output", &w.output)] {
        for p in lengths.value.problems() {
            problem(lengths.loc, path, p);
        }
    }
    let prefix_hit = w.prefix_hit.as_ref().map_or(0.0, |p| p.value);
    if let Some(p) = &w.prefix_hit
        && !(0.0..1.0).contains(&p.value)
    {
        problem(
            p.loc,
            "workload.prefix_hit",
            format!(
                "must be in [0, 1) (a share of each prompt already cached), got {}",
                p.value
            ),
        );
    }
    let mut trace = None;
    if let Arrivals::Trace { file: t } = &w.arrivals.value {
        match read_trace(&dir.join(t), prefix_hit) {
            Ok(rows) => trace = Some(rows),
            Err(e) => {
                problem(
                    w.arrivals.loc,
                    "workload.arrivals.file",
                    format!("cannot use the trace {}", dir.join(t).display()),
                );
                named.append(e);
            }
        }
    }

    // MTP.
    let model_acceptance = model.as_ref().and_then(|m| m.mtp_acceptance);
    let mtp = match &raw.mtp {
        None => Mtp {
            drafts: 0,
            acceptance: 0.0,
        },
        Some(m) => {
            let acceptance = m.value.acceptance.or(model_acceptance).unwrap_or(0.0);
            if !(0.0..=1.0).contains(&acceptance) {
                problem(
                    m.loc,
                    "mtp.acceptance",
                    format!("must be in [0, 1], got {acceptance}"),
                );
            }
            if let Some(model) = &model
                && m.value.drafts > 0
                && model.mtp_modules == 0
            {
                problem(
                    m.loc,
                    "mtp.drafts",
                    format!("{} has no MTP module to draft with", model.name),
                );
            }
            if m.value.drafts > 0 && m.value.acceptance.is_none() && model_acceptance.is_none() {
                problem(
                    m.loc,
                    "mtp.acceptance",
                    "the model file gives no acceptance rate; set one".into(),
                );
            }
            Mtp {
                drafts: m.value.drafts,
                acceptance,
            }
        }
    };

    // MoE routing model.
    let popularity = match &raw.moe.popularity {
        None => Popularity::Calibrated,
        Some(p) => Popularity::from_str(&p.value).unwrap_or_else(|e| {
            problem(p.loc, "moe.popularity", e);
            Popularity::Calibrated
        }),
    };
    let moe_layers = model.as_ref().map_or(1, |m| m.moe_layers() as usize);
    let sampled_layers = match &raw.moe.sampled_layers {
        None => DEFAULT_SAMPLED_LAYERS.min(moe_layers),
        Some(s) => {
            if !(1..=moe_layers).contains(&s.value) {
                problem(
                    s.loc,
                    "moe.sampled_layers",
                    format!(
                        "must be 1 to the model's {moe_layers} MoE layers, got {}",
                        s.value
                    ),
                );
            }
            s.value
        }
    };
    let online = raw.moe.online.as_ref().map_or(
        OnlineStyle::Layerwise {
            layers_per_iteration: 1,
            decay: 0.95,
        },
        |o| o.value,
    );
    if let Some(o) = &raw.moe.online {
        for message in online_problems(o.value) {
            problem(o.loc, "moe.online", message);
        }
    }

    let precision = PrecisionSettings {
        experts: raw
            .precision
            .experts
            .or(model.as_ref().map(|m| m.native_precision.experts))
            .unwrap_or(Precision::Fp8),
        other: raw
            .precision
            .other
            .or(model.as_ref().map(|m| m.native_precision.other))
            .unwrap_or(Precision::Bf16),
        kv: raw.precision.kv.unwrap_or(Precision::Fp8),
    };

    // Instances.
    let context = (w.input.value.typical() + w.output.value.typical()).max(1);
    let mut instances = Vec::new();
    let mut owner: Vec<Option<String>> = topology
        .as_ref()
        .map_or_else(Vec::new, |t| vec![None; t.gpus.len()]);
    if raw.instances.value.is_empty() {
        problem(
            raw.instances.loc,
            "instances",
            "needs at least one instance".into(),
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, item) in raw.instances.value.iter().enumerate() {
        let Some(inst) = &item.0 else { continue };
        let at = |field: &str| format!("instances[{i}].{field}");
        let f = &inst.value;
        // Results and requests.csv name instances: two of one name could not be told apart.
        if !names.insert(f.name.clone()) {
            problem(
                inst.loc,
                &at("name"),
                format!("`{}` names another instance too", f.name),
            );
        }
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
                problem(f.gpus.loc, &at("gpus"), "lists no GPUs".into());
                continue;
            }
            Err(e) => {
                problem(f.gpus.loc, &at("gpus"), e);
                continue;
            }
        };
        let replicas = f.replicas.as_ref().map_or(1, |r| r.value);
        if replicas == 0 {
            let loc = f.replicas.as_ref().map_or(inst.loc, |r| r.loc);
            problem(loc, &at("replicas"), "must be at least 1".into());
            continue;
        }
        let tp = f.attention_tp.as_ref().map_or(1, |t| t.value);
        if tp == 0 || !(first.len() as u64).is_multiple_of(tp) {
            let loc = f.attention_tp.as_ref().map_or(inst.loc, |t| t.loc);
            problem(
                loc,
                &at("attention_tp"),
                format!("{tp} does not divide the instance's {} GPUs", first.len()),
            );
            continue;
        }
        if f.max_batch.value == 0 {
            problem(
                f.max_batch.loc,
                &at("max_batch"),
                "must be at least 1".into(),
            );
        }
        if f.max_tokens.value < (1 + mtp.drafts) * tp {
            problem(
                f.max_tokens.loc,
                &at("max_tokens"),
                format!(
                    "must hold at least one decode step ({} tokens), got {}",
                    (1 + mtp.drafts) * tp,
                    f.max_tokens.value
                ),
            );
        }
        let eplb = f.eplb.unwrap_or(EplbMode::None);
        let (Some(topo), Some(model)) = (&topology, &model) else {
            continue;
        };
        let slots = match (f.slots, f.redundant_experts_per_gpu) {
            (Some(_), Some(_)) => {
                problem(
                    inst.loc,
                    &at("slots"),
                    "give slots or redundant_experts_per_gpu, not both".into(),
                );
                continue;
            }
            (Some(s), None) => s,
            (None, r) => model.moe.routed_experts + r.unwrap_or(0) * first.len() as u64,
        };
        if eplb == EplbMode::None && slots != model.moe.routed_experts {
            problem(
                inst.loc,
                &at("slots"),
                format!(
                    "{slots} slots for {} experts: redundant slots need eplb static or online",
                    model.moe.routed_experts
                ),
            );
            continue;
        }
        for k in 0..replicas as usize {
            let gpus: Vec<usize> = first.iter().map(|g| g + k * first.len()).collect();
            let name = if replicas == 1 {
                f.name.clone()
            } else {
                format!("{}#{k}", f.name)
            };
            let mut ok = true;
            for &g in &gpus {
                match owner.get_mut(g) {
                    None => {
                        problem(
                            f.gpus.loc,
                            &at("gpus"),
                            format!(
                                "{name}: GPU {g} is not in the topology ({} GPUs, 0-{})",
                                topo.gpus.len(),
                                topo.gpus.len().saturating_sub(1)
                            ),
                        );
                        ok = false;
                        break;
                    }
                    Some(Some(other)) => {
                        problem(
                            f.gpus.loc,
                            &at("gpus"),
                            format!("{name}: GPU {g} already belongs to {other}"),
                        );
                        ok = false;
                        break;
                    }
                    Some(slot) => *slot = Some(name.clone()),
                }
            }
            if !ok {
                break;
            }
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
                problem(
                    f.gpus.loc,
                    &at("gpus"),
                    format!("{name}: its GPUs must share one GPU spec, found {specs:?}"),
                );
                break;
            };
            let deployment = Deployment {
                ep: gpus.len() as u64,
                slots,
                attention: if tp == 1 {
                    AttentionLayout::Dp
                } else {
                    AttentionLayout::Tp(tp)
                },
                expert_precision: precision.experts,
                other_precision: precision.other,
                kv_precision: precision.kv,
                mtp: mtp.drafts > 0,
                kv_share_of_free_memory: memory::DEFAULT_KV_SHARE_OF_FREE_MEMORY,
            };
            match memory::plan(model, gpu, &deployment, context, 0) {
                Ok(plan) => instances.push(InstanceSpec {
                    name,
                    role: f.role,
                    gpus,
                    attention_tp: tp,
                    slots,
                    eplb,
                    max_batch: f.max_batch.value,
                    max_tokens: f.max_tokens.value,
                    plan,
                    gpu: gpu.clone(),
                }),
                Err(e) => {
                    for reason in e.0 {
                        problem(
                            inst.loc,
                            &format!("instances[{i}]"),
                            format!("{name}: {reason}"),
                        );
                    }
                    break;
                }
            }
        }
    }
    let roles: Vec<Role> = raw
        .instances
        .value
        .iter()
        .filter_map(|i| i.0.as_ref().map(|i| i.value.role))
        .collect();
    let has = |r: Role| roles.contains(&r);
    let aggregated = has(Role::Both) && !has(Role::Prefill) && !has(Role::Decode);
    let disaggregated = !has(Role::Both) && has(Role::Prefill) && has(Role::Decode);
    if !roles.is_empty() && !aggregated && !disaggregated {
        problem(
            raw.instances.loc,
            "instances",
            "serve either aggregated (only role: both) or disaggregated (role: prefill and role: decode instances)".into(),
        );
    }

    diags.append(named);
    let mut arrivals = w.arrivals.value.clone();
    if let Arrivals::ClosedLoop {
        users,
        users_per_gpu: Some(per_gpu),
        ..
    } = &mut arrivals
    {
        let decoding: u64 = instances
            .iter()
            .filter(|i| i.role != Role::Prefill)
            .map(InstanceSpec::ep)
            .sum();
        *users = *per_gpu * decoding;
    }
    let scenario = Scenario {
        name: raw.name.unwrap_or_else(|| {
            file.file_stem()
                .map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned())
        }),
        description: raw.description,
        file: file.to_owned(),
        topology_file,
        model_file,
        seed: raw.seed.unwrap_or(1),
        duration_s,
        warmup_s,
        workload: Workload {
            arrivals,
            input: w.input.value.clone(),
            output: w.output.value.clone(),
            prefix_hit,
        },
        precision,
        mtp,
        policy: raw.scheduling.policy.unwrap_or_default(),
        micro_batch_overlap: raw.scheduling.micro_batch_overlap,
        moe: MoeSettings {
            popularity,
            sampled_layers,
            online,
        },
        instances,
        output: raw.output,
    };
    match (diags.is_empty(), topology, model) {
        (true, Some(topology), Some(model)) => Ok(LoadedScenario {
            scenario,
            topology,
            model,
            trace,
        }),
        _ => Err(diags.into_error()),
    }
}

/// `"0-7,16-23,40"` -> [0..=7, 16..=23, 40].
/// Online EPLB settings that would never re-plan or would not decay.
fn online_problems(style: OnlineStyle) -> Vec<String> {
    match style {
        OnlineStyle::Periodic { every, window } => [
            (every == 0).then(|| "every must be at least 1 iteration".to_owned()),
            (window == 0).then(|| "window must be at least 1 iteration".to_owned()),
        ]
        .into_iter()
        .flatten()
        .collect(),
        OnlineStyle::Layerwise {
            layers_per_iteration,
            decay,
        } => [
            (layers_per_iteration == 0)
                .then(|| "layers_per_iteration must be at least 1".to_owned()),
            (!(decay > 0.0 && decay <= 1.0))
                .then(|| format!("decay must be in (0, 1], got {decay}")),
        ]
        .into_iter()
        .flatten()
        .collect(),
    }
}

/// The largest GPU index a scenario may name: far beyond any topology epsim builds, small
/// enough that a range is never an allocation the machine cannot make.
pub const MAX_GPU_INDEX: usize = 1 << 20;

fn parse_ranges(text: &str) -> Result<Vec<usize>, String> {
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
