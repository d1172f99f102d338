//! The scenario's sections checked one at a time. Each records its problems and goes on,
//! so one run of `epsim validate` or `epsim run` reports all of them.

use super::*;
use crate::input::Loc;
use crate::model::Acceptance;
use std::collections::BTreeMap;

/// Documented limits (README, "Reliability"): beyond them a run would overflow, exhaust
/// memory or never end, so validation refuses them with their location.
/// Simulated seconds of one run (11.6 days).
pub const MAX_DURATION_S: f64 = 1e6;
/// Requests per second of an open-loop workload.
pub const MAX_RATE_PER_S: f64 = 1e6;
/// Coefficient of variation of gamma inter-arrival gaps.
pub const MAX_GAMMA_CV: f64 = 100.0;
/// Closed-loop users of one run, however given.
pub const MAX_USERS: u64 = 10_000_000;
pub use crate::serving::workload::MAX_REQUEST_TOKENS;
/// MTP draft tokens per step: as many as an acceptance list has positions.
pub const MAX_MTP_DRAFTS: u64 = crate::model::acceptance::MAX_POSITIONS as u64;

/// The problems found so far in one scenario file.
pub(super) struct Checks<'a> {
    file: &'a Path,
    pub diags: Diagnostics,
}

impl<'a> Checks<'a> {
    pub fn new(file: &'a Path) -> Self {
        Checks {
            file,
            diags: Diagnostics::new(),
        }
    }

    pub fn problem(&mut self, loc: Loc, path: &str, message: String) {
        self.diags.push(self.file, Problem::new(loc, path, message));
    }
}

/// The topology and model a scenario names, and their own files' problems.
pub(super) struct Named {
    pub topology_file: PathBuf,
    pub model_file: PathBuf,
    pub topology: Option<Topology>,
    pub model: Option<ModelConfig>,
    pub diags: Diagnostics,
}

/// Loads the files the scenario names; their problems are reported against them.
pub(super) fn named_files(c: &mut Checks, raw: &ScenarioFile, dir: &Path) -> Named {
    // A name (`deepseek-r1`, `gb200-nvl72`) is a bundled file, as on the command line; a
    // path is relative to the scenario.
    let file = |value: &str, folder: &str| {
        if input::data::is_name(value) {
            input::data::named(folder, value)
        } else {
            dir.join(value)
        }
    };
    let topology_file = file(&raw.topology.value, "topologies");
    let model_file = file(&raw.model.value, "models");
    let mut unknown = [false; 2];
    for (i, (value, folder, path, loc, field)) in [
        (
            &raw.topology.value,
            "topologies",
            &topology_file,
            raw.topology.loc,
            "topology",
        ),
        (
            &raw.model.value,
            "models",
            &model_file,
            raw.model.loc,
            "model",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        if input::data::is_name(value) && !path.is_file() {
            unknown[i] = true;
            c.problem(
                loc,
                field,
                format!(
                    "no bundled {field} named `{value}` in {}; there are: {}",
                    input::data::dir().join(folder).display(),
                    input::data::names(folder).join(", ")
                ),
            );
        }
    }
    let mut named = Diagnostics::new();
    let overrides: BTreeMap<String, String> = raw
        .topology_parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.value.to_string()))
        .collect();
    let topology = match topology::load_with(&topology_file, &overrides) {
        _ if unknown[0] => None,
        Ok(t) => Some(t),
        Err(e) => {
            c.problem(
                raw.topology.loc,
                "topology",
                format!("cannot use {}", topology_file.display()),
            );
            named.append(e);
            None
        }
    };
    let model = match load_model(&model_file) {
        _ if unknown[1] => None,
        Ok(m) => Some(m),
        Err(e) => {
            c.problem(
                raw.model.loc,
                "model",
                format!("cannot use {}", model_file.display()),
            );
            named.append(e);
            None
        }
    };

    Named {
        topology_file,
        model_file,
        topology,
        model,
        diags: named,
    }
}

