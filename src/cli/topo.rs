//! `epsim topo show` and `epsim validate`.

use super::output::{emit, json};
use clap::ValueEnum;
use epsim::input::{self, Diagnostics};
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
    let topo = topology::load_with(&epsim::input::data::locate(file), overrides)?;
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
        match validate_one(file, overrides) {
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

fn validate_one(file: &Path, overrides: &BTreeMap<String, String>) -> Result<String, Diagnostics> {
    let text = input::read_text(file)?;
    let root = input::parse_tree(file, &text)?;
    if has_field(&root, "hbm_gb") {
        let spec = epsim::hardware::load_spec(file)?;
        // A profile's tables are checked cell by cell, with their own file and line.
        let Some(dir) = &spec.profile else {
            return Ok(format!("GPU spec {}, no kernel profile", spec.name));
        };
        epsim::cost::profile::KernelProfile::load(dir)?;
        Ok(format!(
            "GPU spec {}, kernel profile {}",
            spec.name,
            dir.display()
        ))
    } else if has_field(&root, "gemm_peak_fraction") {
        let family = epsim::hardware::load_family(file)?;
        Ok(format!("GPU family {}", family.name))
    } else if has_field(&root, "instances") {
        let sweep = epsim::sweep::run::load(file)?;
        sweep.check()?;
        let s = sweep.scenario(&sweep.points[0])?;
        let gpus: u64 = s.scenario.instances.iter().map(|i| i.ep()).sum();
        let points = if sweep.is_sweep() {
            format!(", a sweep of {} points", sweep.points.len())
        } else {
            String::new()
        };
        Ok(format!(
            "scenario {}: {} instances on {gpus} GPUs{points}",
            s.scenario.name,
            s.scenario.instances.len()
        ))
    } else if has_field(&root, "moe") {
        let model = epsim::model::load_model(file)?;
        Ok(format!("model {}", model.name))
    } else {
        let topo = topology::load_with(file, overrides)?;
        Ok(format!("topology {}: {} GPUs", topo.name, topo.gpus.len()))
    }
}

/// Files are told apart by a field only their kind has.
fn has_field(root: &input::Node, field: &str) -> bool {
    match &root.value {
        input::Value::Map(entries) => entries.iter().any(|(k, _)| k.name == field),
        _ => false,
    }
}
