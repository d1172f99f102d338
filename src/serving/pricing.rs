//! The price of one iteration of one instance, all its ranks in lock step. Per MoE layer the
//! ranks meet twice: the dispatch waits for the slowest rank's attention, the combine for
//! the slowest rank's experts. So an iteration costs
//!
//!   max over ranks (attention, dense GEMMs, norms, LM head, MTP drafts, per-layer overhead)
//!   + MoE layers x (slowest rank's routed GroupGEMM + dispatch + combine),
//!
//! with the routed tokens drawn from the routing model each iteration for a few
//! representative layers (each standing for an equal share of the model's MoE layers), the
//! all-to-all priced from the same draw, and online EPLB re-planning those layers from the
//! draws. With two micro-batches, each half is priced on its own and the two interleave
//! as [`super::overlap`] models.

use super::overlap::{self, MicroBatch};
use super::scenario::{InstanceSpec, MoeSettings, Mtp};
use crate::cost::collective::{self, EpGroup, ExpectedTraffic, Misses, Phase};
use crate::cost::kernels::Kernels;
use crate::cost::network::LinkEfficiency;
use crate::cost::profile::MoeShape;
use crate::cost::step::{PrefillChunk, StepLoad, TokenPartMemo, iteration_seconds};
use crate::engine::RandomStreams;
use crate::model::{ModelConfig, Usage};
use crate::moe::placement::Placement;
use crate::moe::policy::{self, Migration, OnlineStyle, PlacementPolicy, Shape, Transport};
use crate::moe::popularity::Drifting;
use crate::moe::routing::Router;
use crate::topology::{A2aAlgorithm, Topology};
use rand_chacha::ChaCha8Rng;

/// Iterations of routing drawn before serving to plan static EPLB (its load profile): 16 x
/// 256 tokens per rank x top-8 puts ~1,000 picks per expert into the profile at EP8 (more at
/// wider EP), so its sampling noise (~3%) stays well below the calibrated popularity skew.
const PROFILE_ITERATIONS: u64 = 16;
/// Tokens per rank in each profiling iteration: TensorRT-LLM wide-EP's max batch
/// (reference section 4).
const PROFILE_TOKENS_PER_RANK: u64 = 256;

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
    let mut seconds = 0.0;
    for _ in 0..CAPACITY_ITERATIONS {
        seconds += pricer.price(&ranks)?.seconds;
    }
    let tokens = (chunk * chunks) as f64 * ranks.len() as f64 * CAPACITY_ITERATIONS as f64;
    Ok(tokens / seconds.max(1e-12))
}

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

/// What one DP rank runs in the iteration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RankWork {
    /// Requests decoding.
    pub batch: u64,
    /// Their mean context, tokens.
    pub context: u64,
    pub chunks: Vec<PrefillChunk>,
}

impl RankWork {
    fn tokens(&self, drafts: u64) -> u64 {
        self.batch * (1 + drafts) + self.chunks.iter().map(|c| c.tokens).sum::<u64>()
    }

    /// Two halves for two micro-batches: decoding requests by count, prompt tokens at
    /// their midpoint, splitting the one chunk that straddles it (its second part keeps
    /// the first as prefix). SGLang's two-batch overlap splits by tokens the same way
    /// (`--tbo-token-distribution-threshold`, reference engines.md).
    fn halves(&self) -> [RankWork; 2] {
        let mut h = [RankWork::default(), RankWork::default()];
        h[0].batch = self.batch.div_ceil(2);
        h[1].batch = self.batch / 2;
        let total: u64 = self.chunks.iter().map(|c| c.tokens).sum();
        let mut room = total.div_ceil(2);
        for c in &self.chunks {
            let first = c.tokens.min(room);
            room -= first;
            if first > 0 {
                h[0].chunks.push(PrefillChunk {
                    tokens: first,
                    prefix: c.prefix,
                });
            }
            if first < c.tokens {
                h[1].chunks.push(PrefillChunk {
                    tokens: c.tokens - first,
                    prefix: c.prefix + first,
                });
            }
        }
        for half in &mut h {
            half.context = self.context;
        }
        h
    }
}

