"""Builds epsim's kernel profiles from silicon-measured kernel tables.

Reads NVIDIA aiconfigurator-core 0.12.0's measured tables (Apache-2.0; the copy under
../shared/reference/kernels/ beside the project, layout in its README) and writes, per GPU
spec, compact CSVs under topologies/gpus/profiles/<gpu>/ (what epsim prices from) and the
held-out shapes under tests/data/kernels-heldout/<gpu>/ (what the per-op accuracy test
compares against; never used for pricing). Fit to kernel measurements only.

  pip install pandas pyarrow
  python3 calibration/build_profiles.py --kernels ../shared/reference/kernels

What was established from the data (see README, "Kernel profiles"):
  - `latency` is milliseconds in the GEMM, MoE and MLA tables (a BF16 8192^3 GEMM on GB200
    at 0.78 ms is 1.41 PFLOP/s, 56% of the 2.5 PF dense peak); profiles store microseconds.
  - MoE `num_tokens` counts the tokens of the whole EP group before dispatch: each rank
    computes num_tokens x topk / ep rows (per-rank tokens would need 9 PFLOP/s of NVFP4 at
    EP8 and 4,096 tokens, above what the part can do).
  - Some MoE rows are not physically possible as weight-streaming kernels: TensorRT-LLM's
    `moe_torch_flow_min_latency` at EP1 and 32 tokens reads 256 experts' NVFP4 weights
    (6.3 GB) in 0.45 ms, 14 TB/s, above the 8 TB/s HBM peak. Every MoE row whose implied
    expert-weight bandwidth exceeds the HBM peak is left out; the rest of that kernel's rows
    (small token counts at EP >= 8, where it is the fastest) are kept.
  - Rows repeat per kernel variant and run: the fastest is kept (what the framework picks).
"""

import argparse
import pathlib

import pandas as pd

SOURCE = (
    "# Source: NVIDIA aiconfigurator-core 0.12.0 (PyPI), aiconfigurator_core/systems/{system}/"
    "{family}/trtllm/{version}/{table}.parquet;\n"
    "# silicon-measured on {device}. Licensed Apache-2.0 (http://www.apache.org/licenses/LICENSE-2.0);\n"
    "# derived by calibration/build_profiles.py: {rule}\n"
)

# epsim GPU spec -> aiconfigurator system folder.
GPUS = {
    "b200-gb200": "gb200",
    "b200-hgx": "b200_sxm",
    "b300-gb300": "gb300",
    "b300-hgx": "b300_sxm",
    "h200-sxm": "h200_sxm",
    "h100-sxm": "h100_sxm",
}
VERSION = "1.3.0rc20"  # TensorRT-LLM version of the GEMM, MoE and MLA tables
DTYPE = {"bfloat16": "bf16", "fp8_block": "fp8", "nvfp4": "nvfp4"}

# GEMM grid kept for pricing: brackets the projections, FFNs, experts, routers and LM heads
# of the shipped models (hidden 2,880-7,168; ranks 512-1,536; FFNs up to 18,432).
GEMM_N = [128, 256, 512, 1024, 1536, 2048, 4096, 7168, 8192, 16384, 65536]
GEMM_K = [512, 1024, 1536, 2048, 4096, 7168, 8192, 16384, 51200]
# Token counts kept: dense at small m, and both sides of the MMA tile steps (32/33, ...).
GEMM_M = [1, 2, 3, 4, 6, 8, 12, 16, 17, 32, 33, 48, 49, 64, 65, 96, 97, 128, 129, 192, 193,
          256, 257, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192, 16384, 32768]
