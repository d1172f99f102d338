//! A scenario's `sweep:` section: axes over any field of the scenario (an ordered cartesian
//! product), `zip` groups of axes that move together, and `seeds: N` replicates. Each point
//! is the scenario's tree with the point's values written in at their paths, so anything a
//! scenario can say can be swept, and every point is checked like a scenario file.
//!
//! ```yaml
//! sweep:
//!   axes:
//!     - {name: eplb, path: "instances[1].eplb", values: [none, static, online]}
//!     - {path: workload.arrivals.users, values: [64, 128, 256]}
//!   zip:
//!     - - {name: ep, path: "instances[1].gpus", values: ["8-15", "8-39"]}
//!       - {path: "instances[1].slots", values: [256, 288]}
//!   seeds: 2
//! ```

use crate::input::{Diagnostics, Key, Loc, Node, Problem, Value};
use std::path::Path;

/// One step of a path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Column name: `param_<name>` in summary.csv.
    pub name: String,
    pub path: String,
    segments: Vec<Segment>,
    pub values: Vec<Node>,
    /// What the param column shows for each value (default: the values themselves).
    pub labels: Option<Vec<String>>,
}

/// The most points one sweep file may have: each is a simulation, so a million is already
/// days of CPU (sharding spreads them), and the points list itself is held in memory.
pub const MAX_POINTS: u64 = 1_000_000;

/// The sweep: groups of axes (a plain axis is a group of one; a zip group's axes move
/// together), in the order the file gives, and replicate seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub groups: Vec<Vec<Axis>>,
    pub seeds: u64,
}

/// One point of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Position in the sweep's order (0-based).
    pub index: usize,
    /// (axis name, value as text), in axis order; `seed` last when replicated.
    pub params: Vec<(String, String)>,
    assignments: Vec<(Vec<Segment>, Node)>,
    /// Added to the scenario's seed.
    pub seed_offset: u64,
}

impl Sweep {
    /// Every point, the first group outermost, seeds innermost.
    pub fn points(&self) -> Vec<Point> {
        let mut points = vec![Point {
            index: 0,
            params: Vec::new(),
            assignments: Vec::new(),
            seed_offset: 0,
        }];
        for group in &self.groups {
            let len = group[0].values.len();
            points = points
                .into_iter()
                .flat_map(|p| {
                    (0..len).map(move |i| {
                        let mut q = p.clone();
                        for axis in group {
                            let label = match &axis.labels {
                                Some(l) => l[i].clone(),
                                None => display(&axis.values[i]),
                            };
                            q.params.push((axis.name.clone(), label));
                            q.assignments
                                .push((axis.segments.clone(), axis.values[i].clone()));
                        }
                        q
                    })
                })
                .collect();
        }
        if self.seeds > 1 {
            points = points
                .into_iter()
                .flat_map(|p| {
                    (0..self.seeds).map(move |s| {
                        let mut q = p.clone();
                        q.params.push(("seed".into(), s.to_string()));
                        q.seed_offset = s;
                        q
                    })
                })
                .collect();
        }
        for (i, p) in points.iter_mut().enumerate() {
            p.index = i;
        }
        points
    }
}

impl Point {
    /// The scenario tree with this point's values written in; a path that cannot be
    /// written is a problem at the scenario node in its way.
    pub fn apply(&self, root: &Node) -> Result<Node, Problem> {
        let mut tree = root.clone();
        for (path, value) in &self.assignments {
            set(&mut tree, path, value.clone()).map_err(|(loc, message)| {
                Problem::new(loc, path_text(path), format!("a sweep axis {message}"))
            })?;
        }
        Ok(tree)
    }