/// An iteration's price and what went into it, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Price {
    pub seconds: f64,
    /// Slowest rank's work outside the routed experts.
    pub dense_s: f64,
    /// Routed GroupGEMM of the slowest rank, all MoE layers.
    pub moe_s: f64,
    /// Dispatch and combine, all MoE layers.
    pub all_to_all_s: f64,
    /// Time serving waited for EPLB weight moves.
    pub eplb_stall_s: f64,
    /// Mean over the sampled layers of (max - mean) / mean routed tokens per GPU.
    pub rank_imbalance: f64,
}

/// One pass of all ranks in lock step, seconds, all layers together.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Pass {
    /// Slowest rank's work outside the routed experts.
    dense_s: f64,
    /// Of which inside the MoE layers (what interleaves with the all-to-all).
    layer_dense_s: f64,
    /// Routed GroupGEMM of the slowest rank.
    moe_s: f64,
    dispatch_s: f64,
    combine_s: f64,
    /// The MTP draft layers' all-to-alls.
    draft_a2a_s: f64,
    rank_imbalance: f64,
}

impl Pass {
    fn micro_batch(&self) -> MicroBatch {
        MicroBatch {
            attention_s: self.layer_dense_s,
            experts_s: self.moe_s,
            dispatch_s: self.dispatch_s,
            combine_s: self.combine_s,
            serial_s: self.dense_s - self.layer_dense_s + self.draft_a2a_s,
        }
    }

    fn price(&self, seconds: f64) -> Price {
        Price {
            seconds,
            dense_s: self.dense_s,
            moe_s: self.moe_s,
            all_to_all_s: self.dispatch_s + self.combine_s + self.draft_a2a_s,
            eplb_stall_s: 0.0,
            rank_imbalance: self.rank_imbalance,
        }
    }
}

