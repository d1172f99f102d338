//! `epsim frontier`: Pareto frontiers of a summary.csv, per group, and their value at an x.

use super::output::{UsageError, emit, json, note};
use epsim::sweep::frontier::{self, Frontier};
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

pub struct FrontierArgs<'a> {
    pub summary: &'a Path,
    pub x: &'a str,
    pub y: &'a str,
    pub by: Vec<String>,
    pub at: Option<f64>,
    pub ratio: Option<String>,
    pub format: Format,
}

fn group_label(f: &Frontier) -> String {
    if f.group.is_empty() {
        return "all".into();
    }
    f.group
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(a: &FrontierArgs) -> anyhow::Result<ExitCode> {
    let text = epsim::input::read_text(a.summary)?;
    if let (Some(r), Some(x)) = (&a.ratio, a.at) {
        return ratio(a, &text, r, x);
    }
    let groups = frontier::frontiers(&text, a.x, a.y, &a.by)
        .map_err(|e| UsageError(format!("{}: {e}", a.summary.display())))?;
    left_out_note(a.summary, &text, a.x, a.y)?;
    let at = |f: &Frontier| a.at.and_then(|x| frontier::y_at(&f.points, x));
    let range = |f: &Frontier| {
        let xs: Vec<f64> = f.points.iter().map(|p| p.0).collect();
        (
            xs.first().copied().unwrap_or(0.0),
            xs.last().copied().unwrap_or(0.0),
        )
    };
    let out = match a.format {
        Format::Json => json(
            &groups
                .iter()
                .map(|f| {
                    let mut o = serde_json::Map::new();
                    for (k, v) in &f.group {
                        o.insert(k.clone(), v.as_str().into());
                    }
                    o.insert(
                        "frontier".into(),
                        // Each point by its columns' names.
                        f.points
                            .iter()
                            .map(|&(x, y)| {
                                let mut p = serde_json::Map::new();
                                p.insert(a.x.to_owned(), x.into());
                                p.insert(a.y.to_owned(), y.into());
                                serde_json::Value::Object(p)
                            })
                            .collect(),
                    );
                    if let Some(x) = a.at {
                        o.insert("x".into(), x.into());
                        o.insert(
                            "y_at".into(),
                            at(f).map_or(serde_json::Value::Null, Into::into),
                        );
                        if at(f).is_none() {
                            let (lo, hi) = range(f);
                            o.insert(
                                "note".into(),
                                format!(
                                    "{x} is outside this frontier's {} range [{lo}, {hi}]",
                                    a.x
                                )
                                .into(),
                            );
                        }
                    }
                    serde_json::Value::Object(o)
                })
                .collect::<Vec<_>>(),
        )?,
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let mut header: Vec<String> = a.by.clone();
            header.extend([a.x.to_owned(), a.y.to_owned()]);
            if a.at.is_some() {
                header = a.by.clone();
                header.extend([format!("{}_at", a.y), a.x.to_owned(), "note".to_owned()]);
            }
            w.write_record(&header)?;
            for f in &groups {
                let key = f.group.iter().map(|(_, v)| v.clone());
                match a.at {
                    Some(x) => {
                        let mut row: Vec<String> = key.collect();
                        row.push(at(f).map_or(String::new(), |y| format!("{y:.4}")));
                        row.push(x.to_string());
                        // An empty value says why in its row, not only by its absence.
                        row.push(match at(f) {
                            Some(_) => String::new(),
                            None => {
                                let (lo, hi) = range(f);
                                format!("outside this frontier's {} range [{lo}, {hi}]", a.x)
                            }
                        });
                        w.write_record(&row)?;
                    }
                    None => {
                        for (x, y) in &f.points {
                            let mut row: Vec<String> = key.clone().collect();
                            row.extend([x.to_string(), y.to_string()]);
                            w.write_record(&row)?;
                        }
                    }
                }
            }
            String::from_utf8(w.into_inner()?)?
        }
        Format::Table => {
            let mut t = String::new();
            for f in &groups {
                match a.at {
                    Some(x) => match at(f) {
                        Some(y) => t.push_str(&format!(
                            "{:<28} {} at {} = {x}: {y:.1}\n",
                            group_label(f),
                            a.y,
                            a.x
                        )),
                        None => {
                            let (lo, hi) = range(f);
                            t.push_str(&format!(
                                "{:<28} {x} is outside this frontier's {} range [{lo:.1}, {hi:.1}]\n",
                                group_label(f),
                                a.x
                            ));
                        }
                    },
                    None => {
                        t.push_str(&format!("{} ({} points)\n", group_label(f), f.points.len()));
                        for (x, y) in &f.points {
                            t.push_str(&format!("  {}={x:.2}  {}={y:.2}\n", a.x, a.y));
                        }
                    }
                }
            }
            if let (Some(x), Some(first), Some(last)) = (a.at, groups.first(), groups.last())
                && groups.len() > 1
            {
                t.push_str(&ratio_line(x, first, last, at(first), at(last)));
            }
            t
        }
    };
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// The help's promise for `--at`: the last group's value over the first's.
fn ratio_line(
    x: f64,
    first: &Frontier,
    last: &Frontier,
    y0: Option<f64>,
    y1: Option<f64>,
) -> String {
    let (a, b) = (group_label(last), group_label(first));
    match (y1, y0) {
        (Some(y1), Some(y0)) if y0 != 0.0 => format!("{a} / {b} at {x}: {:.2}\n", y1 / y0),
        _ => format!("{a} / {b} at {x}: no ratio (a group has no value there)\n"),
    }
}

/// Says on stderr which rows of `summary` a frontier or plot of `x` and `y` leaves out and
/// which of its points were not steady, so that no point goes missing unnoticed.
pub fn left_out_note(summary: &Path, text: &str, x: &str, y: &str) -> anyhow::Result<()> {
    let l = frontier::left_out(text, x, y)
        .map_err(|e| UsageError(format!("{}: {e}", summary.display())))?;
    if let Some(n) = l.note() {
        note(&format!("{}: {n}\n", summary.display()))?;
    }
    Ok(())
}

/// `--ratio 'A / B' --at X`: per seed, A's frontier value at X over B's; their mean and
/// range, and every seed's, so the headline ratio is one command's output.
fn ratio(a: &FrontierArgs, text: &str, spec: &str, x: f64) -> anyhow::Result<ExitCode> {
    let (top, bottom) = frontier::parse_ratio(spec).map_err(UsageError)?;
    let file = |e: String| UsageError(format!("{}: {e}", a.summary.display()));
    let (num, den) = (
        frontier::side_at(text, a.x, a.y, &top, x).map_err(file)?,
        frontier::side_at(text, a.x, a.y, &bottom, x).map_err(file)?,
    );
    if num.is_empty() || den.is_empty() {
        return Err(UsageError(format!(
            "{}: --ratio '{spec}': no row matches {}",
            a.summary.display(),
            if num.is_empty() {
                "its first side"
            } else {
                "its second side"
            }
        ))
        .into());
    }
    left_out_note(a.summary, text, a.x, a.y)?;
    let mut per_seed = Vec::new();
    let mut ratios = Vec::new();
    for (seed, y1) in &num {
        let y0 = den.iter().find(|(s, _)| s == seed).and_then(|(_, y)| *y);
        let r = match (y1, y0) {
            (Some(y1), Some(y0)) if y0 > 0.0 => {
                ratios.push(y1 / y0);
                format!("{:.2}", y1 / y0)
            }
            _ => "none (a side's frontier does not reach it)".to_owned(),
        };
        per_seed.push(match seed.as_str() {
            "" => r,
            s => format!("seed {s}: {r}"),
        });
    }
    let head = format!("{spec} of {} at {} = {x}", a.y, a.x);
    let text = match ratios.len() {
        0 => format!("{head}: no ratio ({})\n", per_seed.join("; ")),
        n => {
            let mean = epsim::metrics::mean(&ratios);
            let (lo, hi) = ratios
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), &r| (l.min(r), h.max(r)));
            format!(
                "{head}: {mean:.2} (mean of {n} seeds, {lo:.2} to {hi:.2}; {})\n",
                per_seed.join("; ")
            )
        }
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}
