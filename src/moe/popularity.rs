//! How popular each expert of each MoE layer is: the probabilities a routing choice lands on
//! each expert. Skew here is what makes one rank the slowest of every MoE layer.

use rand::RngExt;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use std::fmt;
use std::str::FromStr;

/// Zipf exponent of the `calibrated` model: per layer, drawn uniformly from this range,
/// over a random order of the layer's experts. Chosen (with `epsim imbalance`, 256 tokens
/// per rank, TensorRT-LLM's wide-EP max batch, reference section 4) so that DeepSeek-R1 at
/// EP32 without EPLB shows the measured imbalance (TensorRT-LLM tech blog 4, reference
/// section 4): rank imbalance (max - mean)/mean 1.56 averaged over layers and iterations,
/// single layers from about 0.5 to 2.5, per-expert imbalance about 11. Over seeds 1-5 this
/// range gives 1.46-1.61 (mean 1.56), layers 0.6 to 2.6-3.6, per-expert imbalance 12-13.
pub const CALIBRATED_ZIPF_EXPONENT: (f64, f64) = (0.55, 0.9);

#[derive(Debug, Clone, PartialEq)]
pub enum Popularity {
    /// Every expert equally likely.
    Uniform,
    /// Expert of rank r (in a random order per layer) weighs 1 / r^s.
    Zipf { exponent: f64 },
    /// Weights drawn from a symmetric Dirichlet with this concentration (small = skewed).
    Dirichlet { concentration: f64 },
    /// DeepSeek-R1's measured skew (see [`CALIBRATED_ZIPF_EXPONENT`]).
    Calibrated,
}

impl FromStr for Popularity {
    type Err = String;

    /// `uniform`, `zipf:S`, `dirichlet:A` or `calibrated`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (kind, arg) = match text.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (text, None),
        };
        let number = |what: &str| -> Result<f64, String> {
            let a = arg.ok_or_else(|| format!("{kind} needs a value: {kind}:{what}"))?;
            match a.parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
                _ => Err(format!("{kind}:{a}: {what} must be a number > 0")),
            }
        };
        match kind {
            "uniform" if arg.is_none() => Ok(Popularity::Uniform),
            "calibrated" if arg.is_none() => Ok(Popularity::Calibrated),
            "zipf" => Ok(Popularity::Zipf {
                exponent: number("S")?,
            }),
            "dirichlet" => Ok(Popularity::Dirichlet {
                concentration: number("A")?,
            }),
            _ => Err(format!(
                "unknown popularity \"{text}\": expected uniform, zipf:S, dirichlet:A or calibrated"
            )),
        }
    }
}

impl fmt::Display for Popularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Popularity::Uniform => f.write_str("uniform"),
            Popularity::Zipf { exponent } => write!(f, "zipf:{exponent}"),
            Popularity::Dirichlet { concentration } => write!(f, "dirichlet:{concentration}"),
            Popularity::Calibrated => f.write_str("calibrated"),
        }
    }
}

impl serde::Serialize for Popularity {
    /// As written on the command line (`zipf:1.2`).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Popularity {
    /// One layer's expert probabilities (summing to 1), drawn from `rng`.
    pub fn draw(&self, experts: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let weights: Vec<f64> = match *self {
            Popularity::Uniform => vec![1.0; experts],
            Popularity::Zipf { exponent } => zipf(experts, exponent, rng),
            Popularity::Dirichlet { concentration } => dirichlet(experts, concentration, rng),
            Popularity::Calibrated => {
                let (lo, hi) = CALIBRATED_ZIPF_EXPONENT;
                let exponent = lo + rng.random::<f64>() * (hi - lo);
                zipf(experts, exponent, rng)
            }
        };
        normalise(weights)
    }
}

/// Weight 1 / r^s for the expert of rank r, ranks in a random order.
fn zipf(experts: usize, exponent: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut w: Vec<f64> = (1..=experts).map(|r| (r as f64).powf(-exponent)).collect();
    w.shuffle(rng);
    w
}

fn dirichlet(experts: usize, concentration: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    match Gamma::new(concentration, 1.0) {
        // A draw of exactly 0 for every expert is possible in f64 at tiny concentrations;
        // `normalise` then falls back to uniform.
        Ok(gamma) => (0..experts).map(|_| gamma.sample(rng)).collect(),
        Err(_) => vec![1.0; experts],
    }
}

