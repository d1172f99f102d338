//! The hostile-input harness (hardening issue): every shipped input file with one slip at a
//! time (each value replaced by each of [`VALUES`], each line deleted, each line repeated),
//! random combinations of up to three slips, mutated trace, recording and EPLB inputs, and
//! a corpus of the cases found by hand. Bad input must end in located problems (exit 2),
//! good input must load, and every loaded scenario is run briefly and must keep its
//! invariants. Nothing may panic. The counts are the README's reliability table
//! (`UPDATE_README=1 cargo test --test hostile` rewrites it).

mod common;
use common::{epsim, repo, stdout};
use epsim::input::Diagnostics;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Values that have broken loaders before: signs, overflow past u32, u64 and f64's exact
/// integers, floats where integers go, special floats, empty and wrong-kind nodes, huge
/// ranges.
const VALUES: [&str; 18] = [
    "-1",
    "0",
    "0.5",
    "-0.0",
    "1e400",
    ".inf",
    ".nan",
    "4294967297",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "1e18",
    "[]",
    "{}",
    "''",
    "abc",
    "0-99999999",
    "~",
];

/// The input folders copied into the harness's scratch tree (files name each other by
/// relative paths, so the layout is kept).
const INPUT_DIRS: [&str; 5] = [
    "models",
    "topologies",
    "scenarios",
    "tests/scenarios",
    "validation/scenarios",
];

/// What happened to the inputs of one kind.
#[derive(Default)]
struct Tally {
    tried: u64,
    accepted: u64,
    refused: u64,
    runs: u64,
    /// Failures of the harness's assertions, each with the input that caused it.
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, what: &str, why: impl std::fmt::Display) {
        self.failures.push(format!("{what}: {why}"));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A scratch copy of every shipped input, and the YAML files in it, in name order.
fn scratch_inputs() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for d in INPUT_DIRS {
        copy_tree(&repo(d), &dir.path().join(d));
        for sub in [d.to_owned(), format!("{d}/gpus")] {
            let Ok(entries) = std::fs::read_dir(dir.path().join(&sub)) else {
                continue;
            };
            files.extend(
                entries
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                    .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.')),
            );
        }
    }
    files.sort();
    (dir, files)
}

/// Every single slip of `text`: each `key: value` line's value replaced by each of
/// [`VALUES`], each line deleted, each line repeated; with a label saying which.
fn single_slips(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    // The text with line `i` replaced by `new` (none, one or more lines).
    let with = |i: usize, new: &[&str]| {
        let mut out: Vec<&str> = lines[..i].to_vec();
        out.extend_from_slice(new);
        out.extend_from_slice(&lines[i + 1..]);
        out.join("\n") + "\n"
    };
    let mut slips = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.split('#').next().unwrap_or("");
        if code.trim().is_empty() {
            continue;
        }
        if let Some(at) = code.find(": ") {
            for v in VALUES {
                let new = format!("{}: {v}", &code[..at]);
                slips.push((format!("line {}: value {v}", i + 1), with(i, &[&new])));
            }
        }
        slips.push((format!("line {}: deleted", i + 1), with(i, &[])));
        slips.push((format!("line {}: repeated", i + 1), with(i, &[line, line])));
    }
    slips
}

