//! The price of one iteration of one instance, all its ranks in lock step. Per MoE layer the
//! ranks meet twice: the dispatch waits for the slowest rank's attention, the combine for
//! the slowest rank's experts. So an iteration costs
//!
//!   max over ranks (attention, dense GEMMs, norms, LM head, MTP drafts, launch gaps)
//!   + MoE layers x max(router + routed GroupGEMM + dispatch + combine, shared expert),
//!
//! the routed GroupGEMM the slowest rank's, the shared expert on its second stream, and
//! the routed tokens drawn from the routing model for a few representative layers
//! (each standing for an equal share of the model's MoE layers), the all-to-all priced from
//! the same draw, priced draws kept and replayed (see `draws`), and online EPLB
//! re-planning those layers from draws of its own (see `Pricer::replan`). With two
//! micro-batches, each half is priced on its own and the two interleave as
//! [`super::overlap`] models.

mod capacity;
mod draws;
mod eplb;
#[cfg(test)]
mod tests;
mod work;

pub use capacity::prefill_capacity_tok_s;
use eplb::observe_stride;
use work::Pass;
pub use work::{Price, RankWork};

use super::overlap;
use super::scenario::{InstanceSpec, MoeSettings, Mtp};
use crate::cost::collective::{self, EpGroup, ExpectedTraffic, Misses, Phase};
use crate::cost::kernels::{Kernels, MoeMemo};
use crate::cost::network::LinkEfficiency;
use crate::cost::profile::MoeShape;
use crate::cost::step::{StepLoad, StepMemo, iteration_seconds};
use crate::engine::RandomStreams;
use crate::model::{ModelConfig, Usage};
use crate::moe::placement::Placement;
use crate::moe::policy::{self, OnlineStyle, PlacementPolicy, Shape};
use crate::moe::popularity::Drifting;
use crate::moe::routing::Router;
use crate::topology::{A2aAlgorithm, Topology};
use draws::{Draws, Turn};
use rand_chacha::ChaCha8Rng;
use std::rc::Rc;

/// Iterations of routing drawn before serving to plan static EPLB (its load profile): 16 x
/// 256 tokens per rank x top-8 puts ~1,000 picks per expert into the profile at EP8 (more at
/// wider EP), so its sampling noise (~3%) stays well below the calibrated popularity skew.
/// Drawn as one draw of all their tokens, which is distributed as the sum of theirs.
const PROFILE_ITERATIONS: u64 = 16;
/// Tokens per rank in each profiling iteration: TensorRT-LLM wide-EP's max batch
/// (reference section 4).
const PROFILE_TOKENS_PER_RANK: u64 = 256;

/// Router rebuilds per drift period (see [`Pricer::drift`]).
const DRIFT_STEPS: u64 = 64;

/// One router per layer of `popularity`.
fn routers_for(model: &ModelConfig, popularity: &[Vec<f64>]) -> Result<Vec<Router>, String> {
    let m = &model.moe;
    popularity
        .iter()
        .map(|p| {
            Router::new(
                p,
                m.experts_per_token as usize,
                m.groups as usize,
                m.groups_per_token as usize,
            )
            .map_err(|e| e.to_string())
        })
        .collect()
}

/// One draw of a sampled layer's routing, priced.
#[derive(Debug, Default)]
struct LayerDraw {
    /// The slowest rank's routed GroupGEMM.
    moe_s: f64,
    dispatch_s: f64,
    combine_s: f64,
    /// (max - mean) / mean routed tokens per GPU.
    rank_imbalance: f64,
    /// Tokens per expert, to price the draw again when online EPLB moves the layer's
    /// experts (empty when the placement never moves).
    counts: Vec<u64>,
    /// The layer's placement it was priced under (see [`Pricer::placement_moves`]).
    placement: u64,
}

impl LayerDraw {
    /// What the draw adds to an iteration: its routed GroupGEMM and all-to-all.
    fn price_s(&self) -> f64 {
        self.moe_s + self.dispatch_s + self.combine_s
    }
}

