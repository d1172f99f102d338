//! Kernel profiles: measured latencies of the op classes a serving engine runs, per GPU,
//! interpolated in shape. A profile is a folder of CSV tables (`gemm.csv`, `moe.csv`,
//! `mla_decode.csv`, `mla_prefill.csv`, `allreduce.csv`; any may be absent) named by a GPU spec's `profile`
//! field: TensorRT-LLM's kernels. A subfolder per other engine (`sglang/`) holds that
//! engine's own MoE tables, priced in place of the folder's for instances that run it
//! ([`Backend`]). The shipped ones are derived from silicon measurements by
//! `calibration/build_profiles.py`; `calibration/gpu_calibration.py` writes the same format.
//! Callers ask for an op at a shape and get seconds with their [`Source`]; they never see
//! the tables.

mod grid;
mod load;
pub mod physics;

pub use grid::{Hit, Source};

use crate::input::Diagnostics;
use crate::model::Precision;
use crate::topology::A2aAlgorithm;
use grid::Grid;
use load::Columns;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The shape of a MoE block: what identifies one fused-MoE table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MoeShape {
    pub precision: Precision,
    pub hidden: u64,
    pub inter: u64,
    pub topk: u64,
    pub experts: u64,
}

impl MoeShape {
    /// The routed experts of `model` in `precision`.
    pub fn of(model: &crate::model::ModelConfig, precision: Precision) -> MoeShape {
        MoeShape {
            precision,
            hidden: model.hidden_size,
            inter: model.moe.expert_intermediate_size,
            topk: model.moe.experts_per_token,
            experts: model.moe.routed_experts,
        }
    }
}

/// Whose kernels an instance runs: the engines keep their measured tables apart, and their
/// MoE kernels differ by up to 2x at one shape (on H100 at EP64 and 8,192 tokens, FP8:
/// TensorRT-LLM's fused MoE 247 us, SGLang's DeepGEMM masked GEMM 110 us).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Deserialize,
    Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// TensorRT-LLM's kernels: the profile folder's own tables.
    #[default]
    Trtllm,
    /// SGLang's wide-EP MoE: DeepGEMM's grouped GEMMs fed by DeepEP, from the folder's
    /// `sglang/` tables (`moe_low_latency.csv`, the masked kernel behind DeepEP's
    /// low-latency all-to-all; `moe.csv`, the contiguous kernel behind its normal one);
    /// every other op from the folder's own tables.
    Sglang,
}

impl Backend {
    /// As scenarios and the command line write it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Trtllm => "trtllm",
            Backend::Sglang => "sglang",
        }
    }

    /// The engine's own MoE tables in a profile folder: (the kernel DeepEP's low-latency
    /// all-to-all feeds, the kernel every other feeds); `None` for the folder's own tables.
    pub fn own_moe_tables(self) -> Option<[&'static str; 2]> {
        match self {
            Backend::Trtllm => None,
            Backend::Sglang => Some(["sglang/moe_low_latency.csv", "sglang/moe.csv"]),
        }
    }

    /// The MoE table this engine prices from when `feed` is the all-to-all in front of it.
    pub fn moe_table(self, feed: A2aAlgorithm) -> Option<&'static str> {
        let [low_latency, other] = self.own_moe_tables()?;
        Some(if feed == A2aAlgorithm::LowLatency {
            low_latency
        } else {
            other
        })
    }
}

/// The columns of `gemm.csv`.
const GEMM_COLUMNS: Columns = Columns {
    precisions: &["dtype"],
    numbers: &["m", "n", "k", "latency_us"],
};

/// The columns of `mla_decode.csv` and `mla_prefill.csv`.
const MLA_DECODE_COLUMNS: Columns = Columns {
    precisions: &["kv_dtype", "gemm_dtype"],
    numbers: &["heads", "batch", "kv_len", "latency_us"],
};
const MLA_PREFILL_COLUMNS: Columns = Columns {
    precisions: &["kv_dtype", "gemm_dtype"],
    numbers: &["heads", "batch", "isl", "latency_us"],
};

/// A MoE table's rows, and whether it counts tokens per rank (`tokens_per_rank`) rather
/// than over the EP group (`tokens`).
fn read_moe(file: &Path) -> Result<(bool, Vec<load::Row>), Diagnostics> {
    let per_rank = load::names_column(file, "tokens_per_rank");
    let tokens = if per_rank {
        "tokens_per_rank"
    } else {
        "tokens"
    };
    let columns = Columns {
        precisions: &["dtype"],
        numbers: &[
            "hidden",
            "inter",
            "topk",
            "experts",
            "ep",
            tokens,
            "latency_us",
        ],
    };
    Ok((per_rank, load::read(file, &columns)?))
}

