//! Comparing two runs' summary.csv: rows matched by their `param_*` columns, each metric
//! judged in its good direction against a relative tolerance. What CI runs to catch a
//! scheduling-policy change that makes latency or throughput worse.
//!
//! A sweep with `seeds: N` replicates is judged statistically: each metric's mean over the
//! seeds, and the 95% interval of its relative change (see [`super::replicates`]):
//! - regression: the interval lies on the worse side of 0 and the mean change is worse
//!   than the tolerance;
//! - worse within tolerance: on the worse side of 0, by less than the tolerance;
//! - better: the interval lies on the better side of 0;
//! - same: the interval lies within the tolerance on both sides;
//! - inconclusive: none of these; the seeds cannot tell (run more of them, or longer).
//!
//! A single run (or one seed) is judged by its values alone.

use super::replicates::{self, Samples};
use std::collections::BTreeMap;

/// Which way is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub column: String,
    pub better: Better,
}

/// The metrics compared when none are named.
pub const DEFAULT_METRICS: [(&str, Better); 4] = [
    ("output_tok_s_per_gpu", Better::Higher),
    ("tok_s_per_user", Better::Higher),
    ("ttft_ms_p99", Better::Lower),
    ("tpot_ms_p99", Better::Lower),
];

/// `column:higher` or `column:lower`.
pub fn parse_metric(text: &str) -> Result<Metric, String> {
    let (column, way) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("expected COLUMN:higher or COLUMN:lower, got \"{text}\""))?;
    let better = match way {
        "higher" => Better::Higher,
        "lower" => Better::Lower,
        _ => return Err(format!("\"{way}\" in \"{text}\": say higher or lower")),
    };
    Ok(Metric {
        column: column.to_owned(),
        better,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Same,
    Better,
    Worse,
    /// Within tolerance but worse.
    WorseWithin,
    /// Measured in the baseline, not in the candidate.
    Lost,
    /// Replicates whose interval neither clears nor condemns the change.
    Inconclusive,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The row's params, `name=value` joined (or `(run)` for a single run).
    pub row: String,
    pub metric: String,
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    /// Relative change, candidate over baseline minus 1 (of the means, with replicates).
    pub change: Option<f64>,
    /// With replicates: the 95% interval of `change`, and the seeds on each side.
    pub interval: Option<(f64, f64)>,
    /// With replicates: the smallest relative change the seeds would detect (80% power,
    /// 95% confidence): a verdict of "same" says nothing about changes below it.
    pub detectable: Option<f64>,
    pub seeds: Option<(usize, usize)>,
    pub verdict: Verdict,
}

impl Change {
    pub fn is_regression(&self) -> bool {
        matches!(self.verdict, Verdict::Worse | Verdict::Lost)
    }
}

type Table = (Vec<String>, BTreeMap<String, Vec<String>>);

fn read(text: &str, what: &str) -> Result<Table, String> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let headers: Vec<String> = r
        .headers()
        .map_err(|e| format!("{what}: {e}"))?
        .iter()
        .map(str::to_owned)
        .collect();
    let params: Vec<usize> = (0..headers.len())
        .filter(|&i| headers[i].starts_with("param_"))
        .collect();
    let mut rows = BTreeMap::new();
    for record in r.records() {
        let record = record.map_err(|e| format!("{what}: {e}"))?;
        let values: Vec<String> = record.iter().map(str::to_owned).collect();
        let key = params_key(&headers, &values, &params);
        if rows.insert(key.clone(), values).is_some() {
            return Err(format!("{what}: two rows have the params {key}"));
        }
    }
    Ok((headers, rows))
}