    /// `eplb=static users=64`, for messages.
    pub fn label(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A scalar as a table cell.
fn display(node: &Node) -> String {
    match &node.value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => s.clone(),
        Value::Seq(_) | Value::Map(_) => "(structured)".into(),
    }
}

/// Splits a scenario tree into the scenario proper and its `sweep` section.
pub fn split(root: &Node) -> (Node, Option<Node>) {
    let mut rest = root.clone();
    let mut sweep = None;
    if let Value::Map(entries) = &mut rest.value
        && let Some(i) = entries.iter().position(|(k, _)| k.name == "sweep")
    {
        sweep = Some(entries.remove(i).1);
    }
    (rest, sweep)
}

/// Reads a `sweep` section, reporting every problem in it.
pub fn parse(file: &Path, node: &Node) -> Result<Sweep, Diagnostics> {
    let mut diags = Diagnostics::new();
    let mut problem = |loc: Loc, path: &str, message: String| {
        diags.push(file, Problem::new(loc, path, message));
    };
    let mut sweep = Sweep {
        groups: Vec::new(),
        seeds: 1,
    };
    let Value::Map(entries) = &node.value else {
        problem(
            node.loc,
            "sweep",
            "must be a mapping of axes, zip and seeds".into(),
        );
        return Err(diags);
    };
    for (key, value) in entries {
        match key.name.as_str() {
            "axes" => match &value.value {
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match axis(item, &format!("sweep.axes[{i}]")) {
                            Ok(a) => sweep.groups.push(vec![a]),
                            Err((loc, path, m)) => problem(loc, &path, m),
                        }
                    }
                }
                _ => problem(value.loc, "sweep.axes", "must be a list of axes".into()),
            },
            "zip" => match &value.value {
                Value::Seq(groups) => {
                    for (g, group) in groups.iter().enumerate() {
                        let Value::Seq(items) = &group.value else {
                            problem(
                                group.loc,
                                &format!("sweep.zip[{g}]"),
                                "must be a list of axes".into(),
                            );
                            continue;
                        };
                        let mut axes = Vec::new();
                        for (i, item) in items.iter().enumerate() {
                            match axis(item, &format!("sweep.zip[{g}][{i}]")) {
                                Ok(a) => axes.push(a),
                                Err((loc, path, m)) => problem(loc, &path, m),
                            }
                        }
                        if let Some(first) = axes.first()
                            && let Some(odd) =
                                axes.iter().find(|a| a.values.len() != first.values.len())
                        {
                            problem(
                                group.loc,
                                &format!("sweep.zip[{g}]"),
                                format!(
                                    "axes of a zip group move together and need as many values: {} has {}, {} has {}",
                                    first.name,
                                    first.values.len(),
                                    odd.name,
                                    odd.values.len()
                                ),
                            );
                        } else if !axes.is_empty() {
                            sweep.groups.push(axes);
                        }
                    }
                }
                _ => problem(
                    value.loc,
                    "sweep.zip",
                    "must be a list of lists of axes".into(),
                ),
            },
            "seeds" => match value.value {
                Value::UInt(n) if n >= 1 => sweep.seeds = n,
                Value::Int(n) if n >= 1 => sweep.seeds = n as u64,
                _ => problem(value.loc, "sweep.seeds", "must be an integer >= 1".into()),
            },
            other => problem(
                key.loc,
                &format!("sweep.{other}"),
                "unknown field; expected one of `axes`, `zip`, `seeds`".into(),
            ),
        }
    }
    let mut names: Vec<(&str, Loc)> = Vec::new();
    for a in sweep.groups.iter().flatten() {
        if let Some((_, first)) = names.iter().find(|(n, _)| *n == a.name) {
            problem(
                a.values.first().map_or(node.loc, |v| v.loc),
                "sweep",
                format!(
                    "two axes are named `{}` (the first at {first}); give one a `name`",
                    a.name
                ),
            );
        }
        names.push((&a.name, a.values.first().map_or(node.loc, |v| v.loc)));
    }
    // One field set by two axes: the later wins, and the earlier's column labels values
    // that never ran (likewise a field inside another axis's field).
    let axes: Vec<&Axis> = sweep.groups.iter().flatten().collect();
    let covers = |outer: &str, inner: &str| {
        inner == outer
            || inner.starts_with(&format!("{outer}."))
            || inner.starts_with(&format!("{outer}["))
    };
    for (i, b) in axes.iter().enumerate() {
        if let Some(a) = axes[..i]
            .iter()
            .find(|a| covers(&a.path, &b.path) || covers(&b.path, &a.path))
        {
            problem(
                b.values.first().map_or(node.loc, |v| v.loc),
                "sweep",
                format!(
                    "axes `{}` ({}) and `{}` ({}) set the same field: one would overwrite the other, and its column would name values that never ran",
                    a.name, a.path, b.name, b.path
                ),
            );
        }
    }
    let total = sweep
        .groups
        .iter()
        .map(|g| g[0].values.len() as u64)
        .try_fold(sweep.seeds, u64::checked_mul)
        .filter(|&n| n <= MAX_POINTS);
    if total.is_none() {
        problem(
            node.loc,
            "sweep",
            format!(
                "more than {MAX_POINTS} points (the product of the axes' lengths and seeds); \
                 split the sweep into several files"
            ),
        );
    }
    if sweep.seeds > 1 && names.iter().any(|(n, _)| *n == "seed") {
        problem(
            node.loc,
            "sweep",
            "an axis named `seed` clashes with `seeds`".into(),
        );
    }
    diags.into_result(sweep)
}

