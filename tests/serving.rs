//! `epsim run` and scenario files, run as a user would.

mod common;

use common::{epsim, repo, stderr, stdout};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn run(scenario: &str, out: &Path, extra: &[&str]) -> String {
    let o = epsim()
        .args(["run", repo(scenario).to_str().unwrap(), "--out"])
        .arg(out)
        .args(extra)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(o).unwrap()
}

/// `tests/scenarios/NAME.yaml` with its relative paths made absolute, to be written
/// anywhere.
fn test_scenario(name: &str) -> String {
    std::fs::read_to_string(repo(&format!("tests/scenarios/{name}.yaml")))
        .unwrap()
        .replace("../../", &format!("{}/", repo("").display()))
}

/// summary.csv as (column, value) pairs.
fn summary(dir: &Path) -> Vec<(String, String)> {
    let mut r = csv::Reader::from_path(dir.join("summary.csv")).unwrap();
    let headers = r.headers().unwrap().clone();
    let row = r.records().next().unwrap().unwrap();
    headers
        .iter()
        .zip(row.iter())
        .map(|(h, v)| (h.to_owned(), v.to_owned()))
        .collect()
}

fn value(s: &[(String, String)], column: &str) -> f64 {
    s.iter()
        .find(|(c, _)| c == column)
        .unwrap_or_else(|| panic!("no column {column}"))
        .1
        .parse()
        .unwrap()
}

#[test]
fn a_run_writes_its_three_files_with_the_promised_columns() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = run("tests/scenarios/small-disaggregated.yaml", dir.path(), &[]);
    assert!(stdout.contains("output_tok_s_per_gpu") && !stdout.contains("wrote"));
    let s = summary(dir.path());
    for column in [
        "output_tok_s",
        "output_tok_s_per_gpu",
        "tok_s_per_user",
        "ttft_ms_p50",
        "ttft_ms_p99",
        "tpot_ms_p50",
        "tpot_ms_p99",
        "requests_completed",
        "gpus",
        "input_tok_s",
        "mean_batch_per_rank",
        "kv_utilisation",
        "mean_rank_imbalance",
        "events",
    ] {
        assert!(s.iter().any(|(c, _)| c == column), "{column}");
    }
    assert_eq!(value(&s, "gpus"), 12.0);
    assert!(value(&s, "requests_completed") > 0.0);
    assert!(value(&s, "output_tok_s") > 0.0);
    assert!(value(&s, "ttft_ms_p50") <= value(&s, "ttft_ms_p99"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["seed"], 3);
    assert_eq!(manifest["scenario"]["instances"][1]["eplb"], "online");
    assert!(manifest["simulation"]["events"].as_u64().unwrap() > 0);
    assert!(manifest["epsim_version"].is_string());
    let requests = std::fs::read_to_string(dir.path().join("requests.csv")).unwrap();
    assert!(requests.starts_with("id,measured,arrival_s,"));
}

#[test]
fn the_same_seed_gives_byte_identical_csvs_and_another_seed_does_not() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    for dir in [&a, &b] {
        run("tests/scenarios/small-aggregated.yaml", dir.path(), &[]);
    }
    run(
        "tests/scenarios/small-aggregated.yaml",
        c.path(),
        &["--seed", "6"],
    );
    for file in ["summary.csv", "requests.csv"] {
        let read = |d: &tempfile::TempDir| std::fs::read(d.path().join(file)).unwrap();
        assert_eq!(read(&a), read(&b), "{file}");
        assert_ne!(read(&a), read(&c), "{file}");
    }
    assert_eq!(value(&summary(c.path()), "seed"), 6.0);
}

#[test]
fn turning_off_requests_csv_leaves_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no-requests.yaml");
    let text = test_scenario("small-aggregated");
    std::fs::write(&file, format!("{text}output:\n  requests_csv: false\n")).unwrap();
    let out = dir.path().join("out");
    run(file.to_str().unwrap(), &out, &[]);
    assert!(out.join("summary.csv").is_file());
    assert!(!out.join("requests.csv").exists());
    // A run in which nothing finishes still writes requests.csv, its header alone.
    let file = dir.path().join("short.yaml");
    std::fs::write(&file, text.replace("duration_s: 8", "duration_s: 0.01")).unwrap();
    run(file.to_str().unwrap(), &out, &[]);
    let requests = std::fs::read_to_string(out.join("requests.csv")).unwrap();
    assert_eq!(requests.lines().count(), 1, "{requests}");
    assert!(requests.starts_with("id,measured,arrival_s,"), "{requests}");
}

#[test]
fn validate_accepts_the_shipped_scenarios() {
    let mut files: Vec<PathBuf> = ["scenarios", "scenarios/scale"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6);
    let out = epsim().arg("validate").args(&files).assert().success();
    let text = stdout(&out);
    for needle in [
        "scenario quickstart: 3 instances on 72 GPUs",
        "scenario h100-1024: 20 instances on 1024 GPUs",
        "scenario nvl72x8: 24 instances on 576 GPUs",
    ] {
        assert!(text.contains(needle), "{needle}\n{text}");
    }
}

/// A broken scenario: every problem reported at once, each with its line, exit 2.
#[test]
fn every_problem_in_a_scenario_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    let topo = repo("topologies/gb200-nvl72.yaml");
    let model = repo("models/deepseek-r1.yaml");
    std::fs::write(
        &file,
        format!(
            "name: bad
topology: {}
model: {}
duration_s: 10
warmup_s: 20
workload:
  arrivals: {{kind: poisson, rate_per_s: -1}}
  input: {{dist: uniform, min: 10, max: 5}}
  output: {{dist: fixed, tokens: 100}}
  prefix_hit: 1.5
mtp: {{drafts: 1, acceptance: 2}}
moe:
  popularity: zipfy
  sampled_layers: 99
instances:
  - name: a
    role: prefill
    gpus: 0-7
    max_batch: 0
    max_tokens: 4096
  - name: b
    role: decode
    gpus: 4-11
    max_batch: 8
    max_tokens: 64
  - name: c
    role: decode
    gpus: 70-79
    max_batch: 8
    max_tokens: 64
  - name: d
    role: decode
    gpus: 20-27
    attention_tp: 3
    max_batch: 8
    max_tokens: 64
  - name: e
    role: decode
    gpus: 30-37
    slots: 288
    max_batch: 8
    max_tokens: 64
    max_tokenz: 1
",
            topo.display(),
            model.display()
        ),
    )
    .unwrap();
    let out = epsim().args(["run"]).arg(&file).assert().code(2);
    let err = stderr(&out);
    let needle = "bad.yaml:43:5: instances[4].max_tokenz: unknown field `max_tokenz` (did you mean `max_tokens`?)";
    assert!(err.contains(needle), "{needle}\n{err}");
    // Once the structure is sound, the values: all of them together.
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("    max_tokenz: 1\n", ""),
    )
    .unwrap();
    let out = epsim().args(["run"]).arg(&file).assert().code(2);
    let err = stderr(&out);
    for needle in [
        "bad.yaml:5:11: warmup_s: must be at least 0 and below duration_s",
        "bad.yaml:7:13: workload.arrivals.rate_per_s: must be > 0",
        "bad.yaml:8:10: workload.input: min (10) is above max (5)",
        "bad.yaml:10:15: workload.prefix_hit: must be in [0, 1)",
        "bad.yaml:11:6: mtp.acceptance: must be a probability in [0, 1], got 2",
        "bad.yaml:13:15: moe.popularity: unknown popularity",
        "bad.yaml:14:19: moe.sampled_layers: must be 1 to the model's 58 MoE layers",
        "instances[0].max_batch: must be at least 1",
        "instances[1].gpus: b: GPU 4 already belongs to a",
        "instances[2].gpus: c: GPU 72 is not in the topology",
        "instances[3].attention_tp: 3 does not divide the instance's 8 GPUs",
        "instances[4].slots: 288 slots for 256 experts: redundant slots need eplb static or online",
    ] {
        assert!(err.contains(needle), "{needle}\n{err}");
    }
    assert!(!err.contains("panicked"));
}

