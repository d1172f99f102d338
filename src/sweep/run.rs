//! Running a sweep: points in parallel, each written to `points/NNNNN.csv` the moment it
//! finishes (atomically), so an interrupted run keeps every finished point and `--resume`
//! skips them; `summary.csv` is assembled from the point files in sweep order, so it is
//! byte-identical whatever the number of threads or shards.

use super::folder;
use super::plan::{self, Point, Sweep};
use super::pool;
use crate::input::{self, Diagnostics, Node, Problem, Value};
use crate::serving::output::write_atomic;
use crate::serving::{scenario, sim};
use std::path::{Path, PathBuf};

/// A scenario file with its sweep (a single point when it has none).
pub struct SweepFile {
    pub file: PathBuf,
    scenario: Node,
    pub sweep: Sweep,
    pub points: Vec<Point>,
    /// Topology parameters set from the command line (`--set NAME=VALUE`): a problem with
    /// one is the command line's, not a line of the scenario.
    set: Vec<(String, String)>,
}

/// Reads a scenario and its sweep; checks every point as a scenario (each problem is
/// reported with the point it belongs to).
pub fn load(file: &Path) -> Result<SweepFile, Diagnostics> {
    let text = input::read_text(file)?;
    let root = input::parse_tree(file, &text)?;
    let (scenario, section) = plan::split(&root);
    let sweep = match &section {
        Some(s) => plan::parse(file, s)?,
        None => Sweep {
            groups: Vec::new(),
            seeds: 1,
        },
    };
    let points = sweep.points();
    Ok(SweepFile {
        file: file.to_owned(),
        scenario,
        sweep,
        points,
        set: Vec::new(),
    })
}

impl SweepFile {
    /// Sets the topology parameter `name` (`--set nodes=2`) for every point, as if the
    /// scenario's `topology_parameters` said so; the value is checked with the scenario.
    pub fn set_topology_parameter(&mut self, name: &str, value: &str) -> Result<(), Diagnostics> {
        let node = input::parse_tree(&self.file, value)?;
        plan::set_field(
            &mut self.scenario,
            &format!("topology_parameters.{name}"),
            node,
        )
        .map_err(|e| {
            let mut d = Diagnostics::new();
            d.push_file(&self.file, format!("--set {name}={value}: {e}"));
            d
        })?;
        self.set.push((name.to_owned(), value.to_owned()));
        Ok(())
    }

    pub fn is_sweep(&self) -> bool {
        self.points.len() > 1 || !self.sweep.groups.is_empty()
    }

    /// The point's scenario, loaded and checked.
    pub fn scenario(&self, point: &Point) -> Result<scenario::LoadedScenario, Diagnostics> {
        let located = |p: Problem| {
            let mut d = Diagnostics::new();
            d.push(&self.file, p);
            d
        };
        let tree = point.apply(&self.scenario).map_err(located)?;
        let mut loaded = scenario::from_tree(&self.file, &tree).map_err(|mut d| {
            for (name, value) in &self.set {
                d.retell(
                    &format!("topology_parameters.{name}"),
                    &format!("--set {name}={value}"),
                );
            }
            d
        })?;
        loaded.scenario.seed = offset_seed(loaded.scenario.seed, point).map_err(|e| {
            let seed = match &tree.value {
                Value::Map(entries) => entries.iter().find(|(k, _)| k.name == "seed"),
                _ => None,
            };
            located(Problem::new(
                seed.map_or(tree.loc, |(_, v)| v.loc),
                "seed",
                e,
            ))
        })?;
        Ok(loaded)
    }

    /// Checks every point; every problem, each once, labelled with the first point it
    /// appears in.
    pub fn check(&self) -> Result<(), Diagnostics> {
        // Seeds are innermost ([`Sweep::points`]): a replicate follows its point's first
        // seed and differs from it by its seed alone, so only that is checked again (a
        // 1,296-point sweep of 3 seeds validates in a third of the time). A problem of the
        // first seed is reported there, once anyway. `first`: that seed's scenario seed,
        // `None` when it failed.
        let mut first: Option<Option<u64>> = None;
        let loaded = self.points.iter().map(|p| {
            let result = match (p.seed_offset, first) {
                (1.., Some(None)) => Ok(()),
                (1.., Some(Some(seed))) if seed.checked_add(p.seed_offset).is_some() => Ok(()),
                _ => {
                    let loaded = self.scenario(p);
                    if p.seed_offset == 0 {
                        first = Some(loaded.as_ref().ok().map(|l| l.scenario.seed));
                    }
                    loaded.map(|_| ())
                }
            };
            (p, result)
        });
        self.problems(loaded)
    }

