//! The deployments `epsim plan` searches, and each one written as a scenario.

use super::Target;

/// How one copy of a deployment splits its GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Prefill instances of [`PREFILL_EP`] and decode instances of one EP.
    Disaggregated {
        prefill_instances: u64,
        decode_ep: u64,
        decode_instances: u64,
    },
    /// Instances that prefill (in chunks) between their decode steps.
    Aggregated { ep: u64, instances: u64 },
}

/// One deployment tried.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub layout: Layout,
    /// Attention tensor parallelism of the decoding instances (1: data-parallel attention;
    /// [`PREFILL_EP`]: one attention group per node of 8, its experts split alike).
    pub attention_tp: u64,
    /// GPUs each expert is split over (1: expert parallel only; the attention TP: experts
    /// tensor-parallel within each attention group).
    pub moe_tp: u64,
    pub eplb: &'static str,
    /// Requests per decoding rank.
    pub max_batch: u64,
    pub mtp_drafts: u64,
    /// Copies of the whole deployment, each on its own topology (rack or node set), the
    /// load shared evenly among them.
    pub copies: u64,
}

/// Prefill instances are EP8 (8 GPUs each): one NVLink-domain slice, the prefill layout of
/// the wide-EP scenarios.
pub const PREFILL_EP: u64 = 8;
/// EP sizes searched: standard EP8 up to EP64 (reference section 4).
const EPS: [u64; 4] = [8, 16, 32, 64];
const EPLB_MODES: [&str; 2] = ["none", "static"];
/// Requests per decode rank: a latency-leaning limit and TensorRT-LLM wide-EP's 256
/// (reference section 4).
const MAX_BATCHES: [u64; 2] = [64, 256];
/// Up to 32 prefill GPUs: with EP64 decode an NVL72 has room for one instance.
const MAX_PREFILL_INSTANCES: u64 = 4;
/// Decode instances of one EP in one copy.
const MAX_DECODE_INSTANCES: u64 = 4;
/// Copies of a deployment: enough for 8 racks (issue 15's 8 x NVL72).
pub const MAX_COPIES: u64 = 8;
/// A prefill rank's limits: up to 8 prompts and 8,192 tokens per iteration (TensorRT-LLM's
/// max_num_tokens order of magnitude, reference section 4: 9,216). Aggregated instances
/// take the same token budget for the prefill chunks they mix into decode steps.
const PREFILL_MAX_BATCH: u64 = 8;
const PREFILL_MAX_TOKENS: u64 = 8192;

impl Candidate {
    /// GPUs of one copy.
    pub fn gpus_per_copy(&self) -> u64 {
        match self.layout {
            Layout::Disaggregated {
                prefill_instances,
                decode_ep,
                decode_instances,
            } => prefill_instances * PREFILL_EP + decode_ep * decode_instances,
            Layout::Aggregated { ep, instances } => ep * instances,
        }
    }

    pub fn gpus(&self) -> u64 {
        self.copies * self.gpus_per_copy()
    }

    pub fn label(&self) -> String {
        let one = match self.layout {
            Layout::Disaggregated {
                prefill_instances,
                decode_ep,
                decode_instances,
            } => {
                format!("{prefill_instances} prefill EP8 + {decode_instances} decode EP{decode_ep}")
            }
            Layout::Aggregated { ep, instances } => format!("{instances} aggregated EP{ep}"),
        };
        let attention = match (self.attention_tp, self.moe_tp) {
            (1, _) => String::new(),
            (tp, 1) => format!(", attention TP{tp}"),
            (tp, m) => format!(", attention TP{tp}, experts TP{m}"),
        };
        let mtp = match self.mtp_drafts {
            0 => String::new(),
            d => format!(", MTP {d}"),
        };
        let body = format!(
            "{one} (eplb {}, max batch {}{attention}{mtp})",
            self.eplb, self.max_batch
        );
        match self.copies {
            1 => body,
            k => format!("{k} copies of {body}"),
        }
    }
}

/// Every candidate of at most `gpus` GPUs per copy and [`MAX_COPIES`] copies, with each of
/// `mtp` drafts, fewest GPUs first.
pub fn candidates(gpus: u64, mtp: &[u64]) -> Vec<Candidate> {
    let mut layouts = Vec::new();
    for ep in EPS {
        for instances in 1..=MAX_DECODE_INSTANCES {
            layouts.push((Layout::Aggregated { ep, instances }, 1, 1));
            for prefill_instances in 1..=MAX_PREFILL_INSTANCES {
                let layout = Layout::Disaggregated {
                    prefill_instances,
                    decode_ep: ep,
                    decode_instances: instances,
                };
                layouts.push((layout, 1, 1));
                layouts.push((layout, PREFILL_EP, 1));
                layouts.push((layout, PREFILL_EP, PREFILL_EP));
            }
        }
    }
    let mut out = Vec::new();
    for (layout, attention_tp, moe_tp) in layouts {
        for &mtp_drafts in mtp {
            for eplb in EPLB_MODES {
                for max_batch in MAX_BATCHES {
                    for copies in 1..=MAX_COPIES {
                        let c = Candidate {
                            layout,
                            attention_tp,
                            moe_tp,
                            eplb,
                            max_batch,
                            mtp_drafts,
                            copies,
                        };
                        if c.gpus_per_copy() <= gpus {
                            out.push(c);
                        }
                    }
                }
            }
        }
    }
    out.sort_by_key(|c| c.gpus());
    out
}