/// An unknown name (a tagged kind, a plain value) does not hide the structural problems
/// beside or after it: every one is reported in the same run.
#[test]
fn unknown_names_do_not_hide_the_other_structural_problems() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typos.yaml");
    let quickstart = std::fs::read_to_string(repo("scenarios/quickstart.yaml")).unwrap();
    let typos = quickstart
        .replace("kind: closed_loop", "kind: closed_lop")
        .replace("input: {dist: fixed", "input: {dist: fixd")
        .replace("experts: nvfp4", "experts: nvfp5")
        .replace("policy: kv_aware", "policy: kv_awre")
        .replace("max_batch: 128", "max_batch: lots")
        .replace("role: decode", "role: decoder")
        .replace("  max_tokens: 512", "  max_tokns: 512")
        .replace("../", &format!("{}/", repo("").display()));
    std::fs::write(&file, typos).unwrap();
    let out = epsim().arg("validate").arg(&file).assert().code(2);
    let err = stderr(&out);
    for needle in [
        "typos.yaml:14:20: workload.arrivals.kind: unknown value `closed_lop` (did you mean `closed_loop`?)",
        "typos.yaml:15:17: workload.input.dist: unknown value `fixd` (did you mean `fixed`?)",
        "typos.yaml:18:22: precision.experts: unknown value `nvfp5` (did you mean `nvfp4`?)",
        "typos.yaml:21:11: scheduling.policy: unknown value `kv_awre` (did you mean `kv_aware`?)",
        "instances[1].role: unknown value `decoder` (did you mean `decode`?)",
        "instances[1].max_batch: expected a whole number >= 0, found the string \"lots\"",
        "instances[1].max_tokns: unknown field `max_tokns` (did you mean `max_tokens`?)",
    ] {
        assert!(err.contains(needle), "{needle}\n{err}");
    }
    assert!(err.contains("7 problems in the input"), "{err}");
}

/// Values that parse but mean nothing are refused with their locations, all at once.
#[test]
fn meaningless_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    let text = test_scenario("small-aggregated")
        .replace("{dist: fixed, tokens: 128}", "{dist: fixed, tokens: 0}")
        .replace("name: small-aggregated", "name: ../../escape")
        .replace(
            "  micro_batch_overlap: true\n",
            "  micro_batch_overlap: true\nmoe:\n  online: {style: layerwise, layers_per_iteration: 0, decay: 7}\n",
        )
        .replace(
            "    max_tokens: 1024\n",
            "    max_tokens: 1024\n  - name: agg\n    role: both\n    gpus: 4-7\n    max_batch: 32\n    max_tokens: 1024\n",
        )
        .replace("    replicas: 2\n", "");
    std::fs::write(&file, text).unwrap();
    let out = epsim().args(["run"]).arg(&file).assert().code(2);
    let err = stderr(&out);
    for needle in [
        "workload.output: tokens must be at least 1",
        "moe.online: layers_per_iteration must be at least 1",
        "moe.online: decay must be in (0, 1], got 7",
        "instances[1].name: `agg` names another instance too",
        "name: `../../escape` is not a plain name",
    ] {
        assert!(err.contains(needle), "{needle}\n{err}");
    }
}

/// Sizes past the documented limits are refused at validation (exit 2, located), not run
/// into an abort or a wrapped integer.
#[test]
fn sizes_beyond_the_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    let text = test_scenario("small-aggregated")
        .replace("duration_s: 8", "duration_s: 1e308")
        .replace("rate_per_s: 40", "rate_per_s: 1e8")
        .replace(
            "{dist: fixed, tokens: 128}",
            "{dist: fixed, tokens: 18446744073709551615}",
        );
    std::fs::write(&file, text).unwrap();
    let out = epsim().args(["validate"]).arg(&file).assert().code(2);
    let err = stderr(&out);
    for needle in [
        "duration_s: must be a number of seconds in (0, 1000000]",
        "workload.arrivals.rate_per_s: must be > 0 and at most 1000000",
        "workload.output: at most 100000000 tokens per request",
    ] {
        assert!(err.contains(needle), "{needle}\n{err}");
    }
    let closed = std::fs::read_to_string(&file).unwrap().replace(
        "{kind: poisson, rate_per_s: 1e8}",
        "{kind: closed_loop, users_per_gpu: 2305843009213693952}",
    );
    let err = refused(&file, closed);
    assert!(
        err.contains("workload.arrivals.users: at most 10000000 users"),
        "{err}"
    );
}

#[test]
fn a_scenario_naming_missing_files_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    std::fs::write(
        &file,
        "topology: nowhere.yaml
model: nothing.yaml
duration_s: 1
workload:
  arrivals: {kind: closed_loop, users: 1}
  input: {dist: fixed, tokens: 1}
  output: {dist: fixed, tokens: 1}
instances:
  - {name: a, role: both, gpus: 0-7, max_batch: 1, max_tokens: 8}
",
    )
    .unwrap();
    let out = epsim().arg("validate").arg(&file).assert().code(2);
    let err = stderr(&out);
    assert!(err.contains("s.yaml:1:11: topology: cannot use"), "{err}");
    assert!(err.contains("s.yaml:2:8: model: cannot use"), "{err}");
    assert!(err.contains("nowhere.yaml: cannot read the file"), "{err}");
}

/// Reference section 5: ~4,600 output tokens/s per GPU, within 15% (README, "Calibration").
/// No constant is fitted to this point: the kernel profiles come from kernel measurements.
#[test]
fn the_calibration_scenario_stays_near_the_published_point() {
    let dir = tempfile::tempdir().unwrap();
    run("scenarios/calibration-b200-ep8.yaml", dir.path(), &[]);
    let s = summary(dir.path());
    let ratio = value(&s, "output_tok_s_per_gpu") / 4600.0;
    assert!((0.85..1.15).contains(&ratio), "{ratio}");
    assert!(
        value(&s, "mean_batch_per_rank") > 250.0,
        "max throughput: full batches"
    );
}