type AxisProblem = (Loc, String, String);

fn axis(node: &Node, at: &str) -> Result<Axis, AxisProblem> {
    let Value::Map(entries) = &node.value else {
        return Err((node.loc, at.into(), "must be {name, path, values}".into()));
    };
    let get = |k: &str| {
        entries
            .iter()
            .find(|(key, _)| key.name == k)
            .map(|(_, v)| v)
    };
    if let Some((key, _)) = entries
        .iter()
        .find(|(k, _)| !["name", "path", "values", "labels"].contains(&k.name.as_str()))
    {
        return Err((
            key.loc,
            format!("{at}.{}", key.name),
            "unknown field; expected one of `name`, `path`, `values`, `labels`".into(),
        ));
    }
    let path = match get("path").map(|p| &p.value) {
        Some(Value::Str(p)) => p.clone(),
        _ => {
            return Err((
                node.loc,
                format!("{at}.path"),
                "needs a path such as instances[1].eplb".into(),
            ));
        }
    };
    let segments = parse_path(&path).map_err(|m| (node.loc, format!("{at}.path"), m))?;
    let values = match get("values") {
        Some(Node {
            value: Value::Seq(v),
            ..
        }) if !v.is_empty() => v.clone(),
        _ => {
            return Err((
                node.loc,
                format!("{at}.values"),
                "needs a non-empty list of values".into(),
            ));
        }
    };
    let name = match get("name").map(|n| &n.value) {
        Some(Value::Str(n)) => n.clone(),
        Some(_) => return Err((node.loc, format!("{at}.name"), "must be text".into())),
        None => match segments.last() {
            Some(Segment::Key(k)) => k.clone(),
            _ => path.clone(),
        },
    };
    let labels = match get("labels") {
        None => None,
        Some(Node {
            value: Value::Seq(l),
            ..
        }) if l.len() == values.len() => Some(l.iter().map(display).collect()),
        Some(l) => {
            return Err((
                l.loc,
                format!("{at}.labels"),
                format!("needs one label per value ({})", values.len()),
            ));
        }
    };
    Ok(Axis {
        name,
        path,
        segments,
        values,
        labels,
    })
}

