//! Expert load imbalance over many iterations: route each iteration's tokens, place them
//! with a policy (no EPLB, static EPLB from a warm-up profile, or online EPLB), and measure
//! what TensorRT-LLM and SGLang report per layer: the rank imbalance (max - mean)/mean and
//! the balancedness mean/max of tokens per rank.

use super::placement::{PlacementError, ReplicaSplit};
use super::policy::{
    EplbMode, OnlineStyle, PlacementPolicy, Shape, Transport, add_counts, for_mode,
};
use super::popularity::{Drifting, Popularity};
use super::replay::Recording;
use super::routing::Router;
use crate::engine::RandomStreams;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImbalanceSetup {
    pub layers: usize,
    pub experts: usize,
    pub top_k: usize,
    pub groups: usize,
    pub groups_per_token: usize,
    pub ep: usize,
    pub slots: usize,
    pub eplb: EplbMode,
    pub online: OnlineStyle,
    pub popularity: Popularity,
    /// Recorded counts to replay instead of drawing from `popularity`.
    #[serde(skip)]
    pub replay: Option<Recording>,
    /// A load profile `[layer][expert]` for static EPLB instead of the warm-up's counts.
    #[serde(skip)]
    pub profile: Option<Vec<Vec<f64>>>,
    /// Iterations over which the popularity drifts from one draw to the next (0 = fixed).
    pub drift_period: u64,
    /// Tokens each rank sends into every MoE layer per iteration.
    pub tokens_per_rank: u64,
    pub iterations: u64,
    /// Iterations routed before measuring: the static plan's profile.
    pub warmup: u64,
    pub split: ReplicaSplit,
    pub seed: u64,
    /// Bytes of one expert's weights, to price migrations.
    pub expert_bytes: f64,
    /// NVLink bandwidth into one GPU, per direction, for blocking GPU-to-GPU migration.
    pub nvlink_gb_s: f64,
    /// Host-to-GPU copy bandwidth, per direction, for background migration.
    pub host_copy_gb_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LayerStats {
    pub mean_rank_imbalance: f64,
    pub max_rank_imbalance: f64,
    pub mean_balancedness: f64,
    /// (max - mean) / mean of tokens per expert.
    pub mean_expert_imbalance: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImbalanceReport {
    pub layers: Vec<LayerStats>,
    pub mean_rank_imbalance: f64,
    pub mean_balancedness: f64,
    pub mean_expert_imbalance: f64,
    /// Layer re-plans during the measured iterations (online EPLB).
    pub layer_replans: u64,
    /// Slots whose expert changed, over all re-plans and ranks.
    pub migrated_slots: u64,
    pub migrated_gib: f64,
    /// The most any one rank received in one re-plan event (what a blocking move waits for).
    pub max_rank_migration_gib: f64,
    /// Serving time lost to blocking migrations (GPU to GPU over NVLink), in all.
    pub blocking_stall_ms: f64,
    /// The longest background copy of one iteration's re-plans (host over NVLink-C2C),
    /// which must stay below the iteration time to stay hidden.
    pub max_background_copy_ms: f64,
}

const GIB: f64 = (1u64 << 30) as f64;

/// The most work one run may take, in units of (warm-up + measured iterations) x MoE layers
/// x (experts + slots): each costs ~80 ns on a 2-core 2026 machine (DeepSeek-R1 at EP32,
/// 1,100 iterations: 3.3 x 10^7 units in 2.5 s), so the cap is about 5 minutes. Beyond it
/// a run is refused before it starts, not left to run for hours.
pub const MAX_WORK_UNITS: f64 = 4e9;

pub fn simulate(s: &ImbalanceSetup) -> Result<ImbalanceReport, PlacementError> {
    let iterations = s.warmup as f64 + s.iterations as f64;
    let work = iterations * s.layers as f64 * (s.experts + s.slots) as f64;
    if work > MAX_WORK_UNITS {
        return Err(PlacementError(format!(
            "{iterations:.0} iterations (warm-up and measured) x {} MoE layers x {} experts and slots is {work:.1e} units of work, above the limit of {MAX_WORK_UNITS:.0e} (about 5 minutes); at most {:.0} iterations, warm-up included, fit",
            s.layers,
            s.experts + s.slots,
            (MAX_WORK_UNITS / (s.layers as f64 * (s.experts + s.slots) as f64)).floor()
        )));
    }
    let streams = RandomStreams::new(s.seed);
    let mut popularity = Drifting::new(
        s.popularity.clone(),
        s.layers,
        s.experts,
        s.drift_period,
        streams.stream("popularity"),
    );
    let mut rng = streams.stream("routing");
    let tokens = s.tokens_per_rank.saturating_mul(s.ep as u64);
    let route = |iteration: u64, popularity: &mut Drifting, rng: &mut rand_chacha::ChaCha8Rng| {
        let probabilities = match &s.replay {
            Some(recording) => recording.at(iteration).to_vec(),
            None => popularity.at(iteration),
        };
        probabilities
            .iter()
            .map(|p| {
                let router = Router::new(p, s.top_k, s.groups, s.groups_per_token)
                    .map_err(|e| PlacementError(e.to_string()))?;
                Ok(router.sample(tokens, rng))
            })
            .collect::<Result<Vec<Vec<u64>>, PlacementError>>()
    };

    let mut profile = vec![vec![0.0; s.experts]; s.layers];
    for it in 0..s.warmup {
        for (sum, counts) in profile
            .iter_mut()
            .zip(route(it, &mut popularity, &mut rng)?)
        {
            add_counts(sum, &counts, 1.0);
        }
    }
    let mut policy = policy_for(s);
    let mut placement = policy.initial(&profile)?;

    let mut sums = vec![LayerStats::default(); s.layers];
    let mut report = ImbalanceReport {
        layers: Vec::new(),
        mean_rank_imbalance: 0.0,
        mean_balancedness: 0.0,
        mean_expert_imbalance: 0.0,
        layer_replans: 0,
        migrated_slots: 0,
        migrated_gib: 0.0,
        max_rank_migration_gib: 0.0,
        blocking_stall_ms: 0.0,
        max_background_copy_ms: 0.0,
    };
    for step in 0..s.iterations {
        let counts = route(s.warmup + step, &mut popularity, &mut rng)?;
        for (layer, c) in counts.iter().enumerate() {
            let loads = placement.rank_loads(layer, c, s.split);
            let (imbalance, balancedness) = spread(&loads);
            let expert_counts: Vec<f64> = c.iter().map(|&x| x as f64).collect();
            let stats = &mut sums[layer];
            stats.mean_rank_imbalance += imbalance;
            stats.max_rank_imbalance = stats.max_rank_imbalance.max(imbalance);
            stats.mean_balancedness += balancedness;
            stats.mean_expert_imbalance += spread(&expert_counts).0;
        }
        if let Some(m) = policy.observe(&counts, &mut placement)? {
            let most =
                m.changed_slots_per_rank.iter().copied().max().unwrap_or(0) as f64 * s.expert_bytes;
            report.layer_replans += m.layers.len() as u64;
            report.migrated_slots += m.changed_slots_per_rank.iter().sum::<usize>() as u64;
            report.max_rank_migration_gib = report.max_rank_migration_gib.max(most / GIB);
            match m.transport {
                Transport::NvlinkBlocking => {
                    report.blocking_stall_ms += most / (s.nvlink_gb_s * 1e9) * 1e3
                }
                Transport::HostBackground => {
                    let ms = most / (s.host_copy_gb_s * 1e9) * 1e3;
                    report.max_background_copy_ms = report.max_background_copy_ms.max(ms);
                }
            }
        }
    }
    let n = s.iterations.max(1) as f64;
    report.layers = sums
        .into_iter()
        .map(|l| LayerStats {
            mean_rank_imbalance: l.mean_rank_imbalance / n,
            max_rank_imbalance: l.max_rank_imbalance,
            mean_balancedness: l.mean_balancedness / n,
            mean_expert_imbalance: l.mean_expert_imbalance / n,
        })
        .collect();
    let layers = report.layers.len().max(1) as f64;
    report.mean_rank_imbalance = report
        .layers
        .iter()
        .map(|l| l.mean_rank_imbalance)
        .sum::<f64>()
        / layers;
    report.mean_balancedness = report
        .layers
        .iter()
        .map(|l| l.mean_balancedness)
        .sum::<f64>()
        / layers;
    report.mean_expert_imbalance = report
        .layers
        .iter()
        .map(|l| l.mean_expert_imbalance)
        .sum::<f64>()
        / layers;
    report.migrated_gib = report.migrated_slots as f64 * s.expert_bytes / GIB;
    Ok(report)
}

/// (max - mean) / mean and mean / max; a layer with no tokens is perfectly balanced.
fn spread(loads: &[f64]) -> (f64, f64) {
    let max = loads.iter().copied().fold(0.0, f64::max);
    let mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
    if max <= 0.0 {
        (0.0, 1.0)
    } else {
        ((max - mean) / mean, mean / max)
    }
}

fn policy_for(s: &ImbalanceSetup) -> Box<dyn PlacementPolicy> {
    let shape = Shape {
        layers: s.layers,
        experts: s.experts,
        slots: s.slots,
        groups: s.groups,
        ranks: s.ep,
    };
    for_mode(s.eplb, shape, s.online, s.profile.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(eplb: EplbMode, popularity: Popularity) -> ImbalanceSetup {
        ImbalanceSetup {
            layers: 4,
            experts: 64,
            top_k: 8,
            groups: 8,
            groups_per_token: 4,
            ep: 8,
            slots: if eplb == EplbMode::None { 64 } else { 72 },
            eplb,
            online: OnlineStyle::Layerwise {
                layers_per_iteration: 1,
                decay: 0.95,
            },
            popularity,
            replay: None,
            profile: None,
            drift_period: 0,
            tokens_per_rank: 256,
            iterations: 40,
            warmup: 20,
            split: ReplicaSplit::Even,
            seed: 7,
            expert_bytes: 1e6,
            nvlink_gb_s: 900.0,
            host_copy_gb_s: 450.0,
        }
    }

    #[test]
    fn uniform_popularity_is_nearly_balanced() {
        let r = simulate(&setup(EplbMode::None, Popularity::Uniform)).unwrap();
        assert!(r.mean_rank_imbalance < 0.15, "{}", r.mean_rank_imbalance);
        assert!(r.mean_balancedness > 0.85);
        assert_eq!(r.layers.len(), 4);
    }

    #[test]
    fn eplb_reduces_skewed_imbalance() {
        let skew = Popularity::Dirichlet { concentration: 0.3 };
        let none = simulate(&setup(EplbMode::None, skew.clone())).unwrap();
        let fixed = simulate(&setup(EplbMode::Static, skew.clone())).unwrap();
        let online = simulate(&setup(EplbMode::Online, skew)).unwrap();
        assert!(
            none.mean_rank_imbalance > 2.0 * fixed.mean_rank_imbalance,
            "{} vs {}",
            none.mean_rank_imbalance,
            fixed.mean_rank_imbalance
        );
        assert!(online.mean_rank_imbalance < none.mean_rank_imbalance);
        assert_eq!(fixed.migrated_slots, 0, "a static plan never moves weights");
        assert_eq!(online.layer_replans, 40, "one layer per iteration");
        assert_eq!(
            online.blocking_stall_ms, 0.0,
            "layerwise copies run in the background"
        );
        let expected = online.max_rank_migration_gib * GIB / 450e9 * 1e3;
        assert!((online.max_background_copy_ms - expected).abs() < 1e-9);
        // Imbalance and balancedness describe the same spread.
        for l in &none.layers {
            assert!(l.mean_balancedness <= 1.0 && l.mean_rank_imbalance >= 0.0);
        }
    }

    #[test]
    fn same_seed_same_report() {
        let s = setup(EplbMode::Online, Popularity::Calibrated);
        assert_eq!(simulate(&s).unwrap(), simulate(&s).unwrap());
        let other = ImbalanceSetup {
            seed: 8,
            ..s.clone()
        };
        assert_ne!(simulate(&s).unwrap(), simulate(&other).unwrap());
    }

    #[test]
    fn drifting_popularity_makes_online_beat_static() {
        let drifting = |eplb| ImbalanceSetup {
            drift_period: 30,
            iterations: 120,
            online: OnlineStyle::Periodic {
                every: 10,
                window: 10,
            },
            ..setup(eplb, Popularity::Dirichlet { concentration: 0.3 })
        };
        let fixed = simulate(&drifting(EplbMode::Static)).unwrap();
        let online = simulate(&drifting(EplbMode::Online)).unwrap();
        assert!(
            online.mean_rank_imbalance < fixed.mean_rank_imbalance,
            "{} vs {}",
            online.mean_rank_imbalance,
            fixed.mean_rank_imbalance
        );
        assert!(online.migrated_slots > 0 && online.max_rank_migration_gib > 0.0);
        assert!(online.blocking_stall_ms > 0.0, "periodic re-plans block");
        assert_eq!(online.max_background_copy_ms, 0.0);
    }

    /// The calibrated popularity reproduces DeepSeek-R1's measured imbalance at EP32
    /// without EPLB (1.56 on average; a shorter run here, so a wider band).
    #[test]
    fn calibrated_popularity_matches_the_measured_ep32_imbalance() {
        let s = ImbalanceSetup {
            layers: 58,
            experts: 256,
            ep: 32,
            slots: 256,
            iterations: 40,
            warmup: 0,
            ..setup(EplbMode::None, Popularity::Calibrated)
        };
        let r = simulate(&s).unwrap();
        assert!(
            (1.3..1.85).contains(&r.mean_rank_imbalance),
            "{}",
            r.mean_rank_imbalance
        );
        assert!(
            (9.0..16.0).contains(&r.mean_expert_imbalance),
            "{}",
            r.mean_expert_imbalance
        );
    }

    #[test]
    fn a_profile_from_a_file_plans_static_eplb() {
        let mut load = vec![vec![1.0; 64]; 4];
        for layer in &mut load {
            for hot in layer.iter_mut().take(8) {
                *hot = 100.0;
            }
        }
        let s = ImbalanceSetup {
            profile: Some(load),
            warmup: 0,
            ..setup(EplbMode::Static, Popularity::Uniform)
        };
        assert!(simulate(&s).is_ok());
        let bad = ImbalanceSetup {
            profile: Some(vec![vec![1.0; 3]]),
            ..s
        };
        assert!(
            simulate(&bad)
                .unwrap_err()
                .0
                .contains("must have 4 layers of 64 experts")
        );
    }

    #[test]
    fn replayed_counts_drive_the_routing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.csv");
        // Every layer: tokens spread over the experts of groups 0-3, which contiguous
        // placement puts on ranks 0-3. Each token takes 2 experts from each of 4 groups, so
        // ranks 0-3 get twice the mean and ranks 4-7 nothing: (max - mean)/mean = 1.
        let mut text = String::from("layer,expert,tokens\n");
        for layer in 0..4 {
            for e in 0..32 {
                text.push_str(&format!("{layer},{e},10\n"));
            }
        }
        std::fs::write(&file, text).unwrap();
        let replay = Recording::read(&file, 4, 64).unwrap();
        let s = ImbalanceSetup {
            replay: Some(replay),
            ..setup(EplbMode::None, Popularity::Uniform)
        };
        let r = simulate(&s).unwrap();
        assert!(
            (r.mean_rank_imbalance - 1.0).abs() < 1e-9,
            "{}",
            r.mean_rank_imbalance
        );
    }

    #[test]
    fn redundant_slots_need_eplb() {
        let s = ImbalanceSetup {
            slots: 72,
            ..setup(EplbMode::None, Popularity::Uniform)
        };
        assert!(
            simulate(&s)
                .unwrap_err()
                .0
                .contains("redundant slots need EPLB")
        );
    }
}