/// The small aggregated scenario replaying `rows` (CSV after the header), written in `dir`.
fn trace_scenario(dir: &Path, rows: &str) -> PathBuf {
    let trace = dir.join("trace.csv");
    std::fs::write(
        &trace,
        format!("arrival_s,input_tokens,output_tokens\n{rows}"),
    )
    .unwrap();
    let text = std::fs::read_to_string(repo("tests/scenarios/small-aggregated.yaml"))
        .unwrap()
        .replace(
            "{kind: poisson, rate_per_s: 40}",
            &format!("{{kind: trace, file: {}}}", trace.display()),
        )
        .replace("../../", &format!("{}/", repo("").display()));
    let file = dir.join("s.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_trace_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let file = trace_scenario(dir.path(), "0.0,100,5\n0.5,3000,20\n0.25,10,1\n");
    let out = dir.path().join("out");
    epsim()
        .args(["run", file.to_str().unwrap(), "--out"])
        .arg(&out)
        .assert()
        .success();
    let requests = std::fs::read_to_string(out.join("requests.csv")).unwrap();
    let rows: Vec<&str> = requests.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{requests}");
    // In arrival order: the 0.25 s request is second, a one-token answer.
    assert!(rows[1].starts_with("1,false,0.25,10,0,1,1,"), "{requests}");
}

/// A request no rank's KV cache can hold is refused; the ones after it are still served
/// (hardening: this used to panic when a refused request was not the last).
#[test]
fn a_refused_request_in_the_middle_of_a_trace_leaves_the_rest_served() {
    let dir = tempfile::tempdir().unwrap();
    let file = trace_scenario(dir.path(), "0.0,100,5\n0.1,50000000,5\n0.2,100,5\n");
    let out = dir.path().join("out");
    run(file.to_str().unwrap(), &out, &[]);
    let s = summary(&out);
    assert_eq!(value(&s, "requests_rejected"), 1.0);
    assert_eq!(value(&s, "requests_completed_all"), 2.0);
}

/// A small sweep: 2 x 2 points, two seeds each.
/// A resume trusts only the same inputs: the files a scenario names count by content, and
/// the folder the run starts from does not count.
#[test]
fn resume_sees_an_edited_model_file_but_not_another_working_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_sweep(dir.path());
    let model = dir.path().join("model.yaml");
    std::fs::copy(repo("models/mixtral-8x7b.yaml"), &model).unwrap();
    let text: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| match l.starts_with("model:") {
            true => "model: model.yaml\n".to_owned(),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("out");
    let run = |cwd: &Path, scenario: &Path| {
        epsim()
            .current_dir(cwd)
            .args(["run", "-j", "2", "--no-progress", "--resume", "--out"])
            .arg(&out)
            .arg(scenario)
            .assert()
    };
    run(dir.path(), Path::new("sweep.yaml")).success();
    // The same run, started from elsewhere with another spelling of the path: kept.
    run(&repo(""), &file).success();
    let model_text = std::fs::read_to_string(&model).unwrap();
    let edited = model_text.replace("vocab_size: 32000", "vocab_size: 32001");
    assert_ne!(edited, model_text);
    std::fs::write(&model, edited).unwrap();
    let err = stderr(&run(dir.path(), Path::new("sweep.yaml")).code(2));
    assert!(err.contains("holds another sweep"), "{err}");
}

fn write_sweep(dir: &Path) -> PathBuf {
    let text = test_scenario("small-aggregated").replace("duration_s: 8", "duration_s: 2");
    let file = dir.join("sweep.yaml");
    std::fs::write(
        &file,
        format!(
            "{text}sweep:
  axes:
    - {{name: policy, path: scheduling.policy, values: [fcfs, kv_aware]}}
    - {{name: rate, path: workload.arrivals.rate_per_s, values: [20, 40]}}
  seeds: 2
"
        ),
    )
    .unwrap();
    file
}

/// A sweep folder belongs to one run: another sweep, a shard of it, a single run, a
/// resume without a manifest and a merge are refused over it (exit 2, nothing written);
/// `--force` clears that run's results first.
#[test]
fn an_output_folder_never_mixes_two_runs() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_sweep(dir.path());
    let b = dir.path().join("b.yaml");
    std::fs::write(
        &b,
        std::fs::read_to_string(&a)
            .unwrap()
            .replace("duration_s: 2", "duration_s: 3"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = |scenario: &Path, extra: &[&str]| {
        epsim()
            .args(["run", "-j", "2", "--no-progress", "--out"])
            .arg(&out)
            .args(extra)
            .arg(scenario)
            .assert()
    };
    run(&a, &[]).success();
    let files = |d: &Path| {
        ["sweep.json", "summary.csv", "points/00000.csv"].map(|f| std::fs::read(d.join(f)).unwrap())
    };
    let before = files(&out);
    for extra in [&[][..], &["--resume"], &["--shard", "1/3"]] {
        let err = stderr(&run(&b, extra).code(2));
        assert!(
            err.contains("holds another sweep (8 points of"),
            "{extra:?}: {err}"
        );
    }
    let single = dir.path().join("single.yaml");
    std::fs::write(&single, test_scenario("small-aggregated")).unwrap();
    assert!(stderr(&run(&single, &[]).code(2)).contains("holds another sweep"));
    let other = dir.path().join("other");
    epsim()
        .args(["run", "-j", "2", "--no-progress", "--out"])
        .arg(&other)
        .arg(&b)
        .assert()
        .success();
    let err = stderr(
        &epsim()
            .arg("merge")
            .arg(&other)
            .arg("--out")
            .arg(&out)
            .assert()
            .code(2),
    );
    assert!(err.contains("holds another sweep"), "{err}");
    assert_eq!(files(&out), before, "nothing of run A was touched");
    // Points without their manifest are no run to resume.
    std::fs::remove_file(out.join("sweep.json")).unwrap();
    let err = stderr(&run(&a, &["--resume"]).code(2));
    assert!(err.contains("another run's results"), "{err}");
    // --force clears them and runs B whole.
    run(&b, &["--force"]).success();
    let fresh = std::fs::read(other.join("summary.csv")).unwrap();
    assert_eq!(std::fs::read(out.join("summary.csv")).unwrap(), fresh);
}

/// A flood past what any deployment serves holds at most a million requests (its memory
/// bounded); the rest are refused and counted, and the run says it is overloaded.
#[test]
fn an_overload_holds_at_most_a_million_requests() {
    let dir = tempfile::tempdir().unwrap();
    let text = test_scenario("small-disaggregated")
        .replace("duration_s: 6\n", "duration_s: 8\n")
        .replace(
            "arrivals: {kind: closed_loop, users: 96, ramp_up_s: 0.5}",
            "arrivals: {kind: poisson, rate_per_s: 200000}",
        )
        .replace("  output: {requests_csv: true}\n", "");
    let s = summary_row(&run_text(dir.path(), "flood", &text));
    let n = |c: &str| s[c].parse::<u64>().unwrap();
    assert!(n("requests_pending") <= 1_000_000, "{s:?}");
    assert!(n("requests_rejected_backlog") > 400_000, "{s:?}");
    assert_eq!(
        n("requests_rejected"),
        n("requests_rejected_backlog")
            + n("requests_rejected_context")
            + n("requests_rejected_memory")
    );
    assert_eq!(s["status"], "overloaded", "{s:?}");
}

/// A scenario without `name:` is named after its file only when the stem is a plain name:
/// `...yaml` (stem `..`) once wrote its results beside `out/`, in the working folder.
#[test]
fn a_file_stem_that_is_no_plain_name_names_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = test_scenario("small-aggregated")
        .lines()
        .filter(|l| !l.starts_with("name:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("...yaml"), text).unwrap();
    epsim()
        .current_dir(dir.path())
        .args(["run", "...yaml"])
        .assert()
        .success();
    assert!(dir.path().join("out/scenario/summary.csv").is_file());
    assert!(!dir.path().join("summary.csv").exists());
}

#[test]
fn sweeps_shard_and_merge_into_exactly_the_unsharded_result() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_sweep(dir.path());
    let list = epsim()
        .args(["run", "--list"])
        .arg(&file)
        .assert()
        .success();
    let list = stdout(&list);
    assert_eq!(list.lines().count(), 8);
    assert!(
        list.lines()
            .next()
            .unwrap()
            .ends_with("policy=fcfs rate=20 seed=0"),
        "{list}"
    );
    let whole = dir.path().join("whole");
    epsim()
        .args(["run", "-j", "2", "--no-progress", "--out"])
        .arg(&whole)
        .arg(&file)
        .assert()
        .success();
    let summary = std::fs::read_to_string(whole.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 9);
    assert!(summary.starts_with("param_policy,param_rate,param_seed,scenario,"));
    // Three shards as separate processes, merged.
    let mut shards = Vec::new();
    for k in 1..=3 {
        let out = dir.path().join(format!("shard{k}"));
        let run = epsim()
            .args(["run", "-j", "1", "--shard", &format!("{k}/3"), "--out"])
            .arg(&out)
            .arg(&file)
            .assert()
            .success();
        // What it did goes to stderr; stdout stays for results.
        let said = stderr(&run);
        assert!(said.contains("summary.csv not written"), "{said}");
        assert!(stdout(&run).is_empty());
        shards.push(out);
    }
    let merged = dir.path().join("merged");
    epsim()
        .arg("merge")
        .args(&shards)
        .arg("--out")
        .arg(&merged)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(merged.join("summary.csv")).unwrap(),
        summary.as_bytes()
    );
    // Missing shards are named; a different sweep is refused.
    let partial = epsim()
        .arg("merge")
        .args(&shards[..2])
        .arg("--out")
        .arg(dir.path().join("p"))
        .assert()
        .code(2);
    assert!(stderr(&partial).contains("points are in none of the folders"));
    // Without --resume, a second run says what it is about to redo and how to keep it.
    let again = epsim()
        .args(["run", "--no-progress", "--shard", "1/3", "--out"])
        .arg(&shards[0])
        .arg(&file)
        .assert()
        .success();
    assert!(
        stderr(&again).contains("finished points of this same run; it computes every point again (stop it and add --resume to keep them)"),
        "{}",
        stderr(&again)
    );
    // --resume skips what is there: remove one point, resume, same summary.
    std::fs::remove_file(whole.join("points/00003.csv")).unwrap();
    let resumed = epsim()
        .args(["run", "--resume", "--no-progress", "--out"])
        .arg(&whole)
        .arg(&file)
        .assert()
        .success();
    let said = stderr(&resumed);
    assert!(said.starts_with("1 points run, 7 already done"), "{said}");
    assert_eq!(
        std::fs::read_to_string(whole.join("summary.csv")).unwrap(),
        summary
    );
}

#[test]
fn frontier_finds_the_best_points_per_group_and_interpolates() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.csv");
    std::fs::write(
        &summary,
        "param_ep,tok_s_per_user,output_tok_s_per_gpu\n8,200,1000\n8,100,3000\n8,50,5000\n8,90,2000\n32,200,2000\n32,100,5000\n32,50,8000\n64,,100\n",
    )
    .unwrap();
    let out = epsim()
        .args(["frontier"])
        .arg(&summary)
        .args([
            "--x",
            "tok_s_per_user",
            "--y",
            "output_tok_s_per_gpu",
            "--by",
            "ep",
            "--at",
            "150",
            "--format",
            "json",
        ])
        .assert()
        .success();
    let j: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(j[0]["ep"], "8");
    assert_eq!(j[0]["y_at"], 2000.0);
    assert_eq!(j[1]["y_at"], 3500.0);
    assert_eq!(
        j[0]["frontier"].as_array().unwrap().len(),
        3,
        "(90, 2000) is dominated"
    );
    assert_eq!(
        j[0]["frontier"][0]["tok_s_per_user"], 50.0,
        "points name their columns"
    );
    assert_eq!(j[0]["frontier"][0]["output_tok_s_per_gpu"], 5000.0);
    assert!(
        j[2]["y_at"].is_null() && j[2]["note"].is_string(),
        "no measured points for ep 64"
    );
    // The table's last line: the last group's value over the first's (the help's promise).
    let ratio = |by: &str| {
        let out = epsim()
            .args(["frontier"])
            .arg(&summary)
            .args(["--x", "tok_s_per_user", "--y", "output_tok_s_per_gpu"])
            .args(["--by", by, "--at", "150"])
            .assert()
            .success();
        stdout(&out).lines().last().unwrap().to_owned()
    };
    assert_eq!(
        ratio("ep"),
        "ep=64 / ep=8 at 150: no ratio (a group has no value there)"
    );
    std::fs::write(&summary, "param_ep,tok_s_per_user,output_tok_s_per_gpu\n8,200,1000\n8,100,3000\n32,200,2000\n32,100,5000\n").unwrap();
    assert_eq!(ratio("ep"), "ep=32 / ep=8 at 150: 1.75");
    epsim()
        .args(["frontier"])
        .arg(&summary)
        .args(["--x", "nope", "--y", "output_tok_s_per_gpu"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no column `nope`"));
}

/// The policies' golden results: the simulator's output must not drift from the checked-in
/// summary without an explicit update (`UPDATE_GOLDEN=1 cargo test golden`).
#[test]
fn golden_policies_regression_results_hold() {
    let golden = repo("results/policies-regression");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let dir = tempfile::tempdir().unwrap();
    let out = if update {
        golden.clone()
    } else {
        dir.path().to_owned()
    };
    if update {
        let _ = std::fs::remove_dir_all(&golden);
    }
    epsim()
        .args(["run", "--no-progress", "--out"])
        .arg(&out)
        .arg(repo("scenarios/policies-regression.yaml"))
        .assert()
        .success();
    let expected = std::fs::read_to_string(golden.join("summary.csv")).unwrap();
    let got = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(
        got == expected,
        "results/policies-regression/summary.csv drifted; if intended, run UPDATE_GOLDEN=1 cargo test golden\n--- golden\n{expected}\n--- now\n{got}"
    );
    // `epsim compare` agrees: no change is no regression.
    epsim()
        .arg("compare")
        .arg(&golden)
        .arg(&out)
        .assert()
        .success();
}

#[test]
fn compare_exits_1_on_a_regression_and_2_on_incomparable_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("summary.csv"), text).unwrap();
        d
    };
    let base = write(
        "base",
        "param_policy,output_tok_s_per_gpu,tok_s_per_user,ttft_ms_p99,tpot_ms_p99\nfcfs,1000,50,200,20\nkv_aware,1000,50,200,20\n",
    );
    let slower = write(
        "slower",
        "param_policy,output_tok_s_per_gpu,tok_s_per_user,ttft_ms_p99,tpot_ms_p99\nfcfs,1000,50,200,20\nkv_aware,1000,50,260,20.1\n",
    );
    let out = epsim()
        .arg("compare")
        .arg(&base)
        .arg(&slower)
        .assert()
        .code(1);
    let text = stdout(&out);
    assert!(
        text.contains("policy=kv_aware") && text.contains("REGRESSION"),
        "{text}"
    );
    assert!(
        text.contains("worse, within tolerance"),
        "tpot +0.5% is within 2%: {text}"
    );
    assert!(text.contains("1 regressions beyond 2.00%"), "{text}");
    // A looser tolerance forgives it; a narrower metric list ignores it.
    epsim()
        .arg("compare")
        .arg(&base)
        .arg(&slower)
        .args(["--tolerance", "40%"])
        .assert()
        .success();
    epsim()
        .arg("compare")
        .arg(&base)
        .arg(&slower)
        .args(["--metric", "output_tok_s_per_gpu:higher"])
        .assert()
        .success();
    let other = write("other", "param_rate,output_tok_s_per_gpu\n1,5\n");
    epsim()
        .arg("compare")
        .arg(&base)
        .arg(&other)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("different sweeps"));
}