pub struct Pricer<'a> {
    model: &'a ModelConfig,
    instance: &'a InstanceSpec,
    kernels: Kernels<'a>,
    memo: StepMemo,
    moe_memo: MoeMemo,
    /// Whether tokens leave their GPU for the experts: not with one GPU, nor when one
    /// tensor-parallel group spans the EP group (every rank holds every token; the group's
    /// all-reduces, priced with the layer, sum the experts' outputs), nor when one group of
    /// tensor-parallel experts holds every expert (its gather is priced with the layer).
    all_to_all: bool,
    mtp: Mtp,
    overlap: bool,
    /// Share of the SMs the all-to-all kernels hold while they run.
    comm_sm_share: f64,
    group: EpGroup<'a>,
    /// Per rank of the group: its NVLink domain (by [`EpGroup::domain_ordinals`]).
    rank_domain: Vec<usize>,
    /// Per sampled layer: the chance a token misses each rank and each domain, under the
    /// current placement (see [`Router::miss_chances`]; redone when EPLB moves experts).
    misses: Vec<(Vec<f64>, Vec<f64>)>,
    /// Per slot: the expert rank holding it (slots are dealt to ranks in blocks).
    slot_rank: Vec<usize>,
    algorithm: A2aAlgorithm,
    efficiency: LinkEfficiency,
    floors_s: (f64, f64),
    bytes_per_token: (f64, f64),
    routers: Vec<Router>,
    /// Where the routers come from; with drift they are rebuilt as it moves.
    popularity: Drifting,
    /// Iterations priced so far.
    iteration: u64,
    placement: Placement,
    policy: Box<dyn PlacementPolicy>,
    /// Iterations whose counts the policy sees at once (see [`observe_stride`]).
    observe_every: u64,
    /// Real layers layer-wise EPLB re-plans (and copies from host) per iteration.
    copied_layers_per_iteration: f64,
    /// What the policy has not seen yet: the routing of tokens drawn under earlier routers
    /// `[layer][expert]`, and the tokens routed since (see [`Self::draw_unobserved`]).
    unobserved: Vec<Vec<u64>>,
    unobserved_tokens: u64,
    unobserved_iterations: u64,
    /// Per sampled layer: how many times online EPLB has changed its placement.
    placement_moves: Vec<u64>,
    rng: ChaCha8Rng,
    /// Priced routing draws kept for replay, for the current routers.
    draws: Draws,
    /// Whether routing is drawn coarsely (see [`Pricer::fast_forward`]).
    fast_forward: bool,
    expert_bytes: f64,
    nvlink_bps: f64,
    host_bps: f64,
}

