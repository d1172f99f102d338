//! The pricer against the mechanisms it models.

use super::*;
use crate::cost::step::PrefillChunk;
use crate::moe::policy::EplbMode;
use crate::topology::A2aAlgorithm;

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
    // Online EPLB, so that the draws keep their counts (priced again when experts move).
    let online = InstanceSpec {
        eplb: EplbMode::Online,
        ..decode.clone()
    };
    let mut pricer = pricer_for(&q, &online, false, &streams);
    let work = vec![
        RankWork {
            batch: 16,
            context: 1500,
            chunks: Vec::new(),
        };
        decode.dp_ranks()
    ];
    let price = pricer.lockstep(&work);
    // 2,048 tokens: a grid point, where each sampled layer keeps the draw just made.
    let tokens = 16 * 2 * decode.dp_ranks() as u64;
    assert_eq!(pricer.routers.len(), sc.moe.sampled_layers);
    for layer in 0..sc.moe.sampled_layers {
        let kept = pricer.draws.kept_draws(layer, tokens);
        assert_eq!(kept.len(), 1);
        assert_eq!(
            kept[0].counts.iter().sum::<u64>(),
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

/// Replayed draws see the ranks as unevenly loaded as fresh draws do on average, at a
/// token count between grid points too, while iterations of another size come between
/// (each replays draws of its own size: fewer tokens, more imbalance): over 3,000
/// iterations of a static instance the mean rank imbalance is within 2% of the mean of as
/// many fresh draws.
#[test]
fn replayed_draws_load_the_ranks_as_fresh_draws_do_on_average() {
    let q = quickstart();
    let decode = &q.scenario.instances[1];
    let streams = RandomStreams::new(4);
    let mut pricer = pricer_for(&q, decode, false, &streams);
    assert!(!pricer.policy.observes(), "static EPLB: draws are replayed");
    // 26 tokens per rank and 2 more: between two grid points (8 or 16 apart at this size).
    let mut work = vec![
        RankWork {
            batch: 13,
            context: 1500,
            chunks: Vec::new(),
        };
        decode.dp_ranks()
    ];
    work[0].batch = 14;
    let tokens: u64 = work.iter().map(|w| w.tokens(1)).sum();
    assert!(tokens >= 512 && tokens % 8 == 2, "{tokens}");
    let larger: Vec<RankWork> = work
        .iter()
        .map(|w| RankWork {
            batch: 4 * w.batch,
            ..w.clone()
        })
        .collect();
    let n = 3000;
    let (mut replayed, mut other) = (0.0, 0.0);
    for _ in 0..n {
        replayed += pricer.lockstep(&work).rank_imbalance / n as f64;
        other += pricer.lockstep(&larger).rank_imbalance / n as f64;
    }
    assert!(other < 0.8 * replayed, "{other} vs {replayed}");
    let layers = pricer.routers.len();
    let fresh = (0..n)
        .map(|_| {
            (0..layers)
                .map(|l| pricer.draw(l, tokens).rank_imbalance)
                .sum::<f64>()
                / layers as f64
        })
        .sum::<f64>()
        / n as f64;
    assert!(
        (replayed / fresh - 1.0).abs() < 0.02,
        "replayed {replayed} vs fresh {fresh}"
    );
}

/// Online EPLB's kept draws keep their counts, and one replayed after the policy moved its
/// layer's experts is priced again, from the same counts, under the new placement.
#[test]
fn kept_draws_are_priced_again_once_online_eplb_moves_their_layer() {
    let q = quickstart();
    let online = InstanceSpec {
        eplb: EplbMode::Online,
        ..q.scenario.instances[1].clone()
    };
    let streams = RandomStreams::new(2);
    let mut pricer = pricer_for(&q, &online, false, &streams);
    let routed = 96 * q.model.moe.experts_per_token;
    for _ in 0..64 {
        pricer.layer_draw(0, 96);
    }
    let before: Vec<Vec<u64>> = (pricer.draws.kept_draws(0, 96).iter())
        .map(|d| d.counts.clone())
        .collect();
    assert!(before.len() >= 4);
    assert!(before.iter().all(|c| c.iter().sum::<u64>() == routed));
    pricer.placement_moves[0] += 1;
    let mut replayed = 0;
    for _ in 0..50 {
        let d = pricer.layer_draw(0, 96);
        assert_eq!(d.placement, 1, "priced under the new placement");
        assert_eq!(d.counts.iter().sum::<u64>(), routed);
        replayed += usize::from(before.contains(&d.counts));
    }
    assert!(replayed > 10, "{replayed} of 50 replay kept counts");
}

/// Online EPLB sees every token routed as it was: tokens routed before drift rebuilds the
/// routers are drawn from the old ones, before the rebuild, not from the new ones when the
/// policy next looks.
#[test]
fn online_eplb_sees_tokens_routed_before_a_drift_under_the_routers_of_their_time() {
    let mut q = quickstart();
    // Rebuilt every 64 / 64 = 1 iteration; seen every 1,000 (periodic, 1000 / 1000).
    q.scenario.moe.drift_period_iterations = 64;
    q.scenario.moe.online = OnlineStyle::Periodic {
        every: 1000,
        window: 1000,
    };
    let online = InstanceSpec {
        eplb: EplbMode::Online,
        ..q.scenario.instances[1].clone()
    };
    let streams = RandomStreams::new(3);
    let mut pricer = pricer_for(&q, &online, false, &streams);
    assert_eq!(pricer.observe_every, 1000);
    let work = vec![
        RankWork {
            batch: 8,
            context: 1500,
            chunks: Vec::new(),
        };
        online.dp_ranks()
    ];
    let tokens: u64 = work.iter().map(|w| w.tokens(pricer.mtp.drafts)).sum();
    for _ in 0..5 {
        pricer.price(&work).unwrap();
    }
    // Four rebuilds (iterations 2-5) each drew the tokens routed before them.
    let top_k = q.model.moe.experts_per_token;
    for layer in &pricer.unobserved {
        assert_eq!(layer.iter().sum::<u64>(), 4 * tokens * top_k);
    }
    assert_eq!(
        pricer.unobserved_tokens, tokens,
        "the last iteration's, not yet drawn"
    );
}