#[test]
fn plot_draws_the_frontier_and_latencies_of_a_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_sweep(dir.path());
    // Long enough for requests to finish, so every point has latencies to draw.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("duration_s: 2", "duration_s: 6")).unwrap();
    let out = dir.path().join("out");
    epsim()
        .args(["run", "--no-progress", "--out"])
        .arg(&out)
        .arg(&file)
        .assert()
        .success();
    epsim()
        .arg("plot")
        .arg(&out)
        .args(["--by", "policy"])
        .assert()
        .success();
    for name in ["frontier", "ttft", "tpot"] {
        let svg = std::fs::read_to_string(out.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}"
        );
        for policy in ["policy=kv_aware", "policy=fcfs"] {
            assert_eq!(svg.matches(policy).count(), 1, "{name}: one legend entry");
        }
        assert!(svg.contains("Output tokens/s per GPU") || svg.contains("p99 (ms)"));
        let png = std::fs::read(out.join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png");
    }
}

#[test]
fn plan_finds_the_smallest_deployment_that_meets_the_sla_and_says_why_others_fail() {
    let args = |rate: &str, tpot: &str| {
        let mut cmd = epsim();
        cmd.current_dir(repo(""))
            .args([
                "plan",
                "--model",
                "deepseek-r1",
                "--topology",
                "topologies/gb200-nvl72.yaml",
            ])
            .args([
                "--rate",
                rate,
                "--isl",
                "512",
                "--osl",
                "64",
                "--ttft-p99-ms",
                "5000",
            ])
            .args([
                "--tpot-p99-ms",
                tpot,
                "--weights",
                "nvfp4",
                "--duration-s",
                "4",
                "-j",
                "2",
            ]);
        cmd
    };
    let dir = tempfile::tempdir().unwrap();
    let emitted = dir.path().join("best.yaml");
    let out = args("20", "50")
        .arg("--headroom")
        .arg("--emit-scenario")
        .arg(&emitted)
        .assert()
        .success();
    let text = stdout(&out);
    assert!(text.contains("best: 8 GPUs, 1 aggregated EP8"), "{text}");
    // Headroom: the rate it still holds, found by search, at least the target's.
    let rate: f64 = text
        .split("holds the SLA up to ")
        .nth(1)
        .and_then(|t| t.split_whitespace().find_map(|w| w.parse().ok()))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(rate >= 20.0, "{text}");
    // The emitted scenario is the winner, runnable as it is.
    let yaml = std::fs::read_to_string(&emitted).unwrap();
    assert!(
        yaml.contains("rate_per_s: 20") && yaml.contains("gpus: 0-7"),
        "{yaml}"
    );
    epsim().arg("validate").arg(&emitted).assert().success();
    // The same answer for scripts: JSON (and CSV), units in the names.
    let out = args("20", "50")
        .args(["--format", "json"])
        .assert()
        .success();
    let j: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(j["best"]["gpus"], 8);
    assert!(j["best"]["tpot_ms_p99"].as_f64().unwrap() <= 50.0);
    // Fewest GPUs first: deployments larger than the answer's round are not simulated.
    assert!(j["not_needed"].as_u64().unwrap() > 1000, "{j}");
    assert!(!j["deployments"].as_array().unwrap().is_empty());
    let out = args("20", "50")
        .args(["--format", "csv"])
        .assert()
        .success();
    assert!(stdout(&out).starts_with(
        "gpus,deployment,ttft_ms_p99,tpot_ms_p99,output_tok_s,meets_sla,simulated,simulated_s,lengthened,undecided,failures\n"
    ));
    // A TPOT no deployment can reach: exit 1, and each failure says why.
    let out = args("20", "0.5").assert().code(1);
    let text = stdout(&out);
    assert!(text.contains("no deployment meets the SLA"), "{text}");
    // Pruned before simulating: one decode step is already slower than that.
    assert!(text.contains("above the TPOT SLA"), "{text}");
    args("-1", "50").assert().code(2);
}