impl<'a> Pricer<'a> {
    pub fn new(
        topo: &'a Topology,
        model: &'a ModelConfig,
        instance: &'a InstanceSpec,
        moe: &MoeSettings,
        mtp: Mtp,
        streams: &RandomStreams,
    ) -> Result<Self, String> {
        let gpus: Vec<_> = instance.gpus.iter().map(|&g| topo.gpus[g]).collect();
        // The all-to-all runs between expert ranks: one GPU stands for each group of
        // tensor-parallel experts (the group's gather is priced with the layer).
        let expert_gpus: Vec<_> = gpus
            .iter()
            .copied()
            .step_by(instance.moe_tp.max(1) as usize)
            .collect();
        let collectives = topo
            .collectives
            .as_ref()
            .ok_or("the topology has no `collectives` section to price the all-to-all")?;
        let efficiency = LinkEfficiency::for_gpu(topo, gpus[0])
            .ok_or("the topology gives no link efficiencies for its GPUs")?;
        let m = &model.moe;
        let layers = moe.sampled_layers;
        let name = &instance.name;
        let mut popularity = Drifting::new(
            moe.popularity.clone(),
            layers,
            m.routed_experts as usize,
            moe.drift_period_iterations,
            streams.stream(&format!("popularity/{name}")),
        );
        let routers = routers_for(model, &popularity.at(0))?;
        let rng = streams.stream(&format!("routing/{name}"));
        let shape = Shape {
            layers,
            experts: m.routed_experts as usize,
            slots: instance.slots as usize,
            groups: m.groups as usize,
            ranks: instance.expert_ranks(),
        };
        let (online, observe_every) = observe_stride(moe.online, model.moe_layers(), layers);
        let mut policy = policy::for_mode(instance.eplb, shape, online, None);
        // The profile's draws have their own stream: statistics gathered before serving,
        // from the popularity serving starts with (with drift, it moves away from them).
        let mut profile_rng = streams.stream(&format!("eplb-profile/{name}"));
        let tokens = PROFILE_ITERATIONS * PROFILE_TOKENS_PER_RANK * instance.ep();
        let profile: Vec<Vec<f64>> = (routers.iter())
            .map(|router| {
                let counts = router.sample(tokens, &mut profile_rng);
                counts.into_iter().map(|c| c as f64).collect()
            })
            .collect();
        let placement = policy.initial(&profile).map_err(|e| e.0)?;
        let hidden = model.hidden_size as f64;
        let group = EpGroup::new(topo, expert_gpus);
        let mut pricer = Pricer {
            model,
            instance,
            kernels: Kernels::for_engine(
                &instance.gpu,
                instance.kernels,
                instance.all_to_all.algorithm,
            )?,
            memo: StepMemo::default(),
            moe_memo: MoeMemo::default(),
            all_to_all: instance.dp_ranks() > 1 && instance.expert_ranks() > 1,
            mtp,
            overlap: instance.micro_batch_overlap,
            comm_sm_share: f64::from(overlap::communication_sms(instance.all_to_all.algorithm))
                / f64::from(instance.gpu.sms.max(1)),
            rank_domain: group.domain_ordinals(),
            misses: Vec::new(),
            slot_rank: (0..instance.slots as usize)
                .map(|s| s / placement.slots_per_rank())
                .collect(),
            group,
            algorithm: instance.all_to_all.algorithm,
            efficiency,
            floors_s: (
                collectives.dispatch_latency_us * 1e-6,
                collectives.combine_latency_us * 1e-6,
            ),
            bytes_per_token: (
                instance
                    .all_to_all
                    .dispatch
                    .bytes(hidden, Usage::Activations),
                instance
                    .all_to_all
                    .combine
                    .bytes(hidden, Usage::Activations),
            ),
            routers,
            popularity,
            iteration: 0,
            placement,
            policy,
            observe_every,
            copied_layers_per_iteration: match moe.online {
                OnlineStyle::Layerwise {
                    layers_per_iteration,
                    ..
                } => layers_per_iteration as f64,
                OnlineStyle::Periodic { .. } => 0.0,
            },
            unobserved: vec![vec![0; shape.experts]; layers],
            unobserved_tokens: 0,
            unobserved_iterations: 0,
            placement_moves: vec![0; layers],
            rng,
            draws: Draws::default(),
            fast_forward: false,
            expert_bytes: instance
                .plan
                .deployment
                .expert_precision
                .bytes(model.expert_params(), Usage::Weights),
            nvlink_bps: topo.nvlink_gb_s(gpus[0]) * 1e9 * efficiency.nvlink,
            host_bps: topo.host_link_gb_s(gpus[0]).unwrap_or(0.0) * 1e9,
        };
        pricer.find_misses();
        Ok(pricer)
    }

    /// Moves the routers along the popularity's drift: rebuilt every 1/64 of its period
    /// (closer steps would change each expert's chance by under 2% of the way between
    /// draws, at the price of rebuilding every iteration).
    fn drift(&mut self) -> Result<(), String> {
        self.iteration += 1;
        let period = self.popularity.period();
        if period == 0 || !self.iteration.is_multiple_of((period / DRIFT_STEPS).max(1)) {
            return Ok(());
        }
        self.draw_unobserved();
        self.routers = routers_for(self.model, &self.popularity.at(self.iteration))?;
        self.draws.clear();
        self.find_misses();
        Ok(())
    }

    /// Recomputes [`Self::misses`] for the current routers and placement.
    fn find_misses(&mut self) {
        let domains = self.group.domains();
        let ep = self.instance.expert_ranks();
        let domain: Vec<usize> = self
            .slot_rank
            .iter()
            .map(|&r| self.rank_domain[r])
            .collect();
        self.misses = (self.routers.iter().enumerate())
            .map(|(layer, router)| {
                let slot_expert = self.placement.phy2log(layer);
                (
                    router.miss_chances(slot_expert, &self.slot_rank, ep),
                    router.miss_chances(slot_expert, &domain, domains),
                )
            })
            .collect();
    }

    /// Draws routing coarsely from now on when `on`, finely again when not: while
    /// fast-forwarding, token counts round to grid points 1/15 to 1/8 apart and a grid
    /// point replays any draw it keeps. For the first part of the warm-up, whose iterations
    /// only bring the system to its steady state: a ramp-up from an empty batch visits
    /// every fine grid point once or twice, so each would cost a fresh draw.
    pub fn fast_forward(&mut self, on: bool) {
        self.fast_forward = on;
    }

