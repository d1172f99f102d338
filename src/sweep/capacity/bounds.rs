//! What a deployment cannot do whatever its simulation would show, from a few priced
//! iterations: candidates that fail these are pruned before they are simulated.

use super::Target;
use crate::engine::RandomStreams;
use crate::serving::pricing::{Pricer, RankWork, prefill_capacity_tok_s};
use crate::serving::scenario::{InstanceSpec, LoadedScenario, Role};
use crate::serving::steady::SERVED_SHARE;

/// What a deployment's priced iterations say it can do at best.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Prompt tokens/s all its prefill instances prefill when full (disaggregated).
    prefill_tok_s: Option<f64>,
    /// Milliseconds per output token of one decode step at one request per rank.
    tpot_floor_ms: f64,
    /// Output tokens/s all its decoding instances make at their full batch.
    decode_tok_s: f64,
    /// Prompt tokens/s its aggregated instances prefill when they do nothing else.
    aggregated_prefill_tok_s: Option<f64>,
}

/// Prices `loaded`'s instances: a few iterations each, no simulation.
pub fn limits(t: &Target, loaded: &LoadedScenario) -> Result<Limits, String> {
    let sc = &loaded.scenario;
    let streams = RandomStreams::new(sc.seed);
    let prefill_rate = |i: &InstanceSpec| {
        prefill_capacity_tok_s(
            &loaded.topology,
            &loaded.model,
            i,
            &sc.moe,
            sc.mtp,
            &streams,
            (t.isl, 0),
        )
    };
    let prefill: Vec<&InstanceSpec> = sc
        .instances
        .iter()
        .filter(|i| i.role == Role::Prefill)
        .collect();
    let decoding: Vec<&InstanceSpec> = sc
        .instances
        .iter()
        .filter(|i| i.role != Role::Prefill)
        .collect();
    let d = decoding.first().ok_or("no decoding instance")?;
    let per_step = sc.mtp.acceptance.tokens_per_step(sc.mtp.drafts);
    let context = t.isl + t.osl / 2;
    let step_s = |batch: u64| -> Result<f64, String> {
        let mut pricer = Pricer::new(
            &loaded.topology,
            &loaded.model,
            d,
            &sc.moe,
            sc.mtp,
            &streams,
        )?;
        let work = RankWork {
            batch,
            context,
            chunks: Vec::new(),
        };
        Ok(pricer.price(&vec![work; d.dp_ranks()])?.seconds)
    };
    let full = (d.max_batch * d.dp_ranks() as u64) as f64;
    Ok(Limits {
        prefill_tok_s: match prefill.first() {
            Some(p) => Some(prefill_rate(p)? * prefill.len() as f64),
            None => None,
        },
        tpot_floor_ms: step_s(1)? * 1e3 / per_step,
        decode_tok_s: full * per_step / step_s(d.max_batch)? * decoding.len() as f64,
        aggregated_prefill_tok_s: match prefill.is_empty() {
            true => Some(prefill_rate(d)? * decoding.len() as f64),
            false => None,
        },
    })
}

impl Limits {
    /// Why a deployment with these limits cannot meet `t` at `rate` requests/s, if it
    /// cannot:
    /// - its prefill instances together prefill fewer prompt tokens/s than offered;
    /// - one decode step at one request per rank is slower per token than the TPOT SLA;
    /// - its decoding instances at their full batch make fewer tokens/s than offered;
    /// - aggregated, its prompts at the best prefill rate and its answers at the best
    ///   decode rate together take more than all of its GPUs' time.
    pub fn reason_to_prune(&self, t: &Target, rate: f64) -> Option<String> {
        let (prompts, answers) = (rate * t.isl as f64, rate * t.osl as f64);
        if let Some(held) = self.prefill_tok_s.filter(|&h| h < SERVED_SHARE * prompts) {
            return Some(format!(
                "prefill holds at most {held:.0} of the offered {prompts:.0} prompt tokens/s"
            ));
        }
        if self.tpot_floor_ms > t.tpot_p99_ms {
            return Some(format!(
                "a decode step alone takes {:.1} ms per token, above the TPOT SLA",
                self.tpot_floor_ms
            ));
        }
        if self.decode_tok_s < SERVED_SHARE * answers {
            return Some(format!(
                "decode makes at most {:.0} of the offered {answers:.0} output tokens/s",
                self.decode_tok_s
            ));
        }
        let busy = self
            .aggregated_prefill_tok_s
            .map_or(0.0, |p| prompts / p + answers / self.decode_tok_s);
        (busy * SERVED_SHARE > 1.0).then(|| {
            format!(
                "prefill and decode at their best rates need {:.0}% of the GPUs' time",
                busy * 100.0
            )
        })
    }
}
