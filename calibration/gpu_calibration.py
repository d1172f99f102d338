"""Calibration run for epsim's GPU family constants (topologies/gpus/families/*.yaml).

Measures, on whatever NVIDIA GPU it runs on:
  1. HBM bandwidth: a large device-to-device copy (bytes read + written) -> hbm_fraction.
  2. Dense GEMM throughput: 8192^3 in BF16 and FP8 -> gemm_peak_fraction at large M.
  3. DeepSeek expert shapes (fc1: N=4096, K=7168; fc2: N=7168, K=2048), one expert and a
     group of experts, against tokens per expert M = 1 .. 4096, in BF16 and FP8: achieved
     TFLOP/s and GB/s, to check the roofline with MMA-tile padding (mma_tile_rows) at
     decode sizes. Weights rotate over more experts than fit in L2, so HBM is measured.

Run it through the device tool, as one call (about 3 minutes on an H100):
  PYTHONUNBUFFERED=1 python3 calibration/gpu_calibration.py --out $OUT/calibration.json
It prints a table last and writes every number to the JSON file; copy both into
calibration/results/<gpu>-<date>.json and quote them where the family file uses them.

With --profile DIR it also measures single GEMMs on a small full grid (n in 4096, 7168;
k in 2048, 7168; the token counts above; BF16 and FP8) and writes DIR/gemm.csv in epsim's
kernel-profile format (topologies/gpus/profiles/README.md): point a GPU spec's `profile`
at DIR and epsim prices those GEMMs from this GPU's measurements. --example-profile DIR
writes the same file from made-up numbers, without a GPU, to check the format.
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

EXPERT_GEMMS = {"fc1": (4096, 7168), "fc2": (7168, 2048)}  # (N, K), DeepSeek-V3 (reference section 3)
TOKENS = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
GROUP = 8  # experts per grouped call (9 per GPU at EP32 with 288 slots)
PROFILE_N = [4096, 7168]  # a full grid over the expert shapes, so epsim can interpolate
PROFILE_K = [2048, 7168]
ROTATE = 6  # weight sets cycled per measurement: 6 x 8 experts x 44 MB >> L2


def write_profile(directory, device, rows):
    """epsim's gemm.csv: `#` provenance lines, then dtype,m,n,k,latency_us, one row per GEMM."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "gemm.csv", "w") as f:
        f.write(f"# Measured on {device} by calibration/gpu_calibration.py ({time.strftime('%Y-%m-%d')}).\n")
        f.write("# fp8 rows: torch._scaled_mm with per-tensor scales (not DeepGEMM's block scales).\n")
        f.write("dtype,m,n,k,latency_us\n")
        for r in sorted(rows, key=lambda r: (r["dtype"], r["m"], r["n"], r["k"])):
            f.write(f"{r['dtype']},{r['m']},{r['n']},{r['k']},{r['ms'] * 1000:.4g}\n")
    return directory / "gemm.csv"


def example_rows():
    """Made-up GEMM times on the profile grid, for format checks: 5 us plus the slower of
    streaming the bytes at 3 TB/s and the FLOPs at 600 (BF16) or 1,200 (FP8) TFLOP/s, which
    any Hopper spec can run (epsim refuses rows faster than the GPU's peaks)."""
    def us(d, m, n, k):
        bytes_moved = n * k * (2 if d == "bf16" else 1) + 2 * m * n
        flops_per_us = 600e6 if d == "bf16" else 1200e6
        return 5 + max(bytes_moved / 3e6, 2 * m * n * k / flops_per_us)
    return [{"dtype": d, "m": m, "n": n, "k": k, "ms": 1e-3 * us(d, m, n, k)}
            for d in ["bf16", "fp8"] for n in PROFILE_N for k in PROFILE_K for m in TOKENS]