fn normalise(mut w: Vec<f64>) -> Vec<f64> {
    let total: f64 = w.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        let n = w.len() as f64;
        return vec![1.0 / n; w.len()];
    }
    for x in &mut w {
        *x /= total;
    }
    w
}

/// Popularity that changes over time: each layer's probabilities glide from one draw to the
/// next over `period` iterations, so the hot experts of now are not those of later.
#[derive(Debug, Clone)]
pub struct Drifting {
    model: Popularity,
    experts: usize,
    /// Iterations to move from one draw to the next; 0 = never change.
    period: u64,
    rng: ChaCha8Rng,
    /// Per layer: the draw being left and the one being approached.
    from: Vec<Vec<f64>>,
    to: Vec<Vec<f64>>,
    epoch: u64,
}

impl Drifting {
    pub fn new(
        model: Popularity,
        layers: usize,
        experts: usize,
        period: u64,
        mut rng: ChaCha8Rng,
    ) -> Self {
        let from: Vec<Vec<f64>> = (0..layers).map(|_| model.draw(experts, &mut rng)).collect();
        let to = if period == 0 {
            from.clone()
        } else {
            (0..layers).map(|_| model.draw(experts, &mut rng)).collect()
        };
        Drifting {
            model,
            experts,
            period,
            rng,
            from,
            to,
            epoch: 0,
        }
    }

    /// Iterations to move from one draw to the next; 0 = never change.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// Probabilities of every layer at `iteration` (iterations must not go backwards).
    pub fn at(&mut self, iteration: u64) -> Vec<Vec<f64>> {
        if self.period == 0 {
            return self.from.clone();
        }
        while iteration / self.period > self.epoch {
            self.epoch += 1;
            let next: Vec<Vec<f64>> = (0..self.to.len())
                .map(|_| self.model.draw(self.experts, &mut self.rng))
                .collect();
            self.from = std::mem::replace(&mut self.to, next);
        }
        let f = (iteration % self.period) as f64 / self.period as f64;
        self.from
            .iter()
            .zip(&self.to)
            .map(|(a, b)| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (1.0 - f) * x + f * y)
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RandomStreams;

    #[test]
    fn parses_and_prints() {
        for text in ["uniform", "zipf:1.2", "dirichlet:0.5", "calibrated"] {
            assert_eq!(text.parse::<Popularity>().unwrap().to_string(), text);
        }
        for bad in ["zipf", "zipf:-1", "dirichlet:x", "pareto:2", "uniform:3"] {
            assert!(bad.parse::<Popularity>().is_err(), "{bad}");
        }
    }

    #[test]
    fn draws_are_distributions_and_skew_as_asked() {
        let mut rng = RandomStreams::new(1).stream("popularity");
        let max_share = |p: &Popularity, rng: &mut ChaCha8Rng| {
            let v = p.draw(256, rng);
            assert!((v.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(v.iter().all(|x| *x >= 0.0));
            v.iter().copied().fold(0.0, f64::max)
        };
        assert!((max_share(&Popularity::Uniform, &mut rng) - 1.0 / 256.0).abs() < 1e-15);
        let zipf = max_share(&Popularity::Zipf { exponent: 1.0 }, &mut rng);
        assert!((zipf - 1.0 / (1..=256).map(|r| 1.0 / r as f64).sum::<f64>()).abs() < 1e-12);
        let flat = max_share(
            &Popularity::Dirichlet {
                concentration: 100.0,
            },
            &mut rng,
        );
        let skewed = max_share(&Popularity::Dirichlet { concentration: 0.1 }, &mut rng);
        assert!(skewed > 3.0 * flat, "{skewed} vs {flat}");
    }

    #[test]
    fn drift_moves_between_draws_over_its_period() {
        let rng = RandomStreams::new(5).stream("popularity");
        let mut d = Drifting::new(Popularity::Dirichlet { concentration: 0.3 }, 2, 16, 10, rng);
        let start = d.at(0);
        let mid = d.at(5);
        let next = d.at(10);
        assert_ne!(start, next);
        for l in 0..2 {
            for e in 0..16 {
                assert!((mid[l][e] - 0.5 * (start[l][e] + next[l][e])).abs() < 1e-12);
            }
            assert!((next[l].iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let rng = RandomStreams::new(5).stream("popularity");
        let mut fixed = Drifting::new(Popularity::Uniform, 1, 4, 0, rng);
        assert_eq!(fixed.at(0), fixed.at(1_000_000));
    }
}