/// A scenario whose GPU spec names a malformed kernel profile is bad input (exit 2), with
/// the profile's file, line and column.
#[test]
fn a_malformed_kernel_profile_fails_validation_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("gpus/families")).unwrap();
    std::fs::create_dir_all(d.join("gpus/profiles/bad")).unwrap();
    std::fs::copy(repo("topologies/hgx-h100x8.yaml"), d.join("hgx.yaml")).unwrap();
    std::fs::copy(
        repo("topologies/gpus/families/hopper.yaml"),
        d.join("gpus/families/hopper.yaml"),
    )
    .unwrap();
    let spec = std::fs::read_to_string(repo("topologies/gpus/h100-sxm.yaml"))
        .unwrap()
        .replace("profile: profiles/h100-sxm", "profile: profiles/bad");
    std::fs::write(d.join("gpus/h100-sxm.yaml"), spec).unwrap();
    std::fs::write(
        d.join("gpus/profiles/bad/gemm.csv"),
        "dtype,m,n,k,latency_us\nfp8,1,2,x,4\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(repo("tests/scenarios/small-aggregated.yaml"))
        .unwrap()
        .replace(
            "../../topologies/hgx-h100x8.yaml",
            d.join("hgx.yaml").to_str().unwrap(),
        )
        .replace("../../", &format!("{}/", repo("").display()));
    let file = d.join("s.yaml");
    std::fs::write(&file, text).unwrap();
    let out = epsim()
        .args(["run"])
        .arg(&file)
        .arg("--out")
        .arg(d.join("out"))
        .assert()
        .code(2);
    let err = stderr(&out);
    assert!(
        err.contains("profiles/bad/gemm.csv:2:9: k: must be a number > 0"),
        "{err}"
    );
}

/// MTP-3 on DeepSeek-R1 gains ~2.55 tokens per step (acceptance falling with draft position,
/// reference section 6), not the 3.19 of 0.85 for every draft: a step's time over TPOT.
#[test]
fn mtp_3_gains_what_per_position_acceptance_says() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("scenarios/quickstart.yaml"))
        .unwrap()
        .replace("mtp: {drafts: 1}", "mtp: {drafts: 3}")
        .replace("../", &format!("{}/", repo("").display()));
    let file = dir.path().join("q3.yaml");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("out");
    run(file.to_str().unwrap(), &out, &[]);
    let s = summary(&out);
    let tokens_per_step = value(&s, "step_ms_mean") / value(&s, "tpot_ms_p50");
    assert!((2.45..2.65).contains(&tokens_per_step), "{tokens_per_step}");
}

/// A scenario sets its topology's parameters (here HGX B200 nodes): GPUs past them do not
/// exist, and an unknown parameter is the topology's own error.
#[test]
fn a_scenario_sets_its_topologys_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    let base = std::fs::read_to_string(repo("scenarios/calibration-b200-ep8.yaml"))
        .unwrap()
        .replace("../", &format!("{}/", repo("").display()));
    let write = |extra: &str, gpus: &str| {
        let text = base
            .replace("model: ", &format!("{extra}model: "))
            .replace("gpus: 0-7", &format!("gpus: {gpus}"));
        std::fs::write(&file, text).unwrap();
    };
    write("topology_parameters: {nodes: 1}\n", "8-15");
    let err = stderr(&epsim().args(["validate"]).arg(&file).assert().code(2));
    assert!(
        err.contains("GPU 8 is not in the topology (8 GPUs"),
        "{err}"
    );
    write("topology_parameters: {nodes: 2}\n", "8-15");
    epsim().args(["validate"]).arg(&file).assert().success();
    write("topology_parameters: {racks: 2}\n", "0-7");
    let err = stderr(&epsim().args(["validate"]).arg(&file).assert().code(2));
    assert!(err.contains("racks"), "{err}");
}

/// `epsim run --set NAME=VALUE` sets a topology parameter as the scenario's
/// `topology_parameters` would, and the manifest records it.
#[test]
fn run_sets_topology_parameters_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run(
        "scenarios/calibration-b200-ep8.yaml",
        &out,
        &["--set", "nodes=1"],
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["scenario"]["topology_parameters"]["nodes"], 1);
    let bad = epsim()
        .args([
            "run",
            repo("scenarios/calibration-b200-ep8.yaml")
                .to_str()
                .unwrap(),
        ])
        .args(["--set", "bogus=1", "--out"])
        .arg(dir.path().join("bad"))
        .assert()
        .code(2);
    assert!(stderr(&bad).contains("the topology has no parameter `bogus`"));
}

/// `--resume` re-runs a point file cut short and refuses a folder of another run; `merge`
/// refuses shards of different runs.
#[test]
fn resume_and_merge_verify_what_they_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_sweep(dir.path());
    let whole = dir.path().join("whole");
    let run = |out: &Path, extra: &[&str]| {
        epsim()
            .args(["run", "-j", "2", "--no-progress", "--out"])
            .arg(out)
            .args(extra)
            .arg(&file)
            .assert()
    };
    run(&whole, &[]).success();
    let expected = std::fs::read_to_string(whole.join("summary.csv")).unwrap();
    // A point cut short (a killed run): its header only.
    let point = whole.join("points/00003.csv");
    let text = std::fs::read_to_string(&point).unwrap();
    std::fs::write(&point, text.lines().next().unwrap()).unwrap();
    run(&whole, &["--resume"]).success();
    assert_eq!(
        std::fs::read_to_string(whole.join("summary.csv")).unwrap(),
        expected
    );
    // Another seed is another run.
    let err = stderr(&run(&whole, &["--resume", "--seed", "9"]).code(2));
    assert!(err.contains("holds another sweep"), "{err}");
    let other = dir.path().join("other");
    run(&other, &["--seed", "9", "--shard", "1/2"]).success();
    let mine = dir.path().join("mine");
    run(&mine, &["--shard", "2/2"]).success();
    let merged = epsim()
        .arg("merge")
        .args([&other, &mine])
        .arg("--out")
        .arg(dir.path().join("merged"))
        .assert()
        .code(2);
    assert!(
        stderr(&merged).contains("different sweep"),
        "{}",
        stderr(&merged)
    );
}

/// Precision, two-batch overlap and the all-to-all (kernels, dispatch and combine formats)
/// are each instance's own: given ones reach the resolved scenario, the rest keep the
/// scenario's (or the topology's) defaults, and the decode price moves with them.
#[test]
fn instances_set_their_own_precision_overlap_and_all_to_all() {
    let dir = tempfile::tempdir().unwrap();
    let base = test_scenario("small-disaggregated");
    let own = base.replace(
        "    max_batch: 64\n",
        "    max_batch: 64\n    precision: {experts: fp8}\n    micro_batch_overlap: true\n    all_to_all: {algorithm: low-latency, combine: nvfp4}\n",
    );
    let run = |name: &str, text: &str| {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
        let out = dir.path().join(name);
        epsim()
            .args(["run"])
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
        (
            doc["scenario"]["instances"].as_array().unwrap().clone(),
            summary,
        )
    };
    let ((before, base_summary), (after, own_summary)) = (run("base", &base), run("own", &own));
    assert_ne!(base_summary, own_summary);
    let [prefill, decode] = [&after[0], &after[1]];
    assert_eq!(decode["precision"]["experts"], "fp8");
    assert_eq!(decode["precision"]["other"], "fp8", "the scenario's");
    assert_eq!(decode["micro_batch_overlap"], true);
    assert_eq!(decode["all_to_all"]["algorithm"], "low-latency");
    assert_eq!(decode["all_to_all"]["dispatch"], "fp8", "the default");
    assert_eq!(decode["all_to_all"]["combine"], "nvfp4");
    assert_eq!(prefill, &before[0], "the other instance keeps the defaults");
    assert_eq!(
        prefill["all_to_all"]["algorithm"], "direct",
        "the topology's"
    );
    assert_ne!(decode, &before[1]);
}