/// `epsim validate`'s check of `file`, with a panic turned into a failure.
fn check(file: &Path) -> Result<Result<String, Diagnostics>, String> {
    catch_unwind(AssertUnwindSafe(|| {
        epsim::files::check(file, &BTreeMap::new())
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

/// A refusal must say where: some problem carries a line and column, and every one names
/// the file it is in.
fn located(d: &Diagnostics) -> bool {
    d.iter().any(|p| p.loc.is_some()) && d.iter().all(|p| !p.file.as_os_str().is_empty())
}

/// Runs a loaded single scenario for 2 simulated seconds and checks what every run must
/// keep: requests conserved, every finished request given the tokens it asked for, times
/// in order, every summary number finite.
fn run_briefly(file: &Path, tally: &mut Tally, what: &str) {
    let Ok(mut loaded) = epsim::serving::scenario::load(file) else {
        return; // a sweep: its points were checked, not run here
    };
    let s = &mut loaded.scenario;
    s.duration_s = s.duration_s.min(2.0);
    s.warmup_s = s.warmup_s.min(0.5);
    s.drain_s = s.drain_s.min(1.0);
    s.stop_when = None;
    tally.runs += 1;
    let report = match catch_unwind(AssertUnwindSafe(|| epsim::serving::sim::run(&loaded))) {
        Err(_) => return tally.fail(what, "the run panicked"),
        Ok(Err(e)) => return tally.fail(what, format!("the run failed: {e}")),
        Ok(Ok(r)) => r,
    };
    let v = |c: &str| report.value(c).unwrap_or(f64::NAN);
    let accounted = v("requests_completed_all") + v("requests_pending") + v("requests_rejected");
    if v("requests_arrived") != accounted {
        tally.fail(
            what,
            format!(
                "{} arrived, {accounted} accounted for",
                v("requests_arrived")
            ),
        );
    }
    for r in &report.requests {
        if r.generated_tokens != r.output_tokens
            || !(r.arrival_s <= r.first_token_s && r.first_token_s <= r.finish_s)
        {
            return tally.fail(what, format!("request {r:?} is inconsistent"));
        }
    }
    if let Some((c, x)) = report
        .summary
        .iter()
        .find(|(_, x)| x.parse::<f64>().is_ok_and(|f| !f.is_finite()))
    {
        tally.fail(what, format!("summary {c} = {x}"));
    }
}

/// One mutated YAML input: loaded and run, or refused with located problems.
fn try_yaml(file: &Path, text: &str, what: &str, tally: &mut Tally) {
    std::fs::write(file, text).unwrap();
    tally.tried += 1;
    match check(file) {
        Err(panic) => tally.fail(what, format!("panicked: {panic}")),
        Ok(Err(d)) if located(&d) => tally.refused += 1,
        Ok(Err(d)) => tally.fail(what, format!("refused without a location: {d}")),
        Ok(Ok(_)) => {
            tally.accepted += 1;
            let is_scenario = text.lines().any(|l| l.starts_with("instances:"));
            let is_sweep = text.lines().any(|l| l.starts_with("sweep:"));
            if is_scenario && !is_sweep {
                run_briefly(file, tally, what);
            }
        }
    }
}

/// Every single slip of every shipped YAML input.
fn yaml_single_slips() -> Tally {
    let (_dir, files) = scratch_inputs();
    let mut tally = Tally::default();
    for file in &files {
        let original = std::fs::read_to_string(file).unwrap();
        for (label, text) in single_slips(&original) {
            let what = format!("{} {label}", file.file_name().unwrap().to_string_lossy());
            try_yaml(file, &text, &what, &mut tally);
        }
        std::fs::write(file, original).unwrap();
    }
    tally
}

/// A small valid trace and recording, each cell of which the harness replaces.
const TRACE: &str = "arrival_s,input_tokens,output_tokens\n0.0,128,16\n0.5,256,32\n1.0,64,8\n";
const RECORDING: &str = "iteration,layer,expert,tokens\n0,0,0,5\n0,0,1,3\n0,1,0,2\n0,1,1,6\n1,0,0,1\n1,0,1,1\n1,1,0,4\n1,1,1,4\n";

/// Every cell of a CSV replaced by each of [`VALUES`] and of a few CSV-only slips, each
/// row deleted and repeated, and the header damaged.
fn csv_slips(text: &str) -> Vec<(String, String)> {
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    let join = |rows: &[Vec<String>]| rows.iter().map(|r| r.join(",") + "\n").collect::<String>();
    let owned: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| (*c).to_owned()).collect())
        .collect();
    let mut slips = Vec::new();
    let extra = ["", "\"", "1,2", "NaN", "inf", "1e300", "-5"];
    for (i, row) in owned.iter().enumerate() {
        for j in 0..row.len() {
            for v in VALUES.iter().chain(&extra) {
                let mut m = owned.clone();
                m[i][j] = (*v).to_owned();
                slips.push((format!("row {} cell {} = {v}", i + 1, j + 1), join(&m)));
            }
        }
        let mut gone = owned.clone();
        gone.remove(i);
        slips.push((format!("row {} deleted", i + 1), join(&gone)));
        let mut twice = owned.clone();
        twice.insert(i, row.clone());
        slips.push((format!("row {} repeated", i + 1), join(&twice)));
    }
    slips.push(("empty".into(), String::new()));
    slips
}

/// Mutated traces and recordings through their readers: read, or refused with located
/// problems; a recording may only hold probabilities.
fn csv_inputs() -> Tally {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.csv");
    let mut tally = Tally::default();
    for (kind, base) in [("trace", TRACE), ("recording", RECORDING)] {
        for (label, text) in csv_slips(base) {
            std::fs::write(&file, &text).unwrap();
            let what = format!("{kind} {label}");
            tally.tried += 1;
            // What is read must be usable: requests of at least one token each, in time
            // order, within the limits; per-layer probabilities that sum to 1.
            let outcome = catch_unwind(AssertUnwindSafe(|| match kind {
                "trace" => epsim::serving::workload::read_trace(&file, 0.0).map(|requests| {
                    let limit = epsim::serving::scenario::MAX_REQUEST_TOKENS;
                    requests.windows(2).all(|w| w[0].arrival <= w[1].arrival)
                        && requests.iter().all(|r| {
                            (1..=limit).contains(&r.input_tokens)
                                && (1..=limit).contains(&r.output_tokens)
                        })
                }),
                _ => epsim::moe::replay::Recording::read(&file, 2, 2).map(|recording| {
                    (0..2).all(|i| {
                        recording.at(i).iter().all(|layer| {
                            layer.iter().all(|p| (0.0..=1.0).contains(p))
                                && (layer.iter().sum::<f64>() - 1.0).abs() < 1e-9
                        })
                    })
                }),
            }));
            match outcome {
                Err(_) => tally.fail(&what, "panicked"),
                Ok(Ok(true)) => tally.accepted += 1,
                Ok(Ok(false)) => tally.fail(&what, "read, but not usable"),
                Ok(Err(d)) if d.iter().all(|p| !p.file.as_os_str().is_empty()) => {
                    tally.refused += 1
                }
                Ok(Err(d)) => tally.fail(&what, format!("refused without its file: {d}")),
            }
        }
    }
    tally
}

/// Mutated EPLB inputs through `epsim eplb`: a placement, or exit 2 naming the input.
fn eplb_inputs() -> Tally {
    let fields = [
        ("weight", "[[90, 132, 40, 61], [5, 5, 5, 5]]"),
        ("num_replicas", "8"),
        ("num_groups", "2"),
        ("num_nodes", "1"),
        ("num_gpus", "4"),
    ];
    let json = |fs: &[(&str, String)]| {
        let body: Vec<String> = fs.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
        format!("{{{}}}", body.join(", "))
    };
    let values = [
        "-1",
        "0",
        "0.5",
        "1e400",
        "4294967297",
        "18446744073709551615",
        "1000001",
        "[]",
        "[[]]",
        "[[1e308, 1e308, 1e308, 1e308]]",
        "[[-1, 1, 1, 1]]",
        "[[1, 2], [1]]",
        "{}",
        "\"x\"",
        "null",
    ];
    let mut tally = Tally::default();
    for (i, (name, _)) in fields.iter().enumerate() {
        let mut cases: Vec<(String, Vec<(&str, String)>)> = values
            .iter()
            .map(|v| {
                let mut fs: Vec<(&str, String)> =
                    fields.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
                fs[i].1 = (*v).to_owned();
                (format!("{name} = {v}"), fs)
            })
            .collect();
        let mut without: Vec<(&str, String)> =
            fields.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        without.remove(i);
        cases.push((format!("{name} left out"), without));
        for (label, fs) in cases {
            tally.tried += 1;
            let out = epsim()
                .args(["eplb", "--input", "-"])
                .write_stdin(json(&fs))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) => tally.accepted += 1,
                Some(2) if err.contains("<stdin>") => tally.refused += 1,
                code => tally.fail(&format!("eplb {label}"), format!("exit {code:?}: {err}")),
            }
        }
    }
    tally
}