pub struct Pricer<'a> {
    model: &'a ModelConfig,
    instance: &'a InstanceSpec,
    kernels: Kernels<'a>,
    memo: TokenPartMemo,
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
    unobserved: Vec<Vec<u64>>,
    unobserved_iterations: u64,
    rng: ChaCha8Rng,
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
        let mut profile = vec![vec![0.0; shape.experts]; layers];
        let tokens = PROFILE_TOKENS_PER_RANK * instance.ep();
        for _ in 0..PROFILE_ITERATIONS {
            for (sum, router) in profile.iter_mut().zip(&routers) {
                policy::add_counts(sum, &router.sample(tokens, &mut profile_rng), 1.0);
            }
        }
        let placement = policy.initial(&profile).map_err(|e| e.0)?;
        let hidden = model.hidden_size as f64;
        let group = EpGroup::new(topo, expert_gpus);
        let mut pricer = Pricer {
            model,
            instance,
            kernels: Kernels::for_gpu(&instance.gpu)?,
            memo: TokenPartMemo::default(),
            all_to_all: instance.dp_ranks() > 1 && instance.expert_ranks() > 1,
            mtp,
            overlap: instance.micro_batch_overlap,
            comm_sm_share: f64::from(overlap::communication_sms(instance.all_to_all.algorithm))
                / f64::from(instance.gpu.sms.max(1)),
            rank_domain: group.domain_ordinals(),
            misses: Vec::new(),
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
            unobserved_iterations: 0,
            rng,
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
        self.routers = routers_for(self.model, &self.popularity.at(self.iteration))?;
        self.find_misses();
        Ok(())
    }

    /// Recomputes [`Self::misses`] for the current placement.
    fn find_misses(&mut self) {
        let per_rank = self.placement.slots_per_rank();
        let domains = self.group.domains();
        let ep = self.instance.expert_ranks();
        self.misses = (self.routers.iter().enumerate())
            .map(|(layer, router)| {
                let slot_expert = self.placement.phy2log(layer);
                let rank: Vec<usize> = (0..slot_expert.len()).map(|s| s / per_rank).collect();
                let domain: Vec<usize> = rank.iter().map(|&r| self.rank_domain[r]).collect();
                (
                    router.miss_chances(slot_expert, &rank, ep),
                    router.miss_chances(slot_expert, &domain, domains),
                )
            })
            .collect();
    }

    /// Prices one iteration in which DP rank r runs `ranks[r]`.
    pub fn price(&mut self, ranks: &[RankWork]) -> Result<Price, String> {
        self.drift()?;
        let (mut price, counts) = if self.overlap {
            let halves: Vec<[RankWork; 2]> = ranks.iter().map(RankWork::halves).collect();
            let a: Vec<RankWork> = halves.iter().map(|h| h[0].clone()).collect();
            let b: Vec<RankWork> = halves.iter().map(|h| h[1].clone()).collect();
            let (pa, mut counts) = self.lockstep(&a);
            let (pb, more) = self.lockstep(&b);
            for (sum, extra) in counts.iter_mut().zip(more) {
                for (x, y) in sum.iter_mut().zip(extra) {
                    *x += y;
                }
            }
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
            (price, counts)
        } else {
            let (p, counts) = self.lockstep(ranks);
            (p.price(p.micro_batch().alone_s()), counts)
        };
        price.eplb_stall_s = self.replan(&counts, price.seconds)?;
        price.seconds += price.eplb_stall_s;
        Ok(price)
    }

    /// One pass of all ranks in lock step (one micro-batch), and the routed counts
    /// `[sampled layer][expert]` it drew.
    fn lockstep(&mut self, ranks: &[RankWork]) -> (Pass, Vec<Vec<u64>>) {
        let (model, inst) = (self.model, self.instance);
        let d = &inst.plan.deployment;
        let moe_layers = model.moe_layers() as f64;
        let drafts = self.mtp.drafts;
        let mut pass = Pass::default();
        let mut tokens = 0;
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
            tokens += work.tokens(drafts);
        }
        let ep = inst.expert_ranks();
        let per_rank = self.placement.slots_per_rank();
        let mut counts = Vec::with_capacity(self.routers.len());
        let shape = MoeShape::of(model, d.expert_precision);
        for (layer, router) in self.routers.iter().enumerate() {
            let c = router.sample(tokens, &mut self.rng);
            let slots = self.placement.phy2log(layer);
            let mut replicas = vec![0u64; c.len()];
            for &e in slots {
                replicas[e] += 1;
            }
            let slot_tokens: Vec<f64> = slots
                .iter()
                .map(|&e| c[e] as f64 / replicas[e] as f64)
                .collect();
            let mut slowest = 0.0f64;
            let mut loads = Vec::with_capacity(ep);
            let mut rows = Vec::with_capacity(per_rank);
            for rank in slot_tokens.chunks(per_rank) {
                rows.clear();
                rows.extend(rank.iter().map(|x| x.round() as u64));
                let t = self
                    .kernels
                    .routed_moe_split_seconds(shape, &rows, inst.moe_tp);
                slowest = slowest.max(t);
                loads.push(rank.iter().sum::<f64>());
            }
            let mean = loads.iter().sum::<f64>() / ep as f64;
            if mean > 0.0 {
                pass.rank_imbalance += (loads.iter().copied().fold(0.0, f64::max) - mean) / mean;
            }
            pass.moe_s += slowest;
            if tokens > 0 && self.all_to_all {
                let (dispatch_s, combine_s) = self.all_to_all_seconds(layer, &slot_tokens, tokens);
                pass.dispatch_s += dispatch_s;
                pass.combine_s += combine_s;
            }
            counts.push(c);
        }
        let sampled = self.routers.len().max(1) as f64;
        pass.moe_s *= moe_layers / sampled;
        pass.dispatch_s *= moe_layers / sampled;
        pass.combine_s *= moe_layers / sampled;
        pass.rank_imbalance /= sampled;
        // MTP drafts run one MoE layer each: their all-to-alls cost at least the floors.
        if tokens > 0 && self.all_to_all {
            pass.draft_a2a_s = drafts as f64 * (self.floors_s.0 + self.floors_s.1);
        }
        (pass, counts)
    }

    /// One layer's dispatch and combine, floors included, when `slot_tokens[s]` of the
    /// group's `tokens` go to slot s. Which ranks and domains a token reaches comes from
    /// the routing model (a token's experts cluster in its few groups); how many copies
    /// go where, from this iteration's draw.
    fn all_to_all_seconds(&self, layer: usize, slot_tokens: &[f64], tokens: u64) -> (f64, f64) {
        let ep = self.instance.expert_ranks();
        let per_rank = self.placement.slots_per_rank();
        let picks: Vec<f64> = slot_tokens.iter().map(|x| x / tokens as f64).collect();
        let expert_rank: Vec<usize> = (0..slot_tokens.len()).map(|s| s / per_rank).collect();
        let (rank_miss, domain_miss) = &self.misses[layer];
        let traffic = |bytes_per_token| ExpectedTraffic {
            picks: &picks,
            expert_rank: &expert_rank,
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

    /// Shows the draw to the placement policy; returns how long serving waits for the
    /// weights it moves: all of a blocking GPU-to-GPU move, or the part of a background
    /// host copy that the iteration (`iteration_s`) does not hide.
    fn replan(&mut self, counts: &[Vec<u64>], iteration_s: f64) -> Result<f64, String> {
        for (sum, layer) in self.unobserved.iter_mut().zip(counts) {
            for (x, &c) in sum.iter_mut().zip(layer) {
                *x += c;
            }
        }
        self.unobserved_iterations += 1;
        if self.unobserved_iterations < self.observe_every {
            return Ok(0.0);
        }
        self.unobserved_iterations = 0;
        let seen = std::mem::replace(
            &mut self.unobserved,
            vec![vec![0; counts.first().map_or(0, Vec::len)]; counts.len()],
        );
        let Some(m) = self
            .policy
            .observe(&seen, &mut self.placement)
            .map_err(|e| e.0)?
        else {
            return Ok(0.0);
        };
        self.find_misses();
        Ok(self.migration_stall_s(&m, iteration_s))
    }

    /// How long serving waits for a re-plan's weights, counted over the real layers: the
    /// re-planned representative layers stand for their share of them, each real layer
    /// moving what its representative did (`layer_bytes` on the busiest rank).
    fn migration_stall_s(&self, m: &Migration, iteration_s: f64) -> f64 {
        let replanned = m.layers_replanned.max(1) as f64;
        let most = m.changed_slots_per_rank.iter().copied().max().unwrap_or(0) as f64;
        let layer_bytes = most / replanned * self.expert_bytes;
        let real_per_sampled = self.model.moe_layers() as f64 / self.routers.len().max(1) as f64;
        match m.transport {
            // Every real layer at once; serving waits.
            Transport::NvlinkBlocking if self.nvlink_bps > 0.0 => {
                replanned * real_per_sampled * layer_bytes / self.nvlink_bps
            }
            // Each iteration since the last observation copied its layers from host memory,
            // hidden behind that iteration as far as it lasts.
            Transport::HostBackground if self.host_bps > 0.0 => {
                let copy_s = self.copied_layers_per_iteration * layer_bytes / self.host_bps;
                self.observe_every as f64 * (copy_s - iteration_s).max(0.0)
            }
            _ => 0.0,
        }
    }
}

/// Layer-wise online EPLB over a few representative layers: a real layer is re-planned every
/// `moe_layers / layers_per_iteration` iterations, so each representative layer must be
/// too, from as many iterations of counts. The policy sees the counts of `stride`
/// iterations at once, with the per-iteration decay compounded over them. Periodic
/// re-plans count iterations and need no change.
fn observe_stride(online: OnlineStyle, moe_layers: u64, sampled: usize) -> (OnlineStyle, u64) {
    match online {
        OnlineStyle::Layerwise {
            layers_per_iteration,
            decay,
        } => {
            let per_iteration = (sampled * layers_per_iteration.max(1)) as u64;
            let stride = (moe_layers / per_iteration).max(1);
            let style = OnlineStyle::Layerwise {
                layers_per_iteration,
                decay: decay.powi(stride as i32),
            };
            (style, stride)
        }
        periodic => (periodic, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moe::policy::EplbMode;
    use crate::topology::A2aAlgorithm;

    #[test]
    fn micro_batches_split_requests_by_count_and_prompts_by_tokens() {
        let chunk = |tokens, prefix| PrefillChunk { tokens, prefix };
        let work = RankWork {
            batch: 5,
            context: 900,
            chunks: vec![chunk(1000, 0), chunk(300, 64)],
        };
        let [a, b] = work.halves();
        assert_eq!((a.batch, b.batch), (3, 2));
        assert_eq!(a.chunks, vec![chunk(650, 0)]);
        assert_eq!(b.chunks, vec![chunk(350, 650), chunk(300, 64)]);
        assert_eq!((a.context, b.context), (900, 900));
        let one = RankWork {
            chunks: vec![chunk(8192, 0)],
            ..RankWork::default()
        };
        let [a, b] = one.halves();
        assert_eq!(
            (a.chunks, b.chunks),
            (vec![chunk(4096, 0)], vec![chunk(4096, 4096)])
        );
    }

    #[test]
    fn representative_layers_are_replanned_as_often_as_real_ones() {
        let layerwise = OnlineStyle::Layerwise {
            layers_per_iteration: 2,
            decay: 0.9,
        };
        let (style, stride) = observe_stride(layerwise, 58, 4);
        assert_eq!(
            stride, 7,
            "58 layers, 2 a step: each every 29 steps; 4 layers: every 7 x 4"
        );
        let OnlineStyle::Layerwise { decay, .. } = style else {
            panic!("still layer-wise")
        };
        assert!((decay - 0.9f64.powi(7)).abs() < 1e-12);
        let periodic = OnlineStyle::Periodic {
            every: 100,
            window: 100,
        };
        assert_eq!(observe_stride(periodic, 58, 4), (periodic, 1));
    }

    /// One tensor-parallel group spanning the EP group (TP8 attention, EP8 experts; the
    /// measured HGX B200 run at concurrency 15): every rank holds every token, so nothing
    /// is dispatched; the group's all-reduces are in the layer's price instead.
    #[test]
    fn a_tensor_parallel_group_spanning_the_ep_group_has_no_all_to_all() {
        let file = crate::testing::repo(
            "validation/silicon-e2e-b200/scenarios/b200-04-nvfp4-disagg-1024x1024-c15.yaml",
        );
        let q = crate::serving::scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let sc = &q.scenario;
        let decode = sc
            .instances
            .iter()
            .find(|i| i.name.starts_with("decode"))
            .unwrap();
        assert_eq!((decode.dp_ranks(), decode.gpus.len()), (1, 8));
        let streams = RandomStreams::new(1);
        let mut pricer = pricer_for(&q, decode, false, &streams);
        let work = [RankWork {
            batch: 3,
            context: 1500,
            chunks: Vec::new(),
        }];
        let price = pricer.price(&work).unwrap();
        assert_eq!(price.all_to_all_s, 0.0);
        assert!(price.moe_s > 0.0 && price.dense_s > 0.0);
    }

    /// SGLang's H100 deployment (validation/scenarios/sglang-h100-96.yaml): its decode
    /// instance runs DeepEP's low-latency kernels, its prefill instance the normal ones.
    fn sglang() -> crate::serving::scenario::LoadedScenario {
        let file = crate::testing::repo("validation/scenarios/sglang-h100-96.yaml");
        crate::serving::scenario::load(&file).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mean seconds of `n` iterations of `instance` running `work` on every DP rank.
    fn mean_seconds(
        q: &crate::serving::scenario::LoadedScenario,
        instance: &InstanceSpec,
        overlap: bool,
        work: &RankWork,
    ) -> (f64, Price) {
        let streams = RandomStreams::new(1);
        let mut pricer = pricer_for(q, instance, overlap, &streams);
        let work = vec![work.clone(); instance.dp_ranks()];
        let n = 10;
        let mut last = Price::default();
        let mut sum = 0.0;
        for _ in 0..n {
            last = pricer.price(&work).unwrap();
            sum += last.seconds;
        }
        (sum / n as f64, last)
    }

    /// Reference section 6: two-batch overlap loses at 32 decode tokens per GPU and gains
    /// at 256, but less than perfect overlap (max of compute and communication) would.
    #[test]
    fn two_batch_overlap_loses_at_small_decode_batches_and_gains_less_than_perfect_at_large() {
        let q = sglang();
        let decode = q
            .scenario
            .instances
            .iter()
            .find(|i| i.name == "decode")
            .unwrap();
        assert_eq!(decode.all_to_all.algorithm, A2aAlgorithm::LowLatency);
        let at = |batch| {
            let work = RankWork {
                batch,
                context: 2000,
                chunks: Vec::new(),
            };
            let (serial_s, p) = mean_seconds(&q, decode, false, &work);
            let (overlapped_s, _) = mean_seconds(&q, decode, true, &work);
            let perfect_s = (p.dense_s + p.moe_s).max(p.all_to_all_s);
            (serial_s, overlapped_s, perfect_s)
        };
        let (serial, overlapped, _) = at(32);
        assert!(
            overlapped > serial,
            "a loss at 32: {overlapped} vs {serial}"
        );
        let (serial, overlapped, perfect) = at(256);
        assert!(
            overlapped < serial,
            "a gain at 256: {overlapped} vs {serial}"
        );
        assert!(
            overlapped > 1.05 * perfect,
            "{overlapped} vs perfect {perfect}"
        );
    }

    /// The SMs DeepEP's normal kernels hold (20 of an H100's 132) slow the compute beside
    /// them: the same overlapped prefill with the share set to zero is faster.
    #[test]
    fn communication_that_holds_sms_slows_the_overlapped_compute() {
        let q = sglang();
        let prefill = q
            .scenario
            .instances
            .iter()
            .find(|i| i.name == "prefill")
            .unwrap();
        assert_eq!(prefill.all_to_all.algorithm, A2aAlgorithm::Hierarchical);
        let chunk = PrefillChunk {
            tokens: 8192,
            prefix: 0,
        };
        let work = RankWork {
            chunks: vec![chunk],
            ..RankWork::default()
        };
        let (holding_s, _) = mean_seconds(&q, prefill, true, &work);
        let mut free = pricer_for(&q, prefill, true, &RandomStreams::new(1));
        assert!((free.comm_sm_share - 20.0 / 132.0).abs() < 1e-12);
        free.comm_sm_share = 0.0;
        let work = vec![work; prefill.dp_ranks()];
        let free_s = (0..10)
            .map(|_| free.price(&work).unwrap().seconds)
            .sum::<f64>()
            / 10.0;
        assert!(holding_s > 1.02 * free_s, "{holding_s} vs {free_s}");
    }

    /// Static EPLB plans from statistics gathered before serving. While popularity stays
    /// put they keep describing it and static is about as good as online; when it drifts
    /// (`moe.drift_period_iterations`), static falls behind and online keeps up.
    #[test]
    fn drifting_popularity_separates_static_from_online_eplb() {
        let mut q = quickstart();
        let decode = q.scenario.instances[1].clone();
        assert_eq!((decode.eplb, decode.slots), (EplbMode::Static, 288));
        let imbalance = |q: &crate::serving::scenario::LoadedScenario, eplb| {
            let spec = InstanceSpec {
                eplb,
                ..decode.clone()
            };
            let streams = RandomStreams::new(1);
            let mut pricer = pricer_for(q, &spec, false, &streams);
            let work = vec![
                RankWork {
                    batch: 64,
                    context: 1500,
                    chunks: Vec::new(),
                };
                spec.dp_ranks()
            ];
            let n = 600;
            (0..n)
                .map(|_| pricer.price(&work).unwrap().rank_imbalance)
                .sum::<f64>()
                / n as f64
        };
        let (fixed_static, fixed_online) = (
            imbalance(&q, EplbMode::Static),
            imbalance(&q, EplbMode::Online),
        );
        assert!(
            (fixed_static / fixed_online - 1.0).abs() < 0.25,
            "no drift: static {fixed_static} vs online {fixed_online}"
        );
        q.scenario.moe.drift_period_iterations = 100;
        let (drift_static, drift_online) = (
            imbalance(&q, EplbMode::Static),
            imbalance(&q, EplbMode::Online),
        );
        assert!(
            drift_static > 1.5 * drift_online,
            "drift: static {drift_static} vs online {drift_online}"
        );
        assert!(
            drift_static > 1.3 * fixed_static,
            "{drift_static} vs {fixed_static}"
        );
    }

    /// EPLB's weight moves count the real layers, not the sampled ones: the stalls of
    /// periodic GPU-to-GPU re-placement and of layer-wise host copies barely move when
    /// 4 or 16 representative layers stand for DeepSeek-R1's 58.
    #[test]
    fn eplb_migration_counts_every_real_layer() {
        let mut q = quickstart();
        let decode = InstanceSpec {
            eplb: EplbMode::Online,
            ..q.scenario.instances[1].clone()
        };
        q.scenario.moe.drift_period_iterations = 200;
        // `host_gb_s`: a slow host link, so that the copies show.
        let stall =
            |q: &mut crate::serving::scenario::LoadedScenario, online, sampled, host_gb_s: f64| {
                q.scenario.moe.online = online;
                q.scenario.moe.sampled_layers = sampled;
                let streams = RandomStreams::new(1);
                let mut pricer = pricer_for(q, &decode, false, &streams);
                if host_gb_s > 0.0 {
                    pricer.host_bps = host_gb_s * 1e9;
                }
                let work = vec![
                    RankWork {
                        batch: 256,
                        context: 1500,
                        chunks: Vec::new(),
                    };
                    decode.dp_ranks()
                ];
                (0..400)
                    .map(|_| pricer.price(&work).unwrap().eplb_stall_s)
                    .sum::<f64>()
            };
        let periodic = OnlineStyle::Periodic {
            every: 100,
            window: 100,
        };
        let (four, sixteen) = (
            stall(&mut q, periodic, 4, 0.0),
            stall(&mut q, periodic, 16, 0.0),
        );
        assert!(
            four > 0.0 && (four / sixteen - 1.0).abs() < 0.3,
            "{four} vs {sixteen}"
        );
        // Host copies of one layer per iteration hide behind the ~50 ms iterations over
        // Grace's NVLink-C2C; over a 1 GB/s link they do not, and every iteration waits.
        let layerwise = OnlineStyle::Layerwise {
            layers_per_iteration: 1,
            decay: 0.95,
        };
        assert_eq!(stall(&mut q, layerwise, 4, 0.0), 0.0);
        let (four, sixteen) = (
            stall(&mut q, layerwise, 4, 1.0),
            stall(&mut q, layerwise, 16, 1.0),
        );
        assert!(
            four > 1.0 && (four / sixteen - 1.0).abs() < 0.3,
            "{four} vs {sixteen}"
        );
    }

    /// A pricer for `instance` of the loaded scenario `q`, with two micro-batches or not.
    fn pricer_for<'a>(
        q: &'a crate::serving::scenario::LoadedScenario,
        instance: &InstanceSpec,
        overlap: bool,
        streams: &RandomStreams,
    ) -> Pricer<'a> {
        let sc = &q.scenario;
        // Leaked: a test's pricer borrows its instance for the test's whole life.
        let instance = Box::leak(Box::new(InstanceSpec {
            micro_batch_overlap: overlap,
            ..instance.clone()
        }));
        Pricer::new(&q.topology, &q.model, instance, &sc.moe, sc.mtp, streams).unwrap()
    }

    fn quickstart() -> crate::serving::scenario::LoadedScenario {
        crate::serving::scenario::load(&crate::testing::repo("scenarios/quickstart.yaml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn routed_tokens_sum_to_tokens_times_top_k_and_imbalance_slows_the_moe() {
        let q = quickstart();
        let sc = &q.scenario;
        let decode = &sc.instances[1];
        let streams = RandomStreams::new(1);
        let mut pricer = pricer_for(&q, decode, false, &streams);
        let work = vec![
            RankWork {
                batch: 16,
                context: 1500,
                chunks: Vec::new(),
            };
            decode.dp_ranks()
        ];
        let (price, counts) = pricer.lockstep(&work);
        let tokens = 16 * 2 * decode.dp_ranks() as u64;
        assert_eq!(counts.len(), sc.moe.sampled_layers);
        for layer in &counts {
            assert_eq!(
                layer.iter().sum::<u64>(),
                tokens * q.model.moe.experts_per_token
            );
        }
        assert!(price.rank_imbalance > 0.0);
        assert!(
            price.dispatch_s + price.combine_s > 58.0 * 50e-6,
            "at least the floors"
        );
        // Two micro-batches hide communication behind compute but read the weights twice
        // and pay the all-to-all floors twice: a loss at small batches, a gain at large. On
        // the measured fused MoE (GB200, EP32) the gain needs a batch whose experts are
        // compute-bound: 8,192 tokens take 188 us, 16,384 take 305 us, so at 256 requests
        // per rank the two halves (376 us) still cost more than one pass.
        let serial_and_overlapped = |batch: u64| {
            let work = vec![
                RankWork {
                    batch,
                    context: 1500,
                    chunks: Vec::new(),
                };
                decode.dp_ranks()
            ];
            let price = |overlap| {
                pricer_for(&q, decode, overlap, &streams)
                    .price(&work)
                    .unwrap()
            };
            (price(false), price(true))
        };
        let (serial, overlapped) = serial_and_overlapped(4);
        assert!(overlapped.seconds > serial.seconds);
        assert!(overlapped.moe_s > serial.moe_s);
        let (serial, overlapped) = serial_and_overlapped(1024);
        assert!(
            overlapped.seconds < serial.seconds,
            "{overlapped:?}\n{serial:?}"
        );
        assert!(overlapped.seconds >= overlapped.all_to_all_s);
    }
}