/// A benchmark client: every prompt is answered, every request counted (no warm-up), and
/// the run ends with the last answer, well before the `duration_s` limit.
#[test]
fn a_benchmark_client_answers_every_prompt_and_counts_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.yaml");
    let text = test_scenario("small-disaggregated")
        .replace(
            "arrivals: {kind: closed_loop, users: 96, ramp_up_s: 0.5}",
            "arrivals: {kind: benchmark, concurrency: 16, prompts: 48}",
        )
        .replace("duration_s: 6\nwarmup_s: 1\n", "duration_s: 600\n");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("out");
    epsim()
        .args(["run"])
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let summary = summary_row(&out);
    assert_eq!(summary["requests_completed"], "48");
    assert_eq!(summary["requests_completed_all"], "48");
    assert_eq!(summary["requests_unfinished_measured"], "0");
    assert_eq!(summary["warmup_s"], "0.0000");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let simulated = manifest["simulation"]["simulated_s"].as_f64().unwrap();
    assert!(simulated > 0.1 && simulated < 60.0, "{simulated}");
    // Throughput is over the time to the last answer.
    let tokens: f64 = std::fs::read_to_string(out.join("requests.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(6).unwrap().parse::<f64>().unwrap())
        .sum();
    let tok_s: f64 = summary["output_tok_s"].parse().unwrap();
    assert!(
        (tok_s * simulated / tokens - 1.0).abs() < 0.01,
        "{tok_s} x {simulated} vs {tokens}"
    );
}

/// A busy run stopped at `duration_s` reports the requests it finished and says how many
/// it cannot see; a drain finishes and measures exactly those.
#[test]
fn a_drain_measures_the_requests_a_hard_stop_would_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let base = test_scenario("small-disaggregated").replace(
        "arrivals: {kind: closed_loop, users: 96, ramp_up_s: 0.5}",
        "arrivals: {kind: poisson, rate_per_s: 150}",
    );
    let run = |name: &str, text: &str| summary_row(&run_text(dir.path(), name, text));
    let hard = run("hard", &base);
    let drained = run(
        "drained",
        &base.replace("warmup_s: 1\n", "warmup_s: 1\ndrain_s: 120\n"),
    );
    let unfinished =
        |s: &BTreeMap<String, String>| s["requests_unfinished_measured"].parse::<u64>().unwrap();
    assert!(unfinished(&hard) > 20, "overloaded: {hard:?}");
    assert_eq!(unfinished(&drained), 0);
    let completed = |s: &BTreeMap<String, String>| s["requests_completed"].parse::<u64>().unwrap();
    assert_eq!(
        completed(&drained),
        completed(&hard) + unfinished(&hard),
        "the drain measures exactly the requests the hard stop cut off"
    );
    assert_eq!(
        hard["output_tok_s"], drained["output_tok_s"],
        "the window is the same"
    );
}

/// Writes `text` to `file` and validates it: the stderr of its refusal (exit 2).
fn refused(file: &Path, text: impl AsRef<[u8]>) -> String {
    std::fs::write(file, text).unwrap();
    stderr(&epsim().args(["validate"]).arg(file).assert().code(2))
}

/// Writes `text` as `DIR/NAME.yaml`, runs it into `DIR/NAME`, and returns that folder.
fn run_text(dir: &Path, name: &str, text: &str) -> PathBuf {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, text).unwrap();
    let out = dir.join(name);
    epsim()
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    out
}

/// summary.csv as column -> value.
fn summary_row(out: &std::path::Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let values: Vec<&str> = lines.next().unwrap().split(',').collect();
    header
        .iter()
        .zip(values)
        .map(|(h, v)| (h.to_string(), v.to_string()))
        .collect()
}

/// Rate matching: the prefill share the prompt load needs lies between nothing and the
/// scenario's prefill GPUs (its prefill is not the bottleneck), so the per-GPU figure that
/// counts it lies between per decode GPU and per GPU of everything the scenario holds.
#[test]
fn rate_matched_throughput_counts_the_prefill_share_the_load_needs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    epsim()
        .args(["run", "tests/scenarios/small-disaggregated.yaml", "--out"])
        .arg(&out)
        .current_dir(repo(""))
        .assert()
        .success();
    let s = summary_row(&out);
    let f = |c: &str| s[c].parse::<f64>().unwrap();
    let share = f("prefill_gpus_rate_matched");
    assert!(share > 0.05 && share < 4.0, "{share}");
    assert_eq!(s["prefill_gpus_needed"], "4", "one whole EP4 instance");
    let matched = f("output_tok_s_per_gpu_rate_matched");
    assert!(f("output_tok_s_per_gpu") < matched && matched < f("output_tok_s_per_decode_gpu"));
    let expected = f("output_tok_s") / (f("decode_gpus") + share);
    assert!(
        (matched / expected - 1.0).abs() < 1e-3,
        "{matched} vs {expected}"
    );
}

/// Tensor-parallel experts: one group of four GPUs holding every expert sends nothing
/// through an all-to-all and has no rank imbalance; sizes that cannot split are refused.
#[test]
fn tensor_parallel_experts_need_no_all_to_all_and_must_divide() {
    let dir = tempfile::tempdir().unwrap();
    let base = test_scenario("small-aggregated");
    let with = |extra: &str| {
        base.replace(
            "    max_batch: 32\n",
            &format!("    max_batch: 32\n{extra}"),
        )
    };
    let file = dir.path().join("tp.yaml");
    std::fs::write(&file, with("    moe_tp: 4\n")).unwrap();
    let out = dir.path().join("out");
    epsim()
        .args(["run"])
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let s = summary_row(&out);
    assert_eq!(s["step_all_to_all_ms_mean"], "0.000");
    assert_eq!(s["mean_rank_imbalance"], "0.0000");
    assert!(s["step_moe_ms_mean"].parse::<f64>().unwrap() > 0.0);
    let err = refused(&file, with("    moe_tp: 3\n"));
    assert!(
        err.contains("instances[0].moe_tp: 3 does not divide the instance's 4 GPUs"),
        "{err}"
    );
    let err = refused(&file, with("    moe_tp: 4\n    attention_tp: 2\n"));
    assert!(
        err.contains("with attention_tp 2, moe_tp must be 1, 2, or a divisor of 2 when attention_tp spans the instance, got 4"),
        "{err}"
    );
}