# Held out: shapes between the kept grid lines, never priced from.
GEMM_HELD_N = [3072, 5120, 12288]
GEMM_HELD_K = [3072, 5120, 12288]
# Held-out shapes are written for these GPUs only (the ones the per-op accuracy test covers).
HELD_OUT_GPUS = ["b200-gb200", "h200-sxm"]
# MoE shapes of the shipped models: (hidden, inter, topk, experts).
MOE_SHAPES = [
    (7168, 2048, 8, 256),  # DeepSeek-R1 / V3
    (7168, 2048, 8, 384),  # Kimi-K2
    (4096, 1536, 8, 128),  # Qwen3-235B-A22B
    (4096, 14336, 2, 8),  # Mixtral-8x7B
    (2880, 2880, 4, 128),  # gpt-oss-120b
]
MOE_HELD_TOKENS = [48, 96, 192, 384, 768, 1536, 3072, 6144, 12288]
MLA_HELD_BATCH = [2, 8, 32, 128, 512]
MLA_HELD_ISL = [16, 64, 256, 1024, 3072, 6144, 12288]


def table(kernels, system, family, name):
    path = kernels / system / family / "trtllm" / VERSION / f"{name}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def write(path, header, frame, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = frame.sort_values(columns[:-1])
    with open(path, "w") as f:
        f.write(header)
        f.write(",".join(columns) + "\n")
        for row in frame[columns].itertuples(index=False):
            *keys, us = row
            f.write(",".join(str(k) for k in keys) + f",{float(f'{us:.4g}')}\n")
    return len(frame)


def fastest(frame, keys):
    frame = frame.assign(latency_us=frame["latency"] * 1000.0)
    return frame.groupby(keys, as_index=False)["latency_us"].min()


def hbm_bytes_per_s(kernels, system):
    """The HBM peak of the collector's spec sheet (systems/<system>.yaml, gpu.mem_bw)."""
    for line in open(kernels / "systems" / f"{system}.yaml"):
        if line.strip().startswith("mem_bw:"):
            return float(line.split(":")[1].split("#")[0])
    raise SystemExit(f"{system}: no gpu.mem_bw in its spec sheet")


def wide_ep_table(kernels, system):
    path = kernels / system / "moe" / "trtllm" / "1.3.0rc10" / "wideep_moe_perf.parquet"
    return pd.read_parquet(path) if path.exists() else None


def gemm(d):
    d = d[d["gemm_dtype"].isin(DTYPE)].assign(dtype=lambda x: x["gemm_dtype"].map(DTYPE))
    d = fastest(d, ["dtype", "m", "n", "k"])
    d = d[d["m"].isin(GEMM_M)]
    keep = d[d["n"].isin(GEMM_N) & d["k"].isin(GEMM_K)]
    held = d[
        (d["n"].isin(GEMM_HELD_N) & d["k"].isin(GEMM_K + GEMM_HELD_K))
        | (d["k"].isin(GEMM_HELD_K) & d["n"].isin(GEMM_N + GEMM_HELD_N))
    ]
    held = held[(held["n"] >= 512) & (held["k"] >= 512)]
    return keep, held, ["dtype", "m", "n", "k", "latency_us"]


# Bytes per routed-expert weight (gate/up and down matrices), block scales included, as
# epsim's precision model counts them (src/model/precision.rs).
WEIGHT_BYTES = {"nvfp4": 4.5 / 8, "fp8": 1.0 + 4.0 / (128 * 128), "bf16": 2.0}


def physical(d, hbm_bytes_per_s):
    """Rows whose kernel could have streamed the expert weights it must read: balanced
    routing over `experts / ep` local experts touches min(local experts, local rows) of
    them, and those bytes cannot move faster than the HBM peak."""
    local = d["num_experts"] // d["moe_ep_size"]
    rows = d["num_tokens"] * d["topk"] // d["moe_ep_size"]
    touched = pd.concat([local, rows], axis=1).min(axis=1)
    per_expert = 3 * d["hidden_size"] * d["inter_size"] * d["dtype"].map(WEIGHT_BYTES)
    return touched * per_expert / (d["latency"] * 1e-3) <= hbm_bytes_per_s


# Tensor-parallel expert splits kept (moe_tp_size): each GPU runs every local expert's
# 1/moe_tp slice of the intermediate dimension, which is the fused MoE block of the shape
# with inter / moe_tp; the rows are written as that shape.
MOE_TP = [1, 2, 4, 8]


