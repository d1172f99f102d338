//! Capacity planning: search deployments (aggregated or disaggregated, EP, attention and
//! expert TP, EPLB, batch limit, MTP drafts, decode instances, copies across racks) by
//! simulating each at the target load, fewest GPUs first, and rank those that meet the
//! SLA by GPU count. Candidates that cannot fit or cannot keep up are pruned before they
//! are simulated, and none with more GPUs than the answer is simulated at all.

mod bounds;
mod space;

pub use space::{Candidate, Layout, MAX_COPIES, PREFILL_EP, candidates, scenario_text};

use crate::cost::kernels::Kernels;
use crate::cost::profile::Source;
use crate::cost::step::{PrefillChunk, StepLoad, iteration_cost};
use crate::input;
use crate::serving::metrics::Report;
use crate::serving::scenario::Role;
use crate::serving::steady::{SERVED_SHARE, Status};
use crate::serving::{scenario, sim};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What to plan for.
#[derive(Debug, Clone)]
pub struct Target {
    pub model_file: PathBuf,
    pub topology_file: PathBuf,
    pub rate_per_s: f64,
    pub isl: u64,
    pub osl: u64,
    pub ttft_p99_ms: f64,
    pub tpot_p99_ms: f64,
    /// `precision.experts` of the scenarios (`None`: the model's own).
    pub experts: Option<String>,
    /// MTP drafts per step; `None`: 0, 1 and 2 are searched when the model has MTP.
    pub mtp_drafts: Option<u64>,
    /// Simulated seconds per deployment, the first 20% warm-up; `None`: from the SLA
    /// ([`Target::run_length`]).
    pub duration_s: Option<f64>,
    pub seed: u64,
    /// The topology's parameters set for every candidate (`--set nodes=4`), as text.
    pub topology_parameters: BTreeMap<String, String>,
}

/// Shortest warm-up and measured window of a derived run length, seconds (the length a
/// short-answer plan had before it was derived: 12 s of warm-up, 48 measured).
pub const MIN_WARMUP_S: f64 = 12.0;
pub const MIN_WINDOW_S: f64 = 48.0;
/// A run that is not steady is run again this many times longer, at most [`MAX_LENGTHENINGS`]
/// times, before its candidate is called undecided.
pub const LENGTHENING: f64 = 2.0;
pub const MAX_LENGTHENINGS: u32 = 2;

impl Target {
    /// The longest a request may live and meet the SLA, seconds: its TTFT plus every answer
    /// token after the first at the TPOT bound.
    pub fn lifetime_bound_s(&self) -> f64 {
        (self.ttft_p99_ms + self.osl.saturating_sub(1) as f64 * self.tpot_p99_ms) / 1e3
    }

    /// Warm-up and whole run, seconds. Derived from the workload unless given: a warm-up
    /// of one request lifetime (the batches fill, as Little's law has them, within one
    /// lifetime at a steady rate) and a measured window of two, so that a deployment that
    /// meets the SLA finishes the requests that arrive in the first half of its window.
    pub fn run_length(&self) -> (f64, f64) {
        match self.duration_s {
            Some(d) => (scenario::DEFAULT_WARMUP_SHARE * d, d),
            None => {
                let life = self.lifetime_bound_s();
                // Capped so that its longest re-run is still a valid scenario; the warm-up
                // at most the first of the run's three lifetimes.
                let cap = scenario::MAX_DURATION_S / LENGTHENING.powi(MAX_LENGTHENINGS as i32);
                let warmup = life.max(MIN_WARMUP_S).min(cap / 3.0);
                (warmup, (warmup + (2.0 * life).max(MIN_WINDOW_S)).min(cap))
            }
        }
    }
}

/// How a candidate did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub candidate: Candidate,
    /// False when it was pruned before simulating (`failures` says why).
    pub simulated: bool,
    /// Why it fails the target (empty: it meets it).
    pub failures: Vec<String>,
    pub ttft_p99_ms: Option<f64>,
    pub tpot_p99_ms: Option<f64>,
    /// Of all copies together.
    pub output_tok_s: Option<f64>,
    /// Requests in a decoding rank's batch, on average over the measured window.
    pub mean_batch_per_rank: Option<f64>,
    /// Simulated seconds of its last run (0 when pruned), and how many times it was run
    /// again longer because a run was not in steady state.
    pub simulated_s: f64,
    pub lengthened: u32,
}

