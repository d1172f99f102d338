//! `epsim plot`: SVG charts of a sweep's summary.csv: the Pareto frontier per group (the
//! shape of NVIDIA's Wide-EP Figure 5) and TTFT / TPOT against load.

use super::output::{UsageError, note};
use epsim::sweep::frontier;
use epsim::sweep::plot::{Chart, Series, svg};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub struct PlotArgs<'a> {
    pub dir: &'a Path,
    pub x: &'a str,
    pub y: &'a str,
    pub by: Vec<String>,
    pub load: Option<String>,
}

pub fn run(a: &PlotArgs) -> anyhow::Result<ExitCode> {
    let file = a.dir.join("summary.csv");
    let text = epsim::input::read_text(&file)?;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| UsageError(format!("{}: {e}", file.display())))?
        .iter()
        .map(str::to_owned)
        .collect();
    let params: Vec<String> = headers
        .iter()
        .filter_map(|h| h.strip_prefix("param_").map(str::to_owned))
        .collect();
    let load = match &a.load {
        Some(l) => l.clone(),
        None => params.last().cloned().ok_or_else(|| {
            UsageError(format!(
                "{}: no param_ columns: plot needs a sweep's summary.csv",
                file.display()
            ))
        })?,
    };
    let by: Vec<String> = if a.by.is_empty() {
        params.iter().filter(|p| **p != load).cloned().collect()
    } else {
        a.by.clone()
    };
    let label = |group: &[(String, String)]| {
        group
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut written: Vec<PathBuf> = Vec::new();
    let fronts = frontier::frontiers(&text, a.x, a.y, &by).map_err(UsageError)?;
    let series: Vec<Series> = fronts
        .iter()
        .map(|f| Series {
            label: label(&f.group),
            points: f.points.clone(),
        })
        .collect();
    let out = a.dir.join("frontier.svg");
    std::fs::write(
        &out,
        svg(&Chart {
            title: &format!("Pareto frontier: {} vs {}", a.y, a.x),
            x_label: a.x,
            y_label: a.y,
            series: &series,
        }),
    )?;
    written.push(out);
    for (metric, name) in [("ttft_ms_p99", "ttft.svg"), ("tpot_ms_p99", "tpot.svg")] {
        // Every row, not a frontier: the curve of the metric against load, per group.
        let groups = frontier::rows(&text, &load, metric, &by).map_err(UsageError)?;
        let series: Vec<Series> = groups
            .into_iter()
            .map(|(group, points)| Series {
                label: label(&group),
                points,
            })
            .collect();
        let out = a.dir.join(name);
        std::fs::write(
            &out,
            svg(&Chart {
                title: &format!("{metric} vs {load}"),
                x_label: &load,
                y_label: metric,
                series: &series,
            }),
        )?;
        written.push(out);
    }
    note(
        &written
            .iter()
            .map(|f| format!("wrote {}\n", f.display()))
            .collect::<String>(),
    )?;
    Ok(ExitCode::SUCCESS)
}