/// A row's `param_*` cells at `params` as `name=value` joined, or `(run)` for none.
fn params_key(headers: &[String], values: &[String], params: &[usize]) -> String {
    let key = params
        .iter()
        .map(|&i| {
            format!(
                "{}={}",
                &headers[i][6..],
                values.get(i).map_or("", String::as_str)
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    if key.is_empty() {
        "(run)".to_owned()
    } else {
        key
    }
}

/// Every metric of every baseline row against the candidate's; an error when the two
/// cannot be compared (different params, rows or columns).
pub fn compare(
    baseline: &str,
    candidate: &str,
    metrics: &[Metric],
    tolerance: f64,
) -> Result<Vec<Change>, String> {
    let (bh, brows) = read(baseline, "baseline")?;
    let (ch, crows) = read(candidate, "candidate")?;
    let params = |h: &[String]| {
        h.iter()
            .filter(|c| c.starts_with("param_"))
            .cloned()
            .collect::<Vec<_>>()
    };
    if params(&bh) != params(&ch) {
        return Err(format!(
            "different sweeps: baseline params {:?}, candidate params {:?}",
            params(&bh),
            params(&ch)
        ));
    }
    let missing: Vec<&String> = brows.keys().filter(|k| !crows.contains_key(*k)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} baseline rows are not in the candidate (first: {})",
            missing.len(),
            missing[0]
        ));
    }
    let extra: Vec<&String> = crows.keys().filter(|k| !brows.contains_key(*k)).collect();
    if !extra.is_empty() {
        return Err(format!(
            "the candidate has rows the baseline lacks (first: {})",
            extra[0]
        ));
    }
    let mut columns = Vec::new();
    for m in metrics {
        let find = |h: &[String], what: &str| {
            h.iter()
                .position(|c| *c == m.column)
                .ok_or_else(|| format!("the {what} has no column `{}`", m.column))
        };
        columns.push((m, find(&bh, "baseline")?, find(&ch, "candidate")?));
    }
    if let (Some(bs), Some(cs)) = (column(&bh, "seed"), column(&ch, "seed"))
        && bh.iter().any(|c| c == "param_seed")
    {
        return replicated(&bh, &brows, &crows, &columns, (bs, cs), tolerance);
    }
    let mut changes = Vec::new();
    for (key, brow) in &brows {
        let crow = &crows[key];
        for &(m, bi, ci) in &columns {
            let (b, c) = (
                cell(brow, bi, key, m, "baseline")?,
                cell(crow, ci, key, m, "candidate")?,
            );
            let change = match (b, c) {
                (Some(b), Some(c)) if b != 0.0 => Some(c / b - 1.0),
                (Some(b), Some(c)) if b == c => Some(0.0),
                _ => None,
            };
            changes.push(Change {
                row: key.clone(),
                metric: m.column.clone(),
                baseline: b,
                candidate: c,
                change,
                interval: None,
                detectable: None,
                seeds: None,
                verdict: single_verdict(m.better, b, c, change, tolerance),
            });
        }
    }
    Ok(changes)
}

fn column(headers: &[String], name: &str) -> Option<usize> {
    headers.iter().position(|c| c == name)
}

/// A metric's cell: `None` when empty (nothing measured); NaN, infinity or text is a
/// broken value, neither "same" nor a regression.
fn cell(
    row: &[String],
    i: usize,
    key: &str,
    m: &Metric,
    what: &str,
) -> Result<Option<f64>, String> {
    let text = row.get(i).map_or("", |v| v.trim());
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        // Text is no measurement: read as "no longer measured" it was a false regression.
        _ => Err(format!(
            "the {what}'s row {key} has `{}` = {text}, not a finite number",
            m.column
        )),
    }
}

/// How much worse `x` (a change) is, in the metric's bad direction.
fn worse_by(better: Better, x: f64) -> f64 {
    match better {
        Better::Higher => -x,
        Better::Lower => x,
    }
}

/// One value against one value.
fn single_verdict(
    better: Better,
    b: Option<f64>,
    c: Option<f64>,
    change: Option<f64>,
    tolerance: f64,
) -> Verdict {
    match (b, c, change) {
        (Some(_), None, _) => Verdict::Lost,
        (None, _, _) => Verdict::Same,
        // Baseline 0: any move is judged by direction alone.
        (Some(b), Some(c), None) => match worse_by(better, c - b) {
            d if d > 0.0 => Verdict::Worse,
            d if d < 0.0 => Verdict::Better,
            _ => Verdict::Same,
        },
        (_, _, Some(x)) => match worse_by(better, x) {
            d if d > tolerance => Verdict::Worse,
            d if d > 0.0 => Verdict::WorseWithin,
            d if d < 0.0 => Verdict::Better,
            _ => Verdict::Same,
        },
    }
}

