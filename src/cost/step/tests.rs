use super::*;
use crate::hardware::GpuSpec;
use crate::testing;

/// The roofline alone: these tests check the fallback's structure (bytes, FLOPs, bounds).
fn roofline_cost(m: &ModelConfig, g: &GpuSpec, d: &Deployment, load: &StepLoad) -> StepCost {
    iteration_cost(m, &Kernels::roofline_only(g), d, load)
}

fn setup(ep: u64, slots: u64) -> (ModelConfig, GpuSpec, Deployment) {
    (
        testing::model("deepseek-r1"),
        testing::gpu("b200-gb200"),
        testing::nvfp4_deployment(ep, slots),
    )
}

const LOAD: StepLoad = StepLoad {
    batch: 32,
    context: 2048,
    mtp: 1,
    prefill: &[],
};

/// A decode step of `batch` requests of `context` tokens, no MTP, no prompt chunks.
fn decode(batch: u64, context: u64) -> StepLoad<'static> {
    StepLoad {
        batch,
        context,
        mtp: 0,
        prefill: &[],
    }
}

#[test]
fn tokens_per_expert_sum_to_tokens_times_top_k() {
    for (ep, slots) in [(8, 256), (16, 256), (32, 288), (64, 256)] {
        let (m, g, d) = setup(ep, slots);
        let cost = roofline_cost(&m, &g, &d, &LOAD);
        let tokens = LOAD.batch * (1 + LOAD.mtp);
        // Balanced routing: this rank's share of all ranks' assignments.
        let expected = tokens * 8 * ep * (slots / ep) / slots;
        assert_eq!(
            cost.tokens_per_expert.iter().sum::<u64>(),
            expected,
            "EP{ep}"
        );
        assert_eq!(cost.tokens_per_expert.len() as u64, slots / ep);
        let (lo, hi) = (
            cost.tokens_per_expert.iter().min().unwrap(),
            cost.tokens_per_expert.iter().max().unwrap(),
        );
        assert!(hi - lo <= 1);
    }
}

#[test]
fn wider_ep_reads_fewer_expert_weights_per_step() {
    let (m, mut g, d8) = setup(8, 256);
    // The kernels alone: a launch gap would make every op slower than its HBM limit.
    g.efficiency.launch_gap_us = 0.0;
    let (_, _, d32) = setup(32, 288);
    let ep8 = roofline_cost(&m, &g, &d8, &LOAD);
    let ep32 = roofline_cost(&m, &g, &d32, &LOAD);
    let moe = |c: &StepCost| c.by_class[&OpClass::MoeGroupGemm];
    // Weight bytes scale with experts per GPU (32 vs 9); both memory-bound at this batch.
    let ratio = moe(&ep8).bytes / moe(&ep32).bytes;
    assert!(ratio > 3.0 && ratio < 32.0 / 9.0 + 0.01, "{ratio}");
    assert!(moe(&ep8).memory_bound() && moe(&ep32).memory_bound());
    assert!(moe(&ep32).seconds < moe(&ep8).seconds / 3.0);
    // Everything but the routed experts is the same work on every rank (DP attention);
    // the dense GEMMs differ by how much of the shared expert hides beside them.
    assert_eq!(
        ep8.by_class[&OpClass::Attention],
        ep32.by_class[&OpClass::Attention]
    );
    let dense = |c: &StepCost| c.by_class[&OpClass::DenseGemm].bytes;
    assert_eq!(dense(&ep8), dense(&ep32));
    assert_eq!(ep8.by_class[&OpClass::Dispatch], OpCost::default());
    assert!(ep32.total().seconds < ep8.total().seconds);
}

