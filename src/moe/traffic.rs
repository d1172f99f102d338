//! Where each token of an all-to-all goes: for every source rank and token, the ranks of
//! its experts under contiguous placement (expert e on rank e x EP / experts).

use super::popularity::Popularity;
use super::routing::Router;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq)]
pub enum TokenRouting {
    /// Experts drawn from a popularity model (uniform, zipf:S, ...), top-k distinct.
    Sampled(Popularity),
    /// Every token reaches min(EP, top-k) distinct ranks, its experts spread evenly over
    /// them: the pattern of TensorRT-LLM's all-to-all benchmark, whose traffic model is
    /// tokens x min(EP, 8) x bytes per token (reference section 2).
    Spread,
}

impl FromStr for TokenRouting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "spread" => Ok(TokenRouting::Spread),
            "calibrated" | "uniform" => text.parse().map(TokenRouting::Sampled),
            t if t.starts_with("zipf:") || t.starts_with("dirichlet:") => {
                t.parse().map(TokenRouting::Sampled)
            }
            _ => Err(format!(
                "unknown routing \"{text}\": expected uniform, zipf:S, dirichlet:A, calibrated or spread"
            )),
        }
    }
}

impl fmt::Display for TokenRouting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenRouting::Sampled(p) => p.fmt(f),
            TokenRouting::Spread => f.write_str("spread"),
        }
    }
}

/// `[source rank][token]` -> destination rank of each of the token's `top_k` experts.
pub fn destinations(
    routing: &TokenRouting,
    ep: usize,
    tokens_per_rank: usize,
    experts: usize,
    top_k: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<Vec<usize>>>, String> {
    if ep == 0 || experts < top_k || top_k == 0 || experts < ep {
        return Err(format!(
            "need 1 <= top-k ({top_k}) <= experts ({experts}) and EP ({ep}) <= experts"
        ));
    }
    let rank_of = |e: usize| e * ep / experts;
    match routing {
        TokenRouting::Sampled(popularity) => {
            let p = popularity.draw(experts, rng);
            let router = Router::new(&p, top_k, 1, 1).map_err(|e| e.to_string())?;
            Ok((0..ep)
                .map(|_| {
                    (0..tokens_per_rank)
                        .map(|_| router.pick(rng).into_iter().map(rank_of).collect())
                        .collect()
                })
                .collect())
        }
        TokenRouting::Spread => {
            let reach = ep.min(top_k);
            Ok((0..ep)
                .map(|_| {
                    (0..tokens_per_rank)
                        .map(|_| {
                            let ranks = distinct_sample(ep, reach, rng);
                            (0..top_k).map(|j| ranks[j % reach]).collect()
                        })
                        .collect()
                })
                .collect())
        }
    }
}

/// `k` distinct values of 0..n, uniformly (partial Fisher-Yates).
fn distinct_sample(n: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = rng.random_range(i..n);
        pool.swap(i, j);
    }
    pool.truncate(k);
    pool
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RandomStreams;

    #[test]
    fn spread_reaches_min_ep_topk_distinct_ranks() {
        let mut rng = RandomStreams::new(1).stream("routing");
        for ep in [4, 8, 32] {
            let d = destinations(&TokenRouting::Spread, ep, 50, 256, 8, &mut rng).unwrap();
            for token in d.iter().flatten() {
                assert_eq!(token.len(), 8);
                let mut ranks = token.clone();
                ranks.sort_unstable();
                ranks.dedup();
                assert_eq!(ranks.len(), ep.min(8));
            }
        }
    }

    #[test]
    fn sampled_tokens_pick_top_k_experts_on_valid_ranks() {
        let mut rng = RandomStreams::new(2).stream("routing");
        let d = destinations(&"uniform".parse().unwrap(), 72, 10, 256, 8, &mut rng).unwrap();
        assert_eq!(d.len(), 72);
        assert!(
            d.iter()
                .flatten()
                .all(|t| t.len() == 8 && t.iter().all(|&r| r < 72))
        );
        assert!(destinations(&TokenRouting::Spread, 8, 1, 4, 8, &mut rng).is_err());
        assert!("lognormal".parse::<TokenRouting>().is_err());
        assert_eq!(
            "zipf:1.2".parse::<TokenRouting>().unwrap().to_string(),
            "zipf:1.2"
        );
    }
}