/// Rows grouped by their params other than `param_seed`, each metric judged over the
/// group's seeds. `seed` holds the seed column of each side, which pairs the seeds.
fn replicated(
    headers: &[String],
    brows: &BTreeMap<String, Vec<String>>,
    crows: &BTreeMap<String, Vec<String>>,
    columns: &[(&Metric, usize, usize)],
    seed: (usize, usize),
    tolerance: f64,
) -> Result<Vec<Change>, String> {
    // The group: the row's params but the replicate index.
    let others: Vec<usize> = (0..headers.len())
        .filter(|&i| headers[i].starts_with("param_") && headers[i] != "param_seed")
        .collect();
    let mut groups: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for (key, values) in brows {
        groups
            .entry(params_key(headers, values, &others))
            .or_default()
            .push(key);
    }
    let mut changes = Vec::new();
    for (group, keys) in &groups {
        for &(m, bi, ci) in columns {
            let mut s = Samples {
                baseline: Vec::new(),
                candidate: Vec::new(),
            };
            for key in keys {
                let (brow, crow) = (&brows[*key], &crows[*key]);
                let seed_of = |row: &[String], i: usize| {
                    row.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                };
                if let Some(v) = cell(brow, bi, key, m, "baseline")? {
                    s.baseline.push((seed_of(brow, seed.0), v));
                }
                if let Some(v) = cell(crow, ci, key, m, "candidate")? {
                    s.candidate.push((seed_of(crow, seed.1), v));
                }
            }
            changes.push(judge(group, m, &s, tolerance));
        }
    }
    Ok(changes)
}