#[test]
fn step_time_grows_with_batch_and_context() {
    let (m, g, d) = setup(32, 288);
    let cost = |batch, context| {
        roofline_cost(
            &m,
            &g,
            &d,
            &StepLoad {
                batch,
                context,
                mtp: 1,
                prefill: &[],
            },
        )
    };
    let t = |batch, context| cost(batch, context).total().seconds;
    assert!(t(64, 2048) > t(32, 2048));
    assert!(t(32, 8192) > t(32, 2048));
    // Attention reads every request's KV cache: linear in batch x context.
    let attention = |batch, context| cost(batch, context).by_class[&OpClass::Attention].bytes;
    assert_eq!(attention(64, 2048), 2.0 * attention(32, 2048));
    assert_eq!(attention(32, 4096), 2.0 * attention(32, 2048));
}

#[test]
fn sliding_window_layers_read_only_their_window() {
    let oss = testing::model("gpt-oss-120b");
    let h200 = testing::gpu("h200-sxm");
    let d = Deployment {
        ep: 8,
        moe_tp: 1,
        slots: 128,
        expert_precision: Precision::Mxfp4,
        other_precision: Precision::Bf16,
        mtp: false,
        ..setup(8, 256).2
    };
    let bytes = |context| {
        roofline_cost(&oss, &h200, &d, &decode(16, context)).by_class[&OpClass::Attention].bytes
    };
    // 18 full layers grow with the context; 18 windowed layers stop at 128 tokens.
    let per_token_layer = 2.0 * 8.0 * 64.0;
    assert!((bytes(4096) - 16.0 * per_token_layer * (18.0 * 4096.0 + 18.0 * 128.0)).abs() < 1.0);
    assert!((bytes(100) - 16.0 * per_token_layer * 36.0 * 100.0).abs() < 1.0);
}

fn with_chunk(chunk: &[PrefillChunk], batch: u64) -> StepLoad<'_> {
    StepLoad {
        batch,
        context: 2048,
        mtp: 1,
        prefill: chunk,
    }
}

fn chunk(tokens: u64, prefix: u64) -> [PrefillChunk; 1] {
    [PrefillChunk { tokens, prefix }]
}

#[test]
fn a_prefill_chunk_shares_the_weight_reads_of_decode() {
    let (m, g, d) = setup(8, 256);
    let total = |load: &StepLoad| roofline_cost(&m, &g, &d, load).total().seconds;
    let decode = total(&LOAD);
    let prefill = total(&with_chunk(&chunk(512, 0), 0));
    let mixed = total(&with_chunk(&chunk(512, 0), LOAD.batch));
    assert!(
        mixed < decode + prefill,
        "weights are read once: {mixed} vs {decode} + {prefill}"
    );
    assert!(mixed > decode.max(prefill));
}

#[test]
fn prefill_is_quadratic_in_context_and_compute_bound_when_large() {
    let (m, g, d) = setup(8, 256);
    let attention = |prefix| {
        roofline_cost(&m, &g, &d, &with_chunk(&chunk(2048, prefix), 0)).by_class
            [&OpClass::Attention]
            .flops
    };
    let pairs = |prefix: f64| 2048.0 * prefix + 2048.0 * 2049.0 / 2.0;
    assert!((attention(6144) / attention(0) - pairs(6144.0) / pairs(0.0)).abs() < 1e-9);
    let big = roofline_cost(&m, &g, &d, &with_chunk(&chunk(8192, 0), 0));
    assert!(!big.by_class[&OpClass::MoeGroupGemm].memory_bound());
    assert!(!big.by_class[&OpClass::DenseGemm].memory_bound());
    assert_eq!(big.tokens_per_expert.iter().sum::<u64>(), 8192 * 8);
}

#[test]
fn two_chunks_cost_their_own_attention_and_share_the_gemms() {
    let (m, g, d) = setup(8, 256);
    let cost = |c: &[PrefillChunk]| roofline_cost(&m, &g, &d, &with_chunk(c, 0));
    let both = [chunk(1024, 0)[0], chunk(1024, 0)[0]];
    let attention = |c: &StepCost| c.by_class[&OpClass::Attention].flops;
    let (one, two, merged) = (cost(&chunk(1024, 0)), cost(&both), cost(&chunk(2048, 0)));
    assert!((attention(&two) / attention(&one) - 2.0).abs() < 1e-9);
    assert!(
        attention(&merged) > attention(&two),
        "one long prompt is quadratic"
    );
    assert_eq!(two.tokens_per_expert, merged.tokens_per_expert);
}

