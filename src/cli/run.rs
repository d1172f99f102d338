//! `epsim run`: simulate a scenario and write its result files.

use super::output::emit;
use epsim::serving::{output, scenario, sim};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(file: &Path, out: Option<PathBuf>, seed: Option<u64>) -> anyhow::Result<ExitCode> {
    let mut loaded = scenario::load(file)?;
    if let Some(seed) = seed {
        loaded.scenario.seed = seed;
    }
    let report = sim::run(&loaded).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let dir = out.unwrap_or_else(|| Path::new("out").join(&loaded.scenario.name));
    let written = output::write_run(&dir, &loaded, &report)?;
    let mut text = String::new();
    let width = report
        .summary
        .iter()
        .map(|(c, _)| c.len())
        .max()
        .unwrap_or(0);
    for (column, value) in &report.summary {
        text.push_str(&format!("{column:<width$}  {value}\n"));
    }
    let s = &report.stats;
    text.push_str(&format!(
        "\nsimulated {:.1} s in {:.2} s wall ({:.0} events/s, {:.1} simulated s per wall s)\n",
        s.simulated_s, s.wall_s, s.events_per_wall_s, s.simulated_s_per_wall_s
    ));
    for f in written {
        text.push_str(&format!("wrote {}\n", f.display()));
    }
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}