/// The cases found by hand (`tests/corpus/cases.txt`): each an edit of a shipped file and
/// a command, with the exit code and the words its message must hold.
fn corpus() -> Tally {
    let (dir, _) = scratch_inputs();
    let cases = std::fs::read_to_string(repo("tests/corpus/cases.txt")).unwrap();
    let mut tally = Tally::default();
    for (n, line) in cases.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let what = format!("tests/corpus/cases.txt:{}", n + 1);
        let f: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let [base, find, replace, command, code, words] = f[..] else {
            tally.fail(&what, "needs 6 fields separated by ` | `");
            continue;
        };
        let (find, replace) = (find.replace("\\n", "\n"), replace.replace("\\n", "\n"));
        let file = match base {
            "-" => dir.path().join("corpus-case.txt"),
            _ => dir.path().join(base).with_file_name("corpus-case.yaml"),
        };
        let text = match base {
            "-" => replace,
            _ => {
                let original = std::fs::read_to_string(dir.path().join(base)).unwrap();
                if !original.contains(&find) {
                    tally.fail(&what, format!("{base} does not contain `{find}`"));
                    continue;
                }
                original.replacen(&find, &replace, 1)
            }
        };
        std::fs::write(&file, text).unwrap();
        tally.tried += 1;
        let args: Vec<String> = command
            .split_whitespace()
            .map(|a| {
                a.replace("FILE", &file.display().to_string())
                    .replace("OUT", &dir.path().join("out").display().to_string())
            })
            .collect();
        let before = files_under(dir.path());
        let out = epsim()
            .current_dir(dir.path())
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let outside: Vec<_> = files_under(dir.path())
            .difference(&before)
            .filter(|f| !f.starts_with(dir.path().join("out")))
            .cloned()
            .collect();
        if !outside.is_empty() {
            tally.fail(
                &what,
                format!("wrote outside its output folder: {outside:?}"),
            );
        }
        let got = out.status.code().map_or("signal".into(), |c| c.to_string());
        if got != code || !err.contains(words) || err.contains("panicked") {
            tally.fail(
                &what,
                format!("exit {got}, wanted {code} with `{words}`: {err}"),
            );
        } else if code == "0" {
            tally.accepted += 1;
        } else {
            tally.refused += 1;
        }
        std::fs::remove_file(&file).unwrap();
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
    }
    tally
}

