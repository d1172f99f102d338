//! Finding models, GPU specs and topologies by name (`--model deepseek-r1`) or by path.

use super::output::UsageError;
use epsim::hardware::{self, GpuSpec};
use epsim::input::data;
use epsim::model::{self, ModelConfig};
use std::path::{Path, PathBuf};

/// A name is looked up as `<dir>/<name>.yaml`, `dir` from the working folder or else in
/// the bundled data (`$EPSIM_DATA`, see `epsim::input::data`); anything that looks like a
/// path is used as is, found the same way.
fn resolve(what: &str, name: &str, dir: &Path, flag: &str) -> anyhow::Result<PathBuf> {
    if !data::is_name(name) {
        return Ok(data::locate(Path::new(name)));
    }
    let dir = data::locate(dir);
    let file = dir.join(format!("{name}.yaml"));
    if file.is_file() {
        return Ok(file);
    }
    let dir = dir.as_path();
    let available = hardware::available_specs(dir);
    let listing = if available.is_empty() {
        format!("{} has no {what} files (set {flag})", dir.display())
    } else {
        format!("{} has: {}", dir.display(), available.join(", "))
    };
    Err(UsageError(format!("no {what} named `{name}`; {listing}")).into())
}

/// The file a model name or path refers to.
pub fn model_path(name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    resolve("model", name, dir, "--models-dir")
}

/// The file a topology name (`gb200-nvl72`) or path refers to.
pub fn topology_path(name: &Path) -> anyhow::Result<PathBuf> {
    match name.to_str() {
        Some(text) if data::is_name(text) => {
            resolve("topology", text, Path::new("topologies"), "EPSIM_DATA")
        }
        _ => Ok(data::locate(name)),
    }
}

pub fn model(name: &str, dir: &Path) -> anyhow::Result<ModelConfig> {
    Ok(model::load_model(&resolve(
        "model",
        name,
        dir,
        "--models-dir",
    )?)?)
}

pub fn gpu(name: &str, dir: &Path) -> anyhow::Result<GpuSpec> {
    Ok(hardware::load_spec(&resolve(
        "GPU spec",
        name,
        dir,
        "--gpus-dir",
    )?)?)
}
