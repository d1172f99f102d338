//! GPU specifications: peak dense tensor throughput per data type, HBM capacity and
//! bandwidth, NVLink bandwidth, and the achieved fractions of those peaks. One YAML file per
//! GPU under `topologies/gpus/`, named after the spec (`b200-gb200.yaml` holds
//! `name: b200-gb200`); topologies refer to them by name. Achieved fractions are shared by
//! a GPU family (`topologies/gpus/families/hopper.yaml`), so one calibration serves all.

use crate::input::{self, At, Diagnostics, Problem};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One GPU model. Rates are per GPU; NVLink is per direction.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    pub name: String,
    /// Free text: what the part is and where its numbers come from.
    #[serde(default)]
    pub description: String,
    /// HBM capacity as the vendor states it, in GB (1e9 bytes).
    pub hbm_gb: f64,
    /// Capacity usable by applications, in GiB (2^30 bytes), where a source gives it.
    #[serde(default)]
    pub hbm_usable_gib: Option<f64>,
    /// Peak HBM bandwidth, TB/s (1e12 bytes per second).
    pub hbm_bandwidth_tb_s: f64,
    /// Peak dense (not 2:4 sparse) tensor throughput, TFLOP/s.
    pub dense_tflops: DenseTflops,
    /// NVLink bandwidth per direction, summed over the GPU's links, GB/s.
    pub nvlink_gb_s: f64,
    /// Streaming multiprocessors.
    pub sms: u32,
    /// Achieved fractions of peak, from the GPU's family file.
    pub efficiency: Efficiency,
    /// Folder of measured kernel latencies (`cost::profile`), resolved from the spec file's
    /// `profile` field; `None` prices every op by the roofline.
    #[serde(default)]
    pub profile: Option<PathBuf>,
}

/// What kernels achieve of the peaks, for one GPU family.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Efficiency {
    /// The family's name (`hopper`, `blackwell`).
    pub name: String,
    /// Large GEMMs, as a fraction of the dense tensor peak of their data type.
    pub gemm_peak_fraction: f64,
    /// Attention arithmetic, as a fraction of the BF16 dense peak.
    pub attention_peak_fraction: f64,
    /// Memory-bound kernels, as a fraction of peak HBM bandwidth.
    pub hbm_fraction: f64,
    /// Token rows per MMA tile: a GEMM's rows are padded up to a multiple of this.
    pub mma_tile_rows: u32,
    /// Gap between two ops of an iteration replayed as a CUDA graph with programmatic
    /// dependent launch, microseconds: paid once per op boundary (the kernel tables hold
    /// the gaps inside each op).
    pub launch_gap_us: f64,
    /// Achieved fraction of NVLink bandwidth for all-to-all traffic.
    pub nvlink_efficiency: f64,
}

/// Peak dense tensor throughput per data type, TFLOP/s; `None` where the GPU has no such
/// tensor-core format (Hopper has no FP4).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DenseTflops {
    #[serde(default)]
    pub fp4: Option<f64>,
    pub fp8: f64,
    pub bf16: f64,
}

/// The raw file: like [`GpuSpec`] but with positions, so range checks can point at lines.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuSpecFile {
    name: At<String>,
    #[serde(default)]
    description: String,
    hbm_gb: At<f64>,
    #[serde(default)]
    hbm_usable_gib: Option<At<f64>>,
    hbm_bandwidth_tb_s: At<f64>,
    dense_tflops: DenseTflopsFile,
    nvlink_gb_s: At<f64>,
    sms: At<u32>,
    /// Family file in `families/` beside the spec.
    family: At<String>,
    /// Kernel profile folder, relative to the spec file.
    #[serde(default)]
    profile: Option<At<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenseTflopsFile {
    #[serde(default)]
    fp4: Option<At<f64>>,
    fp8: At<f64>,
    bf16: At<f64>,
}

/// The file that holds spec `name` in directory `dir`.
pub fn spec_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.yaml"))
}