#[test]
fn the_profile_prices_the_deepseek_layer_from_measurements() {
    let (m, g, d) = setup(8, 256);
    let kernels = Kernels::for_gpu(&g).unwrap();
    let measured = iteration_detail(&m, &kernels, &d, &LOAD);
    let roofline = roofline_cost(&m, &g, &d, &LOAD);
    for class in [OpClass::Attention, OpClass::MoeGroupGemm] {
        assert!(
            measured.sources[&class] <= Source::Interpolated,
            "{class:?}"
        );
        // Measured kernels are slower than the roofline at decode sizes.
        assert!(
            measured.by_class[&class].seconds > roofline.by_class[&class].seconds,
            "{class:?}"
        );
    }
    assert_eq!(roofline.sources[&OpClass::MoeGroupGemm], Source::Roofline);
    // The detail lists every op once per (op, source), with its calls per iteration.
    let routed = measured
        .ops
        .iter()
        .find(|o| o.op == "routed experts (fused MoE)")
        .unwrap();
    assert_eq!(
        routed.calls,
        58.0 + 1.0,
        "58 MoE layers and one MTP draft layer"
    );
    let sum: f64 = measured.ops.iter().map(|o| o.seconds).sum();
    assert!((sum / measured.total().seconds - 1.0).abs() < 1e-9);
    assert!(iteration_cost(&m, &kernels, &d, &LOAD).ops.is_empty());
}

#[test]
fn the_serving_loops_seconds_equal_the_full_price() {
    let (m, g, d) = setup(8, 256);
    let kernels = Kernels::for_gpu(&g).unwrap();
    let mut memo = StepMemo::default();
    let chunk = chunk(512, 1024);
    for load in [LOAD, with_chunk(&chunk, 16), with_chunk(&chunk, 0), LOAD] {
        let full = iteration_cost(&m, &kernels, &d, &load);
        let s = iteration_seconds(&m, &kernels, &d, &load, &mut memo);
        assert!((s.total_s / full.total().seconds - 1.0).abs() < 1e-12);
        assert_eq!(s.routed_main_s, full.routed_main_s);
        // The MoE layers hold the routed experts and most, not all, of the iteration:
        // the dense layers, LM head and MTP draft are outside.
        assert!(s.moe_layers_s > s.routed_main_s && s.moe_layers_s < 0.97 * s.total_s);
        assert!(s.moe_layers_s > 0.7 * s.total_s, "{s:?}");
    }
    assert_eq!(memo.entries.len(), 3, "the repeated load was a hit");
}

/// Decode ranks' context parts come from the memo exactly as priced, whichever pairs
/// share a slot (a thousand pairs over 1,024 slots collide), hit or not.
#[test]
fn remembered_context_parts_are_the_priced_ones() {
    let (m, g, d) = setup(8, 256);
    let kernels = Kernels::for_gpu(&g).unwrap();
    let mut memo = StepMemo::default();
    let loads: Vec<StepLoad> = (1..=40)
        .flat_map(|batch| {
            (0..25).map(move |i| StepLoad {
                batch,
                context: 1000 + 37 * i,
                ..LOAD
            })
        })
        .collect();
    for _ in 0..2 {
        for load in &loads {
            let remembered = iteration_seconds(&m, &kernels, &d, load, &mut memo);
            let priced = iteration_seconds(&m, &kernels, &d, load, &mut Default::default());
            assert_eq!(remembered, priced, "{load:?}");
        }
    }
    let kept = memo.contexts.iter().flatten().count();
    assert!(kept > 500 && kept < loads.len(), "{kept}");
}

