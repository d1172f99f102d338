//! The collectives against measured points, the general solver and each other.

use super::*;
use crate::engine::RandomStreams;
use crate::model::{Precision, Usage};
use crate::moe::traffic::destinations;

fn topo(name: &str) -> Topology {
    crate::testing::topology(name)
}

/// The shipped efficiencies (GPU family and topology files), so the calibration test
/// checks the constants the tool uses.
fn eff(t: &Topology) -> LinkEfficiency {
    LinkEfficiency::for_gpu(t, t.gpus[0]).unwrap()
}

fn a2a<'a>(
    t: &'a Topology,
    ep: usize,
    tokens: usize,
    routing: &str,
    algorithm: A2aAlgorithm,
    precision: Precision,
    phase: Phase,
) -> (Legs, EpGroup<'a>) {
    let group = EpGroup::new(t, t.gpus[..ep].to_vec());
    let mut rng = RandomStreams::new(1).stream("routing");
    let d = destinations(&routing.parse().unwrap(), ep, tokens, 256, 8, &mut rng).unwrap();
    let bytes = precision.bytes(7168.0, Usage::Activations);
    (all_to_all_legs(&group, &d, algorithm, bytes, phase), group)
}

/// Reference section 2 (TensorRT-LLM tech blog 18): GB200, EP8, 2,048 tokens per rank,
/// hidden 7,168, top-8: BF16 dispatch 311.8 us, combine 322.6 us, NVFP4 dispatch
/// 101.7 us; floors 19 / 31 us (section 1). The NVLink efficiency comes from H800
/// measurements, so these are predictions, not fits.
#[test]
fn predicts_the_gb200_calibration_points() {
    let t = topo("gb200-nvl72");
    let c = t.collectives.clone().unwrap();
    let time = |precision, phase, latency_us: f64| {
        let (legs, group) = a2a(
            &t,
            8,
            2048,
            "spread",
            A2aAlgorithm::Direct,
            precision,
            phase,
        );
        (
            latency_us + fast_path_seconds(&group, &legs, eff(group.topo)).unwrap() * 1e6,
            legs,
            group,
        )
    };
    let (dispatch, legs, group) = time(Precision::Bf16, Phase::Dispatch, c.dispatch_latency_us);
    let (combine, ..) = time(Precision::Bf16, Phase::Combine, c.combine_latency_us);
    let (nvfp4, ..) = time(Precision::Nvfp4, Phase::Dispatch, c.dispatch_latency_us);
    for (got, measured) in [(dispatch, 311.8), (combine, 322.6), (nvfp4, 101.7)] {
        assert!(
            (got / measured - 1.0).abs() < 0.02,
            "{got:.1} us vs measured {measured}"
        );
    }
    // Every token reaches all 8 ranks, 7 of them remote.
    let sent = legs.sent_by(&group.ranks);
    assert!(sent.iter().all(|&b| b == 2048.0 * 7.0 * 14_336.0));
}

/// A link's `latency_ns` reaches the fast path as the flow solver adds it (each leg's
/// route, the slowest one counting), and the serving loop's expected fast path too.
#[test]
fn link_latency_reaches_every_solver() {
    let fast = topo("h800-cluster");
    let mut slow = fast.clone();
    for link in slow.graph.edge_weights_mut() {
        if link.kind == LinkKind::Network {
            link.latency_ns = 1e6;
        }
    }
    // Two 8-GPU nodes: a cross-node route crosses two network links (NIC to switch,
    // switch to NIC).
    let crossing_s = 2e-3;
    let price = |t: &Topology| {
        let (legs, group) = a2a(
            t,
            16,
            64,
            "uniform",
            A2aAlgorithm::LowLatency,
            Precision::Fp8,
            Phase::Dispatch,
        );
        let picks = vec![8.0 / 256.0; 256];
        let expert_rank: Vec<usize> = (0..256).map(|e| e * 16 / 256).collect();
        let traffic = ExpectedTraffic {
            picks: &picks,
            expert_rank: &expert_rank,
            tokens_per_rank: 64.0,
            bytes_per_token: 7392.0,
            miss: None,
        };
        let e = eff(t);
        [
            fast_path_seconds(&group, &legs, e).unwrap(),
            solver_seconds(&group, &legs, e).unwrap(),
            expected_fast_path_seconds(
                &group,
                traffic,
                A2aAlgorithm::LowLatency,
                Phase::Dispatch,
                e,
            ),
        ]
    };
    let (before, after) = (price(&fast), price(&slow));
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let added = a - b;
        assert!(
            (added - crossing_s).abs() <= *b + 1e-12,
            "solver {i}: {b} -> {a}: added {added}, the route's latency is {crossing_s}"
        );
    }
    // The fast paths add it exactly.
    assert!((after[0] - before[0] - crossing_s).abs() < 1e-12);
    assert!((after[2] - before[2] - crossing_s).abs() < 1e-12);
}