/// Names of the specs in `dir` (file stems of `*.yaml`), sorted; empty if unreadable.
pub fn available_specs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            (path.extension()? == "yaml").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}

/// Ranges a GPU spec's numbers must fall in: a thousandfold either way around the parts of
/// the reference (section 2: H100 80 GB, 3.35 TB/s, 900 GB/s NVLink, ~1,000 BF16 TFLOP/s;
/// B300 288 GB, 8 TB/s, 1.8 TB/s NVLink, ~15,000 FP4 TFLOP/s). Beyond them a value is a
/// typo (a unit off, `1e-300`), and would price a machine that cannot exist.
const PLAUSIBLE_HBM_GB: (f64, f64) = (0.08, 288_000.0);
const PLAUSIBLE_HBM_TB_S: (f64, f64) = (0.003, 8_000.0);
const PLAUSIBLE_NVLINK_GB_S: (f64, f64) = (0.9, 1_800_000.0);
const PLAUSIBLE_TFLOPS: (f64, f64) = (1.0, 15_000_000.0);

/// Reads and checks one spec file; every problem is reported at once.
pub fn load_spec(file: &Path) -> Result<GpuSpec, Diagnostics> {
    let raw: GpuSpecFile = input::read_yaml(file)?;
    let mut diags = Diagnostics::new();
    let mut positive = |path: &str, v: &At<f64>| {
        if !(v.value.is_finite() && v.value > 0.0) {
            diags.push(
                file,
                Problem::new(
                    v.loc,
                    path,
                    format!("must be a number > 0, got {}", v.value),
                ),
            );
        }
    };
    positive("hbm_gb", &raw.hbm_gb);
    positive("hbm_bandwidth_tb_s", &raw.hbm_bandwidth_tb_s);
    positive("nvlink_gb_s", &raw.nvlink_gb_s);
    positive("dense_tflops.fp8", &raw.dense_tflops.fp8);
    positive("dense_tflops.bf16", &raw.dense_tflops.bf16);
    if let Some(fp4) = &raw.dense_tflops.fp4 {
        positive("dense_tflops.fp4", fp4);
    }
    if let Some(usable) = &raw.hbm_usable_gib {
        positive("hbm_usable_gib", usable);
    }
    // Positive but no hardware: a thousandfold beyond the reference's parts either way.
    let mut plausible = |path: &str, v: &At<f64>, (lo, hi): (f64, f64)| {
        if v.value > 0.0 && v.value.is_finite() && !(lo..=hi).contains(&v.value) {
            diags.push(
                file,
                Problem::new(
                    v.loc,
                    path,
                    format!(
                        "{:?} is no GPU's: expected {lo} to {hi} (a thousandfold beyond today's parts either way)",
                        v.value
                    ),
                ),
            );
        }
    };
    plausible("hbm_gb", &raw.hbm_gb, PLAUSIBLE_HBM_GB);
    plausible(
        "hbm_bandwidth_tb_s",
        &raw.hbm_bandwidth_tb_s,
        PLAUSIBLE_HBM_TB_S,
    );
    plausible("nvlink_gb_s", &raw.nvlink_gb_s, PLAUSIBLE_NVLINK_GB_S);
    for (path, v) in [
        ("dense_tflops.fp8", Some(&raw.dense_tflops.fp8)),
        ("dense_tflops.bf16", Some(&raw.dense_tflops.bf16)),
        ("dense_tflops.fp4", raw.dense_tflops.fp4.as_ref()),
    ] {
        if let Some(v) = v {
            plausible(path, v, PLAUSIBLE_TFLOPS);
        }
    }
    if raw.sms.value == 0 {
        diags.push(file, Problem::new(raw.sms.loc, "sms", "must be at least 1"));
    }
    let efficiency = load_family_of(file, &raw.family, &mut diags);
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if raw.name.value != stem {
        diags.push(
            file,
            Problem::new(
                raw.name.loc,
                "name",
                format!(
                    "the spec is named `{}` but its file is `{stem}.yaml`; topologies find specs by file name",
                    raw.name.value
                ),
            ),
        );
    }
    let profile = raw.profile.as_ref().map(|p| {
        let dir = file.parent().unwrap_or(Path::new(".")).join(&p.value);
        if !dir.is_dir() {
            diags.push(
                file,
                Problem::new(
                    p.loc,
                    "profile",
                    format!("no kernel profile folder {}", dir.display()),
                ),
            );
        }
        dir
    });
    let Some(efficiency) = efficiency else {
        return Err(diags.into_error());
    };
    diags.into_result(GpuSpec {
        name: raw.name.value,
        description: raw.description,
        hbm_gb: raw.hbm_gb.value,
        hbm_usable_gib: raw.hbm_usable_gib.map(|v| v.value),
        hbm_bandwidth_tb_s: raw.hbm_bandwidth_tb_s.value,
        dense_tflops: DenseTflops {
            fp4: raw.dense_tflops.fp4.map(|v| v.value),
            fp8: raw.dense_tflops.fp8.value,
            bf16: raw.dense_tflops.bf16.value,
        },
        nvlink_gb_s: raw.nvlink_gb_s.value,
        sms: raw.sms.value,
        efficiency,
        profile,
    })
}

