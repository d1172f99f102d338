//! A prefill instance's capacity: what rate matching divides the prompt load by.

use super::{Pricer, RankWork};
use crate::cost::step::PrefillChunk;
use crate::engine::RandomStreams;
use crate::model::ModelConfig;
use crate::serving::scenario::{InstanceSpec, MoeSettings, Mtp};
use crate::topology::Topology;

/// Iterations priced to measure a prefill instance's capacity.
const CAPACITY_ITERATIONS: u64 = 8;

/// Prompt tokens per second `instance` prefills when full: every DP rank packs chunks of
/// `prompt` uncached tokens (after `cached` in the prefix cache) up to its token and batch
/// limits, each iteration routed and priced as serving prices it. What rate matching
/// divides the prompt load by (reference section 6: "x prefill workers per y decode").
pub fn prefill_capacity_tok_s(
    topo: &Topology,
    model: &ModelConfig,
    instance: &InstanceSpec,
    moe: &MoeSettings,
    mtp: Mtp,
    streams: &RandomStreams,
    (prompt, cached): (u64, u64),
) -> Result<f64, String> {
    let chunk = prompt.clamp(1, instance.max_tokens.max(1));
    let chunks = (instance.max_tokens / chunk).clamp(1, instance.max_batch.max(1));
    let work = RankWork {
        batch: 0,
        context: 0,
        chunks: vec![
            PrefillChunk {
                tokens: chunk,
                prefix: cached,
            };
            chunks as usize
        ],
    };
    let ranks = vec![work; instance.dp_ranks()];
    let mut pricer = Pricer::new(topo, model, instance, moe, mtp, streams)?;
    let mut seconds = 0.0f64;
    for _ in 0..CAPACITY_ITERATIONS {
        seconds += pricer.price(&ranks)?.seconds;
    }
    let tokens = (chunk * chunks) as f64 * ranks.len() as f64 * CAPACITY_ITERATIONS as f64;
    Ok(tokens / seconds.max(1e-12))
}
