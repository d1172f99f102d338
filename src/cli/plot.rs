//! `epsim plot`: charts of a sweep's summary.csv, as SVG and PNG: the Pareto frontier per
//! group (the shape of NVIDIA's Wide-EP Figure 5) and TTFT / TPOT against load, replicate
//! seeds averaged.

use super::output::{UsageError, note};
use epsim::sweep::frontier;
use epsim::sweep::plot::{self, Chart, Series};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub struct PlotArgs<'a> {
    pub dir: &'a Path,
    pub x: &'a str,
    pub y: &'a str,
    pub by: Vec<String>,
    pub load: Option<String>,
    pub colour_by: Option<String>,
    pub dash_by: Option<String>,
    pub at: Option<f64>,
}

pub fn run(a: &PlotArgs) -> anyhow::Result<ExitCode> {
    let file = a.dir.join("summary.csv");
    let text = epsim::input::read_text(&file)?;
    // The sweep's axes; its replicate seeds are averaged, never drawn as lines of their own.
    let params =
        frontier::sweep_axes(&text).map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
    let load = match &a.load {
        Some(l) => l.clone(),
        None => params.last().cloned().ok_or_else(|| {
            UsageError(format!(
                "{}: no param_ columns: plot needs a sweep's summary.csv",
                file.display()
            ))
        })?,
    };
    let others = || params.iter().filter(|p| **p != load);
    let by: Vec<String> = match a.by.is_empty() {
        true => others().cloned().collect(),
        false => a.by.clone(),
    };
    let mut written: Vec<PathBuf> = Vec::new();
    let means = frontier::replicate_means(&text, a.x, a.y, &by, &load).map_err(UsageError)?;
    super::frontier::left_out_note(&file, &text, a.x, a.y)?;
    let fronts: Vec<_> = means
        .into_iter()
        .map(|(g, points)| (g, frontier::frontier(&points)))
        .collect();
    let series = styled(&fronts, &by, a.colour_by.as_deref(), a.dash_by.as_deref())?;
    let title = format!(
        "Pareto frontier: {} against {}",
        plot::axis_title(a.y),
        plot::axis_title(a.x)
    );
    written.extend(
        plot::write(
            &Chart {
                title: &title,
                x_title: &plot::axis_title(a.x),
                y_title: &plot::axis_title(a.y),
                series: &series,
                at_x: a.at,
            },
            &a.dir.join("frontier"),
        )
        .map_err(anyhow::Error::msg)?,
    );
    // Every load, not a frontier: the metric's curve against load, one line per setting of
    // the sweep's other axes too (a curve through two MTP depths' points would zigzag).
    let mut lines = by.clone();
    lines.extend(others().filter(|p| !by.contains(p)).cloned());
    for (metric, name) in [("ttft_ms_p99", "ttft"), ("tpot_ms_p99", "tpot")] {
        let groups =
            frontier::replicate_means(&text, &load, metric, &lines, &load).map_err(UsageError)?;
        let series = styled(
            &groups,
            &lines,
            a.colour_by.as_deref(),
            a.dash_by.as_deref(),
        )?;
        let title = format!(
            "{} against {}",
            plot::axis_title(metric),
            plot::axis_title(&load)
        );
        written.extend(
            plot::write(
                &Chart {
                    title: &title,
                    x_title: &plot::axis_title(&load),
                    y_title: &plot::axis_title(metric),
                    series: &series,
                    at_x: None,
                },
                &a.dir.join(name),
            )
            .map_err(anyhow::Error::msg)?,
        );
    }
    note(
        &written
            .iter()
            .map(|f| format!("wrote {}\n", f.display()))
            .collect::<String>(),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Series from groups: the colour from the value of `colour_by` (default: the first
/// grouping column), the dash from `dash_by` (default: the first other column that varies
/// among groups of one colour), labelled by the colour's column and those that vary among
/// groups of one colour.
fn styled(
    groups: &[frontier::Group],
    by: &[String],
    colour_by: Option<&str>,
    dash_by: Option<&str>,
) -> Result<Vec<Series>, UsageError> {
    let value = |g: &frontier::Group, col: &str| {
        g.0.iter()
            .find(|(k, _)| k == col)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    for (flag, col) in [("--colour-by", colour_by), ("--dash-by", dash_by)] {
        if let Some(c) = col.filter(|c| !by.iter().any(|b| b == c)) {
            return Err(UsageError(format!(
                "{flag} {c}: not a grouping column (they are: {})",
                by.join(", ")
            )));
        }
    }
    let colour_col = colour_by.map(str::to_owned).or_else(|| by.first().cloned());
    // Whether `col` takes two values among groups that agree on every column of `fixed`.
    let varies_within = |col: &String, fixed: &[Option<String>]| {
        groups.iter().any(|g| {
            groups.iter().any(|h| {
                fixed.iter().flatten().all(|c| value(g, c) == value(h, c))
                    && value(g, col) != value(h, col)
            })
        })
    };
    let dash_col = dash_by.map(str::to_owned).or_else(|| {
        by.iter()
            .filter(|b| Some(*b) != colour_col.as_ref())
            .find(|b| varies_within(b, std::slice::from_ref(&colour_col)))
            .cloned()
    });
    // The label names the colour's and dash's columns and those that vary among lines of
    // one colour and dash (a column that moves with them, as a zipped axis does, would only
    // repeat them).
    let styled_by = [colour_col.clone(), dash_col.clone()];
    let varying: Vec<&String> = by
        .iter()
        .filter(|b| {
            let varies = groups.iter().any(|g| value(g, b) != value(&groups[0], b));
            varies && (styled_by.contains(&Some((*b).clone())) || varies_within(b, &styled_by))
        })
        .collect();
    let mut colours: Vec<String> = Vec::new();
    let mut dashes: Vec<String> = Vec::new();
    let index = |seen: &mut Vec<String>, v: String| match seen.iter().position(|s| *s == v) {
        Some(i) => i,
        None => {
            seen.push(v);
            seen.len() - 1
        }
    };
    Ok(groups
        .iter()
        .map(|g| Series {
            label: varying
                .iter()
                .map(|b| format!("{b}={}", value(g, b)))
                .collect::<Vec<_>>()
                .join(" "),
            colour: colour_col
                .as_ref()
                .map_or(0, |c| index(&mut colours, value(g, c))),
            dash: dash_col
                .as_ref()
                .map_or(0, |c| index(&mut dashes, value(g, c))),
            points: g.1.clone(),
        })
        .collect())
}
