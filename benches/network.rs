//! Pricing one EP72 all-to-all on GB200 NVL72 (FP8 dispatch, 128 tokens per rank, uniform
//! routing): the fast path the serving loop uses, and the general max-min flow solver; and
//! the flow solver on EP256 over 128 H800 nodes.
//!
//! Run: `cargo bench --bench network`.

use criterion::{Criterion, criterion_group, criterion_main};
use epsim::cost::collective::{
    EpGroup, ExpectedTraffic, Phase, all_to_all_legs, expected_fast_path_seconds,
    fast_path_seconds, solver_seconds,
};
use epsim::cost::network::LinkEfficiency;
use epsim::engine::RandomStreams;
use epsim::moe::traffic::destinations;
use epsim::topology::A2aAlgorithm;
use std::hint::black_box;
use std::path::Path;

fn ep72_all_to_all(c: &mut Criterion) {
    let topo = epsim::topology::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/gb200-nvl72.yaml"),
    )
    .expect("shipped topology loads");
    let group = EpGroup::new(&topo, topo.gpus.clone());
    let mut rng = RandomStreams::new(1).stream("routing");
    let dest = destinations(
        &"uniform".parse().expect("routing"),
        72,
        128,
        256,
        8,
        &mut rng,
    )
    .expect("shape");
    let legs = all_to_all_legs(&group, &dest, A2aAlgorithm::Direct, 7392.0, Phase::Dispatch);
    let eff =
        LinkEfficiency::for_gpu(&topo, topo.gpus[0]).expect("shipped files have both efficiencies");
    c.bench_function("a2a_ep72_fast_path", |b| {
        b.iter(|| fast_path_seconds(black_box(&group), black_box(&legs), eff))
    });
    // The serving loop's version: from per-expert pick chances, no per-token legs.
    let picks = vec![8.0 / 256.0; 256];
    let expert_rank: Vec<usize> = (0..256).map(|e| e * 72 / 256).collect();
    let traffic = ExpectedTraffic {
        picks: &picks,
        expert_rank: &expert_rank,
        tokens_per_rank: 128.0,
        bytes_per_token: 7392.0,
        miss: None,
    };
    c.bench_function("a2a_ep72_expected_fast_path", |b| {
        b.iter(|| {
            expected_fast_path_seconds(
                black_box(&group),
                traffic,
                A2aAlgorithm::Direct,
                Phase::Dispatch,
                eff,
            )
        })
    });
    c.bench_function("a2a_ep72_legs_from_routing", |b| {
        b.iter(|| {
            all_to_all_legs(
                black_box(&group),
                black_box(&dest),
                A2aAlgorithm::Direct,
                7392.0,
                Phase::Dispatch,
            )
        })
    });
    let mut slow = c.benchmark_group("a2a_ep72_flow_solver");
    slow.sample_size(10);
    slow.bench_function("max_min_to_completion", |b| {
        b.iter(|| solver_seconds(black_box(&group), black_box(&legs), eff))
    });
    slow.finish();
}

/// EP256 of DeepEP's hierarchical dispatch on the first 32 of 128 H800 nodes (1,024 GPUs
/// in the graph), by the flow solver.
fn ep256_over_128_nodes(c: &mut Criterion) {
    let set = [("nodes".to_owned(), "128".to_owned())]
        .into_iter()
        .collect();
    let topo = epsim::topology::load_with(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/h800-cluster.yaml"),
        &set,
    )
    .expect("shipped topology loads");
    let group = EpGroup::new(&topo, topo.gpus[..256].to_vec());
    let mut rng = RandomStreams::new(1).stream("routing");
    let routing = "uniform".parse().expect("routing");
    let dest = destinations(&routing, 256, 128, 256, 8, &mut rng).expect("shape");
    let legs = all_to_all_legs(
        &group,
        &dest,
        A2aAlgorithm::Hierarchical,
        7392.0,
        Phase::Dispatch,
    );
    let eff =
        LinkEfficiency::for_gpu(&topo, topo.gpus[0]).expect("shipped files have both efficiencies");
    let mut slow = c.benchmark_group("a2a_ep256_h800x128_flow_solver");
    slow.sample_size(10);
    slow.bench_function("max_min_to_completion", |b| {
        b.iter(|| solver_seconds(black_box(&group), black_box(&legs), eff))
    });
    slow.finish();
}

criterion_group!(benches, ep72_all_to_all, ep256_over_128_nodes);
criterion_main!(benches);
