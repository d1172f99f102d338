//! `epsim plan`: the deployment with the fewest GPUs that meets a latency SLA at a rate.

use super::lookup;
use super::output::{UsageError, emit};
use epsim::sweep::capacity::{self, Outcome, Target};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub struct PlanArgs {
    pub model: String,
    pub models_dir: PathBuf,
    pub topology: PathBuf,
    pub target: Target,
    pub jobs: usize,
    pub runners_up: usize,
    pub headroom: bool,
    pub emit_scenario: Option<PathBuf>,
}

fn row(o: &Outcome) -> String {
    let f = |x: Option<f64>, d: usize| x.map_or("-".to_owned(), |v| format!("{v:.d$}"));
    format!(
        "{:>4}  {:<58} {:>9} {:>9} {:>11}",
        o.candidate.gpus(),
        o.candidate.label(),
        f(o.ttft_p99_ms, 0),
        f(o.tpot_p99_ms, 1),
        f(o.output_tok_s, 0),
    )
}

pub fn run(a: PlanArgs) -> anyhow::Result<ExitCode> {
    let model_file = lookup::model_path(&a.model, &a.models_dir)?;
    let topology_file = epsim::input::data::locate(&a.topology);
    let topo = epsim::topology::load(&topology_file)?;
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let target = Target {
        model_file: abs(&model_file),
        topology_file: abs(&topology_file),
        ..a.target
    };
    let outcomes = capacity::search(&target, topo.gpus.len() as u64, a.jobs);
    if outcomes.is_empty() {
        return Err(UsageError(format!(
            "{} has {} GPUs: no candidate deployment fits (the smallest needs {})",
            a.topology.display(),
            topo.gpus.len(),
            capacity::PREFILL_EP + 8
        ))
        .into());
    }
    let header = format!(
        "{:>4}  {:<58} {:>9} {:>9} {:>11}\n",
        "GPUs", "deployment", "TTFT p99", "TPOT p99", "output/s"
    );
    let mut text = format!(
        "{} at {} requests/s, ISL {} / OSL {}, SLA: TTFT p99 <= {} ms, TPOT p99 <= {} ms\n{} deployments simulated for {} s each on {}\n\n",
        model_file.display(),
        target.rate_per_s,
        target.isl,
        target.osl,
        target.ttft_p99_ms,
        target.tpot_p99_ms,
        outcomes.len(),
        target.duration_s,
        a.topology.display()
    );
    let meeting: Vec<&Outcome> = outcomes.iter().filter(|o| o.meets()).collect();
    match meeting.first() {
        Some(best) => {
            text.push_str(&format!(
                "best: {} GPUs, {}\n\n",
                best.candidate.gpus(),
                best.candidate.label()
            ));
            if a.headroom {
                let (rate, probes) = capacity::headroom(&target, &best.candidate);
                let capped = rate >= target.rate_per_s * capacity::HEADROOM_MAX_FACTOR;
                text.push_str(&format!(
                    "headroom: it holds the SLA up to {}{rate:.0} requests/s ({:.1}x the target; {probes} more simulations, to within {:.0}%)\n\n",
                    if capped { "at least " } else { "" },
                    rate / target.rate_per_s,
                    capacity::HEADROOM_RESOLUTION * 100.0
                ));
            }
            if let Some(file) = &a.emit_scenario {
                let yaml = format!(
                    "# epsim plan's best deployment: {} GPUs, {}\n{}",
                    best.candidate.gpus(),
                    best.candidate.label(),
                    capacity::scenario_text(&target, &best.candidate)
                );
                std::fs::write(file, yaml)
                    .map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
                super::output::note(&format!("wrote {}\n", file.display()))?;
            }
            text.push_str(&header);
            for o in meeting.iter().take(1 + a.runners_up) {
                text.push_str(&row(o));
                text.push('\n');
            }
        }
        None => text.push_str("no deployment meets the SLA at this rate\n"),
    }
    let failing: Vec<&Outcome> = outcomes.iter().filter(|o| !o.meets()).collect();
    if !failing.is_empty() {
        text.push_str(&format!(
            "\n{} deployments fail; the smallest of them, and why:\n",
            failing.len()
        ));
        let smallest = failing
            .iter()
            .map(|o| o.candidate.gpus())
            .min()
            .unwrap_or(0);
        let best_gpus = meeting.first().map_or(u64::MAX, |b| b.candidate.gpus());
        for o in failing
            .iter()
            .filter(|o| o.candidate.gpus() <= best_gpus.min(smallest + 8))
            .take(12)
        {
            text.push_str(&format!("{}\n      {}\n", row(o), o.failures.join("; ")));
        }
    }
    emit(&text)?;
    Ok(if meeting.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
