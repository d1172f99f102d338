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

/// Per group of the `by` columns, one point per value of `load`: the mean x and y of the
/// rows with that value (a sweep's replicate seeds), in order of first appearance. Without
/// replicates, the rows themselves.
pub fn replicate_means(
    text: &str,
    x: &str,
    y: &str,
    by: &[String],
    load: &str,
) -> Result<Vec<Group>, String> {
    let mut keys = by.to_vec();
    keys.push(load.to_owned());
    let mut out: Vec<Group> = Vec::new();
    for (mut group, points) in grouped(text, x, y, &keys)? {
        group.pop();
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
        headers
            .iter()
            .position(|h| h == name)
            .or_else(|| headers.iter().position(|h| h == format!("param_{name}")))
            .ok_or_else(|| {
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
}
