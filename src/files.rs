//! Any input file, told apart by a field only its kind has (GPU spec, GPU family,
//! scenario, model, topology), loaded and checked with everything it names: what
//! `epsim validate` runs.

use crate::input::{self, Diagnostics};
use crate::topology;
use std::collections::BTreeMap;
use std::path::Path;

/// Loads and checks `file`; a one-line description of what it is, or every problem.
pub fn check(file: &Path, overrides: &BTreeMap<String, String>) -> Result<String, Diagnostics> {
    let text = input::read_text(file)?;
    let root = input::parse_tree(file, &text)?;
    if has_field(&root, "hbm_gb") {
        let spec = crate::hardware::load_spec(file)?;
        // A profile's tables are checked cell by cell, with their own file and line.
        let Some(dir) = &spec.profile else {
            return Ok(format!("GPU spec {}, no kernel profile", spec.name));
        };
        crate::cost::profile::KernelProfile::load(dir)?;
        Ok(format!(
            "GPU spec {}, kernel profile {}",
            spec.name,
            dir.display()
        ))
    } else if has_field(&root, "gemm_peak_fraction") {
        let family = crate::hardware::load_family(file)?;
        Ok(format!("GPU family {}", family.name))
    } else if has_field(&root, "instances") {
        let sweep = crate::sweep::run::load(file)?;
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
        let model = crate::model::load_model(file)?;
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