/// The shipped regression scenario (5 seeds of 30 s) has the power its README promises:
/// other seeds alone pass; every iteration 5% slower (`what_if.step_time_scale`) is a
/// throughput regression of about 5% in each closed-loop row, where throughput is what the
/// deployment does; 10% slower is a TPOT p99 regression of about 10% in every row.
#[test]
fn compare_passes_a_change_of_seeds_and_detects_5_and_10_percent_regressions() {
    let dir = tempfile::tempdir().unwrap();
    let golden = repo("results/policies-regression");
    let neutral = dir.path().join("neutral");
    epsim()
        .args(["run", "--no-progress", "--seed", "100", "--out"])
        .arg(&neutral)
        .arg(repo("scenarios/policies-regression.yaml"))
        .assert()
        .success();
    let out = epsim()
        .arg("compare")
        .arg(&golden)
        .arg(&neutral)
        .assert()
        .success();
    assert!(stdout(&out).contains("0 regressions"), "{}", stdout(&out));
    // Each change as compare's JSON, (row, metric) -> (verdict, change).
    let slower = |scale: &str| {
        let text = std::fs::read_to_string(repo("scenarios/policies-regression.yaml"))
            .unwrap()
            .replace(
                "../topologies/",
                &format!("{}/topologies/", repo("").display()),
            )
            .replace("../models/", &format!("{}/models/", repo("").display()))
            .replace(
                "\noutput:",
                &format!("\nwhat_if: {{step_time_scale: {scale}}}\noutput:"),
            );
        let file = dir.path().join(format!("slower-{scale}.yaml"));
        std::fs::write(&file, text).unwrap();
        let out = dir.path().join(format!("slower-{scale}"));
        epsim()
            .args(["run", "--no-progress", "--out"])
            .arg(&out)
            .arg(&file)
            .assert()
            .success();
        let json = epsim()
            .args(["compare", "--format", "json"])
            .arg(&golden)
            .arg(&out)
            .assert()
            .code(1);
        let j: serde_json::Value = serde_json::from_slice(&json.get_output().stdout).unwrap();
        j["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    (
                        c["row"].as_str().unwrap().to_owned(),
                        c["metric"].as_str().unwrap().to_owned(),
                    ),
                    (
                        c["verdict"].as_str().unwrap().to_owned(),
                        c["change"].as_f64().unwrap(),
                    ),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let five = slower("1.05");
    let closed: Vec<_> = five
        .iter()
        .filter(|((row, metric), _)| row.contains("users-128") && metric == "output_tok_s_per_gpu")
        .collect();
    assert_eq!(closed.len(), 3, "one closed-loop row per policy");
    for ((row, _), (verdict, change)) in closed {
        assert_eq!(verdict, "regression", "{row}");
        assert!((-0.06..-0.04).contains(change), "{row}: {change}");
    }
    let ten = slower("1.10");
    let tpot: Vec<_> = ten
        .iter()
        .filter(|((_, metric), _)| metric == "tpot_ms_p99")
        .collect();
    assert_eq!(tpot.len(), 9);
    for ((row, _), (verdict, change)) in tpot {
        assert_eq!(verdict, "regression", "{row}");
        assert!((0.08..0.13).contains(change), "{row}: {change}");
    }
}

/// Policy parameters are scenario fields: located when meaningless, sweepable by path.
#[test]
fn policy_parameters_are_set_and_swept_from_the_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let base = test_scenario("small-disaggregated");
    let file = dir.path().join("p.yaml");
    let bad = base.replace(
        "  policy: kv_aware\n",
        "  policy: kv_aware\n  kv_aware: {queued_weight: -1}\n  shortest_prompt_first: {aging_tokens_per_s: 1e12}\n",
    );
    let err = refused(&file, bad);
    for needle in [
        "scheduling.kv_aware.queued_weight: must be a number in [0, 1000000], got -1",
        "scheduling.shortest_prompt_first.aging_tokens_per_s: must be a number in [0, 1000000000], got 1000000000000",
    ] {
        assert!(err.contains(needle), "{needle}\n{err}");
    }
    let swept = base.replace(
        "  policy: kv_aware\n",
        "  policy: kv_aware\n  kv_aware: {queued_weight: 1}\n",
    ) + "sweep:\n  axes:\n    - {name: queued_weight, path: scheduling.kv_aware.queued_weight, values: [0, 0.5]}\n";
    std::fs::write(&file, swept).unwrap();
    let out = dir.path().join("out");
    epsim()
        .args(["run", "--no-progress", "--out"])
        .arg(&out)
        .arg(&file)
        .assert()
        .success();
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(summary.starts_with("param_queued_weight,"), "{summary}");
    assert_eq!(summary.lines().count(), 3);
    let point = std::fs::read_to_string(out.join("points").join("00001.csv")).unwrap();
    assert!(point.contains("0.5"), "{point}");
}

/// `stop_when`: the run ends at the first batch where throughput's 95% interval is within
/// the target (and enough requests finished), says so in the summary, and is deterministic.
#[test]
fn a_run_stops_once_its_throughput_is_known_well_enough() {
    let dir = tempfile::tempdir().unwrap();
    let text = test_scenario("small-disaggregated")
        .replace("duration_s: 6\n", "duration_s: 20\n")
        .replace(
            "warmup_s: 1\n",
            "warmup_s: 1\nstop_when: {metric: output_tok_s, relative_ci: 0.05, batch_s: 0.25}\n",
        );
    let file = dir.path().join("stop.yaml");
    std::fs::write(&file, &text).unwrap();
    let run = |name: &str| {
        let out = dir.path().join(name);
        epsim()
            .args(["run"])
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        (
            summary_row(&out),
            std::fs::read_to_string(out.join("summary.csv")).unwrap(),
        )
    };
    let ((s, csv), (_, again)) = (run("a"), run("b"));
    assert_eq!(csv, again, "deterministic");
    let f = |c: &str| s[c].parse::<f64>().unwrap();
    assert!(f("output_tok_s_rel_ci95") <= 0.05, "{s:?}");
    assert!(f("measured_s") < 19.0 && f("measured_s") >= 2.5, "{s:?}");
    assert!(f("requests_completed") >= 200.0, "{s:?}");
    // A target it cannot reach runs to duration_s.
    std::fs::write(
        &file,
        text.replace("relative_ci: 0.05", "relative_ci: 0.0001"),
    )
    .unwrap();
    let (s, _) = run("c");
    assert_eq!(s["measured_s"], "19.0000");
    let arrived_by_duration: f64 = s["requests_arrived"].parse().unwrap();
    // With max_duration_s an unmet target takes the run, arrivals and all, on to it.
    std::fs::write(
        &file,
        text.replace(
            "relative_ci: 0.05, batch_s: 0.25",
            "relative_ci: 0.0001, batch_s: 0.25, max_duration_s: 31",
        ),
    )
    .unwrap();
    let (s, _) = run("d");
    assert_eq!(s["measured_s"], "30.0000", "{s:?}");
    let extended: f64 = s["requests_arrived"].parse().unwrap();
    assert!(extended > 1.3 * arrived_by_duration, "{s:?}");
    // Meaningless settings are refused with their location.
    let err = refused(
        &file,
        text.replace(
            "relative_ci: 0.05, batch_s: 0.25",
            "relative_ci: 2, batch_s: 5",
        ),
    );
    assert!(
        err.contains("stop_when.relative_ci: must be a share in (0, 1), got 2"),
        "{err}"
    );
    assert!(
        err.contains("stop_when.batch_s: must be > 0 and fit 10 times"),
        "{err}"
    );
    let err = refused(
        &file,
        text.replace("batch_s: 0.25", "batch_s: 0.25, max_duration_s: 10"),
    );
    assert!(
        err.contains("stop_when.max_duration_s: must be seconds in [duration_s (20)"),
        "{err}"
    );
}

/// Answers of 1,500 tokens live ~15 s: a run stopping on throughput's precision alone
/// would stop while most measured requests are still in flight; `stop_when` also waits
/// until most have finished, so its latencies are not censored.
#[test]
fn a_stopping_run_waits_until_its_latencies_are_not_censored() {
    let dir = tempfile::tempdir().unwrap();
    let text = test_scenario("small-disaggregated")
        .replace("duration_s: 6\n", "duration_s: 60\n")
        .replace(
            "warmup_s: 1\n",
            "warmup_s: 2\nstop_when: {metric: output_tok_s, relative_ci: 0.05, batch_s: 0.5}\n",
        )
        .replace(
            "arrivals: {kind: closed_loop, users: 96, ramp_up_s: 0.5}",
            "arrivals: {kind: poisson, rate_per_s: 15}",
        )
        .replace(
            "output: {dist: uniform, min: 16, max: 200}",
            "output: {dist: fixed, tokens: 1500}",
        );
    let s = summary_row(&run_text(dir.path(), "long", &text));
    let n = |c: &str| s[c].parse::<f64>().unwrap();
    assert!(n("measured_s") < 58.0, "it stopped early: {s:?}");
    assert!(
        n("requests_unfinished_measured") <= n("requests_completed"),
        "{s:?}"
    );
    assert_eq!(s["steady_state"], "yes", "{s:?}");
}

/// A warm-up too short for the users' ramp: MSER-5 finds the window's start still rising,
/// and the run is simulated again with its warm-up moved past it (the window as long), so
/// its throughput is the ramped-up one; `warmup_rule: fixed` keeps the scenario's warm-up
/// and the verdict names the trend.
#[test]
fn a_warm_up_too_short_is_moved_past_the_transient() {
    let dir = tempfile::tempdir().unwrap();
    let text = test_scenario("small-disaggregated")
        .replace("duration_s: 6\n", "duration_s: 31\n")
        .replace("ramp_up_s: 0.5", "ramp_up_s: 12");
    let moved = summary_row(&run_text(dir.path(), "moved", &text));
    let fixed = summary_row(&run_text(
        dir.path(),
        "fixed",
        &text.replace("warmup_s: 1\n", "warmup_s: 1\nwarmup_rule: fixed\n"),
    ));
    let f = |s: &BTreeMap<String, String>, c: &str| s[c].parse::<f64>().unwrap();
    assert_eq!(f(&fixed, "warmup_moved_s"), 0.0);
    assert!(
        fixed["steady_state"].contains("still trending"),
        "{fixed:?}"
    );
    let by = f(&moved, "warmup_moved_s");
    assert!(by >= 5.0, "{moved:?}");
    assert_eq!(f(&moved, "warmup_s"), 1.0 + by);
    assert_eq!(f(&moved, "measured_s"), 30.0, "the window keeps its length");
    assert!(f(&moved, "output_tok_s") > 1.05 * f(&fixed, "output_tok_s"));
}

