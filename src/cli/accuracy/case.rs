//! Accuracy case files: what to simulate, which number to read, the published value and
//! its source, and the tolerance. Three kinds, told apart by their fields:
//! - `scenario:` runs a scenario (or one `point:` of its sweep) and reads a summary column;
//! - `command:` runs an epsim command with `--format json` and reads a JSON pointer;
//! - `kernels:` prices a folder of held-out kernel measurements on a GPU spec.

use epsim::input::{self, At, Diagnostics, Problem};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    name: String,
    /// Where the published value comes from.
    source: String,
    /// Free text: how the case relates to the model (fitted or not, caveats).
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
    #[serde(default)]
    scenario: Option<At<String>>,
    /// For a sweep: the point, by its `param_*` values.
    #[serde(default)]
    point: BTreeMap<String, Scalar>,
    #[serde(default)]
    command: Option<At<Vec<String>>>,
    /// A summary column (scenario) or a JSON pointer (command).
    #[serde(default)]
    metric: Option<At<String>>,
    #[serde(default)]
    multiplier: Option<At<f64>>,
    #[serde(default)]
    published: Option<At<f64>>,
    #[serde(default)]
    kernels: Option<At<String>>,
    #[serde(default)]
    gpu: Option<At<String>>,
    #[serde(default)]
    model: Option<At<String>>,
    tolerance_pct: At<f64>,
}

/// A `point:` value as written: the sweep's `param_*` cells are its text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Text(t) => t.clone(),
        }
    }
}

/// What a case runs.
pub enum Kind {
    Scenario {
        file: PathBuf,
        point: BTreeMap<String, String>,
        column: String,
    },
    Command {
        args: Vec<String>,
        pointer: String,
    },
    Kernels {
        dir: PathBuf,
        gpu: PathBuf,
        model: Option<PathBuf>,
    },
}

pub struct Case {
    pub name: String,
    pub source: String,
    pub file: PathBuf,
    pub kind: Kind,
    pub multiplier: f64,
    pub published: Option<f64>,
    pub tolerance_pct: f64,
}

impl Case {
    /// The folder paths in the case are relative to.
    pub fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }
}

/// The case files named, folders expanded to their `*.yaml` files in name order.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Diagnostics> {
    let mut files = Vec::new();
    let mut diags = Diagnostics::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
                .collect();
            found.sort();
            if found.is_empty() {
                diags.push_file(p, "no *.yaml case files in this folder");
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    diags.into_result(files)
}

/// Reads and checks one case file; every problem at once.
pub fn load(file: &Path) -> Result<Case, Diagnostics> {
    let raw: CaseFile = input::read_yaml(file)?;
    let mut diags = Diagnostics::new();
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut problem = |loc, field: &str, msg: &str| {
        diags.push(file, Problem::new(loc, field, msg.to_owned()));
    };
    let tol = &raw.tolerance_pct;
    if !(tol.value.is_finite() && tol.value > 0.0) {
        problem(tol.loc, "tolerance_pct", "must be a number > 0 (percent)");
    }
    if let Some(m) = &raw.multiplier
        && !(m.value.is_finite() && m.value > 0.0)
    {
        problem(m.loc, "multiplier", "must be a number > 0");
    }
    let kinds = [
        raw.scenario.is_some(),
        raw.command.is_some(),
        raw.kernels.is_some(),
    ];
    let kind = match (&raw.scenario, &raw.command, &raw.kernels) {
        _ if kinds.iter().filter(|&&k| k).count() != 1 => {
            problem(
                tol.loc,
                "",
                "give exactly one of `scenario`, `command` or `kernels`",
            );
            None
        }
        (Some(s), ..) => needs_metric(&raw, &mut problem).map(|column| Kind::Scenario {
            file: dir.join(&s.value),
            point: raw
                .point
                .iter()
                .map(|(k, v)| (k.clone(), v.text()))
                .collect(),
            column,
        }),
        (_, Some(c), _) => {
            match c.value.first().map(String::as_str) {
                None => problem(c.loc, "command", "name the epsim command and its arguments"),
                Some(name) if !READ_ONLY_COMMANDS.contains(&name) => problem(
                    c.loc,
                    "command",
                    &format!(
                        "`{name}` may not run from a case: only the commands that price and write nothing ({})",
                        READ_ONLY_COMMANDS.join(", ")
                    ),
                ),
                Some(_) => {}
            }
            needs_metric(&raw, &mut problem).map(|pointer| Kind::Command {
                args: c.value.clone(),
                pointer,
            })
        }
        (.., Some(k)) => match &raw.gpu {
            None => {
                problem(
                    k.loc,
                    "gpu",
                    "a `kernels` case names the GPU spec file to price on",
                );
                None
            }
            Some(g) => Some(Kind::Kernels {
                dir: dir.join(&k.value),
                gpu: dir.join(&g.value),
                model: raw.model.as_ref().map(|m| dir.join(&m.value)),
            }),
        },
        _ => None,
    };
    let Some(kind) = kind else {
        return Err(diags.into_error());
    };
    diags.into_result(Case {
        name: raw.name,
        source: raw.source,
        file: file.to_owned(),
        kind,
        multiplier: raw.multiplier.map_or(1.0, |m| m.value),
        published: raw.published.map(|p| p.value),
        tolerance_pct: raw.tolerance_pct.value,
    })
}

/// The commands a `command:` case may run: they price and print, write no file and start
/// no other case (`run`, `plan`, `merge` write; `accuracy` could run itself forever).
const READ_ONLY_COMMANDS: [&str; 6] = ["memory", "step", "iteration", "a2a", "eplb", "imbalance"];

/// The metric and published value a scenario or command case needs.
fn needs_metric(
    raw: &CaseFile,
    problem: &mut impl FnMut(input::Loc, &str, &str),
) -> Option<String> {
    let loc = raw.tolerance_pct.loc;
    if raw.published.is_none() {
        problem(loc, "published", "missing: the measured or published value");
    }
    if let Some(p) = &raw.published
        && !(p.value.is_finite() && p.value != 0.0)
    {
        problem(
            p.loc,
            "published",
            "must be a finite number other than 0 (the error is relative to it)",
        );
    }
    match &raw.metric {
        Some(m) => raw.published.as_ref().map(|_| m.value.clone()),
        None => {
            problem(
                loc,
                "metric",
                "missing: the summary column or JSON pointer to read",
            );
            None
        }
    }
}
