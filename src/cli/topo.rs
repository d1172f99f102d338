//! `epsim topo show` and `epsim validate`.

use super::output::{emit, json};
use clap::ValueEnum;
use epsim::input::Diagnostics;
use epsim::topology::{self, Summary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopoFormat {
    /// A human summary
    Text,
    /// One JSON object with the counts
    Json,
    /// Graphviz DOT
    Dot,
}

pub fn show(
    file: &Path,
    format: TopoFormat,
    overrides: &BTreeMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let topo = topology::load_with(&super::lookup::topology_path(file)?, overrides)?;
    let text = match format {
        TopoFormat::Text => Summary::of(&topo).to_string(),
        TopoFormat::Json => json(&Summary::of(&topo))?,
        TopoFormat::Dot => topology::to_dot(&topo),
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Checks every file, printing one line per valid file and every problem of the others.
pub fn validate(
    files: &[PathBuf],
    overrides: &BTreeMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let mut all = Diagnostics::new();
    let mut report = String::new();
    for file in files {
        match epsim::files::check(file, overrides) {
            Ok(what) => report.push_str(&format!("ok: {} ({what})\n", file.display())),
            Err(diags) => all.append(diags),
        }
    }
    emit(&report)?;
    if all.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(all.into())
    }
}
