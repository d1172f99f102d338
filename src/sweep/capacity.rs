//! Capacity planning: search disaggregated deployments (prefill instances, decode EP, EPLB,
//! batch limit) by simulating each at the target load, and rank those that meet the SLA
//! by GPU count.

use crate::input;
use crate::serving::metrics::Report;
use crate::serving::{scenario, sim};
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
    pub mtp_drafts: u64,
    pub duration_s: f64,
    pub seed: u64,
}

/// One deployment tried.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Prefill instances of EP8.
    pub prefill_instances: u64,
    pub decode_ep: u64,
    pub eplb: &'static str,
    pub max_batch: u64,
}

/// Prefill instances are EP8 (8 GPUs each): one NVLink-domain slice, the prefill layout of
/// the wide-EP scenarios.
pub const PREFILL_EP: u64 = 8;
/// Decode EP sizes searched: standard EP8 up to EP64 (reference section 4).
const DECODE_EPS: [u64; 4] = [8, 16, 32, 64];
const EPLB_MODES: [&str; 2] = ["none", "static"];
/// Requests per decode rank: a latency-leaning limit and TensorRT-LLM wide-EP's 256
/// (reference section 4).
const MAX_BATCHES: [u64; 2] = [64, 256];
/// Up to 32 prefill GPUs: with EP64 decode an NVL72 has room for one instance.
const MAX_PREFILL_INSTANCES: u64 = 4;
/// A prefill rank's limits: up to 8 prompts and 8,192 tokens per iteration (TensorRT-LLM's
/// max_num_tokens order of magnitude, reference section 4: 9,216).
const PREFILL_MAX_BATCH: u64 = 8;
const PREFILL_MAX_TOKENS: u64 = 8192;

impl Candidate {
    pub fn gpus(&self) -> u64 {
        self.prefill_instances * PREFILL_EP + self.decode_ep
    }

    pub fn label(&self) -> String {
        format!(
            "{} prefill EP8 + decode EP{} (eplb {}, max batch {})",
            self.prefill_instances, self.decode_ep, self.eplb, self.max_batch
        )
    }
}

/// Every candidate that fits `gpus`, fewest GPUs first.
pub fn candidates(gpus: u64) -> Vec<Candidate> {
    let mut out = Vec::new();
    for prefill_instances in 1..=MAX_PREFILL_INSTANCES {
        for decode_ep in DECODE_EPS {
            for eplb in EPLB_MODES {
                for max_batch in MAX_BATCHES {
                    let c = Candidate {
                        prefill_instances,
                        decode_ep,
                        eplb,
                        max_batch,
                    };
                    if c.gpus() <= gpus {
                        out.push(c);
                    }
                }
            }
        }
    }
    out.sort_by_key(|c| c.gpus());
    out
}

/// The scenario of one candidate: decode on GPUs 0..EP, prefill instances after them.
pub fn scenario_text(t: &Target, c: &Candidate) -> String {
    let experts = t.experts.as_ref().map_or(String::new(), |e| {
        format!("precision: {{experts: {e}, other: fp8, kv: fp8}}\n")
    });
    let mtp = if t.mtp_drafts > 0 {
        format!("mtp: {{drafts: {}}}\n", t.mtp_drafts)
    } else {
        String::new()
    };
    let redundant = u64::from(c.eplb != "none");
    let first_prefill = c.decode_ep;
    format!(
        "name: plan
topology: {topology}
model: {model}
seed: {seed}
duration_s: {duration}
workload:
  arrivals: {{kind: poisson, rate_per_s: {rate}}}
  input: {{dist: fixed, tokens: {isl}}}
  output: {{dist: fixed, tokens: {osl}}}
{experts}{mtp}scheduling: {{policy: kv_aware}}
instances:
  - {{name: prefill, role: prefill, gpus: {p0}-{p1}, replicas: {np}, max_batch: {pb}, max_tokens: {pt}}}
  - {{name: decode, role: decode, gpus: 0-{d1}, eplb: {eplb}, redundant_experts_per_gpu: {redundant}, max_batch: {mb}, max_tokens: {mt}}}
output: {{requests_csv: false}}
",
        topology = t.topology_file.display(),
        model = t.model_file.display(),
        seed = t.seed,
        duration = t.duration_s,
        rate = t.rate_per_s,
        isl = t.isl,
        osl = t.osl,
        p0 = first_prefill,
        p1 = first_prefill + PREFILL_EP - 1,
        np = c.prefill_instances,
        pb = PREFILL_MAX_BATCH,
        pt = PREFILL_MAX_TOKENS,
        d1 = c.decode_ep - 1,
        eplb = c.eplb,
        mb = c.max_batch,
        mt = c.max_batch * (1 + t.mtp_drafts),
    )
}