impl Outcome {
    pub fn meets(&self) -> bool {
        self.failures.is_empty()
    }

    /// Its runs never reached steady state: neither an answer nor a failure.
    pub fn undecided(&self) -> bool {
        self.failures.iter().any(|f| f.starts_with(UNDECIDED))
    }
}

fn judge(t: &Target, c: &Candidate, r: &Report) -> Outcome {
    let (ttft, tpot, out) = (
        r.value("ttft_ms_p99"),
        r.value("tpot_ms_p99"),
        r.value("output_tok_s"),
    );
    let mut failures = Vec::new();
    let offered = t.rate_per_s / c.copies as f64 * t.osl as f64;
    let served = out.unwrap_or(0.0) / offered;
    if served < SERVED_SHARE {
        failures.push(format!(
            "serves {:.0}% of the offered {offered:.0} output tokens/s",
            served * 100.0
        ));
    }
    match ttft {
        Some(x) if x <= t.ttft_p99_ms => {}
        Some(x) => failures.push(format!("TTFT p99 {x:.0} ms > {} ms", t.ttft_p99_ms)),
        None => failures.push("no request finished in the measured window".into()),
    }
    match tpot {
        Some(x) if x <= t.tpot_p99_ms => {}
        Some(x) => failures.push(format!("TPOT p99 {x:.1} ms > {} ms", t.tpot_p99_ms)),
        None if ttft.is_some() => failures.push("no TPOT measured".into()),
        None => {}
    }
    Outcome {
        candidate: c.clone(),
        simulated: true,
        failures,
        ttft_p99_ms: ttft,
        tpot_p99_ms: tpot,
        // Every copy serves the same share: the deployment's output is theirs together.
        output_tok_s: out.map(|o| o * c.copies as f64),
        mean_batch_per_rank: r.value("mean_batch_per_rank"),
        simulated_s: r.value("duration_s").unwrap_or(0.0),
        lengthened: 0,
    }
}

/// Prefix of the failure of a candidate whose runs never reached steady state.
pub const UNDECIDED: &str = "undecided";

/// Simulates the candidate until a run is in steady state: a run that is not is run again
/// [`LENGTHENING`] times longer, up to [`MAX_LENGTHENINGS`] times; an overloaded one (its
/// backlog grows and it serves less than it is offered) fails at once, however long it
/// would run; one still not steady at the longest is undecided, never an answer.
fn simulate(t: &Target, c: &Candidate, first: scenario::LoadedScenario) -> Outcome {
    let mut loaded = first;
    for lengthened in 0..=MAX_LENGTHENINGS {
        if lengthened > 0 {
            let length = LENGTHENING.powi(lengthened as i32);
            loaded = match load_text(&space::scenario_text_scaled(t, c, length)) {
                Ok(l) => l,
                Err(why) => return pruned(c, why),
            };
        }
        let report = match sim::run(&loaded) {
            Ok(r) => r,
            Err(e) => {
                return Outcome {
                    simulated: true,
                    ..pruned(c, format!("simulation failed: {e}"))
                };
            }
        };
        let mut o = Outcome {
            lengthened,
            ..judge(t, c, &report)
        };
        let verdict = &report.steady;
        if verdict.why.is_empty() {
            return o;
        }
        let why = verdict.why.join("; ");
        if verdict.status == Status::Overloaded {
            o.failures.push(format!("not steady: {why}"));
            return o;
        }
        if lengthened == MAX_LENGTHENINGS {
            let measured = match o.failures.is_empty() {
                true => "it met the SLA as measured".to_owned(),
                false => format!("as measured: {}", o.failures.join("; ")),
            };
            o.failures = vec![format!(
                "{UNDECIDED}: not steady after {:.0} s ({why}); {measured}",
                o.simulated_s
            )];
            return o;
        }
    }
    unreachable!("the last lengthening returns")
}