def timed(fn, warmup=3, reps=15):
    """Median milliseconds of `fn` measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def hbm_bandwidth():
    n = 1 << 30  # 1 GiB each way
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src))
    assert torch.equal(dst[:1024], src[:1024])
    return {"bytes": 2 * n, "ms": ms, "tb_s": 2 * n / ms / 1e9}


def to_fp8(t):
    return t.to(torch.float8_e4m3fn)


def fp8_matmul(a8, b8t, one):
    # a8: M x K row-major; b8t: K x N column-major (the transpose of an N x K tensor).
    return torch._scaled_mm(a8, b8t, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)


def gemm(m, n, k, dtype, groups=1, rotate=1):
    """Achieved TFLOP/s and GB/s of `groups` GEMMs (m x k) @ (k x n), weights cycled over
    `rotate` distinct sets so repeated calls read them from HBM."""
    pad = lambda x: max(16, (x + 15) // 16 * 16)  # FP8 kernels want multiples of 16
    m_run = pad(m) if dtype == "fp8" else m
    acts = [torch.randn(m_run, k, device="cuda", dtype=torch.bfloat16) for _ in range(groups)]
    weights = [[torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5 for _ in range(groups)] for _ in range(rotate)]
    ref = acts[0].double() @ weights[0][0].double().t()
    if dtype == "fp8":
        one = torch.ones((), device="cuda", dtype=torch.float32)
        acts8 = [to_fp8(a) for a in acts]
        weights8 = [[to_fp8(w).t() for w in ws] for ws in weights]
        out = fp8_matmul(acts8[0], weights8[0][0], one)
        state = {"i": 0}

        def run():
            ws = weights8[state["i"] % rotate]
            state["i"] += 1
            for a, w in zip(acts8, ws):
                fp8_matmul(a, w, one)

        tol = 0.1
    else:
        out = acts[0] @ weights[0][0].t()
        state = {"i": 0}

        def run():
            ws = weights[state["i"] % rotate]
            state["i"] += 1
            for a, w in zip(acts, ws):
                a @ w.t()

        tol = 0.02
    err = ((out.double() - ref).norm() / ref.norm()).item()
    if not err < tol:
        raise RuntimeError(f"{dtype} GEMM {m}x{n}x{k}: relative error {err:.3g} above {tol}")
    ms = timed(run)
    bytes_per = (1 if dtype == "fp8" else 2) * (n * k + m * k) + 2 * m * n
    return {
        "m": m, "n": n, "k": k, "dtype": dtype, "groups": groups, "ms": ms,
        "tflops": 2 * m * n * k * groups / ms / 1e9,
        "gb_s": bytes_per * groups / ms / 1e6,
        "rel_error": err,
    }


def main():
    global torch
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="calibration.json")
    p.add_argument("--profile", help="also write a kernel profile (gemm.csv) into this folder")
    p.add_argument("--example-profile", help="write a made-up profile into this folder and stop")
    args = p.parse_args()
    if args.example_profile:
        print(f"wrote {write_profile(args.example_profile, 'no GPU (made-up numbers)', example_rows())}")
        return
    import torch
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: run this through the device tool")
    started = time.time()
    props = torch.cuda.get_device_properties(0)
    result = {
        "device": props.name, "sms": props.multi_processor_count, "memory_gib": props.total_memory / 2**30,
        "torch": torch.__version__, "cuda": torch.version.cuda,
    }
    result["hbm"] = hbm_bandwidth()
    result["dense"] = []
    for dtype in ["bf16", "fp8"]:
        try:
            result["dense"].append(gemm(8192, 8192, 8192, dtype))
        except Exception as e:  # FP8 needs Hopper or newer
            result["dense"].append({"dtype": dtype, "error": str(e)})
    result["experts"] = []
    for dtype in ["bf16", "fp8"]:
        for name, (n, k) in EXPERT_GEMMS.items():
            for groups in [1, GROUP]:
                for m in TOKENS:
                    try:
                        r = gemm(m, n, k, dtype, groups=groups, rotate=ROTATE)
                    except Exception as e:
                        r = {"m": m, "n": n, "k": k, "dtype": dtype, "groups": groups, "error": str(e)}
                    r["gemm"] = name
                    result["experts"].append(r)
    if args.profile:
        result["profile"] = [gemm(m, n, k, dtype, rotate=ROTATE)
                             for dtype in ["bf16", "fp8"] for n in PROFILE_N for k in PROFILE_K for m in TOKENS]
        print(f"wrote {write_profile(args.profile, props.name, result['profile'])}")
    result["wall_s"] = time.time() - started
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{result['device']}: HBM copy {result['hbm']['tb_s']:.2f} TB/s")
    for d in result["dense"]:
        print(f"dense 8192^3 {d['dtype']}: " + (f"{d['tflops']:.0f} TFLOP/s" if "tflops" in d else d["error"]))
    print(f"{'gemm':>4} {'dtype':>5} {'grp':>3} " + " ".join(f"{m:>7}" for m in TOKENS) + "   (TFLOP/s by tokens per expert)")
    for dtype in ["bf16", "fp8"]:
        for name in EXPERT_GEMMS:
            for groups in [1, GROUP]:
                row = [r for r in result["experts"] if r["dtype"] == dtype and r["gemm"] == name and r["groups"] == groups]
                cells = " ".join(f"{r['tflops']:7.0f}" if "tflops" in r else "    err" for r in row)
                print(f"{name:>4} {dtype:>5} {groups:>3} {cells}")
    print(f"wall {result['wall_s']:.0f} s; all numbers in {args.out}")


if __name__ == "__main__":
    main()
