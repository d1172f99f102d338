//! Pricing one decode iteration of DeepSeek-R1 (61 layers + MTP) for one rank: the serving
//! loop will do this once per iteration, so it must take microseconds.
//!
//! Run: `cargo bench --bench step`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use epsim::cost::kernels::Kernels;
use epsim::cost::step::{StepLoad, iteration_cost};
use epsim::hardware::{load_spec, spec_path};
use epsim::model::memory::{AttentionLayout, DEFAULT_KV_SHARE_OF_FREE_MEMORY, Deployment};
use epsim::model::{Precision, load_model};
use std::hint::black_box;
use std::path::Path;

fn price_iteration_cost(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = load_model(&root.join("models/deepseek-r1.yaml")).expect("shipped model loads");
    let gpu = load_spec(&spec_path(&root.join("topologies/gpus"), "b200-gb200"))
        .expect("shipped spec loads");
    let kernels = Kernels::for_gpu(&gpu).expect("shipped profile loads");
    let mut group = c.benchmark_group("iteration_cost_deepseek_r1");
    for (ep, slots) in [(8u64, 256u64), (32, 288)] {
        let d = Deployment {
            ep,
            moe_tp: 1,
            slots,
            attention: AttentionLayout::Dp,
            expert_precision: Precision::Nvfp4,
            other_precision: Precision::Fp8,
            attention_precision: Precision::Bf16,
            kv_precision: Precision::Fp8,
            mtp: true,
            kv_share_of_free_memory: DEFAULT_KV_SHARE_OF_FREE_MEMORY,
        };
        let load = StepLoad {
            batch: 64,
            context: 2048,
            mtp: 1,
            prefill: &[],
        };
        group.bench_with_input(BenchmarkId::new("ep", ep), &d, |b, d| {
            b.iter(|| {
                iteration_cost(
                    black_box(&model),
                    black_box(&kernels),
                    black_box(d),
                    black_box(&load),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, price_iteration_cost);
criterion_main!(benches);
