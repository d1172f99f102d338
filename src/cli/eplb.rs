//! `epsim eplb`: DeepSeek's EPLB planner on a JSON load profile.

use super::output::{UsageError, emit};
use epsim::moe::eplb;
use serde::Deserialize;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EplbInput {
    /// `[layer][expert]` estimated load.
    weight: Vec<Vec<f64>>,
    num_replicas: usize,
    num_groups: usize,
    num_nodes: usize,
    num_gpus: usize,
}

pub fn run(input: &Path) -> anyhow::Result<ExitCode> {
    let (name, text) = if input == Path::new("-") {
        let name = "<stdin>";
        let text = epsim::input::read_capped(std::io::stdin(), Path::new(name))?;
        (name.to_owned(), text)
    } else {
        let text = epsim::input::read_text(input)?;
        (input.display().to_string(), text)
    };
    let parsed: EplbInput = serde_json::from_str(&text).map_err(|e| {
        // serde_json ends its message with the position; we lead with it instead.
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        UsageError(format!("{name}:{}:{}: {message}", e.line(), e.column()))
    })?;
    let plan = eplb::rebalance_experts(
        &parsed.weight,
        parsed.num_replicas,
        parsed.num_groups,
        parsed.num_nodes,
        parsed.num_gpus,
    )
    .map_err(|e| {
        UsageError(format!(
            "{name}: the planner cannot take this input:\n  {e}"
        ))
    })?;
    let json = serde_json::to_string(&plan)?;
    emit(&(json + "\n"))?;
    Ok(ExitCode::SUCCESS)
}