    /// Prices one iteration in which DP rank r runs `ranks[r]`.
    pub fn price(&mut self, ranks: &[RankWork]) -> Result<Price, String> {
        self.drift()?;
        let mut price = if self.overlap {
            self.overlapped(ranks)
        } else {
            let p = self.lockstep(ranks);
            p.price(p.micro_batch().alone_s())
        }
        .scaled(self.instance.step_time_scale);
        let tokens = ranks.iter().map(|w| w.tokens(self.mtp.drafts)).sum();
        price.eplb_stall_s = self.replan(tokens, price.seconds)?;
        price.seconds += price.eplb_stall_s;
        Ok(price)
    }

    /// An iteration as two micro-batches, each half of every rank's work, interleaved.
    fn overlapped(&mut self, ranks: &[RankWork]) -> Price {
        let halves: Vec<[RankWork; 2]> = ranks.iter().map(RankWork::halves).collect();
        let a: Vec<RankWork> = halves.iter().map(|h| h[0].clone()).collect();
        let b: Vec<RankWork> = halves.iter().map(|h| h[1].clone()).collect();
        let pa = self.lockstep(&a);
        let pb = self.lockstep(&b);
        let layers = self.model.moe_layers() as f64;
        let seconds = overlap::overlapped_seconds(
            &pa.micro_batch(),
            &pb.micro_batch(),
            layers,
            self.comm_sm_share,
        );
        let mut price = pa.price(0.0);
        let other = pb.price(0.0);
        price.dense_s += other.dense_s;
        price.moe_s += other.moe_s;
        price.all_to_all_s += other.all_to_all_s;
        price.rank_imbalance = (price.rank_imbalance + other.rank_imbalance) / 2.0;
        price.seconds = seconds;
        price
    }

    /// One pass of all ranks in lock step (one micro-batch).
    fn lockstep(&mut self, ranks: &[RankWork]) -> Pass {
        let (model, inst) = (self.model, self.instance);
        let d = &inst.plan.deployment;
        let moe_layers = model.moe_layers() as f64;
        let drafts = self.mtp.drafts;
        let mut pass = Pass::default();
        let mut tokens = 0;
        // One layer's shared expert (second stream) and the main-stream work beside it
        // besides the routed experts and all-to-all, each the longest over the ranks.
        let (mut shared_s, mut router_s) = (0.0f64, 0.0f64);
        for work in ranks.iter().filter(|w| w.tokens(drafts) > 0) {
            let load = StepLoad {
                batch: work.batch,
                context: work.context,
                mtp: drafts,
                prefill: &work.chunks,
            };
            let s = iteration_seconds(model, &self.kernels, d, &load, &mut self.memo);
            // Its routed experts as if routing were balanced: replaced below by the draw.
            let dense_s = s.total_s - s.routed_main_s;
            if dense_s > pass.dense_s {
                pass.dense_s = dense_s;
                pass.layer_dense_s = s.moe_layers_s - s.routed_main_s;
            }
            shared_s = shared_s.max(s.shared_layer_s);
            router_s = router_s.max(s.router_layer_s);
            tokens += work.tokens(drafts);
        }
        let at = Draws::grid_tokens(tokens, self.fast_forward, &mut self.rng);
        let scale = moe_layers / self.routers.len().max(1) as f64;
        for layer in 0..self.routers.len() {
            let d = self.layer_draw(layer, at);
            pass.moe_s += d.moe_s * scale;
            pass.dispatch_s += d.dispatch_s * scale;
            pass.combine_s += d.combine_s * scale;
            pass.rank_imbalance += d.rank_imbalance / self.routers.len() as f64;
            // What of the shared expert outlasts the stream beside it.
            let exposed_s = (shared_s - router_s - d.price_s()).max(0.0) * scale;
            pass.dense_s += exposed_s;
            pass.layer_dense_s += exposed_s;
        }
        // MTP drafts run one MoE layer each: their all-to-alls cost at least the floors.
        if tokens > 0 && self.all_to_all {
            pass.draft_a2a_s = drafts as f64 * (self.floors_s.0 + self.floors_s.1);
        }
        pass
    }