/// A fused-MoE table: axes (EP size, tokens of the EP group), or (EP size, tokens per rank)
/// for tables measured at whole tokens per rank (their grid in those axes).
#[derive(Debug, Clone, PartialEq)]
struct MoeTable {
    grid: Grid<2>,
    per_rank: bool,
}

impl MoeShape {
    /// As messages write it, e.g. `fp8 7168x2048, top-8 of 256`.
    pub fn label(&self) -> String {
        format!(
            "{} {}x{}, top-{} of {}",
            self.precision.name(),
            self.hidden,
            self.inter,
            self.topk,
            self.experts
        )
    }
}

/// One measured shape of a profile, as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measurement {
    Gemm {
        precision: Precision,
        m: u64,
        n: u64,
        k: u64,
        seconds: f64,
    },
    Moe {
        shape: MoeShape,
        ep: u64,
        tokens: u64,
        seconds: f64,
    },
    MlaDecode {
        kv: Precision,
        gemm: Precision,
        heads: u64,
        batch: u64,
        kv_len: u64,
        seconds: f64,
    },
    MlaPrefill {
        kv: Precision,
        gemm: Precision,
        heads: u64,
        batch: u64,
        isl: u64,
        seconds: f64,
    },
    AllReduce {
        precision: Precision,
        gpus: u64,
        elements: u64,
        seconds: f64,
    },
}

/// The attention shape the MLA tables measured (`mla_model.csv`): a model's MLA blocks are
/// priced from them only when its shape is this one (any head count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaShape {
    pub hidden: u64,
    pub q_lora_rank: u64,
    pub kv_lora_rank: u64,
    pub qk_nope_head_dim: u64,
    pub qk_rope_head_dim: u64,
    pub v_head_dim: u64,
}

/// An MLA block's table: KV-cache format, GEMM format, heads on the rank.
type MlaKey = (Precision, Precision, u64);

#[derive(Debug, Clone, PartialEq, Default)]
pub struct KernelProfile {
    /// One dense GEMM by format, axes (m tokens, n, k).
    gemm: BTreeMap<Precision, Grid<3>>,
    /// Per format, the fastest of those GEMMs, FLOP/s.
    gemm_ceiling: BTreeMap<Precision, f64>,
    /// The fused MoE block on one rank.
    moe: BTreeMap<MoeShape, MoeTable>,
    /// The shapes whose MoE table is an engine's own ([`cached_for`]), not the folder's.
    pub engine_moe: BTreeSet<MoeShape>,
    /// The whole MLA block of one decode layer, axes (requests, KV length).
    mla_decode: BTreeMap<MlaKey, Grid<2>>,
    /// The whole MLA block of one prefill layer, axes (prompts, prompt length).
    mla_prefill: BTreeMap<MlaKey, Grid<2>>,
    /// An all-reduce within one NVLink domain by format, axes (GPUs, elements).
    allreduce: BTreeMap<Precision, Grid<2>>,
    /// The model shape of the MLA tables; without it they price nothing.
    pub mla_shape: Option<MlaShape>,
    /// Where it was read from, for messages.
    pub dir: PathBuf,
}

const US: f64 = 1e-6;

impl KernelProfile {
    pub fn gemm(&self, p: Precision, m: u64, n: u64, k: u64) -> Option<Hit<3>> {
        self.gemm.get(&p)?.at([m as f64, n as f64, k as f64])
    }

    /// The MoE block for an EP group of `ep` ranks (fractional: `experts / local experts`)
    /// holding `tokens` tokens before dispatch.
    pub fn moe(&self, shape: MoeShape, ep: f64, tokens: f64) -> Option<Hit<2>> {
        let table = self.moe.get(&shape)?;
        if !table.per_rank {
            return table.grid.at([ep, tokens]);
        }
        let mut hit = table.grid.at([ep, tokens / ep])?;
        hit.at[1] *= hit.at[0];
        Some(hit)
    }

    /// The `count` largest token counts `shape`'s table measures, at EP `ep` (between
    /// measured EP sizes, interpolated), as (tokens of the EP group, seconds), fewest tokens
    /// first; a count whose neighbours were not measured is left out.
    pub fn moe_largest(&self, shape: MoeShape, ep: f64, count: usize) -> Vec<(f64, f64)> {
        let Some(table) = self.moe.get(&shape) else {
            return Vec::new();
        };
        let axis = table.grid.axis(1);
        let scale = if table.per_rank { ep } else { 1.0 };
        (axis[axis.len().saturating_sub(count)..].iter())
            .filter_map(|&t| {
                let hit = table.grid.at([ep, t])?;
                Some((t * scale, hit.seconds))
            })
            .collect()
    }