/// A candidate that was not simulated, and why.
fn pruned(c: &Candidate, why: String) -> Outcome {
    Outcome {
        candidate: c.clone(),
        simulated: false,
        failures: vec![why],
        ttft_p99_ms: None,
        tpot_p99_ms: None,
        output_tok_s: None,
        mean_batch_per_rank: None,
        simulated_s: 0.0,
        lengthened: 0,
    }
}

/// Priced limits by the deployment they belong to (its label with one copy, the rate left
/// out: copies differ only in their share of it), or why it cannot be deployed or priced;
/// so each deployment is loaded and priced once however many copies are tried.
type LimitsCache = Mutex<BTreeMap<String, Result<bounds::Limits, String>>>;

/// The candidate's scenario, loaded and checked; why it cannot be deployed.
fn load(t: &Target, c: &Candidate) -> Result<scenario::LoadedScenario, String> {
    load_text(&scenario_text(t, c))
}

fn load_text(text: &str) -> Result<scenario::LoadedScenario, String> {
    let file = Path::new("plan.yaml");
    let tree = input::parse_tree(file, text).map_err(|e| e.to_string())?;
    scenario::from_tree(file, &tree).map_err(|e| {
        let reasons: Vec<String> = e.iter().map(|d| d.message.clone()).collect();
        format!("cannot be deployed: {}", reasons.join("; "))
    })
}

/// Prunes the candidate (when a cache of limits is given) if it cannot meet the target,
/// else simulates it.
fn evaluate(t: &Target, c: &Candidate, cache: Option<&LimitsCache>) -> Outcome {
    let failed = |why: String| pruned(c, why);
    let mut loaded = None;
    if let Some(cache) = cache {
        let key = Candidate {
            copies: 1,
            ..c.clone()
        }
        .label();
        let known = cache.lock().ok().and_then(|m| m.get(&key).cloned());
        let limits = known.unwrap_or_else(|| {
            let l = load(t, c).and_then(|l| {
                let limits = bounds::limits(t, &l).map_err(|e| format!("cannot be priced: {e}"));
                loaded = Some(l);
                limits
            });
            if let Ok(mut m) = cache.lock() {
                m.insert(key, l.clone());
            }
            l
        });
        match limits.map(|l| l.reason_to_prune(t, t.rate_per_s / c.copies as f64)) {
            Ok(Some(why)) | Err(why) => return failed(why),
            Ok(None) => {}
        }
    }
    let loaded = match loaded.map_or_else(|| load(t, c), Ok) {
        Ok(l) => l,
        Err(why) => return failed(why),
    };
    simulate(t, c, loaded)
}

/// The rate's resolution in [`headroom`]: the answer is within this share of the truth.
pub const HEADROOM_RESOLUTION: f64 = 0.05;
/// How far above the target rate [`headroom`] looks.
pub const HEADROOM_MAX_FACTOR: f64 = 16.0;

