//! Scenario files: what to serve (model, workload), on what (topology), and how (instances
//! with their GPUs, EP, EPLB, batch limits; the scheduling policy). Loading checks every
//! field and reports every problem at once with file, line and column; the result is a
//! resolved [`Scenario`] whose every default is spelled out (it goes into manifest.json).

use super::workload::{Lengths, RequestSpec, read_trace};
use crate::cost::profile::Backend;
use crate::hardware::GpuSpec;
use crate::input::{self, At, Diagnostics, Node, Problem, Recover};
use crate::model::memory::{self, AttentionLayout, Deployment, MemoryPlan};
use crate::model::{ModelConfig, Precision, load_model};
use crate::moe::policy::EplbMode;
use crate::moe::policy::OnlineStyle;
use crate::moe::popularity::Popularity;
use crate::topology::{self, A2aAlgorithm, Topology};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;

mod check;
mod instances;

use check::Checks;
pub use check::{
    MAX_DURATION_S, MAX_GAMMA_CV, MAX_MTP_DRAFTS, MAX_RATE_PER_S, MAX_REQUEST_TOKENS, MAX_USERS,
};
pub use instances::MAX_GPU_INDEX;

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
    name: Option<At<String>>,
    #[serde(default)]
    description: String,
    topology: At<String>,
    /// The topology's parameters (`nodes`, `racks`), as `epsim topo show --set` sets them.
    #[serde(default, deserialize_with = "input::recovering")]
    topology_parameters: std::collections::BTreeMap<String, At<u64>>,
    model: At<String>,
    #[serde(default)]
    seed: Option<u64>,
    duration_s: At<f64>,
    #[serde(default)]
    warmup_s: Option<At<f64>>,
    #[serde(default)]
    warmup_rule: WarmupRule,
    #[serde(default)]
    drain_s: Option<At<f64>>,
    #[serde(default, deserialize_with = "input::recovering")]
    stop_when: Option<At<StopWhen>>,
    #[serde(deserialize_with = "input::recovering")]
    workload: WorkloadFile,
    #[serde(default, deserialize_with = "input::recovering")]
    precision: PrecisionFile,
    #[serde(default, deserialize_with = "input::recovering")]
    mtp: Option<At<MtpFile>>,
    #[serde(default, deserialize_with = "input::recovering")]
    scheduling: SchedulingFile,
    #[serde(default, deserialize_with = "input::recovering")]
    moe: MoeFile,
    #[serde(deserialize_with = "input::recovering")]
    instances: At<Vec<Recover<At<InstanceFile>>>>,
    #[serde(default, deserialize_with = "input::recovering")]
    output: OutputSettings,
    #[serde(default, deserialize_with = "input::recovering")]
    what_if: Option<At<WhatIf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadFile {
    #[serde(deserialize_with = "input::recovering")]
    arrivals: At<Arrivals>,
    #[serde(deserialize_with = "input::recovering")]
    input: At<Lengths>,
    #[serde(deserialize_with = "input::recovering")]
    output: At<Lengths>,
    #[serde(default)]
    prefix_hit: Option<At<f64>>,
}

/// Costs changed by a stated factor, to ask how an answer moves with them: a kernel
/// regression to test a verdict's power, or the simulator's own error (reference the
/// accuracy tables) on a plan.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhatIf {
    /// Every iteration, prefill and decode, takes this many times its priced time.
    #[serde(default = "one")]
    pub step_time_scale: f64,
}

impl Default for WhatIf {
    fn default() -> Self {
        WhatIf {
            step_time_scale: 1.0,
        }
    }
}

/// How a run's warm-up ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmupRule {
    /// At `warmup_s`, or later: when MSER-5 finds the window's start still a transient
    /// (the batches filling, a ramp), the run is simulated again with the warm-up moved
    /// past it and the window kept as long (see [`crate::serving::steady`]).
    #[default]
    Mser5,
    /// At `warmup_s`, whatever the window shows (a benchmark's fixed protocol).
    Fixed,
}

/// Ending a run once it knows enough: when the 95% confidence interval of `metric`'s
/// steady-state mean, from the means of consecutive `batch_s` batches after the warm-up,
/// is within `relative_ci` of it (after at least [`MIN_BATCHES`] batches and
/// [`MIN_FINISHED`] finished measured requests, most measured requests finished). The run
/// ends at `duration_s` if it is not known well enough by then, or goes on, arrivals with
/// it, up to `max_duration_s`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StopWhen {
    pub metric: StopMetric,
    pub relative_ci: f64,
    #[serde(default = "one_second")]
    pub batch_s: f64,
    #[serde(default)]
    pub max_duration_s: Option<f64>,
}