/// The family file a spec names, reporting a missing or invalid one at the `family` field.
fn load_family_of(
    spec_file: &Path,
    family: &At<String>,
    diags: &mut Diagnostics,
) -> Option<Efficiency> {
    let dir = spec_file
        .parent()
        .unwrap_or(Path::new("."))
        .join("families");
    let file = dir.join(format!("{}.yaml", family.value));
    if !file.is_file() {
        let known = available_specs(&dir).join(", ");
        diags.push(
            spec_file,
            Problem::new(
                family.loc,
                "family",
                format!("no family file {} (known: {known})", file.display()),
            ),
        );
        return None;
    }
    match load_family(&file) {
        Ok(e) => Some(e),
        Err(e) => {
            diags.append(e);
            None
        }
    }
}

/// Reads and checks a family file of achieved fractions.
pub fn load_family(file: &Path) -> Result<Efficiency, Diagnostics> {
    let raw: EfficiencyFile = input::read_yaml(file)?;
    let mut diags = Diagnostics::new();
    let mut bad = |v: &At<f64>, name: &str, ok: bool, what: &str| {
        if !ok {
            diags.push(
                file,
                Problem::new(v.loc, name, format!("{what}, got {}", v.value)),
            );
        }
    };
    for (name, v) in [
        ("gemm_peak_fraction", &raw.gemm_peak_fraction),
        ("attention_peak_fraction", &raw.attention_peak_fraction),
        ("hbm_fraction", &raw.hbm_fraction),
        ("nvlink_efficiency", &raw.nvlink_efficiency),
    ] {
        bad(
            v,
            name,
            v.value > 0.0 && v.value <= 1.0,
            "must be a fraction in (0, 1]",
        );
    }
    let o = &raw.launch_gap_us;
    bad(
        o,
        "launch_gap_us",
        o.value.is_finite() && o.value >= 0.0,
        "must be a number >= 0",
    );
    if raw.mma_tile_rows.value == 0 {
        diags.push(
            file,
            Problem::new(raw.mma_tile_rows.loc, "mma_tile_rows", "must be at least 1"),
        );
    }
    diags.into_result(Efficiency {
        name: raw.name,
        gemm_peak_fraction: raw.gemm_peak_fraction.value,
        attention_peak_fraction: raw.attention_peak_fraction.value,
        hbm_fraction: raw.hbm_fraction.value,
        mma_tile_rows: raw.mma_tile_rows.value,
        launch_gap_us: raw.launch_gap_us.value,
        nvlink_efficiency: raw.nvlink_efficiency.value,
    })
}