#[test]
fn fast_path_agrees_with_the_general_solver() {
    let t = topo("gb200-nvl72");
    // EP72 too in `cargo bench --bench network` (the exact solver takes seconds there).
    for (ep, routing) in [(8, "spread"), (32, "uniform")] {
        let (legs, group) = a2a(
            &t,
            ep,
            64,
            routing,
            A2aAlgorithm::Direct,
            Precision::Fp8,
            Phase::Dispatch,
        );
        let fast = fast_path_seconds(&group, &legs, eff(group.topo)).unwrap();
        let solver = solver_seconds(&group, &legs, eff(group.topo)).unwrap();
        assert!(
            fast <= solver * (1.0 + 1e-9),
            "the fast path is a lower bound: {fast} vs {solver}"
        );
        assert!(
            solver / fast < 1.10,
            "EP{ep} {routing}: solver {solver} vs fast {fast}"
        );
    }
    let h = topo("h800-cluster");
    for algorithm in [
        A2aAlgorithm::Hierarchical,
        A2aAlgorithm::LowLatency,
        A2aAlgorithm::Direct,
    ] {
        let (legs, group) = a2a(
            &h,
            16,
            64,
            "uniform",
            algorithm,
            Precision::Fp8,
            Phase::Dispatch,
        );
        let fast = fast_path_seconds(&group, &legs, eff(group.topo)).unwrap();
        let solver = solver_seconds(&group, &legs, eff(group.topo)).unwrap();
        assert!(
            fast <= solver * (1.0 + 1e-9) && solver / fast < 1.10,
            "{algorithm:?}: {solver} vs {fast}"
        );
    }
}

/// On an oversubscribed leaf-spine fabric the leaf uplinks are ports too: the fast path
/// stays a close lower bound of the flow solver, and at 4:1 it is the slower of the
/// non-blocking time and the busiest uplink's bytes over a quarter of the leaf's NICs.
#[test]
fn fast_path_sees_oversubscribed_leaf_uplinks() {
    let at = |ratio| {
        crate::testing::topology_with(
            "hgx-h100-leaf-spine",
            &[("nodes", 4), ("leaf_nics", 16), ("oversubscription", ratio)],
        )
    };
    let (open, tight) = (at(1), at(4));
    for algorithm in [
        A2aAlgorithm::Hierarchical,
        A2aAlgorithm::LowLatency,
        A2aAlgorithm::Direct,
    ] {
        let mut fast = Vec::new();
        for t in [&open, &tight] {
            let (legs, group) = a2a(
                t,
                32,
                64,
                "uniform",
                algorithm,
                Precision::Fp8,
                Phase::Dispatch,
            );
            let f = fast_path_seconds(&group, &legs, eff(t)).unwrap();
            let solver = solver_seconds(&group, &legs, eff(t)).unwrap();
            assert!(
                f <= solver * (1.0 + 1e-9) && solver / f < 1.10,
                "{algorithm:?}: solver {solver} vs fast {f}"
            );
            fast.push((f, legs));
        }
        // Ranks 0-15 sit under leaf 0, 16-31 under leaf 1 (GPU order, 16 NICs a leaf).
        let under = |g: NodeIndex| tight.gpus.iter().position(|&x| x == g).unwrap() / 16;
        let mut crossing = [0.0f64; 2];
        for (&(a, b), &x) in &fast[1].1.0 {
            if under(a) != under(b) {
                crossing[under(a)] += x;
            }
        }
        let uplink_bps = 16.0 * 50e9 / 4.0 * eff(&tight).network;
        let leaf_s = crossing[0].max(crossing[1]) / uplink_bps;
        let expected = fast[0].0.max(leaf_s);
        assert!(
            leaf_s > fast[0].0 && (fast[1].0 / expected - 1.0).abs() < 1e-9,
            "{algorithm:?}: 4:1 {} vs {expected} (uplink {leaf_s}, 1:1 {})",
            fast[1].0,
            fast[0].0
        );
    }
}