/// How a candidate did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub candidate: Candidate,
    /// Why it fails the target (empty: it meets it).
    pub failures: Vec<String>,
    pub ttft_p99_ms: Option<f64>,
    pub tpot_p99_ms: Option<f64>,
    pub output_tok_s: Option<f64>,
}

impl Outcome {
    pub fn meets(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Share of the offered output tokens a deployment must deliver to count as keeping up.
pub const SERVED_SHARE: f64 = 0.95;

fn judge(t: &Target, c: &Candidate, r: &Report) -> Outcome {
    let (ttft, tpot, out) = (
        r.value("ttft_ms_p99"),
        r.value("tpot_ms_p99"),
        r.value("output_tok_s"),
    );
    let mut failures = Vec::new();
    let offered = t.rate_per_s * t.osl as f64;
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
        failures,
        ttft_p99_ms: ttft,
        tpot_p99_ms: tpot,
        output_tok_s: out,
    }
}

fn evaluate(t: &Target, c: &Candidate) -> Outcome {
    let file = Path::new("plan.yaml");
    let text = scenario_text(t, c);
    let failed = |why: String| Outcome {
        candidate: c.clone(),
        failures: vec![why],
        ttft_p99_ms: None,
        tpot_p99_ms: None,
        output_tok_s: None,
    };
    let tree = match input::parse_tree(file, &text) {
        Ok(tree) => tree,
        Err(e) => return failed(e.to_string()),
    };
    let loaded = match scenario::from_tree(file, &tree) {
        Ok(l) => l,
        Err(e) => {
            let reasons: Vec<String> = e.iter().map(|d| d.message.clone()).collect();
            return failed(format!("cannot be deployed: {}", reasons.join("; ")));
        }
    };
    match sim::run(&loaded) {
        Ok(report) => judge(t, c, &report),
        Err(e) => failed(format!("simulation failed: {e}")),
    }
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
        evaluate(&at, c).meets()
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

/// Simulates every candidate that fits the topology's `gpus` (on `jobs` threads) and
/// returns the outcomes, those meeting the target first by GPU count, then output tokens/s.
pub fn search(t: &Target, gpus: u64, jobs: usize) -> Vec<Outcome> {
    let all = candidates(gpus);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; all.len()]);
    let bar = super::run::progress_bar(true, all.len(), "deployments");
    // Evaluating never fails: a candidate that cannot run is an outcome saying why.
    let _ = super::pool::for_each(&all, jobs, |i, c| {
        let o = evaluate(t, c);
        if let Ok(mut r) = results.lock() {
            r[i] = Some(o);
        }
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        Ok::<(), ()>(())
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let mut outcomes: Vec<Outcome> = results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    outcomes.sort_by(|a, b| {
        b.meets()
            .cmp(&a.meets())
            .then(a.candidate.gpus().cmp(&b.candidate.gpus()))
            .then(
                b.output_tok_s
                    .unwrap_or(0.0)
                    .total_cmp(&a.output_tok_s.unwrap_or(0.0)),
            )
            .then(
                a.tpot_p99_ms
                    .unwrap_or(f64::MAX)
                    .total_cmp(&b.tpot_p99_ms.unwrap_or(f64::MAX)),
            )
    });
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_fit_the_rack_and_come_fewest_gpus_first() {
        let c = candidates(72);
        assert!(c.iter().all(|c| c.gpus() <= 72));
        assert!(c.windows(2).all(|w| w[0].gpus() <= w[1].gpus()));
        assert_eq!(c[0].gpus(), 16);
        assert!(
            !c.iter()
                .any(|c| c.decode_ep == 64 && c.prefill_instances > 1)
        );
        assert_eq!(candidates(15).len(), 0);
    }
}