    /// Every point's problems, as [`SweepFile::check`] reports them.
    fn problems<'a, T>(
        &self,
        loaded: impl Iterator<Item = (&'a Point, Result<T, Diagnostics>)>,
    ) -> Result<(), Diagnostics> {
        let mut all = Diagnostics::new();
        let mut seen = std::collections::BTreeSet::new();
        for (p, result) in loaded {
            if let Err(d) = result {
                let text = d.to_string();
                if seen.insert(text) {
                    if self.is_sweep() {
                        all.push_file(
                            &self.file,
                            format!(
                                "sweep point {} ({}) is not a valid scenario:",
                                p.index,
                                p.label()
                            ),
                        );
                    }
                    all.append(d);
                }
            }
        }
        if all.is_empty() { Ok(()) } else { Err(all) }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub out: PathBuf,
    pub jobs: usize,
    pub resume: bool,
    /// (k, n): run the k-th (1-based) of n slices.
    pub shard: Option<(usize, usize)>,
    pub progress: bool,
    /// Replaces the scenario's seed (replicates add to it).
    pub seed: Option<u64>,
}

/// What a sweep run did.
pub struct Outcome {
    pub ran: usize,
    pub skipped: usize,
    /// summary.csv, once every point of the sweep is present.
    pub summary: Option<PathBuf>,
    pub wall_s: f64,
}

/// The points of shard (k, n): every n-th, starting at k - 1.
pub fn shard_points(points: &[Point], shard: Option<(usize, usize)>) -> Vec<&Point> {
    points
        .iter()
        .filter(|p| shard.is_none_or(|(k, n)| p.index % n == k - 1))
        .collect()
}

pub fn point_file(dir: &Path, index: usize) -> PathBuf {
    dir.join("points").join(format!("{index:05}.csv"))
}

/// One point's row: `param_<axis>` columns, then the run's summary.
fn point_csv(point: &Point, report: &crate::serving::metrics::Report) -> std::io::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header: Vec<String> = point
        .params
        .iter()
        .map(|(k, _)| format!("param_{k}"))
        .chain(report.summary.iter().map(|(c, _)| (*c).to_owned()))
        .collect();
    w.write_record(&header)?;
    w.write_record(
        point
            .params
            .iter()
            .map(|(_, v)| v.as_str())
            .chain(report.summary.iter().map(|(_, v)| v.as_str())),
    )?;
    w.into_inner().map_err(|e| e.into_error())
}

/// Runs the sweep's points (of the shard) not yet done into `opts.out`, which `lock` says
/// this run holds ([`folder::claim`]); `digest` is the run's [`checked_digest`].
pub fn run(
    sweep: &SweepFile,
    opts: &Options,
    digest: &str,
    _lock: &folder::Lock,
) -> Result<Outcome, String> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(opts.out.join("points"))
        .map_err(|e| format!("{}: {e}", opts.out.display()))?;
    write_manifest(sweep, opts, digest)?;
    let mine = shard_points(&sweep.points, opts.shard);
    // A point file cut short (a killed run) or from another point is run again.
    let todo: Vec<&Point> = mine
        .iter()
        .copied()
        .filter(|p| !(opts.resume && whole_point_file(&point_file(&opts.out, p.index), Some(p))))
        .collect();
    let skipped = mine.len() - todo.len();
    let bar = progress_bar(opts.progress, todo.len(), "points");
    let done: Result<(), String> = pool::for_each(&todo, opts.jobs, |_, point| {
        run_point(sweep, point, opts)?;
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        Ok(())
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    done?;
    let summary = assemble(
        &opts.out,
        std::slice::from_ref(&opts.out),
        sweep.points.len(),
    )?;
    Ok(Outcome {
        ran: todo.len(),
        skipped,
        summary,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// The seed of a point's replicate: the base seed plus its offset, refused (never wrapped
/// to a seed another replicate has) past the largest seed.
fn offset_seed(seed: u64, point: &Point) -> Result<u64, String> {
    // Said the same way for every point, so it is reported once.
    seed.checked_add(point.seed_offset).ok_or_else(|| {
        format!(
            "seed {seed} leaves no room for the sweep's replicate seeds (seed + 1, seed + 2, \
             ...): the largest seed is {}",
            u64::MAX
        )
    })
}

fn run_point(sweep: &SweepFile, point: &Point, opts: &Options) -> Result<(), String> {
    let mut loaded = sweep.scenario(point).map_err(|d| d.to_string())?;
    if let Some(seed) = opts.seed {
        loaded.scenario.seed = offset_seed(seed, point)?;
    }
    let report =
        sim::run(&loaded).map_err(|e| format!("point {} ({}): {e}", point.index, point.label()))?;
    let bytes = point_csv(point, &report).map_err(|e| e.to_string())?;
    write_atomic(&point_file(&opts.out, point.index), &bytes).map_err(|e| e.to_string())
}

/// A progress bar of `total` `unit`s on stderr, when wanted and stderr is a terminal.
pub(super) fn progress_bar(
    wanted: bool,
    total: usize,
    unit: &str,
) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !wanted || !std::io::stderr().is_terminal() || total == 0 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{bar:40}} {{pos}}/{{len}} {unit}, {{elapsed}} elapsed, ETA {{eta}}"
    )) {
        bar.set_style(style);
    }
    Some(bar)
}