/// The aggregate fast path against per-token legs on the same routing model.
#[test]
fn expected_fast_path_matches_per_token_legs() {
    use crate::moe::popularity::Popularity;
    use crate::moe::routing::Router;
    // (topology, EP, algorithm, groups, groups per token): DeepSeek's group-limited
    // routing (8, 4) concentrates a token on few ranks, which the misses carry.
    let cases = [
        ("gb200-nvl72", 32, A2aAlgorithm::Direct, 1, 1),
        ("gb200-nvl72", 72, A2aAlgorithm::LowLatency, 1, 1),
        ("h800-cluster", 32, A2aAlgorithm::Hierarchical, 1, 1),
        ("h800-cluster", 16, A2aAlgorithm::Direct, 1, 1),
        ("gb200-nvl72", 8, A2aAlgorithm::Direct, 8, 4),
        ("h800-cluster", 32, A2aAlgorithm::Hierarchical, 8, 4),
        ("hgx-h100-leaf-spine", 32, A2aAlgorithm::Direct, 1, 1),
        ("hgx-h100-leaf-spine", 32, A2aAlgorithm::Hierarchical, 8, 4),
        ("hgx-h100-leaf-spine", 32, A2aAlgorithm::LowLatency, 8, 4),
    ];
    for (name, ep, algorithm, groups, per_token) in cases {
        let t = if name == "hgx-h100-leaf-spine" {
            crate::testing::topology_with(
                name,
                &[("nodes", 4), ("leaf_nics", 16), ("oversubscription", 4)],
            )
        } else {
            topo(name)
        };
        let group = EpGroup::new(&t, t.gpus[..ep].to_vec());
        let mut rng = RandomStreams::new(9).stream("routing");
        let p = Popularity::Zipf { exponent: 0.6 }.draw(256, &mut rng);
        let router = Router::new(&p, 8, groups, per_token).unwrap();
        // Each expert's chance to be among a token's picks, measured by sampling.
        let samples = 200_000u64;
        let picks: Vec<f64> = router
            .sample(samples, &mut rng)
            .iter()
            .map(|&c| c as f64 / samples as f64)
            .collect();
        let expert_rank: Vec<usize> = (0..256).map(|e| e * ep / 256).collect();
        let slots: Vec<usize> = (0..256).collect();
        let rank_miss = router.miss_chances(&slots, &expert_rank, ep);
        let ordinal = group.domain_ordinals();
        let slot_domain: Vec<usize> = expert_rank.iter().map(|&r| ordinal[r]).collect();
        let domain_miss = router.miss_chances(&slots, &slot_domain, group.domains());
        let tokens = 512;
        let d: Destinations = (0..ep)
            .map(|_| {
                (0..tokens)
                    .map(|_| {
                        router
                            .pick(&mut rng)
                            .into_iter()
                            .map(|e| expert_rank[e])
                            .collect()
                    })
                    .collect()
            })
            .collect();
        for phase in [Phase::Dispatch, Phase::Combine] {
            let legs = all_to_all_legs(&group, &d, algorithm, 7392.0, phase);
            let exact = fast_path_seconds(&group, &legs, eff(group.topo)).unwrap();
            let traffic = ExpectedTraffic {
                picks: &picks,
                expert_rank: &expert_rank,
                tokens_per_rank: tokens as f64,
                bytes_per_token: 7392.0,
                miss: Some(Misses {
                    rank: &rank_miss,
                    domain: &domain_miss,
                }),
            };
            let expected =
                expected_fast_path_seconds(&group, traffic, algorithm, phase, eff(group.topo));
            assert!(
                (expected / exact - 1.0).abs() < 0.08,
                "{name} EP{ep} {algorithm:?} {phase:?}: {expected} vs {exact}"
            );
        }
    }
}