/// Duration, warm-up and drain, seconds. A benchmark client has neither warm-up nor drain:
/// it counts every request and ends when the last is answered.
pub(super) fn timing(c: &mut Checks, raw: &ScenarioFile) -> (f64, f64, f64) {
    let benchmark = raw.workload.arrivals.value.is_benchmark();
    let duration_s = raw.duration_s.value;
    if !(duration_s > 0.0 && duration_s <= MAX_DURATION_S) {
        c.problem(
            raw.duration_s.loc,
            "duration_s",
            format!("must be a number of seconds in (0, {MAX_DURATION_S}], got {duration_s}"),
        );
    }
    let warmup_s = match &raw.warmup_s {
        Some(w) => {
            if !(w.value.is_finite() && w.value >= 0.0 && w.value < duration_s) {
                c.problem(
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
        None if benchmark => 0.0,
        None => DEFAULT_WARMUP_SHARE * duration_s,
    };
    let drain_s = raw.drain_s.as_ref().map_or(0.0, |d| {
        if !(d.value.is_finite() && (0.0..=MAX_DURATION_S).contains(&d.value)) {
            c.problem(
                d.loc,
                "drain_s",
                format!(
                    "must be a number of seconds in [0, {MAX_DURATION_S}], got {}",
                    d.value
                ),
            );
        }
        d.value
    });
    if benchmark {
        for (given, field) in [
            (raw.warmup_s.as_ref(), "warmup_s"),
            (raw.drain_s.as_ref(), "drain_s"),
        ] {
            if let Some(g) = given {
                c.problem(
                    g.loc,
                    field,
                    "a benchmark client counts every request and ends with the last: no warm-up or drain".into(),
                );
            }
        }
    }
    (duration_s, warmup_s, drain_s)
}

/// Arrivals, lengths, prefix hits and the trace; returns the prefix-hit share and the
/// replayed requests.
pub(super) fn workload(
    c: &mut Checks,
    w: &WorkloadFile,
    dir: &Path,
    named: &mut Diagnostics,
) -> (f64, Option<Vec<RequestSpec>>) {
    match &w.arrivals.value {
        Arrivals::Poisson { rate_per_s } | Arrivals::Gamma { rate_per_s, .. }
            if !(*rate_per_s > 0.0 && *rate_per_s <= MAX_RATE_PER_S) =>
        {
            c.problem(
                w.arrivals.loc,
                "workload.arrivals.rate_per_s",
                format!("must be > 0 and at most {MAX_RATE_PER_S}, got {rate_per_s}"),
            );
        }
        Arrivals::Gamma { cv, .. } if !(*cv > 0.0 && *cv <= MAX_GAMMA_CV) => c.problem(
            w.arrivals.loc,
            "workload.arrivals.cv",
            format!("must be > 0 and at most {MAX_GAMMA_CV}, got {cv}"),
        ),
        Arrivals::ClosedLoop {
            users,
            users_per_gpu,
            ..
        } if *users > MAX_USERS || users_per_gpu.is_some_and(|u| u > MAX_USERS) => c.problem(
            w.arrivals.loc,
            "workload.arrivals.users",
            format!("at most {MAX_USERS} users (users_per_gpu too)"),
        ),
        Arrivals::ClosedLoop {
            users,
            users_per_gpu,
            ..
        } if (*users == 0) == users_per_gpu.is_none_or(|u| u == 0) => c.problem(
            w.arrivals.loc,
            "workload.arrivals.users",
            "give users (at least 1) or users_per_gpu (at least 1), not both".into(),
        ),
        Arrivals::Benchmark {
            concurrency,
            prompts,
        } if !(1..=MAX_USERS).contains(concurrency) || !(1..=MAX_PROMPTS).contains(prompts) => {
            c.problem(
                w.arrivals.loc,
                "workload.arrivals",
                format!(
                    "concurrency must be 1 to {MAX_USERS} and prompts 1 to {MAX_PROMPTS}, got {concurrency} and {prompts}"
                ),
            )
        }
        Arrivals::ClosedLoop { ramp_up_s, .. } if !(ramp_up_s.is_finite() && *ramp_up_s >= 0.0) => {
            c.problem(
                w.arrivals.loc,
                "workload.arrivals.ramp_up_s",
                format!("must be a number of seconds >= 0, got {ramp_up_s}"),
            )
        }
        _ => {}
    }
    for (path, lengths) in [("workload.input", &w.input), ("workload.output", &w.output)] {
        for p in lengths.value.problems() {
            c.problem(lengths.loc, path, p);
        }
        if lengths.value.largest() > MAX_REQUEST_TOKENS {
            c.problem(
                lengths.loc,
                path,
                format!("at most {MAX_REQUEST_TOKENS} tokens per request"),
            );
        }
    }
    let prefix_hit = w.prefix_hit.as_ref().map_or(0.0, |p| p.value);
    if let Some(p) = &w.prefix_hit
        && !(0.0..1.0).contains(&p.value)
    {
        c.problem(
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
                c.problem(
                    w.arrivals.loc,
                    "workload.arrivals.file",
                    format!("cannot use the trace {}", dir.join(t).display()),
                );
                named.append(e);
            }
        }
    }

    (prefix_hit, trace)
}

/// Multi-token prediction.
pub(super) fn mtp(c: &mut Checks, raw: &ScenarioFile, model: Option<&ModelConfig>) -> Mtp {
    let model_acceptance = model.as_ref().and_then(|m| m.mtp_acceptance);
    match &raw.mtp {
        None => Mtp {
            drafts: 0,
            acceptance: Acceptance::uniform(0.0),
        },
        Some(m) => {
            let given = m.value.acceptance.as_ref().map(Acceptance::from_file);
            let acceptance = match given {
                Some(Ok(a)) => a,
                Some(Err(e)) => {
                    c.problem(m.loc, "mtp.acceptance", e);
                    Acceptance::uniform(0.0)
                }
                None => model_acceptance.unwrap_or(Acceptance::uniform(0.0)),
            };
            if let Some(model) = &model
                && m.value.drafts > 0
                && model.mtp_modules == 0
            {
                c.problem(
                    m.loc,
                    "mtp.drafts",
                    format!("{} has no MTP module to draft with", model.name),
                );
            }
            if m.value.drafts > MAX_MTP_DRAFTS {
                c.problem(
                    m.loc,
                    "mtp.drafts",
                    format!(
                        "at most {MAX_MTP_DRAFTS} draft tokens, got {}",
                        m.value.drafts
                    ),
                );
            }
            if m.value.drafts > 0 && m.value.acceptance.is_none() && model_acceptance.is_none() {
                c.problem(
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
    }
}

/// The routing model and online EPLB.
pub(super) fn moe(c: &mut Checks, raw: &ScenarioFile, model: Option<&ModelConfig>) -> MoeSettings {
    let popularity = match &raw.moe.popularity {
        None => Popularity::Calibrated,
        Some(p) => Popularity::from_str(&p.value).unwrap_or_else(|e| {
            c.problem(p.loc, "moe.popularity", e);
            Popularity::Calibrated
        }),
    };
    let moe_layers = model.as_ref().map_or(1, |m| m.moe_layers() as usize);
    let sampled_layers = match &raw.moe.sampled_layers {
        None => DEFAULT_SAMPLED_LAYERS.min(moe_layers),
        Some(s) => {
            if !(1..=moe_layers).contains(&s.value) {
                c.problem(
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
            c.problem(o.loc, "moe.online", message);
        }
    }
    let drift_period_iterations = raw
        .moe
        .drift_period_iterations
        .as_ref()
        .map_or(0, |d| d.value);
    if let Some(d) = &raw.moe.drift_period_iterations
        && d.value > MAX_DRIFT_PERIOD_ITERATIONS
    {
        c.problem(
            d.loc,
            "moe.drift_period_iterations",
            format!("must be at most {MAX_DRIFT_PERIOD_ITERATIONS} (0 = no drift)"),
        );
    }
    MoeSettings {
        popularity,
        sampled_layers,
        online,
        drift_period_iterations,
    }
}

/// Prompts one benchmark client run may send.
pub const MAX_PROMPTS: u64 = 100_000_000;

/// The longest popularity drift period: far beyond any run's iterations.
pub const MAX_DRIFT_PERIOD_ITERATIONS: u64 = 1 << 40;

/// Number formats: the scenario's, else the model's native ones.
pub(super) fn precision(raw: &ScenarioFile, model: Option<&ModelConfig>) -> PrecisionSettings {
    let other = model.map_or(Precision::Bf16, |m| m.native_precision.other);
    let native = PrecisionSettings {
        experts: model.map_or(Precision::Fp8, |m| m.native_precision.experts),
        other,
        attention: other,
        kv: Precision::Fp8,
    };
    native.over(&raw.precision)
}

/// The policies' parameters: finite, not negative, and at most a limit past which they
/// would only overflow the queue keys.
pub(super) fn policy_parameters(c: &mut Checks, s: &SchedulingFile) -> PolicyParameters {
    let mut check = |value: f64, loc, path: &str, max: f64| {
        if !(value.is_finite() && (0.0..=max).contains(&value)) {
            c.problem(
                loc,
                path,
                format!("must be a number in [0, {max}], got {value}"),
            );
        }
    };
    let kv_aware = s
        .kv_aware
        .as_ref()
        .map_or_else(KvAwareParameters::default, |p| {
            let w = p.value.queued_weight;
            check(
                w,
                p.loc,
                "scheduling.kv_aware.queued_weight",
                MAX_POLICY_WEIGHT,
            );
            p.value
        });
    let shortest_prompt_first =
        s.shortest_prompt_first
            .as_ref()
            .map_or_else(Default::default, |p| {
                let a = p.value.aging_tokens_per_s;
                check(
                    a,
                    p.loc,
                    "scheduling.shortest_prompt_first.aging_tokens_per_s",
                    MAX_AGING_TOKENS_PER_S,
                );
                p.value
            });
    PolicyParameters {
        kv_aware,
        shortest_prompt_first,
    }
}

/// The largest `kv_aware.queued_weight`.
pub const MAX_POLICY_WEIGHT: f64 = 1e6;
/// The largest `shortest_prompt_first.aging_tokens_per_s`: with runs of at most
/// MAX_DURATION_S, queue keys stay far below 2^64.
pub const MAX_AGING_TOKENS_PER_S: f64 = 1e9;

/// `stop_when`: a share in (0, 1), batches that fit the measured window ten times, and not
/// for a benchmark client (which ends with its last answer).
pub(super) fn stop_when(
    c: &mut Checks,
    raw: &ScenarioFile,
    duration_s: f64,
    warmup_s: f64,
) -> Option<StopWhen> {
    let w = raw.stop_when.as_ref()?;
    let v = w.value;
    if !(v.relative_ci > 0.0 && v.relative_ci < 1.0) {
        c.problem(
            w.loc,
            "stop_when.relative_ci",
            format!("must be a share in (0, 1), got {}", v.relative_ci),
        );
    }
    let window = duration_s - warmup_s;
    if !(v.batch_s > 0.0 && v.batch_s * MIN_BATCHES as f64 <= window) {
        c.problem(
            w.loc,
            "stop_when.batch_s",
            format!(
                "must be > 0 and fit {MIN_BATCHES} times in duration_s - warmup_s ({window} s), got {}",
                v.batch_s
            ),
        );
    }
    if let Some(m) = v.max_duration_s
        && !(m.is_finite() && m >= duration_s && m <= MAX_DURATION_S)
    {
        c.problem(
            w.loc,
            "stop_when.max_duration_s",
            format!("must be seconds in [duration_s ({duration_s}), {MAX_DURATION_S}], got {m}"),
        );
    }
    if raw.workload.arrivals.value.is_benchmark() {
        c.problem(
            w.loc,
            "stop_when",
            "a benchmark client ends with its last answer: no stop_when".into(),
        );
    }
    Some(v)
}

/// The largest `what_if.step_time_scale`: a hundredfold is already another machine.
pub const MAX_STEP_TIME_SCALE: f64 = 100.0;

/// `what_if`: a scale in (0, [`MAX_STEP_TIME_SCALE`]].
pub(super) fn what_if(c: &mut Checks, raw: &ScenarioFile) -> WhatIf {
    let Some(w) = &raw.what_if else {
        return WhatIf::default();
    };
    let k = w.value.step_time_scale;
    if !(k > 0.0 && k <= MAX_STEP_TIME_SCALE) {
        c.problem(
            w.loc,
            "what_if.step_time_scale",
            format!("must be in (0, {MAX_STEP_TIME_SCALE}], got {k}"),
        );
    }
    w.value
}

/// Either aggregated (only `both`) or disaggregated (`prefill` and `decode`) serving.
pub(super) fn roles(c: &mut Checks, raw: &ScenarioFile) {
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
        c.problem(
            raw.instances.loc,
            "instances",
            "serve either aggregated (only role: both) or disaggregated (role: prefill and role: decode instances)".into(),
        );
    }
}

/// Whether `name` can be a folder's name inside `out/`: letters, digits, - _ . +, not
/// starting with a dot (never `.`, `..` or a path).
pub fn is_plain_name(name: &str) -> bool {
    let plain = |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | '+');
    !name.is_empty() && !name.starts_with('.') && name.chars().all(plain)
}

/// The name becomes the default output folder (`out/<name>`), so it must be one plain
/// folder name: no separators, no `..`, nothing hidden, nothing absolute.
pub(super) fn name(c: &mut Checks, raw: &ScenarioFile) {
    let Some(n) = &raw.name else { return };
    if !is_plain_name(&n.value) {
        c.problem(
            n.loc,
            "name",
            format!(
                "`{}` is not a plain name (letters, digits, - _ . +; not starting with a dot)",
                n.value
            ),
        );
    }
}

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
