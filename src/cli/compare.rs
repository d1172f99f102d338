//! `epsim compare`: a candidate run against a baseline; exit 1 on a regression.

use super::memory::TableFormat;
use super::output::{UsageError, emit, json};
use epsim::sweep::compare::{self, DEFAULT_METRICS, Metric, Verdict};
use std::path::Path;
use std::process::ExitCode;

/// `2%` or `0.02`.
pub fn parse_tolerance(text: &str) -> Result<f64, String> {
    let value = match text.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
        None => text.trim().parse::<f64>(),
    };
    match value {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!(
            "expected a tolerance such as 2% or 0.02, got \"{text}\""
        )),
    }
}

fn summary(dir: &Path) -> anyhow::Result<String> {
    let file = if dir.is_dir() {
        dir.join("summary.csv")
    } else {
        dir.to_owned()
    };
    Ok(epsim::input::read_text(&file)?)
}

pub fn run(
    baseline: &Path,
    candidate: &Path,
    metrics: Vec<Metric>,
    tolerance: f64,
    format: TableFormat,
) -> anyhow::Result<ExitCode> {
    let metrics = if metrics.is_empty() {
        DEFAULT_METRICS
            .iter()
            .map(|&(c, better)| Metric {
                column: c.to_owned(),
                better,
            })
            .collect()
    } else {
        metrics
    };
    let changes = compare::compare(
        &summary(baseline)?,
        &summary(candidate)?,
        &metrics,
        tolerance,
    )
    .map_err(UsageError)?;
    let regressions = changes.iter().filter(|c| c.is_regression()).count();
    let inconclusive = changes
        .iter()
        .filter(|c| c.verdict == Verdict::Inconclusive)
        .count();
    let text = match format {
        TableFormat::Table => table(&changes, tolerance),
        TableFormat::Json => json(&serde_json::json!({
            "tolerance": tolerance,
            "regressions": regressions,
            "inconclusive": inconclusive,
            "changes": changes.iter().map(|c| serde_json::json!({
                "row": c.row,
                "metric": c.metric,
                "baseline": c.baseline,
                "candidate": c.candidate,
                "change": c.change,
                "interval_low": c.interval.map(|i| i.0),
                "interval_high": c.interval.map(|i| i.1),
                "detectable_change": c.detectable,
                "seeds_baseline": c.seeds.map(|s| s.0),
                "seeds_candidate": c.seeds.map(|s| s.1),
                "verdict": verdict_name(&c.verdict),
            })).collect::<Vec<_>>(),
        }))?,
    };
    emit(&text)?;
    Ok(if regressions > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The verdict as the JSON output names it.
fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::Same => "same",
        Verdict::Better => "better",
        Verdict::WorseWithin => "worse_within_tolerance",
        Verdict::Worse => "regression",
        Verdict::Lost => "regression_no_longer_measured",
        Verdict::Inconclusive => "inconclusive",
    }
}

/// The changes as a table, with the count of regressions.
fn table(changes: &[compare::Change], tolerance: f64) -> String {
    let fmt = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.3}"));
    let width = changes
        .iter()
        .map(|c| c.row.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let replicated = changes.iter().any(|c| c.seeds.is_some());
    let pct = |x: f64| format!("{:+.2}%", x * 100.0);
    let mut text = format!(
        "{:<width$}  {:<22} {:>14} {:>14} {:>9}{}  verdict\n",
        "row",
        "metric",
        if replicated {
            "baseline mean"
        } else {
            "baseline"
        },
        if replicated {
            "candidate mean"
        } else {
            "candidate"
        },
        "change",
        if replicated {
            format!(
                " {:>19} {:>10} {:>6}",
                "95% interval", "detectable", "seeds"
            )
        } else {
            String::new()
        },
    );
    for c in changes {
        let verdict = match c.verdict {
            Verdict::Same => "same",
            Verdict::Better => "better",
            Verdict::WorseWithin => "worse, within tolerance",
            Verdict::Worse => "REGRESSION",
            Verdict::Lost => "REGRESSION (no longer measured)",
            Verdict::Inconclusive => "inconclusive (more seeds, or longer runs)",
        };
        let stats = if replicated {
            let interval = c.interval.map_or("-".to_owned(), |(lo, hi)| {
                format!("[{}, {}]", pct(lo), pct(hi))
            });
            let seeds = c.seeds.map_or("-".to_owned(), |(b, k)| format!("{b}/{k}"));
            let detectable = c
                .detectable
                .map_or("-".to_owned(), |d| format!("{:.1}%", d * 100.0));
            format!(" {interval:>19} {detectable:>10} {seeds:>6}")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{:<width$}  {:<22} {:>14} {:>14} {:>9}{stats}  {verdict}\n",
            c.row,
            c.metric,
            fmt(c.baseline),
            fmt(c.candidate),
            c.change.map_or("-".to_owned(), pct),
        ));
    }
    let regressions = changes.iter().filter(|c| c.is_regression()).count();
    let inconclusive = changes
        .iter()
        .filter(|c| c.verdict == Verdict::Inconclusive)
        .count();
    if replicated {
        text.push_str(
            "\ndetectable: the smallest change these seeds detect with 80% power at 95% confidence; \"same\" rules out no change below it\n",
        );
    }
    text.push_str(&format!(
        "\n{regressions} regressions beyond {:.2}% in {} comparisons{}\n",
        tolerance * 100.0,
        changes.len(),
        if inconclusive > 0 {
            format!("; {inconclusive} inconclusive")
        } else {
            String::new()
        }
    ));
    text
}