/// The highest Poisson rate, requests/s, at which `c` still meets `t`'s SLA, found by
/// doubling from `t.rate_per_s` (which it meets) and then bisecting to within
/// [`HEADROOM_RESOLUTION`]; and the simulations it took. Capped at
/// [`HEADROOM_MAX_FACTOR`] x the target rate.
pub fn headroom(t: &Target, c: &Candidate) -> (f64, u32) {
    let meets = |rate: f64| {
        let at = Target {
            rate_per_s: rate,
            ..t.clone()
        };
        evaluate(&at, c, None).meets()
    };
    let (mut low, mut probes) = (t.rate_per_s, 0);
    let mut high = low;
    loop {
        if high >= t.rate_per_s * HEADROOM_MAX_FACTOR {
            return (low, probes);
        }
        high = (high * 2.0).min(t.rate_per_s * HEADROOM_MAX_FACTOR);
        probes += 1;
        if !meets(high) {
            break;
        }
        low = high;
    }
    while high - low > HEADROOM_RESOLUTION * low {
        let mid = 0.5 * (low + high);
        probes += 1;
        if meets(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    (low, probes)
}

/// A roofline-priced op class below this share of its step is not named: it moves the
/// answer less than the measured tables' own error (held-out kernels: 1-2% median).
const NAMED_SHARE: f64 = 0.05;

/// The op classes of a deployment's decode step (at its mean batch, mid-answer context) and
/// of its prefill of one prompt that are priced by the roofline for want of a measured
/// kernel, each with its share of that step's time: where the answer rests on no
/// measurement at all.
pub fn roofline_ops(t: &Target, o: &Outcome) -> Vec<String> {
    let Ok(loaded) = load_text(&space::scenario_text(t, &o.candidate)) else {
        return Vec::new();
    };
    let prompt = [PrefillChunk {
        tokens: t.isl,
        prefix: 0,
    }];
    let decode = StepLoad {
        batch: o.mean_batch_per_rank.unwrap_or(1.0).round().max(1.0) as u64,
        context: t.isl + t.osl / 2,
        mtp: loaded.scenario.mtp.drafts,
        prefill: &[],
    };
    let prefill = StepLoad {
        batch: 0,
        context: 0,
        mtp: 0,
        prefill: &prompt,
    };
    let mut named = Vec::new();
    for role in [Role::Decode, Role::Both, Role::Prefill] {
        let Some(spec) = loaded.scenario.instances.iter().find(|i| i.role == role) else {
            continue;
        };
        let feed = spec.all_to_all.algorithm;
        let Ok(kernels) = Kernels::for_engine(&spec.gpu, spec.kernels, feed) else {
            continue;
        };
        let (load, step) = match role {
            Role::Prefill => (&prefill, "prefill"),
            _ => (&decode, "decode step"),
        };
        let cost = iteration_cost(&loaded.model, &kernels, &spec.plan.deployment, load);
        let total = cost.total().seconds.max(1e-12);
        for (class, source) in &cost.sources {
            let share = cost.by_class[class].seconds / total;
            if *source == Source::Roofline && share >= NAMED_SHARE {
                named.push(format!(
                    "{} ({:.0}% of the {step})",
                    class.label(),
                    share * 100.0
                ));
            }
        }
    }
    named
}

/// How far the cost model is from measurement in the regime `o` runs in, from the accuracy
/// harness (`epsim accuracy validation/silicon-e2e-b200/`, cases named; README,
/// "Accuracy"): what a planner should allow for. The measured runs split by attention
/// layout: tensor-parallel attention (b200-03 to -08) reads right, data-parallel attention
/// (b200-01, -02, -09, -10) reads fast at large batches, and aggregated serving with TP
/// attention (b200-11, -12) reads slow.
/// Runs of other models or GPUs are said to be no measure of `model` on `gpu`; the op
/// classes in `roofline` ([`roofline_ops`]) are named as priced without a measurement.
pub fn certainty_note(o: &Outcome, model: &str, gpu: &str, roofline: &[String]) -> String {
    let regime = match (o.candidate.layout, o.candidate.attention_tp) {
        (Layout::Aggregated { .. }, _) => {
            "aggregated serving, where epsim's TPOT read 52-70% above measured HGX B200 runs \
             (b200-11, b200-12, small batches with TP attention, likely drafting with MTP): \
             the answer may need fewer GPUs"
        }
        (_, tp) if tp > 1 => {
            "tensor-parallel attention, where epsim's TPOT is within -2% to +16% of measured \
             HGX B200 runs (b200-03 to b200-08)"
        }
        _ => {
            "data-parallel attention, where epsim's TPOT is within -24% to 0% of measured \
             HGX B200 runs (b200-01, -02, -09, -10) and 6% of the calibration point: the \
             answer may need more GPUs"
        }
    };
    let batch = o.mean_batch_per_rank.unwrap_or(0.0);
    // The measured serving runs are DeepSeek-R1 on HGX B200 (b200-hgx) alone.
    let elsewhere = match (model, gpu) {
        ("deepseek-r1", g) if g.starts_with("b200") => String::new(),
        _ => format!(
            "; those runs are DeepSeek-R1 on HGX B200, and no measured serving run of {model} \
             on {gpu} backs this answer"
        ),
    };
    let unmeasured = match roofline.is_empty() {
        true => String::new(),
        false => format!(
            "; priced by the roofline, no kernel measured: {}",
            roofline.join(", ")
        ),
    };
    format!("note: mean batch {batch:.0} per decoding rank; {regime}{elsewhere}{unmeasured}")
}

/// The share of the SLA an outcome leaves unused on its tighter latency: the smaller of
/// 1 - TTFT p99 / its bound and 1 - TPOT p99 / its bound (below any measured one when a
/// latency is missing).
pub fn sla_margin(t: &Target, o: &Outcome) -> f64 {
    match (o.ttft_p99_ms, o.tpot_p99_ms) {
        (Some(ttft), Some(tpot)) => (1.0 - ttft / t.ttft_p99_ms).min(1.0 - tpot / t.tpot_p99_ms),
        _ => f64::MIN,
    }
}

/// The search's order: those that meet the target first, then fewer GPUs, a wider SLA
/// margin ([`sla_margin`]), fewer copies (racks or node sets), more output tokens/s.
fn rank(t: &Target, a: &Outcome, b: &Outcome) -> std::cmp::Ordering {
    b.meets()
        .cmp(&a.meets())
        .then(a.candidate.gpus().cmp(&b.candidate.gpus()))
        .then(sla_margin(t, b).total_cmp(&sla_margin(t, a)))
        .then(a.candidate.copies.cmp(&b.candidate.copies))
        .then(
            b.output_tok_s
                .unwrap_or(0.0)
                .total_cmp(&a.output_tok_s.unwrap_or(0.0)),
        )
}

/// What a search found.
pub struct Searched {
    /// Every candidate looked at, in the order of [`rank`].
    pub outcomes: Vec<Outcome>,
    /// Candidates left alone: they need more GPUs than the answer.
    pub not_needed: usize,
}

/// The MTP drafts to search: the target's, or 0-3 when the model has MTP modules (3 is
/// what TensorRT-LLM's minimum-latency deployments run, reference section 8, and what puts
/// the wide-EP frontiers at 100 tokens/s per user).
fn mtp_options(t: &Target) -> Vec<u64> {
    match t.mtp_drafts {
        Some(d) => vec![d],
        None => match crate::model::load_model(&t.model_file) {
            Ok(m) if m.mtp_modules > 0 => vec![0, 1, 2, 3],
            _ => vec![0],
        },
    }
}

/// Looks at the candidates that fit the topology's `gpus` per copy (on `jobs` threads),
/// fewest GPUs first, in rounds of whole GPU counts, and stops after the first round in
/// which one meets the target.
pub fn search(t: &Target, gpus: u64, jobs: usize) -> Searched {
    let all = candidates(gpus, &mtp_options(t));
    let bar = super::run::progress_bar(true, all.len(), "deployments");
    let mut outcomes: Vec<Outcome> = Vec::new();
    let cache = LimitsCache::default();
    let mut next = 0;
    while next < all.len() && !outcomes.iter().any(Outcome::meets) {
        // A round: at least two candidates per thread, ending at a GPU count's last.
        let mut end = (next + 2 * jobs.max(1)).min(all.len());
        while end < all.len() && all[end].gpus() == all[end - 1].gpus() {
            end += 1;
        }
        let round = &all[next..end];
        // Evaluating never fails: a candidate that cannot run is an outcome saying why.
        outcomes.extend(super::pool::map(round, jobs, |_, c| {
            let o = evaluate(t, c, Some(&cache));
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            o
        }));
        next = end;
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    outcomes.sort_by(|a, b| rank(t, a, b));
    Searched {
        outcomes,
        not_needed: all.len() - next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(duration_s: Option<f64>) -> Target {
        Target {
            model_file: PathBuf::new(),
            topology_file: PathBuf::new(),
            rate_per_s: 20.0,
            isl: 1024,
            osl: 4096,
            ttft_p99_ms: 2000.0,
            tpot_p99_ms: 30.0,
            experts: None,
            mtp_drafts: None,
            duration_s,
            seed: 1,
            topology_parameters: BTreeMap::new(),
        }
    }

    /// A derived run is one request lifetime of warm-up and two measured; a given one
    /// keeps the scenario's 20% warm-up; short answers get the old 12 + 48 s.
    #[test]
    fn run_lengths_follow_the_sla() {
        let t = target(None);
        assert!((t.lifetime_bound_s() - (2.0 + 4095.0 * 0.03)).abs() < 1e-9);
        let (w, d) = t.run_length();
        assert!((w - t.lifetime_bound_s()).abs() < 1e-9 && (d - 3.0 * w).abs() < 1e-9);
        assert_eq!(target(Some(30.0)).run_length(), (6.0, 30.0));
        let short = Target { osl: 64, ..t };
        assert_eq!(
            short.run_length(),
            (MIN_WARMUP_S, MIN_WARMUP_S + MIN_WINDOW_S)
        );
    }

    /// The note cites the measured B200 runs, and says when they are of another model or GPU.
    #[test]
    fn the_certainty_note_says_whose_runs_it_cites() {
        let c = candidates(72, &[0]).remove(0);
        let o = pruned(&c, String::new());
        let own = certainty_note(&o, "deepseek-r1", "b200-hgx", &[]);
        assert!(own.contains("HGX B200") && !own.contains("no measured serving run"));
        let other = certainty_note(&o, "qwen3-235b-a22b", "h200-sxm", &[]);
        assert!(
            other.ends_with(
                "no measured serving run of qwen3-235b-a22b on h200-sxm backs this answer"
            )
        );
    }

    /// The note names the ops no kernel measurement prices: GQA attention on H200 for
    /// Qwen3 (the tables measure MLA), none of the big ones for DeepSeek-R1 on GB200.
    #[test]
    fn roofline_ops_are_named_with_their_share() {
        let at = |model: &str, topology: &str| {
            let t = Target {
                model_file: crate::testing::repo(&format!("models/{model}.yaml")),
                topology_file: crate::testing::repo(&format!("topologies/{topology}.yaml")),
                ..target(None)
            };
            let c = candidates(8, &[0]).remove(0);
            let o = Outcome {
                mean_batch_per_rank: Some(32.0),
                ..pruned(&c, String::new())
            };
            roofline_ops(&t, &o)
        };
        let qwen = at("qwen3-235b-a22b", "hgx-h200x8");
        assert!(
            qwen.iter()
                .any(|n| n.starts_with("attention (") && n.contains("% of the decode step")),
            "{qwen:?}"
        );
        let deepseek = at("deepseek-r1", "gb200-nvl72");
        assert!(
            !deepseek.iter().any(|n| n.starts_with("attention")),
            "{deepseek:?}"
        );
    }

    /// Among those that meet the SLA with as many GPUs: the wider margin first, then fewer
    /// copies, then more output.
    #[test]
    fn ties_go_to_the_margin_then_fewer_copies() {
        let t = target(None);
        let all = candidates(72, &[0]);
        let one = all
            .iter()
            .find(|c| c.gpus() == 16 && c.copies == 1)
            .unwrap();
        let two = all
            .iter()
            .find(|c| c.gpus() == 16 && c.copies == 2)
            .unwrap();
        let outcome = |c: &Candidate, tpot: f64, out: f64| Outcome {
            tpot_p99_ms: Some(tpot),
            ttft_p99_ms: Some(500.0),
            output_tok_s: Some(out),
            simulated: true,
            failures: Vec::new(),
            ..pruned(c, String::new())
        };
        use std::cmp::Ordering::*;
        // TPOT 20 of 30 leaves a third; 25 leaves a sixth.
        assert_eq!(
            rank(&t, &outcome(two, 20.0, 1.0), &outcome(one, 25.0, 2.0)),
            Less
        );
        assert_eq!(
            rank(&t, &outcome(one, 20.0, 1.0), &outcome(two, 20.0, 2.0)),
            Less
        );
        assert_eq!(
            rank(&t, &outcome(one, 20.0, 2.0), &outcome(one, 20.0, 1.0)),
            Less
        );
        let failing = pruned(one, "x".into());
        assert_eq!(rank(&t, &outcome(two, 29.0, 1.0), &failing), Less);
    }
}
