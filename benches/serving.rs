//! The serving simulation end to end: 10 simulated minutes of DeepSeek-R1 on a full GB200
//! NVL72 at saturation (benches/scenarios/nvl72-saturated.yaml; goal: at most 10 s wall),
//! and the price of one decode iteration of its EP48 instance, the loop's inner cost.
//!
//! Run: `cargo bench --bench serving` (the full run takes ~2 minutes: 10 samples).
//! Events/s and simulated seconds per wall second: `epsim run` on the same scenario prints
//! them.

use criterion::{Criterion, criterion_group, criterion_main};
use epsim::engine::RandomStreams;
use epsim::serving::pricing::{Pricer, RankWork};
use epsim::serving::{scenario, sim};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

fn saturated() -> scenario::LoadedScenario {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/scenarios/nvl72-saturated.yaml");
    scenario::load(&file).unwrap_or_else(|e| panic!("{e}"))
}

fn ten_minutes_of_a_saturated_nvl72(c: &mut Criterion) {
    let loaded = saturated();
    let mut group = c.benchmark_group("serving");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(100));
    group.bench_function("nvl72_saturated_600s", |b| {
        b.iter(|| sim::run(black_box(&loaded)).expect("the bench scenario runs"))
    });
    group.finish();
}

fn price_one_decode_iteration(c: &mut Criterion) {
    let loaded = saturated();
    let sc = &loaded.scenario;
    let decode = sc
        .instances
        .iter()
        .find(|i| i.name == "decode")
        .expect("the bench has a decode instance");
    let streams = RandomStreams::new(1);
    let mut pricer = Pricer::new(
        &loaded.topology,
        &loaded.model,
        decode,
        &sc.moe,
        sc.mtp,
        &streams,
    )
    .expect("the pricer builds");
    let work = vec![
        RankWork {
            batch: 256,
            context: 1536,
            chunks: Vec::new(),
        };
        decode.dp_ranks()
    ];
    c.bench_function("serving/price_decode_iteration_ep48", |b| {
        b.iter(|| pricer.price(black_box(&work)).expect("prices"))
    });
}

criterion_group!(
    benches,
    price_one_decode_iteration,
    ten_minutes_of_a_saturated_nvl72
);
criterion_main!(benches);
