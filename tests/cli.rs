//! The `epsim` command line, run as a user would.

mod common;

use common::{epsim, repo, stderr, stdout};
use predicates::prelude::*;
use std::path::PathBuf;

fn topo_json(file: &str, extra: &[&str]) -> serde_json::Value {
    let out = epsim()
        .args([
            "topo",
            "show",
            repo(file).to_str().unwrap(),
            "--format",
            "json",
        ])
        .args(extra)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("topo show --format json prints one JSON object")
}

#[test]
fn nvl72_counts() {
    let j = topo_json("topologies/gb200-nvl72.yaml", &[]);
    assert_eq!(j["gpus"], 72);
    assert_eq!(j["nvswitch_chips"], 18);
    assert_eq!(j["nvlink_links"], 1296);
    assert_eq!(j["per_gpu_nvlink_gb_s"], 900.0);
    assert_eq!(j["nics"], 72);
    assert_eq!(j["cpus"], 36);
}

#[test]
fn counts_of_every_shipped_topology() {
    // (file, gpus, nvswitch chips, NVLink links, NVLink GB/s per GPU per direction, NICs, CPUs)
    let expected = [
        (
            "topologies/gb200-nvl72x2.yaml",
            144,
            36,
            2592,
            900.0,
            144,
            72,
        ),
        ("topologies/hgx-h100x8.yaml", 8, 4, 144, 450.0, 8, 0),
        ("topologies/h800-cluster.yaml", 32, 16, 256, 200.0, 32, 0),
    ];
    for (file, gpus, chips, links, gb_s, nics, cpus) in expected {
        let j = topo_json(file, &[]);
        assert_eq!(j["gpus"], gpus, "{file}");
        assert_eq!(j["nvswitch_chips"], chips, "{file}");
        assert_eq!(j["nvlink_links"], links, "{file}");
        assert_eq!(j["per_gpu_nvlink_gb_s"], gb_s, "{file}");
        assert_eq!(j["per_gpu_nvlink_gb_s_max"], gb_s, "{file}");
        assert_eq!(j["nics"], nics, "{file}");
        assert_eq!(j["cpus"], cpus, "{file}");
    }
}

#[test]
fn parameters_can_be_overridden() {
    let j = topo_json("topologies/h800-cluster.yaml", &["--set", "nodes=18"]);
    assert_eq!(j["gpus"], 144);
    assert_eq!(j["parameters"]["nodes"], 18);
    let two_racks = topo_json("topologies/gb200-nvl72.yaml", &["--set", "racks=2"]);
    let shipped = topo_json("topologies/gb200-nvl72x2.yaml", &[]);
    for field in [
        "gpus",
        "nvswitch_chips",
        "nvlink_links",
        "nics",
        "cpus",
        "links_by_kind",
    ] {
        assert_eq!(two_racks[field], shipped[field], "{field}");
    }
}

#[test]
fn text_summary_is_readable() {
    epsim()
        .args([
            "topo",
            "show",
            repo("topologies/gb200-nvl72.yaml").to_str().unwrap(),
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "GPUs:              72 (72 x b200-gb200)",
        ))
        .stdout(predicate::str::contains(
            "NVLink per GPU:    900 GB/s per direction",
        ));
}

