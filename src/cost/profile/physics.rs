//! Kernel rows a GPU could not have run: a profile is input, and a row faster than the
//! GPU's peaks (a typo, another GPU's table, warm-cache timings) would make every price
//! built on it impossible without saying so.

use super::{Backend, GEMM_COLUMNS, MLA_DECODE_COLUMNS, load, read_moe};
use crate::cost::compute::Roofline;
use crate::hardware::GpuSpec;
use crate::input::{Diagnostics, Problem};
use crate::model::{Precision, Usage};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How much faster than the GPU's peaks a row may read before it is refused: spec sheets
/// round, and boost clocks run above the rated peak. The shipped rows read at least 0.2%
/// above their floors (MoE blocks near the HBM peak, where the build script cut them).
pub const MARGIN: f64 = 0.10;

/// Folders already checked against a GPU spec (by its name), with their verdicts.
type Checked = BTreeMap<(PathBuf, String), Result<(), Diagnostics>>;
static CHECKED: Mutex<Checked> = Mutex::new(BTreeMap::new());

/// Every GEMM, MoE and decode-MLA row of the profile in `dir` that `gpu` could not have
/// run, located: a GEMM faster than its FLOPs at the dense peak or its weights at the HBM
/// peak; a MoE block faster than the experts its tokens touch at the HBM peak, or than its
/// FLOPs at the dense peak; a decode MLA block faster than its KV cache at the HBM peak.
/// Each by more than [`MARGIN`]. Checked once per folder and GPU spec.
pub fn check(dir: &Path, gpu: &GpuSpec) -> Result<(), Diagnostics> {
    let key = (dir.to_owned(), gpu.name.clone());
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(verdict) = checked.get(&key) {
        return verdict.clone();
    }
    let verdict = scan(dir, gpu);
    checked.insert(key, verdict.clone());
    verdict
}

fn scan(dir: &Path, gpu: &GpuSpec) -> Result<(), Diagnostics> {
    let mut diags = Diagnostics::new();
    let floors = Floors {
        roofline: Roofline::new(gpu),
        hbm_bytes_per_s: gpu.hbm_bandwidth_tb_s * 1e12,
        gpu: &gpu.name,
    };
    let gemm = dir.join("gemm.csv");
    if gemm.exists() {
        // The profile's own load reports unreadable rows; only readable ones are checked.
        for row in load::read(&gemm, &GEMM_COLUMNS).unwrap_or_default() {
            let [m, n, k, us] = row.numbers[..] else {
                continue;
            };
            let p = row.precisions[0];
            let work = Work {
                precision: p,
                flops: 2.0 * m * n * k,
                bytes: p.bytes(n * k, Usage::Weights),
                us,
            };
            floors.judge(&mut diags, &gemm, &row, work);
        }
    }
    // The folder's MoE table and every engine's own.
    let engines = <Backend as clap::ValueEnum>::value_variants().iter();
    let own = engines.filter_map(|b| b.own_moe_tables()).flatten();
    for table in std::iter::once("moe.csv").chain(own) {
        let file = dir.join(table);
        if !file.exists() {
            continue;
        }
        let (per_rank, rows) = read_moe(&file).unwrap_or_default();
        for row in rows {
            let [hidden, inter, topk, experts, ep, t, us] = row.numbers[..] else {
                continue;
            };
            let p = row.precisions[0];
            // Each rank computes its share of the group's rows over its local experts.
            let rows = if per_rank { t * topk } else { t * topk / ep };
            let expert = 3.0 * hidden * inter;
            let touched = (experts / ep).min(rows);
            let work = Work {
                precision: p,
                flops: 2.0 * rows * expert,
                bytes: p.bytes(touched * expert, Usage::Weights),
                us,
            };
            floors.judge(&mut diags, &file, &row, work);
        }
    }
    mla_decode(dir, &floors, &mut diags);
    diags.into_result(())
}

/// Decode MLA blocks: each request's latent KV (the `mla_model.csv` shape) read from HBM.
fn mla_decode(dir: &Path, floors: &Floors, diags: &mut Diagnostics) {
    let file = dir.join("mla_decode.csv");
    let Some(shape) = super::cached(dir).ok().and_then(|p| p.mla_shape) else {
        return;
    };
    if !file.exists() {
        return;
    }
    let latent = (shape.kv_lora_rank + shape.qk_rope_head_dim) as f64;
    for row in load::read(&file, &MLA_DECODE_COLUMNS).unwrap_or_default() {
        let [_, batch, kv_len, us] = row.numbers[..] else {
            continue;
        };
        let kv = row.precisions[0];
        let work = Work {
            precision: kv,
            flops: 0.0,
            bytes: kv.bytes(batch * kv_len * latent, Usage::KvCache),
            us,
        };
        floors.judge(diags, &file, &row, work);
    }
}