/// When `dirs` together hold every point file of a sweep of `total` points, writes
/// `out/summary.csv` (the rows in sweep order) and returns its path; `None` if some are
/// missing (a shard, or an interrupted run).
pub fn assemble(out: &Path, dirs: &[PathBuf], total: usize) -> Result<Option<PathBuf>, String> {
    let mut text = String::new();
    for index in 0..total {
        let Some(file) = dirs
            .iter()
            .map(|d| point_file(d, index))
            .find(|f| f.is_file())
        else {
            return Ok(None);
        };
        if !whole_point_file(&file, None) {
            return Err(format!(
                "{}: not a whole point file (cut short?); run the point again with --resume",
                file.display()
            ));
        }
        let body = crate::input::read_text(&file).map_err(|e| e.to_string())?;
        let (header, row) = body
            .split_once('\n')
            .ok_or_else(|| format!("{}: not a point file", file.display()))?;
        if index == 0 {
            text.push_str(header);
            text.push('\n');
        } else if !text.starts_with(&format!("{header}\n")) {
            return Err(format!(
                "{}: its columns differ from point 0's: not the same sweep",
                file.display()
            ));
        }
        text.push_str(row);
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let summary = out.join("summary.csv");
    write_atomic(&summary, text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(Some(summary))
}

/// `sweep.json`: what a sweep folder holds, so shards can be checked and merged.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepManifest {
    pub epsim_version: String,
    pub scenario: String,
    pub total_points: usize,
    /// Every point's label, in sweep order.
    pub points: Vec<String>,
    /// `k/n` for a shard.
    pub shard: Option<String>,
    /// [`checked_digest`] of every resolved point, the files they name and the seed override:
    /// resuming or merging folders of different runs is refused. Empty in folders written
    /// before digests were recorded.
    #[serde(default)]
    pub digest: String,
}

/// What makes two runs of a sweep the same run: every point's scenario (overrides and
/// `--set`s applied), the model, topology, GPU specs and trace it names and the kernel
/// profiles they name, all by content (not by path, so the folder a run starts from does
/// not matter), and the `--seed` override. Editing any input between a run and its resume
/// (or between shards) shows. The points are checked too (problems as
/// [`SweepFile::check`] reports them): each is loaded once, `jobs` at once (loading every
/// point is most of a sweep's start).
pub fn checked_digest(
    sweep: &SweepFile,
    seed: Option<u64>,
    jobs: usize,
) -> Result<String, Diagnostics> {
    let described = pool::map(&sweep.points, jobs, |_, p| {
        sweep.scenario(p).map(|l| describe(sweep, p, &l))
    });
    let checked = described
        .iter()
        .map(|d| d.as_ref().map(|_| ()).map_err(Clone::clone));
    sweep.problems(sweep.points.iter().zip(checked))?;
    let mut h = Fnv1a::default();
    let mut profiles: Vec<&PathBuf> = Vec::new();
    for (text, dirs) in described.iter().flatten() {
        h.bytes(text.as_bytes());
        for dir in dirs {
            if !profiles.contains(&dir) {
                profiles.push(dir);
            }
        }
    }
    h.bytes(format!("{seed:?}").as_bytes());
    for dir in profiles {
        hash_folder(&mut h, dir);
    }
    Ok(format!("{:016x}", h.0))
}

/// What a loaded point contributes to the digest, and the kernel-profile folders it names.
fn describe(sweep: &SweepFile, p: &Point, l: &scenario::LoadedScenario) -> (String, Vec<PathBuf>) {
    let t = &l.topology;
    let mut profiles = Vec::new();
    let specs: Vec<_> = t
        .gpu_specs
        .values()
        .map(|g| {
            if let Some(dir) = &g.profile
                && !profiles.contains(dir)
            {
                profiles.push(dir.clone());
            }
            crate::hardware::GpuSpec {
                profile: None,
                ..g.clone()
            }
        })
        .collect();
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{specs:?}|{}|",
        p.apply(&sweep.scenario),
        l.model,
        l.trace,
        t.graph,
        t.gpus,
        t.collectives,
        l.scenario.seed,
    );
    (text, profiles)
}