impl StopWhen {
    /// Where the run ends at the latest, seconds.
    pub fn limit_s(&self, duration_s: f64) -> f64 {
        self.max_duration_s.unwrap_or(duration_s).max(duration_s)
    }
}

/// How long one simulation runs, seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunLength {
    pub warmup_s: f64,
    /// Arrivals end here, unless a precision target ends them earlier or takes them on.
    pub duration_s: f64,
    /// The latest a precision target may take the run ([`StopWhen::limit_s`]).
    pub limit_s: f64,
    /// How far the warm-up was moved past the scenario's, over a transient.
    pub moved_s: f64,
}

impl RunLength {
    /// The scenario's own lengths.
    pub fn of(sc: &Scenario) -> RunLength {
        RunLength {
            warmup_s: sc.warmup_s,
            duration_s: sc.duration_s,
            limit_s: sc
                .stop_when
                .map_or(sc.duration_s, |w| w.limit_s(sc.duration_s)),
            moved_s: 0.0,
        }
    }

    /// These with the warm-up `s` seconds later and every end with it (the window as long).
    pub fn moved(self, s: f64) -> RunLength {
        RunLength {
            warmup_s: self.warmup_s + s,
            duration_s: self.duration_s + s,
            limit_s: self.limit_s + s,
            moved_s: self.moved_s + s,
        }
    }
}

/// Metrics a run can stop on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMetric {
    OutputTokS,
}

fn one_second() -> f64 {
    1.0
}

/// Batches a stopping run needs before it may stop: fewer give intervals too wide to trust
/// and batch means too few to show correlation.
pub const MIN_BATCHES: usize = 10;

/// Measured requests a stopping run must have finished before it may stop, so that its
/// latency percentiles rest on something.
pub const MIN_FINISHED: u64 = 200;

/// How an instance's MoE all-to-all runs: the kernels and the formats of the tokens sent
/// to the experts and of the outputs sent back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AllToAll {
    pub algorithm: A2aAlgorithm,
    pub dispatch: Precision,
    pub combine: Precision,
}

impl AllToAll {
    /// FP8 dispatch, BF16 combine: DeepSeek's production choice (reference section 4).
    pub const DEFAULT_DISPATCH: Precision = Precision::Fp8;
    pub const DEFAULT_COMBINE: Precision = Precision::Bf16;
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
    /// A serving benchmark client (sglang bench_serving, vLLM benchmark_serving,
    /// genai-perf; reference engines.md): `concurrency` clients start together, each
    /// sending its next prompt when its last one is answered, until `prompts` have been
    /// sent. The run ends when the last is answered (`duration_s` is only a limit), and
    /// statistics cover every request, as the benchmarks compute them.
    Benchmark { concurrency: u64, prompts: u64 },
}

/// Placeholders for sections with recorded problems (never simulated: the file is refused).
impl input::Placeholder for Arrivals {
    fn placeholder() -> Self {
        Arrivals::Poisson { rate_per_s: 0.0 }
    }
}

impl input::Placeholder for WorkloadFile {
    fn placeholder() -> Self {
        WorkloadFile {
            arrivals: input::Placeholder::placeholder(),
            input: input::Placeholder::placeholder(),
            output: input::Placeholder::placeholder(),
            prefix_hit: None,
        }
    }
}

crate::placeholder_is_default!(
    PrecisionFile,
    SchedulingFile,
    MoeFile,
    OutputSettings,
    AllToAllFile,
    std::collections::BTreeMap<String, At<u64>>,
);

