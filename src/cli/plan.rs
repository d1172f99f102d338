//! `epsim plan`: the deployment with the fewest GPUs that meets a latency SLA at a rate.

use super::frontier::Format;
use super::lookup;
use super::output::{UsageError, emit, json};
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
    pub format: Format,
}

fn row(o: &Outcome) -> String {
    let f = |x: Option<f64>, d: usize| x.map_or("-".to_owned(), |v| format!("{v:.d$}"));
    format!(
        "{:>4}  {:<78} {:>9} {:>9} {:>11}",
        o.candidate.gpus(),
        o.candidate.label(),
        f(o.ttft_p99_ms, 0),
        f(o.tpot_p99_ms, 1),
        f(o.output_tok_s, 0),
    )
}

pub fn run(a: PlanArgs) -> anyhow::Result<ExitCode> {
    let model_file = lookup::model_path(&a.model, &a.models_dir)?;
    let model = epsim::model::load_model(&model_file)?;
    if let Some(d) = a
        .target
        .mtp_drafts
        .filter(|&d| d > 0 && model.mtp_modules == 0)
    {
        return Err(UsageError(format!(
            "--mtp {d}: {} has no MTP modules to draft with",
            model_file.display()
        ))
        .into());
    }
    let topology_file = lookup::topology_path(&a.topology)?;
    let topo = epsim::topology::load_with(&topology_file, &a.target.topology_parameters)?;
    let gpu = topo.gpu_specs.keys().next().cloned().unwrap_or_default();
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let target = Target {
        model_file: abs(&model_file),
        topology_file: abs(&topology_file),
        ..a.target
    };
    let note = |o: &Outcome| {
        let roofline = capacity::roofline_ops(&target, o);
        capacity::certainty_note(o, &model.name, &gpu, &roofline)
    };
    let searched = capacity::search(&target, topo.gpus.len() as u64, a.jobs);
    let outcomes = &searched.outcomes;
    if outcomes.is_empty() {
        return Err(UsageError(format!(
            "{} has {} GPUs: no candidate deployment fits (the smallest needs {})",
            a.topology.display(),
            topo.gpus.len(),
            capacity::PREFILL_EP
        ))
        .into());
    }
    let meeting: Vec<&Outcome> = outcomes.iter().filter(|o| o.meets()).collect();
    let best = meeting.first().copied();
    let headroom = best
        .filter(|_| a.headroom)
        .map(|b| capacity::headroom(&target, &b.candidate));
    if let (Some(file), Some(best)) = (&a.emit_scenario, best) {
        let copies = match best.candidate.copies {
            1 => String::new(),
            k => format!(
                "\n# This is one of its {k} copies, each on its own {}, serving 1/{k} of the rate.",
                a.topology.display()
            ),
        };
        let yaml = format!(
            "# epsim plan's best deployment: {} GPUs, {}{copies}\n{}",
            best.candidate.gpus(),
            best.candidate.label(),
            capacity::scenario_text(&target, &best.candidate)
        );
        std::fs::write(file, yaml).map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
        super::output::note(&format!("wrote {}\n", file.display()))?;
    }
    let code = if best.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    match a.format {
        Format::Json => {
            emit(&machine_json(&target, &searched, headroom, &note)?)?;
            return Ok(code);
        }
        Format::Csv => {
            emit(&machine_csv(outcomes)?)?;
            return Ok(code);
        }
        Format::Table => {}
    }
    let header = format!(
        "{:>4}  {:<78} {:>9} {:>9} {:>11}\n",
        "GPUs", "deployment", "TTFT p99", "TPOT p99", "output/s"
    );
    let simulated = outcomes.iter().filter(|o| o.simulated).count();
    let mut text = format!(
        "{} at {} requests/s, ISL {} / OSL {}, SLA: TTFT p99 <= {} ms, TPOT p99 <= {} ms\n{} candidate deployments on {} (or copies of it): {simulated} simulated, {} pruned before simulating (cannot fit or cannot keep up), {} not needed (more GPUs than the answer)\n{}\n\n",
        model_file.display(),
        target.rate_per_s,
        target.isl,
        target.osl,
        target.ttft_p99_ms,
        target.tpot_p99_ms,
        outcomes.len() + searched.not_needed,
        topology_label(&a.topology, &target),
        outcomes.len() - simulated,
        searched.not_needed,
        run_lengths(&target, outcomes),
    );
    match best {
        Some(best) => {
            text.push_str(&format!(
                "best: {} GPUs, {}\n{}\n\n",
                best.candidate.gpus(),
                best.candidate.label(),
                note(best)
            ));
            if let Some((rate, probes)) = headroom {
                let capped = rate >= target.rate_per_s * capacity::HEADROOM_MAX_FACTOR;
                text.push_str(&format!(
                    "headroom: it holds the SLA up to {}{rate:.0} requests/s ({:.1}x the target; {probes} more simulations, to within {:.0}%)\n\n",
                    if capped { "at least " } else { "" },
                    rate / target.rate_per_s,
                    capacity::HEADROOM_RESOLUTION * 100.0
                ));
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
            "\n{} deployments fail ({} of them pruned before simulating); the smallest of them, and why:\n",
            failing.len(),
            failing.iter().filter(|o| !o.simulated).count()
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
    Ok(code)
}

/// The topology file, with the parameters `--set` for it.
fn topology_label(file: &Path, t: &Target) -> String {
    let set: Vec<String> = t
        .topology_parameters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    match set.is_empty() {
        true => file.display().to_string(),
        false => format!("{} ({})", file.display(), set.join(", ")),
    }
}

/// How long each deployment was simulated, where the length came from, and how many runs
/// were lengthened to reach steady state or stayed undecided.
fn run_lengths(t: &Target, outcomes: &[Outcome]) -> String {
    let (warmup, duration) = t.run_length();
    let source = match t.duration_s {
        Some(_) => "as given".to_owned(),
        None => format!(
            "from the SLA: a request lives at most {:.0} s (TTFT + OSL x TPOT)",
            t.lifetime_bound_s()
        ),
    };
    let lengthened = outcomes.iter().filter(|o| o.lengthened > 0).count();
    let undecided = outcomes.iter().filter(|o| o.undecided()).count();
    format!(
        "runs: {duration:.0} s with {warmup:.0} s of warm-up ({source}); {lengthened} run again longer (up to {:.0}x) to reach steady state, {undecided} undecided (never steady)",
        capacity::LENGTHENING.powi(capacity::MAX_LENGTHENINGS as i32)
    )
}

/// Every deployment tried, as rows with units in their names.
fn machine_csv(outcomes: &[Outcome]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "gpus",
        "deployment",
        "ttft_ms_p99",
        "tpot_ms_p99",
        "output_tok_s",
        "meets_sla",
        "simulated",
        "simulated_s",
        "lengthened",
        "undecided",
        "failures",
    ])?;
    let f = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.3}"));
    for o in outcomes {
        w.write_record([
            o.candidate.gpus().to_string(),
            o.candidate.label(),
            f(o.ttft_p99_ms),
            f(o.tpot_p99_ms),
            f(o.output_tok_s),
            o.meets().to_string(),
            o.simulated.to_string(),
            format!("{:.1}", o.simulated_s),
            o.lengthened.to_string(),
            o.undecided().to_string(),
            o.failures.join("; "),
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// The target, the best deployment and its headroom, and every deployment tried.
fn machine_json(
    target: &Target,
    searched: &capacity::Searched,
    headroom: Option<(f64, u32)>,
    note: &dyn Fn(&Outcome) -> String,
) -> anyhow::Result<String> {
    let outcomes = &searched.outcomes;
    let (warmup_s, duration_s) = target.run_length();
    let one = |o: &Outcome| {
        serde_json::json!({
            "gpus": o.candidate.gpus(),
            "deployment": o.candidate.label(),
            "ttft_ms_p99": o.ttft_p99_ms,
            "tpot_ms_p99": o.tpot_p99_ms,
            "output_tok_s": o.output_tok_s,
            "meets_sla": o.meets(),
            "simulated": o.simulated,
            "simulated_s": o.simulated_s,
            "lengthened": o.lengthened,
            "undecided": o.undecided(),
            "copies": o.candidate.copies,
            "failures": o.failures,
        })
    };
    json(&serde_json::json!({
        "rate_per_s": target.rate_per_s,
        "isl": target.isl,
        "osl": target.osl,
        "ttft_ms_p99_max": target.ttft_p99_ms,
        "tpot_ms_p99_max": target.tpot_p99_ms,
        "run_length_s": duration_s,
        "warmup_s": warmup_s,
        "best": outcomes.iter().find(|o| o.meets()).map(one),
        "best_certainty_note": outcomes.iter().find(|o| o.meets()).map(note),
        "headroom_rate_per_s": headroom.map(|h| h.0),
        "deployments": outcomes.iter().map(one).collect::<Vec<_>>(),
        "not_needed": searched.not_needed,
    }))
}