/// A family file as written, with positions for its checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EfficiencyFile {
    name: String,
    gemm_peak_fraction: At<f64>,
    attention_peak_fraction: At<f64>,
    hbm_fraction: At<f64>,
    mma_tile_rows: At<u32>,
    launch_gap_us: At<f64>,
    nvlink_efficiency: At<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/gpus")
    }

    #[test]
    fn every_shipped_spec_loads() {
        let names = available_specs(&shipped_dir());
        assert!(names.len() >= 5, "{names:?}");
        for name in names {
            let spec = load_spec(&spec_path(&shipped_dir(), &name))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(spec.name, name);
        }
    }

    #[test]
    fn shipped_figures_match_the_reference_table() {
        let load = |n: &str| load_spec(&spec_path(&shipped_dir(), n)).unwrap();
        let b200 = load("b200-gb200");
        assert_eq!(b200.nvlink_gb_s, 900.0);
        assert_eq!(b200.dense_tflops.fp4, Some(10_000.0));
        assert_eq!(b200.hbm_bandwidth_tb_s, 8.0);
        let h800 = load("h800-sxm");
        assert_eq!(h800.nvlink_gb_s, 200.0);
        assert_eq!(h800.dense_tflops.fp4, None);
        assert_eq!(load("h100-sxm").nvlink_gb_s, 450.0);
        assert_eq!(load("h200-sxm").hbm_gb, 141.0);
        assert_eq!(h800.efficiency.name, "hopper");
        assert!((h800.efficiency.gemm_peak_fraction * h800.dense_tflops.fp8 - 1350.0).abs() < 10.0);
        assert_eq!(
            load("h100-sxm").efficiency,
            h800.efficiency,
            "one curve set per family"
        );
        assert_eq!(b200.efficiency.name, "blackwell");
    }

    #[test]
    fn bad_family_values_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fam.yaml");
        std::fs::write(
            &file,
            "name: x\ngemm_peak_fraction: 1.5\nattention_peak_fraction: 0.5\nhbm_fraction: 0\nmma_tile_rows: 0\nlaunch_gap_us: -1\nnvlink_efficiency: 0.8\n",
        )
        .unwrap();
        let err = load_family(&file).unwrap_err().to_string();
        for needle in [
            "fam.yaml:2:21: gemm_peak_fraction: must be a fraction in (0, 1], got 1.5",
            "fam.yaml:4:15: hbm_fraction: must be a fraction in (0, 1], got 0",
            "fam.yaml:5:16: mma_tile_rows: must be at least 1",
            "fam.yaml:6:16: launch_gap_us: must be a number >= 0, got -1",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn bad_values_are_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        std::fs::write(
            &file,
            "name: other\nhbm_gb: 0\nhbm_bandwidth_tb_s: -1\ndense_tflops: {fp8: 1, bf16: -5}\nnvlink_gb_s: 900\nsms: 1\nfamily: volta\n",
        )
        .unwrap();
        let err = load_spec(&file).unwrap_err().to_string();
        for needle in [
            "1:7: name",
            "2:9: hbm_gb: must be a number > 0, got 0",
            "3:21: hbm_bandwidth_tb_s",
            "4:30: dense_tflops.bf16: must be a number > 0, got -5",
            "7:9: family: no family file",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
        // Positive, but no GPU's: each located (`inf` was printed as it was).
        std::fs::write(
            &file,
            "name: other\nhbm_gb: 1e300\nhbm_bandwidth_tb_s: 100000\ndense_tflops: {fp8: 1e-300, bf16: 900}\nnvlink_gb_s: 900\nsms: 1\nfamily: volta\n",
        )
        .unwrap();
        let err = load_spec(&file).unwrap_err().to_string();
        for needle in [
            "2:9: hbm_gb: 1e300 is no GPU's: expected 0.08 to 288000",
            "3:21: hbm_bandwidth_tb_s: 100000.0 is no GPU's",
            "4:21: dense_tflops.fp8: 1e-300 is no GPU's",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
        assert!(!err.contains("bf16: 900"), "{err}");
    }
}
