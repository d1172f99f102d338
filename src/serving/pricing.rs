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
//! draws. With two micro-batches, each half is priced on its own and communication hides
//! behind compute: the iteration costs the larger of the two sums.

use super::scenario::{InstanceSpec, MoeSettings, Mtp};
use crate::cost::collective::{self, EpGroup, ExpectedTraffic, Phase};
use crate::cost::kernels::Kernels;
use crate::cost::network::LinkEfficiency;
use crate::cost::profile::MoeShape;
use crate::cost::step::{PrefillChunk, StepLoad, TokenPartMemo, iteration_seconds};
use crate::engine::RandomStreams;
use crate::model::{ModelConfig, Precision, Usage};
use crate::moe::placement::Placement;
use crate::moe::policy::{self, OnlineStyle, PlacementPolicy, Shape, Transport};
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

    /// Two halves for two micro-batches: requests and chunks dealt alternately.
    fn halves(&self) -> [RankWork; 2] {
        let mut h = [RankWork::default(), RankWork::default()];
        h[0].batch = self.batch.div_ceil(2);
        h[1].batch = self.batch / 2;
        for (i, c) in self.chunks.iter().enumerate() {
            h[i % 2].chunks.push(*c);
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

pub struct Pricer<'a> {
    model: &'a ModelConfig,
    instance: &'a InstanceSpec,
    kernels: Kernels<'a>,
    memo: TokenPartMemo,
    /// Whether tokens leave their GPU for the experts: not with one GPU, nor when one
    /// tensor-parallel group spans the EP group (every rank holds every token; the group's
    /// all-reduces, priced with the layer, sum the experts' outputs).
    all_to_all: bool,
    mtp: Mtp,
    overlap: bool,
    group: EpGroup<'a>,
    algorithm: A2aAlgorithm,
    efficiency: LinkEfficiency,
    floors_s: (f64, f64),
    bytes_per_token: (f64, f64),
    routers: Vec<Router>,
    placement: Placement,
    policy: Box<dyn PlacementPolicy>,
    /// Iterations whose counts the policy sees at once (see [`observe_stride`]).
    observe_every: u64,
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
        overlap: bool,
        streams: &RandomStreams,
    ) -> Result<Self, String> {
        let gpus: Vec<_> = instance.gpus.iter().map(|&g| topo.gpus[g]).collect();
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
            0,
            streams.stream(&format!("popularity/{name}")),
        );
        let routers = popularity
            .at(0)
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
            .collect::<Result<Vec<_>, _>>()?;
        let mut rng = streams.stream(&format!("routing/{name}"));
        let shape = Shape {
            layers,
            experts: m.routed_experts as usize,
            slots: instance.slots as usize,
            groups: m.groups as usize,
            ranks: instance.gpus.len(),
        };
        let (online, observe_every) = observe_stride(moe.online, model.moe_layers(), layers);
        let mut policy = policy::for_mode(instance.eplb, shape, online, None);
        let mut profile = vec![vec![0.0; shape.experts]; layers];
        let tokens = PROFILE_TOKENS_PER_RANK * instance.ep();
        for _ in 0..PROFILE_ITERATIONS {
            for (sum, router) in profile.iter_mut().zip(&routers) {
                policy::add_counts(sum, &router.sample(tokens, &mut rng), 1.0);
            }
        }
        let placement = policy.initial(&profile).map_err(|e| e.0)?;
        let hidden = model.hidden_size as f64;
        Ok(Pricer {
            model,
            instance,
            kernels: Kernels::for_gpu(&instance.gpu)?,
            memo: TokenPartMemo::default(),
            all_to_all: instance.dp_ranks() > 1,
            mtp,
            overlap,
            group: EpGroup::new(topo, gpus.clone()),
            algorithm: collectives.algorithm,
            efficiency,
            floors_s: (
                collectives.dispatch_latency_us * 1e-6,
                collectives.combine_latency_us * 1e-6,
            ),
            // FP8 dispatch, BF16 combine: DeepSeek's production choice (reference section 4).
            bytes_per_token: (
                Precision::Fp8.bytes(hidden, Usage::Activations),
                Precision::Bf16.bytes(hidden, Usage::Activations),
            ),
            routers,
            placement,
            policy,
            observe_every,
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
        })
    }

    /// Prices one iteration in which DP rank r runs `ranks[r]`.
    pub fn price(&mut self, ranks: &[RankWork]) -> Result<Price, String> {
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
            let compute = pa.dense_s + pa.moe_s + pb.dense_s + pb.moe_s;
            let comm = pa.all_to_all_s + pb.all_to_all_s;
            let price = Price {
                seconds: compute.max(comm),
                dense_s: pa.dense_s + pb.dense_s,
                moe_s: pa.moe_s + pb.moe_s,
                all_to_all_s: comm,
                eplb_stall_s: 0.0,
                rank_imbalance: (pa.rank_imbalance + pb.rank_imbalance) / 2.0,
            };
            (price, counts)
        } else {
            let (p, counts) = self.lockstep(ranks);
            let seconds = p.dense_s + p.moe_s + p.all_to_all_s;
            (Price { seconds, ..p }, counts)
        };
        price.eplb_stall_s = self.replan(&counts, price.seconds)?;
        price.seconds += price.eplb_stall_s;
        Ok(price)
    }

    /// One pass of all ranks in lock step (one micro-batch), and the routed counts
    /// `[sampled layer][expert]` it drew.
    fn lockstep(&mut self, ranks: &[RankWork]) -> (Price, Vec<Vec<u64>>) {
        let (model, inst) = (self.model, self.instance);
        let d = &inst.plan.deployment;
        let moe_layers = model.moe_layers() as f64;
        let drafts = self.mtp.drafts;
        let mut dense_s = 0.0f64;
        let mut tokens = 0;
        for work in ranks.iter().filter(|w| w.tokens(drafts) > 0) {
            let load = StepLoad {
                batch: work.batch,
                context: work.context,
                mtp: drafts,
                prefill: &work.chunks,
            };
            let (seconds, routed_main_s) =
                iteration_seconds(model, &self.kernels, d, &load, &mut self.memo);
            // Its routed experts as if routing were balanced: replaced below by the draw.
            dense_s = dense_s.max(seconds - routed_main_s);
            tokens += work.tokens(drafts);
        }
        let ep = inst.gpus.len();
        let per_rank = self.placement.slots_per_rank();
        let (mut moe_s, mut a2a_s, mut imbalance) = (0.0, 0.0, 0.0);
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
                let t = self.kernels.routed_moe_seconds(shape, &rows);
                slowest = slowest.max(t);
                loads.push(rank.iter().sum::<f64>());
            }
            let mean = loads.iter().sum::<f64>() / ep as f64;
            if mean > 0.0 {
                imbalance += (loads.iter().copied().fold(0.0, f64::max) - mean) / mean;
            }
            moe_s += slowest;
            if tokens > 0 && self.all_to_all {
                let picks: Vec<f64> = slot_tokens.iter().map(|x| x / tokens as f64).collect();
                let expert_rank: Vec<usize> = (0..slots.len()).map(|s| s / per_rank).collect();
                let traffic = |bytes_per_token| ExpectedTraffic {
                    picks: &picks,
                    expert_rank: &expert_rank,
                    tokens_per_rank: tokens as f64 / ep as f64,
                    bytes_per_token,
                };
                let (dispatch, combine) = self.bytes_per_token;
                a2a_s += self.floors_s.0
                    + self.floors_s.1
                    + collective::expected_fast_path_seconds(
                        &self.group,
                        traffic(dispatch),
                        self.algorithm,
                        Phase::Dispatch,
                        self.efficiency,
                    )
                    + collective::expected_fast_path_seconds(
                        &self.group,
                        traffic(combine),
                        self.algorithm,
                        Phase::Combine,
                        self.efficiency,
                    );
            }
            counts.push(c);
        }
        let sampled = self.routers.len().max(1) as f64;
        // MTP drafts run one MoE layer each: their all-to-alls cost at least the floors.
        let draft_a2a = if tokens > 0 && self.all_to_all {
            drafts as f64 * (self.floors_s.0 + self.floors_s.1)
        } else {
            0.0
        };
        let price = Price {
            seconds: 0.0,
            dense_s,
            moe_s: moe_s / sampled * moe_layers,
            all_to_all_s: a2a_s / sampled * moe_layers + draft_a2a,
            eplb_stall_s: 0.0,
            rank_imbalance: imbalance / sampled,
        };
        (price, counts)
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
        let most = m.changed_slots_per_rank.iter().copied().max().unwrap_or(0) as f64;
        let bytes = most * self.expert_bytes;
        Ok(match m.transport {
            Transport::NvlinkBlocking if self.nvlink_bps > 0.0 => bytes / self.nvlink_bps,
            Transport::HostBackground if self.host_bps > 0.0 => {
                (bytes / self.host_bps - iteration_s).max(0.0)
            }
            _ => 0.0,
        })
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

    /// A pricer for `instance` of the loaded scenario `q`.
    fn pricer_for<'a>(
        q: &'a crate::serving::scenario::LoadedScenario,
        instance: &'a InstanceSpec,
        overlap: bool,
        streams: &RandomStreams,
    ) -> Pricer<'a> {
        let sc = &q.scenario;
        Pricer::new(
            &q.topology,
            &q.model,
            instance,
            &sc.moe,
            sc.mtp,
            overlap,
            streams,
        )
        .unwrap()
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
        assert!(price.all_to_all_s > 58.0 * 50e-6, "at least the floors");
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