def moe(d, wide, hbm_bytes_per_s):
    d = d[d["moe_tp_size"].isin(MOE_TP) & (d["distribution"] == "balanced")]
    d = d.assign(inter_size=d["inter_size"] // d["moe_tp_size"])
    if wide is not None:
        # TensorRT-LLM's wide-EP MoE kernel (1.3.0rc10) for the same block: no balanced
        # rows, so the EPLB-balanced mild skew (power_law_1.01_eplb, residual imbalance a
        # few percent) with as many slots as experts. The fastest kernel per shape wins.
        w = wide[(wide["moe_tp_size"] == 1) & (wide["distribution"] == "power_law_1.01_eplb")
                 & (wide["num_slots"] == wide["num_experts"])]
        d = pd.concat([d, w[d.columns.intersection(w.columns)]], ignore_index=True)
    d = d[d["moe_dtype"].isin(DTYPE)].assign(dtype=lambda x: x["moe_dtype"].map(DTYPE))
    d = d[physical(d, hbm_bytes_per_s)]
    shapes = [(h, i // tp, k, e) for (h, i, k, e) in MOE_SHAPES for tp in MOE_TP if i % tp == 0]
    shape = list(zip(d["hidden_size"], d["inter_size"], d["topk"], d["num_experts"]))
    d = d[[s in shapes for s in shape]]
    d = d.rename(columns={"hidden_size": "hidden", "inter_size": "inter", "num_experts": "experts",
                          "moe_ep_size": "ep", "num_tokens": "tokens"})
    keys = ["dtype", "hidden", "inter", "topk", "experts", "ep", "tokens"]
    d = fastest(d, keys)
    held = d["tokens"].isin(MOE_HELD_TOKENS)
    return d[~held], d[held], keys + ["latency_us"]


ALLREDUCE_HELD_ELEMENTS = [256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]


def allreduce(d):
    d = d[d["allreduce_dtype"] == "bfloat16"].assign(dtype="bf16", gpus=d["num_gpus"],
                                                     elements=d["message_size"])
    keys = ["dtype", "gpus", "elements"]
    d = fastest(d, keys)
    held = d["elements"].isin(ALLREDUCE_HELD_ELEMENTS)
    return d[~held], d[held], keys + ["latency_us"]


def mla(d, axis, held_values):
    d = d[(d["tp_size"] == 1) & d["gemm_type"].isin(DTYPE)]
    d = d.assign(kv_dtype=d["kv_cache_dtype"].map({"bfloat16": "bf16", "fp8": "fp8"}),
                 gemm_dtype=d["gemm_type"].map(DTYPE), heads=d["num_heads"],
                 batch=d["batch_size"])
    d = d.assign(**{"kv_len" if axis == "step" else "isl": d[axis]})
    name = "kv_len" if axis == "step" else "isl"
    keys = ["kv_dtype", "gemm_dtype", "heads", "batch", name]
    d = fastest(d.dropna(subset=["kv_dtype"]), keys)
    held = d["batch"].isin(held_values) if axis == "step" else d["isl"].isin(held_values)
    return d[~held], d[held], keys + ["latency_us"]


MLA_SHAPE = ["hidden_size", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
             "qk_rope_head_dim", "v_head_dim"]


def write_mla_model(project, gpu, system):
    """The attention shape the MLA tables measured (their `model` column: DeepSeek-V3), read
    from the project's DeepSeek-R1 model file (same architecture; its lines cite the config),
    so epsim prices only models of that shape from them."""
    values = {}
    for line in open(project / "models" / "deepseek-r1.yaml"):
        key, _, rest = line.strip().partition(":")
        if key in MLA_SHAPE:
            values[key] = rest.split("#")[0].strip()
    path = project / "topologies/gpus/profiles" / gpu / "mla_model.csv"
    with open(path, "w") as f:
        f.write(f"# The model shape of mla_decode.csv and mla_prefill.csv ({system}): the tables' `model`\n"
                "# column is deepseek-ai/DeepSeek-V3; values from models/deepseek-r1.yaml (same\n"
                "# architecture; docs/reference/hardware-and-models.md section 3).\n")
        f.write("hidden,q_lora_rank,kv_lora_rank,qk_nope_head_dim,qk_rope_head_dim,v_head_dim\n")
        f.write(",".join(values[k] for k in MLA_SHAPE) + "\n")


DEVICE = {"gb200": "GB200", "b200_sxm": "HGX B200", "gb300": "GB300", "b300_sxm": "HGX B300",
          "h200_sxm": "HGX H200", "h100_sxm": "HGX H100"}


def build(kernels, project, gpu, system):
    device = DEVICE[system]
    jobs = [
        ("gemm", "gemm", "gemm_perf", gemm,
         "fastest kernel per (dtype, m, n, k); n, k on the kept grid; fp8 = fp8_block (DeepGEMM)"),
        ("moe", "moe", "moe_perf",
         lambda d: moe(d, wide_ep_table(kernels, system), hbm_bytes_per_s(kernels, system)),
         "balanced routing; moe_tp 2, 4 and 8 rows written as the shape with inter / moe_tp (each "
         "GPU's slice of every local expert); with the wide-EP kernel's EPLB rows (1.3.0rc10/"
         "wideep_moe_perf, moe_tp 1, power_law_1.01_eplb, slots = experts); fastest kernel per shape among "
         "rows whose implied expert-weight bandwidth is within the HBM peak; shipped models' "
         "shapes; tokens = the EP group's tokens before dispatch"),
        ("mla_decode", "mla", "mla_generation_module_perf",
         lambda d: mla(d, "step", MLA_HELD_BATCH),
         "whole MLA block per layer (projections, norms, RoPE, attention), DeepSeek-V3, tp 1; "
         "kv_len = the table's step"),
        ("mla_prefill", "mla", "mla_context_module_perf",
         lambda d: mla(d, "isl", MLA_HELD_ISL),
         "whole MLA block per layer for a batch of prompts of isl tokens, DeepSeek-V3, tp 1"),
    ]
    jobs.append(
        ("allreduce", "comm", "custom_allreduce_perf", allreduce,
         "TensorRT-LLM's custom all-reduce (BF16), fastest per (gpus, elements); `message_size` "
         "counts BF16 elements (read as bytes, 8 B200 would reach 364 GB/s of bus bandwidth on "
         "900 GB/s NVLink; as elements 728 GB/s, near NCCL's measured ~840 on NVL72)"))
    for out, family, name, fn, rule in jobs:
        d = table(kernels, system, family, name)
        if d is None:
            print(f"{gpu}: no {family}/{name}")
            continue
        keep, held, columns = fn(d)
        header = SOURCE.format(system=system, family=family, version=VERSION, table=name,
                               device=device, rule=rule)
        n = write(project / "topologies/gpus/profiles" / gpu / f"{out}.csv", header, keep, columns)
        h = 0
        if gpu in HELD_OUT_GPUS:
            h = write(project / "tests/data/kernels-heldout" / gpu / f"{out}.csv",
                      header.replace("# derived", "# HELD OUT (not priced from); derived"), held, columns)
        print(f"{gpu}: {out}: {n} rows kept, {h} held out")
    write_mla_model(project, gpu, system)
    sglang_moe(kernels, project, gpu, system, hbm_bytes_per_s(kernels, system))


# SGLang's wide-EP MoE (DeepGEMM grouped GEMMs fed by DeepEP), sglang 0.5.10's
# wideep_{generation,context}_moe_perf: DeepSeek's shape in FP8 only. `num_tokens` counts
# the EP group's tokens, as in TensorRT-LLM's table (the context rows at EP32 and 524,288
# tokens do 11.5 TFLOP per rank in 14.3 ms, 0.81 PFLOP/s on H100; read per rank it would be
# 26 PFLOP/s). They measure a whole number of tokens per rank (1-128 for the masked kernel
# behind DeepEP low-latency, 16-16,384 for the contiguous one behind DeepEP normal), so the
# tables are written per rank (`tokens_per_rank`), where they form a grid.
SGLANG_VERSION = "0.5.10"
SGLANG_TABLES = {
    # epsim table -> (sglang table, tokens per rank kept, EP sizes kept)
    # Masked (low-latency): the whole measured range.
    "moe_low_latency": ("wideep_generation_moe_perf", [1, 2, 4, 8, 16, 32, 64, 128],
                        [4, 8, 16, 32, 64, 128, 256]),
    # Contiguous (normal): 16 to 8,192 tokens per rank at EP16-EP64, the rectangle a grid
    # needs. EP8's rows below 256 tokens per rank read faster than the HBM peak allows (the
    # kernel takes ~0.4 ms at any EP there, a fixed cost the roofline's trend would not
    # carry below a cut-off), EP128 and EP256 stop at 4,096 and 2,048: left out, and priced
    # from the nearest EP kept by the roofline's trend.
    "moe": ("wideep_context_moe_perf", [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192],
            [16, 32, 64]),
}


def sglang_moe(kernels, project, gpu, system, hbm):
    for out, (name, per_rank, eps) in SGLANG_TABLES.items():
        path = kernels / system / "moe" / "sglang" / SGLANG_VERSION / f"{name}.parquet"
        if not path.exists():
            print(f"{gpu}: no sglang {name}")
            continue
        d = pd.read_parquet(path)
        d = d[(d["distribution"] == "uniform") & (d["moe_dtype"] == "fp8_block")]
        d = d.assign(dtype="fp8", tokens_per_rank=d["num_tokens"] // d["moe_ep_size"])
        d = d[physical(d, hbm)]
        d = d[d["tokens_per_rank"].isin(per_rank) & d["moe_ep_size"].isin(eps)]
        d = d.rename(columns={"hidden_size": "hidden", "inter_size": "inter",
                              "num_experts": "experts", "moe_ep_size": "ep"})
        keys = ["dtype", "hidden", "inter", "topk", "experts", "ep", "tokens_per_rank"]
        d = fastest(d, keys)
        # A grid: every kept EP size with every kept token count (a system that lacks one
        # EP size, as b200_sxm lacks EP8, has it left out whole).
        full = d.groupby("ep")["tokens_per_rank"].nunique()
        d = d[d["ep"].isin(full[full == len(per_rank)].index)]
        kernel = "masked" if out == "moe_low_latency" else "contiguous"
        rule = (f"SGLang's DeepGEMM {kernel} grouped GEMM behind DeepEP "
                f"{'low-latency' if kernel == 'masked' else 'normal'} (kernel_source deepepmoe), "
                "uniform routing, fp8_block; tokens_per_rank = num_tokens / ep; rows within "
                "the HBM peak; the grid of EP sizes measured at every kept token count")
        header = (SOURCE.replace("/trtllm/", "/sglang/")
                  .format(system=system, family="moe", version=SGLANG_VERSION, table=name,
                          device=DEVICE[system], rule=rule))
        n = write(project / "topologies/gpus/profiles" / gpu / "sglang" / f"{out}.csv",
                  header, d, keys + ["latency_us"])
        print(f"{gpu}: sglang/{out}: {n} rows, EP {sorted(d['ep'].unique().tolist())}")


def check_min_latency(kernels):
    d = table(kernels, "gb200", "moe", "moe_perf")
    r = d[(d["kernel_source"] == "moe_torch_flow_min_latency") & (d["moe_ep_size"] == 1)
          & (d["num_tokens"] == 32) & (d["hidden_size"] == 7168) & (d["inter_size"] == 2048)
          & (d["num_experts"] == 256) & (d["distribution"] == "balanced") & (d["moe_dtype"] == "nvfp4")]
    weights = 256 * 3 * 7168 * 2048 * 0.5625
    ms = r["latency"].max()
    print(f"min_latency MoE, GB200 EP1 32 tokens: {ms:.3f} ms, {weights / (ms * 1e-3) / 1e12:.1f} TB/s "
          "(HBM peak 8 TB/s): above the peak, left out")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernels", type=pathlib.Path, default=pathlib.Path("../shared/reference/kernels"))
    p.add_argument("--project", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent.parent)
    a = p.parse_args()
    check_min_latency(a.kernels)
    for gpu, system in GPUS.items():
        build(a.kernels, a.project, gpu, system)


if __name__ == "__main__":
    main()