/// FNV-1a, 64-bit: a stable digest (std's hashers may change between releases).
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl std::fmt::Write for Fnv1a {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

/// Every file's name (within the folder) and bytes in `dir`, in name order (an unreadable
/// one by name only: loading the profile reports it).
fn hash_folder(h: &mut Fnv1a, dir: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for file in files.iter().filter(|f| f.is_file()) {
        h.bytes(file.file_name().unwrap_or_default().as_encoded_bytes());
        h.bytes(&std::fs::read(file).unwrap_or_default());
    }
}

/// Whether `file` is a whole point file: a header and exactly one row of as many cells, its
/// `param_*` cells those of `point` when given.
fn whole_point_file(file: &Path, point: Option<&Point>) -> bool {
    let Ok(mut r) = csv::Reader::from_path(file) else {
        return false;
    };
    let Ok(header) = r.headers().cloned() else {
        return false;
    };
    let rows: Vec<csv::StringRecord> = r.records().map_while(Result::ok).collect();
    let [row] = rows.as_slice() else {
        return false;
    };
    let params_match = point.is_none_or(|p| {
        p.params.iter().enumerate().all(|(i, (k, v))| {
            header.get(i) == Some(format!("param_{k}").as_str()) && row.get(i) == Some(v.as_str())
        })
    });
    row.len() == header.len() && !header.is_empty() && params_match
}

fn write_manifest(sweep: &SweepFile, opts: &Options, digest: &str) -> Result<(), String> {
    let manifest = SweepManifest {
        digest: digest.to_owned(),
        epsim_version: env!("CARGO_PKG_VERSION").into(),
        scenario: sweep.file.display().to_string(),
        total_points: sweep.points.len(),
        points: sweep.points.iter().map(Point::label).collect(),
        shard: opts.shard.map(|(k, n)| format!("{k}/{n}")),
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
    write_atomic(&opts.out.join("sweep.json"), format!("{text}\n").as_bytes())
        .map_err(|e| e.to_string())
}

pub(super) fn read_manifest(dir: &Path) -> Result<SweepManifest, String> {
    let file = dir.join("sweep.json");
    let text = crate::input::read_text(&file)
        .map_err(|e| format!("{e} (is it a sweep's output folder?)"))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
}

/// Combines the folders of a sweep's shards into `out`: every point file, the manifest and
/// summary.csv, exactly as an unsharded run writes them.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<PathBuf, String> {
    let manifests = dirs
        .iter()
        .map(|d| read_manifest(d))
        .collect::<Result<Vec<_>, _>>()?;
    let first = manifests.first().ok_or("nothing to merge")?;
    let _lock = folder::claim(out, folder::Run::Sweep(&first.digest), true, false)?;
    for (d, m) in dirs.iter().zip(&manifests) {
        if m.points != first.points || m.digest != first.digest {
            return Err(format!(
                "{} holds a different sweep ({} points) from {} ({} points)",
                d.display(),
                m.total_points,
                dirs[0].display(),
                first.total_points
            ));
        }
    }
    std::fs::create_dir_all(out.join("points")).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut missing = Vec::new();
    for index in 0..first.total_points {
        match dirs
            .iter()
            .map(|d| point_file(d, index))
            .find(|f| f.is_file())
        {
            Some(f) => {
                let target = point_file(out, index);
                if f != target {
                    let bytes = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                    write_atomic(&target, &bytes).map_err(|e| e.to_string())?;
                }
            }
            None => missing.push(index),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "{} of {} points are in none of the folders (first: {} = {}); run the missing shards or --resume",
            missing.len(),
            first.total_points,
            missing[0],
            first.points[missing[0]]
        ));
    }
    let merged = SweepManifest {
        shard: None,
        ..first.clone()
    };
    let text = serde_json::to_string_pretty(&merged).map_err(|e| e.to_string())?;
    write_atomic(&out.join("sweep.json"), format!("{text}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    assemble(
        out,
        std::slice::from_ref(&out.to_owned()),
        first.total_points,
    )?
    .ok_or_else(|| "points went missing while merging".to_owned())
}