#[test]
fn dot_output_is_a_well_formed_graph() {
    let out = epsim()
        .args([
            "topo",
            "show",
            repo("topologies/hgx-h100x8.yaml").to_str().unwrap(),
            "--format",
            "dot",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let dot = String::from_utf8(out).unwrap();
    assert!(dot.starts_with("graph \"hgx-h100x8\" {"));
    assert!(dot.trim_end().ends_with('}'));
    let declared: Vec<&str> = dot.lines().filter(|l| l.contains("[shape=")).collect();
    let edges: Vec<&str> = dot.lines().filter(|l| l.contains(" -- ")).collect();
    assert_eq!(
        declared.len(),
        8 + 4 + 8 + 1,
        "GPUs, switch chips, NICs, fabric"
    );
    assert_eq!(
        edges.len(),
        8 * 4 + 8 + 8,
        "GPU-chip bundles, GPU-NIC, NIC-fabric"
    );
    assert!(dot.contains("\"node/gpu0\" -- \"node/nvsw0\" [style=solid, label=\"5 x 25 GB/s\"]"));
    // Where Graphviz is installed, it must accept the file.
    if let Ok(mut child) = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dot.as_bytes())
            .unwrap();
        let result = child.wait_with_output().unwrap();
        assert!(
            result.status.success(),
            "dot rejected the graph: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        assert!(String::from_utf8_lossy(&result.stdout).contains("<svg"));
    } else {
        // .ci/run installs Graphviz and sets this, so CI always renders the graph.
        assert!(
            std::env::var_os("EPSIM_REQUIRE_DOT").is_none(),
            "EPSIM_REQUIRE_DOT is set but Graphviz's `dot` cannot be run"
        );
    }
}

#[test]
fn validate_accepts_every_shipped_file() {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [
        "topologies",
        "topologies/gpus",
        "topologies/gpus/families",
        "models",
    ] {
        for entry in std::fs::read_dir(repo(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 16);
    let assert = epsim().arg("validate").args(&files).assert().success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        files.len()
    );
}

/// Every command but `topo show` (a subcommand of its own) and `help`.
const COMMANDS: [&str; 16] = [
    "validate",
    "memory",
    "step",
    "a2a",
    "eplb",
    "imbalance",
    "run",
    "merge",
    "frontier",
    "plot",
    "compare",
    "plan",
    "iteration",
    "accuracy",
    "completions",
    "man",
];

#[test]
fn every_command_has_help_with_an_example() {
    let mut commands: Vec<Vec<&str>> = vec![vec!["--help"], vec!["topo", "show", "--help"]];
    for c in COMMANDS {
        commands.push(vec![c, "--help"]);
    }
    for args in commands {
        epsim()
            .args(&args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
}

/// Every argument of every command says what it is: clap's help shows an option alone on
/// its line, with the lines below it, when it has no help text.
#[test]
fn every_argument_has_help_text() {
    let mut missing = Vec::new();
    for c in COMMANDS
        .iter()
        .map(|c| vec![*c])
        .chain([vec!["topo", "show"]])
    {
        let out = epsim().args(&c).arg("--help").assert().success();
        let help = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            // What follows the option on its line, defaults aside.
            let said = t.split_once("  ").map_or("", |(_, rest)| rest.trim());
            let bare_option = line.starts_with("  ")
                && (t.starts_with("--")
                    || t.starts_with('<')
                    || (t.starts_with('-') && t.chars().nth(1).is_some_and(char::is_alphabetic)))
                && (said.is_empty() || said.starts_with('['));
            let described = lines
                .get(i + 1)
                .is_some_and(|n| n.starts_with("          ") && !n.trim().starts_with('-'));
            if bare_option && !described {
                missing.push(format!("{}: {t}", c.join(" ")));
            }
        }
    }
    assert!(missing.is_empty(), "arguments without help: {missing:#?}");
}

#[test]
fn usage_errors_exit_2() {
    epsim().arg("frobnicate").assert().code(2);
    epsim().args(["topo", "show"]).assert().code(2);
    epsim()
        .args(["topo", "show", "x.yaml", "--format", "png"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("possible values: text, json, dot"));
    epsim()
        .args(["topo", "show", "x.yaml", "--set", "nodes"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("expected NAME=VALUE"));
}

#[test]
fn missing_file_is_bad_input() {
    epsim()
        .args(["topo", "show", "does/not/exist.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "does/not/exist.yaml: cannot read the file",
        ));
}

#[test]
fn bad_parameter_overrides_are_bad_input() {
    let file = repo("topologies/h800-cluster.yaml");
    epsim()
        .args([
            "topo",
            "show",
            file.to_str().unwrap(),
            "--set",
            "nodes=four",
            "--set",
            "racks=2",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "parameter `nodes` takes a whole number >= 0, not \"four\"",
        ))
        .stderr(predicate::str::contains(
            "no parameter `racks`; it declares `nodes`",
        ));
}

/// A small valid topology to break in one place per case: one 4-GPU domain and scale-out.
const BASE: &str = "\
name: tiny
gpu_specs: GPU_SPECS
scale_up:
  - name: rack
    gpus: 4
    gpu: b200-gb200
    switch_chips: 2
    link:
      bandwidth_gb_s: 50
scale_out:
  host_link: {bandwidth_gb_s: 63}
  nic_link: {bandwidth_gb_s: 50}
  fabric: non_blocking
";

/// Writes `yaml` (with GPU_SPECS pointing at the shipped specs) and runs `validate` and
/// `topo show` on it; both must exit 2 without a panic, and stderr must contain each of
/// `expected` (a "file:line:col" position and the message).
fn assert_rejected(name: &str, yaml: &str, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.yaml"));
    let specs = repo("topologies/gpus");
    std::fs::write(&file, yaml.replace("GPU_SPECS", specs.to_str().unwrap())).unwrap();
    for args in [vec!["validate"], vec!["topo", "show"]] {
        let assert = epsim().args(&args).arg(&file).assert().code(2);
        let stderr = stderr(&assert);
        assert!(!stderr.contains("panicked"), "{name}: panic:\n{stderr}");
        assert!(stderr.starts_with("error: "), "{name}:\n{stderr}");
        for want in expected {
            let want = want.replace("FILE", file.to_str().unwrap());
            assert!(
                stderr.contains(&want),
                "{name}: expected {want:?} in:\n{stderr}"
            );
        }
    }
}

#[test]
fn the_base_fixture_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.yaml");
    let specs = repo("topologies/gpus");
    std::fs::write(&file, BASE.replace("GPU_SPECS", specs.to_str().unwrap())).unwrap();
    epsim().arg("validate").arg(&file).assert().success();
}

#[test]
fn truncated_yaml() {
    assert_rejected(
        "truncated",
        "name: tiny\nscale_up:\n  - name: rack\n    gpus: [4, 5\n",
        &["FILE:", "invalid YAML"],
    );
}

#[test]
fn not_yaml_at_all() {
    assert_rejected(
        "binary",
        "\u{1}\u{2}PNG\n\t\t: : ]]\n",
        &["FILE:", "invalid YAML"],
    );
    assert_rejected(
        "scalar",
        "just a sentence, not a topology\n",
        &["FILE:1:1: expected a mapping with fields `name`"],
    );
}

#[test]
fn empty_file() {
    assert_rejected("empty", "", &["FILE:1:1: the file is empty"]);
    assert_rejected(
        "comments",
        "# nothing here\n\n",
        &["FILE:1:1: the file is empty"],
    );
}

#[test]
fn wrong_types() {
    let yaml = BASE
        .replace("gpus: 4", "gpus: four")
        .replace("bandwidth_gb_s: 50\n", "bandwidth_gb_s: fast\n");
    assert_rejected(
        "types",
        &yaml,
        &[
            "FILE:5:11: scale_up[0].gpus: expected a whole number or a `$parameter`, found the string \"four\"",
            "FILE:9:23: scale_up[0].link.bandwidth_gb_s: expected a number, found the string \"fast\"",
        ],
    );
}

#[test]
fn parameter_of_the_wrong_type() {
    let yaml = BASE.replace("scale_up:", "parameters:\n  racks: two\nscale_up:");
    assert_rejected(
        "param-type",
        &yaml,
        &["FILE:4:10: parameters.racks: expected a whole number >= 0, found the string \"two\""],
    );
    let undeclared = BASE.replace("gpus: 4", "gpus: $gpus_per_rack");
    assert_rejected(
        "param-unknown",
        &undeclared,
        &[
            "FILE:5:11: scale_up[0].gpus: unknown parameter `$gpus_per_rack`; the file declares no `parameters`",
        ],
    );
}

#[test]
fn unknown_field() {
    let yaml = BASE.replace("bandwidth_gb_s: 50\n", "bandwith_gb_s: 50\n");
    assert_rejected(
        "unknown-field",
        &yaml,
        &[
            "FILE:9:7: scale_up[0].link.bandwith_gb_s: unknown field `bandwith_gb_s` (did you mean `bandwidth_gb_s`?)",
        ],
    );
}

#[test]
fn dangling_link() {
    let yaml = format!("{BASE}links:\n  - {{a: rack/gpu0, b: rack/gpu9, bandwidth_gb_s: 50}}\n");
    assert_rejected(
        "dangling",
        &yaml,
        &["FILE:15:23: links[0].b: no node with id `rack/gpu9`"],
    );
}

#[test]
fn zero_and_negative_bandwidth() {
    let yaml = BASE
        .replace("bandwidth_gb_s: 50\n", "bandwidth_gb_s: 0\n")
        .replace("{bandwidth_gb_s: 63}", "{bandwidth_gb_s: -63}");
    assert_rejected(
        "zero-bw",
        &yaml,
        &[
            "FILE:9:23: scale_up[0].link.bandwidth_gb_s: bandwidth must be a number > 0 (GB/s per direction), got 0",
            "FILE:11:31: scale_out.host_link.bandwidth_gb_s: bandwidth must be a number > 0 (GB/s per direction), got -63",
        ],
    );
}

#[test]
fn disconnected_gpu() {
    let yaml = format!("{BASE}nodes:\n  - {{id: lonely, kind: gpu, gpu: b200-gb200}}\n");
    // Without scale_out, an explicit GPU with no links is an island.
    assert_rejected("island", &yaml.replace("scale_out:\n  host_link: {bandwidth_gb_s: 63}\n  nic_link: {bandwidth_gb_s: 50}\n  fabric: non_blocking\n", ""), &["FILE:11:10: GPU `lonely` cannot reach GPU `rack/gpu0`: no path of links joins them"]);
    let no_switches = BASE.replace("switch_chips: 2", "switch_chips: 0").replace("scale_out:\n  host_link: {bandwidth_gb_s: 63}\n  nic_link: {bandwidth_gb_s: 50}\n  fabric: non_blocking\n", "");
    assert_rejected(
        "no-switches",
        &no_switches,
        &["FILE:4:5: GPU `rack/gpu1` cannot reach GPU `rack/gpu0`: no path of links joins them"],
    );
}

#[test]
fn duplicate_id() {
    let yaml = format!(
        "{BASE}nodes:\n  - {{id: rack/gpu2, kind: nic}}\n  - {{id: extra, kind: switch}}\n  - {{id: extra, kind: switch}}\n"
    );
    assert_rejected(
        "duplicate",
        &yaml,
        &[
            "FILE:15:10: nodes[0]: duplicate node id `rack/gpu2`: already declared at line 4",
            "FILE:17:10: nodes[2]: duplicate node id `extra`: already declared at line 16",
        ],
    );
}

#[test]
fn unknown_gpu_spec() {
    let yaml = BASE.replace("gpu: b200-gb200", "gpu: b300");
    assert_rejected(
        "spec",
        &yaml,
        &[
            "FILE:6:10: scale_up[0].gpu: unknown GPU spec `b300`; available in",
            "b200-gb200, b200-hgx, b300-gb300, b300-hgx, h100-sxm, h200-sxm, h800-sxm",
        ],
    );
}

#[test]
fn nvlink_beyond_the_gpu_spec() {
    let yaml = BASE
        .replace("gpu: b200-gb200", "gpu: h800-sxm")
        .replace("bandwidth_gb_s: 50\n", "bandwidth_gb_s: 150\n");
    assert_rejected(
        "nvlink",
        &yaml,
        &[
            "FILE:4:5: GPU `rack/gpu0` (and 3 more GPUs declared here) has 300 GB/s of NVLink per direction, more than its spec `h800-sxm` allows (200 GB/s)",
        ],
    );
}

#[test]
fn every_problem_in_a_file_is_reported_at_once() {
    let yaml = "\
name: many
gpu_specs: GPU_SPECS
colour: green
scale_up:
  - name: rack
    gpus: 4
    gpu: b300
    switch_chips: 2
    link: {bandwidth_gb_s: 0}
nodes:
  - {id: rack/gpu0, kind: gpu, gpu: h100-sxm}
links:
  - {a: rack/gpu0, b: nowhere, bandwidth_gb_s: 5}
  - {a: rack/gpu1, b: rack/gpu1, bandwidth_gb_s: 5}
";
    // The unknown field is structural, so it is reported alone first...
    assert_rejected(
        "many-structural",
        yaml,
        &["FILE:3:1: colour: unknown field `colour`"],
    );
    // ...and once the structure is sound, every semantic problem at once.
    assert_rejected(
        "many",
        &yaml.replace("colour: green\n", ""),
        &[
            "5 problems in the input",
            "FILE:6:10: scale_up[0].gpu: unknown GPU spec `b300`",
            "FILE:8:28: scale_up[0].link.bandwidth_gb_s: bandwidth must be a number > 0",
            "FILE:10:10: nodes[0]: duplicate node id `rack/gpu0`",
            "FILE:12:23: links[0].b: no node with id `nowhere`",
            "FILE:13:5: links[1]: the link joins `rack/gpu1` to itself",
        ],
    );
}

/// Runs `epsim COMMAND ARGS... --format json` in the repository and parses its output.
fn json_of(command: &str, args: &[&str]) -> serde_json::Value {
    let out = epsim()
        .current_dir(repo(""))
        .arg(command)
        .args(args)
        .args(["--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{command} --format json: {e}"))
}

fn memory_json(args: &[&str]) -> serde_json::Value {
    json_of("memory", args)
}

#[test]
fn memory_plan_for_deepseek_on_gb200() {
    let common = [
        "--model",
        "deepseek-r1",
        "--gpu",
        "b200-gb200",
        "--weights",
        "nvfp4",
        "--mtp",
        "1",
    ];
    let ep8 = memory_json(&[&common[..], &["--ep", "8"]].concat());
    let ep32 = memory_json(&[&common[..], &["--ep", "32", "--slots", "288"]].concat());
    for field in [
        "weights_gib_per_gpu",
        "kv_gib_per_gpu",
        "kv_tokens_per_gpu",
        "max_requests_per_gpu",
    ] {
        assert!(ep8[field].is_number() && ep32[field].is_number(), "{field}");
    }
    assert_eq!(ep8["experts_per_gpu_per_layer"], 32);
    assert_eq!(ep32["experts_per_gpu_per_layer"], 9);
    let (w8, w32) = (
        ep8["weights_gib_per_gpu"].as_f64().unwrap(),
        ep32["weights_gib_per_gpu"].as_f64().unwrap(),
    );
    assert!(
        w8 > 2.0 * w32 - 10.0 && w8 < 70.0 && w32 < 35.0,
        "{w8} {w32}"
    );
    assert!(ep32["max_requests_per_gpu"].as_f64() > ep8["max_requests_per_gpu"].as_f64());
}

#[test]
fn memory_by_path_and_with_tensor_parallel_attention() {
    let model = repo("models/qwen3-235b-a22b.yaml");
    let gpu = repo("topologies/gpus/h200-sxm.yaml");
    let j = memory_json(&[
        "--model",
        model.to_str().unwrap(),
        "--gpu",
        gpu.to_str().unwrap(),
        "--ep",
        "8",
        "--attention",
        "tp:8",
    ]);
    assert_eq!(j["attention"], "tp:8");
    assert_eq!(j["expert_precision"], "bf16");
}

#[test]
fn memory_rejects_impossible_deployments() {
    let run = |args: &[&str]| {
        epsim()
            .current_dir(repo(""))
            .arg("memory")
            .args(args)
            .assert()
            .code(2)
    };
    run(&["--model", "deepseek-r1", "--gpu", "h100-sxm", "--ep", "8"])
        .stderr(predicate::str::contains(
            "needs 93.9 GiB per GPU for weights at EP 8",
        ))
        .stderr(predicate::str::contains("the GPU (h100-sxm) has 74.5 GiB"));
    run(&[
        "--model",
        "deepseek-r1",
        "--gpu",
        "b200-gb200",
        "--ep",
        "32",
        "--slots",
        "300",
    ])
    .stderr(predicate::str::contains(
        "300 slots do not divide over EP 32 (12 left over); use 288 or 320",
    ));
    run(&["--model", "deepseek-r2", "--gpu", "b200-gb200", "--ep", "8"]).stderr(
        predicate::str::contains(
            "no model named `deepseek-r2`; models has: deepseek-r1, gpt-oss-120b, kimi-k2",
        ),
    );
    run(&["--model", "deepseek-r1", "--gpu", "b300", "--ep", "8"])
        .stderr(predicate::str::contains("no GPU spec named `b300`"));
    run(&[
        "--model",
        "deepseek-r1",
        "--gpu",
        "b200-gb200",
        "--ep",
        "8",
        "--attention",
        "tp:0",
    ])
    .stderr(predicate::str::contains("expected dp or tp:N with N >= 1"));
}

fn step_json(args: &[&str]) -> serde_json::Value {
    json_of("step", args)
}

#[test]
fn step_breakdown_ep8_vs_ep32() {
    let common = [
        "--model",
        "deepseek-r1",
        "--gpu",
        "b200-gb200",
        "--weights",
        "nvfp4",
        "--mtp",
        "1",
        "--batch",
        "32",
        "--context",
        "2048",
    ];
    let ep8 = step_json(&[&common[..], &["--ep", "8"]].concat());
    let ep32 = step_json(&[&common[..], &["--ep", "32", "--slots", "288"]].concat());
    assert_eq!(ep8["communication_modelled"], false);
    let us = |j: &serde_json::Value, class: &str| j["classes"][class]["us"].as_f64().unwrap();
    let shares: f64 = [
        "attention",
        "dense_gemm",
        "moe_group_gemm",
        "dispatch",
        "combine",
        "other",
    ]
    .iter()
    .map(|c| ep8["classes"][*c]["share"].as_f64().unwrap())
    .sum();
    assert!((shares - 1.0).abs() < 1e-9);
    assert_eq!(us(&ep8, "dispatch"), 0.0);
    // Measured fused MoE on GB200 (kernel profile): 9 experts per GPU at EP32 take 1.85x
    // less time than 32 at EP8 at this batch (the roofline said 3.5x: weights alone).
    let ratio = us(&ep8, "moe_group_gemm") / us(&ep32, "moe_group_gemm");
    assert!(ratio > 1.75 && ratio < 1.95, "{ratio}");
    assert_eq!(us(&ep32, "attention"), us(&ep8, "attention"));
    assert!(ep32["output_tok_s_per_gpu"].as_f64() > ep8["output_tok_s_per_gpu"].as_f64());
    assert_eq!(ep8["experts_per_gpu"], 32);
    assert_eq!(ep32["tokens_per_expert"].as_array().unwrap().len(), 9);
}

#[test]
fn step_prices_prefill_chunks_alone_or_mixed_with_decode() {
    let common = [
        "--model",
        "deepseek-r1",
        "--gpu",
        "b200-gb200",
        "--ep",
        "8",
        "--weights",
        "nvfp4",
        "--context",
        "2048",
    ];
    let us = |j: &serde_json::Value| j["step_us"].as_f64().unwrap();
    let decode = step_json(&[&common[..], &["--batch", "32"]].concat());
    let prefill = step_json(&[&common[..], &["--batch", "0", "--prefill-chunk", "1024"]].concat());
    let mixed = step_json(&[&common[..], &["--batch", "32", "--prefill-chunk", "1024"]].concat());
    assert_eq!(prefill["prefill_chunk"], 1024);
    assert!(us(&mixed) > us(&decode).max(us(&prefill)) && us(&mixed) < us(&decode) + us(&prefill));
    epsim()
        .current_dir(repo(""))
        .args(["step"])
        .args(common)
        .args(["--batch", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nothing to price"));
}

#[test]
fn step_table_says_what_is_not_modelled_and_warns_on_memory() {
    epsim()
        .current_dir(repo(""))
        .args([
            "step",
            "--model",
            "deepseek-r1",
            "--gpu",
            "b200-gb200",
            "--ep",
            "8",
            "--weights",
            "nvfp4",
            "--batch",
            "5000",
            "--context",
            "8192",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "the MoE all-to-all needs a topology (epsim a2a; epsim iteration prices both)",
        ))
        .stdout(predicate::str::contains("warning: the KV cache holds only"));
    epsim()
        .current_dir(repo(""))
        .args([
            "step",
            "--model",
            "deepseek-r1",
            "--gpu",
            "b200-gb200",
            "--ep",
            "8",
            "--batch",
            "4",
            "--context",
            "0",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("0 is not in 1..=100000000"));
}

#[test]
fn eplb_reproduces_every_reference_vector() {
    let text = std::fs::read_to_string(repo("tests/data/eplb-vectors.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for case in doc["cases"].as_array().unwrap() {
        let file = dir.path().join("input.json");
        std::fs::write(&file, case["inputs"].to_string()).unwrap();
        let out = epsim()
            .args(["eplb", "--input"])
            .arg(&file)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for field in ["policy", "phy2log", "logcnt", "phyrank", "log2phy"] {
            assert_eq!(
                got[field], case["expected"][field],
                "{}: {field}",
                case["name"]
            );
        }
    }
}

#[test]
fn eplb_rejects_bad_input_with_exit_2() {
    let run = |json: &str| {
        epsim()
            .args(["eplb", "--input", "-"])
            .write_stdin(json.to_owned())
            .assert()
            .code(2)
    };
    run(r#"{"weight": [[1, 2], [3]], "num_replicas": 3, "num_groups": 1, "num_nodes": 1, "num_gpus": 2}"#)
        .stderr(predicate::str::contains("weight[1] has 1 experts, weight[0] has 2"))
        .stderr(predicate::str::contains("3 replicas do not divide over 2 GPUs"));
    run(r#"{"weight": [[1, -2]], "num_replicas": 2, "num_groups": 1, "num_nodes": 1, "num_gpus": 1}"#)
        .stderr(predicate::str::contains("weight[0][1] = -2: loads must be finite and >= 0"));
    run(r#"{"weight": [[1, 2]], "num_replicas": 2"#).stderr(predicate::str::contains("<stdin>:1:"));
    run(r#"{"weights": [[1, 2]], "num_replicas": 2, "num_groups": 1, "num_nodes": 1, "num_gpus": 1}"#)
        .stderr(predicate::str::contains("unknown field `weights`"));
    epsim()
        .args(["eplb", "--input", "nope.json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nope.json: cannot read the file"));
}

fn imbalance_json(args: &[&str]) -> serde_json::Value {
    json_of(
        "imbalance",
        &[args, &["--iterations", "30", "--warmup", "20"]].concat(),
    )
}

#[test]
fn imbalance_with_and_without_eplb() {
    let none = imbalance_json(&["--model", "deepseek-r1", "--ep", "32"]);
    let fixed = imbalance_json(&[
        "--model",
        "deepseek-r1",
        "--ep",
        "32",
        "--slots",
        "288",
        "--eplb",
        "static",
    ]);
    let online = imbalance_json(&[
        "--model",
        "deepseek-r1",
        "--ep",
        "32",
        "--slots",
        "288",
        "--eplb",
        "online",
    ]);
    let mean = |j: &serde_json::Value| j["mean_rank_imbalance"].as_f64().unwrap();
    assert!(mean(&none) > 1.0, "{}", mean(&none));
    assert!(mean(&fixed) < 0.2 && mean(&online) < 0.3);
    assert!(fixed["mean_balancedness"].as_f64() > none["mean_balancedness"].as_f64());
    assert_eq!(none["layers"].as_array().unwrap().len(), 58);
    assert!(online["layer_replans"].as_u64().unwrap() > 0);
}

#[test]
fn imbalance_is_deterministic_and_writes_csv() {
    let run = |seed: &str| {
        epsim()
            .current_dir(repo(""))
            .args([
                "imbalance",
                "--model",
                "mixtral-8x7b",
                "--ep",
                "4",
                "--iterations",
                "20",
                "--format",
                "csv",
                "--seed",
                seed,
            ])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    };
    let a = run("3");
    assert_eq!(a, run("3"), "same seed, same bytes");
    assert_ne!(a, run("4"));
    let text = String::from_utf8(a).unwrap();
    assert!(text.starts_with(
        "layer,mean_rank_imbalance,max_rank_imbalance,mean_balancedness,mean_expert_imbalance\n"
    ));
    assert_eq!(text.lines().count(), 1 + 32);
}

#[test]
fn imbalance_rejects_impossible_setups() {
    let run = |args: &[&str]| {
        epsim()
            .current_dir(repo(""))
            .arg("imbalance")
            .args(args)
            .assert()
            .code(2)
    };
    run(&["--model", "deepseek-r1", "--ep", "72"])
        .stderr(predicate::str::contains("use EPLB (static or online)"));
    run(&["--model", "deepseek-r1", "--ep", "32", "--slots", "288"])
        .stderr(predicate::str::contains("redundant slots need EPLB"));
    run(&[
        "--model",
        "deepseek-r1",
        "--ep",
        "32",
        "--slots",
        "300",
        "--eplb",
        "static",
    ])
    .stderr(predicate::str::contains(
        "300 replicas do not divide over 32 GPUs",
    ));
    run(&[
        "--model",
        "deepseek-r1",
        "--ep",
        "8",
        "--popularity",
        "pareto:2",
    ])
    .stderr(predicate::str::contains("unknown popularity"));
}

#[test]
fn a2a_reproduces_the_gb200_calibration_point_and_writes_csv() {
    let out = epsim()
        .args([
            "a2a",
            "--topology",
            repo("topologies/gb200-nvl72.yaml").to_str().unwrap(),
        ])
        .args([
            "--ep",
            "8",
            "--tokens-per-rank",
            "1,2048",
            "--dtype",
            "bf16",
            "--routing",
            "spread",
            "--format",
            "csv",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    for column in [
        "ep",
        "tokens_per_rank",
        "dtype",
        "dispatch_us",
        "combine_us",
        "bytes_per_rank",
        "dispatch_gb_s",
        "combine_gb_s",
    ] {
        assert!(
            header.split(',').any(|c| c == column),
            "{column} in {header}"
        );
    }
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let col = |name: &str| header.split(',').position(|c| c == name).unwrap();
    let dispatch: f64 = rows[1][col("dispatch_us")].parse().unwrap();
    let combine: f64 = rows[1][col("combine_us")].parse().unwrap();
    assert!(
        (dispatch / 311.8 - 1.0).abs() < 0.02 && (combine / 322.6 - 1.0).abs() < 0.02,
        "{dispatch} {combine}"
    );
    let floor: f64 = rows[0][col("dispatch_us")].parse().unwrap();
    assert!((floor - 19.0).abs() < 1.0);
}

#[test]
fn a2a_crosses_the_network_beyond_one_nvlink_domain() {
    let json = |topology: &str, ep: &str, extra: &[&str]| -> serde_json::Value {
        let out = epsim()
            .args([
                "a2a",
                "--topology",
                repo(topology).to_str().unwrap(),
                "--ep",
                ep,
                "--tokens-per-rank",
                "128",
                "--format",
                "json",
            ])
            .args(extra)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).unwrap()
    };
    let h800 = json("topologies/h800-cluster.yaml", "8,16", &[]);
    assert_eq!(h800[0]["nvlink_domains"], 1);
    assert_eq!(h800[1]["nvlink_domains"], 2);
    assert_eq!(h800[1]["algorithm"], "hierarchical");
    assert!(h800[1]["dispatch_us"].as_f64() > h800[0]["dispatch_us"].as_f64());
    // Ranks chosen across both nodes make EP8 cross the network too.
    let split = json(
        "topologies/h800-cluster.yaml",
        "8",
        &["--ranks", "0-3,8-11"],
    );
    assert_eq!(split[0]["nvlink_domains"], 2);
    let racks = json("topologies/gb200-nvl72x2.yaml", "72,144", &[]);
    assert_eq!(
        (
            racks[0]["nvlink_domains"].as_u64(),
            racks[1]["nvlink_domains"].as_u64()
        ),
        (Some(1), Some(2))
    );
    // Same seed, same numbers; the flow solver agrees with the fast path here.
    let fast = json(
        "topologies/h800-cluster.yaml",
        "16",
        &["--algorithm", "low-latency"],
    );
    assert_eq!(
        fast,
        json(
            "topologies/h800-cluster.yaml",
            "16",
            &["--algorithm", "low-latency"]
        )
    );
    let flow = json(
        "topologies/h800-cluster.yaml",
        "16",
        &["--algorithm", "low-latency", "--solver", "flow"],
    );
    let (f, s) = (
        fast[0]["dispatch_us"].as_f64().unwrap(),
        flow[0]["dispatch_us"].as_f64().unwrap(),
    );
    assert!(f <= s * (1.0 + 1e-9) && s < f * 1.1, "{f} {s}");
}

#[test]
fn a2a_rejects_bad_requests() {
    let run = |args: &[&str]| {
        epsim()
            .current_dir(repo(""))
            .arg("a2a")
            .args(args)
            .assert()
            .code(2)
    };
    run(&[
        "--topology",
        "topologies/gb200-nvl72.yaml",
        "--ep",
        "100",
        "--tokens-per-rank",
        "8",
    ])
    .stderr(predicate::str::contains("EP sizes must be 1 to 72"));
    run(&[
        "--topology",
        "topologies/gb200-nvl72.yaml",
        "--ep",
        "8",
        "--tokens-per-rank",
        "8",
        "--ranks",
        "0-3,70-80",
    ])
    .stderr(predicate::str::contains(
        "\"70-80\" is not an index or range",
    ));
    run(&[
        "--topology",
        "topologies/gb200-nvl72.yaml",
        "--ep",
        "8",
        "--tokens-per-rank",
        "8",
        "--routing",
        "lognormal",
    ])
    .stderr(predicate::str::contains("unknown routing"));
}

/// Extreme numbers are usage errors naming the limit, never a panic, an overflow or an
/// attempt to allocate the impossible.
#[test]
fn extreme_values_are_refused_cleanly() {
    let max = "18446744073709551615";
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "memory",
            "--model",
            "deepseek-r1",
            "--gpu",
            "b200-gb200",
            "--ep",
            "8",
            "--isl",
            max,
        ],
        vec![
            "memory",
            "--model",
            "deepseek-r1",
            "--gpu",
            "b200-gb200",
            "--ep",
            "1000",
        ],
        vec![
            "step",
            "--model",
            "deepseek-r1",
            "--gpu",
            "b200-gb200",
            "--ep",
            "8",
            "--batch",
            max,
            "--context",
            "10",
        ],
        vec![
            "step",
            "--model",
            "deepseek-r1",
            "--gpu",
            "b200-gb200",
            "--ep",
            "8",
            "--batch",
            "1",
            "--context",
            "1",
            "--mtp",
            "99",
        ],
        vec![
            "imbalance",
            "--model",
            "deepseek-r1",
            "--ep",
            "8",
            "--batch",
            max,
        ],
        vec![
            "imbalance",
            "--model",
            "deepseek-r1",
            "--ep",
            "8",
            "--eplb",
            "online",
            "--online",
            "periodic",
            "--window",
            "100000",
        ],
        vec![
            "a2a",
            "--topology",
            "topologies/gb200-nvl72.yaml",
            "--ep",
            "72",
            "--tokens-per-rank",
            "1000000",
        ],
    ];
    for args in cases {
        let out = epsim()
            .current_dir(repo(""))
            .args(&args)
            .assert()
            .code(2)
            .get_output()
            .stderr
            .clone();
        let stderr = String::from_utf8_lossy(&out);
        assert!(
            !stderr.contains("panicked") && stderr.contains("error"),
            "{args:?}:\n{stderr}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.yaml");
    let specs = repo("topologies/gpus");
    std::fs::write(
        &file,
        format!("name: huge\ngpu_specs: {}\nscale_up:\n  - {{name: r, gpus: {max}, gpu: b200-gb200, switch_chips: {max}, link: {{bandwidth_gb_s: 50}}}}\n", specs.display()),
    )
    .unwrap();
    epsim()
        .arg("validate")
        .arg(&file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is more than epsim accepts"));
    epsim()
        .args(["eplb", "--input", "-"])
        .write_stdin(r#"{"weight": [[1, 2]], "num_replicas": 100000000, "num_groups": 1, "num_nodes": 1, "num_gpus": 1}"#)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("at most 1000000"));
}

/// The format `calibration/gpu_calibration.py` writes is one epsim reads: a GPU spec pointed
/// at it prices the shared expert's GEMMs from it.
#[test]
fn a_profile_written_by_the_calibration_script_prices_gemms() {
    let dir = tempfile::tempdir().unwrap();
    let prof = dir.path().join("mine");
    let status = std::process::Command::new("python3")
        .arg(repo("calibration/gpu_calibration.py"))
        .arg("--example-profile")
        .arg(&prof)
        .status()
        .expect("python3 runs");
    assert!(status.success());
    std::fs::create_dir(dir.path().join("families")).unwrap();
    std::fs::copy(
        repo("topologies/gpus/families/hopper.yaml"),
        dir.path().join("families/hopper.yaml"),
    )
    .unwrap();
    let spec = std::fs::read_to_string(repo("topologies/gpus/h200-sxm.yaml"))
        .unwrap()
        .replace("profile: profiles/h200-sxm", "profile: mine")
        .replace("name: h200-sxm", "name: spec");
    std::fs::write(dir.path().join("spec.yaml"), spec).unwrap();
    let args = [
        "--model",
        "deepseek-r1",
        "--ep",
        "8",
        "--batch",
        "8",
        "--context",
        "1024",
    ];
    let gpu = dir.path().join("spec.yaml");
    let j = step_json(&[&args[..], &["--gpu", gpu.to_str().unwrap()]].concat());
    let source = |op: &str| {
        j["ops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["op"] == op)
            .map(|o| o["source"].as_str().unwrap().to_owned())
    };
    assert_eq!(source("shared expert fc1").as_deref(), Some("measured"));
    // Only gemm.csv: the MoE block falls back to the roofline.
    assert_eq!(
        source("routed experts (fused MoE)").as_deref(),
        Some("roofline")
    );
}

#[test]
fn frontier_at_nan_is_bad_usage() {
    epsim()
        .current_dir(repo(""))
        .args([
            "frontier",
            "results/wide-ep-nvl72/summary.csv",
            "--x",
            "tok_s_per_user",
            "--y",
            "output_tok_s_per_decode_gpu",
            "--at",
            "NaN",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "invalid value 'NaN' for '--at <AT>': expected a finite number",
        ));
}

#[test]
fn an_endless_input_is_refused_quickly() {
    epsim()
        .args(["validate", "/dev/zero"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/dev/zero: larger than 64 MiB"));
}

#[test]
fn a_seed_whose_replicates_would_wrap_is_bad_usage() {
    let text = std::fs::read_to_string(repo("tests/scenarios/small-aggregated.yaml"))
        .unwrap()
        .replace("../../", &format!("{}/", repo("").display()))
        + "sweep:\n  seeds: 2\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    std::fs::write(&file, text).unwrap();
    epsim()
        .args(["run"])
        .arg(&file)
        .args(["--seed", "18446744073709551615", "--out"])
        .arg(dir.path().join("out"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("would run past the largest seed"));
}

/// Validation loads one replicate of each point and checks only the seeds of the others:
/// a seed that wraps at the last replicate alone is still found, at that point.
#[test]
fn a_scenario_seed_that_wraps_at_its_last_replicate_is_refused_there() {
    let text = std::fs::read_to_string(repo("tests/scenarios/small-aggregated.yaml"))
        .unwrap()
        .replace("../../", &format!("{}/", repo("").display()))
        .replace("seed: 5", "seed: 18446744073709551614")
        + "sweep:\n  seeds: 3\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    std::fs::write(&file, text).unwrap();
    epsim()
        .arg("validate")
        .arg(&file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("sweep point 2 (seed=2)"))
        .stderr(predicate::str::contains(
            "leaves no room for the sweep's replicate seeds",
        ))
        .stderr(predicate::str::contains("sweep point 1").not());
}

/// `--version` names the commit it was built from (or says it does not know one).
#[test]
fn the_version_names_its_git_commit() {
    let out = epsim().arg("--version").assert().success();
    let text = stdout(&out);
    let commit = text
        .trim()
        .strip_prefix(concat!("epsim ", env!("CARGO_PKG_VERSION"), " (git "))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
}

/// Completions and the man page come from the command definition itself.
#[test]
fn completions_and_the_man_page_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let text = stdout(&epsim().args(["completions", shell]).assert().success());
        for command in ["run", "accuracy", "iteration", "compare", "frontier"] {
            assert!(text.contains(command), "{shell}: {command}");
        }
    }
    let man = stdout(&epsim().arg("man").assert().success());
    assert!(
        man.contains(".TH epsim 1") && man.contains(".SH NAME"),
        "{man}"
    );
    assert!(man.contains("iteration"), "subcommands listed");
}

/// Every command's help is plain text: no rustdoc link syntax leaks from doc comments.
#[test]
fn help_texts_carry_no_rustdoc_links() {
    let top = stdout(&epsim().arg("--help").assert().success());
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() > 15, "{commands:?}");
    for c in commands {
        let text = stdout(&epsim().arg(&c).arg("--help").assert().success());
        assert!(!text.contains("[`") && !text.contains("`]"), "{c}:\n{text}");
    }
}

/// From any folder, names find the bundled data: on the command line, and as a scenario's
/// `model:` and `topology:`; an unknown name lists the known ones.
#[test]
fn bundled_names_work_from_any_folder() {
    let dir = tempfile::tempdir().unwrap();
    epsim()
        .current_dir(dir.path())
        .args([
            "memory",
            "--model",
            "deepseek-r1",
            "--gpu",
            "b200-gb200",
            "--ep",
            "8",
        ])
        .assert()
        .success();
    let file = dir.path().join("named.yaml");
    let text = "topology: gb200-nvl72\nmodel: deepseek-r1\nduration_s: 2\nworkload:\n  arrivals: {kind: poisson, rate_per_s: 5}\n  input: {dist: fixed, tokens: 128}\n  output: {dist: fixed, tokens: 16}\ninstances:\n  - {name: a, role: both, gpus: 0-7, max_batch: 8, max_tokens: 512}\n";
    std::fs::write(&file, text).unwrap();
    epsim()
        .current_dir(dir.path())
        .args(["validate", "named.yaml"])
        .assert()
        .success();
    std::fs::write(
        &file,
        text.replace("model: deepseek-r1", "model: deepseek-r9"),
    )
    .unwrap();
    let out = epsim()
        .current_dir(dir.path())
        .args(["validate", "named.yaml"])
        .assert()
        .code(2);
    let err = stderr(&out);
    assert!(
        err.contains("named.yaml:2:8: model: no bundled model named `deepseek-r9`"),
        "{err}"
    );
    assert!(err.contains("there are: deepseek-r1,"), "{err}");
    // EPSIM_DATA says where the data is.
    let out = epsim()
        .current_dir(dir.path())
        .env("EPSIM_DATA", dir.path())
        .args(["validate", "named.yaml"])
        .assert()
        .code(2);
    assert!(
        stderr(&out).contains("no bundled topology named `gb200-nvl72`"),
        "{}",
        stderr(&out)
    );
}

/// `epsim iteration` counts output tokens as `epsim run` does: each request's accepted
/// tokens per step (1 + 0.85 with one draft at the model's acceptance), beside the tokens
/// the model runs through (1 + 1).
#[test]
fn iteration_counts_accepted_tokens_as_output() {
    let out = epsim()
        .current_dir(repo(""))
        .args([
            "iteration",
            "scenarios/quickstart.yaml",
            "--instance",
            "decode#0",
        ])
        .args(["--batch", "16", "--iterations", "3", "--format", "json"])
        .assert()
        .success();
    let j: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let one = &j["one_micro_batch"];
    let (through, output) = (
        one["tok_s_per_gpu"].as_f64().unwrap(),
        one["output_tok_s_per_gpu"].as_f64().unwrap(),
    );
    assert!((output / through - 1.85 / 2.0).abs() < 1e-9, "{one}");
}

/// A bad `--set` value is the command line's: the error names it, with no line and column
/// of the scenario (it once said `quickstart.yaml:1:1`, a line that holds no such value).
#[test]
fn a_bad_set_value_is_blamed_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = epsim()
        .current_dir(repo(""))
        .args([
            "run",
            "scenarios/quickstart.yaml",
            "--set",
            "nodes=abc",
            "--out",
        ])
        .arg(dir.path().join("out"))
        .assert()
        .code(2);
    let err = stderr(&out);
    assert!(
        err.contains("scenarios/quickstart.yaml: topology_parameters.nodes: --set nodes=abc: expected a whole number"),
        "{err}"
    );
    assert!(!err.contains(":1:1"), "{err}");
}

/// `epsim iteration` prices any load, but says when the instance could not hold it (its
/// KV cache, its batch limit): such a price is no answer about serving.
#[test]
fn iteration_says_when_the_load_cannot_be_served() {
    let iteration = |batch: &str, context: &str| {
        let out = epsim()
            .current_dir(repo(""))
            .args(["iteration", "scenarios/quickstart.yaml"])
            .args(["--batch", batch, "--context", context, "--iterations", "2"])
            .assert()
            .success();
        stdout(&out)
    };
    let fits = iteration("16", "2048");
    assert!(!fits.contains("warning"), "{fits}");
    let huge = iteration("100000", "100000");
    assert!(huge.contains("warning: a rank's KV cache holds"), "{huge}");
    assert!(
        huge.contains("warning: the instance's max_batch is"),
        "{huge}"
    );
}

/// `epsim step --attention tp:N` takes `--batch` as the TP group's (every GPU of it runs
/// all the requests over its heads) and shares their output over the group's GPUs.
#[test]
fn step_under_tp_attention_prices_the_groups_batch() {
    let step = |attention: &str| {
        let out = epsim()
            .args([
                "step",
                "--model",
                "deepseek-r1",
                "--gpu",
                "b200-hgx",
                "--ep",
                "8",
            ])
            .args([
                "--batch",
                "8",
                "--context",
                "2048",
                "--attention",
                attention,
            ])
            .args(["--format", "json"])
            .assert()
            .success();
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()
    };
    let (dp, tp) = (step("dp"), step("tp:8"));
    assert_eq!(dp["batch_is"], "per GPU");
    assert!(
        tp["batch_is"]
            .as_str()
            .unwrap()
            .starts_with("per TP8 group")
    );
    for j in [&dp, &tp] {
        let ways = if j == &tp { 8.0 } else { 1.0 };
        let per_user = j["tok_s_per_user"].as_f64().unwrap();
        let per_gpu = j["output_tok_s_per_gpu"].as_f64().unwrap();
        assert!((per_gpu - per_user * 8.0 / ways).abs() < 1e-9, "{j}");
    }
}

/// `kernels: sglang` prices an instance's routed experts from SGLang's own tables; where
/// those do not measure the block (another precision, tensor-parallel experts), the
/// scenario is refused at the field, every such instance at once, not priced from
/// another engine's kernels.
#[test]
fn an_engine_without_the_measured_block_is_refused_at_its_kernels_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = repo("");
    let text = std::fs::read_to_string(repo("validation/scenarios/sglang-h100-96.yaml"))
        .unwrap()
        .replace("../../", &format!("{}/", root.display()))
        .replace(
            "    max_batch: 16\n",
            "    max_batch: 16\n    moe_tp: 2\n    slots: 256\n",
        )
        .replacen("    slots: 288\n", "", 1)
        .replace(
            "    max_batch: 256\n",
            "    max_batch: 256\n    precision: {experts: bf16}\n",
        );
    let file = dir.path().join("sglang.yaml");
    std::fs::write(&file, &text).unwrap();
    let out = epsim().args(["validate"]).arg(&file).assert().code(2);
    let err = stderr(&out);
    let kernels: Vec<usize> = (text.lines().enumerate())
        .filter(|(_, l)| l.trim_start() == "kernels: sglang")
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(kernels.len(), 2, "{text}");
    for needle in [
        format!(
            "sglang.yaml:{}:14: instances[0].kernels: prefill: sglang kernels on h100-sxm (hierarchical all-to-all): sglang's MoE tables measure expert parallelism alone (moe_tp 1), not moe_tp 2",
            kernels[0]
        ),
        format!(
            "sglang.yaml:{}:14: instances[1].kernels: decode: sglang kernels on h100-sxm (low-latency all-to-all):",
            kernels[1]
        ),
        "sglang/moe_low_latency.csv does not measure these routed experts (bf16 7168x2048, top-8 of 256): it measures fp8 7168x2048, top-8 of 256; `kernels: trtllm` prices them from TensorRT-LLM's".to_string(),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in\n{err}");
    }
    // As shipped, both instances run SGLang's measured kernels.
    epsim()
        .current_dir(&root)
        .args(["validate", "validation/scenarios/sglang-h100-96.yaml"])
        .assert()
        .success();
}

/// `epsim step --kernels sglang` says which table priced the routed experts, and refuses
/// a block SGLang's tables do not measure.
#[test]
fn step_prices_an_engines_kernels_and_names_the_table() {
    let step = |kernels: &str, weights: &str| {
        epsim()
            .args([
                "step",
                "--model",
                "deepseek-r1",
                "--gpu",
                "h100-sxm",
                "--ep",
                "64",
            ])
            .args(["--weights", weights, "--batch", "64", "--context", "2000"])
            .args(["--kernels", kernels, "--format", "json"])
            .assert()
    };
    let us = |a: &assert_cmd::assert::Assert| -> (f64, serde_json::Value) {
        let v: serde_json::Value = serde_json::from_str(&stdout(a)).unwrap();
        (v["step_us"].as_f64().unwrap(), v["moe_table"].clone())
    };
    let (sglang, table) = us(&step("sglang", "fp8").success());
    let (trtllm, none) = us(&step("trtllm", "fp8").success());
    assert!(
        table
            .as_str()
            .unwrap()
            .ends_with("h100-sxm/sglang/moe_low_latency.csv"),
        "{table}"
    );
    assert!(none.is_null());
    // DeepGEMM's masked kernel is the faster at this shape (92 vs 165 us per layer).
    assert!(sglang < trtllm - 58.0 * 50.0, "{sglang} vs {trtllm}");
    let err = stderr(&step("sglang", "bf16").code(2));
    assert!(err.contains("--kernels sglang on h100-sxm:"), "{err}");
}

/// A kernel profile row faster than its GPU's peaks is refused where it is, by every
/// command that prices from it (it was accepted: every price built on it impossible).
#[test]
fn a_profile_row_faster_than_the_gpu_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let gpus = dir.path().join("gpus");
    let profile = gpus.join("profiles/h100-sxm");
    std::fs::create_dir_all(&profile).unwrap();
    std::fs::create_dir_all(gpus.join("families")).unwrap();
    let src = repo("topologies/gpus");
    std::fs::copy(src.join("h100-sxm.yaml"), gpus.join("h100-sxm.yaml")).unwrap();
    std::fs::copy(
        src.join("families/hopper.yaml"),
        gpus.join("families/hopper.yaml"),
    )
    .unwrap();
    for table in [
        "gemm.csv",
        "mla_decode.csv",
        "mla_prefill.csv",
        "mla_model.csv",
        "allreduce.csv",
    ] {
        std::fs::copy(
            src.join("profiles/h100-sxm").join(table),
            profile.join(table),
        )
        .unwrap();
    }
    // EP64, 4,096 tokens: 165.2 us measured; read as 1.652 it would stream the 4 local
    // experts' FP8 weights (176 MB) at 107 TB/s.
    let moe = std::fs::read_to_string(src.join("profiles/h100-sxm/moe.csv")).unwrap();
    let row = "fp8,7168,2048,8,256,64,4096,165.2";
    let line = 1 + moe.lines().position(|l| l == row).unwrap();
    std::fs::write(
        profile.join("moe.csv"),
        moe.replace(row, "fp8,7168,2048,8,256,64,4096,1.652"),
    )
    .unwrap();
    let out = epsim()
        .args(["step", "--model", "deepseek-r1", "--gpu"])
        .arg(gpus.join("h100-sxm.yaml"))
        .args([
            "--ep",
            "64",
            "--weights",
            "fp8",
            "--batch",
            "64",
            "--context",
            "2000",
        ])
        .assert()
        .code(2);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "moe.csv:{line}:29: latency_us: 1.652 us is faster than h100-sxm can run it:"
        )),
        "{err}"
    );
}
