//! Pareto frontiers of a sweep's summary: per group of rows, the points no other point
//! beats on both axes (more of both is better), and the frontier's value at a given x by
//! linear interpolation between its points.

use std::collections::BTreeMap;

/// One group's frontier, points in increasing x.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Frontier {
    /// (column, value) of the grouping columns.
    pub group: Vec<(String, String)>,
    pub points: Vec<(f64, f64)>,
}

/// The upper-right frontier of `points`: sorted by x descending, a point stays if its y
/// beats every point with a larger x (ties in x keep the larger y).
pub fn frontier(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        if out.last().is_none_or(|last| p.1 > last.1) {
            out.push(p);
        }
    }
    out.reverse();
    out
}

/// The frontier's y at `x`, linear between its neighbours; `None` outside its x range.
pub fn y_at(frontier: &[(f64, f64)], x: f64) -> Option<f64> {
    let first = frontier.first()?;
    let last = frontier.last()?;
    if x < first.0 || x > last.0 {
        return None;
    }
    for pair in frontier.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if (x0..=x1).contains(&x) {
            return Some(if x1 > x0 {
                y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            } else {
                y0.max(y1)
            });
        }
    }
    Some(first.1)
}

/// (column, value) of the grouping columns, and the group's (x, y) points.
pub type Group = (Vec<(String, String)>, Vec<(f64, f64)>);

/// Every row's (`x`, `y`), grouped by the `by` columns, each group sorted by x.
pub fn rows(text: &str, x: &str, y: &str, by: &[String]) -> Result<Vec<Group>, String> {
    Ok(grouped(text, x, y, by)?
        .into_iter()
        .map(|(group, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (group, points)
        })
        .collect())
}

/// Reads `csv` text; groups rows by the `by` columns (a name `ep` also finds `param_ep`);
/// one frontier of (`x`, `y`) per group, groups in order of first appearance.
pub fn frontiers(text: &str, x: &str, y: &str, by: &[String]) -> Result<Vec<Frontier>, String> {
    Ok(grouped(text, x, y, by)?
        .into_iter()
        .map(|(group, points)| Frontier {
            points: frontier(&points),
            group,
        })
        .collect())
}

/// The sweep's axes but its replicate seeds: the names of its `param_` columns, in order.
pub fn sweep_axes(text: &str) -> Result<Vec<String>, String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| e.to_string())?;
    Ok(headers
        .iter()
        .filter_map(|h| h.strip_prefix("param_"))
        .filter(|a| *a != "seed")
        .map(str::to_owned)
        .collect())
}

/// Per group of the `by` columns, one point per value of `load` and of every other sweep
/// axis: the mean x and y of its rows (a sweep's replicate seeds), in order of first
/// appearance. Only seeds are averaged: two settings of an axis outside `by` (an attention
/// layout, an MTP depth) stay two points of the group, as its frontier must see them.
/// Without replicates, the rows themselves.
pub fn replicate_means(
    text: &str,
    x: &str,
    y: &str,
    by: &[String],
    load: &str,
) -> Result<Vec<Group>, String> {
    let named = |a: &String| a == load || by.contains(a);
    let mut keys = by.to_vec();
    keys.extend(sweep_axes(text)?.into_iter().filter(|a| !named(a)));
    keys.push(load.to_owned());
    let mut out: Vec<Group> = Vec::new();
    for (mut group, points) in grouped(text, x, y, &keys)? {
        group.truncate(by.len());
        if points.is_empty() {
            continue;
        }
        let n = points.len() as f64;
        let mean = (
            points.iter().map(|p| p.0).sum::<f64>() / n,
            points.iter().map(|p| p.1).sum::<f64>() / n,
        );
        match out.iter_mut().find(|(g, _)| *g == group) {
            Some((_, ps)) => ps.push(mean),
            None => out.push((group, vec![mean])),
        }
    }
    for (_, points) in &mut out {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(out)
}

/// Rows' (x, y) per group of the `by` columns, groups in order of first appearance.
fn grouped(text: &str, x: &str, y: &str, by: &[String]) -> Result<Vec<Group>, String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let column = |name: &str| {
        find_column(&headers, name).ok_or_else(|| {
            format!(
                "no column `{name}` (or `param_{name}`); the columns are: {}",
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let (xi, yi) = (column(x)?, column(y)?);
    let bi = by
        .iter()
        .map(|b| column(b))
        .collect::<Result<Vec<_>, _>>()?;
    let mut order: Vec<Vec<String>> = Vec::new();
    let mut groups: BTreeMap<Vec<String>, Vec<(f64, f64)>> = BTreeMap::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| e.to_string())?;
        // An empty cell is a point that measured nothing on that axis: left out.
        let number = |i: usize, name: &str| match record.get(i).unwrap_or("") {
            "" => Ok(None),
            v => v
                .parse::<f64>()
                .map(Some)
                .map_err(|_| format!("row {}: `{name}` is not a number: {v}", line + 2)),
        };
        let key: Vec<String> = bi
            .iter()
            .map(|&i| record.get(i).unwrap_or("").to_owned())
            .collect();
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        let points = groups.entry(key).or_default();
        if let (Some(px), Some(py)) = (number(xi, x)?, number(yi, y)?) {
            points.push((px, py));
        }
    }
    Ok(order
        .into_iter()
        .map(|key| {
            let points = groups.remove(&key).unwrap_or_default();
            (by.iter().cloned().zip(key).collect(), points)
        })
        .collect())
}

/// The column `name`, or the sweep parameter `param_name`.
fn find_column(headers: &csv::StringRecord, name: &str) -> Option<usize> {
    let at = |n: &str| headers.iter().position(|h| h == n);
    at(name).or_else(|| at(&format!("param_{name}")))
}

/// One side of a ratio: `column=value` terms a row must all match.
pub type Side = Vec<(String, String)>;

/// Parses `A / B`, each side `column=value` terms joined by commas.
pub fn parse_ratio(text: &str) -> Result<(Side, Side), String> {
    let side = |t: &str| -> Result<Side, String> {
        t.split(',')
            .map(|term| match term.trim().split_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                    Ok((k.trim().to_owned(), v.trim().to_owned()))
                }
                _ => Err(format!(
                    "--ratio: `{}` is not column=value (e.g. 'ep=32 / ep=8')",
                    term.trim()
                )),
            })
            .collect()
    };
    match text.split_once('/') {
        Some((a, b)) => Ok((side(a)?, side(b)?)),
        None => Err(format!(
            "--ratio: `{text}` has no `/` between its sides (e.g. 'ep=32 / ep=8')"
        )),
    }
}