    /// The fastest dense GEMM the profile measures in `p`, FLOP/s: what a grouped GEMM of
    /// the same format can approach with many rows per expert, at most.
    pub fn gemm_ceiling_flops(&self, p: Precision) -> Option<f64> {
        self.gemm_ceiling.get(&p).copied()
    }

    pub fn measures_moe(&self, shape: MoeShape) -> bool {
        self.moe.contains_key(&shape)
    }

    pub fn mla_decode(
        &self,
        kv: Precision,
        gemm: Precision,
        heads: u64,
        batch: u64,
        kv_len: u64,
    ) -> Option<Hit<2>> {
        self.mla_decode
            .get(&(kv, gemm, heads))?
            .at([batch as f64, kv_len as f64])
    }

    pub fn mla_prefill(
        &self,
        kv: Precision,
        gemm: Precision,
        heads: u64,
        batch: u64,
        isl: u64,
    ) -> Option<Hit<2>> {
        self.mla_prefill
            .get(&(kv, gemm, heads))?
            .at([batch as f64, isl as f64])
    }

    /// An all-reduce of `elements` values over `gpus` GPUs.
    pub fn all_reduce(&self, p: Precision, gpus: u64, elements: u64) -> Option<Hit<2>> {
        self.allreduce.get(&p)?.at([gpus as f64, elements as f64])
    }

    /// Every measured shape, table by table in key order.
    pub fn measurements(&self) -> Vec<Measurement> {
        let mut out = Vec::new();
        let u = |v: f64| v as u64;
        for (&precision, g) in &self.gemm {
            out.extend(g.points().map(|([m, n, k], seconds)| Measurement::Gemm {
                precision,
                m: u(m),
                n: u(n),
                k: u(k),
                seconds,
            }));
        }
        for (&shape, t) in &self.moe {
            let scale = |ep: f64| if t.per_rank { ep } else { 1.0 };
            out.extend(
                t.grid
                    .points()
                    .map(|([ep, tokens], seconds)| Measurement::Moe {
                        shape,
                        ep: u(ep),
                        tokens: u(tokens * scale(ep)),
                        seconds,
                    }),
            );
        }
        for (&(kv, gemm, heads), g) in &self.mla_decode {
            out.extend(
                g.points()
                    .map(|([batch, kv_len], seconds)| Measurement::MlaDecode {
                        kv,
                        gemm,
                        heads,
                        batch: u(batch),
                        kv_len: u(kv_len),
                        seconds,
                    }),
            );
        }
        for (&(kv, gemm, heads), g) in &self.mla_prefill {
            out.extend(
                g.points()
                    .map(|([batch, isl], seconds)| Measurement::MlaPrefill {
                        kv,
                        gemm,
                        heads,
                        batch: u(batch),
                        isl: u(isl),
                        seconds,
                    }),
            );
        }
        for (&precision, g) in &self.allreduce {
            out.extend(
                g.points()
                    .map(|([gpus, elements], seconds)| Measurement::AllReduce {
                        precision,
                        gpus: u(gpus),
                        elements: u(elements),
                        seconds,
                    }),
            );
        }
        out
    }

