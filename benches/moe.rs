//! Expert routing and EPLB costs, per simulated iteration or re-plan.
//!
//! Run: `cargo bench --bench moe`.

use criterion::{Criterion, criterion_group, criterion_main};
use epsim::engine::RandomStreams;
use epsim::moe::eplb::rebalance_experts;
use epsim::moe::popularity::Popularity;
use epsim::moe::routing::Router;
use std::hint::black_box;

/// DeepSeek-R1's shape: 58 MoE layers of 256 experts, top-8 from 4 of 8 groups.
const LAYERS: usize = 58;
const EXPERTS: usize = 256;

fn eplb_replan(c: &mut Criterion) {
    let mut rng = RandomStreams::new(1).stream("popularity");
    let load: Vec<Vec<f64>> = (0..LAYERS)
        .map(|_| {
            Popularity::Calibrated
                .draw(EXPERTS, &mut rng)
                .iter()
                .map(|p| (p * 1e6).round())
                .collect()
        })
        .collect();
    c.bench_function("eplb_replan_58x256_into_288_slots_ep32", |b| {
        b.iter(|| rebalance_experts(black_box(&load), 288, 8, 1, 32).expect("valid shape"))
    });
}

fn routing_iteration(c: &mut Criterion) {
    let mut rng = RandomStreams::new(2).stream("popularity");
    let routers: Vec<Router> = (0..LAYERS)
        .map(|_| {
            Router::new(&Popularity::Calibrated.draw(EXPERTS, &mut rng), 8, 8, 4)
                .expect("DeepSeek shape")
        })
        .collect();
    let mut routing = RandomStreams::new(3).stream("routing");
    // EP32 x 256 tokens per rank.
    let tokens = 32 * 256;
    c.bench_function("routing_one_iteration_58_layers_ep32", |b| {
        b.iter(|| {
            for r in &routers {
                black_box(r.sample(tokens, &mut routing));
            }
        })
    });
    c.bench_function("router_build_58_layers", |b| {
        let p: Vec<Vec<f64>> = (0..LAYERS)
            .map(|_| Popularity::Calibrated.draw(EXPERTS, &mut rng))
            .collect();
        b.iter(|| {
            p.iter()
                .map(|p| Router::new(black_box(p), 8, 8, 4).expect("shape"))
                .collect::<Vec<_>>()
        })
    });
}

criterion_group!(benches, eplb_replan, routing_iteration);
criterion_main!(benches);