/// Per value of `seed` (the column, or one group when there is none): the frontier of
/// the rows matching `side`, all of them together, and its y at `x` (`None` where it does
/// not reach `x`). Seeds in increasing order.
pub fn side_at(
    text: &str,
    x_col: &str,
    y_col: &str,
    side: &Side,
    x: f64,
) -> Result<Vec<(String, Option<f64>)>, String> {
    let mut by: Vec<String> = side.iter().map(|(k, _)| k.clone()).collect();
    let has_seed = csv::Reader::from_reader(text.as_bytes())
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .any(|h| h == "seed");
    if has_seed {
        by.push("seed".into());
    }
    let mut per_seed: BTreeMap<(u64, String), Vec<(f64, f64)>> = BTreeMap::new();
    for (group, points) in grouped(text, x_col, y_col, &by)? {
        let matches = side
            .iter()
            .zip(&group)
            .all(|((_, want), (_, got))| want == got);
        if matches {
            let seed = group.last().filter(|_| has_seed).map_or("", |(_, v)| v);
            // Seeds in numeric order where they are numbers.
            let key = (seed.parse().unwrap_or(u64::MAX), seed.to_owned());
            per_seed.entry(key).or_default().extend(points);
        }
    }
    Ok(per_seed
        .into_iter()
        .map(|((_, seed), points)| (seed, y_at(&frontier(&points), x)))
        .collect())
}

/// Rows a frontier or plot of (`x`, `y`) leaves out, and the points it keeps whose run was
/// not steady: counted by the row's `status` column (a sweep's summary) or, without one, by
/// the empty cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeftOut {
    pub rows: usize,
    /// Rows without a value on an axis, by reason, reasons in order.
    pub left_out: BTreeMap<String, usize>,
    /// Rows kept whose status is not `steady`, by status.
    pub kept_unsteady: BTreeMap<String, usize>,
}