/// An EP group over two leaves of an oversubscribed leaf-spine fabric: at 1:1 it serves
/// exactly as on one non-blocking switch; at 8:1 the leaf uplinks hold its all-to-all back
/// (2/3 of what crosses nodes also crosses leaves, whose uplinks carry 1/8 of their NICs').
#[test]
fn an_oversubscribed_fabric_slows_an_ep_group_that_spans_leaves() {
    let scenario = |topology: &str| {
        format!(
            "name: leaf-spine
topology: {repo}/topologies/{topology}
model: {repo}/models/deepseek-r1.yaml
seed: 3
duration_s: 4
workload:
  arrivals: {{kind: closed_loop, users: 256}}
  input: {{dist: fixed, tokens: 256}}
  output: {{dist: fixed, tokens: 256}}
instances:
  - {{name: agg, role: both, gpus: 0-31, max_batch: 8, max_tokens: 1024}}
",
            repo = repo("").display()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (name, topology) in [
        ("flat", "hgx-h100x8.yaml\ntopology_parameters: {nodes: 4}"),
        (
            "one-to-one",
            "hgx-h100-leaf-spine.yaml\ntopology_parameters: {nodes: 4, leaf_nics: 16}",
        ),
        (
            "eight-to-one",
            "hgx-h100-leaf-spine.yaml\ntopology_parameters: {nodes: 4, leaf_nics: 16, oversubscription: 8}",
        ),
    ] {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, scenario(topology)).unwrap();
        let out = dir.path().join(name);
        run(file.to_str().unwrap(), &out, &["--no-progress"]);
        runs.push(summary(&out));
    }
    assert_eq!(
        runs[0], runs[1],
        "a 1:1 leaf-spine serves as one switch does"
    );
    let a2a = |s: &[(String, String)]| value(s, "step_all_to_all_ms_mean");
    assert!(
        a2a(&runs[2]) > 3.0 * a2a(&runs[1]),
        "8:1 all-to-all {} ms vs 1:1 {} ms",
        a2a(&runs[2]),
        a2a(&runs[1])
    );
    assert!(value(&runs[2], "output_tok_s") < 0.7 * value(&runs[1], "output_tok_s"));
}

/// Every run says whether its window was steady, and if not which symptom it shows: a
/// light load is steady, an overload's backlog grows, answers longer than the window
/// finish no measured request; the headline percentiles carry their intervals.
#[test]
fn a_run_says_whether_it_reached_steady_state() {
    let dir = tempfile::tempdir().unwrap();
    let base = test_scenario("small-disaggregated").replace(
        "duration_s: 6\nwarmup_s: 1\n",
        "duration_s: 30\nwarmup_s: 6\n",
    );
    let run = |name: &str, rate: &str, output: &str| {
        let text = base
            .replace(
                "arrivals: {kind: closed_loop, users: 96, ramp_up_s: 0.5}",
                &format!("arrivals: {{kind: poisson, rate_per_s: {rate}}}"),
            )
            .replace("output: {dist: uniform, min: 16, max: 200}", output);
        summary_row(&run_text(dir.path(), name, &text))
    };
    let short = "output: {dist: uniform, min: 16, max: 200}";
    let light = run("light", "30", short);
    assert_eq!(
        (light["status"].as_str(), light["steady_state"].as_str()),
        ("steady", "yes"),
        "{light:?}"
    );
    for metric in ["ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99"] {
        let half: f64 = light[&format!("{metric}_ci95")].parse().unwrap();
        let value: f64 = light[metric].parse().unwrap();
        assert!(half > 0.0 && half < value, "{metric}: {value} +- {half}");
    }
    let over = run("over", "400", short);
    assert_eq!(over["status"], "overloaded", "{over:?}");
    assert!(over["steady_state"].contains("backlog growing at"));
    assert!(over["backlog_growth_per_s"].parse::<f64>().unwrap() > 10.0);
    let long = run("long", "2", "output: {dist: fixed, tokens: 20000}");
    assert_eq!(long["status"], "no finished request", "{long:?}");
    assert!(long["steady_state"].starts_with("no: no measured request finished"));
}

/// Answers that live longer than a fixed window: `plan` sizes its runs from the SLA (a
/// request lives at most TTFT + OSL x TPOT) and so answers at its defaults what a long run
/// answers, instead of calling small deployments too slow because their requests had not
/// finished (it once recommended 144-200 GPUs here).
#[test]
fn plan_runs_long_enough_for_long_answers() {
    let plan = |extra: &[&str]| {
        let out = epsim()
            .current_dir(repo(""))
            .args(["plan", "--model", "deepseek-r1", "--topology"])
            .args([
                "topologies/gb200-nvl72.yaml",
                "--rate",
                "20",
                "--isl",
                "1024",
            ])
            .args([
                "--osl",
                "4096",
                "--ttft-p99-ms",
                "2000",
                "--tpot-p99-ms",
                "30",
            ])
            .args(["--mtp", "1", "-j", "2", "--format", "json"])
            .args(extra)
            .assert()
            .success();
        serde_json::from_slice::<serde_json::Value>(&out.get_output().stdout).unwrap()
    };
    let default = plan(&[]);
    // 2 s + 4,095 tokens x 30 ms.
    let seconds = |k: &str| default[k].as_f64().unwrap();
    assert!(
        (seconds("warmup_s") - 124.85).abs() < 1e-9,
        "one request lifetime"
    );
    assert!(
        (seconds("run_length_s") - 374.55).abs() < 1e-9,
        "two more measured"
    );
    let long = plan(&["--duration-s", "900"]);
    let gpus = |j: &serde_json::Value| j["best"]["gpus"].as_u64().unwrap();
    assert_eq!(gpus(&default), gpus(&long), "{default}\n{long}");
    assert!(gpus(&default) <= 24, "{default}");
}

/// A request longer than the model's context (DeepSeek-R1: 163,840 tokens) is refused at
/// arrival and counted as such, never queued; the rest are served.
#[test]
fn requests_longer_than_the_context_are_refused_at_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let text = test_scenario("small-disaggregated").replace(
        "input: {dist: lognormal, median: 400, sigma: 0.5, min: 16, max: 2048}",
        "input: {dist: lognormal, median: 400, sigma: 3, min: 16, max: 3000000}",
    );
    let out = run_text(dir.path(), "long", &text);
    let s = summary_row(&out);
    let n = |k: &str| s[k].parse::<u64>().unwrap();
    assert!(n("requests_rejected_context") > 0, "{s:?}");
    assert_eq!(
        n("requests_rejected"),
        n("requests_rejected_context") + n("requests_rejected_memory")
    );
    let rows = std::fs::read_to_string(out.join("requests.csv")).unwrap();
    let mut r = csv::Reader::from_reader(rows.as_bytes());
    let h = r.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let (i, o) = (col("input_tokens"), col("output_tokens"));
    let longest = r
        .records()
        .map(|x| {
            let x = x.unwrap();
            x[i].parse::<u64>().unwrap() + x[o].parse::<u64>().unwrap()
        })
        .max()
        .unwrap();
    assert!(longest <= 163_840, "{longest}");
}

/// `plan --set` sizes an HGX cluster: with four H800 nodes the search spans cross-node EP,
/// and the emitted scenario carries the parameter.
#[test]
fn plan_sets_topology_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let emitted = dir.path().join("best.yaml");
    let out = epsim()
        .current_dir(repo(""))
        .args(["plan", "--model", "deepseek-r1", "--topology"])
        .args([
            "topologies/h800-cluster.yaml",
            "--set",
            "nodes=4",
            "--rate",
            "5",
        ])
        .args(["--isl", "1024", "--osl", "256", "--ttft-p99-ms", "3000"])
        .args(["--tpot-p99-ms", "60", "-j", "2", "--emit-scenario"])
        .arg(&emitted)
        .assert()
        .success();
    let text = stdout(&out);
    assert!(text.contains("h800-cluster.yaml (nodes=4)"), "{text}");
    let best: u64 = text
        .split("best: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        best > 8,
        "one H800 node cannot hold DeepSeek-R1 here: {text}"
    );
    let yaml = std::fs::read_to_string(&emitted).unwrap();
    assert!(yaml.contains("topology_parameters: {nodes: 4}"), "{yaml}");
    epsim().arg("validate").arg(&emitted).assert().success();
}