/// The scenario of one copy of a candidate, at its share of the rate: decoding instances
/// on the first GPUs, prefill instances after them.
pub fn scenario_text(t: &Target, c: &Candidate) -> String {
    scenario_text_scaled(t, c, 1.0)
}

/// [`scenario_text`] with its warm-up and run `length` times as long.
pub fn scenario_text_scaled(t: &Target, c: &Candidate, length: f64) -> String {
    let (warmup, duration) = t.run_length();
    let experts = t.experts.as_ref().map_or(String::new(), |e| {
        format!("precision: {{experts: {e}, other: fp8, kv: fp8}}\n")
    });
    let mtp = match c.mtp_drafts {
        0 => String::new(),
        d => format!("mtp: {{drafts: {d}}}\n"),
    };
    let redundant = u64::from(c.eplb != "none");
    let step_tokens = c.max_batch * (1 + c.mtp_drafts) * c.attention_tp;
    let (tp, moe_tp) = (c.attention_tp, c.moe_tp);
    let instances = match c.layout {
        Layout::Disaggregated {
            prefill_instances,
            decode_ep,
            decode_instances,
        } => {
            let p0 = decode_ep * decode_instances;
            format!(
                "  - {{name: prefill, role: prefill, gpus: {p0}-{p1}, replicas: {prefill_instances}, max_batch: {PREFILL_MAX_BATCH}, max_tokens: {PREFILL_MAX_TOKENS}}}
  - {{name: decode, role: decode, gpus: 0-{d1}, replicas: {decode_instances}, attention_tp: {tp}, moe_tp: {moe_tp}, eplb: {eplb}, redundant_experts_per_gpu: {redundant}, max_batch: {mb}, max_tokens: {step_tokens}}}
",
                p1 = p0 + PREFILL_EP - 1,
                d1 = decode_ep - 1,
                eplb = c.eplb,
                mb = c.max_batch,
            )
        }
        Layout::Aggregated { ep, instances } => format!(
            "  - {{name: serve, role: both, gpus: 0-{last}, replicas: {instances}, attention_tp: {tp}, moe_tp: {moe_tp}, eplb: {eplb}, redundant_experts_per_gpu: {redundant}, max_batch: {mb}, max_tokens: {tokens}}}
",
            last = ep - 1,
            eplb = c.eplb,
            mb = c.max_batch,
            tokens = step_tokens.max(PREFILL_MAX_TOKENS),
        ),
    };
    let parameters = match t.topology_parameters.is_empty() {
        true => String::new(),
        false => format!(
            "topology_parameters: {{{}}}\n",
            t.topology_parameters
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "name: plan
topology: {topology}
{parameters}model: {model}
seed: {seed}
duration_s: {duration}
warmup_s: {warmup}
workload:
  arrivals: {{kind: poisson, rate_per_s: {rate}}}
  input: {{dist: fixed, tokens: {isl}}}
  output: {{dist: fixed, tokens: {osl}}}
{experts}{mtp}scheduling: {{policy: kv_aware}}
instances:
{instances}output: {{requests_csv: false}}
",
        topology = t.topology_file.display(),
        model = t.model_file.display(),
        seed = t.seed,
        duration = duration * length,
        warmup = warmup * length,
        rate = t.rate_per_s / c.copies as f64,
        isl = t.isl,
        osl = t.osl,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_fit_the_rack_and_come_fewest_gpus_first() {
        let c = candidates(72, &[0]);
        assert!(c.iter().all(|c| c.gpus_per_copy() <= 72));
        assert!(c.windows(2).all(|w| w[0].gpus() <= w[1].gpus()));
        assert_eq!(c[0].gpus(), 8);
        assert!(c.iter().any(|c| c.copies == MAX_COPIES));
        assert!(
            c.iter()
                .any(|c| matches!(c.layout, Layout::Aggregated { .. }))
        );
        assert!(c.iter().any(|c| c.attention_tp == PREFILL_EP));
        assert!(!c.iter().any(|c| matches!(
            c.layout,
            Layout::Disaggregated {
                decode_ep: 64,
                prefill_instances: 2..,
                ..
            }
        )));
        assert_eq!(candidates(7, &[0]).len(), 0);
        assert_eq!(candidates(72, &[0, 1]).len(), 2 * c.len());
    }
}