    /// Reads the profile in `dir`; every problem in every table at once.
    pub fn load(dir: &Path) -> Result<KernelProfile, Diagnostics> {
        let mut diags = Diagnostics::new();
        if !dir.is_dir() {
            diags.push_file(dir, "no such kernel profile folder");
            return Err(diags);
        }
        let mut profile = KernelProfile {
            dir: dir.to_owned(),
            ..KernelProfile::default()
        };
        profile.moe = moe_tables(&dir.join("moe.csv"), &mut diags);
        let mut table = |name: &str, columns: Columns| -> Vec<load::Row> {
            let file = dir.join(name);
            if !file.exists() {
                return Vec::new();
            }
            load::read(&file, &columns).unwrap_or_else(|e| {
                diags.append(e);
                Vec::new()
            })
        };
        let gemm = table("gemm.csv", GEMM_COLUMNS);
        profile.gemm = grids(&gemm, |r| {
            (
                r.precisions[0],
                [r.numbers[0], r.numbers[1], r.numbers[2]],
                r.numbers[3],
            )
        });
        profile.gemm_ceiling = (profile.gemm.iter())
            .filter_map(|(&p, g)| {
                let flops = g.points().map(|([m, n, k], s)| 2.0 * m * n * k / s);
                Some((p, flops.max_by(f64::total_cmp)?))
            })
            .collect();
        for (name, columns) in [
            ("mla_decode.csv", MLA_DECODE_COLUMNS),
            ("mla_prefill.csv", MLA_PREFILL_COLUMNS),
        ] {
            let rows = table(name, columns);
            let g = grids(&rows, |r| {
                let n = &r.numbers;
                (
                    (r.precisions[0], r.precisions[1], n[0] as u64),
                    [n[1], n[2]],
                    n[3],
                )
            });
            if name == "mla_decode.csv" {
                profile.mla_decode = g;
            } else {
                profile.mla_prefill = g;
            }
        }
        let allreduce = table(
            "allreduce.csv",
            Columns {
                precisions: &["dtype"],
                numbers: &["gpus", "elements", "latency_us"],
            },
        );
        profile.allreduce = grids(&allreduce, |r| {
            (r.precisions[0], [r.numbers[0], r.numbers[1]], r.numbers[2])
        });
        let shape = table(
            "mla_model.csv",
            Columns {
                precisions: &[],
                numbers: &[
                    "hidden",
                    "q_lora_rank",
                    "kv_lora_rank",
                    "qk_nope_head_dim",
                    "qk_rope_head_dim",
                    "v_head_dim",
                ],
            },
        );
        if shape.len() > 1 {
            diags.push_file(
                &dir.join("mla_model.csv"),
                "one row only: the shape the MLA tables measured",
            );
        }
        profile.mla_shape = shape.first().map(|r| {
            let n = r.numbers.iter().map(|&v| v as u64).collect::<Vec<_>>();
            MlaShape {
                hidden: n[0],
                q_lora_rank: n[1],
                kv_lora_rank: n[2],
                qk_nope_head_dim: n[3],
                qk_rope_head_dim: n[4],
                v_head_dim: n[5],
            }
        });
        diags.into_result(profile)
    }
}

/// The fused-MoE tables of `file` (none when it does not exist), tokens counted over the EP
/// group (`tokens`) or per rank (`tokens_per_rank`).
fn moe_tables(file: &Path, diags: &mut Diagnostics) -> BTreeMap<MoeShape, MoeTable> {
    if !file.exists() {
        return BTreeMap::new();
    }
    let (per_rank, rows) = read_moe(file).unwrap_or_else(|e| {
        diags.append(e);
        (false, Vec::new())
    });
    let grids = grids(&rows, |r| {
        let n = &r.numbers;
        let shape = MoeShape {
            precision: r.precisions[0],
            hidden: n[0] as u64,
            inter: n[1] as u64,
            topk: n[2] as u64,
            experts: n[3] as u64,
        };
        (shape, [n[4], n[5]], n[6])
    });
    (grids.into_iter())
        .map(|(shape, grid)| (shape, MoeTable { grid, per_rank }))
        .collect()
}

/// Groups rows into one grid per key; latencies arrive in microseconds.
fn grids<K: Ord, const D: usize>(
    rows: &[load::Row],
    split: impl Fn(&load::Row) -> (K, [f64; D], f64),
) -> BTreeMap<K, Grid<D>> {
    let mut points: BTreeMap<K, Vec<([f64; D], f64)>> = BTreeMap::new();
    for r in rows {
        let (key, x, us) = split(r);
        points.entry(key).or_default().push((x, us * US));
    }
    points
        .into_iter()
        .map(|(k, p)| (k, Grid::new(&p)))
        .collect()
}

/// Profiles already read, by folder: every instance and sweep point shares one copy.
static CACHE: Mutex<BTreeMap<PathBuf, Arc<KernelProfile>>> = Mutex::new(BTreeMap::new());

/// The profile in `dir`, read once per process.
pub fn cached(dir: &Path) -> Result<Arc<KernelProfile>, Diagnostics> {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cache.get(dir) {
        return Ok(Arc::clone(p));
    }
    let p = Arc::new(KernelProfile::load(dir)?);
    cache.insert(dir.to_owned(), Arc::clone(&p));
    Ok(p)
}