/// Tensor-parallel experts (SGLang's `--tp 8` without EP): each GPU runs every token
/// routed to its group through a slice of each expert, read from the profile's moe_tp
/// rows, and data-parallel ranks gather and reduce-scatter over the group.
#[test]
fn tensor_parallel_experts_split_every_expert_and_gather_over_the_group() {
    let (m, g, _) = setup(8, 256);
    let kernels = Kernels::for_gpu(&g).unwrap();
    let ep8 = testing::nvfp4_deployment(8, 256);
    let tp8 = Deployment {
        ep: 1,
        moe_tp: 8,
        ..ep8
    };
    let load = decode(64, 2048);
    let (a, b) = (
        iteration_detail(&m, &kernels, &ep8, &load),
        iteration_detail(&m, &kernels, &tp8, &load),
    );
    let op = |c: &StepCost, name: &str| c.ops.iter().find(|o| o.op == name).cloned();
    let routed = op(&b, "routed experts (fused MoE)").unwrap();
    assert!(matches!(
        routed.source,
        Source::Measured | Source::Interpolated
    ));
    assert!(op(&a, "MoE TP gather and reduce-scatter").is_none());
    let gather = op(&b, "MoE TP gather and reduce-scatter").unwrap();
    assert_eq!(gather.calls, 58.0);
    // The same expert bytes per GPU: 32 whole experts, or an eighth of 256.
    let plan = |d: &Deployment| crate::model::memory::plan(&m, &g, d, 2048, 0).unwrap();
    let w = |d: &Deployment| plan(d).weights.routed_experts;
    assert!((w(&ep8) / w(&tp8) - 1.0).abs() < 1e-12);
    // Every token's 8 experts, each an eighth as wide: the rows are the group's 8 x 64
    // tokens times top-8 over 256 experts.
    assert_eq!(b.tokens_per_expert.iter().sum::<u64>(), 8 * 64 * 8);
}

#[test]
fn tensor_parallel_attention_pays_two_all_reduces_per_layer_and_splits_the_shared_expert() {
    let (m, g, _) = setup(8, 256);
    let kernels = Kernels::for_gpu(&g).unwrap();
    let d = |attention| Deployment {
        attention,
        ..testing::nvfp4_deployment(8, 256)
    };
    let load = decode(8, 2048);
    let tp = iteration_detail(&m, &kernels, &d(AttentionLayout::Tp(8)), &load);
    let dp = iteration_detail(&m, &kernels, &d(AttentionLayout::Dp), &load);
    let op = |c: &StepCost, name: &str| c.ops.iter().find(|o| o.op == name).cloned();
    let reduces = op(&tp, "attention all-reduce (+ residual, norm)").unwrap();
    assert_eq!(reduces.calls, 61.0);
    assert_eq!(
        op(&tp, "FFN all-reduce (+ residual, norm)").unwrap().calls,
        61.0
    );
    assert!(op(&dp, "attention all-reduce (+ residual, norm)").is_none());
    // The all-reduce carries the post-attention norm: no norm of its own.
    assert!(op(&tp, "rms norm").is_none() && op(&dp, "rms norm").is_some());
    assert_eq!(dp.by_class[&OpClass::TpAllReduce], OpCost::default());
    // An all-reduce of 8 tokens x 7,168 BF16 values costs the measured few microseconds.
    let each = reduces.seconds / reduces.calls;
    assert!(each > 3e-6 && each < 20e-6, "{each}");
    let shared = |c: &StepCost| op(c, "shared expert fc1").unwrap().seconds;
    assert!(shared(&tp) < shared(&dp));
}

/// The op lines of `c` named `name`, seconds.
fn op_s(c: &StepCost, name: &str) -> f64 {
    c.ops
        .iter()
        .filter(|o| o.op == name)
        .map(|o| o.seconds)
        .sum()
}