struct Floors<'a> {
    roofline: Roofline<'a>,
    hbm_bytes_per_s: f64,
    gpu: &'a str,
}

/// What one row measured: its FLOPs and the bytes it must read from HBM (weights, KV
/// cache), in `us`.
struct Work {
    precision: Precision,
    flops: f64,
    bytes: f64,
    us: f64,
}

impl Floors<'_> {
    /// Records `row` when it beats both floors' larger by more than [`MARGIN`].
    fn judge(&self, diags: &mut Diagnostics, file: &Path, row: &load::Row, work: Work) {
        let Work {
            precision: p,
            flops,
            bytes,
            us,
        } = work;
        let peak = self.roofline.peak_flops(p);
        let compute_us = flops / peak * 1e6;
        let memory_us = bytes / self.hbm_bytes_per_s * 1e6;
        let floor_us = compute_us.max(memory_us);
        if us >= floor_us * (1.0 - MARGIN) {
            return;
        }
        let why = if compute_us >= memory_us {
            format!(
                "{:.3e} FLOP at the {} dense {} peak of {:.0} TFLOP/s",
                flops,
                self.gpu,
                p.name(),
                peak / 1e12
            )
        } else {
            format!(
                "{:.3e} B of {} weights or KV cache at its HBM peak of {} TB/s",
                bytes,
                p.name(),
                self.hbm_bytes_per_s / 1e12
            )
        };
        diags.push(
            file,
            Problem::new(
                row.at,
                "latency_us",
                format!(
                    "{us} us is faster than {} can run it: {why} take {floor_us:.3} us (a row may beat that by {:.0}% at most)",
                    self.gpu,
                    MARGIN * 100.0
                ),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::gpu;

    #[test]
    fn every_shipped_row_is_possible_on_its_gpu() {
        for name in [
            "b200-gb200",
            "b200-hgx",
            "b300-gb300",
            "b300-hgx",
            "h200-sxm",
            "h100-sxm",
            "h800-sxm",
        ] {
            let g = gpu(name);
            let dir = g.profile.clone().unwrap();
            if let Err(e) = check(&dir, &g) {
                panic!("{name}: {e}");
            }
        }
    }

    #[test]
    fn rows_faster_than_the_peaks_are_refused_where_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let tables = [
            // H100: 3.35 TB/s, 1,979 FP8 TFLOP/s. An 8,192^3 FP8 GEMM needs >= 556 us of
            // compute; 7,168 x 65,536 FP8 weights (0.47 GB) >= 140 us of HBM.
            (
                "gemm.csv",
                "# made up\ndtype,m,n,k,latency_us\nfp8,8192,8192,8192,100\nfp8,1,65536,7168,20\nfp8,1,1024,1024,5\n",
            ),
            // EP8, 32 local experts all touched: 32 x 3 x 7,168 x 2,048 FP8 bytes = 1.41 GB,
            // >= 421 us at 3.35 TB/s.
            (
                "moe.csv",
                "dtype,hidden,inter,topk,experts,ep,tokens,latency_us\nfp8,7168,2048,8,256,8,1024,100\nfp8,7168,2048,8,256,8,1,60\n",
            ),
            (
                "mla_model.csv",
                "hidden,q_lora_rank,kv_lora_rank,qk_nope_head_dim,qk_rope_head_dim,v_head_dim\n7168,1536,512,128,64,128\n",
            ),
            (
                "mla_decode.csv",
                "kv_dtype,gemm_dtype,heads,batch,kv_len,latency_us\nfp8,bf16,128,1,2048,40\nfp8,bf16,128,128,8192,50\n",
            ),
        ];
        for (name, text) in tables {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let err = check(dir.path(), &gpu("h100-sxm")).unwrap_err().to_string();
        for needle in [
            "gemm.csv:3:20: latency_us: 100 us is faster than h100-sxm can run it: 1.100e12 FLOP at the h100-sxm dense fp8 peak of 1979 TFLOP/s",
            "gemm.csv:4:18: latency_us: 20 us is faster than h100-sxm can run it:",
            "moe.csv:2:28: latency_us: 100 us is faster than h100-sxm can run it:",
            "B of fp8 weights or KV cache at its HBM peak of 3.35 TB/s",
            // 128 requests x 8,192 tokens x 576 latent FP8 values: 604 MB, >= 180 us.
            "mla_decode.csv:3:23: latency_us: 50 us is faster than h100-sxm can run it:",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in\n{err}");
        }
        // The tiny GEMM and the one-token MoE block (one expert's 44 MB: 13 us) are fine.
        assert!(!err.contains("gemm.csv:5:"), "{err}");
        assert!(!err.contains("moe.csv:3:"), "{err}");
        assert!(!err.contains("mla_decode.csv:2:"), "{err}");
    }
}