#[test]
fn hierarchical_crosses_the_network_once_per_node() {
    let h = topo("h800-cluster");
    let network_bytes = |algorithm| {
        let (legs, group) = a2a(
            &h,
            32,
            128,
            "uniform",
            algorithm,
            Precision::Fp8,
            Phase::Dispatch,
        );
        legs.0
            .iter()
            .filter(|((a, b), _)| !group.same_domain(*a, *b))
            .map(|(_, x)| x)
            .sum::<f64>()
    };
    let (hier, low, direct) = (
        network_bytes(A2aAlgorithm::Hierarchical),
        network_bytes(A2aAlgorithm::LowLatency),
        network_bytes(A2aAlgorithm::Direct),
    );
    assert!(hier < direct && direct <= low, "{hier} {direct} {low}");
    let group = EpGroup::new(&h, h.gpus[..32].to_vec());
    assert_eq!(group.domains(), 4);
}

#[test]
fn bytes_are_conserved_across_phases_and_algorithms() {
    let t = topo("gb200-nvl72");
    let (dispatch, group) = a2a(
        &t,
        16,
        100,
        "uniform",
        A2aAlgorithm::LowLatency,
        Precision::Bf16,
        Phase::Dispatch,
    );
    let (combine, _) = a2a(
        &t,
        16,
        100,
        "uniform",
        A2aAlgorithm::LowLatency,
        Precision::Bf16,
        Phase::Combine,
    );
    let total = |l: &Legs| l.0.values().sum::<f64>();
    assert_eq!(total(&dispatch), total(&combine));
    // Per (token, expert) minus the ones that stay home: 16 x 100 x 8 copies at most.
    let copies = total(&dispatch) / 14_336.0;
    assert!(copies <= 16.0 * 100.0 * 8.0 && copies > 16.0 * 100.0 * 8.0 * 0.85);
    assert_eq!(group.size(), 16);
}

#[test]
fn ring_collectives_and_kv_transfer() {
    let t = topo("hgx-h100x8");
    let ring = ring_legs(&t.gpus, 8e6, Ring::AllReduce);
    assert!(
        ring.sent_by(&t.gpus)
            .iter()
            .all(|&b| (b - 14e6).abs() < 1e-6),
        "2 (n-1)/n of 8 MB"
    );
    let gather = ring_legs(&t.gpus, 8e6, Ring::AllGather);
    assert!(
        gather
            .sent_by(&t.gpus)
            .iter()
            .all(|&b| (b - 7e6).abs() < 1e-6)
    );
    assert_eq!(
        ring_legs(&t.gpus[..1], 8e6, Ring::ReduceScatter),
        Legs::default()
    );
    let group = EpGroup::new(&t, t.gpus.clone());
    // One ring step over NVLink: 14 MB at 450 GB/s x the Hopper NVLink efficiency.
    let s = fast_path_seconds(&group, &ring, eff(&t)).unwrap();
    assert!((s - 14e6 / (450e9 * eff(&t).nvlink)).abs() < 1e-12);
    let kv = kv_transfer_legs(&t.gpus[..2], &t.gpus[4..8], 1e9);
    assert_eq!(kv.transfers().len(), 2);
    assert_eq!(kv.sent_by(&t.gpus[..2]), vec![5e8, 5e8]);
}
