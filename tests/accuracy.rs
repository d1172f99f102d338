//! `epsim accuracy`: the validation cases epsim is held to, and the harness's exit codes.

mod common;
use common::{epsim, repo, stderr, stdout};

/// Every case in validation/ (all are fast: one 300 s scenario, commands, kernel tables).
#[test]
fn every_validation_case_is_within_its_tolerance() {
    let out = epsim()
        .current_dir(repo(""))
        .args(["accuracy", "validation", "--format", "json"])
        .assert()
        .success();
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 17, "{}", cases.len());
    for c in cases {
        assert_eq!(c["within"], true, "{c}");
    }
    let names: Vec<&str> = cases.iter().map(|c| c["case"].as_str().unwrap()).collect();
    for needle in [
        "trtllm-b200-ep8-1k2k",
        "trtllm-a2a-gb200-ep8-bf16-dispatch",
        "kernels-heldout-h200",
    ] {
        assert!(names.contains(&needle), "{needle}");
    }
    let set = &doc["set"];
    assert!(
        set["median_abs_error_pct"].as_f64().unwrap() < 15.0,
        "{set}"
    );
}

fn write_case(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let file = dir.join("case.yaml");
    std::fs::write(&file, text.replace("REPO", repo("").to_str().unwrap())).unwrap();
    file
}

#[test]
fn a_case_outside_its_tolerance_exits_1_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_case(
        dir.path(),
        "name: wrong\nsource: made up\ncommand: [memory, --models-dir, REPO/models, --gpus-dir, REPO/topologies/gpus, --model, deepseek-r1, --gpu, b200-gb200, --ep, \"8\", --kv, fp8]\nmetric: /kv_bytes_per_token\npublished: 40000\ntolerance_pct: 5\n",
    );
    let out = epsim().args(["accuracy"]).arg(&file).assert().code(1);
    let text = stdout(&out);
    assert!(
        text.contains("-12.2%") && text.contains("OUTSIDE"),
        "{text}"
    );
}

#[test]
fn bad_cases_exit_2_with_every_problem_located() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_case(
        dir.path(),
        "name: bad\nsource: x\nscenario: s.yaml\ncommand: [memory]\ntolerance_pct: -1\n",
    );
    let out = epsim().args(["accuracy"]).arg(&file).assert().code(2);
    let err = stderr(&out);
    for needle in [
        "case.yaml:5:16: tolerance_pct: must be a number > 0",
        "give exactly one of `scenario`, `command` or `kernels`",
    ] {
        assert!(err.contains(needle), "{needle:?} in\n{err}");
    }
    let file = write_case(
        dir.path(),
        "name: bad\nsource: x\nscenario: nowhere.yaml\nmetric: m\npublished: 1\ntolerance_pct: 5\n",
    );
    let out = epsim().args(["accuracy"]).arg(&file).assert().code(2);
    assert!(
        stderr(&out).contains("nowhere.yaml: cannot read the file"),
        "{}",
        stderr(&out)
    );
    let out = epsim()
        .args(["accuracy", "/no/such/case.yaml"])
        .assert()
        .code(2);
    assert!(
        stderr(&out).contains("/no/such/case.yaml"),
        "{}",
        stderr(&out)
    );
}

/// A `command:` case runs only the commands that price and write nothing: `plan` could
/// write a scenario anywhere, and `accuracy` on the case itself forked without limit.
#[test]
fn a_command_case_may_only_price() {
    let dir = tempfile::tempdir().unwrap();
    for (command, line) in [
        ("[accuracy, case.yaml]", "case.yaml:3:10"),
        ("[plan, --emit-scenario, /tmp/x.yaml]", "case.yaml:3:10"),
        ("[run, s.yaml]", "case.yaml:3:10"),
    ] {
        let file = write_case(
            dir.path(),
            &format!(
                "name: bad\nsource: x\ncommand: {command}\nmetric: /x\npublished: 1\ntolerance_pct: 5\n"
            ),
        );
        let err = stderr(&epsim().args(["accuracy"]).arg(&file).assert().code(2));
        assert!(
            err.contains(&format!("{line}: command: `")) && err.contains("may not run from a case"),
            "{command}: {err}"
        );
    }
}

/// A sweep case reads the row of its `point:` (matched on the `param_*` cells).
#[test]
fn a_sweep_case_reads_the_row_of_its_point() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = std::fs::read_to_string(repo("tests/scenarios/small-aggregated.yaml"))
        .unwrap()
        .replace("../../", &format!("{}/", repo("").display()))
        .replace("duration_s: 8", "duration_s: 2")
        + "sweep:\n  axes:\n    - {name: rate, path: workload.arrivals.rate_per_s, values: [20, 40]}\n";
    std::fs::write(dir.path().join("sweep.yaml"), scenario).unwrap();
    let simulated = |rate: u32| {
        let case = write_case(
            dir.path(),
            &format!(
                "name: r{rate}\nsource: test\nscenario: sweep.yaml\npoint: {{rate: {rate}}}\nmetric: input_tok_s\npublished: 1\ntolerance_pct: 1\n"
            ),
        );
        let out = epsim()
            .args(["accuracy", "--format", "json"])
            .arg(&case)
            .assert()
            .code(1);
        let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        doc["cases"][0]["simulated"].as_f64().unwrap()
    };
    let (low, high) = (simulated(20), simulated(40));
    assert!(
        high > 1.5 * low,
        "rate 40 offers twice the tokens of rate 20: {low} {high}"
    );
    let case = write_case(
        dir.path(),
        "name: none\nsource: test\nscenario: sweep.yaml\npoint: {rate: 99}\nmetric: input_tok_s\npublished: 1\ntolerance_pct: 1\n",
    );
    let out = epsim().args(["accuracy"]).arg(&case).assert().code(2);
    assert!(
        stderr(&out).contains("point: no row of the sweep"),
        "{}",
        stderr(&out)
    );
}