impl Arrivals {
    pub fn is_benchmark(&self) -> bool {
        matches!(self, Arrivals::Benchmark { .. })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PrecisionFile {
    #[serde(default)]
    experts: Option<Precision>,
    #[serde(default)]
    other: Option<Precision>,
    /// Attention projections; `other` where not given.
    #[serde(default)]
    attention: Option<Precision>,
    #[serde(default)]
    kv: Option<Precision>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MtpFile {
    drafts: u64,
    /// One chance for every draft, or one per draft position.
    #[serde(default)]
    acceptance: Option<crate::model::AcceptanceFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SchedulingFile {
    #[serde(default)]
    policy: Option<PolicyName>,
    #[serde(default)]
    micro_batch_overlap: bool,
    #[serde(default)]
    kv_aware: Option<At<KvAwareParameters>>,
    #[serde(default)]
    shortest_prompt_first: Option<At<ShortestPromptFirstParameters>>,
}

/// `kv_aware`'s parameter: how much the KV that queued requests will reserve counts
/// against a place, beside the KV reserved there (Dynamo's router weighs incoming and
/// active blocks alike: 1).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KvAwareParameters {
    #[serde(default = "one")]
    pub queued_weight: f64,
}

/// `shortest_prompt_first`'s parameter: prompt tokens a request's priority gains per
/// second it waits, so long prompts are not starved (0 = strict shortest first).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ShortestPromptFirstParameters {
    #[serde(default)]
    pub aging_tokens_per_s: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for KvAwareParameters {
    fn default() -> Self {
        KvAwareParameters { queued_weight: 1.0 }
    }
}

/// Every policy's parameters (each policy reads its own).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct PolicyParameters {
    pub kv_aware: KvAwareParameters,
    pub shortest_prompt_first: ShortestPromptFirstParameters,
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
    #[serde(default)]
    drift_period_iterations: Option<At<u64>>,
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
    /// GPUs each expert is split over (tensor-parallel experts); default 1.
    #[serde(default)]
    moe_tp: Option<At<u64>>,
    #[serde(default)]
    slots: Option<u64>,
    #[serde(default)]
    redundant_experts_per_gpu: Option<u64>,
    #[serde(default)]
    eplb: Option<EplbMode>,
    max_batch: At<u64>,
    max_tokens: At<u64>,
    /// This instance's precisions, field by field over the scenario's `precision`.
    #[serde(default, deserialize_with = "input::recovering")]
    precision: PrecisionFile,
    /// Two micro-batches per iteration; the scenario's `scheduling.micro_batch_overlap`
    /// when not given.
    #[serde(default)]
    micro_batch_overlap: Option<bool>,
    #[serde(default, deserialize_with = "input::recovering")]
    all_to_all: AllToAllFile,
    /// Whose kernels price the MoE block; TensorRT-LLM's when not given.
    #[serde(default)]
    kernels: Option<At<Backend>>,
}

/// An instance's MoE all-to-all, field by field over the defaults.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AllToAllFile {
    /// The topology's `collectives.algorithm` when not given.
    #[serde(default)]
    algorithm: Option<A2aAlgorithm>,
    #[serde(default)]
    dispatch: Option<Precision>,
    #[serde(default)]
    combine: Option<Precision>,
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
    /// The topology's parameters the scenario sets (the rest keep the file's defaults).
    pub topology_parameters: std::collections::BTreeMap<String, u64>,
    pub model_file: PathBuf,
    pub seed: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub warmup_rule: WarmupRule,
    /// After `duration_s` arrivals stop and requests in flight run on for up to this long,
    /// so latency statistics also cover the requests a hard stop would cut off.
    pub drain_s: f64,
    pub stop_when: Option<StopWhen>,
    pub workload: Workload,
    pub precision: PrecisionSettings,
    pub mtp: Mtp,
    pub policy: PolicyName,
    pub policy_parameters: PolicyParameters,
    /// The instances' default (each instance's own is in `instances`).
    pub micro_batch_overlap: bool,
    pub moe: MoeSettings,
    pub instances: Vec<InstanceSpec>,
    pub output: OutputSettings,
    pub what_if: WhatIf,
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
    /// Routed and shared experts.
    pub experts: Precision,
    /// Dense FFN, MTP projection.
    pub other: Precision,
    /// Attention projections.
    pub attention: Precision,
    pub kv: Precision,
}

impl PrecisionSettings {
    /// These, with each field `file` gives in their place. Attention follows a new `other`
    /// unless the file names its own, so `{other: bf16}` still means every non-expert weight.
    fn over(&self, file: &PrecisionFile) -> PrecisionSettings {
        PrecisionSettings {
            experts: file.experts.unwrap_or(self.experts),
            other: file.other.unwrap_or(self.other),
            attention: file.attention.or(file.other).unwrap_or(self.attention),
            kv: file.kv.unwrap_or(self.kv),
        }
    }
}

/// Multi-token prediction: `drafts` draft tokens per decode step, draft i accepted with
/// `acceptance.at(i)` given the ones before it were.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mtp {
    pub drafts: u64,
    pub acceptance: crate::model::Acceptance,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeSettings {
    #[serde(serialize_with = "display")]
    pub popularity: Popularity,
    pub sampled_layers: usize,
    pub online: OnlineStyle,
    /// Iterations over which each layer's expert popularity glides to a new draw, so the
    /// experts hot now are not those hot later; 0 = popularity never changes.
    pub drift_period_iterations: u64,
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
    /// GPUs each expert's intermediate dimension is split over (1 = expert parallelism
    /// alone); the instance's GPUs form `gpus / moe_tp` expert-parallel ranks.
    pub moe_tp: u64,
    pub slots: u64,
    pub eplb: EplbMode,
    /// Requests per DP rank.
    pub max_batch: u64,
    /// Tokens per DP rank per iteration (decode tokens plus prefill chunks).
    pub max_tokens: u64,
    pub precision: PrecisionSettings,
    /// Two micro-batches per iteration, one's communication under the other's compute.
    pub micro_batch_overlap: bool,
    pub all_to_all: AllToAll,
    /// Whose kernels price the MoE block (the engine's measured tables).
    pub kernels: Backend,
    /// Every iteration takes this many times its priced time (the scenario's `what_if`).
    pub step_time_scale: f64,
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

    /// Expert-parallel ranks: groups of `moe_tp` GPUs, each holding its own experts.
    pub fn expert_ranks(&self) -> usize {
        self.gpus.len() / self.moe_tp.max(1) as usize
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
    let text = input::read_text(file)?;
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
    let mut c = Checks::new(file);
    let mut named = check::named_files(&mut c, &raw, dir);
    let (duration_s, warmup_s, drain_s) = check::timing(&mut c, &raw);
    let (prefix_hit, trace) = check::workload(&mut c, &raw.workload, dir, &mut named.diags);
    let model = named.model.as_ref();
    let mtp = check::mtp(&mut c, &raw, model);
    let moe = check::moe(&mut c, &raw, model);
    let precision = check::precision(&raw, model);
    let what_if = check::what_if(&mut c, &raw);
    let instances = instances::instances(
        &mut c,
        &raw,
        named.topology.as_ref(),
        model,
        mtp,
        precision,
        what_if,
    );
    check::roles(&mut c, &raw);
    check::name(&mut c, &raw);
    let policy_parameters = check::policy_parameters(&mut c, &raw.scheduling);
    let stop_when = check::stop_when(&mut c, &raw, duration_s, warmup_s);
    let mut diags = c.diags;
    let w = &raw.workload;
    diags.append(named.diags);
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
        // Saturating, and within MAX_USERS (checked below), so it never wraps to 0 users.
        *users = per_gpu.saturating_mul(decoding);
        if *users > check::MAX_USERS {
            diags.push(
                file,
                Problem::new(
                    w.arrivals.loc,
                    "workload.arrivals.users_per_gpu",
                    format!(
                        "{per_gpu} per GPU x {decoding} decoding GPUs is more than {} users",
                        check::MAX_USERS
                    ),
                ),
            );
        }
    }
    let scenario = Scenario {
        // Without a name, the file's stem, when it is a plain name (`...yaml` is not:
        // its `..` would put the results beside `out/`).
        name: raw.name.map(|n| n.value).unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| check::is_plain_name(s))
                .unwrap_or_else(|| "scenario".into())
        }),
        description: raw.description,
        file: file.to_owned(),
        topology_file: named.topology_file,
        topology_parameters: raw
            .topology_parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.value))
            .collect(),
        model_file: named.model_file,
        seed: raw.seed.unwrap_or(1),
        duration_s,
        warmup_s,
        warmup_rule: raw.warmup_rule,
        drain_s,
        stop_when,
        workload: Workload {
            arrivals,
            input: w.input.value.clone(),
            output: w.output.value.clone(),
            prefix_hit,
        },
        precision,
        mtp,
        policy: raw.scheduling.policy.unwrap_or_default(),
        policy_parameters,
        micro_batch_overlap: raw.scheduling.micro_batch_overlap,
        moe,
        instances,
        output: raw.output,
        what_if,
    };
    match (diags.is_empty(), named.topology, named.model) {
        (true, Some(topology), Some(model)) => Ok(LoadedScenario {
            scenario,
            topology,
            model,
            trace,
        }),
        _ => Err(diags.into_error()),
    }
}