/// `instances[1].eplb` -> [Key(instances), Index(1), Key(eplb)].
fn parse_path(text: &str) -> Result<Vec<Segment>, String> {
    let bad =
        || format!("`{text}` is not a path like workload.arrivals.users or instances[1].eplb");
    let mut out = Vec::new();
    for part in text.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if part.contains('[') && rest.is_empty() {
            return Err(bad());
        }
        if name.is_empty() && out.is_empty() {
            return Err(bad());
        }
        if !name.is_empty() {
            out.push(Segment::Key(name.to_owned()));
        }
        let mut rest = rest;
        while !rest.is_empty() {
            let (index, after) = rest.split_once(']').ok_or_else(bad)?;
            out.push(Segment::Index(index.parse().map_err(|_| bad())?));
            rest = after.strip_prefix('[').unwrap_or(after);
            if !after.is_empty() && !after.starts_with('[') {
                return Err(bad());
            }
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// Writes `value` at the field `path` (`topology_parameters.nodes`) of a scenario tree, as
/// a sweep axis would; for command-line overrides.
pub fn set_field(root: &mut Node, path: &str, value: Node) -> Result<(), String> {
    set(root, &parse_path(path)?, value).map_err(|(_, message)| message)
}

/// `instances[1].eplb`, from its segments.
fn path_text(path: &[Segment]) -> String {
    let mut text = String::new();
    for s in path {
        match s {
            Segment::Key(k) if text.is_empty() => text.push_str(k),
            Segment::Key(k) => text.push_str(&format!(".{k}")),
            Segment::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

/// Writes `value` at `path`, creating missing mapping keys (so an axis can set a field the
/// scenario leaves to its default); else the node in the way, and why.
fn set(node: &mut Node, path: &[Segment], value: Node) -> Result<(), (Loc, String)> {
    let Some((first, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    match (first, &mut node.value) {
        (Segment::Key(k), Value::Map(entries)) => {
            let i = match entries.iter().position(|(key, _)| key.name == *k) {
                Some(i) => i,
                None => {
                    let loc = value.loc;
                    let empty = if rest.is_empty() {
                        Value::Null
                    } else {
                        Value::Map(Vec::new())
                    };
                    entries.push((
                        Key {
                            name: k.clone(),
                            loc,
                        },
                        Node { loc, value: empty },
                    ));
                    entries.len() - 1
                }
            };
            set(&mut entries[i].1, rest, value)
        }
        (Segment::Index(i), Value::Seq(items)) => {
            let len = items.len();
            let loc = node.loc;
            let item = items.get_mut(*i).ok_or_else(|| {
                (
                    loc,
                    format!("cannot set item [{i}]: the list has {len} items"),
                )
            })?;
            set(item, rest, value)
        }
        (Segment::Key(k), other) => Err((
            node.loc,
            format!("cannot set `{k}` inside {}", other.kind()),
        )),
        (Segment::Index(i), other) => Err((
            node.loc,
            format!("cannot take item [{i}] of {}", other.kind()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse_node;

    fn sweep(text: &str) -> Result<Sweep, Diagnostics> {
        let root = parse_node(text).unwrap();
        let (_, s) = split(&root);
        parse(Path::new("s.yaml"), &s.unwrap())
    }

    #[test]
    fn paths_parse_and_bad_ones_say_so() {
        assert_eq!(
            parse_path("instances[1].eplb").unwrap(),
            vec![
                Segment::Key("instances".into()),
                Segment::Index(1),
                Segment::Key("eplb".into())
            ]
        );
        assert!(parse_path("a[x]").is_err());
        assert!(parse_path("").is_err());
    }

    #[test]
    fn a_sweep_of_too_many_points_is_refused_before_they_are_made() {
        let axis = |n: &str| {
            format!("    - {{name: {n}, path: f.{n}, values: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}\n")
        };
        let axes: String = ["a", "b", "c", "d", "e"].map(axis).concat();
        let ok = sweep(&format!("sweep:\n  axes:\n{axes}  seeds: 10\n")).unwrap();
        assert_eq!(ok.groups.len(), 5);
        let e = sweep(&format!("sweep:\n  axes:\n{axes}  seeds: 11\n")).unwrap_err();
        assert!(e.to_string().contains("more than 1000000 points"), "{e}");
        let e = sweep("sweep:\n  seeds: 18446744073709551615\n").unwrap_err();
        assert!(e.to_string().contains("more than 1000000 points"), "{e}");
    }

    /// Two axes on one field (or one inside the other's): the later would overwrite the
    /// earlier, whose column would then name values that never ran.
    #[test]
    fn axes_setting_the_same_field_are_refused() {
        for (a, b) in [
            (
                "workload.arrivals.rate_per_s",
                "workload.arrivals.rate_per_s",
            ),
            ("workload.arrivals", "workload.arrivals.rate_per_s"),
            ("instances[1]", "instances[1].eplb"),
        ] {
            let e = sweep(&format!(
                "sweep:\n  axes:\n    - {{name: a, path: '{a}', values: [1]}}\n    - {{name: b, path: '{b}', values: [2]}}\n"
            ))
            .unwrap_err();
            assert!(e.to_string().contains("set the same field"), "{a} {b}: {e}");
        }
        let ok = "sweep:\n  axes:\n    - {name: a, path: 'instances[1].eplb', values: [1]}\n    - {name: b, path: 'instances[10].eplb', values: [2]}\n";
        assert!(sweep(ok).is_ok());
    }

    #[test]
    fn points_are_the_ordered_product_with_zips_and_seeds() {
        let s = sweep(
            "sweep:
  axes:
    - {name: a, path: x.a, values: [1, 2]}
  zip:
    - - {name: b, path: x.b, values: [p, q, r]}
      - {path: 'y[0].c', values: [7, 8, 9]}
  seeds: 2
",
        )
        .unwrap();
        let points = s.points();
        assert_eq!(points.len(), 2 * 3 * 2);
        assert_eq!(points[0].label(), "a=1 b=p c=7 seed=0");
        assert_eq!(points[1].label(), "a=1 b=p c=7 seed=1");
        assert_eq!(points[2].label(), "a=1 b=q c=8 seed=0");
        assert_eq!(points[11].label(), "a=2 b=r c=9 seed=1");
        let root = parse_node("x: {a: 0}\ny: [{c: 0}]\n").unwrap();
        let applied = points[11].apply(&root).unwrap();
        let at = |path: &str| {
            let mut node = &applied;
            for seg in parse_path(path).unwrap() {
                node = match (seg, &node.value) {
                    (Segment::Key(k), Value::Map(e)) => {
                        &e.iter().find(|(n, _)| n.name == k).unwrap().1
                    }
                    (Segment::Index(i), Value::Seq(items)) => &items[i],
                    _ => panic!("no {path}"),
                };
            }
            display(node)
        };
        assert_eq!(
            (at("x.a"), at("x.b"), at("y[0].c")),
            ("2".into(), "r".into(), "9".into())
        );
        let err = points[0]
            .apply(&parse_node("y: []\n").unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "1:4: y[0].c: a sweep axis cannot set item [0]: the list has 0 items"
        );
    }

    #[test]
    fn every_problem_in_a_sweep_is_reported() {
        let e = sweep(
            "sweep:
  axes:
    - {path: 'a[', values: [1]}
    - {path: b, values: []}
    - {path: c, values: [1], nme: x}
  zip:
    - - {path: d, values: [1, 2]}
      - {path: e, values: [1]}
  seeds: 0
  sedes: 1
",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "s.yaml:3:7: sweep.axes[0].path",
            "s.yaml:4:7: sweep.axes[1].values",
            "sweep.axes[2].nme: unknown field",
            "sweep.zip[0]: axes of a zip group move together",
            "sweep.seeds: must be an integer >= 1",
            "sweep.sedes: unknown field",
        ] {
            assert!(e.contains(needle), "{needle} in {e}");
        }
    }
}