    /// The routing of `layer` in an iteration of `tokens` tokens (a grid point), priced:
    /// a kept draw replayed or a fresh one (see [`draws`]). A kept draw priced under a
    /// placement online EPLB has since changed is priced again from its counts.
    fn layer_draw(&mut self, layer: usize, tokens: u64) -> Rc<LayerDraw> {
        match self
            .draws
            .turn(layer, tokens, self.fast_forward, &mut self.rng)
        {
            Turn::Replay(_, d) if d.placement == self.placement_moves[layer] => d,
            Turn::Replay(at, stale) => {
                let d = Rc::new(self.price_counts(layer, tokens, stale.counts.clone()));
                self.draws.keep(layer, tokens, at, Rc::clone(&d));
                d
            }
            Turn::Fresh(at) => {
                let counts = self.routers[layer].sample(tokens, &mut self.rng);
                let mut d = self.price_counts(layer, tokens, counts);
                if !self.policy.observes() {
                    // The placement never moves: the counts are never priced again.
                    d.counts = Vec::new();
                }
                let d = Rc::new(d);
                self.draws.keep(layer, tokens, at, Rc::clone(&d));
                d
            }
        }
    }

    /// Draws `layer`'s routing of `tokens` tokens and prices it, its counts kept.
    #[cfg(test)]
    fn draw(&mut self, layer: usize, tokens: u64) -> LayerDraw {
        let counts = self.routers[layer].sample(tokens, &mut self.rng);
        self.price_counts(layer, tokens, counts)
    }

    /// Prices `layer`'s routing of `tokens` tokens, `c` per expert, under the current
    /// placement.
    fn price_counts(&mut self, layer: usize, tokens: u64, c: Vec<u64>) -> LayerDraw {
        let (model, inst) = (self.model, self.instance);
        let ep = inst.expert_ranks();
        let per_rank = self.placement.slots_per_rank();
        let shape = MoeShape::of(model, inst.plan.deployment.expert_precision);
        let slots = self.placement.phy2log(layer);
        let mut replicas = vec![0u64; c.len()];
        for &e in slots {
            replicas[e] += 1;
        }
        let slot_tokens: Vec<f64> = slots
            .iter()
            .map(|&e| c[e] as f64 / replicas[e] as f64)
            .collect();
        let mut d = LayerDraw::default();
        let mut loads = Vec::with_capacity(ep);
        let mut rows = Vec::with_capacity(per_rank);
        for rank in slot_tokens.chunks(per_rank) {
            rows.clear();
            // Rounded half up, as `round` for these non-negative quotients of small
            // whole numbers, without its libm call.
            rows.extend(rank.iter().map(|x| (x + 0.5) as u64));
            let t = self.kernels.routed_moe_split_seconds(
                shape,
                &rows,
                inst.moe_tp,
                &mut self.moe_memo,
            );
            d.moe_s = d.moe_s.max(t);
            loads.push(rank.iter().sum::<f64>());
        }
        let mean = loads.iter().sum::<f64>() / ep as f64;
        if mean > 0.0 {
            d.rank_imbalance = (loads.iter().copied().fold(0.0, f64::max) - mean) / mean;
        }
        if tokens > 0 && self.all_to_all {
            (d.dispatch_s, d.combine_s) = self.all_to_all_seconds(layer, &slot_tokens, tokens);
        }
        d.counts = c;
        d.placement = self.placement_moves[layer];
        d
    }

    /// One layer's dispatch and combine, floors included, when `slot_tokens[s]` of the
    /// group's `tokens` go to slot s. Which ranks and domains a token reaches comes from
    /// the routing model (a token's experts cluster in its few groups); how many copies
    /// go where, from this iteration's draw.
    fn all_to_all_seconds(&self, layer: usize, slot_tokens: &[f64], tokens: u64) -> (f64, f64) {
        let ep = self.instance.expert_ranks();
        let picks: Vec<f64> = slot_tokens.iter().map(|x| x / tokens as f64).collect();
        let (rank_miss, domain_miss) = &self.misses[layer];
        let traffic = |bytes_per_token| ExpectedTraffic {
            picks: &picks,
            expert_rank: &self.slot_rank,
            tokens_per_rank: tokens as f64 / ep as f64,
            bytes_per_token,
            miss: Some(Misses {
                rank: rank_miss,
                domain: domain_miss,
            }),
        };
        let (dispatch, combine) = self.bytes_per_token;
        let phase = |bytes, phase| {
            collective::expected_fast_path_seconds(
                &self.group,
                traffic(bytes),
                self.algorithm,
                phase,
                self.efficiency,
            )
        };
        (
            self.floors_s.0 + phase(dispatch, Phase::Dispatch),
            self.floors_s.1 + phase(combine, Phase::Combine),
        )
    }
}