/// One metric of one group over its seeds.
fn judge(group: &str, m: &Metric, s: &Samples, tolerance: f64) -> Change {
    let mean = |v: &[(u64, f64)]| {
        (!v.is_empty()).then(|| v.iter().map(|&(_, x)| x).sum::<f64>() / v.len() as f64)
    };
    let (b, c) = (mean(&s.baseline), mean(&s.candidate));
    let iv = replicates::interval(s);
    let change = match (iv, b, c) {
        (Some(iv), _, _) => Some(iv.change),
        (None, Some(b), Some(c)) if b != 0.0 => Some(c / b - 1.0),
        _ => None,
    };
    let verdict = match iv {
        None => single_verdict(m.better, b, c, change, tolerance),
        Some(iv) => {
            // The interval of "how much worse", low to high.
            let (lo, hi) = match m.better {
                Better::Higher => (-iv.high, -iv.low),
                Better::Lower => (iv.low, iv.high),
            };
            let mean_worse = worse_by(m.better, iv.change);
            if lo > 0.0 && mean_worse > tolerance {
                Verdict::Worse
            } else if lo > 0.0 {
                Verdict::WorseWithin
            } else if hi < 0.0 {
                Verdict::Better
            } else if lo >= -tolerance && hi <= tolerance {
                Verdict::Same
            } else {
                Verdict::Inconclusive
            }
        }
    };
    Change {
        row: group.to_owned(),
        metric: m.column.clone(),
        baseline: b,
        candidate: c,
        change,
        interval: iv.map(|iv| (iv.low, iv.high)),
        detectable: iv.map(|iv| iv.detectable),
        seeds: Some((s.baseline.len(), s.candidate.len())),
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Vec<Metric> {
        vec![
            parse_metric("tput:higher").unwrap(),
            parse_metric("lat:lower").unwrap(),
        ]
    }

    #[test]
    fn changes_are_judged_in_each_metrics_good_direction() {
        let base = "param_p,tput,lat\na,100,10\nb,100,10\n";
        let cand = "param_p,tput,lat\nb,99,10.5\na,101,9\n";
        let c = compare(base, cand, &metrics(), 0.02).unwrap();
        let v = |row: &str, m: &str| {
            c.iter()
                .find(|x| x.row == row && x.metric == m)
                .unwrap()
                .verdict
                .clone()
        };
        assert_eq!(v("p=a", "tput"), Verdict::Better);
        assert_eq!(v("p=a", "lat"), Verdict::Better);
        assert_eq!(v("p=b", "tput"), Verdict::WorseWithin);
        assert_eq!(v("p=b", "lat"), Verdict::Worse, "5% slower is beyond 2%");
        assert_eq!(c.iter().filter(|x| x.is_regression()).count(), 1);
    }

    /// Text where a number belongs is a broken summary, neither "no longer measured" (a
    /// regression) nor "same"; an empty cell is "not measured".
    #[test]
    fn a_text_cell_is_an_error_and_an_empty_one_is_not_measured() {
        let base = "param_p,tput,lat\na,100,10\n";
        let err = compare(base, "param_p,tput,lat\na,fast,10\n", &metrics(), 0.02).unwrap_err();
        assert!(
            err.contains("row p=a has `tput` = fast, not a finite number"),
            "{err}"
        );
        let c = compare(base, "param_p,tput,lat\na,,10\n", &metrics(), 0.02).unwrap();
        assert_eq!(c[0].verdict, Verdict::Lost);
    }

    /// Five seeds a side: `rows` as (seed, tput, lat) for policy a.
    fn replicated(rows: &[(u64, f64, f64)]) -> String {
        let mut t = "param_p,param_seed,seed,tput,lat\n".to_owned();
        for (i, (seed, tput, lat)) in rows.iter().enumerate() {
            t.push_str(&format!("a,{i},{seed},{tput},{lat}\n"));
        }
        t
    }

    #[test]
    fn replicates_are_judged_by_the_interval_of_the_change() {
        let base: Vec<(u64, f64, f64)> = (0..5)
            .map(|i| (1 + i, 100.0 + 10.0 * i as f64, 10.0 + i as f64))
            .collect();
        // The same seeds, 5% less throughput and the same latency: paired, a regression.
        let slower: Vec<_> = base.iter().map(|&(s, t, l)| (s, t * 0.95, l)).collect();
        let c = compare(&replicated(&base), &replicated(&slower), &metrics(), 0.02).unwrap();
        assert_eq!(
            (c[0].row.as_str(), c[0].verdict.clone()),
            ("p=a", Verdict::Worse)
        );
        assert_eq!(c[0].seeds, Some((5, 5)));
        let (lo, hi) = c[0].interval.unwrap();
        assert!(lo < -0.049 && hi > -0.051, "{lo} {hi}");
        assert_eq!(c[1].verdict, Verdict::Same);
        // Other seeds whose values scatter as much as the seed moves them: cannot tell.
        let other: Vec<_> = base
            .iter()
            .rev()
            .map(|&(s, t, l)| (s + 100, t * 1.01, l))
            .collect();
        let c = compare(&replicated(&base), &replicated(&other), &metrics(), 0.02).unwrap();
        assert_eq!(c[0].verdict, Verdict::Inconclusive);
        assert!(!c.iter().any(Change::is_regression));
    }

    #[test]
    fn a_nan_metric_is_an_error_not_same() {
        let base = "param_p,tput,lat\na,NaN,1\n";
        let err = compare(base, "param_p,tput,lat\na,5,1\n", &metrics(), 0.0).unwrap_err();
        assert!(err.contains("`tput` = NaN, not a finite number"), "{err}");
        let cand = "param_p,tput,lat\na,1,inf\n";
        assert!(compare("param_p,tput,lat\na,1,1\n", cand, &metrics(), 0.0).is_err());
        // Empty cells still mean "nothing measured".
        assert!(
            compare(
                "param_p,tput,lat\na,,1\n",
                "param_p,tput,lat\na,,1\n",
                &metrics(),
                0.0
            )
            .is_ok()
        );
    }

    #[test]
    fn inputs_that_cannot_be_compared_say_why() {
        let base = "param_p,tput,lat\na,1,1\n";
        assert!(
            compare(base, "param_q,tput,lat\na,1,1\n", &metrics(), 0.0)
                .unwrap_err()
                .contains("different sweeps")
        );
        assert!(
            compare(base, "param_p,tput,lat\nz,1,1\n", &metrics(), 0.0)
                .unwrap_err()
                .contains("not in the candidate")
        );
        assert!(
            compare(base, "param_p,tput\na,1\n", &metrics(), 0.0)
                .unwrap_err()
                .contains("no column `lat`")
        );
        assert!(parse_metric("x:up").is_err());
        let lost = compare(base, "param_p,tput,lat\na,,1\n", &metrics(), 0.0).unwrap();
        assert_eq!(lost[0].verdict, Verdict::Lost);
    }
}