/// Every file below `dir`.
fn files_under(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    let mut all = std::collections::BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                all.insert(path);
            }
        }
    }
    all
}

/// The README's table, from the tallies.
fn table(rows: &[(&str, &Tally)]) -> String {
    let mut t = String::from(
        "| inputs | tried | loaded (and run) | refused, located | panics, aborts, unlocated or wrong exits, broken invariants, writes outside the output folder |\n|---|---|---|---|---|\n",
    );
    for (name, tally) in rows {
        let ran = if tally.runs > 0 {
            format!(" ({} run)", tally.runs)
        } else {
            String::new()
        };
        t.push_str(&format!(
            "| {name} | {} | {}{ran} | {} | {} |\n",
            tally.tried,
            tally.accepted,
            tally.refused,
            tally.failures.len()
        ));
    }
    t
}

#[test]
fn hostile_inputs_end_in_results_or_located_problems() {
    let start = std::time::Instant::now();
    let yaml = yaml_single_slips();
    let csv = csv_inputs();
    let eplb = eplb_inputs();
    let cases = corpus();
    let rows = [
        (
            "one slip in every shipped YAML file (scenario, model, topology, GPU)",
            &yaml,
        ),
        ("one slip in a trace or an expert-count recording", &csv),
        ("one slip in an `epsim eplb` input", &eplb),
        ("the hand-found cases (`tests/corpus/cases.txt`)", &cases),
    ];
    let table = table(&rows);
    let failures: Vec<&String> = rows.iter().flat_map(|(_, t)| &t.failures).collect();
    eprintln!("{table}harness: {:.1} s", start.elapsed().as_secs_f64());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let readme_file = repo("README.md");
    let readme = std::fs::read_to_string(&readme_file).unwrap();
    let (open, close) = ("<!-- hostile-table -->\n", "<!-- /hostile-table -->");
    let a = readme
        .find(open)
        .expect("README has the hostile-input table")
        + open.len();
    let b = readme[a..].find(close).expect("the table is closed") + a;
    if std::env::var_os("UPDATE_README").is_some() {
        std::fs::write(
            &readme_file,
            format!("{}{table}{}", &readme[..a], &readme[b..]),
        )
        .unwrap();
    } else {
        assert_eq!(
            readme[a..b],
            table,
            "the README's reliability table is stale: UPDATE_README=1 cargo test --test hostile"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Up to three slips at once in a shipped scenario: loading ends in a scenario or in
    /// located problems (the single slips above are exhaustive; these are their mixtures).
    #[test]
    fn several_slips_at_once_load_or_say_where(
        slips in proptest::collection::vec(0usize..100_000, 1..4),
        which in 0usize..3,
    ) {
        let name = ["scenarios/quickstart.yaml", "scenarios/wide-ep-nvl72.yaml", "tests/scenarios/small-disaggregated.yaml"][which];
        let file = repo(name);
        let mut text = std::fs::read_to_string(&file).unwrap();
        for pick in slips {
            let options = single_slips(&text);
            text = options[pick % options.len()].1.clone();
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let root = epsim::input::parse_tree(&file, &text)?;
            let (base, _) = epsim::sweep::plan::split(&root);
            epsim::serving::scenario::from_tree(&file, &base).map(|_| ())
        }));
        match outcome {
            Err(_) => prop_assert!(false, "panicked on:\n{text}"),
            Ok(Ok(())) => {}
            Ok(Err(d)) => prop_assert!(located(&d), "unlocated: {d}\n{text}"),
        }
    }
}

