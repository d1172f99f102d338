//! `epsim accuracy`: runs sourced cases and says how far epsim is from what was measured.
//! Exit 0 when every case is within its tolerance, 1 when any is not, 2 for bad input.

mod case;
mod run;

use super::output::{emit, json};
use case::Case;
use epsim::cost::accuracy::ErrorStats;
use serde::Serialize;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// One judged number: a case's value, or one op class of a kernels case.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub case: String,
    pub metric: String,
    /// The published value; for an op class, 0 (the target is no error).
    pub published: f64,
    /// What epsim gives; for an op class, the median |error| in percent.
    pub simulated: f64,
    /// Signed error in percent; for an op class, its median |error|.
    pub error_pct: f64,
    pub tolerance_pct: f64,
    pub within: bool,
    /// For an op class: how many held-out shapes, and the roofline's median |error| (%).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shapes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roofline_error_pct: Option<f64>,
    pub source: String,
}

pub fn run(paths: &[PathBuf], format: Format) -> anyhow::Result<ExitCode> {
    let files = case::expand(paths)?;
    let mut cases: Vec<Case> = Vec::new();
    let mut diags = epsim::input::Diagnostics::new();
    for f in &files {
        match case::load(f) {
            Ok(c) => cases.push(c),
            Err(d) => diags.append(d),
        }
    }
    if !diags.is_empty() {
        return Err(diags.into());
    }
    let mut outcomes = Vec::new();
    for c in &cases {
        outcomes.extend(run::evaluate(c)?);
    }
    let text = match format {
        Format::Table => table(&outcomes),
        Format::Csv => csv(&outcomes)?,
        Format::Json => json(&serde_json::json!({
            "cases": outcomes,
            "set": set_stats(&outcomes),
        }))?,
    };
    emit(&text)?;
    Ok(if outcomes.iter().all(|o| o.within) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Median |error|, MAPE and worst case over the cases with a published value.
fn set_stats(outcomes: &[Outcome]) -> Option<serde_json::Value> {
    let values: Vec<&Outcome> = outcomes.iter().filter(|o| o.shapes.is_none()).collect();
    let errors: Vec<f64> = values.iter().map(|o| o.error_pct).collect();
    let s = ErrorStats::of(&errors)?;
    let worst = values
        .iter()
        .max_by(|a, b| a.error_pct.abs().total_cmp(&b.error_pct.abs()))?;
    Some(serde_json::json!({
        "cases": s.count,
        "median_abs_error_pct": s.median_abs,
        "mape_pct": s.mean_abs,
        "worst_error_pct": s.worst,
        "worst_case": worst.case,
    }))
}

fn verdict(o: &Outcome) -> &'static str {
    if o.within { "ok" } else { "OUTSIDE" }
}

fn table(outcomes: &[Outcome]) -> String {
    let mut t = String::new();
    let values: Vec<&Outcome> = outcomes.iter().filter(|o| o.shapes.is_none()).collect();
    if !values.is_empty() {
        let _ = writeln!(
            t,
            "{:<44} {:<34} {:>11} {:>11} {:>8} {:>6}",
            "case", "metric", "published", "simulated", "error", "tol"
        );
        for o in &values {
            let _ = writeln!(
                t,
                "{:<44} {:<34} {:>11.4} {:>11.4} {:>+7.1}% {:>5}%  {}",
                o.case,
                o.metric,
                o.published,
                o.simulated,
                o.error_pct,
                o.tolerance_pct,
                verdict(o)
            );
        }
        if let Some(s) = set_stats(outcomes) {
            let _ = writeln!(
                t,
                "{} cases: median |error| {:.1}%, MAPE {:.1}%, worst {:+.1}% ({})",
                s["cases"],
                s["median_abs_error_pct"].as_f64().unwrap_or(0.0),
                s["mape_pct"].as_f64().unwrap_or(0.0),
                s["worst_error_pct"].as_f64().unwrap_or(0.0),
                s["worst_case"].as_str().unwrap_or("")
            );
        }
    }
    let ops: Vec<&Outcome> = outcomes.iter().filter(|o| o.shapes.is_some()).collect();
    if !ops.is_empty() {
        if !values.is_empty() {
            t.push('\n');
        }
        let _ = writeln!(
            t,
            "{:<44} {:<12} {:>7} {:>14} {:>14} {:>6}",
            "held-out kernels", "op class", "shapes", "median |error|", "roofline was", "tol"
        );
        for o in ops {
            let _ = writeln!(
                t,
                "{:<44} {:<12} {:>7} {:>13.1}% {:>13.1}% {:>5}%  {}",
                o.case,
                o.metric,
                o.shapes.unwrap_or(0),
                o.error_pct,
                o.roofline_error_pct.unwrap_or(f64::NAN),
                o.tolerance_pct,
                verdict(o)
            );
        }
    }
    t
}

fn csv(outcomes: &[Outcome]) -> anyhow::Result<String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record([
        "case",
        "metric",
        "published",
        "simulated",
        "error_pct",
        "tolerance_pct",
        "within",
        "shapes",
        "roofline_error_pct",
        "source",
    ])?;
    for o in outcomes {
        let opt = |v: Option<String>| v.unwrap_or_default();
        w.write_record([
            o.case.clone(),
            o.metric.clone(),
            o.published.to_string(),
            o.simulated.to_string(),
            o.error_pct.to_string(),
            o.tolerance_pct.to_string(),
            o.within.to_string(),
            opt(o.shapes.map(|s| s.to_string())),
            opt(o.roofline_error_pct.map(|e| e.to_string())),
            o.source.clone(),
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}