/// Why `backend` cannot price `shape`'s routed experts, split over `moe_tp` GPUs, on a GPU
/// whose profile folder is `dir`; `Ok(None)` when it can. An engine's tables that do not
/// measure the block must not be stood in for by another engine's: that would answer a
/// different question without saying so.
pub fn engine_gap(
    dir: Option<&Path>,
    backend: Backend,
    feed: A2aAlgorithm,
    shape: MoeShape,
    moe_tp: u64,
) -> Result<Option<String>, Diagnostics> {
    let Some(table) = backend.moe_table(feed) else {
        return Ok(None);
    };
    let name = backend.name();
    let Some(dir) = dir else {
        return Ok(Some(format!(
            "the GPU has no kernel profile, so no {name} tables"
        )));
    };
    if moe_tp > 1 {
        return Ok(Some(format!(
            "{name}'s MoE tables measure expert parallelism alone (moe_tp 1), not moe_tp {moe_tp}"
        )));
    }
    let profile = cached_for(dir, backend, feed)?;
    if profile.engine_moe.contains(&shape) {
        return Ok(None);
    }
    let measured: Vec<String> = profile.engine_moe.iter().map(MoeShape::label).collect();
    Ok(Some(format!(
        "{} does not measure these routed experts ({}): it measures {}",
        dir.join(table).display(),
        shape.label(),
        if measured.is_empty() {
            "nothing".to_string()
        } else {
            measured.join(", ")
        }
    )))
}

/// Engine profiles already built, by folder and the engine's MoE table they price from.
type EngineKey = (PathBuf, &'static str);
static ENGINE_CACHE: Mutex<BTreeMap<EngineKey, Arc<KernelProfile>>> = Mutex::new(BTreeMap::new());

/// The profile in `dir` as `backend` runs it behind the all-to-all `feed`: the folder's
/// tables, with the MoE shapes the engine's own table measures ([`Backend::moe_table`])
/// priced from that table instead (listed in `engine_moe`). Read once per process.
pub fn cached_for(
    dir: &Path,
    backend: Backend,
    feed: A2aAlgorithm,
) -> Result<Arc<KernelProfile>, Diagnostics> {
    let base = cached(dir)?;
    let Some(table) = backend.moe_table(feed) else {
        return Ok(base);
    };
    let key = (dir.to_owned(), table);
    let mut cache = ENGINE_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cache.get(&key) {
        return Ok(Arc::clone(p));
    }
    let mut diags = Diagnostics::new();
    let own = moe_tables(&dir.join(table), &mut diags);
    let mut p = (*base).clone();
    p.engine_moe = own.keys().copied().collect();
    p.moe.extend(own);
    let p = Arc::new(diags.into_result(p)?);
    cache.insert(key, Arc::clone(&p));
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(gpu: &str) -> KernelProfile {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("topologies/gpus/profiles")
            .join(gpu);
        KernelProfile::load(&dir).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_shipped_profile_loads_with_all_four_tables() {
        for gpu in [
            "b200-gb200",
            "b200-hgx",
            "b300-gb300",
            "b300-hgx",
            "h200-sxm",
            "h100-sxm",
        ] {
            let p = shipped(gpu);
            assert!(p.gemm.contains_key(&Precision::Fp8), "{gpu}");
            assert!(
                !p.moe.is_empty() && !p.mla_decode.is_empty() && !p.mla_prefill.is_empty(),
                "{gpu}"
            );
            // The MLA tables' model shape: DeepSeek-V3's (reference section 3).
            let shape = p
                .mla_shape
                .unwrap_or_else(|| panic!("{gpu}: no mla_model.csv"));
            assert_eq!(
                (shape.hidden, shape.kv_lora_rank, shape.qk_rope_head_dim),
                (7168, 512, 64)
            );
        }
    }

    #[test]
    fn an_mla_model_file_gives_one_shape() {
        let dir = tempfile::tempdir().unwrap();
        let header =
            "hidden,q_lora_rank,kv_lora_rank,qk_nope_head_dim,qk_rope_head_dim,v_head_dim\n";
        std::fs::write(
            dir.path().join("mla_model.csv"),
            format!("{header}1,2,3,4,5,6\n9,2,3,4,5,6\n"),
        )
        .unwrap();
        let err = KernelProfile::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("mla_model.csv: one row only"), "{err}");
    }

    #[test]
    fn a_measured_gemm_reads_back_in_seconds() {
        // gemm.csv of b200-gb200: bf16, m 8192, n 8192, k 8192 -> 781.2 us (0.7812 ms measured).
        let hit = shipped("b200-gb200")
            .gemm(Precision::Bf16, 8192, 8192, 8192)
            .unwrap();
        assert_eq!(hit.source, Source::Measured);
        assert!((hit.seconds - 781.2e-6).abs() < 1e-9, "{}", hit.seconds);
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_it() {
        let err = KernelProfile::load(Path::new("/no/such/profile"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/no/such/profile: no such kernel profile folder"),
            "{err}"
        );
    }
}