/// A link's `latency_ns` reaches every all-to-all solver (the fast path and the serving
/// loop ignored it: the same answers for 0 and 10^6 ns, where the flow solver added it).
#[test]
fn link_latency_reaches_the_fast_path_and_serving() {
    let (dir, _) = scratch_inputs();
    let topologies = dir.path().join("topologies");
    let text = std::fs::read_to_string(topologies.join("hgx-h100x8.yaml")).unwrap();
    let nic = "  nic_link:\n";
    assert!(text.contains(nic));
    let slow = text.replacen(nic, &format!("{nic}    latency_ns: 1000000\n"), 1);
    std::fs::write(topologies.join("slow.yaml"), slow).unwrap();
    let dispatch_us = |topology: &str, solver: &str| -> f64 {
        let out = epsim()
            .current_dir(dir.path())
            .args([
                "a2a",
                "--topology",
                topology,
                "--set",
                "nodes=2",
                "--ep",
                "16",
            ])
            .args([
                "--tokens-per-rank",
                "64",
                "--solver",
                solver,
                "--format",
                "json",
            ])
            .assert()
            .success();
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        v[0]["dispatch_us"].as_f64().unwrap()
    };
    for solver in ["fast", "flow"] {
        let before = dispatch_us("topologies/hgx-h100x8.yaml", solver);
        let after = dispatch_us("topologies/slow.yaml", solver);
        // A cross-node route crosses two NIC links: 2 ms more.
        assert!(
            (after - before - 2000.0).abs() < 1e-3,
            "{solver}: {before} -> {after} us"
        );
    }
    // And `epsim iteration` (the serving loop's pricing): SGLang's decode instance over
    // 13 nodes, its low-latency all-to-all 2 ms slower per phase and MoE layer.
    let scenario = dir.path().join("validation/scenarios/sglang-h100-96.yaml");
    let text = std::fs::read_to_string(&scenario).unwrap();
    let slow = text.replace("topologies/hgx-h100x8.yaml", "topologies/slow.yaml");
    std::fs::write(dir.path().join("validation/scenarios/slow.yaml"), slow).unwrap();
    let a2a_ms = |file: &str| -> f64 {
        let out = epsim()
            .current_dir(dir.path())
            .args(["iteration", file, "--instance", "decode", "--batch", "32"])
            .args(["--context", "2000", "--iterations", "2", "--format", "json"])
            .assert()
            .success();
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        v["one_micro_batch"]["all_to_all_ms"].as_f64().unwrap()
    };
    let before = a2a_ms("validation/scenarios/sglang-h100-96.yaml");
    let after = a2a_ms("validation/scenarios/slow.yaml");
    // 58 MoE layers x (dispatch + combine) x 2 ms.
    assert!(
        (after - before - 232.0).abs() < 1e-6,
        "{before} -> {after} ms"
    );
}
