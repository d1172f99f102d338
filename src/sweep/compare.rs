//! Comparing two runs' summary.csv: rows matched by their `param_*` columns, each metric
//! judged in its good direction against a relative tolerance. What CI runs to catch a
//! scheduling-policy change that makes latency or throughput worse.

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The row's params, `name=value` joined (or `(run)` for a single run).
    pub row: String,
    pub metric: String,
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    /// Relative change, candidate over baseline minus 1.
    pub change: Option<f64>,
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
        let key = params
            .iter()
            .map(|&i| format!("{}={}", &headers[i][6..], record.get(i).unwrap_or("")))
            .collect::<Vec<_>>()
            .join(" ");
        let key = if key.is_empty() {
            "(run)".to_owned()
        } else {
            key
        };
        let values: Vec<String> = record.iter().map(str::to_owned).collect();
        if rows.insert(key.clone(), values).is_some() {
            return Err(format!("{what}: two rows have the params {key}"));
        }
    }
    Ok((headers, rows))
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
    let mut changes = Vec::new();
    for (key, brow) in &brows {
        let crow = &crows[key];
        for &(m, bi, ci) in &columns {
            // An empty cell measured nothing; NaN or infinity is a broken value, not "same".
            let value = |row: &[String], i: usize, what: &str| match row
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
            {
                Some(v) if !v.is_finite() => Err(format!(
                    "the {what}'s row {key} has `{}` = {v}, not a finite number",
                    m.column
                )),
                v => Ok(v),
            };
            let (b, c) = (value(brow, bi, "baseline")?, value(crow, ci, "candidate")?);
            let change = match (b, c) {
                (Some(b), Some(c)) if b != 0.0 => Some(c / b - 1.0),
                (Some(b), Some(c)) if b == c => Some(0.0),
                _ => None,
            };
            let worse_by = |x: f64| match m.better {
                Better::Higher => -x,
                Better::Lower => x,
            };
            let verdict = match (b, c, change) {
                (Some(_), None, _) => Verdict::Lost,
                (None, _, _) => Verdict::Same,
                (Some(b), Some(c), None) => {
                    // Baseline 0: any move is judged by direction alone.
                    match worse_by(c - b) {
                        d if d > 0.0 => Verdict::Worse,
                        d if d < 0.0 => Verdict::Better,
                        _ => Verdict::Same,
                    }
                }
                (_, _, Some(x)) => match worse_by(x) {
                    d if d > tolerance => Verdict::Worse,
                    d if d > 0.0 => Verdict::WorseWithin,
                    d if d < 0.0 => Verdict::Better,
                    _ => Verdict::Same,
                },
            };
            changes.push(Change {
                row: key.clone(),
                metric: m.column.clone(),
                baseline: b,
                candidate: c,
                change,
                verdict,
            });
        }
    }
    Ok(changes)
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
