//! `epsim run`: simulate a scenario (or every point of its sweep) and write the result
//! files; `epsim merge`: combine the folders of a sweep's shards.

use super::output::{UsageError, emit, note};
use epsim::serving::{output, sim};
use epsim::sweep::folder;
use epsim::sweep::run::{self as sweep, Options, SweepFile};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub struct RunArgs {
    pub scenario: PathBuf,
    pub out: Option<PathBuf>,
    pub seed: Option<u64>,
    pub jobs: Option<usize>,
    pub resume: bool,
    pub shard: Option<(usize, usize)>,
    pub list: bool,
    pub progress: bool,
    /// Topology parameters to set (`--set nodes=2`).
    pub set: Vec<(String, String)>,
    /// Removes another run's results from the output folder instead of refusing it.
    pub force: bool,
}

pub fn run(a: &RunArgs) -> anyhow::Result<ExitCode> {
    let mut file = sweep::load(&a.scenario)?;
    if let Some(seed) = a.seed {
        let replicates = file.points.iter().map(|p| p.seed_offset).max().unwrap_or(0);
        if seed.checked_add(replicates).is_none() {
            return Err(UsageError(format!(
                "--seed {seed}: its {} replicates would run past the largest seed {}",
                replicates + 1,
                u64::MAX
            ))
            .into());
        }
    }
    for (name, value) in &a.set {
        file.set_topology_parameter(name, value)?;
    }
    if a.list {
        let mut text = String::new();
        for p in sweep::shard_points(&file.points, a.shard) {
            text.push_str(&format!("{:5}  {}\n", p.index, p.label()));
        }
        emit(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !file.is_sweep() {
        if a.shard.is_some() || a.resume {
            return Err(UsageError(
                "--shard and --resume apply to scenarios with a `sweep:` section".into(),
            )
            .into());
        }
        return single(&file, a);
    }
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let digest = sweep::checked_digest(&file, a.seed, jobs)?;
    let name = file.scenario(&file.points[0])?.scenario.name;
    let out = a.out.clone().unwrap_or_else(|| Path::new("out").join(name));
    let opts = Options {
        out: out.clone(),
        jobs,
        resume: a.resume,
        shard: a.shard,
        progress: a.progress,
        seed: a.seed,
    };
    let lock =
        folder::claim(&out, folder::Run::Sweep(&digest), a.resume, a.force).map_err(UsageError)?;
    let finished = finished_points(&out);
    if !a.resume && finished > 0 {
        note(&format!(
            "note: {} holds {finished} finished points of this same run; it computes every point again (stop it and add --resume to keep them)\n",
            out.join("points").display()
        ))?;
    }
    let outcome = sweep::run(&file, &opts, &digest, &lock)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.scenario.display()))?;
    let mut text = format!(
        "{} points run, {} already done, in {:.1} s wall with {jobs} threads; points in {}\n",
        outcome.ran,
        outcome.skipped,
        outcome.wall_s,
        out.join("points").display()
    );
    match outcome.summary {
        Some(s) => text.push_str(&format!("wrote {}\n", s.display())),
        None => text.push_str(
            "summary.csv not written: this folder does not hold every point yet (merge the shards with `epsim merge`)\n",
        ),
    }
    note(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn single(file: &SweepFile, a: &RunArgs) -> anyhow::Result<ExitCode> {
    let mut loaded = file.scenario(&file.points[0])?;
    if let Some(seed) = a.seed {
        loaded.scenario.seed = seed;
    }
    let dir = a
        .out
        .clone()
        .unwrap_or_else(|| Path::new("out").join(&loaded.scenario.name));
    // Before the run, so a folder that cannot be taken costs no simulation; held to the
    // end, so no other run writes here meanwhile.
    let _lock = folder::claim(&dir, folder::Run::Single, false, a.force).map_err(UsageError)?;
    // requests.csv is written as requests finish, so a long run does not hold its rows.
    let streamed = match loaded.scenario.output.requests_csv {
        true => Some(output::temp_beside(&dir.join("requests.csv"), ".csv")?),
        false => None,
    };
    let report = match &streamed {
        Some(tmp) => {
            // Emptied for each simulation: a run whose warm-up moves is simulated again.
            let mut open = || -> Result<Box<dyn std::io::Write>, String> {
                tmp.as_file().set_len(0).map_err(|e| e.to_string())?;
                let file = tmp.reopen().map_err(|e| e.to_string())?;
                Ok(Box::new(std::io::BufWriter::new(file)))
            };
            sim::run_streaming(&loaded, &mut open)
        }
        None => sim::run(&loaded),
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", a.scenario.display()))?;
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
    // The summary is shown before the files are written, so a failed write loses nothing.
    emit(&text)?;
    let written = output::write_run(&dir, &loaded, &report, streamed)?;
    let s = &report.stats;
    let mut done = format!(
        "\nsimulated {:.1} s in {:.2} s wall ({:.0} events/s, {:.1} simulated s per wall s)\n",
        s.simulated_s, s.wall_s, s.events_per_wall_s, s.simulated_s_per_wall_s
    );
    for f in written {
        done.push_str(&format!("wrote {}\n", f.display()));
    }
    note(&done)?;
    Ok(ExitCode::SUCCESS)
}

pub fn merge(dirs: &[PathBuf], out: &Path) -> anyhow::Result<ExitCode> {
    let summary = sweep::merge(dirs, out).map_err(UsageError)?;
    note(&format!("wrote {}\n", summary.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// Point files already in `out/points`.
fn finished_points(out: &Path) -> usize {
    std::fs::read_dir(out.join("points")).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "csv"))
            .count()
    })
}

/// `K/N` with 1 <= K <= N.
pub fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected K/N with 1 <= K <= N, got \"{text}\"");
    let (k, n) = text.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if k == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}
