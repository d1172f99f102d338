//! Evaluating one case: scenarios and commands run as child epsim processes (so a case
//! measures exactly what a user's command line gives), kernels cases in process.

use super::Outcome;
use super::case::{Case, Kind};
use crate::cli::output::UsageError;
use epsim::cost::accuracy::{ErrorStats, held_out_errors};
use epsim::cost::kernels::Kernels;
use epsim::cost::profile::KernelProfile;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

pub fn evaluate(case: &Case) -> anyhow::Result<Vec<Outcome>> {
    match &case.kind {
        Kind::Scenario {
            file,
            point,
            column,
        } => {
            let value = scenario_value(case, file, point, column)?;
            Ok(vec![judge(case, column, value * case.multiplier)])
        }
        Kind::Command { args, pointer } => {
            let value = command_value(case, args, pointer)?;
            Ok(vec![judge(case, pointer, value * case.multiplier)])
        }
        Kind::Kernels { dir, gpu, model } => kernels(case, dir, gpu, model.as_deref()),
    }
}

fn judge(case: &Case, metric: &str, simulated: f64) -> Outcome {
    let published = case.published.unwrap_or(f64::NAN);
    let error_pct = 100.0 * (simulated / published - 1.0);
    Outcome {
        case: case.name.clone(),
        metric: metric.to_owned(),
        published,
        simulated,
        error_pct,
        tolerance_pct: case.tolerance_pct,
        within: error_pct.abs() <= case.tolerance_pct,
        shapes: None,
        roofline_error_pct: None,
        source: case.source.clone(),
    }
}

fn fail(case: &Case, what: impl std::fmt::Display) -> anyhow::Error {
    UsageError(format!("{}: {what}", case.file.display())).into()
}

/// Runs epsim with `args` in `cwd`; its stdout, or an error with its stderr.
fn epsim(case: &Case, cwd: &Path, args: &[&std::ffi::OsStr]) -> anyhow::Result<Vec<u8>> {
    let exe = std::env::current_exe()
        .map_err(|e| fail(case, format!("cannot find epsim itself: {e}")))?;
    let out = Command::new(exe)
        .current_dir(cwd)
        .args(args)
        .output()
        .map_err(|e| fail(case, format!("cannot run epsim: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(
            case,
            format!("epsim {:?} failed ({}):\n{stderr}", args, out.status),
        ));
    }
    Ok(out.stdout)
}

fn scenario_value(
    case: &Case,
    file: &Path,
    point: &BTreeMap<String, String>,
    column: &str,
) -> anyhow::Result<f64> {
    let tmp = tempfile::tempdir().map_err(|e| fail(case, format!("no temporary folder: {e}")))?;
    let out = tmp.path().join("out");
    let args = [
        "run".as_ref(),
        file.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--no-progress".as_ref(),
    ];
    // The scenario's path is already relative to this process's folder.
    epsim(case, Path::new("."), &args)?;
    let summary = out.join("summary.csv");
    let mut reader = csv::Reader::from_path(&summary).map_err(|e| fail(case, e))?;
    let header = reader.headers().map_err(|e| fail(case, e))?.clone();
    let col = |name: &str| header.iter().position(|h| h == name);
    let Some(metric) = col(column) else {
        return Err(fail(
            case,
            format!("metric: no column `{column}` in the summary"),
        ));
    };
    for record in reader.records() {
        let record = record.map_err(|e| fail(case, e))?;
        let matches = point.iter().all(|(k, v)| {
            col(&format!("param_{k}")).is_some_and(|i| record.get(i) == Some(v.as_str()))
        });
        if matches {
            let cell = record.get(metric).unwrap_or_default();
            return cell
                .parse::<f64>()
                .map_err(|_| fail(case, format!("metric `{column}` is `{cell}`, not a number")));
        }
    }
    Err(fail(
        case,
        format!("point: no row of the sweep has {point:?}"),
    ))
}

fn command_value(case: &Case, args: &[String], pointer: &str) -> anyhow::Result<f64> {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    all.extend(["--format", "json"].map(std::ffi::OsStr::new));
    let stdout = epsim(case, case.dir(), &all)?;
    let doc: serde_json::Value = serde_json::from_slice(&stdout).map_err(|e| fail(case, e))?;
    doc.pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| {
            fail(
                case,
                format!("metric: `{pointer}` is not a number in the output"),
            )
        })
}

fn kernels(
    case: &Case,
    dir: &Path,
    gpu: &Path,
    model: Option<&Path>,
) -> anyhow::Result<Vec<Outcome>> {
    let spec = epsim::hardware::load_spec(gpu)?;
    let model = model.map(epsim::model::load_model).transpose()?;
    let held = KernelProfile::load(dir)?;
    let priced = Kernels::for_gpu(&spec).map_err(|e| fail(case, e))?;
    let errors = held_out_errors(&priced, &held, model.as_ref());
    let roofline = held_out_errors(&Kernels::roofline_only(&spec), &held, model.as_ref());
    let mut out = Vec::new();
    for (class, e) in &errors {
        let Some(s) = ErrorStats::of(e) else { continue };
        let median = 100.0 * s.median_abs;
        let old = roofline
            .get(class)
            .and_then(|r| ErrorStats::of(r))
            .map(|r| 100.0 * r.median_abs);
        out.push(Outcome {
            case: case.name.clone(),
            metric: (*class).to_owned(),
            published: 0.0,
            simulated: median,
            error_pct: median,
            tolerance_pct: case.tolerance_pct,
            within: median <= case.tolerance_pct,
            shapes: Some(s.count),
            roofline_error_pct: old,
            source: case.source.clone(),
        });
    }
    if out.is_empty() {
        return Err(fail(case, "kernels: no held-out shape could be priced"));
    }
    Ok(out)
}