impl LeftOut {
    /// One line for a user, or `None` when every row is a steady point.
    pub fn note(&self) -> Option<String> {
        let list = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(why, n)| format!("{n} {why}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let out: usize = self.left_out.values().sum();
        let unsteady: usize = self.kept_unsteady.values().sum();
        let mut parts = Vec::new();
        if out > 0 {
            parts.push(format!(
                "left out {out} of {} rows ({})",
                self.rows,
                list(&self.left_out)
            ));
        }
        if unsteady > 0 {
            parts.push(format!(
                "kept {unsteady} points whose runs were not steady ({}): see their steady_state column",
                list(&self.kept_unsteady)
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// What [`frontiers`] and [`rows`] of `x` and `y` leave out of `csv` text, and why.
pub fn left_out(text: &str, x: &str, y: &str) -> Result<LeftOut, String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let find = |name| find_column(&headers, name);
    let (xi, yi, si) = (find(x), find(y), find("status"));
    let mut l = LeftOut::default();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        l.rows += 1;
        let empty = |i: Option<usize>| i.is_some_and(|i| record.get(i).unwrap_or("").is_empty());
        let status = si
            .and_then(|i| record.get(i))
            .filter(|s| !s.is_empty() && *s != "steady");
        if empty(xi) || empty(yi) {
            let why = match (status, empty(xi)) {
                (Some(s), _) => s.to_owned(),
                (None, true) => format!("empty {x}"),
                (None, false) => format!("empty {y}"),
            };
            *l.left_out.entry(why).or_default() += 1;
        } else if let Some(s) = status {
            *l.kept_unsteady.entry(s.to_owned()).or_default() += 1;
        }
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicates_are_averaged_per_load_within_a_group() {
        let text = "param_ep,param_users,param_seed,x,y\n8,1,0,10,100\n8,1,1,12,110\n8,2,0,5,200\n8,2,1,7,220\n16,1,0,9,90\n";
        let got = replicate_means(text, "x", "y", &["ep".into()], "users").unwrap();
        assert_eq!(
            got,
            vec![
                (
                    vec![("ep".to_owned(), "8".to_owned())],
                    vec![(6.0, 210.0), (11.0, 105.0)]
                ),
                (vec![("ep".to_owned(), "16".to_owned())], vec![(9.0, 90.0)]),
            ]
        );
    }

    #[test]
    fn only_seeds_are_averaged_never_two_settings_of_another_axis() {
        // Two MTP depths at one load: averaging them would draw a point neither ran.
        let text = "param_ep,param_mtp,param_users,param_seed,x,y\n8,1,1,0,10,100\n8,1,1,1,12,110\n8,3,1,0,20,50\n8,3,1,1,22,60\n";
        let got = replicate_means(text, "x", "y", &["ep".into()], "users").unwrap();
        assert_eq!(
            got,
            vec![(
                vec![("ep".to_owned(), "8".to_owned())],
                vec![(11.0, 105.0), (21.0, 55.0)]
            )]
        );
    }

    #[test]
    fn the_frontier_keeps_only_undominated_points() {
        let f = frontier(&[
            (1.0, 10.0),
            (2.0, 8.0),
            (2.0, 9.0),
            (3.0, 5.0),
            (1.5, 7.0),
            (4.0, 1.0),
        ]);
        assert_eq!(f, vec![(1.0, 10.0), (2.0, 9.0), (3.0, 5.0), (4.0, 1.0)]);
        assert_eq!(y_at(&f, 2.5), Some(7.0));
        assert_eq!(y_at(&f, 1.0), Some(10.0));
        assert_eq!(y_at(&f, 0.5), None);
        assert_eq!(y_at(&f, 4.5), None);
    }

    #[test]
    fn groups_come_from_columns_or_params() {
        let text = "param_ep,x,y\n8,1,10\n8,2,5\n32,1,20\n32,2,12\n";
        let f = frontiers(text, "x", "y", &["ep".into()]).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].group, vec![("ep".to_owned(), "32".to_owned())]);
        assert_eq!(
            y_at(&f[1].points, 1.5).unwrap() / y_at(&f[0].points, 1.5).unwrap(),
            16.0 / 7.5
        );
        assert!(
            frontiers(text, "x", "z", &[])
                .unwrap_err()
                .contains("no column `z`")
        );
    }

    #[test]
    fn rows_left_out_are_counted_by_status() {
        let text = "status,x,y\nsteady,1,2\nno finished request,,5\noverloaded,3,4\n,4,\n";
        let l = left_out(text, "x", "y").unwrap();
        assert_eq!(l.rows, 4);
        assert_eq!(
            l.note().unwrap(),
            "left out 2 of 4 rows (1 empty y, 1 no finished request); kept 1 points whose runs were not steady (1 overloaded): see their steady_state column"
        );
        assert_eq!(left_out("x,y\n1,2\n", "x", "y").unwrap().note(), None);
    }

    #[test]
    fn a_ratio_is_taken_seed_by_seed_over_each_sides_best_frontier() {
        let (a, b) = parse_ratio("ep=32 / ep=8").unwrap();
        assert_eq!((a[0].1.as_str(), b[0].0.as_str()), ("32", "ep"));
        assert!(parse_ratio("ep=32").unwrap_err().contains("no `/`"));
        assert!(
            parse_ratio("ep / ep=8")
                .unwrap_err()
                .contains("`ep` is not")
        );
        // EP32's two EPLB modes pool into one frontier per seed.
        let text = "param_ep,param_eplb,seed,x,y\n32,none,1,100,10\n32,static,1,100,30\n\
                    8,none,1,100,5\n32,none,2,100,20\n8,none,2,100,10\n8,none,2,50,40\n";
        let got = side_at(text, "x", "y", &a, 100.0).unwrap();
        assert_eq!(
            got,
            vec![("1".into(), Some(30.0)), ("2".into(), Some(20.0))]
        );
        let got = side_at(text, "x", "y", &b, 75.0).unwrap();
        assert_eq!(got, vec![("1".into(), None), ("2".into(), Some(25.0))]);
    }
}