#[test]
fn the_shared_expert_hides_beside_the_router_and_routed_experts() {
    let (m, g, d) = setup(8, 256);
    let k = Kernels::for_gpu(&g).unwrap();
    for batch in [1, 8, 64, 256] {
        let load = decode(batch, 2048);
        let c = iteration_detail(&m, &k, &d, &load);
        let shared = op_s(&c, "shared expert fc1") + op_s(&c, "shared expert fc2");
        let beside = op_s(&c, "router") + op_s(&c, "routed experts (fused MoE)");
        let hidden = -op_s(&c, "shared expert hidden (2nd stream)");
        // The MoE layer pays the longer stream: the shorter one hides whole.
        let want = shared.min(beside);
        assert!(
            (hidden - want).abs() < 1e-9 * want.max(1e-6) && hidden > 0.0,
            "batch {batch}: hid {hidden}, shared {shared}, beside {beside}"
        );
    }
}

#[test]
fn every_op_pays_one_launch_gap_at_its_boundary() {
    let (m, mut g, d) = setup(8, 256);
    let price = |g: &GpuSpec| iteration_detail(&m, &Kernels::for_gpu(g).unwrap(), &d, &LOAD);
    g.efficiency.launch_gap_us = 0.0;
    let without = price(&g);
    g.efficiency.launch_gap_us = 1.0;
    let with = price(&g);
    // Every op line that runs (not the hidden share) took one gap per call; the shared
    // expert's gaps hide with it.
    let calls: f64 = without
        .ops
        .iter()
        .filter(|o| o.seconds > 0.0 && !o.op.starts_with("shared expert"))
        .map(|o| o.calls)
        .sum();
    let added = with.total().seconds - without.total().seconds;
    assert!(
        (added - calls * 1e-6).abs() < 1e-9,
        "{added} vs {calls} gaps"
    );
}

#[test]
fn tensor_parallel_attention_sends_the_groups_own_tokens_to_the_experts() {
    let (m, g, _) = setup(8, 256);
    let d = Deployment {
        attention: AttentionLayout::Tp(8),
        ..testing::nvfp4_deployment(8, 256)
    };
    let load = decode(3, 1024);
    // 3 tokens on every rank, top-8 over 256 experts, 32 here: 3 rows, not a rank's
    // ceil(3 / 8) = 1 token times the group's 8.
    let c = roofline_cost(&m, &g, &d, &load);
    assert_eq!(c.tokens_per_expert.iter().sum::<u64>(), 3);
    // MoE TP4 x EP2 under TP8 attention: 128 experts a rank, each a quarter wide, see
    // every token: 3 x 8 / 2 rows.
    let split = Deployment {
        ep: 2,
        moe_tp: 4,
        ..d
    };
    let c = roofline_cost(&m, &g, &split, &load);
    assert_eq!(c.tokens_per_expert.iter().sum::<u64>(), 12);
}

#[test]
fn an_iterations_prompt_chunks_run_as_one_batched_prefill() {
    let (m, g, d) = setup(8, 256);
    let k = Kernels::for_gpu(&g).unwrap();
    let attention = |chunks: &[PrefillChunk]| {
        iteration_detail(&m, &k, &d, &with_chunk(chunks, 0)).by_class[&OpClass::Attention].seconds
    };
    let one = attention(&chunk(32, 0));
    let many = attention(
        &[PrefillChunk {
            tokens: 32,
            prefix: 0,
        }; 256],
    );
    // b200-gb200 mla_prefill.csv (fp8, 128 heads): 256 prompts of 32 tokens 2,187 us
    // batched, one alone 90.7 us: ~10x less than one at a time.
    assert!(many < 256.0 * one / 5.0, "{many} vs 256 x {one}");
    let long = attention(
        &[PrefillChunk {
            tokens: 2048,
            prefix: 0,
        }; 8],
    );
    let alone = attention(&chunk(2048, 0));
    assert!(long < 8.0 * alone, "{long} vs 8 x {alone}");
}
